// One job's page: its fields, actions (cancel, retry as a new job, reschedule), its timeline
// (GET …/events), its config and its logs (GET …/logs, followed every 2 s while it runs).
"use strict";

(function () {
  const C = window.BotConsole;
  // what a retry copies: the job's spec, without what would make it the same job again
  // (dedupKey, externalKey) or a past time (joinAt, deadline)
  const SPEC = ["meetingUrl", "botName", "email", "recordingMode", "priority", "config",
    "maxRuntimeSeconds", "cpu", "memory", "metadata", "webhookUrl", "allowSecondBot"];

  C.retryButton = function (job) {
    if (C.admin || !["failed", "cancelled"].includes(job.status)) return null;
    return C.el("button", { type: "button", class: "retry", "data-action": "retry",
      onclick: async (event) => {
        event.target.disabled = true;
        const spec = {};
        for (const name of SPEC) if (job[name] !== null && job[name] !== undefined) spec[name] = job[name];
        const made = await C.act(`retried ${job.id} as a new job`, () => C.api("POST", "jobs", spec));
        if (made) location.hash = "#/job/" + encodeURIComponent(made.job.id);
      } }, "Retry as a new job");
  };

  function rescheduleForm(job, refresh) {
    if (C.admin || job.status !== "queued") return null;
    const input = C.el("input", { type: "datetime-local", id: "join-at", required: true,
      step: "60" });
    return C.el("form", { class: "reschedule", id: "reschedule",
      onsubmit: async (event) => {
        event.preventDefault();
        const joinAt = new Date(input.value).toISOString();
        await C.act(`rescheduled ${job.id} to ${C.time(joinAt)}`,
          () => C.api("PATCH", C.jobPath(job.id), { joinAt }));
        await refresh();
      } },
    C.el("label", { for: "join-at" }, "Join at "), input,
    C.el("button", { type: "submit" }, "Reschedule"));
  }

  function details(job) {
    const rows = [
      ["State", C.badge(job.status)],
      ["Tenant", job.tenant],
      ["Meeting", job.meetingUrl],
      ["Bot", job.botName],
      ["Priority", String(job.priority)],
      ["Queue position", job.queuePosition === undefined ? null : String(job.queuePosition)],
      ["Estimated start", job.estimatedStartAt ? C.time(job.estimatedStartAt) : null],
      ["Join at", job.joinAt ? C.time(job.joinAt) : null],
      ["Not before", C.time(job.notBefore)],
      ["Submitted", C.time(job.createdAt)],
      ["Started", job.startedAt ? C.time(job.startedAt) : null],
      ["Ended", job.completedAt ? C.time(job.completedAt) : null],
      ["Ran for", job.startedAt ? C.between(job.startedAt, job.completedAt ||
        new Date().toISOString()) : null],
      ["Backend", job.execution ? job.execution.backend : null],
      ["Run id", job.containerId],
      ["Bot status", job.botStatus],
      ["Attempts", String(job.attempts)],
      ["Exit code", job.exitCode === null ? null : String(job.exitCode)],
      ["Reason", job.reason],
      ["Error", job.error],
    ].filter(([, value]) => value !== null && value !== undefined);
    return C.el("dl", { class: "details", id: "job-details" },
      rows.map(([name, value]) => [C.el("dt", null, name), C.el("dd", null, value)]));
  }

  function summary(event) {
    const data = event.data || {};
    const parts = [];
    if (data.reason) parts.push(data.reason);
    if (data.exitCode !== null && data.exitCode !== undefined) parts.push(`exit ${data.exitCode}`);
    if (data.containerId && event.type === "job.running") parts.push(data.containerId);
    return parts.join(" · ");
  }

  function timeline(events) {
    if (!events.length) return C.el("p", { class: "empty" }, "No event yet.");
    return C.el("ol", { class: "timeline", id: "timeline" }, events.map((event) =>
      C.el("li", { "data-type": event.type },
        C.el("time", null, C.time(event.timestamp)), " ",
        C.el("b", null, event.type), " ", summary(event))));
  }

  async function logsOf(job) {
    if (!job.containerId) return "(no run yet: the logs appear once the bot starts)";
    try {
      const data = await C.get(C.jobPath(job.id, "/logs?tail=500"));
      return data.logs || "(the bot has printed nothing yet)";
    } catch (error) {
      return `(${error.message})`;
    }
  }

  function actions(job, refresh) {
    const cancel = C.FINAL.includes(job.status) ? null : C.cancelButton(job, refresh);
    const parts = [cancel, C.retryButton(job), rescheduleForm(job, refresh)].filter(Boolean);
    if (C.admin) parts.push(C.el("span", { class: "hint" }, "An admin key reads every tenant's " +
      "jobs and changes none: use the tenant's key to act."));
    return C.el("div", { class: "actions", id: "actions" }, parts);
  }

  C.views.job = {
    title: "Job",
    every: 2000,
    mount(root, params) {
      const id = params.get("id");
      const head = C.el("h2", null, "Job ", C.el("code", { id: "job-id" }, id));
      const parts = { actions: C.el("div"), details: C.el("div"), events: C.el("div"),
        logs: C.el("pre", { class: "logs", id: "logs" }),
        config: C.el("pre", { class: "config", id: "config" }) };
      root.replaceChildren(head, parts.actions,
        C.el("div", { class: "columns" },
          C.el("section", null, C.el("h3", null, "Job"), parts.details),
          C.el("section", null, C.el("h3", null, "Timeline"), parts.events)),
        C.el("h3", null, "Logs"), parts.logs,
        C.el("h3", null, "Config"), parts.config);
      let shown = null; // the state last shown: the actions change only with it
      const refresh = async () => {
        const { job } = await C.get(C.jobPath(id));
        if (shown === job.status && C.FINAL.includes(job.status)) return; // nothing will change
        const [{ events }, logs] = await Promise.all([C.get(C.jobPath(id, "/events")), logsOf(job)]);
        if (job.status !== shown) parts.actions.replaceChildren(actions(job, refresh));
        shown = job.status;
        parts.details.replaceChildren(details(job));
        parts.events.replaceChildren(timeline(events));
        parts.config.textContent = JSON.stringify(job.config, null, 2);
        const follow = parts.logs.scrollTop + parts.logs.clientHeight >= parts.logs.scrollHeight - 4;
        parts.logs.textContent = logs;
        if (follow) parts.logs.scrollTop = parts.logs.scrollHeight;
        root.dataset.state = job.status;
      };
      return refresh;
    },
  };
})();
