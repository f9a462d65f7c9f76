// Helpers shared by the console's page scripts (console.js, knowledge.js, suggestions.js), under one global:
// window.SupportBotConsole. The console templates load this file before a page's own script. The customer-side
// scripts (widget.js, chat.js) do not use it: they stay standalone.
(function () {
  "use strict";

  // A refused API call: the server's detail as the message, and the HTTP status.
  class ApiError extends Error {
    constructor(message, status) { super(message); this.status = status; }
  }

  const byId = (id) => document.getElementById(id);

  // The session's CSRF token, as the page was rendered with it.
  function pageCsrfToken() {
    const meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.getAttribute("content") : "";
  }

  // A fetch wrapper for the console's JSON APIs: api(method, path, body) resolves to the parsed answer (null when
  // there is none) or rejects with an ApiError. A body is sent as JSON, a FormData as it is; every call but a GET
  // carries the X-CSRF-Token header. A 401 goes to the login page, which then returns to this page.
  //   base:      put before every path ("" by default)
  //   csrfToken: gives the token to send (may return a promise); by default the page's token
  //   loginNext: gives where the login page returns to; by default this page's path
  function apiClient(options) {
    const opts = options || {};
    const base = opts.base || "";
    const rendered = opts.csrfToken ? null : pageCsrfToken();
    const csrfToken = opts.csrfToken || (() => rendered);
    const loginNext = opts.loginNext || (() => window.location.pathname);
    return async function api(method, path, body) {
      const headers = { "Accept": "application/json" };
      let payload;
      if (body instanceof FormData) payload = body;
      else if (body !== undefined) { headers["Content-Type"] = "application/json"; payload = JSON.stringify(body); }
      if (method !== "GET") headers["X-CSRF-Token"] = await csrfToken();
      const res = await fetch(base + path, {
        method, headers, body: payload, credentials: "same-origin", cache: "no-store",
      });
      if (res.status === 401) {
        window.location.href = "/console/login?next=" + encodeURIComponent(loginNext());
        throw new ApiError("signed out", 401);
      }
      const data = res.status === 204 ? null : await res.json().catch(() => null);
      if (!res.ok) throw new ApiError((data && data.detail) || res.statusText || "request failed", res.status);
      return data;
    };
  }

  // A new element; the text goes in with textContent, never as markup.
  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  // Shows a message in the box with this id, or hides the box when the message is empty.
  function say(id, message) {
    const box = byId(id);
    if (!box) return;
    box.textContent = message || "";
    box.hidden = !message;
  }

  window.SupportBotConsole = Object.freeze({ ApiError, apiClient, byId, el, pageCsrfToken, say });
})();
