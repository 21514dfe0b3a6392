// Assertions shared by the tests (no node:assert: the same files run in the browser).
import type { Engine, Tensor } from "../src/mod.ts";

export function assert(cond: unknown, message = "assertion failed"): asserts cond {
  if (!cond) throw new Error(message);
}

export function assertEquals(actual: unknown, expected: unknown, message = ""): void {
  const a = JSON.stringify(actual);
  const e = JSON.stringify(expected);
  if (a !== e) throw new Error(`${message ? message + ": " : ""}expected ${e}, got ${a}`);
}

/**
 * Every |actual - expected| ≤ atol + rtol·|expected|; NaN must match NaN and ±Inf match exactly.
 * The message names the worst element, its values and the bound.
 */
export function assertClose(
  actual: ArrayLike<number>,
  expected: ArrayLike<number>,
  tol: { rtol: number; atol: number },
  message = "",
): void {
  const prefix = message ? message + ": " : "";
  if (actual.length !== expected.length) {
    throw new Error(`${prefix}length ${actual.length} != expected ${expected.length}`);
  }
  let worst = -1;
  let worstExcess = 0;
  for (let i = 0; i < actual.length; i++) {
    const a = actual[i];
    const e = expected[i];
    if (Number.isNaN(e) || Number.isNaN(a) || !Number.isFinite(e)) {
      if (!Object.is(a, e) && !(Number.isNaN(a) && Number.isNaN(e))) {
        throw new Error(`${prefix}element ${i}: got ${a}, expected ${e}`);
      }
      continue;
    }
    const excess = Math.abs(a - e) - (tol.atol + tol.rtol * Math.abs(e));
    if (!(excess <= 0) && (worst < 0 || excess > worstExcess)) {
      worst = i;
      worstExcess = excess;
    }
  }
  if (worst >= 0) {
    const a = actual[worst];
    const e = expected[worst];
    throw new Error(
      `${prefix}element ${worst} of ${actual.length}: got ${a}, expected ${e} (|diff| ${Math.abs(a - e)} > ` +
        `atol ${tol.atol} + rtol ${tol.rtol}·|expected|)`,
    );
  }
}

/**
 * assertClose with atol = rtol × the largest |expected|: for outputs whose small elements come from cancelling
 * larger terms, so their f32 error is set by the size of those terms rather than their own.
 */
export function assertCloseScaled(
  actual: ArrayLike<number>,
  expected: ArrayLike<number>,
  rtol: number,
  message = "",
): void {
  let scale = 0;
  for (let i = 0; i < expected.length; i++) scale = Math.max(scale, Math.abs(expected[i]));
  assertClose(actual, expected, { rtol, atol: rtol * scale }, message);
}

/** Runs `fn` and checks it throws an error of `type` whose message contains every string in `includes`. */
export async function assertThrows(
  fn: () => unknown,
  type: abstract new (...args: never[]) => Error,
  includes: string[] = [],
): Promise<Error> {
  try {
    await fn();
  } catch (e) {
    if (!(e instanceof type)) {
      throw new Error(`expected ${type.name}, got ${(e as Error)?.name}: ${(e as Error)?.message}`);
    }
    for (const s of includes) {
      if (!e.message.includes(s)) throw new Error(`expected the message to mention "${s}": ${e.message}`);
    }
    return e;
  }
  throw new Error(`expected ${type.name} to be thrown`);
}

/** Deterministic pseudo-random numbers for test inputs (mulberry32), independent of the engine's RNG. */
export function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6D2B79F5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Random values uniform in [lo, hi). */
export function randomArray(n: number, seed: number, lo = -1, hi = 1): Float32Array {
  const r = rng(seed);
  return Float32Array.from({ length: n }, () => lo + (hi - lo) * r());
}

export function randomShape(rank: number, seed: number, maxDim = 9): number[] {
  const r = rng(seed);
  return Array.from({ length: rank }, () => 1 + Math.floor(r() * maxDim));
}

/** Asserts that engine.memory() returns to `before` (no tensor leaked). */
export function assertNoLeak(engine: Engine, before: { tensors: number; bytes: number }, what = ""): void {
  const now = engine.memory();
  if (now.tensors !== before.tensors || now.bytes !== before.bytes) {
    throw new Error(
      `${what ? what + ": " : ""}leaked ${now.tensors - before.tensors} tensors / ${
        now.bytes - before.bytes
      } bytes`,
    );
  }
}

/**
 * Central finite differences of a scalar function of one f32 input, in float64 on the CPU side of `f`
 * (f evaluates the GPU op and reads back the scalar), for the listed element indices.
 */
export async function finiteDifference(
  f: (x: Float32Array) => Promise<number>,
  x: Float32Array,
  indices: number[],
  h = 1e-2,
): Promise<Float64Array> {
  const out = new Float64Array(indices.length);
  for (let k = 0; k < indices.length; k++) {
    const i = indices[k];
    const xp = x.slice();
    const xm = x.slice();
    xp[i] += h;
    xm[i] -= h;
    out[k] = ((await f(xp)) - (await f(xm))) / (xp[i] - xm[i]);
  }
  return out;
}

/**
 * A gradient `got` at the listed indices against central finite differences of the scalar `f` at x (step h),
 * within `tol`.
 */
export async function assertFiniteDifferences(
  got: ArrayLike<number>,
  f: (x: Float32Array) => Promise<number>,
  x: Float32Array,
  indices: number[],
  h: number,
  tol: { rtol: number; atol: number },
  what: string,
): Promise<void> {
  const fd = await finiteDifference(f, x, indices, h);
  assertClose(indices.map((i) => got[i]), fd, tol, `${what} against finite differences`);
}

/** Reads a tensor and disposes it. */
export async function take(t: Tensor): Promise<Float32Array> {
  try {
    return (await t.toArray()) as Float32Array;
  } finally {
    t.dispose();
  }
}
