// One bot run per job: a container-enabled Durable Object, named after the job by the scheduler
// (core/backends/cloudflare.py: env.BOTS.idFromName(jobId) -> get(id) -> fetch). It speaks the
// scheduler's small JSON protocol:
//   POST /start {jobId, env, maxRuntimeSeconds} -> 200 run   (starts once; a repeat adopts it)
//   GET  /status                                -> 200 run | 404 (never started)
//   POST /stop                                  -> 200 run   (finished or unknown: fine)
// where run = {jobId, phase: pending|running|succeeded|failed, exitCode, reason, startedAt,
// finishedAt}. The run record lives in the Durable Object's storage, so it survives the container
// and the object's eviction; the bot's exit code arrives through onStop.
import { Container } from "@cloudflare/containers";

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

function json(status: number, value: unknown): Response {
  return new Response(JSON.stringify(value), {
    status,
    headers: { "content-type": "application/json" },
  });
}

function finished(run: Run): boolean {
  return run.phase === "succeeded" || run.phase === "failed";
}

export class BotContainer extends Container {
  // The bot serves no port: nothing to wait for or proxy to. It runs until it exits or the
  // scheduler stops it (maxRuntimeSeconds); polls renew the activity timer, so sleepAfter only
  // reaps a container the scheduler has forgotten.
  sleepAfter = "2h";

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

  private async startRun(body: StartBody): Promise<Response> {
    const existing = await this.load();
    if (existing) return json(200, existing); // a retried start adopts the run
    const run: Run = {
      jobId: body.jobId,
      phase: "pending",
      exitCode: null,
      reason: null,
      startedAt: new Date().toISOString(),
      finishedAt: null,
    };
    await this.save(run);
    try {
      await this.start({ envVars: body.env });
    } catch (error) {
      await this.finish("failed", null, `start failed: ${String(error)}`);
      return json(502, await this.load());
    }
    const current = (await this.load()) ?? run;
    if (current.phase === "pending") {
      current.phase = "running";
      await this.save(current);
    }
    return json(200, current);
  }

  private async status(): Promise<Response> {
    const run = await this.load();
    if (!run) return json(404, { error: "not_found" });
    if (!finished(run)) this.renewActivityTimeout();
    return json(200, run);
  }

  private async stopRun(): Promise<Response> {
    const run = await this.load();
    if (run && !finished(run)) {
      await this.finish("failed", null, "stopped");
      await this.stop();
    }
    return json(200, run ?? {});
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
