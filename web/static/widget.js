// support-bot chat widget. Embed with one tag on any allowed site:
//   <script src="https://HOST/widget.js" async data-color="#2457d6" data-position="right"></script>
// Optional data attributes: data-customer-id + data-customer-signature (hex HMAC-SHA256 of the id), data-title,
// data-greeting, data-launcher-label, data-avatar, data-text-color, data-open="true", data-server (API origin).
// Everything lives in a shadow root: the page's CSS cannot reach in and ours cannot leak out. Untrusted text (model,
// agents, knowledge base) only ever becomes DOM text nodes; nothing is parsed as HTML.
(function () {
  "use strict";
  if (window.SupportBotWidget) return;
  const script = document.currentScript ||
    Array.prototype.find.call(document.querySelectorAll("script[src]"), (s) => /\/widget\.js(?:[?#]|$)/.test(s.src));
  if (!script) return;
  const ds = script.dataset;
  const BASE = (ds.server || new URL(script.src, location.href).origin).replace(/\/+$/, "");
  const STORE = "support-bot-widget:" + BASE;
  const OPEN_KEY = STORE + ":open";
  const ACTIVE = { queued: 1, assigned: 1 };
  const HEX = /^#(?:[0-9a-f]{3}|[0-9a-f]{6})$/i;
  const customerId = ds.customerId || null;

  const CSS = `
:host{all:initial!important;display:block!important;position:fixed!important;z-index:2147483000!important;
 bottom:20px!important;right:20px!important;left:auto!important;top:auto!important;width:auto!important;
 height:auto!important;margin:0!important;padding:0!important;border:0!important;visibility:visible!important;
 opacity:1!important;transform:none!important;filter:none!important;float:none!important}
:host([data-position=left]){left:20px!important;right:auto!important}
*,*::before,*::after{box-sizing:border-box}
[hidden]{display:none!important}
.root{font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif;color:#1b1f24;
 text-align:left;display:flex;flex-direction:column;align-items:flex-end;gap:12px}
:host([data-position=left]) .root{align-items:flex-start}
button,input,textarea{font:inherit;color:inherit;margin:0}
button{cursor:pointer}
button:disabled{opacity:.5;cursor:default}
:focus-visible{outline:3px solid #ffbf47;outline-offset:2px}
svg{width:20px;height:20px;display:block;flex:none}
.launcher{display:flex;align-items:center;gap:8px;height:56px;min-width:56px;padding:0 18px;border:0;
 border-radius:28px;background:var(--p);color:var(--on);box-shadow:0 6px 20px rgba(0,0,0,.25);font-weight:600;
 position:relative}
.launcher svg{width:24px;height:24px}
.badge{position:absolute;top:-4px;right:-4px;min-width:20px;height:20px;padding:0 5px;border-radius:10px;
 background:#d93025;color:#fff;font-size:12px;line-height:20px;text-align:center}
.panel{width:380px;max-width:calc(100vw - 40px);height:600px;max-height:calc(100vh - 110px);background:#fff;
 border-radius:16px;box-shadow:0 12px 40px rgba(0,0,0,.28);display:flex;flex-direction:column;overflow:hidden}
.head{display:flex;align-items:center;gap:10px;padding:12px 12px 12px 16px;background:var(--p);color:var(--on)}
.avatar{width:36px;height:36px;border-radius:50%;object-fit:cover;background:rgba(255,255,255,.3)}
.titles{flex:1;min-width:0}
.title{margin:0;font-size:16px;font-weight:650;line-height:1.25;overflow:hidden;text-overflow:ellipsis;white-space:nowrap}
.sub{margin:0;font-size:12.5px;opacity:.85}
.icon{width:36px;height:36px;border:0;border-radius:8px;background:transparent;color:inherit;display:flex;
 align-items:center;justify-content:center;padding:0}
.icon:hover{background:rgba(255,255,255,.18)}
.banner{padding:8px 14px;background:#fff8e1;border-bottom:1px solid #f0e2b6;font-size:13.5px}
.banner.err{background:#fdecea;border-color:#f5c2bd;color:#8a1c1c}
.log{flex:1;overflow-y:auto;margin:0;padding:14px 12px;list-style:none;background:#f5f6f8;display:flex;
 flex-direction:column;gap:8px}
.msg{max-width:86%;padding:8px 12px;border-radius:14px;overflow-wrap:anywhere}
.customer{align-self:flex-end;background:var(--p);color:var(--on);border-bottom-right-radius:4px;white-space:pre-wrap}
.bot,.agent{align-self:flex-start;background:#fff;border:1px solid #e2e5e9;border-bottom-left-radius:4px}
.agent{border-color:#c9d7f5}
.err{border-color:#f0b4ae;background:#fdf1f0;color:#8a1c1c}
.notice{align-self:center;max-width:92%;font-size:12.5px;color:#555f6b;text-align:center}
.author{font-size:12px;font-weight:650;color:#555f6b;margin-bottom:2px}
.text p{margin:0 0 .5em}.text p:last-child{margin-bottom:0}
.text ul,.text ol{margin:.2em 0 .5em;padding-left:1.3em}
.text code{font:.88em ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;background:#eef0f3;padding:1px 4px;border-radius:4px}
.text pre{background:#eef0f3;padding:8px;border-radius:6px;overflow-x:auto;margin:0 0 .5em}
.text pre code{padding:0;background:none}
.text a,.sources a{color:var(--p)}
.customer .text a{color:inherit}
.cite{font-size:.8em;vertical-align:super;text-decoration:none}
.streaming .text::after{content:"\\258D";opacity:.6}
.state{font-size:12px;color:#555f6b;margin-top:4px}
.sources{margin:6px 0 0;padding:6px 0 0;border-top:1px solid #eceef1;list-style:none;font-size:12.5px}
.sources li{margin:2px 0}
.fb{display:flex;align-items:center;gap:6px;margin-top:6px;font-size:12px;color:#555f6b}
.fb button{width:32px;height:28px;border:1px solid #d7dce2;border-radius:6px;background:#fff;color:#555f6b;
 display:flex;align-items:center;justify-content:center;padding:0}
.fb button svg{width:16px;height:16px}
.fb button[aria-pressed=true]{background:var(--p);border-color:var(--p);color:var(--on)}
.typing{padding:4px 14px;font-size:12.5px;color:#555f6b;background:#f5f6f8}
.box{display:grid;gap:6px;padding:10px 12px;border-top:1px solid #e6e9ed;background:#fff;font-size:13.5px}
.box p{margin:0}
.box input,.box textarea{width:100%;border:1px solid #cdd3da;border-radius:8px;padding:7px 9px;background:#fff}
.stars{display:flex;gap:2px}
.stars button{border:0;background:none;padding:2px;color:#c4c9d0}
.stars button svg{width:28px;height:28px}
.stars button.on{color:#f2a71b}
.btn{justify-self:start;border:0;border-radius:8px;padding:7px 14px;background:var(--p);color:var(--on);font-weight:600}
.actions{display:flex;flex-wrap:wrap;gap:8px;padding:8px 12px 0;background:#fff}
.ask{border:0;background:none;padding:0;color:var(--p);text-decoration:underline;cursor:pointer;font:inherit;text-align:left}
.text ul.related{list-style:none;padding-left:0}
.related li{margin:0 0 .35em}
.chip{border:1px solid var(--p);border-radius:999px;padding:4px 12px;background:#fff;color:var(--p);font-size:13px}
.composer{display:flex;align-items:flex-end;gap:8px;padding:8px 12px 12px;background:#fff}
.composer textarea{flex:1;min-height:42px;max-height:120px;resize:none;border:1px solid #cdd3da;border-radius:10px;
 padding:10px;line-height:1.35;background:#fff}
.send{width:42px;height:42px;border:0;border-radius:10px;background:var(--p);color:var(--on);display:flex;
 align-items:center;justify-content:center;padding:0}
.stop{background:#3a4150;color:#fff}
.sr{position:absolute!important;width:1px;height:1px;overflow:hidden;clip:rect(0 0 0 0);white-space:nowrap}
@media (max-width:480px){
 .panel{position:fixed;top:0;left:0;width:100vw;max-width:none;height:100vh;height:100dvh;max-height:none;border-radius:0}
 .open .launcher{display:none}
 .label{display:none}
 .launcher{padding:0 16px}
 .composer textarea{font-size:16px}
}`;

  // --- small DOM helpers: text only ever goes in through textContent or text nodes ---------------------------------
  function el(tag, attrs, text) {
    const node = document.createElement(tag);
    if (attrs) for (const k in attrs) {
      if (k === "class") node.className = attrs[k];
      else if (attrs[k] != null && attrs[k] !== false) node.setAttribute(k, attrs[k] === true ? "" : attrs[k]);
    }
    if (text != null) node.textContent = text;
    return node;
  }
  const ICONS = {
    chat: "M4 4h16a1 1 0 0 1 1 1v11a1 1 0 0 1-1 1H9l-5 4V5a1 1 0 0 1 1-1z",
    close: "M6 6l12 12M18 6L6 18",
    plus: "M12 5v14M5 12h14",
    send: "M4 12l16-8-6 16-2.5-6.5z",
    stop: "M7 7h10v10H7z",
    up: "M7 21V10M3 11v9a1 1 0 0 0 1 1h12.3a2 2 0 0 0 2-1.7l1.3-7A2 2 0 0 0 17.6 10H14V5a2.5 2.5 0 0 0-2.5-2.5L7 10",
    star: "M12 2.5l2.9 6.2 6.6.7-5 4.5 1.4 6.6L12 17.2l-5.9 3.3 1.4-6.6-5-4.5 6.6-.7z",
  };
  function icon(name, flip) {
    const NS = "http://www.w3.org/2000/svg";
    const svg = document.createElementNS(NS, "svg");
    svg.setAttribute("viewBox", "0 0 24 24");
    svg.setAttribute("aria-hidden", "true");
    svg.setAttribute("focusable", "false");
    const filled = name === "star" || name === "stop" || name === "chat";
    svg.setAttribute("fill", filled ? "currentColor" : "none");
    if (!filled) {
      svg.setAttribute("stroke", "currentColor");
      svg.setAttribute("stroke-width", "2");
      svg.setAttribute("stroke-linecap", "round");
      svg.setAttribute("stroke-linejoin", "round");
    }
    if (flip) svg.style.transform = "rotate(180deg)";
    const path = document.createElementNS(NS, "path");
    path.setAttribute("d", ICONS[name]);
    svg.appendChild(path);
    return svg;
  }
  function safeUrl(url) {
    try {
      const u = new URL(String(url));
      return u.protocol === "http:" || u.protocol === "https:" ? u.href : null;
    } catch (e) { return null; }
  }
  function link(href, text) {
    return el("a", { href, target: "_blank", rel: "noopener noreferrer nofollow" }, text);
  }

  // --- Markdown, a small safe subset: paragraphs, lists, code, bold, italics, http(s) links, [n] citations -------
  // Kept over marked + DOMPurify: it builds DOM nodes, never HTML strings (nothing to sanitize), in the 30 KB budget.
  const INLINE = "`([^`\\n]+)`|\\*\\*([^*\\n]+?)\\*\\*|\\*([^*\\s][^*\\n]*?)\\*|\\[([^\\]\\n]+)\\]\\(([^)\\s]+)\\)" +
    "|(https?:\\/\\/[^\\s<>\"'()\\[\\]]*[^\\s<>\"'()\\[\\].,;:!?])|\\[(\\d{1,2})\\]";
  function inline(parent, text, cites, depth) {
    const re = new RegExp(INLINE, "g");
    let last = 0, m;
    const add = (node) => parent.appendChild(node);
    while ((m = re.exec(text))) {
      if (m.index > last) add(document.createTextNode(text.slice(last, m.index)));
      last = re.lastIndex;
      if (m[1] != null) add(el("code", null, m[1]));
      else if ((m[2] != null || m[3] != null) && depth < 3) {
        const node = el(m[2] != null ? "strong" : "em");
        inline(node, m[2] != null ? m[2] : m[3], cites, depth + 1);
        add(node);
      } else if (m[4] != null) {
        const href = safeUrl(m[5]);
        add(href ? link(href, m[4]) : document.createTextNode(m[0]));
      } else if (m[6] != null) add(link(m[6], m[6]));
      else if (m[7] != null) {
        const c = (cites || []).find((x) => String(x.n) === m[7]);
        const href = c && c.url && safeUrl(c.url);
        if (href) {
          const a = link(href, "[" + m[7] + "]");
          a.className = "cite";
          a.setAttribute("aria-label", "Source " + m[7] + ": " + (c.title || c.source || href));
          add(a);
        } else add(document.createTextNode(m[0]));
      } else add(document.createTextNode(m[0]));
    }
    if (last < text.length) add(document.createTextNode(text.slice(last)));
  }
  const LIST = /^\s*(?:([-*+])|(\d{1,3})[.)])\s+(.*)$/;
  function markdown(text, cites) {
    const out = document.createDocumentFragment();
    const lines = String(text || "").replace(/\r\n?/g, "\n").split("\n");
    let para = [];
    const flush = () => {
      if (!para.length) return;
      const p = el("p");
      para.forEach((line, k) => { if (k) p.appendChild(el("br")); inline(p, line, cites, 0); });
      out.appendChild(p);
      para = [];
    };
    for (let i = 0; i < lines.length;) {
      const line = lines[i];
      if (/^\s*```/.test(line)) {
        flush();
        const code = [];
        for (i++; i < lines.length && !/^\s*```/.test(lines[i]); i++) code.push(lines[i]);
        i++;
        const pre = el("pre");
        pre.appendChild(el("code", null, code.join("\n")));
        out.appendChild(pre);
        continue;
      }
      let m = LIST.exec(line);
      if (m) {
        flush();
        const ordered = !m[1];
        const list = el(ordered ? "ol" : "ul");
        if (ordered && m[2] !== "1") list.setAttribute("start", String(parseInt(m[2], 10)));
        while (i < lines.length && (m = LIST.exec(lines[i])) && !m[1] === ordered) {
          const item = el("li");
          inline(item, m[3], cites, 0);
          list.appendChild(item);
          i++;
        }
        out.appendChild(list);
        continue;
      }
      const heading = /^\s*#{1,6}\s+(.*)$/.exec(line);
      if (heading) {
        flush();
        const p = el("p"), strong = el("strong");
        inline(strong, heading[1], cites, 1);
        p.appendChild(strong);
        out.appendChild(p);
      } else if (!line.trim()) flush();
      else para.push(line);
      i++;
    }
    flush();
    return out;
  }

  // --- state kept across reloads and shared by tabs -----------------------------------------------------------------
  let conv = null; // {id, token, customer, lastEventId, rev, pending: {cid, text}, fb: {messageId: "up"|"down"}}
  function loadConv() {
    try {
      const c = JSON.parse(localStorage.getItem(STORE));
      // A stored chat of another (or no) identified customer is not this visitor's to see.
      return c && c.id && c.token && (c.customer || null) === customerId ? c : null;
    } catch (e) { return null; }
  }
  function saveConv(changed) {
    if (!conv) return;
    if (changed) conv.rev = Date.now() + Math.random();
    try { localStorage.setItem(STORE, JSON.stringify(conv)); } catch (e) { /* private mode: this tab only */ }
  }
  function dropConv() {
    conv = null;
    try { localStorage.removeItem(STORE); } catch (e) { /* private mode */ }
  }

  // --- building the UI ----------------------------------------------------------------------------------------------
  const cfg = {
    title: "Support", greeting: "", launcher_label: "Chat with us", position: "right", primary_color: "#2457d6",
    text_color: "#ffffff", avatar_url: null, bot_name: "Assistant", handoff_enabled: true, max_message_chars: 4000,
  };
  const host = document.createElement("support-bot-widget");
  const shadow = host.attachShadow({ mode: "open" });
  if (shadow.adoptedStyleSheets && window.CSSStyleSheet && "replaceSync" in CSSStyleSheet.prototype) {
    // A constructed sheet also works on pages whose CSP forbids inline <style>.
    const sheet = new CSSStyleSheet();
    sheet.replaceSync(CSS);
    shadow.adoptedStyleSheets = [sheet];
  } else shadow.appendChild(el("style", null, CSS));

  const root = el("div", { class: "root" });
  const launcher = el("button", { class: "launcher", type: "button", "aria-expanded": "false", "aria-controls": "sb-panel" });
  const launcherLabel = el("span", { class: "label" });
  const badge = el("span", { class: "badge", "aria-hidden": "true", hidden: true });
  launcher.append(icon("chat"), launcherLabel, badge);

  const panel = el("section", { class: "panel", id: "sb-panel", role: "dialog", "aria-labelledby": "sb-title", hidden: true });
  const head = el("div", { class: "head" });
  const avatar = el("img", { class: "avatar", alt: "", hidden: true });
  const titles = el("div", { class: "titles" });
  const title = el("h2", { class: "title", id: "sb-title" });
  const sub = el("p", { class: "sub" });
  titles.append(title, sub);
  const newBtn = el("button", { class: "icon", type: "button", "aria-label": "Start a new conversation", title: "New conversation" });
  newBtn.appendChild(icon("plus"));
  const closeBtn = el("button", { class: "icon", type: "button", "aria-label": "Close chat", title: "Close" });
  closeBtn.appendChild(icon("close"));
  head.append(avatar, titles, newBtn, closeBtn);

  const banner = el("div", { class: "banner", role: "status", hidden: true });
  // A plain list of messages (no role="log", which would take the list semantics away from its items); new text is
  // announced through the live region below, a sentence at a time. Focusable, so the keyboard can scroll it.
  const log = el("ol", { class: "log", "aria-label": "Conversation", tabindex: "0" });
  const typing = el("div", { class: "typing", hidden: true });

  const offline = el("form", { class: "box offline", hidden: true, "aria-label": "Leave a message" });
  const offText = el("textarea", { rows: "3", required: true, "aria-label": "Your message", placeholder: "Your message" });
  const offEmail = el("input", { type: "email", required: true, autocomplete: "email", "aria-label": "Your e-mail address", placeholder: "you@example.com" });
  // What happens next is said once, in the banner above; the form only asks for the two fields.
  offline.append(el("p", null, "Your message and e-mail address:"), offText, offEmail,
    el("button", { class: "btn", type: "submit" }, "Send message"));

  const rating = el("form", { class: "box rating", hidden: true, "aria-label": "Rate this conversation" });
  const stars = el("div", { class: "stars", role: "radiogroup", "aria-label": "Your rating, 1 to 5 stars" });
  for (let n = 1; n <= 5; n++) {
    const b = el("button", { type: "button", role: "radio", "aria-checked": "false", "aria-label": n + (n === 1 ? " star" : " stars"), "data-rating": String(n) });
    b.appendChild(icon("star"));
    stars.appendChild(b);
  }
  const rateComment = el("input", { type: "text", maxlength: "4000", "aria-label": "Comment (optional)", placeholder: "Comment (optional)" });
  const rateSend = el("button", { class: "btn", type: "submit", disabled: true }, "Send rating");
  rating.append(el("p", null, "How did we do?"), stars, rateComment, rateSend);

  const actions = el("div", { class: "actions" });
  const handoffBtn = el("button", { class: "chip", type: "button" }, "Talk to a person");
  actions.append(handoffBtn);

  const composer = el("form", { class: "composer" });
  const input = el("textarea", { rows: "1", "aria-label": "Your message", placeholder: "Type your question…", maxlength: "4000" });
  const sendBtn = el("button", { class: "send", type: "submit", "aria-label": "Send" });
  sendBtn.appendChild(icon("send"));
  const stopBtn = el("button", { class: "send stop", type: "button", "aria-label": "Stop the answer", hidden: true });
  stopBtn.appendChild(icon("stop"));
  composer.append(input, sendBtn, stopBtn);
  const live = el("div", { class: "sr", "aria-live": "polite", "aria-atomic": "true" });

  panel.append(head, banner, log, typing, offline, rating, actions, composer, live);
  root.append(panel, launcher);
  shadow.appendChild(root);

  function applyTheme() {
    const color = HEX.test(ds.color || "") ? ds.color : HEX.test(cfg.primary_color) ? cfg.primary_color : "#2457d6";
    const on = HEX.test(ds.textColor || "") ? ds.textColor : HEX.test(cfg.text_color) ? cfg.text_color : "#ffffff";
    root.style.setProperty("--p", color);
    root.style.setProperty("--on", on);
    const pos = ds.position === "left" || ds.position === "right" ? ds.position : cfg.position === "left" ? "left" : "right";
    host.setAttribute("data-position", pos);
    const label = ds.launcherLabel || cfg.launcher_label;
    launcherLabel.textContent = label;
    title.textContent = ds.title || cfg.title;
    const src = safeUrl(ds.avatar || cfg.avatar_url || "");
    avatar.hidden = !src;
    if (src) avatar.src = src;
    launcher.setAttribute("aria-label", (isOpen() ? "Close chat: " : "Open chat: ") + label);
    input.setAttribute("maxlength", String(cfg.max_message_chars || 4000));
    renderState();
  }

  // --- talking to the server ----------------------------------------------------------------------------------------
  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
  function uuid() {
    if (window.crypto && crypto.randomUUID) return crypto.randomUUID();
    const b = crypto.getRandomValues(new Uint8Array(16));
    b[6] = (b[6] & 15) | 64; b[8] = (b[8] & 63) | 128;
    const h = Array.from(b, (x) => (x + 256).toString(16).slice(1)).join("");
    return h.slice(0, 8) + "-" + h.slice(8, 12) + "-" + h.slice(12, 16) + "-" + h.slice(16, 20) + "-" + h.slice(20);
  }
  function convUrl(suffix) { return BASE + "/api/conversations/" + encodeURIComponent(conv.id) + suffix; }
  function headers(json) {
    const h = { Authorization: "Bearer " + conv.token };
    if (json) h["Content-Type"] = "application/json";
    return h;
  }
  class ApiError extends Error {
    constructor(status, detail, retryAfter) { super(detail); this.status = status; this.retryAfter = retryAfter; }
  }
  async function failure(res) {
    const data = await res.json().catch(() => ({}));
    const retry = parseInt(res.headers.get("Retry-After") || "", 10);
    let detail = typeof data.detail === "string" ? data.detail : "Something went wrong (" + res.status + "). Please try again.";
    if (res.status >= 500) detail = "Something went wrong on our side. Please try again in a moment.";
    return new ApiError(res.status, detail, isNaN(retry) ? null : retry);
  }
  async function call(method, url, body, opts) {
    const init = Object.assign({ method, credentials: "omit", cache: "no-store", headers: conv ? headers(body !== undefined) : {} }, opts || {});
    if (body !== undefined) {
      init.body = JSON.stringify(body);
      init.headers["Content-Type"] = "application/json";
    }
    const res = await fetch(url, init);
    if (!res.ok) throw await failure(res);
    return res.status === 204 ? null : res.json().catch(() => null);
  }

  // Reads a text/event-stream body: yields {id, event, data}; heartbeat comments are skipped.
  async function* events(res) {
    const reader = res.body.getReader();
    const decoder = new TextDecoder();
    let buf = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buf += decoder.decode(value, { stream: true }).replace(/\r\n?/g, "\n");
      let cut;
      while ((cut = buf.indexOf("\n\n")) >= 0) {
        const raw = buf.slice(0, cut);
        buf = buf.slice(cut + 2);
        let event = "message", data = "", id = null;
        for (const line of raw.split("\n")) {
          if (!line || line[0] === ":") continue;
          const i = line.indexOf(":");
          const field = i < 0 ? line : line.slice(0, i);
          const val = i < 0 ? "" : line.slice(i + 1).replace(/^ /, "");
          if (field === "event") event = val;
          else if (field === "data") data += (data ? "\n" : "") + val;
          else if (field === "id") id = val;
        }
        if (!data) continue;
        let parsed;
        try { parsed = JSON.parse(data); } catch (e) { continue; }
        yield { id, event, data: parsed };
      }
    }
  }

  let identityError = null;
  async function ensureConversation() {
    if (conv) return conv;
    if (identityError) throw new ApiError(403, identityError);
    let body = {};
    if (customerId) {
      if (!ds.customerSignature) {
        identityError = "This site passed a customer id without its signature, so the chat cannot confirm who you are.";
        throw new ApiError(403, identityError);
      }
      body = { customer: { id: customerId, signature: ds.customerSignature } };
    }
    let created;
    try {
      created = await call("POST", BASE + "/api/conversations", body);
    } catch (e) {
      if (e.status === 403 || e.status === 422) {
        identityError = "We could not confirm who you are (" + e.message + "). Please reload the page or sign in again.";
        throw new ApiError(e.status, identityError);
      }
      throw e;
    }
    conv = { id: created.id, token: created.token, customer: customerId, lastEventId: null, rev: 0, pending: null, fb: {} };
    saveConv(true);
    return conv;
  }

  // --- rendering messages -------------------------------------------------------------------------------------------
  let known = new Set();
  function bubble(role, opts) {
    opts = opts || {};
    const li = el("li", { class: "msg " + role, "data-role": role });
    if (opts.id) { li.dataset.id = opts.id; known.add(opts.id); }
    if (role === "agent") li.appendChild(el("div", { class: "author" }, opts.author || "Support team"));
    const body = el("div", { class: "text" });
    li.appendChild(body);
    setText(li, opts.text || "", opts.citations);
    log.appendChild(li);
    scrollDown();
    return li;
  }
  function setText(li, text, cites) {
    const body = li.querySelector(".text");
    // The customer's own words are shown as typed; everything else gets the safe Markdown subset.
    if (li.dataset.role === "customer") body.textContent = text;
    else body.replaceChildren(markdown(text, cites));
  }
  // A line about the chat itself: one the server stored (an agent joined, the chat was resolved) has its id, and comes
  // back with the history after a reload; one without is this page's own (the answer to "Talk to a person").
  function notice(text, id) {
    const li = el("li", { class: "notice", "data-role": "notice" }, text);
    if (id) { li.dataset.id = id; known.add(id); }
    log.appendChild(li);
    scrollDown();
    return li;
  }
  // The log keeps to its newest message while the customer has not scrolled up: after the history is drawn, a banner,
  // the offline or rating form or the panel being shown again changes its height, and no scrollDown() follows that.
  // The scroll event of our own scrollDown() arrives after such a change and would read as "scrolled up": skipped.
  let pinned = true, ownTop = -1;
  function scrollDown() { log.scrollTop = log.scrollHeight; ownTop = log.scrollTop; pinned = true; }
  log.addEventListener("scroll", () => {
    if (Math.abs(log.scrollTop - ownTop) > 1) pinned = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
  });
  if (window.ResizeObserver) new ResizeObserver(() => { if (pinned) scrollDown(); }).observe(log);
  function showSources(li, cites) {
    const old = li.querySelector(".sources");
    if (old) old.remove();
    if (!cites || !cites.length) return;
    const list = el("ol", { class: "sources", "aria-label": "Sources" });
    for (const c of cites) {
      const label = "[" + c.n + "] " + (c.title || c.source || "Source");
      const item = el("li", { class: "citation", "data-entry-id": c.entry_id || "" });
      const href = c.url && safeUrl(c.url);
      if (href) item.appendChild(link(href, label));
      else item.textContent = label;
      list.appendChild(item);
    }
    li.insertBefore(list, li.querySelector(".fb"));
  }
  // A reply that declined lists help-center questions the customer may have meant: each list item becomes, where it
  // stands, a button that asks it. The text the bubble shows stays the same (no bullet, no second copy of the list),
  // and the list drops its bullets so that the questions line up with the reply's text.
  function showRelated(li, related) {
    if (!related || !related.length) return;
    const items = Array.from(li.querySelectorAll(".text li"));
    for (const r of related) {
      const item = items.find((x) => !x.querySelector("button") && x.textContent.trim() === r.question);
      if (!item) continue;
      const b = el("button", { type: "button", class: "ask", "data-entry-id": r.entry_id || "" }, r.question);
      b.addEventListener("click", () => {
        if (busy) return;
        // The bubble holding this button is drawn anew once the answer is in: the focus waits in the text box.
        input.focus();
        ask(r.question);
      });
      item.replaceChildren(b);
      item.parentNode.classList.add("related");
      item.parentNode.setAttribute("aria-label", "Related questions");
    }
  }
  function showFeedback(li) {
    const id = li.dataset.id;
    if (!id || li.querySelector(".fb")) return;
    const box = el("div", { class: "fb", role: "group", "aria-label": "Was this answer helpful?" });
    const note = el("span");
    for (const kind of ["up", "down"]) {
      const b = el("button", { type: "button", "data-rating": kind, "aria-pressed": String(conv && conv.fb[id] === kind),
        "aria-label": kind === "up" ? "Helpful" : "Not helpful", title: kind === "up" ? "Helpful" : "Not helpful" });
      b.appendChild(icon("up", kind === "down"));
      b.addEventListener("click", () => sendFeedback(li, kind, note));
      box.appendChild(b);
    }
    box.appendChild(note);
    li.appendChild(box);
  }
  function showMessage(m) {
    if (m.private) return null;
    if (m.role !== "customer" && m.role !== "agent" && m.role !== "bot") return notice(m.text || "", m.id);
    const li = bubble(m.role, {
      id: m.id, text: m.text, author: m.author, citations: m.citations,
    });
    if (m.role === "bot") { showSources(li, m.citations); showRelated(li, m.related); showFeedback(li); }
    return li;
  }
  function renderAll(messages) {
    // The stored conversation is drawn again after each answer: a keyboard user on a control of a message (a related
    // question, a thumb) must not lose the focus to the page. The same control of the same message takes it back.
    const had = shadow.activeElement, li = had && had !== log && log.contains(had) && had.closest("li[data-id]");
    const at = li ? { id: li.dataset.id, n: Array.from(li.querySelectorAll("button,a")).indexOf(had) } : null;
    known = new Set();
    log.replaceChildren();
    const greeting = ds.greeting || cfg.greeting;
    if (greeting) bubble("bot greeting", { text: greeting }).dataset.role = "greeting";
    for (const m of messages) showMessage(m);
    scrollDown();
    const again = at && Array.from(log.querySelectorAll("li[data-id]")).find((x) => x.dataset.id === at.id);
    const control = again && again.querySelectorAll("button,a")[at.n];
    if (control) control.focus({ preventScroll: true });
  }

  // --- live region: streamed text is announced a sentence at a time, not per token ---------------------------------
  let spoken = "";
  function announce(text) {
    if (!text) return;
    live.textContent = "";
    // A fresh text node each time: screen readers announce changes, not a repeated identical string.
    setTimeout(() => { live.textContent = text; }, 30);
  }
  function speakStream(text, final) {
    if (!text.startsWith(spoken)) spoken = "";
    const rest = text.slice(spoken.length);
    // Citation markers alone ("[1]" closing an answer) say nothing to a listener: the sentence before them stands.
    if (final) { const said = rest.replace(/\s*\[\d{1,2}\]/g, "").trim(); if (said) announce(said); spoken = ""; return; }
    const end = Math.max(rest.lastIndexOf(". "), rest.lastIndexOf("! "), rest.lastIndexOf("? "), rest.lastIndexOf("\n"));
    if (end > 0) { announce(rest.slice(0, end + 1).trim()); spoken += rest.slice(0, end + 1); }
  }

  // --- one customer turn, with recovery from a dropped connection ---------------------------------------------------
  const MAX_ATTEMPTS = 8;
  let busy = false, controller = null, stoppedByUser = false, syncAfter = false;
  function setBusy(on) {
    busy = on;
    sendBtn.hidden = on;
    stopBtn.hidden = !on;
  }
  function showBanner(text, isError) {
    banner.hidden = !text;
    banner.textContent = text || "";
    banner.classList.toggle("err", Boolean(isError));
    if (text) announce(text);
  }

  async function ask(text) {
    if (busy || !text) return;
    try {
      await ensureConversation();
    } catch (e) {
      input.value = text;
      showBanner(e instanceof ApiError ? e.message : "We can't reach the chat right now. Please try again in a moment.", true);
      return;
    }
    conv.pending = { cid: uuid(), text };
    saveConv(false);
    await turn(conv.pending, bubble("customer", { text }));
  }

  async function turn(pending, mine) {
    setBusy(true);
    stoppedByUser = false;
    showBanner("");
    let li = null, streamed = "", delay = 1000, outcome = null;
    const botBubble = () => {
      if (!li) { li = bubble("bot"); li.classList.add("streaming"); }
      return li;
    };
    const note = (text) => {
      const old = li && li.querySelector(".state");
      if (old) old.remove();
      if (text) botBubble().appendChild(el("div", { class: "state" }, text));
    };
    const fail = (text) => {
      botBubble().classList.add("err");
      setText(li, text);
      announce(text);
    };
    // While a person owns the chat the bot is silent: no empty bubble.
    if (!ACTIVE[status.status]) botBubble();
    for (let attempt = 0; !outcome; attempt++) {
      if (stoppedByUser) { outcome = "stopped"; break; }
      if (attempt >= MAX_ATTEMPTS) { outcome = "unsent"; break; }
      controller = new AbortController();
      try {
        const res = await fetch(convUrl("/messages"), {
          method: "POST", credentials: "omit", cache: "no-store", headers: headers(true), signal: controller.signal,
          body: JSON.stringify({ text: pending.text, client_message_id: pending.cid }),
        });
        if (!res.ok) {
          const err = await failure(res);
          if (err.status === 429 && attempt > 0) {
            // A re-post of a message the server may already have: wait as told, then recover it.
            note("Reconnecting…");
            await sleep(Math.max(err.retryAfter || 5, 1) * 1000);
            continue;
          }
          outcome = "refused";
          if (mine) mine.remove();
          if (li) li.remove();
          li = null;
          // Nothing typed is lost: the text goes back into the box.
          input.value = pending.text;
          if (err.status === 404 || err.status === 401) {
            dropConv();
            resetUi();
            showBanner("This conversation has ended. Send your message again to start a new one.", true);
          } else showBanner(err.message, true);
          break;
        }
        for await (const ev of events(res)) {
          const d = ev.data || {};
          if (attempt > 0) note("");
          if (ev.event === "token") {
            streamed += d.text || "";
            setText(botBubble(), streamed);
            speakStream(streamed, false);
          } else if (ev.event === "done") {
            outcome = "done";
            if (d.text) {
              setText(botBubble(), d.text, d.citations);
              if (d.message_id) { li.dataset.id = d.message_id; known.add(d.message_id); }
              showSources(li, d.citations);
              showRelated(li, d.related);
              showFeedback(li);
              speakStream(d.text, true);
            } else if (li && !streamed) { li.remove(); li = null; }
            if (d.status) applyStatus(d);
          } else if (ev.event === "error") {
            outcome = "done";
            fail(d.detail || "Something went wrong. Please try again.");
          }
          scrollDown();
        }
      } catch (e) {
        if (stoppedByUser) { outcome = "stopped"; break; }
      }
      if (outcome) break;
      // The connection dropped before the answer was complete: send the same message again once the network is
      // back. The server knows it by its client_message_id, so nothing is stored or answered twice.
      streamed = "";
      note("Connection lost. Reconnecting…");
      await Promise.race([sleep(delay), new Promise((r) => window.addEventListener("online", r, { once: true }))]);
      delay = Math.min(delay * 2, 15000);
    }
    if (li) li.classList.remove("streaming");
    controller = null;
    setBusy(false);
    if (outcome === "stopped") note("Stopped.");
    if (outcome === "unsent") {
      note("");
      fail("We couldn't reach the chat, so your message may not have been answered.");
      const retry = el("button", { class: "chip", type: "button" }, "Try again");
      retry.addEventListener("click", () => { li.remove(); input.focus(); turn(pending, null); });
      li.appendChild(retry);
      return; // pending stays stored: a reload tries again too
    }
    if (conv) { conv.pending = null; saveConv(outcome === "done"); }
    if (outcome === "done" && conv) await syncHistory();
    if (syncAfter) { syncAfter = false; await syncHistory(); }
    if (status.status && status.status !== "bot") refreshStatus();
  }

  // Reads of the stored history may cross each other and the live stream: a read answered before an agent's message was
  // stored can arrive after that message came live. What the customer has read is never taken away: an older read
  // than the one drawn is dropped, and a message shown live that a read lacks is kept at the end.
  let syncSent = 0, syncDrawn = 0;
  const liveShown = new Map();
  async function syncHistory() {
    if (!conv) return;
    if (busy) { syncAfter = true; return; }
    const mine = ++syncSent, of = conv;
    let data;
    try {
      data = await call("GET", convUrl("/messages"));
    } catch (e) {
      if ((e.status === 404 || e.status === 401) && conv === of) { dropConv(); resetUi(); }
      return;
    }
    if (conv !== of || mine < syncDrawn) return;
    if (busy) { syncAfter = true; return; }
    syncDrawn = mine;
    const messages = data.messages || [];
    const stored = new Set(messages.map((m) => m.id));
    for (const [id, m] of liveShown) {
      if (stored.has(id)) liveShown.delete(id);
      else messages.push(m);
    }
    renderAll(messages);
  }

  async function sendFeedback(li, kind, note) {
    const id = li.dataset.id;
    if (!conv || !id) return;
    try {
      await call("POST", BASE + "/api/messages/" + encodeURIComponent(id) + "/feedback", { rating: kind });
      conv.fb[id] = kind;
      saveConv(true);
      for (const b of li.querySelectorAll(".fb button")) b.setAttribute("aria-pressed", String(b.dataset.rating === kind));
      note.textContent = "Thanks for your feedback!";
    } catch (e) {
      note.textContent = e.message || "Could not send your feedback.";
    }
    announce(note.textContent);
  }

  // --- handoff: queue position, agent messages, typing, offline message, rating -------------------------------------
  let status = blank();
  function blank() { return { status: null, agent: null, position: null, eta_s: null, agents_online: null, can_rate: false, rating: null, offline_message: false }; }
  function minutes(s) {
    if (s == null) return "";
    if (s < 60) return "less than a minute";
    const n = Math.round(s / 60);
    return "about " + n + " minute" + (n === 1 ? "" : "s");
  }
  function applyStatus(next) {
    const prev = status.status, prevAgent = status.agent;
    for (const k in status) if (k in next && next[k] !== undefined) status[k] = next[k];
    const s = status.status;
    // An agent joining, the resolve and the bot taking over again are stored lines of the conversation (role
    // "system"): they come live as messages, and the history is read again in case the stream missed one.
    if (prev !== null && (s !== prev || status.agent !== prevAgent)) {
      if (s === "assigned" || (s === "resolved" && prev !== "resolved") || (s === "bot" && ACTIVE[prev])) syncHistory();
    }
    if (s !== "assigned") showTyping(null);
    renderState();
  }
  let queueTimer = null, statusTimer = null, typingTimer = null;
  function renderState() {
    const s = status.status;
    // One state at a time: a message left for e-mail, nobody online (leave one), or a place in the queue. Never a
    // place in a queue nobody is serving, nor "connecting you" once the customer was promised an e-mail.
    const waiting = s !== "queued" ? null
      : status.offline_message ? "left" : status.agents_online === false ? "offline" : "queue";
    handoffBtn.hidden = !cfg.handoff_enabled || Boolean(ACTIVE[s]);
    offline.hidden = waiting !== "offline";
    rating.hidden = !(s === "resolved" && status.can_rate && !status.rating);
    // The header names the state, the banner says what happens next.
    sub.textContent = s === "assigned" ? "You're chatting with " + (status.agent || "a person")
      : waiting === "left" ? "Message received" : waiting === "offline" ? "Our team is offline"
      : waiting === "queue" ? "Waiting for a person" : cfg.bot_name;
    let text = "";
    if (waiting === "left") text = "Thanks! We will answer by e-mail.";
    else if (waiting === "offline") text = "Leave a message below and we will answer by e-mail.";
    else if (waiting === "queue") {
      text = "Connecting you to a person…";
      if (status.position) text += " You are number " + status.position + " in the queue.";
      if (status.eta_s != null) text += " Estimated wait: " + minutes(status.eta_s) + ".";
    } else if (s === "resolved" && status.rating) text = "Thank you for rating this conversation!";
    // An error stays up until the customer acts again; status lines replace each other.
    if (!banner.classList.contains("err") && text !== banner.textContent) showBanner(text);
    if (ACTIVE[s] && !queueTimer) queueTimer = setInterval(refreshStatus, 15000);
    if (!ACTIVE[s] && queueTimer) { clearInterval(queueTimer); queueTimer = null; }
    if (ACTIVE[s]) startLive(); else stopLive();
  }
  async function refreshStatus() {
    if (!conv) return;
    try { applyStatus(await call("GET", convUrl("/status"))); } catch (e) { /* the next event or tick tries again */ }
  }
  function showTyping(name) {
    clearTimeout(typingTimer);
    typing.hidden = !name;
    typing.textContent = name ? name + " is typing…" : "";
    // A lost "stopped typing" must not leave the line up forever.
    if (name) typingTimer = setTimeout(() => showTyping(null), 8000);
  }

  let liveStream = null, unread = 0;
  function startLive() {
    if (liveStream || !conv) return;
    const me = { ctl: new AbortController(), delay: 1000 };
    liveStream = me;
    (async () => {
      while (liveStream === me && conv) {
        try {
          const h = headers(false);
          h.Accept = "text/event-stream";
          if (conv.lastEventId) h["Last-Event-ID"] = conv.lastEventId;
          const res = await fetch(convUrl("/events"), { headers: h, signal: me.ctl.signal, cache: "no-store", credentials: "omit" });
          if (res.status === 401 || res.status === 404) { if (liveStream === me) liveStream = null; return; }
          if (res.ok) {
            me.delay = 1000;
            for await (const ev of events(res)) {
              if (liveStream !== me) return;
              if (ev.id && conv) { conv.lastEventId = ev.id; saveConv(false); }
              onLive(ev);
            }
          } else if (res.status === 429) me.delay = Math.max(me.delay, (parseInt(res.headers.get("Retry-After"), 10) || 5) * 1000);
        } catch (e) {
          if (e.name === "AbortError") return;
        }
        if (liveStream !== me) return;
        await sleep(me.delay);
        me.delay = Math.min(me.delay * 2, 15000);
      }
    })();
  }
  function stopLive() {
    if (!liveStream) return;
    liveStream.ctl.abort();
    liveStream = null;
  }
  function onLive(ev) {
    const d = ev.data || {};
    if (ev.event === "message") {
      const m = d.message || d;
      if (!m.id || m.private || known.has(m.id)) return;
      // Lines this tab sent and answers it streams are reconciled with the stored history after the turn.
      if (busy) { syncAfter = true; return; }
      if (m.role === "system") { liveShown.set(m.id, m); showMessage(m); announce(m.text); return; }
      if (m.role !== "agent") { syncHistory(); return; }
      showTyping(null);
      liveShown.set(m.id, m);
      showMessage(m);
      announce((m.author || "Support team") + ": " + m.text);
      if (!isOpen()) { unread++; badge.textContent = String(unread); badge.hidden = false; }
    } else if (ev.event === "status") {
      clearTimeout(statusTimer);
      // Replayed status events may be old: ask where things stand now.
      statusTimer = setTimeout(refreshStatus, 150);
    } else if (ev.event === "queue") {
      const next = { position: d.position, eta_s: d.eta_s };
      if ("agents_online" in d) next.agents_online = d.agents_online;
      applyStatus(next);
    } else if (ev.event === "typing" && d.who === "agent") {
      showTyping(d.typing === false ? null : d.name || status.agent || "A person");
    }
  }

  let typingSent = 0, typingIdle = null;
  function sendTyping(on) {
    if (conv && status.status === "assigned") call("POST", convUrl("/typing"), { typing: on }).catch(() => {});
  }

  // --- opening, closing, events ------------------------------------------------------------------------------------
  function isOpen() { return !panel.hidden; }
  function setOpen(open, focus) {
    panel.hidden = !open;
    root.classList.toggle("open", open);
    launcher.setAttribute("aria-expanded", String(open));
    launcher.setAttribute("aria-label", (open ? "Close chat: " : "Open chat: ") + (ds.launcherLabel || cfg.launcher_label));
    try { sessionStorage.setItem(OPEN_KEY, open ? "1" : ""); } catch (e) { /* private mode */ }
    if (open) {
      unread = 0;
      badge.hidden = true;
      if (!started) start();
      scrollDown();
      if (focus) input.focus();
    } else if (focus) launcher.focus();
  }

  launcher.addEventListener("click", () => setOpen(!isOpen(), true));
  closeBtn.addEventListener("click", () => setOpen(false, true));
  panel.addEventListener("keydown", (e) => {
    if (e.key === "Escape") { e.stopPropagation(); setOpen(false, true); }
  });
  composer.addEventListener("submit", (e) => {
    e.preventDefault();
    const text = input.value.trim();
    if (!text || busy) return;
    input.value = "";
    autosize();
    // A click on Send leaves the focus on that button, which hides while the answer streams: the focus would drop to
    // the page, and typing or Escape would reach nothing. The text box keeps it, for a click as for Enter.
    input.focus();
    if (typingSent) { clearTimeout(typingIdle); typingSent = 0; sendTyping(false); }
    ask(text);
  });
  input.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      composer.requestSubmit ? composer.requestSubmit() : composer.dispatchEvent(new Event("submit", { cancelable: true }));
    }
  });
  function autosize() {
    input.style.height = "auto";
    input.style.height = Math.min(input.scrollHeight + 2, 120) + "px";
  }
  input.addEventListener("input", () => {
    autosize();
    if (status.status !== "assigned") return;
    const now = Date.now();
    if (now - typingSent > 3000) { typingSent = now; sendTyping(true); }
    clearTimeout(typingIdle);
    typingIdle = setTimeout(() => { typingSent = 0; sendTyping(false); }, 4000);
  });
  stopBtn.addEventListener("click", () => {
    if (!controller) return;
    stoppedByUser = true;
    controller.abort();
    input.focus();
  });

  handoffBtn.addEventListener("click", async () => {
    handoffBtn.disabled = true;
    try {
      await ensureConversation();
      const d = await call("POST", convUrl("/handoff"), {});
      // The server's wording (set per company) says where the customer stands, or offers the offline form.
      if (d.text && d.status !== status.status) notice(d.text);
      applyStatus(d);
      announce(d.text);
    } catch (e) {
      showBanner(e.message || "We can't reach the chat right now.", true);
    } finally {
      handoffBtn.disabled = false;
    }
  });

  offline.addEventListener("submit", async (e) => {
    e.preventDefault();
    const message = offText.value.trim(), email = offEmail.value.trim();
    if (!message || !email) return;
    try {
      applyStatus(await call("POST", convUrl("/offline"), { message, email }));
      offline.reset();
      await refreshStatus();
      syncHistory();
    } catch (err) {
      showBanner(err.message, true);
    }
  });

  let stars_ = 0;
  for (const b of stars.querySelectorAll("button")) {
    b.addEventListener("click", () => {
      stars_ = Number(b.dataset.rating);
      for (const s of stars.querySelectorAll("button")) {
        s.classList.toggle("on", Number(s.dataset.rating) <= stars_);
        s.setAttribute("aria-checked", String(Number(s.dataset.rating) === stars_));
      }
      rateSend.disabled = false;
    });
  }
  rating.addEventListener("submit", async (e) => {
    e.preventDefault();
    if (!stars_ || !conv) return;
    const comment = rateComment.value.trim();
    try {
      await call("POST", convUrl("/rating"), comment ? { rating: stars_, comment } : { rating: stars_ });
      rating.reset();
      applyStatus({ rating: stars_ });
    } catch (err) {
      showBanner(err.message, true);
    }
  });

  function resetUi() {
    stopLive();
    liveShown.clear();
    status = blank();
    showTyping(null);
    showBanner("");
    renderAll([]);
    renderState();
  }
  newBtn.addEventListener("click", () => {
    if (busy && controller) { stoppedByUser = true; controller.abort(); }
    dropConv();
    resetUi();
    input.focus();
  });

  // Another tab changed the shared conversation: follow it.
  window.addEventListener("storage", (e) => {
    if (e.key !== STORE || !started) return;
    const next = loadConv();
    if (!next) { if (conv && !busy) { conv = null; resetUi(); } return; }
    const switched = !conv || next.id !== conv.id;
    const changed = switched || next.rev !== conv.rev;
    if (busy && !switched) { conv.fb = next.fb || {}; syncAfter = syncAfter || changed; return; }
    conv = next;
    if (switched) { status = blank(); stopLive(); }
    if (changed) { syncHistory(); refreshStatus(); }
  });

  // --- start ----------------------------------------------------------------------------------------------------------
  let started = false;
  async function start() {
    started = true;
    conv = loadConv();
    renderAll([]);
    if (customerId && !ds.customerSignature) {
      identityError = "This site passed a customer id without its signature, so the chat cannot confirm who you are.";
      showBanner(identityError, true);
    }
    if (!conv) return;
    await syncHistory();
    await refreshStatus();
    // A message sent just before a reload or a lost connection is recovered: the server knows it by its id.
    const pending = conv && conv.pending;
    if (pending && !busy) {
      const shown = Array.from(log.querySelectorAll(".customer"));
      const last = shown[shown.length - 1];
      await turn(pending, last && last.textContent === pending.text ? null : bubble("customer", { text: pending.text }));
    }
  }

  // A site missing from the server's allowed origins gets no readable answer (CORS), which looks like a network
  // failure. If an opaque no-cors request still gets through, the server is up and refused this page: tell whoever
  // embeds the widget which setting to change (the customer only sees that the chat is not available).
  async function explainRefusal() {
    if (location.origin === BASE) return;
    try {
      await fetch(BASE + "/api/widget/config", { mode: "no-cors", credentials: "omit", cache: "no-store" });
    } catch (e) {
      return;
    }
    console.error("support-bot widget: the server at " + BASE + " refused this site (" + location.origin + "). Add " +
      location.origin + " to SUPPORT_BOT_WIDGET__ALLOWED_ORIGINS on the server (or the console's Settings > Widget > " +
      "Allowed sites).");
  }

  async function loadConfig() {
    try {
      const res = await fetch(BASE + "/api/widget/config", { credentials: "omit" });
      if (!res.ok) throw new Error(String(res.status));
      Object.assign(cfg, await res.json());
    } catch (e) {
      showBanner("The chat is not available on this site right now.", true);
      if (e instanceof TypeError) explainRefusal();
    }
    applyTheme();
    const greeting = ds.greeting || cfg.greeting;
    if (started && greeting && !log.querySelector("[data-role=greeting]")) {
      const li = bubble("bot greeting", { text: greeting });
      li.dataset.role = "greeting";
      log.prepend(li);
    }
  }

  function mount() {
    (document.body || document.documentElement).appendChild(host);
    // The launcher shows once the site's own title, label and colours are known (or known to be unavailable): never
    // the defaults first and the site's a moment later.
    launcher.hidden = true;
    applyTheme();
    loadConfig().then(() => {
      launcher.hidden = false;
      let open = ds.open === "true";
      try { open = open || sessionStorage.getItem(OPEN_KEY) === "1"; } catch (e) { /* private mode */ }
      if (open) setOpen(true, false);
      else if (loadConv()) start();
    });
  }

  window.SupportBotWidget = {
    open: () => setOpen(true, true),
    close: () => setOpen(false, false),
    newConversation: () => newBtn.click(),
  };
  if (document.body) mount();
  else document.addEventListener("DOMContentLoaded", mount, { once: true });
})();
