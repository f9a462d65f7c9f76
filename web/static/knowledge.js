// Console knowledge pages: multi-file upload with live job progress, sources, delete / rebuild, and the tester.
// Plain DOM code; every text that comes from uploads, the knowledge base or the model goes in with textContent.
(function () {
  "use strict";
  const app = document.getElementById("knowledge-app");
  if (!app) return;
  const page = app.dataset.page;
  const { apiClient, byId: $, el, say } = window.SupportBotConsole;
  const api = apiClient();
  const FAST_POLL_MS = 1000;
  const IDLE_POLL_MS = 5000;

  // One outcome line: each message replaces the last, so an old "1 file uploaded." never sits beside a later
  // refusal (or an old error beside a later success). An empty error clears both before a new action.
  const showError = (message) => { say("kb-notice", ""); say("kb-error", message); };
  const showNotice = (message) => { say("kb-error", ""); say("kb-notice", message); };

  const utc = (iso) => (iso ? String(iso).slice(0, 19).replace("T", " ") : "");
  // Same shape as Jinja's urlencode in the templates: a source name may hold "/", which the route accepts.
  const sourcePath = (name) => encodeURIComponent(name).replace(/%2F/g, "/");
  const sourceHref = (name) => "/console/knowledge/sources/" + sourcePath(name);
  const sourceApi = (name) => "/api/knowledge/sources/" + sourcePath(name);

  function statusBadge(status) {
    const badge = el("span", "status status-" + status, status);
    return badge;
  }

  // --- ingest jobs (both the knowledge page and a source's page) ---

  function jobRow(job) {
    const tr = el("tr", "job");
    tr.dataset.jobId = job.id;
    tr.dataset.status = job.status;
    tr.appendChild(el("td", "job-file", job.filename));
    const source = el("td", "job-source");
    const link = el("a", null, job.source);
    link.href = sourceHref(job.source);
    source.appendChild(link);
    tr.appendChild(source);
    const status = el("td", "job-status");
    status.appendChild(statusBadge(job.status));
    if (job.unchanged) {
      status.appendChild(document.createTextNode(" "));
      status.appendChild(el("small", null, "(unchanged)"));
    }
    tr.appendChild(status);
    const progress = el("td", "job-progress");
    const bar = el("progress");
    const total = job.progress ? job.progress.total : 0;
    const done = job.progress ? job.progress.done : 0;
    bar.max = total || 1;
    bar.value = total ? done : (job.status === "succeeded" ? 1 : 0);
    progress.appendChild(bar);
    progress.appendChild(document.createTextNode(" "));
    progress.appendChild(el("span", "job-count", done + " / " + total));
    tr.appendChild(progress);
    const error = el("td", "job-error", job.error || "");
    const warnings = job.warnings || [];
    if (warnings.length) {
      // Same shape as the server-rendered rows (_knowledge_jobs.html).
      const details = el("details", "job-warnings");
      details.appendChild(el("summary", null, warnings.length + (warnings.length === 1 ? " entry" : " entries") + " flagged"));
      const list = el("ul");
      warnings.forEach((w) => list.appendChild(el("li", null, w)));
      details.appendChild(list);
      error.appendChild(details);
    }
    tr.appendChild(error);
    const when = el("td", "job-when");
    const time = el("time", null, utc(job.created_at));
    time.setAttribute("datetime", job.created_at || "");
    when.appendChild(time);
    tr.appendChild(when);
    return tr;
  }

  function drawJobs(jobs) {
    const body = document.querySelector("#jobs-table tbody");
    if (!body) return;
    body.replaceChildren(...jobs.map(jobRow));
    const empty = $("jobs-empty");
    if (empty) empty.hidden = jobs.length > 0;
  }

  const active = (jobs) => jobs.some((j) => j.status === "queued" || j.status === "running");

  // --- sources (knowledge page) ---

  function sourceRow(s) {
    const tr = el("tr", "source");
    tr.dataset.source = s.name;
    tr.dataset.status = s.status;
    const name = el("td", "source-name");
    const link = el("a", null, s.name);
    link.href = sourceHref(s.name);
    name.appendChild(link);
    tr.appendChild(name);
    tr.appendChild(el("td", "source-kind", s.kind));
    tr.appendChild(el("td", "source-version", s.version || "—"));
    tr.appendChild(el("td", "source-entries", s.entries));
    tr.appendChild(el("td", "source-chunks", s.chunks));
    const status = el("td", "source-status");
    status.appendChild(statusBadge(s.status));
    tr.appendChild(status);
    const problems = el("td", "source-error", s.last_error || "");
    const flagged = (s.warnings || []).length;
    if (flagged) {
      const link = el("a", "source-warnings", flagged + (flagged === 1 ? " entry" : " entries") + " flagged");
      link.href = sourceHref(s.name) + "#source-warnings";
      problems.appendChild(document.createTextNode(" "));
      problems.appendChild(link);
    }
    tr.appendChild(problems);
    tr.appendChild(el("td", "source-updated", utc(s.updated_at)));
    return tr;
  }

  async function refreshSources() {
    const data = await api("GET", "/api/knowledge/sources");
    const sources = (data && data.sources) || [];
    const body = document.querySelector("#sources-table tbody");
    if (body) body.replaceChildren(...sources.map(sourceRow));
    const empty = $("sources-empty");
    if (empty) empty.hidden = sources.length > 0;
  }

  // --- a source's summary (source page) ---

  async function refreshSource() {
    const name = app.dataset.source;
    const data = await api("GET", sourceApi(name) + "?limit=1");
    const s = data.source;
    const status = $("source-status");
    if (status) { status.dataset.status = s.status; status.replaceChildren(statusBadge(s.status)); }
    const set = (id, value) => { const node = $(id); if (node) node.textContent = String(value); };
    set("source-kind", s.kind);
    set("source-version", s.version || "—");
    set("source-file", s.filename || "—");
    set("source-entries", s.entries);
    set("source-chunks", s.chunks);
    set("source-updated", utc(s.updated_at));
    return data;
  }

  // --- polling: fast while something is ingesting, slower otherwise (other people and scripts upload too) ---

  let pollTimer = null;
  let wasActive = false;

  function jobsPath() {
    const path = "/api/knowledge/jobs?limit=20";
    return page === "source" ? path + "&source=" + encodeURIComponent(app.dataset.source) : path;
  }

  async function poll() {
    clearTimeout(pollTimer);
    let busy = wasActive;
    try {
      const data = await api("GET", jobsPath());
      const jobs = (data && data.jobs) || [];
      drawJobs(jobs);
      busy = active(jobs);
      // Sources change when jobs finish: read them again on the way from busy to idle, and while busy (status).
      if (busy || wasActive) {
        if (page === "knowledge") await refreshSources();
        else if (page === "source") {
          await refreshSource();
          // A finished upload changes the versions and the entries too: show the page as it is now.
          if (wasActive && !busy) { window.location.reload(); return; }
        }
      }
      wasActive = busy;
    } catch (e) {
      if (e.status === 404 && page === "source") { window.location.href = "/console/knowledge"; return; }
      showError(e.message);
    }
    pollTimer = setTimeout(poll, busy ? FAST_POLL_MS : IDLE_POLL_MS);
  }

  function initUpload() {
    const form = $("upload-form");
    if (!form) return;
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const input = $("upload-files");
      if (!input || !input.files || input.files.length === 0) { showError("Choose one or more files first."); return; }
      const data = new FormData();
      const field = input.name === "file" ? "file" : "files";
      for (const file of input.files) data.append(field, file);
      const source = form.querySelector("input[name=source]");
      if (source && source.value) data.append("source", source.value);
      const button = $("upload-submit");
      if (button) button.disabled = true;
      showError("");
      try {
        const result = await api("POST", "/api/knowledge/uploads", data);
        const jobs = (result && result.jobs) || [];
        const failed = jobs.filter((j) => j.status === "failed").length;
        showNotice(jobs.length + " file" + (jobs.length === 1 ? "" : "s") + " uploaded" +
          (failed ? "; " + failed + " refused (see the error in the jobs list)" : "") + ".");
        form.reset();
      } catch (e) {
        // Every file was refused: the jobs list shows each one's error too.
        showError(e.message);
      } finally {
        if (button) button.disabled = false;
      }
      wasActive = true;
      poll();
    });
  }

  function initReindex() {
    const button = $("reindex-btn");
    if (!button) return;
    button.addEventListener("click", async () => {
      if (!window.confirm("Rebuild the search index from every source's stored entries?")) return;
      button.disabled = true;
      try {
        const data = await api("POST", "/api/knowledge/reindex");
        showError("");
        showNotice("The index was rebuilt (version " + data.index_version + ").");
      } catch (e) { showError(e.message); }
      button.disabled = false;
    });
  }

  function initDelete() {
    const button = $("delete-source");
    if (!button) return;
    button.addEventListener("click", async () => {
      const name = app.dataset.source;
      const question = "Delete the source \u201c" + name + "\u201d and all its entries? The bot stops using them at once.";
      if (!window.confirm(question)) return;
      button.disabled = true;
      try {
        await api("DELETE", sourceApi(name));
        window.location.href = "/console/knowledge";
      } catch (e) {
        showError(e.message);
        button.disabled = false;
      }
    });
  }

  // --- the tester ---

  const OUTCOMES = {
    answer: "the bot answers",
    abstain: "the bot abstains (no confident answer) and offers a person",
    blocked: "blocked by the safety filter",
    handoff: "the chat goes to a person",
    error: "the bot could not answer",
    small_talk: "small talk: a polite reply, no search",
  };

  const score = (n) => (typeof n === "number" ? n.toFixed(3) : "");

  function entryRow(entry) {
    const tr = el("tr", "test-entry" + (entry.used ? " used" : "") + (entry.dropped ? " dropped" : ""));
    tr.dataset.rank = entry.rank;
    tr.dataset.chunkId = entry.chunk_id;
    tr.appendChild(el("td", "entry-rank", entry.rank));
    tr.appendChild(el("td", "entry-score", score(entry.score)));
    tr.appendChild(el("td", "entry-dense", score(entry.dense_score)));
    tr.appendChild(el("td", "entry-lexical", score(entry.lexical_score)));
    const where = el("td", "entry-source");
    const link = el("a", null, entry.source);
    link.href = sourceHref(entry.source);
    where.appendChild(link);
    if (entry.entry_id) {
      where.appendChild(document.createTextNode(" "));
      where.appendChild(el("code", null, entry.entry_id));
    }
    if (entry.title) where.appendChild(el("div", "entry-title", entry.title));
    tr.appendChild(where);
    tr.appendChild(el("td", "entry-text", entry.text));
    tr.appendChild(el("td", "entry-used", entry.dropped ? "dropped: " + entry.dropped : entry.used ? "yes" : "no"));
    return tr;
  }

  function drawResult(r) {
    $("test-result").hidden = false;
    const outcome = $("test-outcome");
    outcome.textContent = OUTCOMES[r.outcome] || r.outcome;
    outcome.dataset.outcome = r.outcome;
    const s = r.safety;
    const flagged = s && s.category && s.category !== "none";
    $("test-safety").textContent = s
      ? s.action + (flagged ? " (" + s.category + ", score " + score(s.score) + ")" : "") + (s.reason ? " — " + s.reason : "")
      : "off";
    const abstain = $("test-abstain");
    if (r.abstain === null || r.abstain === undefined) {
      abstain.textContent = "not reached";
      delete abstain.dataset.abstain;
    } else {
      abstain.textContent = (r.abstain ? "abstain" : "answer") + " — " + (r.abstain_reason || "");
      abstain.dataset.abstain = String(r.abstain);
    }
    const h = r.handoff;
    $("test-handoff").textContent = h ? h.reason + (h.detail ? ": " + h.detail : "") : "no";
    $("test-reply").textContent = r.error ? r.reply + " (" + r.error + ")" : r.reply;
    const cites = (r.citations || []).map((c) => {
      const li = el("li", "citation");
      li.value = c.n;
      const label = c.source + (c.entry_id ? " · " + c.entry_id : "") + (c.title ? " — " + c.title : "");
      li.appendChild(el("span", null, label));
      return li;
    });
    $("test-citations").replaceChildren(...cites);
    say("test-guard", r.output_guard ? "The output guard replaced the model's answer: " + r.output_guard.reason : "");
    const rawBox = $("test-raw-box");
    rawBox.hidden = !r.raw_answer;
    $("test-raw").textContent = r.raw_answer || "";
    const entries = r.entries || [];
    document.querySelector("#test-entries tbody").replaceChildren(...entries.map(entryRow));
    $("test-entries-empty").hidden = entries.length > 0 || r.outcome === "blocked";
    $("test-entries").hidden = entries.length === 0;
  }

  function initTester() {
    const form = $("test-form");
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const button = $("test-submit");
      const k = parseInt($("test-k").value, 10);
      button.disabled = true;
      showError("");
      try {
        const result = await api("POST", "/api/knowledge/test", {
          question: $("test-question").value, k: Number.isFinite(k) ? k : null,
        });
        drawResult(result);
      } catch (e) { showError(e.message); }
      button.disabled = false;
    });
  }

  if (page === "knowledge" || page === "source") {
    initUpload();
    initReindex();
    initDelete();
    poll();
  } else if (page === "test") {
    initTester();
  }
})();
