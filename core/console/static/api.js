// The console's base: the API key, calls to the API, building the page's elements, times.
// Job data only ever reaches the page as text (textContent, via `el`), never as HTML.
"use strict";

(function () {
  const C = (window.BotConsole = {});
  const KEY = "botsched.console.key";
  const API = "api/scheduler/";
  const FINAL = ["completed", "failed", "cancelled"];
  const ACTIVE = ["provisioning", "running", "stopping"];
  C.FINAL = FINAL;
  C.ACTIVE = ACTIVE;
  C.admin = false; // set once a job answer carries its tenant: only admin keys get one

  C.key = () => sessionStorage.getItem(KEY) || "";
  C.setKey = (key) => (key ? sessionStorage.setItem(KEY, key) : sessionStorage.removeItem(KEY));

  class ApiError extends Error {
    constructor(status, body) {
      super((body && body.message) || `HTTP ${status}`);
      this.status = status;
      this.code = (body && body.error) || "http_error";
    }
  }
  C.ApiError = ApiError;

  // One call to the API, with the key; the JSON answer, or ApiError.
  C.api = async function (method, path, body) {
    const headers = { Accept: "application/json" };
    const key = C.key();
    if (key) headers["X-API-Key"] = key;
    const init = { method, headers, cache: "no-store", credentials: "omit" };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const response = await fetch(API + path, init);
    const data = await response.json().catch(() => ({}));
    if (!response.ok) throw new ApiError(response.status, data);
    noteTenants(data.jobs || (data.job ? [data.job] : []));
    return data;
  };

  function noteTenants(jobs) {
    if (jobs.some((job) => typeof job.tenant === "string")) C.admin = true;
  }

  C.get = (path) => C.api("GET", path);
  C.jobPath = (id, rest) => "jobs/" + encodeURIComponent(id) + (rest || "");

  // The jobs of a listing, following nextCursor for at most `pages` pages; `more(page)` may
  // stop it early. Returns {jobs, nextCursor}.
  C.listJobs = async function (params, pages, more) {
    const jobs = [];
    let cursor = null;
    for (let page = 0; page < pages; page += 1) {
      const query = new URLSearchParams({ limit: "200", ...params });
      if (cursor) query.set("cursor", cursor);
      const data = await C.get("jobs?" + query.toString());
      jobs.push(...data.jobs);
      cursor = data.nextCursor;
      if (!cursor || (more && !more(data.jobs))) break;
    }
    return { jobs, nextCursor: cursor };
  };

  // At most `limit` calls of `work` in flight at once, over `items`; results in order.
  C.pool = async function (items, limit, work) {
    const results = new Array(items.length);
    let next = 0;
    async function worker() {
      while (next < items.length) {
        const index = next++;
        results[index] = await work(items[index]).catch(() => null);
      }
    }
    await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
    return results;
  };

  // An element: attributes (on* are listeners) and children (strings become text nodes).
  C.el = function (tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
      else if (name === "class") node.className = value;
      else node.setAttribute(name, value === true ? "" : String(value));
    }
    for (const child of children.flat(Infinity)) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  };

  C.jobLink = (job) =>
    C.el("a", { href: "#/job/" + encodeURIComponent(job.id), class: "job-id" }, job.id.slice(0, 8));
  C.badge = (state) => C.el("span", { class: "badge state-" + state }, state);

  // A table: `columns` are [title, cell(job)] pairs; each row carries its job's id.
  C.table = function (columns, jobs, empty) {
    if (!jobs.length) return C.el("p", { class: "empty" }, empty);
    const head = C.el("tr", null, columns.map(([title]) => C.el("th", null, title)));
    const rows = jobs.map((job) =>
      C.el("tr", { "data-job-id": job.id }, columns.map(([, cell]) => C.el("td", null, cell(job))))
    );
    return C.el("table", { class: "jobs" }, C.el("thead", null, head), C.el("tbody", null, rows));
  };

  // -- times ----------------------------------------------------------------------------
  const pad = (n) => String(n).padStart(2, "0");
  C.time = function (iso) {
    if (!iso) return "—";
    const t = new Date(iso);
    const day = `${t.getFullYear()}-${pad(t.getMonth() + 1)}-${pad(t.getDate())}`;
    return `${day} ${pad(t.getHours())}:${pad(t.getMinutes())}:${pad(t.getSeconds())}`;
  };
  C.span = function (ms) {
    if (ms === null || ms === undefined || Number.isNaN(ms)) return "—";
    const s = Math.max(0, Math.round(ms / 1000));
    if (s < 60) return `${s}s`;
    if (s < 3600) return `${Math.floor(s / 60)}m ${pad(s % 60)}s`;
    return `${Math.floor(s / 3600)}h ${pad(Math.floor((s % 3600) / 60))}m`;
  };
  C.since = (iso) => (iso ? C.span(Date.now() - Date.parse(iso)) : "—");
  C.between = (from, to) => (from && to ? C.span(Date.parse(to) - Date.parse(from)) : "—");

  // Dispatch order: jobs due now first, by priority (higher first), then joinAt or creation,
  // then id, as the scheduler ranks them; then jobs not due yet, by when they become due.
  C.dispatchOrder = function (jobs, now) {
    const due = (job) => Date.parse(job.notBefore) <= now;
    const when = (job) => Date.parse(job.joinAt || job.createdAt);
    const rank = (a, b) =>
      b.priority - a.priority || when(a) - when(b) || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0);
    return [...jobs].sort((a, b) => {
      if (due(a) !== due(b)) return due(a) ? -1 : 1;
      if (!due(a)) return Date.parse(a.notBefore) - Date.parse(b.notBefore) || rank(a, b);
      return rank(a, b);
    });
  };
})();
