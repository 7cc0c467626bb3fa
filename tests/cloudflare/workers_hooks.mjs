// Module resolution hook: `cloudflare:workers` (provided by workerd) resolves to the stand-in in
// containers_runtime.mjs, so a bundle built for workerd imports under Node.
const RUNTIME = new URL("./containers_runtime.mjs", import.meta.url).href;

export async function resolve(specifier, context, nextResolve) {
  if (specifier === "cloudflare:workers") return { url: RUNTIME, shortCircuit: true };
  return nextResolve(specifier, context);
}
