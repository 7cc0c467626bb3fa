// A stand-in for what workerd gives a container-enabled Durable Object, for running the real
// BotContainer (infra/cloudflare/src/bot-container.ts, bundled by wrangler with the real
// @cloudflare/containers) under Node:
//
// - the `cloudflare:workers` module: DurableObject and WorkerEntrypoint base classes;
// - the Durable Object state (`ctx`): storage (get/put/delete with structured clones as the real
//   storage returns, alarms, sync, the synchronous kv API and SQL over node:sqlite),
//   blockConcurrencyWhile, waitUntil, abort;
// - `ctx.container`, the Containers runtime API: running, start, monitor, destroy, signal,
//   getTcpPort, with the error messages the runtime uses (the Container class matches on them).
//   A test drives it: `failNextStart(message)` makes the next start throw, `crashNextStart(code)`
//   makes the next container exit at once with that code, `exit(code)` ends the running one.

import { DatabaseSync } from "node:sqlite";

export class DurableObject {
  constructor(ctx, env) {
    this.ctx = ctx;
    this.env = env;
  }
}

export class WorkerEntrypoint {
  constructor(ctx, env) {
    this.ctx = ctx;
    this.env = env;
  }
}

const NOT_LISTENING = "the container is not listening";

class Deferred {
  constructor() {
    this.promise = new Promise((resolve, reject) => {
      this.resolve = resolve;
      this.reject = reject;
    });
    this.promise.catch(() => {}); // observed by whoever calls monitor()
  }
}

function exitError(code) {
  return new Error(`container exited with unexpected exit code: ${code}`);
}

export class ContainerRuntime {
  constructor() {
    this.running = false;
    this.starts = []; // the options of every start() call
    this.signals = [];
    this.destroyed = 0;
    this.intercepted = [];
    this.exited = null;
    this.nextStartError = null;
    this.nextStartCrash = null;
  }

  failNextStart(message) {
    this.nextStartError = message;
  }

  crashNextStart(code) {
    this.nextStartCrash = code;
  }

  start(options = {}) {
    if (this.running) throw new Error("start() requires that the container is not running");
    if (this.nextStartError !== null) {
      const message = this.nextStartError;
      this.nextStartError = null;
      throw new Error(message);
    }
    this.starts.push(structuredClone(options));
    this.running = true;
    this.exited = new Deferred();
    if (this.nextStartCrash !== null) {
      const code = this.nextStartCrash;
      this.nextStartCrash = null;
      this.exit(code);
    }
  }

  monitor() {
    if (!this.exited) return Promise.reject(new Error("no container is running"));
    return this.exited.promise;
  }

  exit(code) {
    if (!this.running) return;
    this.running = false;
    if (code === 0) this.exited.resolve();
    else this.exited.reject(exitError(code));
  }

  async destroy() {
    this.destroyed += 1;
    this.exit(137);
  }

  signal(signo) {
    this.signals.push(signo);
  }

  getTcpPort(port) {
    return {
      fetch: async () => {
        throw new Error(`connect to port ${port}: ${NOT_LISTENING}`); // the bot serves no port
      },
    };
  }

  async setInactivityTimeout() {}

  async interceptOutboundHttp(host) {
    this.intercepted.push(`http:${host}`);
  }

  async interceptOutboundHttps(host) {
    this.intercepted.push(`https:${host}`);
  }

  async interceptAllOutboundHttp() {
    this.intercepted.push("http:*");
  }

  summary() {
    return { running: this.running, starts: this.starts, signals: this.signals, destroyed: this.destroyed };
  }
}

class SqlStorage {
  constructor() {
    this.db = new DatabaseSync(":memory:");
  }
  exec(query, ...bindings) {
    const statement = this.db.prepare(query);
    if (statement.columns().length === 0) {
      statement.run(...bindings);
      return [][Symbol.iterator]();
    }
    return statement.all(...bindings)[Symbol.iterator]();
  }
}

export class Storage {
  constructor() {
    this.values = new Map();
    this.alarm = null;
    this.sql = new SqlStorage();
    const kv = new Map();
    this.kv = {
      get: (key) => structuredClone(kv.get(key)),
      put: (key, value) => void kv.set(key, structuredClone(value)),
      delete: (key) => kv.delete(key),
    };
  }
  async get(key) {
    return structuredClone(this.values.get(key));
  }
  async put(key, value) {
    this.values.set(key, structuredClone(value));
  }
  async delete(key) {
    return this.values.delete(key);
  }
  async getAlarm() {
    return this.alarm;
  }
  async setAlarm(time) {
    this.alarm = Number(time);
  }
  async deleteAlarm() {
    this.alarm = null;
  }
  async sync() {}
}

function loopbacks(exports) {
  const bindings = {};
  for (const [key, value] of Object.entries(exports)) {
    if (typeof value !== "function" || !(value.prototype instanceof WorkerEntrypoint)) continue;
    bindings[key] = ({ props } = {}) => ({
      fetch: (request) => new value({ props }, {}).fetch(request),
    });
  }
  return bindings;
}

// One Durable Object instance's state. A "reset" (eviction) is a new state on the same storage
// and the same container. `exports` is the Worker module's exports: workerd offers each exported
// entrypoint class in ctx.exports as a loopback binding.
export function durableObjectState(name, storage, container, exports = {}) {
  const pending = [];
  return {
    id: { name, toString: () => `id:${name}` },
    storage,
    container,
    props: {},
    exports: loopbacks(exports),
    pending,
    waitUntil: (promise) => pending.push(Promise.resolve(promise)),
    blockConcurrencyWhile: async (callback) => callback(),
    abort: (reason) => {
      throw new Error(`durable object aborted: ${reason}`);
    },
  };
}
