// The overview above every list: the use of the caps (GET /api/scheduler/stats) and a chart of
// the jobs started and finished over the last hours (from the job listing), drawn as inline SVG.
"use strict";

(function () {
  const C = window.BotConsole;
  const SVG = "http://www.w3.org/2000/svg";
  const HOURS = 6;
  const BUCKET_MINUTES = 15;
  const WIDTH = 720;
  const HEIGHT = 160;
  const PAD = { left: 32, right: 8, top: 10, bottom: 22 };

  function svg(tag, attrs, text) {
    const node = document.createElementNS(SVG, tag);
    for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, String(value));
    if (text !== undefined) node.textContent = String(text);
    return node;
  }

  // "3 / 10" with a meter: the active jobs against a cap.
  function meter(label, used, cap) {
    const share = cap ? Math.min(used / cap, 1) : 0;
    const bar = svg("svg", { class: "meter", viewBox: "0 0 100 8", preserveAspectRatio: "none" });
    bar.append(svg("rect", { class: "meter-back", x: 0, y: 0, width: 100, height: 8 }));
    bar.append(svg("rect", { class: "meter-fill", x: 0, y: 0, width: share * 100, height: 8 }));
    const full = cap && used >= cap ? " full" : "";
    return C.el(
      "div",
      { class: "cap" + full },
      C.el("span", { class: "cap-label" }, label),
      C.el("span", { class: "cap-value" }, cap ? `${used} / ${cap}` : `${used}`),
      bar
    );
  }

  function caps(stats) {
    const active = stats.provisioningJobs + stats.runningJobs + stats.stoppingJobs;
    const parts = [
      meter("Bots alive / cap", active, stats.maxConcurrentJobs),
      C.el("div", { class: "cap" }, C.el("span", { class: "cap-label" }, "Queued"),
        C.el("span", { class: "cap-value", id: "queue-size" }, String(stats.queueSize))),
      C.el("div", { class: "cap" }, C.el("span", { class: "cap-label" }, "Wait for a new job"),
        C.el("span", { class: "cap-value" }, C.span(stats.estimatedWaitSeconds * 1000))),
      C.el("div", { class: "cap" }, C.el("span", { class: "cap-label" }, "Finished"),
        C.el("span", { class: "cap-value" },
          `${stats.completedJobs} ok · ${stats.failedJobs} failed · ` +
          `${stats.cancelledJobs} cancelled`)),
    ];
    if (stats.maxConcurrentJobsPerTenant) {
      parts.push(C.el("div", { class: "cap" }, C.el("span", { class: "cap-label" },
        "Per-tenant cap"), C.el("span", { class: "cap-value" },
        String(stats.maxConcurrentJobsPerTenant))));
    }
    return parts;
  }

  // Started and finished jobs per bucket of the last HOURS.
  function buckets(jobs, now) {
    const size = BUCKET_MINUTES * 60 * 1000;
    const count = (HOURS * 60) / BUCKET_MINUTES;
    const start = Math.floor(now / size) * size - (count - 1) * size;
    const rows = Array.from({ length: count }, (_, i) => ({ at: start + i * size, up: 0, down: 0 }));
    const put = (iso, field) => {
      const index = iso ? Math.floor((Date.parse(iso) - start) / size) : -1;
      if (index >= 0 && index < count) rows[index][field] += 1;
    };
    for (const job of jobs) {
      put(job.startedAt, "up");
      put(job.completedAt, "down");
    }
    return rows;
  }

  function draw(chart, rows) {
    chart.replaceChildren();
    chart.setAttribute("viewBox", `0 0 ${WIDTH} ${HEIGHT}`);
    const most = Math.max(1, ...rows.map((row) => Math.max(row.up, row.down)));
    const plotH = HEIGHT - PAD.top - PAD.bottom;
    const slot = (WIDTH - PAD.left - PAD.right) / rows.length;
    const bar = Math.max(1, slot / 2 - 1);
    const y = (n) => PAD.top + plotH - (n / most) * plotH;
    chart.append(svg("line", { class: "axis", x1: PAD.left, x2: WIDTH - PAD.right,
      y1: y(0), y2: y(0) }));
    chart.append(svg("text", { class: "tick", x: PAD.left - 4, y: y(most) + 4,
      "text-anchor": "end" }, most));
    rows.forEach((row, i) => {
      const x = PAD.left + i * slot;
      for (const [field, shift] of [["up", 0], ["down", bar]]) {
        const height = y(0) - y(row[field]);
        const rect = svg("rect", { class: "bar bar-" + field, x: x + shift, y: y(row[field]),
          width: bar, height: height });
        rect.append(svg("title", {}, `${C.time(new Date(row.at).toISOString())}: ` +
          `${row[field]} ${field === "up" ? "started" : "finished"}`));
        chart.append(rect);
      }
      if (i % 4 === 0) {
        const t = new Date(row.at);
        const label = `${String(t.getHours()).padStart(2, "0")}:${String(t.getMinutes()).padStart(2, "0")}`;
        chart.append(svg("text", { class: "tick", x: x, y: HEIGHT - 6 }, label));
      }
    });
  }

  // Refresh the overview: the caps now, and the last HOURS of the listing.
  C.overview = async function () {
    const now = Date.now();
    const from = now - HOURS * 3600 * 1000;
    const recent = (jobs) => jobs.length && Date.parse(jobs[jobs.length - 1].createdAt) >= from;
    const [stats, { jobs }] = await Promise.all([C.get("stats"), C.listJobs({}, 3, recent)]);
    document.getElementById("caps").replaceChildren(...caps(stats));
    const rows = buckets(jobs, now);
    draw(document.getElementById("chart"), rows);
    const started = rows.reduce((sum, row) => sum + row.up, 0);
    const finished = rows.reduce((sum, row) => sum + row.down, 0);
    document.getElementById("chart-caption").replaceChildren(
      C.el("span", { class: "key key-up" }, "■"), ` started (${started}) `,
      C.el("span", { class: "key key-down" }, "■"), ` finished (${finished}) `,
      `per ${BUCKET_MINUTES} minutes, the last ${HOURS} hours`
    );
  };
})();
