import {
  adam,
  adamw,
  clipGradNorm,
  cosineSchedule,
  emaUpdate,
  grad,
  lars,
  matmul,
  mse,
  type Optimizer,
  sgd,
  ShapeError,
  type Tensor,
} from "../src/mod.ts";
import type { Engine } from "../src/mod.ts";
import { refAdamStep, refClipGradNorm, refEma, refLarsStep, refSgdStep } from "../src/ref/optim.ts";
import { test } from "./harness.ts";
import { assert, assertClose, assertEquals, assertNoLeak, assertThrows, randomArray, take } from "./util.ts";

// Three steps of a few f32 operations each on values of order 1 (lr ≤ 0.1): a few ulp of |w| per step, so
// rtol 1e-5 leaves headroom; atol for elements that end near 0 by cancellation.
const TOL = { rtol: 1e-5, atol: 1e-6 };
const STEPS = 3;

// Sizes: 1, primes, non-multiples of 4 (one vec4 per invocation) and of the 1,024-element workgroup, and one
// whose LARS norms take 1,025 partial sums over 5 workgroups.
const SIZES = [1, 7, 1009, 65_537];

/** Runs STEPS steps of `make`'s optimiser on one parameter of n elements and returns w after each. */
async function run(
  engine: Engine,
  n: number,
  shape: number[],
  make: (w: Tensor) => Optimizer,
  seed: number,
): Promise<{ w0: Float32Array; grads: Float32Array[]; after: Float32Array[] }> {
  const w0 = randomArray(n, seed);
  using w = engine.tensor(w0, shape);
  using opt = make(w);
  const grads: Float32Array[] = [];
  const after: Float32Array[] = [];
  for (let t = 0; t < STEPS; t++) {
    grads.push(randomArray(n, seed * 7 + t + 1));
    using g = engine.tensor(grads[t], shape);
    opt.step([g]);
    after.push((await w.toArray()) as Float32Array);
  }
  assertEquals(opt.steps, STEPS);
  return { w0, grads, after };
}

const SGD_CASES = [
  { lr: 0.1 },
  { lr: 0.05, momentum: 0.9 },
  { lr: 0.05, momentum: 0.9, dampening: 0.3, weightDecay: 0.01 },
  { lr: 0.05, momentum: 0.8, nesterov: true, weightDecay: 1e-3 },
];

test("sgd matches the float64 reference: momentum, dampening, Nesterov, weight decay", async (engine) => {
  const before = engine.memory();
  for (const [c, o] of SGD_CASES.entries()) {
    for (const n of SIZES) {
      const { w0, grads, after } = await run(engine, n, [n], (w) => sgd([w], o), 10 * c + n);
      const w = Float64Array.from(w0);
      const buf = (o.momentum ?? 0) > 0 ? new Float64Array(n) : null;
      const ref = { momentum: 0, dampening: 0, weightDecay: 0, nesterov: false, ...o };
      for (let t = 0; t < STEPS; t++) {
        refSgdStep(w, grads[t], buf, ref, t === 0);
        assertClose(after[t], w, TOL, `sgd ${JSON.stringify(o)} n=${n} step ${t + 1}`);
      }
    }
  }
  assertNoLeak(engine, before);
});

const ADAM_CASES = [
  { decoupled: false, o: {} },
  { decoupled: false, o: { lr: 0.01, betas: [0.8, 0.99] as [number, number], weightDecay: 0.1 } },
  { decoupled: true, o: {} },
  { decoupled: true, o: { lr: 0.05, eps: 1e-6, weightDecay: 0.5 } },
];

test("adam and adamw match the float64 reference, bias correction and weight decay included", async (engine) => {
  const before = engine.memory();
  for (const [c, { decoupled, o }] of ADAM_CASES.entries()) {
    for (const n of SIZES) {
      const make = (w: Tensor) => (decoupled ? adamw : adam)([w], o);
      const { w0, grads, after } = await run(engine, n, [n], make, 100 + 10 * c + n);
      const w = Float64Array.from(w0);
      const m = new Float64Array(n);
      const v = new Float64Array(n);
      const ref = {
        lr: o.lr ?? 1e-3,
        beta1: o.betas?.[0] ?? 0.9,
        beta2: o.betas?.[1] ?? 0.999,
        eps: o.eps ?? 1e-8,
        weightDecay: o.weightDecay ?? (decoupled ? 0.01 : 0),
        decoupled,
      };
      for (let t = 0; t < STEPS; t++) {
        refAdamStep(w, grads[t], m, v, t + 1, ref);
        assertClose(
          after[t],
          w,
          TOL,
          `${decoupled ? "adamw" : "adam"} ${JSON.stringify(o)} n=${n} step ${t + 1}`,
        );
      }
    }
  }
  assertNoLeak(engine, before);
});

