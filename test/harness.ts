// One test API for both runtimes: under Deno each test is a Deno.test; in the browser (test/browser_test.ts
// bundles every *_test.ts with esbuild) tests are collected here and run by the page.
import { type Engine, init } from "../src/mod.ts";

export type TestFn = (engine: Engine) => Promise<void> | void;
export interface TestCase {
  name: string;
  fn: TestFn;
}

/** Tests registered so far (the browser page runs these). */
export const registry: TestCase[] = [];

let shared: Promise<Engine> | null = null;

/** The engine every test shares; a missing adapter fails each test with DeviceError's install advice. */
export function sharedEngine(): Promise<Engine> {
  // 128 MiB bindings on every adapter (llvmpipe's own limit; SwiftShader offers 1 GiB), so the windowed paths
  // for tensors over one binding are exercised the same way in Deno and in Chromium; 8 parallel workgroups
  // whatever the machine's core count, so ops that split their work split the same way everywhere.
  shared ??= init({ maxStorageBufferBindingSize: 128 * 2 ** 20, parallelWorkgroups: 8 });
  return shared;
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
