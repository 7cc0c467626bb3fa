// Runs the real Worker entry (handlers/cloudflare.py) in Pyodide under Node, offline.
//
// usage: node run_worker.mjs BUILD PYODIDE_HOME SCENARIO_JSON WHEEL...
//
// BUILD is the Worker's module root as wrangler uploads it (infra/cloudflare/scheduler/build/,
// made by scripts/build-cloudflare-worker.py): worker.py, core/ and handlers/. It is mounted as
// the working directory, so only what the Worker would bundle can be imported.
//
// What is real: Pyodide (the interpreter Cloudflare's Python Workers use), the workers SDK
// (`workers` and its `asgi` bridge, from PyPI's workers-runtime-sdk), starlette, pydantic and
// pydantic-core's wasm build, and our core/ and handlers/. What is ours: the parts workerd provides
// from JS: the `_pyodide_entrypoint_helper` and `_cloudflare_compat_flags` modules, a D1 binding
// over sql.js (class D1Database, so the SDK wraps it as it wraps D1), and a Durable Object
// namespace (class DurableObjectNamespace) whose stubs play the bot container protocol of
// core/backends/cloudflare.py and record every call.
//
// The scenario is a list of steps: {"fetch": {method, path, headers, body}} |
// {"scheduled": true} | {"container": {phase, exitCode, reason}} (every running run ends so) |
// {"calls": true} | {"sql": "SELECT ..."}. "{jobN}" in a path is the id of the Nth job a fetch
// answered with. One JSON line per step goes to stdout.

import { createRequire } from "node:module";
import path from "node:path";

const [build, home, scenarioJson, ...wheels] = process.argv.slice(2);
const require = createRequire(path.join(home, "package.json"));
const { loadPyodide } = await import(path.join(home, "node_modules/pyodide/pyodide.mjs"));
const initSqlJs = require("sql.js");

// -- D1 stand-in: D1's API over sql.js --

function d1Value(value) {
  if (value === undefined) throw new Error("D1_TYPE_ERROR: Type 'undefined' not supported");
  if (value === null || typeof value === "number" || typeof value === "string") return value;
  if (typeof value === "boolean") return value ? 1 : 0;
  if (typeof value === "bigint") return Number(value);
  throw new Error(`D1_TYPE_ERROR: Type '${typeof value}' not supported`);
}

class D1PreparedStatement {
  constructor(db, sql, params = []) {
    this.db = db;
    this.sql = sql;
    this.params = params;
  }
  bind(...params) {
    return new D1PreparedStatement(this.db, this.sql, params.map(d1Value));
  }
  async first(column) {
    const { results } = this.db._execute(this.sql, this.params);
    if (results.length === 0) return null;
    return column === undefined ? results[0] : results[0][column];
  }
  async all() {
    const { results, changes } = this.db._execute(this.sql, this.params);
    return { results, success: true, meta: { changes } };
  }
  async run() {
    const { results, changes } = this.db._execute(this.sql, this.params);
    return { results, success: true, meta: { changes } };
  }
}

class D1Database {
  constructor(SQL) {
    this.sqlite = new SQL.Database();
    this.statements = [];
  }
  prepare(sql) {
    return new D1PreparedStatement(this, sql);
  }
  async batch(statements) {
    this.sqlite.exec("BEGIN");
    try {
      const out = [];
      for (const statement of statements) out.push(await statement.run());
      this.sqlite.exec("COMMIT");
      return out;
    } catch (error) {
      this.sqlite.exec("ROLLBACK");
      throw error;
    }
  }
  _execute(sql, params) {
    this.statements.push(sql);
    let statement;
    try {
      statement = this.sqlite.prepare(sql);
      statement.bind(params);
      const results = [];
      while (statement.step()) results.push(statement.getAsObject());
      return { results, changes: this.sqlite.getRowsModified() };
    } catch (error) {
      const code = /constraint/i.test(error.message) ? ": SQLITE_CONSTRAINT" : "";
      throw new Error(`D1_ERROR: ${error.message}${code}`);
    } finally {
      statement?.free();
    }
  }
}

// -- Durable Object namespace stand-in: one "container" per name --

class DurableObjectId {
  constructor(name) {
    this.name = name;
  }
  toString() {
    return `id:${this.name}`;
  }
}

class Fetcher {
  constructor(namespace, name) {
    this.namespace = namespace;
    this.name = name;
  }
  async fetch(input, init = {}) {
    const request = new Request(input, init);
    const url = new URL(request.url);
    const body = request.method === "GET" ? null : await request.text();
    const parsed = body ? JSON.parse(body) : null;
    this.namespace.calls.push({ name: this.name, method: request.method, path: url.pathname, body: parsed });
    return this.namespace.handle(this.name, request.method, url.pathname, parsed);
  }
}