test("adam's first step is lr·g / (|g| + eps) to f32 rounding, also at β2 = 0.9999", async (engine) => {
  // m / sqrt(v) after one step is g / |g| exactly when 1 − β2 is exact: it was 1 − f32(β2), 1.7e-4 off at
  // 0.9999, and the step came out 8e-5 too big. Six f32 roundings: within 1e-6 relative.
  const g = randomArray(1009, 7).map((x) => x + Math.sign(x));
  for (const betas of [[0.9, 0.999], [0.9, 0.9999]] as [number, number][]) {
    using w = engine.zeros([1009]);
    using gt = engine.tensor(g, [1009]);
    const opt = adam([w], { lr: 0.1, betas });
    opt.step([gt]);
    const want = Array.from(g, (x) => -0.1 * x / (Math.abs(x) + 1e-8));
    assertClose(await w.toArray(), want, { rtol: 1e-6, atol: 0 }, `first step, betas ${betas}`);
    opt.dispose();
  }
});

test("lars matches the float64 reference: trust ratio on matrices, biases and norms left out", async (engine) => {
  const before = engine.memory();
  // The trust ratio comes from two f32 tree sums (relative error ~1e-6), so each step's update carries that
  // error too: still inside TOL at lr·eta·|w|/|d| of order 1e-2.
  const o = { lr: 3, momentum: 0.9, weightDecay: 1e-2, eta: 0.02 };
  for (const n of SIZES) {
    for (const shape of [[n, 1], [n]]) {
      const { w0, grads, after } = await run(engine, n, shape, (w) => lars([w], o), 200 + n + shape.length);
      const w = Float64Array.from(w0);
      const buf = new Float64Array(n);
      const adapt = shape.length > 1;
      for (let t = 0; t < STEPS; t++) {
        refLarsStep(w, grads[t], buf, { ...o, adapt });
        assertClose(after[t], w, TOL, `lars ${JSON.stringify(shape)} step ${t + 1}`);
      }
    }
  }
  // excludeBiasAndNorm: false adapts a 1-D parameter too; a zero parameter keeps the ratio at 1.
  for (
    const [w0, excludeBiasAndNorm] of [[randomArray(33, 1), false], [new Float32Array(33), true]] as const
  ) {
    using w = engine.tensor(w0, [33]);
    const g0 = randomArray(33, 2);
    using g = engine.tensor(g0, [33]);
    using opt = lars([w], { lr: 0.5, excludeBiasAndNorm });
    opt.step([g]);
    const ref = Float64Array.from(w0);
    refLarsStep(ref, g0, new Float64Array(33), {
      lr: 0.5,
      momentum: 0.9,
      weightDecay: 0,
      eta: 1e-3,
      adapt: true,
    });
    assertClose(await w.toArray(), ref, TOL, `lars excludeBiasAndNorm ${excludeBiasAndNorm}`);
  }
  assertNoLeak(engine, before);
});

test("emaUpdate matches the float64 reference; momentum 0 copies, momentum 1 keeps", async (engine) => {
  const before = engine.memory();
  for (const n of SIZES) {
    const t0 = randomArray(n, n);
    const s0 = randomArray(n, n + 1);
    using target = engine.tensor(t0, [n]);
    using online = engine.tensor(s0, [n]);
    emaUpdate([target], [online], { momentum: 0.99 });
    const ref = Float64Array.from(t0);
    refEma(ref, s0, 0.99);
    // One f32 multiply-add of two terms: a couple of ulp.
    assertClose(await target.toArray(), ref, { rtol: 1e-6, atol: 1e-7 }, `ema n=${n}`);
    emaUpdate([target], [online], { momentum: 0 });
    assertClose(await target.toArray(), s0, { rtol: 0, atol: 0 }, `ema momentum 0 n=${n}`);
    const kept = await target.toArray();
    emaUpdate([target], [online], { momentum: 1 });
    assertClose(await target.toArray(), kept, { rtol: 0, atol: 0 }, `ema momentum 1 n=${n}`);
  }
  assertNoLeak(engine, before);
});

