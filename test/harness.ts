// One test API for both runtimes: under Deno each test is a Deno.test; in the browser (test/browser_test.ts
// bundles every *_test.ts with esbuild) tests are collected here and run by the page.
import { type Engine, init, type InitOptions } from "../src/mod.ts";

export type TestFn = (engine: Engine) => Promise<void> | void;
export interface TestCase {
  name: string;
  fn: TestFn;
}

/** Tests registered so far (the browser page runs these). */
export const registry: TestCase[] = [];

// 128 MiB bindings on every adapter (llvmpipe's own limit; SwiftShader offers 1 GiB), so the windowed paths for
// tensors over one binding are exercised the same way in Deno and in Chromium; 8 parallel workgroups whatever
// the machine's core count, so ops that split their work split the same way everywhere.
const SHARED_OPTIONS = { maxStorageBufferBindingSize: 128 * 2 ** 20, parallelWorkgroups: 8 };

let shared: Promise<Engine> | null = null;

/** The engine every test shares; a missing adapter fails each test with DeviceError's install advice. */
export function sharedEngine(): Promise<Engine> {
  shared ??= init(SHARED_OPTIONS);
  return shared;
}

const kept = new Map<string, Promise<Engine>>();

/** What an option became on an engine, so options that resolve alike share one kept engine. */
const RESOLVED: Partial<Record<keyof InitOptions, (e: Engine) => unknown>> = {
  cpuKernels: (e) => e.cpuKernels,
  parallelWorkgroups: (e) => e.parallelWorkgroups,
};

/**
 * An engine of the shared options and `options`, made on first use and kept, like the shared engine: the
 * shared engine itself where `options` resolve to what it has, and one engine for all options that resolve
 * alike (each engine compiles its pipelines anew, slowly on a CPU).
 */
async function keptEngine(options: InitOptions): Promise<Engine> {
  const shared = await sharedEngine();
  const resolve = (o: InitOptions) => {
    const values = Object.entries(RESOLVED).map(([k, f]) => [k, f!(shared)]);
    return JSON.stringify(Object.entries({ ...Object.fromEntries(values), ...o }).sort());
  };
  const key = resolve(options);
  if (key === resolve({})) return shared;
  if (!kept.has(key)) kept.set(key, init({ ...SHARED_OPTIONS, ...options }));
  return kept.get(key)!;
}

/**
 * Runs `fn` on two engines of the shared engine's options (and `options`), one with `cpuKernels` and one
 * without, so both kernel variants (the CPU adapters' direct ones, the GPUs' staged ones) are tested on every
 * adapter. The engines are kept for later tests: creating and destroying devices over and over is what Deno's
 * WebGPU handles least well.
 */
export async function bothKernels(fn: TestFn, options: InitOptions = {}): Promise<void> {
  for (const cpuKernels of [true, false]) await fn(await keptEngine({ ...options, cpuKernels }));
}

/** Two distinct engines (the kept ones of either kernel variant): tests of a tensor from another engine. */
export async function twoEngines(): Promise<[Engine, Engine]> {
  return [await keptEngine({ cpuKernels: true }), await keptEngine({ cpuKernels: false })];
}

/** Runs `fn` on the kept engine with `cpuKernels`, for paths only the CPU adapters' variants take. */
export async function cpuKernels(fn: TestFn): Promise<void> {
  await fn(await keptEngine({ cpuKernels: true }));
}

export function test(name: string, fn: TestFn): void {
  const run = async () => fn(await sharedEngine());
  const deno = (globalThis as { Deno?: typeof Deno }).Deno;
  if (deno?.test) {
    deno.test({ name, fn: run, sanitizeOps: false, sanitizeResources: false });
  } else {
    registry.push({ name, fn });
  }
}
