// Console Adaptation page: start tuning, activation and rollback jobs, and follow their progress.
// Plain DOM code; every text from the server goes in with textContent. The page itself is rendered on the server;
// while a job runs this script polls it and reloads the page's data when it ends.
(function () {
  "use strict";
  const app = document.getElementById("adaptation-app");
  if (!app) return;
  const { apiClient, byId: $, el, say } = window.SupportBotConsole;
  const api = apiClient();
  const POLL_MS = 1500;
  const BASE = "/api/console/adapters";

  const showError = (message) => { say("ad-notice", ""); say("ad-error", message); };
  const showNotice = (message) => { say("ad-error", ""); say("ad-notice", message); };
  const utc = (iso) => (iso ? String(iso).slice(0, 19).replace("T", " ") : "");
  const running = (job) => job && (job.status === "queued" || job.status === "running");

  function jobRow(job) {
    const tr = el("tr", "ad-job");
    tr.dataset.jobId = job.id;
    tr.dataset.status = job.status;
    // An activation names its artifact; tuning and rollback their kind (records from before kinds: the embedder).
    tr.appendChild(el("td", "job-action", job.action + " " + (job.target || job.kind || "embedder")));
    const status = el("td", "job-status");
    status.appendChild(el("span", "status status-" + job.status, job.status));
    tr.appendChild(status);
    tr.appendChild(el("td", "job-phase", job.phase));
    const progress = el("td", "job-progress");
    const bar = el("progress");
    bar.max = job.total || 1;
    bar.value = job.done || 0;
    progress.appendChild(bar);
    progress.appendChild(document.createTextNode(" "));
    progress.appendChild(el("span", "job-count", (job.done || 0) + " / " + (job.total || 0)));
    tr.appendChild(progress);
    tr.appendChild(el("td", "job-error", job.error || ""));
    tr.appendChild(el("td", "job-when", utc(job.created_at)));
    return tr;
  }

  function drawJobs(jobs) {
    const table = $("ad-jobs-table");
    table.querySelector("tbody").replaceChildren(...jobs.map(jobRow));
    table.hidden = jobs.length === 0;
    $("ad-jobs-empty").hidden = jobs.length > 0;
  }

  // Buttons the server rendered disabled (nothing to roll back, no backend to tune the chat model with) stay so
  // when a start fails and the others come back.
  const renderedDisabled = new Set(Array.from(app.querySelectorAll("button")).filter((button) => button.disabled));

  function setBusy(busy) {
    app.dataset.busy = busy ? "true" : "false";
    for (const button of app.querySelectorAll("button")) button.disabled = busy || renderedDisabled.has(button);
  }

  async function poll() {
    let data;
    try {
      data = await api("GET", BASE + "/jobs");
    } catch (err) {
      showError(err.message);
      setTimeout(poll, POLL_MS * 4);
      return;
    }
    drawJobs(data.jobs);
    const latest = data.jobs[0];
    if (running(latest)) {
      setTimeout(poll, POLL_MS);
      return;
    }
    // The job ended: the artifacts, the live embedder and the buttons change with it; the server renders them.
    if (app.dataset.busy === "true") window.location.reload();
  }

  async function start(path, body, what) {
    setBusy(true);
    try {
      await api("POST", BASE + path, body);
      showNotice(what + " started; progress below.");
      poll();
    } catch (err) {
      setBusy(false);
      showError(err.message);
    }
  }

  $("tune-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const epochs = $("tune-epochs").value;
    start("/tune", epochs ? { epochs: Number(epochs) } : {}, "Tuning");
  });
  $("rollback-btn").addEventListener("click", () => start("/rollback", undefined, "Rollback"));
  $("chat-tune-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const body = { kind: "chat" };
    const epochs = $("chat-tune-epochs").value;
    const maxExamples = $("chat-tune-max-examples").value;
    if (epochs) body.epochs = Number(epochs);
    if (maxExamples) body.max_examples = Number(maxExamples);
    start("/tune", body, "Tuning the chat model");
  });
  $("chat-rollback-btn").addEventListener("click", () => {
    start("/rollback", { kind: "chat" }, "Rollback of the chat model");
  });
  for (const button of app.querySelectorAll(".activate-btn")) {
    button.addEventListener("click", () => {
      const id = button.dataset.artifact;
      start("/" + encodeURIComponent(id) + "/activate", undefined, "Activation of " + id);
    });
  }

  if (app.dataset.busy === "true") {
    setBusy(true);
    poll();
  } else {
    // A failed job's reason (a refused activation's figures) stays in the jobs table; show the latest one on top.
    const last = app.querySelector("tr.ad-job");
    if (last && last.dataset.status === "failed") showError(last.querySelector(".job-error").textContent);
  }
})();
