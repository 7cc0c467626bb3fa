// One bot run per job: a container-enabled Durable Object, named after the job by the scheduler
// (core/backends/cloudflare.py: env.BOTS.idFromName(jobId) -> get(id) -> fetch). It speaks the
// scheduler's small JSON protocol:
//   POST /start {jobId, env, maxRuntimeSeconds} -> 200 run   (starts once; a repeat adopts it)
//                                               -> 502 {error: "start_failed", reason}
//   GET  /status                                -> 200 run | 404 (no run: never started, or its
//                                                  start failed)
//   POST /stop                                  -> 200 run   (finished or unknown: fine)
// where run = {jobId, phase: pending|running|succeeded|failed, exitCode, reason, startedAt,
// finishedAt}. The run record lives in the Durable Object's storage, so it survives the container
// and the object's eviction; the bot's exit code arrives through onStop.
//
// A start that fails leaves no run behind: the scheduler then finds none, puts the job back in
// its queue, and its next start begins a new run instead of adopting a failed one. The same holds
// for a start cut short by the object's reset (a pending run with no start in flight and no
// container running).
import { Container } from "@cloudflare/containers";

// The Container class reaches its outbound proxy through ctx.exports.ContainerProxy whenever an
// instance wakes up next to a running container (e.g. after an eviction): export it.
export { ContainerProxy } from "@cloudflare/containers";

type Phase = "pending" | "running" | "succeeded" | "failed";

interface Run {
  jobId: string;
  phase: Phase;
  exitCode: number | null;
  reason: string | null;
  startedAt: string;
  finishedAt: string | null;
}

interface StartBody {
  jobId: string;
  env: Record<string, string>;
  maxRuntimeSeconds?: number | null;
}

const RUN_KEY = "run";
const START_FAILURE_KEY = "lastStartFailure";

function json(status: number, value: unknown): Response {
  return new Response(JSON.stringify(value), {
    status,
    headers: { "content-type": "application/json" },
  });
}

function finished(run: Run): boolean {
  return run.phase === "succeeded" || run.phase === "failed";
}

function newRun(jobId: string): Run {
  const startedAt = new Date().toISOString();
  return { jobId, phase: "pending", exitCode: null, reason: null, startedAt, finishedAt: null };
}

export class BotContainer extends Container {
  // The bot serves no port: nothing to wait for or proxy to. It runs until it exits or the
  // scheduler stops it (maxRuntimeSeconds); polls renew the activity timer, so sleepAfter only
  // reaps a container the scheduler has forgotten.
  sleepAfter = "2h";

  // a start is in flight in this instance (the record says "pending" meanwhile)
  private starting = false;

  override async fetch(request: Request): Promise<Response> {
    const { pathname } = new URL(request.url);
    if (request.method === "POST" && pathname === "/start") {
      return this.startRun((await request.json()) as StartBody);
    }
    if (request.method === "GET" && pathname === "/status") return this.status();
    if (request.method === "POST" && pathname === "/stop") return this.stopRun();
    return json(404, { error: "no_route", path: pathname });
  }

  private async load(): Promise<Run | undefined> {
    return this.ctx.storage.get<Run>(RUN_KEY);
  }

  private async save(run: Run): Promise<void> {
    await this.ctx.storage.put(RUN_KEY, run);
  }

  // The run, if there is one. A pending run with no start in flight here was cut short by a
  // reset of this object: it is running if its container is, else its start failed (no run).
  private async current(): Promise<Run | undefined> {
    const run = await this.load();
    if (!run || run.phase !== "pending" || this.starting) return run;
    if (this.ctx.container?.running) {
      run.phase = "running";
      await this.save(run);
      return run;
    }
    await this.ctx.storage.delete(RUN_KEY);
    return undefined;
  }

  private async startRun(body: StartBody): Promise<Response> {
    const existing = await this.current();
    if (existing) return json(200, existing); // a retried start adopts the run
    this.starting = true;
    try {
      return await this.begin(newRun(body.jobId), body.env);
    } finally {
      this.starting = false;
    }
  }

  private async begin(run: Run, env: Record<string, string>): Promise<Response> {
    await this.save(run);
    try {
      await this.start({ envVars: env });
    } catch (error) {
      return this.startFailed(run, error);
    }
    const current = (await this.load()) ?? run; // the bot may have ended already (onStop)
    if (current.phase === "pending") {
      current.phase = "running";
      await this.save(current);
    }
    return json(200, current);
  }

  // No run is left behind, so the scheduler retries the job and the next start is a new run.
  private async startFailed(run: Run, error: unknown): Promise<Response> {
    const reason = `start failed: ${String(error)}`;
    const failure = { jobId: run.jobId, reason, at: new Date().toISOString() };
    await this.ctx.storage.delete(RUN_KEY);
    await this.ctx.storage.put(START_FAILURE_KEY, failure);
    return json(502, { error: "start_failed", ...failure });
  }

  private async status(): Promise<Response> {
    const run = await this.current();
    if (!run) {
      const lastStartFailure = await this.ctx.storage.get(START_FAILURE_KEY);
      return json(404, { error: "not_found", lastStartFailure: lastStartFailure ?? null });
    }
    if (!finished(run)) this.renewActivityTimeout();
    return json(200, run);
  }

  private async stopRun(): Promise<Response> {
    const run = await this.current();
    if (run && !finished(run)) {
      await this.finish("failed", null, "stopped");
      await this.stop();
    }
    return json(200, (await this.load()) ?? {});
  }

  private async finish(phase: Phase, exitCode: number | null, reason: string | null) {
    const run = await this.load();
    if (!run || finished(run)) return;
    Object.assign(run, { phase, exitCode, reason, finishedAt: new Date().toISOString() });
    await this.save(run);
  }

  override async onStop(params: { exitCode: number; reason: string }): Promise<void> {
    const ok = params.exitCode === 0;
    const reason = ok ? null : `exit code ${params.exitCode} (${params.reason})`;
    await this.finish(ok ? "succeeded" : "failed", params.exitCode, reason);
  }

  override async onError(error: unknown): Promise<void> {
    await this.finish("failed", null, `container error: ${String(error)}`);
  }
}

// The scheduler Worker reaches BotContainer through its Durable Object binding (script_name);
// this Worker serves nothing itself.
export default {
  async fetch(): Promise<Response> {
    return json(404, { error: "bound from the bot-scheduler Worker only" });
  },
};
