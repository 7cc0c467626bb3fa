// The lists: the queue in dispatch order, the running jobs, the finished ones (filtered).
// Each view is {mount(root, params) -> refresh()}: main.js calls refresh on its interval.
"use strict";

(function () {
  const C = window.BotConsole;
  const POSITIONS = 20; // queued jobs whose place the API computes for each refresh
  C.views = {};

  const tenantColumn = () => (C.admin ? [["Tenant", (job) => job.tenant]] : []);

  // One click: cancel (DELETE), then refresh. Not offered to an admin key (it reads only).
  C.cancelButton = function (job, done) {
    if (C.admin) return null;
    return C.el("button", {
      type: "button", class: "cancel", "data-action": "cancel",
      onclick: async (event) => {
        event.target.disabled = true;
        await C.act(`cancelled ${job.id}`, () => C.api("DELETE", C.jobPath(job.id)));
        await done();
      },
    }, "Cancel");
  };

  // Run an action, and say how it went in the status line.
  C.act = async function (success, call) {
    try {
      const result = await call();
      C.say(success);
      return result;
    } catch (error) {
      C.say(`failed: ${error.message}`, true);
      return null;
    }
  };

  C.views.queue = {
    title: "Queue",
    mount(root) {
      const box = C.el("div");
      root.replaceChildren(C.el("h2", null, "Queue, in dispatch order"), box);
      const refresh = async () => {
        const { jobs } = await C.listJobs({ status: "queued" }, 5);
        const ordered = C.dispatchOrder(jobs, Date.now());
        const placed = await C.pool(ordered.slice(0, POSITIONS), 4, (job) =>
          C.get(C.jobPath(job.id)).then((data) => data.job)
        );
        const place = new Map(placed.filter(Boolean).map((job) => [job.id, job]));
        const at = (job, field) => (place.get(job.id) || {})[field];
        const columns = [
          ["#", (job) => String(ordered.indexOf(job) + 1)],
          ["Position", (job) => (at(job, "queuePosition") ?? "—").toString()],
          ["Priority", (job) => String(job.priority)],
          ["Job", C.jobLink],
          ...tenantColumn(),
          ["Bot", (job) => job.botName],
          ["Meeting", (job) => job.meetingUrl],
          ["Join at", (job) => C.time(job.joinAt)],
          ["Estimated start", (job) => C.time(at(job, "estimatedStartAt"))],
          ["Waiting", (job) => C.since(job.createdAt)],
          ["", (job) => C.cancelButton(job, refresh)],
        ];
        box.replaceChildren(C.table(columns, ordered, "Nothing is queued."));
      };
      return refresh;
    },
  };

  C.views.running = {
    title: "Running",
    mount(root) {
      const box = C.el("div");
      root.replaceChildren(C.el("h2", null, "Running"), box);
      const refresh = async () => {
        const lists = await Promise.all(
          C.ACTIVE.map((status) => C.listJobs({ status }, 1).then((page) => page.jobs))
        );
        const jobs = lists.flat().sort((a, b) =>
          (a.startedAt || a.updatedAt).localeCompare(b.startedAt || b.updatedAt));
        const columns = [
          ["Job", C.jobLink],
          ...tenantColumn(),
          ["State", (job) => C.badge(job.status)],
          ["Backend", (job) => (job.execution ? job.execution.backend : "—")],
          ["Run id", (job) => job.containerId || "—"],
          ["Age", (job) => C.since(job.startedAt)],
          ["Bot status", (job) => job.botStatus || "—"],
          ["Bot", (job) => job.botName],
          ["Started", (job) => C.time(job.startedAt)],
          ["", (job) => (job.status === "stopping" ? null : C.cancelButton(job, refresh))],
        ];
        box.replaceChildren(C.table(columns, jobs, "No bot is running."));
      };
      return refresh;
    },
  };

  const WINDOWS = { "1h": 1, "6h": 6, "24h": 24, "7d": 168, all: 0 };

  function finishedFilters(params) {
    const go = (form) => {
      const query = new URLSearchParams();
      for (const [name, value] of new FormData(form)) if (value) query.set(name, value);
      location.hash = "#/finished?" + query.toString();
    };
    const select = (name, options, chosen) =>
      C.el("select", { name, id: "filter-" + name },
        options.map(([value, label]) =>
          C.el("option", { value, selected: value === chosen }, label)));
    const form = C.el("form", { class: "filters", id: "filters",
      onchange: (event) => go(event.currentTarget),
      onsubmit: (event) => { event.preventDefault(); go(event.currentTarget); } },
    C.el("label", null, "State ", select("state", [["", "any"], ["completed", "completed"],
      ["failed", "failed"], ["cancelled", "cancelled"]], params.get("state") || "")),
    C.el("label", null, "Ended in the last ",
      select("since", Object.keys(WINDOWS).map((w) => [w, w]), params.get("since") || "24h")));
    if (C.admin || params.get("tenant")) {
      form.append(C.el("label", null, "Tenant ", C.el("input", { name: "tenant",
        id: "filter-tenant", value: params.get("tenant") || "", placeholder: "every tenant" })));
    }
    return form;
  }

  C.views.finished = {
    title: "Finished",
    mount(root, params) {
      const box = C.el("div");
      root.replaceChildren(C.el("h2", null, "Finished"), finishedFilters(params), box);
      const hours = WINDOWS[params.get("since") || "24h"] ?? 24;
      const from = hours ? Date.now() - hours * 3600 * 1000 : 0;
      const query = {};
      if (params.get("state")) query.status = params.get("state");
      if (params.get("tenant")) query.tenant = params.get("tenant");
      const refresh = async () => {
        const recent = (jobs) => jobs.length && Date.parse(jobs[jobs.length - 1].createdAt) >= from;
        const { jobs } = await C.listJobs(query, 5, recent);
        const shown = jobs.filter((job) => C.FINAL.includes(job.status) &&
          Date.parse(job.completedAt || job.updatedAt) >= from);
        const columns = [
          ["Job", C.jobLink],
          ...tenantColumn(),
          ["State", (job) => C.badge(job.status)],
          ["Why", (job) => job.reason || job.error || "—"],
          ["Exit code", (job) => (job.exitCode === null ? "—" : String(job.exitCode))],
          ["Ended", (job) => C.time(job.completedAt)],
          ["Ran for", (job) => C.between(job.startedAt, job.completedAt)],
          ["Bot", (job) => job.botName],
          ["", (job) => C.retryButton(job)],
        ];
        box.replaceChildren(C.table(columns, shown, "No job ended in this window."));
      };
      return refresh;
    },
  };
})();
