// Runs the real BotContainer Durable Object class under Node, with a stand-in for the Containers
// runtime (containers_runtime.mjs), and plays a scenario against it.
//
// usage: node run_bot_container.mjs BUNDLE SCENARIO_JSON
//
// BUNDLE is the container Worker as wrangler builds it (`wrangler deploy --dry-run --outdir`):
// src/bot-container.ts with the real @cloudflare/containers, `cloudflare:workers` left external.
// The scenario is a list of steps, one JSON line out per step:
//   {"fetch": {method, path, body}}    a request from the scheduler -> {status, body}
//   {"failNextStart": "message"}       the runtime refuses the next container start
//   {"crashNextStart": code}           the next container exits at once with that code
//   {"exit": code}                     the running container exits with that code
//   {"alarm": true}                    the object's alarm fires (delivers onStop after an exit)
//   {"reset": true}                    the object is evicted: a new instance, same storage and
//                                      container
//   {"store": {key, value}}            a value written to the object's storage beforehand
//   {"container": true}                what the runtime was asked: starts, signals, running

import { register } from "node:module";
import path from "node:path";
import { pathToFileURL } from "node:url";

register(new URL("./workers_hooks.mjs", import.meta.url));
const { ContainerRuntime, Storage, durableObjectState } = await import("./containers_runtime.mjs");

const [bundle, scenarioJson] = process.argv.slice(2);
const worker = await import(pathToFileURL(path.resolve(bundle)).href);
const { BotContainer } = worker;
const scenario = JSON.parse(scenarioJson);

const name = scenario.name ?? "job-1";
const storage = new Storage();
const container = new ContainerRuntime();
let state = durableObjectState(name, storage, container, worker);
let object = new BotContainer(state, {});
const out = (value) => process.stdout.write(JSON.stringify(value) + "\n");
const settle = () => new Promise((resolve) => setTimeout(resolve, 0));

async function fetchStep({ method = "GET", path: route, body }) {
  const init = { method };
  if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers = { "content-type": "application/json" };
  }
  const response = await object.fetch(new Request(`https://bot${route}`, init));
  return { step: "fetch", path: route, status: response.status, body: await response.json() };
}

for (const step of scenario.steps) {
  if (step.fetch) {
    out(await fetchStep(step.fetch));
  } else if (step.failNextStart !== undefined) {
    container.failNextStart(step.failNextStart);
    out({ step: "failNextStart" });
  } else if (step.crashNextStart !== undefined) {
    container.crashNextStart(step.crashNextStart);
    out({ step: "crashNextStart" });
  } else if (step.exit !== undefined) {
    container.exit(step.exit);
    await settle(); // the Container class's monitor callbacks record the exit
    out({ step: "exit", code: step.exit });
  } else if (step.alarm) {
    await object.alarm();
    out({ step: "alarm" });
  } else if (step.reset) {
    await Promise.all(state.pending);
    state = durableObjectState(name, storage, container, worker);
    object = new BotContainer(state, {});
    out({ step: "reset" });
  } else if (step.store) {
    await storage.put(step.store.key, step.store.value);
    out({ step: "store", key: step.store.key });
  } else if (step.container) {
    out({ step: "container", ...container.summary() });
  }
  await settle();
}
process.exit(0);
