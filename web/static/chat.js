// Demo chat panel: talks to the public chat API, streams answers over SSE, keeps the conversation across reloads,
// and hands the customer to a person (queue position and wait, live agent replies, typing, offline message, rating).
(function () {
  "use strict";
  const STORE = "support-bot.conversation";
  const $ = (id) => document.getElementById(id);
  const log = $("chat-log");
  const form = $("chat-form");
  const input = $("chat-input");
  const send = $("chat-send");
  const stopBtn = $("chat-stop");
  const status = $("chat-status");
  const handoffBtn = $("chat-handoff-btn");
  const panel = $("chat-handoff");
  const panelStatus = $("chat-handoff-status");
  const offlineForm = $("chat-offline");
  const ratingForm = $("chat-rating");
  const ratingSend = $("chat-rating-send");
  const typingLine = $("chat-typing");
  const ACTIVE = new Set(["queued", "assigned"]);
  const QUEUE_REFRESH_MS = 10000;
  let conversation = null;
  let controller = null;
  // What the server last told us; `status` null until the first answer, so a page load shows no "joined" notices.
  let state = blankState();
  let knownIds = new Set();
  let live = null;
  let queueTimer = null;
  let typingTimer = null;
  let rating = 0;
  let sentTyping = 0;
  let typingIdle = null;
  let statusTimer = null;
  let starting = null;

  function blankState() {
    return { status: null, agent: null, position: null, eta_s: null, agents_online: null, rating: null,
      offline_message: false };
  }

  function load() {
    try { return JSON.parse(localStorage.getItem(STORE)); } catch (e) { return null; }
  }

  function save() {
    if (conversation) localStorage.setItem(STORE, JSON.stringify(conversation));
  }

  function url(suffix) {
    return "/api/conversations/" + encodeURIComponent(conversation.id) + suffix;
  }

  // One conversation even when the first message and the "talk to a person" button race each other.
  function ensureConversation() {
    if (conversation) return Promise.resolve(conversation);
    if (!starting) {
      starting = (async () => {
        const res = await fetch("/api/conversations", {
          method: "POST", headers: { "Content-Type": "application/json" }, body: "{}",
        });
        if (!res.ok) throw new Error("could not start a conversation");
        const created = await res.json();
        conversation = { id: created.id, token: created.token };
        save();
        return conversation;
      })().finally(() => { starting = null; });
    }
    return starting;
  }

  function authHeaders() {
    return { "Authorization": "Bearer " + conversation.token, "Content-Type": "application/json" };
  }

  async function postJson(suffix, body) {
    const res = await fetch(url(suffix), { method: "POST", headers: authHeaders(), body: JSON.stringify(body || {}) });
    const data = await res.json().catch(() => ({}));
    if (!res.ok) throw new Error(data.detail || "request failed");
    return data;
  }

  // Text is always set with textContent: nothing from the bot, an agent or the knowledge base is parsed as HTML.
  function bubble(role, text, opts) {
    opts = opts || {};
    const li = document.createElement("li");
    li.className = "msg msg-" + role;
    li.dataset.role = role;
    if (opts.id) { li.dataset.id = opts.id; knownIds.add(opts.id); }
    if (role === "agent" && opts.author) {
      const who = document.createElement("div");
      who.className = "msg-author";
      who.textContent = opts.author;
      li.appendChild(who);
    }
    const body = document.createElement("div");
    body.className = "msg-text";
    body.textContent = text || "";
    li.appendChild(body);
    log.appendChild(li);
    log.scrollTop = log.scrollHeight;
    return li;
  }

  // A line about the chat itself: stored ones (an agent joined, resolved; role "system") have an id and come back with
  // the history after a reload; the answer to "talk to a person" is this page's own.
  function notice(text, id) {
    const li = document.createElement("li");
    li.className = "msg-notice";
    li.dataset.role = "notice";
    if (id) { li.dataset.id = id; knownIds.add(id); }
    li.textContent = text;
    log.appendChild(li);
    log.scrollTop = log.scrollHeight;
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

  // A reply that declined offers help-center questions the customer may have meant: one button each asks it. The
  // reply's text lists them too ("- question" lines, kept as the server wrote them): those lines give way to the
  // buttons, where they stood, so each question is shown once.
  function showRelated(li, related) {
    if (!related || !related.length) return;
    const body = li.querySelector(".msg-text");
    const left = new Map(related.map((r) => [r.question.trim(), r]));
    const list = document.createElement("ul");
    list.className = "msg-related";
    list.setAttribute("aria-label", "Related questions");
    const add = (r) => {
      const item = document.createElement("li");
      const b = document.createElement("button");
      b.type = "button";
      b.className = "ask";
      b.dataset.entryId = r.entry_id || "";
      b.textContent = r.question;
      b.addEventListener("click", () => { if (!send.disabled) { input.focus(); ask(r.question); } });
      item.appendChild(b);
      list.appendChild(item);
    };
    const kept = [];
    let at = -1;
    for (const line of body.textContent.split("\n")) {
      const m = /^\s*[-*]\s+(.+)$/.exec(line);
      const r = m && left.get(m[1].trim());
      if (!r) { kept.push(line); continue; }
      left.delete(m[1].trim());
      add(r);
      if (at < 0) at = kept.length;
    }
    // A question the text does not list still gets its button, after the text.
    for (const r of left.values()) add(r);
    if (at < 0) at = kept.length;
    const before = kept.slice(0, at).join("\n").replace(/\s+$/, "");
    const after = kept.slice(at).join("\n").replace(/^\s+/, "");
    body.replaceChildren(document.createTextNode(before), list, document.createTextNode(after));
  }

  function showMessage(m) {
    if (m.role === "system") return notice(m.text, m.id);
    const li = bubble(m.role, m.text, { id: m.id, author: m.author });
    if (m.role === "bot") { showCitations(li, m.citations); showRelated(li, m.related); }
    return li;
  }

  async function restore() {
    conversation = load();
    if (!conversation) return;
    const res = await fetch(url("/messages"), { headers: authHeaders() });
    if (!res.ok) { conversation = null; localStorage.removeItem(STORE); return; }
    const data = await res.json();
    for (const m of data.messages) showMessage(m);
    await refreshStatus();
  }

  // Parses a text/event-stream body into {id, event, data} objects; comment lines (heartbeats) are skipped.
  async function* readEvents(response) {
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true }).replace(/\r\n?/g, "\n");
      let sep;
      while ((sep = buffer.indexOf("\n\n")) >= 0) {
        const raw = buffer.slice(0, sep); buffer = buffer.slice(sep + 2);
        let event = "message", data = "", id = null, fields = 0;
        for (const line of raw.split("\n")) {
          if (line.startsWith(":")) continue;
          fields += 1;
          const value = line.slice(line.indexOf(":") + 1).replace(/^ /, "");
          if (line.startsWith("event:")) event = value.trim();
          else if (line.startsWith("data:")) data += (data ? "\n" : "") + value;
          else if (line.startsWith("id:")) id = value.trim();
        }
        if (!fields || (event === "message" && !data)) continue;
        yield { id, event, data: data ? JSON.parse(data) : {} };
      }
    }
  }

  // The text box stays enabled (and focused) during an answer, so the next question can be typed meanwhile; the
  // disabled Send button is what holds it back (see the submit handler).
  function busy(on) {
    send.disabled = on; stopBtn.hidden = !on;
    status.textContent = on ? (ACTIVE.has(state.status) ? "Sending…" : "Answering…") : "";
  }

  async function ask(text) {
    await ensureConversation();
    bubble("customer", text);
    // While a person owns the chat the bot is silent: a bot bubble is only made once text arrives.
    let li = null, body = null;
    const ensureBubble = () => {
      if (!li) { li = bubble("bot", ""); li.classList.add("streaming"); body = li.querySelector(".msg-text"); }
    };
    if (!ACTIVE.has(state.status)) ensureBubble();
    controller = new AbortController();
    busy(true);
    let handoff = false;
    try {
      const res = await fetch(url("/messages"), {
        method: "POST", headers: authHeaders(), signal: controller.signal,
        body: JSON.stringify({ text, client_message_id: crypto.randomUUID() }),
      });
      if (!res.ok) {
        const err = await res.json().catch(() => ({ detail: "request failed" }));
        ensureBubble();
        body.textContent = err.detail || "request failed";
        li.classList.add("msg-error");
        return;
      }
      for await (const ev of readEvents(res)) {
        if (ev.event === "token") { ensureBubble(); body.textContent += ev.data.text; }
        else if (ev.event === "done") {
          handoff = Boolean(ev.data.handoff);
          if (ev.data.text) {
            ensureBubble();
            body.textContent = ev.data.text;
            showCitations(li, ev.data.citations);
            showRelated(li, ev.data.related);
          } else if (li && !body.textContent) { li.remove(); li = null; }
          if (li && ev.data.message_id) { li.dataset.id = ev.data.message_id; knownIds.add(ev.data.message_id); }
          if (ev.data.status) applyStatus(ev.data);
        } else if (ev.event === "error") { ensureBubble(); body.textContent = ev.data.detail; li.classList.add("msg-error"); }
        log.scrollTop = log.scrollHeight;
      }
    } catch (e) {
      if (e.name !== "AbortError") {
        ensureBubble(); body.textContent = "Connection lost. Please try again."; li.classList.add("msg-error");
      }
    } finally {
      if (li) li.classList.remove("streaming");
      controller = null;
      busy(false);
      input.focus();
    }
    // The customer's message can start (a trigger) or end (a resolved chat reopens) a handoff: ask where we stand.
    if (handoff || state.status !== "bot") await refreshStatus();
  }

  // A message event from the live stream; the customer's own lines and streamed answers are already on screen.
  function onMessage(m) {
    if (!m || m.private || !m.id || knownIds.has(m.id)) return;
    if (m.role === "customer") {
      // Lines typed here have no id yet; the stored copy may differ (PII redacted), so fall back to the oldest.
      const pending = [...log.querySelectorAll("li.msg-customer:not([data-id])")];
      const same = pending.find((li) => li.querySelector(".msg-text").textContent === m.text) || pending[0];
      if (same) { same.dataset.id = m.id; knownIds.add(m.id); return; }
    }
    // A bot answer still streaming in ask() is shown there and gets its id from the `done` event.
    if (m.role === "bot" && controller) return;
    if (m.role === "agent") showTyping(null);
    showMessage(m);
    // A notice (an agent joined or left, the chat was resolved) comes with a change of state: show both together.
    if (m.role === "system") scheduleStatus();
  }

  function minutes(seconds) {
    if (seconds == null) return "";
    if (seconds < 60) return "less than a minute";
    const n = Math.round(seconds / 60);
    return "about " + n + " minute" + (n === 1 ? "" : "s");
  }

  function render() {
    const s = state.status;
    handoffBtn.hidden = ACTIVE.has(s);
    panel.hidden = !(ACTIVE.has(s) || s === "resolved");
    offlineForm.hidden = true;
    ratingForm.hidden = true;
    panel.dataset.status = s || "";
    if (s === "queued") {
      // One state at a time, never a place in a queue nobody is serving nor "connecting you" once a message was left.
      if (state.offline_message) {
        panelStatus.textContent = "Thanks! We received your message and will answer by e-mail.";
      } else if (state.agents_online === false) {
        panelStatus.textContent =
          "No one from our team is online right now. Leave a message below and we will answer by e-mail.";
        offlineForm.hidden = false;
      } else {
        const parts = ["Connecting you to a person…"];
        if (state.position) parts.push("You are number " + state.position + " in the queue.");
        if (state.eta_s != null) parts.push("Estimated wait: " + minutes(state.eta_s) + ".");
        panelStatus.textContent = parts.join(" ");
      }
    } else if (s === "assigned") {
      panelStatus.textContent = "You are chatting with " + (state.agent || "a person") + ".";
    } else if (s === "resolved") {
      if (state.rating) {
        panelStatus.textContent = "Thank you for your feedback!";
      } else {
        panelStatus.textContent = "This conversation has been resolved.";
        ratingForm.hidden = false;
      }
    } else {
      panelStatus.textContent = "";
    }
    // Live events carry most changes; the timer keeps the place and wait right if one was missed.
    if (s === "queued" && !queueTimer) queueTimer = setInterval(refreshStatus, QUEUE_REFRESH_MS);
    if (s !== "queued" && queueTimer) { clearInterval(queueTimer); queueTimer = null; }
    if (s && s !== "bot") startLive(); else stopLive();
  }

  function applyStatus(next) {
    const prev = state.status;
    const prevAgent = state.agent;
    for (const key of ["position", "eta_s", "agents_online", "rating", "offline_message"]) {
      if (key in next) state[key] = next[key];
    }
    if ("agent" in next) state.agent = next.agent;
    if (next.status) state.status = next.status;
    const s = state.status;
    // Those changes are stored lines of the conversation, sent live as messages: fetch any the stream missed.
    if (prev !== null && (s !== prev || state.agent !== prevAgent)) {
      if (s === "assigned" || (s === "resolved" && prev !== "resolved") || (s === "bot" && ACTIVE.has(prev))) catchUp();
    }
    if (s !== "assigned") showTyping(null);
    render();
  }

  async function catchUp() {
    if (!conversation) return;
    try {
      const res = await fetch(url("/messages"), { headers: authHeaders(), cache: "no-store" });
      if (!res.ok) return;
      for (const m of (await res.json()).messages) if (m.role === "system" && !knownIds.has(m.id)) showMessage(m);
    } catch (e) { /* offline: the live stream or the next reload brings them */ }
  }

  async function refreshStatus() {
    if (!conversation) return;
    try {
      const res = await fetch(url("/status"), { headers: authHeaders(), cache: "no-store" });
      if (!res.ok) return;
      applyStatus(await res.json());
    } catch (e) { /* offline: the next event or timer tick tries again */ }
  }

  // Status events may be replayed from long ago: ask for the current state instead of trusting each one.
  function scheduleStatus() {
    clearTimeout(statusTimer);
    statusTimer = setTimeout(refreshStatus, 150);
  }

  function showTyping(name) {
    clearTimeout(typingTimer);
    if (!name) { typingLine.hidden = true; typingLine.textContent = ""; return; }
    typingLine.textContent = name + " is typing…";
    typingLine.hidden = false;
    // A lost "stopped typing" event must not leave the line up forever.
    typingTimer = setTimeout(() => showTyping(null), 8000);
  }

  function onLiveEvent(ev) {
    const d = ev.data || {};
    if (ev.event === "message") onMessage(d.message || d);
    else if (ev.event === "status") scheduleStatus();
    else if (ev.event === "queue") {
      const next = { position: d.position, eta_s: d.eta_s };
      if ("agents_online" in d) next.agents_online = d.agents_online;
      applyStatus(next);
    }
    else if (ev.event === "typing") {
      if (d.who === "agent") showTyping(d.typing === false ? null : (d.name || state.agent || "A person"));
    }
  }

  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

  // EventSource cannot send an Authorization header, so the stream is read with fetch and resumed by hand.
  function startLive() {
    if (live || !conversation) return;
    const me = { abort: new AbortController(), delay: 1000 };
    live = me;
    (async () => {
      while (live === me) {
        try {
          const headers = { "Authorization": "Bearer " + conversation.token, "Accept": "text/event-stream" };
          if (conversation.lastEventId) headers["Last-Event-ID"] = conversation.lastEventId;
          const res = await fetch(url("/events"), { headers, signal: me.abort.signal, cache: "no-store" });
          if (res.status === 401 || res.status === 404) { if (live === me) live = null; return; }
          if (res.ok) {
            me.delay = 1000;
            for await (const ev of readEvents(res)) {
              if (live !== me) return;
              if (ev.id) { conversation.lastEventId = ev.id; save(); }
              onLiveEvent(ev);
            }
          }
        } catch (e) {
          if (e.name === "AbortError") return;
        }
        if (live !== me) return;
        await sleep(me.delay);
        me.delay = Math.min(me.delay * 2, 15000);
      }
    })();
  }

  function stopLive() {
    if (!live) return;
    live.abort.abort();
    live = null;
  }

  async function sendTyping(typing) {
    if (!conversation || state.status !== "assigned") return;
    try { await postJson("/typing", { typing }); } catch (e) { /* only a hint */ }
  }

  input.addEventListener("input", () => {
    if (state.status !== "assigned") return;
    const now = Date.now();
    if (now - sentTyping > 3000) { sentTyping = now; sendTyping(true); }
    clearTimeout(typingIdle);
    typingIdle = setTimeout(() => { sentTyping = 0; sendTyping(false); }, 4000);
  });

  form.addEventListener("submit", (e) => {
    e.preventDefault();
    // Enter while an answer streams keeps the text for later: one question at a time.
    if (send.disabled) return;
    const text = input.value.trim();
    if (!text) return;
    input.value = "";
    // A click on Send leaves the focus on that button, which is disabled at once: the focus would drop to the page.
    input.focus();
    if (sentTyping) { clearTimeout(typingIdle); sentTyping = 0; sendTyping(false); }
    ask(text);
  });
  input.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); form.requestSubmit(); }
  });
  stopBtn.addEventListener("click", () => { if (controller) controller.abort(); });

  handoffBtn.addEventListener("click", async () => {
    handoffBtn.disabled = true;
    try {
      await ensureConversation();
      const data = await postJson("/handoff", {});
      // The server's wording (configurable per company) says where the customer stands, or offers the offline form.
      if (data.text && data.status !== state.status) notice(data.text);
      applyStatus(data);
    } catch (e) {
      status.textContent = e.message;
    } finally {
      handoffBtn.disabled = false;
    }
  });

  offlineForm.addEventListener("submit", async (e) => {
    e.preventDefault();
    const message = $("chat-offline-message").value.trim();
    const email = $("chat-offline-email").value.trim();
    if (!message || !email) return;
    try {
      applyStatus(await postJson("/offline", { message, email }));
      offlineForm.reset();
      await refreshStatus();
    } catch (err) {
      status.textContent = err.message;
    }
  });

  for (const star of ratingForm.querySelectorAll(".chat-star")) {
    star.addEventListener("click", () => {
      rating = Number(star.dataset.rating);
      for (const s of ratingForm.querySelectorAll(".chat-star")) {
        const on = Number(s.dataset.rating) <= rating;
        s.classList.toggle("on", on);
        s.setAttribute("aria-checked", String(Number(s.dataset.rating) === rating));
      }
      ratingSend.disabled = false;
    });
  }

  ratingForm.addEventListener("submit", async (e) => {
    e.preventDefault();
    if (!rating) return;
    const comment = $("chat-rating-comment").value.trim();
    try {
      await postJson("/rating", comment ? { rating, comment } : { rating });
      ratingForm.reset();
      applyStatus({ rating });
    } catch (err) {
      status.textContent = err.message;
    }
  });

  $("chat-new").addEventListener("click", () => {
    stopLive();
    localStorage.removeItem(STORE); conversation = null; log.textContent = "";
    knownIds = new Set();
    state = blankState();
    showTyping(null);
    render();
  });
  restore();
})();
