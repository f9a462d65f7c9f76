// Suggested FAQ entries: save, approve, reject or withdraw through /api/console/suggestions, then follow the learned
// source's ingest until it is live. Text from chats only ever goes in with textContent or a textarea's value.
(function () {
  "use strict";
  const app = document.getElementById("suggestions-app");
  if (!app) return;
  const { apiClient, byId: $, el, say } = window.SupportBotConsole;
  // The login page brings the agent back to the same filter.
  const api = apiClient({
    base: "/api/console/suggestions",
    loginNext: () => window.location.pathname + window.location.search,
  });
  const POLL_MS = 1000;
  let polling = null;

  const showError = (message) => say("sg-error", message);

  // --- the learned source's status ---

  function describe(learned) {
    const job = learned.last_job;
    const src = learned.source;
    if (job && (job.status === "queued" || job.status === "running")) {
      return ["ingesting", "Ingesting… (" + job.progress.done + " of " + job.progress.total + ")"];
    }
    if (job && job.status === "failed") {
      const still = src && src.version ? " (version " + src.version + " still answers)" : "";
      return ["failed", "The last ingest failed: " + (job.error || "unknown error") + still];
    }
    if (src && src.version) {
      return ["live", "Live: version " + src.version + ", " + src.entries + (src.entries === 1 ? " entry" : " entries")];
    }
    return ["empty", "Nothing approved yet"];
  }

  function showLearned(learned) {
    const box = $("learned-source");
    const [state, text] = describe(learned);
    box.dataset.state = state;
    box.dataset.jobId = learned.last_job ? learned.last_job.id : "";
    $("learned-status").textContent = text;
    return state;
  }

  // Follow the source until its latest ingest is done; cards waiting on it learn how it ended.
  function follow() {
    if (polling) clearTimeout(polling);
    const tick = async () => {
      polling = null;
      let learned;
      try {
        learned = await api("GET", "/source");
      } catch (e) {
        showError(e.message);
        polling = setTimeout(tick, POLL_MS * 5);
        return;
      }
      // Our job committed before the API answered, so the latest job is ours or a newer one that includes it.
      const state = showLearned(learned);
      if (state === "ingesting") {
        polling = setTimeout(tick, POLL_MS);
        return;
      }
      for (const card of app.querySelectorAll(".suggestion[data-ingest=waiting]")) {
        card.dataset.ingest = state === "live" ? "live" : "failed";
        result(card, state === "live" ? "Approved: live in the knowledge base." : "Approved, but the ingest failed.");
      }
    };
    polling = setTimeout(tick, 0);
  }

  // --- one suggestion ---

  function result(card, text) {
    card.querySelector(".sg-result").textContent = text;
  }

  const STATUSES = ["pending", "approved", "merged", "rejected"];

  // The tab counts follow what this page changed (other people's changes show on the next load).
  function moveCount(from, to) {
    if (from === to) return;
    for (const [status, delta] of [[from, -1], [to, 1]]) {
      if (!STATUSES.includes(status)) continue;
      const count = app.querySelector('.status-tabs a[data-filter="' + status + '"] .count');
      if (count) count.textContent = String(Math.max(0, (parseInt(count.textContent, 10) || 0) + delta));
    }
  }

  function setStatus(card, suggestion) {
    moveCount(card.dataset.status, suggestion.status);
    card.dataset.status = suggestion.status;
    const badge = card.querySelector(".sg-status");
    badge.textContent = suggestion.status;
    badge.className = "status status-" + suggestion.status + " sg-status";
    const approve = card.querySelector(".sg-approve");
    if (approve && !(suggestion.status === "pending" || suggestion.status === "merged")) approve.remove();
    const reject = card.querySelector(".sg-reject");
    if (suggestion.status === "approved" && reject) reject.textContent = "Withdraw";
    if (suggestion.status === "rejected") {
      for (const b of card.querySelectorAll("button")) b.remove();
      for (const t of card.querySelectorAll("textarea")) t.readOnly = true;
    }
    card.querySelector(".sg-question").value = suggestion.question;
    card.querySelector(".sg-answer").value = suggestion.answer;
    showFlags(card, suggestion.review_flags || []);
  }

  // What may still be about one customer's case, as the server sees the saved wording.
  function showFlags(card, flags) {
    const box = card.querySelector(".sg-flags");
    const list = box.querySelector("ul");
    list.replaceChildren();
    for (const f of flags) {
      const item = el("li", "sg-flag", f.message);
      item.dataset.field = f.field;
      item.dataset.kind = f.kind;
      list.appendChild(item);
    }
    box.dataset.count = String(flags.length);
    box.hidden = !flags.length;
    card.dataset.flagged = String(flags.length > 0);
  }

  function texts(card) {
    return { question: card.querySelector(".sg-question").value, answer: card.querySelector(".sg-answer").value };
  }

  async function act(card, button) {
    const id = card.dataset.id;
    let data;
    const buttons = card.querySelectorAll("button");
    buttons.forEach((b) => { b.disabled = true; });
    showError("");
    try {
      if (button.classList.contains("sg-save")) {
        data = await api("PATCH", "/" + encodeURIComponent(id), texts(card));
        result(card, data.job ? "Saved; the live entry is being updated." : "Saved.");
      } else if (button.classList.contains("sg-approve")) {
        data = await api("POST", "/" + encodeURIComponent(id) + "/approve", texts(card));
        result(card, "Approved: ingesting…");
      } else if (button.classList.contains("sg-reject")) {
        const withdrawing = card.dataset.status === "approved";
        data = await api("POST", "/" + encodeURIComponent(id) + "/reject", {});
        result(card, withdrawing ? "Withdrawn: the entry leaves the knowledge base." : "Rejected.");
      } else {
        return;
      }
    } catch (e) {
      result(card, "");
      showError(e.message);
      return;
    } finally {
      buttons.forEach((b) => { b.disabled = false; });
    }
    setStatus(card, data.suggestion);
    if (data.job) {
      if (button.classList.contains("sg-approve")) card.dataset.ingest = "waiting";
      follow();
    } else if (data.source_removed) {
      follow();
    }
  }

  // --- transcript and merged conversations, loaded when first opened ---

  function renderDetail(card, detail) {
    const box = card.querySelector(".sg-detail");
    box.replaceChildren();
    if (detail.merged && detail.merged.length) {
      box.appendChild(el("h3", null, "Merged conversations"));
      const list = el("ol", "sg-merged");
      for (const m of detail.merged) {
        const item = el("li", "sg-merged-item");
        item.dataset.id = m.id;
        item.appendChild(el("p", "sg-merged-question", m.question));
        item.appendChild(el("p", "sg-merged-answer", m.answer));
        if (card.dataset.status !== "rejected") {
          const use = el("button", "sg-use-answer secondary", "Use this answer");
          use.type = "button";
          use.addEventListener("click", () => { card.querySelector(".sg-answer").value = m.answer; });
          item.appendChild(use);
        }
        list.appendChild(item);
      }
      box.appendChild(list);
    }
    box.appendChild(el("h3", null, "Transcript (personal data removed)"));
    if (!detail.transcript || !detail.transcript.length) {
      box.appendChild(el("p", "hint", "The conversation is no longer stored."));
      return;
    }
    const log = el("ol", "sg-transcript");
    for (const m of detail.transcript) {
      const line = el("li", "sg-line sg-line-" + m.role);
      line.appendChild(el("span", "sg-role", m.role + ": "));
      line.appendChild(el("span", "sg-text", m.text));
      log.appendChild(line);
    }
    box.appendChild(log);
  }

  for (const card of app.querySelectorAll(".suggestion")) {
    card.addEventListener("click", (ev) => {
      const button = ev.target.closest("button");
      if (button && !button.classList.contains("sg-use-answer")) act(card, button);
    });
    const more = card.querySelector(".sg-more");
    more.addEventListener("toggle", async () => {
      if (!more.open || more.dataset.loaded) return;
      try {
        renderDetail(card, await api("GET", "/" + encodeURIComponent(card.dataset.id)));
        more.dataset.loaded = "1";
      } catch (e) {
        card.querySelector(".sg-detail").replaceChildren(el("p", "error", e.message));
      }
    });
  }

  if ($("learned-source").dataset.state === "ingesting") follow();
})();