test("clipGradNorm scales every gradient by one global factor on the GPU, as clip_grad_norm_", async (engine) => {
  const before = engine.memory();
  const shapes = [[7], [3, 5], [1009], [65_537]];
  const values = shapes.map((s, i) => randomArray(s.reduce((a, b) => a * b, 1), 40 + i));
  const norm = Math.sqrt(values.reduce((s, v) => s + v.reduce((t, x) => t + x * x, 0), 0));
  // The norm: an f32 tree sum of 66,558 squares, ~1e-6 relative; the scale and each product a rounding more.
  const tol = { rtol: 1e-5, atol: 1e-7 };
  for (const maxNorm of [0.5 * norm, 0]) {
    const grads = values.map((v, i) => engine.tensor(v, shapes[i]));
    const got = await take(clipGradNorm(grads, maxNorm));
    const ref = values.map((v) => Float64Array.from(v));
    const refNorm = refClipGradNorm(ref, maxNorm);
    assertClose(got, [refNorm], tol, `norm returned (maxNorm ${maxNorm})`);
    for (const [i, g] of grads.entries()) {
      assertClose(await take(g), ref[i], tol, `gradient ${i}, maxNorm ${maxNorm}`);
    }
  }
  // A NaN anywhere makes the norm NaN and, as torch's clamp keeps it, every gradient NaN.
  {
    const poisoned = [engine.tensor([1, NaN, 2], [3]), engine.tensor([3, 4], [2])];
    assert(Number.isNaN((await take(clipGradNorm(poisoned, 1)))[0]), "the norm of a NaN gradient");
    for (const g of poisoned) assert((await take(g)).every(Number.isNaN), "every gradient NaN");
  }
  // Under the bound the factor is exactly 1: the gradients come back bit for bit.
  const grads = values.map((v, i) => engine.tensor(v, shapes[i]));
  await take(clipGradNorm(grads, 2 * norm));
  for (const [i, g] of grads.entries()) {
    assertClose(await take(g), values[i], { rtol: 0, atol: 0 }, `unclipped ${i}`);
  }
  {
    using a = engine.zeros([3]);
    using ints = engine.zeros([3], "i32");
    await assertThrows(() => clipGradNorm([a], -1), RangeError, ["maxNorm"]);
    await assertThrows(() => clipGradNorm([], 1), RangeError, ["no gradients"]);
    await assertThrows(() => clipGradNorm([a, a], 1), Error, ["gradient 1 is gradient 0 again"]);
    await assertThrows(() => clipGradNorm([ints], 1), TypeError, ["i32"]);
  }
  assertNoLeak(engine, before);
});

test("optimisers train: adamw and lars fit a linear map through grad", async (engine) => {
  const before = engine.memory();
  {
    const [n, d, k] = [64, 16, 4];
    using x = engine.randn([n, d], { seed: 1 });
    using truth = engine.randn([d, k], { seed: 2 });
    using y = matmul(x, truth);
    for (
      const make of [
        (w: Tensor) => adamw([w], { lr: 0.05 }),
        (w: Tensor) => lars([w], { lr: 20, momentum: 0.5 }),
      ]
    ) {
      using w = engine.randn([d, k], { seed: 3 });
      using opt = make(w);
      const losses: number[] = [];
      for (let step = 0; step < 200; step++) {
        const [l, g] = engine.tidy(() => {
          const l = mse(matmul(x, w), y);
          return [l, grad(l, [w])[0]];
        });
        if (step % 199 === 0) losses.push((await take(l))[0]);
        else l.dispose();
        opt.step([g]);
        g.dispose();
      }
      // The loss starts near E[(x·(w − truth))²] = 2d = 32 and falls by orders of magnitude when the steps are right.
      assert(losses[1] < 1e-2 * losses[0], `${opt.op}: loss ${losses[0]} → ${losses[1]} after 200 steps`);
    }
  }
  assertNoLeak(engine, before);
});

