// Demo chat panel: talks to the public chat API, streams answers over SSE, keeps the conversation across reloads.
(function () {
  "use strict";
  const STORE = "support-bot.conversation";
  const log = document.getElementById("chat-log");
  const form = document.getElementById("chat-form");
  const input = document.getElementById("chat-input");
  const send = document.getElementById("chat-send");
  const stopBtn = document.getElementById("chat-stop");
  const status = document.getElementById("chat-status");
  let conversation = null;
  let controller = null;

  function load() {
    try { return JSON.parse(localStorage.getItem(STORE)); } catch (e) { return null; }
  }

  async function ensureConversation() {
    if (conversation) return conversation;
    const res = await fetch("/api/conversations", {
      method: "POST", headers: { "Content-Type": "application/json" }, body: "{}",
    });
    if (!res.ok) throw new Error("could not start a conversation");
    conversation = await res.json();
    localStorage.setItem(STORE, JSON.stringify(conversation));
    return conversation;
  }

  function authHeaders() {
    return { "Authorization": "Bearer " + conversation.token, "Content-Type": "application/json" };
  }

  // Text is always set with textContent: nothing from the bot, an agent or the knowledge base is parsed as HTML.
  function bubble(role, text) {
    const li = document.createElement("li");
    li.className = "msg msg-" + role;
    li.dataset.role = role;
    const body = document.createElement("div");
    body.className = "msg-text";
    body.textContent = text || "";
    li.appendChild(body);
    log.appendChild(li);
    log.scrollTop = log.scrollHeight;
    return li;
  }

  function safeUrl(url) {
    try {
      const u = new URL(url, window.location.href);
      return (u.protocol === "http:" || u.protocol === "https:") ? u.href : null;
    } catch (e) { return null; }
  }

  function showCitations(li, citations) {
    const old = li.querySelector(".msg-sources");
    if (old) old.remove();
    if (!citations || !citations.length) return;
    const list = document.createElement("ol");
    list.className = "msg-sources";
    list.setAttribute("aria-label", "Sources");
    for (const c of citations) {
      const item = document.createElement("li");
      item.className = "citation";
      item.dataset.entryId = c.entry_id || "";
      const label = "[" + c.n + "] " + (c.title || c.source || "source");
      const href = c.url ? safeUrl(c.url) : null;
      if (href) {
        const a = document.createElement("a");
        a.href = href; a.target = "_blank"; a.rel = "noopener noreferrer"; a.textContent = label;
        item.appendChild(a);
      } else {
        item.textContent = label;
      }
      list.appendChild(item);
    }
    li.appendChild(list);
  }

  async function restore() {
    conversation = load();
    if (!conversation) return;
    const res = await fetch("/api/conversations/" + encodeURIComponent(conversation.id) + "/messages",
      { headers: authHeaders() });
    if (!res.ok) { conversation = null; localStorage.removeItem(STORE); return; }
    const data = await res.json();
    for (const m of data.messages) {
      const li = bubble(m.role, m.text);
      if (m.role === "bot") showCitations(li, m.citations);
    }
  }

  // Parses a text/event-stream body into {event, data} objects.
  async function* readEvents(response) {
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let sep;
      while ((sep = buffer.indexOf("\n\n")) >= 0) {
        const raw = buffer.slice(0, sep); buffer = buffer.slice(sep + 2);
        let event = "message", data = "";
        for (const line of raw.split("\n")) {
          if (line.startsWith("event:")) event = line.slice(6).trim();
          else if (line.startsWith("data:")) data += line.slice(5).trim();
        }
        yield { event, data: data ? JSON.parse(data) : {} };
      }
    }
  }

  function busy(on) {
    send.disabled = on; stopBtn.hidden = !on; input.disabled = on;
    status.textContent = on ? "Answering…" : "";
  }

  async function ask(text) {
    await ensureConversation();
    bubble("customer", text);
    const li = bubble("bot", "");
    li.classList.add("streaming");
    const body = li.querySelector(".msg-text");
    controller = new AbortController();
    busy(true);
    try {
      const res = await fetch("/api/conversations/" + encodeURIComponent(conversation.id) + "/messages", {
        method: "POST", headers: authHeaders(), signal: controller.signal,
        body: JSON.stringify({ text, client_message_id: crypto.randomUUID() }),
      });
      if (!res.ok) {
        const err = await res.json().catch(() => ({ detail: "request failed" }));
        body.textContent = err.detail || "request failed";
        li.classList.add("msg-error");
        return;
      }
      for await (const ev of readEvents(res)) {
        if (ev.event === "token") body.textContent += ev.data.text;
        else if (ev.event === "done") { body.textContent = ev.data.text; showCitations(li, ev.data.citations); }
        else if (ev.event === "error") { body.textContent = ev.data.detail; li.classList.add("msg-error"); }
        log.scrollTop = log.scrollHeight;
      }
    } catch (e) {
      if (e.name !== "AbortError") { body.textContent = "Connection lost. Please try again."; li.classList.add("msg-error"); }
    } finally {
      li.classList.remove("streaming");
      controller = null;
      busy(false);
      input.focus();
    }
  }

  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const text = input.value.trim();
    if (!text) return;
    input.value = "";
    ask(text);
  });
  input.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); form.requestSubmit(); }
  });
  stopBtn.addEventListener("click", () => { if (controller) controller.abort(); });
  document.getElementById("chat-new").addEventListener("click", () => {
    localStorage.removeItem(STORE); conversation = null; log.textContent = "";
  });
  restore();
})();
