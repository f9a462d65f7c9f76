// Agent console: the live handoff queue and one conversation (transcript, sources, reply, notes, actions).
// Plain DOM code; every piece of text from customers, agents or the knowledge base goes in with textContent.
(function () {
  "use strict";
  const app = document.getElementById("console-app");
  if (!app) return;
  const page = app.dataset.page;
  const { apiClient, byId: $, el, pageCsrfToken, say } = window.SupportBotConsole;
  let csrf = pageCsrfToken();
  let me = null;
  const PRESENCE_HEARTBEAT_MS = 60000;

  // With no token in the page, the first state-changing call takes the session's from /me.
  const api = apiClient({
    base: "/api/console",
    csrfToken: async () => { if (!csrf) await loadMe(); return csrf; },
  });

  async function loadMe() {
    me = await api("GET", "/me");
    if (me && me.csrf_token) csrf = me.csrf_token;
    return me;
  }

  const showError = (message) => say("console-error", message);

  const items = (data) => (data && Array.isArray(data.items) ? data.items : []);

  function duration(seconds) {
    seconds = Math.max(0, Math.floor(seconds));
    const h = Math.floor(seconds / 3600), m = Math.floor((seconds % 3600) / 60), s = seconds % 60;
    const pad = (n) => String(n).padStart(2, "0");
    return h ? h + ":" + pad(m) + ":" + pad(s) : m + ":" + pad(s);
  }

  function safeUrl(url) {
    try {
      const u = new URL(url, window.location.href);
      return (u.protocol === "http:" || u.protocol === "https:") ? u.href : null;
    } catch (e) { return null; }
  }

  function when(iso) {
    if (!iso) return "";
    const d = new Date(iso);
    return isNaN(d) ? "" : d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  }

  // The server sends a label for each known reason; the raw reason is the fallback for a newer one.
  const reasonText = (c) => c.reason_label || c.reason || "—";
  const agentName = (a) => (a == null ? "" : typeof a === "string" ? a : (a.display_name || a.name || a.username || ""));

  // --- presence and the live stream, shared by both pages ---

  function initPresence() {
    const select = $("presence");
    if (!select) return;
    if (me && me.presence) select.value = me.presence;
    const send = async (quiet) => {
      try {
        const data = await api("POST", "/presence", { status: select.value });
        if (data && data.presence) select.value = data.presence;
        if (!quiet) showError("");
      } catch (e) { showError(e.message); }
    };
    select.addEventListener("change", () => send(false));
    // An agent who stops being seen counts as offline after a while; an open console says it is still here
    // (also right away, so a console reopened after a break is not shown online while counted offline).
    const heartbeat = () => { if (select.value !== "offline") send(true); };
    heartbeat();
    setInterval(heartbeat, PRESENCE_HEARTBEAT_MS);
  }

  function connectEvents(handlers, onOpen) {
    const badge = $("live-status");
    const setBadge = (state, text) => { if (badge) { badge.dataset.state = state; badge.textContent = text; } };
    // Cookies travel with EventSource, which also resumes with Last-Event-ID by itself after a drop. The stream
    // starts at "now", so whatever changed between the page's first read and the stream's start is read again.
    let source = null;
    const open = () => {
      source = new EventSource("/api/console/events");
      source.onopen = () => { setBadge("live", "Live"); if (onOpen) onOpen(); };
      source.onerror = () => {
        setBadge("connecting", "Reconnecting…");
        // EventSource gives up for good on an error status (a lost login, a restart refusing): check the login
        // (a 401 leads to the login page) and open a new stream a little later.
        if (source.readyState === EventSource.CLOSED) {
          setTimeout(() => { loadMe().then(open, () => setTimeout(open, 10000)); }, 3000);
        }
      };
      for (const kind of ["message", "note", "status", "queue", "typing", "summary", "rating"]) {
        source.addEventListener(kind, (ev) => {
          let data = {};
          try { data = JSON.parse(ev.data || "{}"); } catch (e) { return; }
          handlers(kind, data);
        });
      }
    };
    open();
    window.addEventListener("pagehide", () => source.close());
  }


  // --- queue page ---

  function queuePage() {
    const listEl = $("queue-list");
    const mineEl = $("mine-list");
    let queue = [];
    let refreshTimer = null;
    let refreshFailed = false;
    const listed = new Set();
    const title = document.title;

    // Measured against this browser's clock, so a skewed server clock cannot make waits negative.
    const waitingSince = (item) => Date.now() - (item.waiting_s || 0) * 1000;

    function renderQueue() {
      listEl.textContent = "";
      $("queue-count").textContent = queue.length ? "(" + queue.length + ")" : "";
      $("queue-empty").hidden = queue.length > 0;
      // The count in the tab's title shows waiting customers while the agent works in another tab.
      document.title = (queue.length ? "(" + queue.length + ") " : "") + title;
      for (const item of queue) {
        const id = item.id;
        const li = el("li", "queue-item");
        li.dataset.id = id;
        li.dataset.since = String(waitingSince(item));
        const head = el("div", "queue-head");
        const pos = item.position != null ? "#" + item.position : "";
        head.appendChild(el("span", "queue-pos", pos));
        const prio = Number(item.priority || 0);
        const badge = el("span", "priority priority-" + (prio > 0 ? "high" : "normal"), prio > 0 ? "Priority " + prio : "Normal");
        badge.dataset.priority = String(prio);
        head.appendChild(badge);
        head.appendChild(el("span", "queue-reason", reasonText(item)));
        const wait = el("span", "queue-wait");
        head.appendChild(wait);
        li.appendChild(head);
        if (item.preview) li.appendChild(el("p", "queue-preview", item.preview));
        li.appendChild(el("p", "queue-summary", item.summary || "No summary yet."));
        if (item.contact_email) li.appendChild(el("p", "queue-email", "Offline ticket — reply to " + item.contact_email));
        const actions = el("div", "queue-actions");
        const claim = el("button", "claim-btn", "Claim");
        claim.type = "button";
        claim.addEventListener("click", () => claimAndOpen(id, claim));
        const open = el("a", "open-link", "View");
        open.href = "/console/conversations/" + encodeURIComponent(id);
        actions.append(claim, open);
        li.appendChild(actions);
        listEl.appendChild(li);
      }
      tick();
    }

    function tick() {
      const now = Date.now();
      for (const li of listEl.children) {
        li.querySelector(".queue-wait").textContent = "waiting " + duration((now - Number(li.dataset.since)) / 1000);
      }
    }

    async function claimAndOpen(id, button) {
      button.disabled = true;
      try {
        await api("POST", "/conversations/" + encodeURIComponent(id) + "/claim");
        window.location.href = "/console/conversations/" + encodeURIComponent(id);
      } catch (e) {
        showError(e.status === 409 ? "Could not claim: " + e.message : e.message);
        button.disabled = false;
        refresh();
      }
    }

    function renderMine(rows) {
      mineEl.textContent = "";
      $("mine-count").textContent = rows.length ? "(" + rows.length + ")" : "";
      $("mine-empty").hidden = rows.length > 0;
      for (const c of rows) {
        const li = el("li", "mine-item");
        li.dataset.id = c.id;
        const a = el("a", "", c.preview || "Conversation " + c.id.slice(0, 8));
        a.href = "/console/conversations/" + encodeURIComponent(c.id);
        li.appendChild(a);
        li.appendChild(el("span", "mine-reason", reasonText(c)));
        mineEl.appendChild(li);
      }
    }

    async function refresh() {
      try {
        const [waiting, mine] = await Promise.all([
          api("GET", "/queue"), api("GET", "/conversations?status=assigned&mine=true"),
        ]);
        queue = items(waiting);
        renderQueue();
        renderMine(items(mine));
        listed.clear();
        for (const c of [...queue, ...items(mine)]) listed.add(c.id);
        if (refreshFailed) { refreshFailed = false; showError(""); }
      } catch (e) { refreshFailed = true; showError(e.message); }
    }

    function scheduleRefresh() {
      clearTimeout(refreshTimer);
      refreshTimer = setTimeout(refresh, 250);
    }

    setInterval(tick, 1000);
    refresh();
    // Chats with the bot produce most events; only those that change what this page lists cause a reload.
    const QUEUE_KINDS = new Set(["status", "queue", "summary"]);
    connectEvents((kind, d) => {
      if (QUEUE_KINDS.has(kind) || (kind === "message" && listed.has(d.conversation_id))) scheduleRefresh();
    }, scheduleRefresh);
  }

  // --- conversation page ---

  function conversationPage() {
    const convId = app.dataset.conversationId;
    const base = "/conversations/" + encodeURIComponent(convId);
    const transcript = $("transcript");
    const replyText = $("reply-text");
    const customerTyping = $("customer-typing");
    let conv = null;
    let canned = [];
    const shown = new Set();
    let typingTimer = null;
    let typingSent = 0;
    let typingIdle = null;
    let loadFailed = false;

    function renderCitations(li, citations) {
      if (!citations || !citations.length) return;
      const ol = el("ol", "msg-sources");
      ol.setAttribute("aria-label", "Sources");
      for (const c of citations) ol.appendChild(el("li", "citation", "[" + c.n + "] " + (c.title || c.source || "source")));
      li.appendChild(ol);
    }

    function addMessage(m) {
      if (m.id && shown.has(m.id)) return;
      if (m.id) shown.add(m.id);
      const note = Boolean(m.private);
      const role = note ? "note" : (m.role || "system");
      const li = el("li", "tmsg tmsg-" + role);
      li.dataset.role = role;
      if (m.id) li.dataset.id = m.id;
      const head = el("div", "tmsg-head");
      const who = note ? "Internal note" + (agentName(m.author) ? " · " + agentName(m.author) : "")
        : role === "agent" ? (agentName(m.author) || "Agent")
          : role === "customer" ? "Customer" : role === "bot" ? "Bot" : "System";
      head.appendChild(el("span", "tmsg-who", who));
      head.appendChild(el("time", "tmsg-time", when(m.created_at)));
      li.appendChild(head);
      li.appendChild(el("div", "tmsg-text", m.text || ""));
      if (role === "bot") renderCitations(li, m.citations);
      transcript.appendChild(li);
      transcript.scrollTop = transcript.scrollHeight;
    }

    function renderSources(c) {
      const ol = $("conv-sources");
      ol.textContent = "";
      const sources = c.sources || [];
      if (!sources.length) { ol.appendChild(el("li", "empty", "The bot used no sources.")); return; }
      for (const s of sources) {
        const li = el("li", "source");
        li.appendChild(el("span", "source-title", s.title || s.source || "source"));
        if (s.entry_id || s.source) li.appendChild(el("span", "source-meta", [s.source, s.entry_id].filter(Boolean).join(" · ")));
        const href = s.url ? safeUrl(s.url) : null;
        if (href) {
          const a = el("a", "source-link", href);
          a.href = href; a.target = "_blank"; a.rel = "noopener noreferrer";
          li.appendChild(a);
        }
        ol.appendChild(li);
      }
    }

    const assignedToMe = (c) => Boolean(me && c.assigned_agent_id === me.id);

    function renderFacts() {
      const c = conv;
      const status = c.status || "";
      $("conv-status").textContent = status;
      $("conv-status").dataset.status = status;
      $("conv-reason").textContent = c.reason ? reasonText(c) : "—";
      if (c.handoff_detail) $("conv-reason").appendChild(el("span", "reason-detail", " (" + c.handoff_detail + ")"));
      $("conv-priority").textContent = String(c.priority ?? 0);
      $("conv-agent").textContent = agentName(c.agent) || "—";
      $("conv-email").textContent = c.contact_email || "—";
      $("conv-rating").textContent = c.rating
        ? "★".repeat(c.rating) + "☆".repeat(5 - c.rating) + (c.rating_comment ? " “" + c.rating_comment + "”" : "")
        : "—";
      $("conv-summary").textContent = c.handoff_summary || "No summary yet.";
      renderSources(c);
      const mine = status === "assigned" && (assignedToMe(c) || (me && me.role === "admin"));
      $("claim-btn").hidden = status !== "queued";
      $("reply-send").disabled = !mine;
      replyText.disabled = !mine;
      replyText.placeholder = mine ? "" : status === "queued" ? "Claim the conversation to reply." : "";
      $("transfer-btn").disabled = !mine;
      $("resolve-btn").disabled = !mine;
      $("return-btn").disabled = !(status === "queued" || mine);
    }

    async function load() {
      try {
        conv = await api("GET", base);
        transcript.textContent = "";
        shown.clear();
        for (const m of conv.messages || []) addMessage(m);
        renderFacts();
        // Only clear an error of our own: a refused action's message must stay readable after the reload.
        if (loadFailed) { loadFailed = false; showError(""); }
      } catch (e) {
        loadFailed = true;
        showError(e.status === 404 ? "This conversation does not exist." : e.message);
      }
    }

    async function loadAgents() {
      const select = $("transfer-agent");
      try {
        // Only an online agent with room can take a transfer; the others are listed but cannot be picked.
        const agents = items(await api("GET", "/agents")).filter((a) => !me || a.id !== me.id);
        const chosen = select.value;
        select.textContent = "";
        select.appendChild(el("option", "", agents.length ? "Choose an agent…" : "No other agent")).value = "";
        for (const a of agents) {
          const full = a.load >= a.capacity;
          const o = el("option", "", agentName(a) + " — " + a.presence + (full ? ", at capacity" : ""));
          o.value = a.id;
          o.disabled = a.presence !== "online" || full;
          select.appendChild(o);
        }
        select.value = chosen;
      } catch (e) { showError(e.message); }
    }

    async function loadCanned() {
      const picker = $("canned-picker");
      const listEl = $("canned-list");
      try {
        canned = items(await api("GET", "/canned"));
      } catch (e) { showError(e.message); return; }
      picker.textContent = "";
      picker.appendChild(el("option", "", canned.length ? "Canned responses…" : "No canned responses")).value = "";
      listEl.textContent = "";
      for (const c of canned) {
        const o = el("option", "", c.title);
        o.value = String(c.id);
        picker.appendChild(o);
        const li = el("li", "canned-item");
        li.appendChild(el("strong", "", c.title));
        li.appendChild(el("span", "canned-text", " " + c.text));
        const del = el("button", "link-btn", "Delete");
        del.type = "button";
        del.addEventListener("click", async () => {
          try { await api("DELETE", "/canned/" + encodeURIComponent(c.id)); loadCanned(); } catch (e) { showError(e.message); }
        });
        li.appendChild(del);
        listEl.appendChild(li);
      }
    }

    async function act(path, body, button) {
      if (button) button.disabled = true;
      try {
        const data = await api("POST", base + path, body);
        showError("");
        return data || {};
      } catch (e) {
        showError(e.message);
        return null;
      } finally {
        if (button) button.disabled = false;
        await load();
      }
    }

    function sendTyping(typing) {
      api("POST", base + "/typing", { typing }).catch(() => {});
    }

    replyText.addEventListener("input", () => {
      const now = Date.now();
      if (now - typingSent > 3000) { typingSent = now; sendTyping(true); }
      clearTimeout(typingIdle);
      typingIdle = setTimeout(() => { typingSent = 0; sendTyping(false); }, 4000);
    });

    $("reply-form").addEventListener("submit", async (e) => {
      e.preventDefault();
      const text = replyText.value.trim();
      if (!text) return;
      clearTimeout(typingIdle); typingSent = 0;
      const data = await act("/messages", { text }, $("reply-send"));
      if (data) { replyText.value = ""; replyText.focus(); }
    });

    $("note-form").addEventListener("submit", async (e) => {
      e.preventDefault();
      const text = $("note-text").value.trim();
      if (!text) return;
      const data = await act("/notes", { text }, $("note-send"));
      if (data) $("note-text").value = "";
    });

    $("canned-picker").addEventListener("change", (e) => {
      const chosen = canned.find((c) => String(c.id) === e.target.value);
      if (chosen) {
        replyText.value = replyText.value ? replyText.value.replace(/\s*$/, " ") + chosen.text : chosen.text;
        replyText.focus();
      }
      e.target.value = "";
    });

    $("canned-form").addEventListener("submit", async (e) => {
      e.preventDefault();
      try {
        await api("POST", "/canned", { title: $("canned-title").value.trim(), text: $("canned-text").value.trim() });
        e.target.reset();
        showError("");
        loadCanned();
      } catch (err) { showError(err.message); }
    });

    $("claim-btn").addEventListener("click", (e) => act("/claim", undefined, e.target));
    $("resolve-btn").addEventListener("click", (e) => act("/resolve", undefined, e.target));
    $("return-btn").addEventListener("click", (e) => act("/return-to-bot", undefined, e.target));
    $("transfer-form").addEventListener("submit", async (e) => {
      e.preventDefault();
      const agentId = $("transfer-agent").value;
      if (!agentId) return;
      await act("/transfer", { agent_id: agentId }, $("transfer-btn"));
    });

    function showCustomerTyping(on) {
      clearTimeout(typingTimer);
      customerTyping.hidden = !on;
      // A lost "stopped typing" event must not leave the line up forever.
      if (on) typingTimer = setTimeout(() => { customerTyping.hidden = true; }, 8000);
    }

    let reloadTimer = null;
    function scheduleLoad() {
      clearTimeout(reloadTimer);
      reloadTimer = setTimeout(load, 150);
    }

    function onEvent(kind, d) {
      if (d.conversation_id !== convId) return;
      if (kind === "message" || kind === "note") {
        if (d.role === "customer") showCustomerTyping(false);
        addMessage(d);
      } else if (kind === "typing") {
        if (d.who === "customer") showCustomerTyping(d.typing !== false);
      } else {
        scheduleLoad();
      }
    }

    $("transfer-agent").addEventListener("focus", loadAgents);
    load();
    loadAgents();
    loadCanned();
    connectEvents(onEvent, scheduleLoad);
  }

  (async () => {
    try { await loadMe(); } catch (e) { showError(e.message); }
    initPresence();
    if (page === "queue") queuePage();
    else if (page === "conversation") conversationPage();
  })();
})();