class DurableObjectNamespace {
  constructor() {
    this.runs = new Map();
    this.calls = [];
  }
  idFromName(name) {
    return new DurableObjectId(name);
  }
  get(id) {
    return new Fetcher(this, id.name);
  }
  handle(name, method, pathname, body) {
    const json = (status, value) =>
      new Response(JSON.stringify(value), { status, headers: { "content-type": "application/json" } });
    let run = this.runs.get(name);
    if (method === "POST" && pathname === "/start") {
      if (!run) {
        run = { phase: "running", env: body.env, startedAt: new Date().toISOString(), starts: 1 };
        this.runs.set(name, run);
      } else run.starts += 1;
      return json(200, run);
    }
    if (method === "GET" && pathname === "/status") return run ? json(200, run) : json(404, { error: "not_found" });
    if (method === "POST" && pathname === "/stop") {
      if (run && run.phase === "running") Object.assign(run, { phase: "failed", reason: "stopped", finishedAt: new Date().toISOString() });
      return json(200, run ?? {});
    }
    return json(404, { error: "no_route" });
  }
}

// -- the Worker --

const SQL = await initSqlJs({ locateFile: (file) => path.join(home, "node_modules/sql.js/dist", file) });
const scenario = JSON.parse(scenarioJson);
const env = { DB: new D1Database(SQL), BOTS: new DurableObjectNamespace(), ...scenario.vars };
const pending = [];
const ctx = { waitUntil: (promise) => pending.push(Promise.resolve(promise)), passThroughOnException() {} };

const pyodide = await loadPyodide({ indexURL: path.join(home, "node_modules/pyodide") });
pyodide.registerJsModule("_cloudflare_compat_flags", {
  python_workflows_implicit_dependencies: false,
  python_request_headers_preserve_commas: false,
});
pyodide.registerJsModule("_pyodide_entrypoint_helper", {
  cloudflareWorkersModule: { env, waitUntil: ctx.waitUntil },
  cloudflareSocketsModule: {},
  doAnImport: (name) => import(name),
  patchWaitUntil: () => {},
  patch_env_helper: () => {},
});
await pyodide.loadPackage(wheels, { messageCallback: () => {} });
pyodide.FS.mkdirTree("/app");
pyodide.FS.mount(pyodide.FS.filesystems.NODEFS, { root: path.resolve(build) }, "/app");
pyodide.runPython("import sys; sys.path.insert(0, '/app'); sys.dont_write_bytecode = True");
const started = Date.now();
const { Default } = pyodide.pyimport("worker"); // the module wrangler.toml names as `main`
const entry = Default(ctx, env);
const out = (value) => process.stdout.write(JSON.stringify(value) + "\n");
out({ ready: true, python: pyodide.runPython("import sys; sys.version.split()[0]"), importMs: Date.now() - started });

const jobs = [];
for (const step of scenario.steps) {
  if (step.fetch) {
    const { method = "GET", headers = {}, body } = step.fetch;
    const p = step.fetch.path.replace(/\{job(\d+)\}/g, (_, n) => jobs[Number(n)]);
    const init = { method, headers };
    if (body !== undefined) init.body = JSON.stringify(body);
    const response = await entry.fetch(new Request(`https://scheduler.example.workers.dev${p}`, init));
    const text = await response.text();
    let parsed = null;
    try {
      parsed = JSON.parse(text);
    } catch {}
    await Promise.all(pending.splice(0)); // the request's waitUntil work (e.g. a dispatch)
    if (parsed?.job?.id && !jobs.includes(parsed.job.id)) jobs.push(parsed.job.id);
    out({ step: "fetch", path: p, status: response.status, contentType: response.headers.get("content-type"), body: parsed ?? text });
  } else if (step.scheduled) {
    await entry.scheduled({ cron: "* * * * *", type: "scheduled", scheduledTime: Date.now() }, env, ctx);
    await Promise.all(pending.splice(0));
    out({ step: "scheduled" });
  } else if (step.container) {
    const { phase, exitCode = null, reason = null } = step.container;
    const ended = [];
    for (const [name, run] of env.BOTS.runs) {
      if (run.phase !== "running") continue;
      Object.assign(run, { phase, exitCode, reason, finishedAt: new Date().toISOString() });
      ended.push(name);
    }
    out({ step: "container", ended, phase });
  } else if (step.calls) {
    out({ step: "calls", calls: env.BOTS.calls, runs: Object.fromEntries(env.BOTS.runs) });
  } else if (step.sql) {
    const { results } = env.DB._execute(step.sql, []);
    out({ step: "sql", results });
  }
}
await Promise.all(pending);
process.exit(0);