test("optimisers reject bad input by name and leak nothing", async (engine) => {
  const before = engine.memory();
  {
    using w = engine.zeros([3, 4]);
    using b = engine.zeros([4]);
    using g = engine.zeros([4, 3]);
    using gi = engine.zeros([3, 4], "i32");
    using g34 = engine.zeros([3, 4]);
    using g4 = engine.zeros([4]);
    using opt = sgd([w, b], { lr: 0.1, momentum: 0.9 });
    await assertThrows(() => opt.step([g, b]), ShapeError, ["gradient 0", "[4, 3]", "[3, 4]"]);
    await assertThrows(() => opt.step([w]), RangeError, ["1 gradients for 2 parameters"]);
    await assertThrows(() => opt.step([gi, b]), TypeError, ["i32"]);
    await assertThrows(() => opt.step([w, b]), Error, ["gradient 0 is a parameter"]);
    assertEquals(opt.steps, 0, "a rejected step is not counted");
    await assertThrows(() => sgd([w, w], { lr: 1 }), Error, ["parameter 1 is parameter 0 again"]);
    await assertThrows(() => sgd([], { lr: 1 }), RangeError, ["no parameters"]);
    await assertThrows(() => sgd([w], { lr: -1 }), RangeError, ["lr", "-1"]);
    await assertThrows(() => sgd([w], { lr: NaN }), RangeError, ["lr", "NaN"]);
    await assertThrows(() => sgd([w], { lr: 1, nesterov: true }), RangeError, ["nesterov"]);
    await assertThrows(() => sgd([w], { lr: 1, dampening: 2 }), RangeError, ["dampening"]);
    await assertThrows(() => adam([w], { betas: [0.9, 1] }), RangeError, ["betas[1]", "[0, 1)"]);
    await assertThrows(() => adamw([w], { eps: -1 }), RangeError, ["eps"]);
    await assertThrows(() => lars([w], { lr: 1, eta: -1 }), RangeError, ["eta"]);
    await assertThrows(() => emaUpdate([w], [g], { momentum: 0.5 }), ShapeError, ["[4, 3]", "[3, 4]"]);
    await assertThrows(() => emaUpdate([w], [b], { momentum: 2 }), RangeError, ["momentum"]);
    opt.lr = -0.5;
    await assertThrows(() => opt.step([g34, g4]), RangeError, ["lr"]);
    opt.lr = 0.1;
    const gone = engine.zeros([3, 4]);
    gone.dispose();
    await assertThrows(() => opt.step([gone, b]), Error, ["used after dispose"]);
    opt.dispose();
    await assertThrows(() => opt.step([b, b]), Error, ["sgd: optimiser used after dispose"]);
    // Made inside a tidy, its state is gone after it: named, and the step neither counted nor marked w written.
    const tidied = engine.tidy(() => adam([w], {}));
    const version = w.version;
    await assertThrows(() => tidied.step([g34]), Error, ["adam", "state was disposed", "engine.tidy"]);
    assertEquals([tidied.steps, w.version], [0, version], "a refused step leaves steps and w as they were");
  }
  assertNoLeak(engine, before);
});

test("cosineSchedule: linear warm-up, a half cosine from base to final, final after", async () => {
  const o = { base: 0.3, final: 0.01, total: 110, warmup: 10, warmupStart: 0.1 };
  // Host arithmetic on a few float64 operations: equal to 1e-12.
  const tol = { rtol: 0, atol: 1e-12 };
  const at = (steps: number[]) => steps.map((s) => cosineSchedule(s, o));
  assertClose(at([0, 5, 10]), [0.1, 0.2, 0.3], tol, "warm-up from 0.1 to base");
  // Halfway through the cosine (step 60 of 10..110) the value is the mean of base and final.
  assertClose(at([60, 110, 500]), [(0.3 + 0.01) / 2, 0.01, 0.01], tol, "cosine to final, then final");
  const c = 0.01 + 0.5 * 0.29 * (1 + Math.cos(Math.PI * 0.25));
  assertClose(at([35]), [c], tol, "a quarter of the way");
  // BYOL's momentum rises: base 0.996, final 1, no warm-up.
  const tau = (s: number) => cosineSchedule(s, { base: 0.996, final: 1, total: 100 });
  assert(tau(0) === 0.996 && tau(50) > 0.997 && tau(50) < 0.999 && tau(100) === 1, "momentum 0.996 → 1");
  await assertThrows(() => cosineSchedule(-1, o), RangeError, ["step", "-1"]);
  await assertThrows(() => cosineSchedule(2.5, o), RangeError, ["step", "2.5"]);
  await assertThrows(() => cosineSchedule(0, { ...o, warmup: 200 }), RangeError, ["warmup", "200"]);
  await assertThrows(() => cosineSchedule(0, { ...o, base: NaN }), RangeError, ["base", "NaN"]);
});
