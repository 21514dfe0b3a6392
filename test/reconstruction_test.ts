// Reconstruction losses against the float64 reference (src/ref/reconstruction.ts) and finite differences.
import {
  bceWithLogits,
  type Engine,
  exp,
  grad,
  huber,
  l1,
  maskedMSE,
  mse,
  mul,
  noGrad,
  type Reduction,
  ShapeError,
  smoothL1,
  ssim,
  ssimLoss,
  sum,
  type Tensor,
} from "../src/mod.ts";
import { type LossKind, refLoss, refMaskedMSE, refPatchify, refSSIM } from "../src/ref/reconstruction.ts";
import { bothKernels, test } from "./harness.ts";
import {
  assert,
  assertClose,
  assertNoLeak,
  assertThrows,
  finiteDifference,
  randomArray,
  take,
} from "./util.ts";

const LOSSES: Record<
  LossKind,
  (p: Tensor, t: Tensor, o: { reduction?: Reduction; weight?: Tensor }) => Tensor
> = {
  mse: (p, t, o) => mse(p, t, o),
  l1: (p, t, o) => l1(p, t, o),
  huber: (p, t, o) => huber(p, t, { ...o, delta: 0.7 }),
  smoothL1: (p, t, o) => smoothL1(p, t, { ...o, beta: 0.6 }),
  bceWithLogits: (p, t, o) => bceWithLogits(p, t, o),
};
const PARAM: Record<LossKind, number> = { mse: 1, l1: 1, huber: 0.7, smoothL1: 0.6, bceWithLogits: 1 };
const KINDS = Object.keys(LOSSES) as LossKind[];

/** Bound scaled to the data: f32 rounding of each element (≈ 6e-8 relative) plus the reduction's tree error. */
function scaledTol(expected: ArrayLike<number>, rtol: number): { rtol: number; atol: number } {
  let m = 0;
  for (let i = 0; i < expected.length; i++) m = Math.max(m, Math.abs(expected[i]));
  return { rtol, atol: rtol * m };
}

function inputs(kind: LossKind, n: number, seed: number): { x: Float32Array; y: Float32Array } {
  const x = randomArray(n, seed, -2, 2);
  // bce targets are probabilities; others compare against values near x so every branch of huber/smoothL1 is hit.
  const y = kind === "bceWithLogits" ? randomArray(n, seed + 1, 0, 1) : randomArray(n, seed + 1, -2, 2);
  return { x, y };
}

async function checkLoss(
  engine: Engine,
  kind: LossKind,
  shape: number[],
  targetShape: number[],
  reduction: Reduction,
  weightShape: number[] | null,
  seed: number,
): Promise<void> {
  const what = `${kind} ${JSON.stringify(shape)} target ${
    JSON.stringify(targetShape)
  } ${reduction} w ${weightShape}`;
  const size = shape.reduce((a, b) => a * b, 1);
  const { x } = inputs(kind, size, seed);
  const { y } = inputs(kind, targetShape.reduce((a, b) => a * b, 1), seed + 7);
  const wv = weightShape ? randomArray(weightShape.reduce((a, b) => a * b, 1), seed + 3, 0, 2) : undefined;
  const before = engine.memory();
  const pred = engine.tensor(x, shape);
  const target = engine.tensor(y, targetShape);
  const weight = wv ? engine.tensor(wv, weightShape!) : undefined;
  const refOptions = { reduction, param: PARAM[kind], weight: wv, weightShape: weightShape ?? [] };
  const ref = refLoss(kind, x, shape, y, targetShape, refOptions);
  const loss = LOSSES[kind](pred, target, { reduction, weight });
  // Per-element values: f32 rounding only (1e-6 relative to the largest); sums: tree sum in f32 (1e-5).
  assertClose(await loss.toArray(), ref.loss, scaledTol(ref.loss, reduction === "none" ? 1e-6 : 1e-5), what);
  // A target's gradient is pred's negated (bce: its own pass), f32 rounding only, unless the target is
  // broadcast: then it is summed over the broadcast dims in f32 (1e-5).
  const targetTol = targetShape.join() === shape.join() ? 1e-6 : 1e-5;
  if (reduction === "none") {
    // A scalar from the per-element loss by another loss: mse(L, 0) = mean(L²), so the upstream of element i
    // is 2L/N, through the backward pass that reads an upstream gradient per element.
    const zero = engine.zeros(shape);
    const total = mse(loss, zero);
    const [g, gt] = grad(total, [pred, target]);
    const upstream = ref.loss.map((l) => (2 * l) / size);
    const expected = refLoss(kind, x, shape, y, targetShape, { ...refOptions, upstream });
    assertClose(await take(g), expected.grad, scaledTol(expected.grad, 1e-5), `${what} grad`);
    const tol = scaledTol(expected.gradTarget, 1e-5);
    assertClose(await take(gt), expected.gradTarget, tol, `${what} target grad`);
    zero.dispose();
    total.dispose();
  } else {
    // Gradient from grad's seed: the one the forward wrote; then through mul(loss, 3): the backward pass.
    const [g, gt] = grad(loss, [pred, target]);
    assertClose(await take(g), ref.grad, scaledTol(ref.grad, 1e-6), `${what} fused grad`);
    const fusedTol = scaledTol(ref.gradTarget, targetTol);
    assertClose(await take(gt), ref.gradTarget, fusedTol, `${what} fused target grad`);
    const tripled = mul(loss, 3);
    const [g3, gt3] = grad(tripled, [pred, target]);
    const expected = ref.grad.map((v) => 3 * v);
    assertClose(await take(g3), expected, scaledTol(expected, 1e-6), `${what} backward pass`);
    const expectedTarget = ref.gradTarget.map((v) => 3 * v);
    const tol = scaledTol(expectedTarget, targetTol);
    assertClose(await take(gt3), expectedTarget, tol, `${what} backward pass, target`);
    tripled.dispose();
  }
  for (const t of [loss, pred, target, weight]) t?.dispose();
  assertNoLeak(engine, before, what);
}

test("reconstruction: every loss and reduction against the float64 reference", () =>
  // Sizes 1, a prime, and a prime past the 8192 elements a workgroup covers (several workgroups). bothKernels:
  // with cpuKernels each invocation takes its own run of vec4s, without it neighbouring invocations
  // neighbouring vec4s.
  bothKernels(async (engine) => {
    const shapes = [[1], [7], [3, 5, 7], [10007]];
    let seed = 1;
    for (const kind of KINDS) {
      for (const shape of shapes) {
        for (const reduction of ["mean", "sum", "none"] as Reduction[]) {
          await checkLoss(engine, kind, shape, shape, reduction, null, seed++);
        }
      }
    }
  }));

test("bceWithLogits keeps f32 precision for confident logits, as log1p and a split σ(x) − y give", async (engine) => {
  // Confident logits make the loss log1p(e^−|x|) alone (2e-9 at x = 20, y = 1), which log(1 + e) rounds to 0
  // below e = 6e-8, and the gradient σ(x) − 1 = −2e-9, which rounds to 0 the same way. Both must keep f32's
  // relative precision: rtol 1e-5 (exp's few ulp and the series' 2e-9); atol only under f32's smallest normal.
  const xs = [0.5, -0.5, 5, -5, 10, -10, 20, -20, 30, -30, 60, -60];
  const x = xs.flatMap((v) => [v, v, v]);
  const y = xs.flatMap(() => [0, 1, 0.3]);
  const before = engine.memory();
  {
    using pred = engine.tensor(x, [x.length]);
    using target = engine.tensor(y, [y.length]);
    const tol = { rtol: 1e-5, atol: 1e-37 };
    const ref = refLoss("bceWithLogits", x, [x.length], y, [y.length], { reduction: "sum" });
    const none = refLoss("bceWithLogits", x, [x.length], y, [y.length], { reduction: "none" });
    assertClose(await take(bceWithLogits(pred, target, { reduction: "none" })), none.loss, tol, "loss");
    const loss = bceWithLogits(pred, target, { reduction: "sum" });
    const [g] = grad(loss, [pred]);
    loss.dispose();
    assertClose(await take(g), ref.grad, tol, "gradient");
  }
  assertNoLeak(engine, before);
});

test("reconstruction: the padding past a tensor's last element never reaches the loss", async (engine) => {
  // The passes read whole vec4s. Buffers come from the pool: fill one with NaN and free it, so that the next
  // 5-element tensors (same 256-byte buffer) have NaN in the 3 padding lanes of their second vec4.
  for (const kind of KINDS) {
    for (let k = 0; k < 3; k++) engine.full([64], NaN).dispose();
    const { x, y } = inputs(kind, 5, 11);
    using pred = engine.tensor(x, [5]);
    using target = engine.tensor(y, [5]);
    for (const reduction of ["mean", "sum", "none"] as const) {
      const ref = refLoss(kind, x, [5], y, [5], { reduction, param: PARAM[kind] });
      const loss = LOSSES[kind](pred, target, { reduction });
      // "none" runs the loss and grad passes, the others the fused loss+gradient pass.
      const [g] = grad(reduction === "none" ? sum(loss) : loss, [pred]);
      // One f32 rounding per element and a 5-term sum: 1e-6 relative covers it.
      assertClose(await take(loss), ref.loss, { rtol: 1e-6, atol: 1e-7 }, `${kind} ${reduction} loss`);
      assertClose(await take(g), ref.grad, { rtol: 1e-6, atol: 1e-7 }, `${kind} ${reduction} grad`);
    }
  }
});

test("reconstruction: weights, and broadcast targets where PyTorch allows them", () =>
  bothKernels(async (engine) => {
    let seed = 100;
    for (const kind of KINDS) {
      await checkLoss(engine, kind, [4, 3, 5], [4, 3, 5], "mean", [4, 3, 5], seed++);
      await checkLoss(engine, kind, [3, 4099], [3, 4099], "sum", [3, 1], seed++);
      await checkLoss(engine, kind, [2, 31], [2, 31], "none", [31], seed++);
      if (kind !== "bceWithLogits") {
        await checkLoss(engine, kind, [4, 3, 5], [5], "mean", null, seed++);
        await checkLoss(engine, kind, [6, 7], [6, 1], "sum", [1, 7], seed++);
      }
    }
  }));

test("reconstruction: a weighted mean is Σ w·ℓ / Σ w for mse and l1, Σ w·ℓ / N for huber and bce, as torch's", async (engine) => {
  const x = [0.5, -1, 2, 0.25, 1.5, -0.75];
  const y = [0, 0.2, 1, -1, 2, 0.5];
  const w = [0.5, 2, 0, 1, 3, 0.25];
  using tx = engine.tensor(x, [2, 3]);
  using ty = engine.tensor(y, [2, 3]);
  using tw = engine.tensor(w, [2, 3]);
  using row = engine.tensor(w.slice(0, 3), [3]); // broadcast over the 2 rows: Σ w counts each twice
  const before = engine.memory();
  const weighted = (f: (d: number) => number, over: number[], weights: number[]) =>
    over.reduce((s, _, i) => s + weights[i] * f(x[i] - y[i]), 0);
  const rowWeights = [...w.slice(0, 3), ...w.slice(0, 3)];
  const sumOf = (v: number[]) => v.reduce((a, b) => a + b, 0);
  const cases: [string, Tensor, number[], number][] = [
    ["mse", tw, w, weighted((d) => d * d, x, w) / sumOf(w)],
    ["l1", tw, w, weighted(Math.abs, x, w) / sumOf(w)],
    ["mse, broadcast weight", row, rowWeights, weighted((d) => d * d, x, rowWeights) / sumOf(rowWeights)],
    ["huber", tw, w, weighted((d) => Math.abs(d) <= 1 ? d * d / 2 : Math.abs(d) - 0.5, x, w) / 6],
  ];
  for (const [what, weight, weights, expected] of cases) {
    const f = what.startsWith("mse") ? mse : what === "l1" ? l1 : huber;
    const loss = f(tx, ty, { weight });
    const [g] = grad(loss, [tx]);
    // A sum of 6 f32 terms: ~1e-7 relative.
    assertClose(await take(loss), [expected], { rtol: 1e-6, atol: 0 }, what);
    if (what === "mse") {
      const dx = x.map((v, i) => (2 * (v - y[i]) * weights[i]) / sumOf(weights));
      assertClose(await take(g), dx, { rtol: 1e-6, atol: 1e-7 }, `${what} gradient`);
    } else g.dispose();
  }
  // A weight of null is none, as torch's None (it threw "Cannot read properties of null").
  for (const f of [mse, l1, huber, smoothL1, bceWithLogits]) {
    const none = f(tx, ty);
    assertClose(
      await take(f(tx, ty, { weight: null })),
      await take(none),
      { rtol: 0, atol: 0 },
      `${f.name} null`,
    );
  }
  assertNoLeak(engine, before);
});

test("reconstruction: gradients match central finite differences", async (engine) => {
  const n = 11;
  for (const kind of KINDS) {
    const { x, y } = inputs(kind, n, 500);
    const target = engine.tensor(y, [n]);
    const w = engine.tensor(randomArray(n, 501, 0.5, 1.5), [n]);
    const lossOf = async (v: Float32Array) => {
      const p = engine.tensor(v, [n]);
      const l = noGrad(() => LOSSES[kind](p, target, { weight: w, reduction: "sum" }));
      const r = (await take(l))[0];
      p.dispose();
      return r;
    };
    const pred = engine.tensor(x, [n]);
    const loss = LOSSES[kind](pred, target, { weight: w, reduction: "sum" });
    const [g] = grad(loss, [pred]);
    const analytic = await take(g);
    // Skip points within 2h of a kink (|d| = 0, delta, beta), where a central difference straddles it.
    const h = 1e-2;
    const smooth = [...x.keys()].filter((i) => {
      const d = Math.abs(x[i] - y[i]);
      return kind === "mse" || kind === "bceWithLogits" || (d > 2 * h && Math.abs(d - PARAM[kind]) > 2 * h);
    });
    assert(smooth.length >= 5, `${kind}: too few smooth points`);
    const fd = await finiteDifference(lossOf, x, smooth, h);
    // f32 loss sums of ~11 terms of size ~1: rounding 1e-6 over 2h = 2e-2 gives ~1e-4, plus O(h²) curvature
    // (bce: |ℓ'''| ≤ 0.1, so 0.1·h²/6 ≈ 2e-6).
    assertClose(smooth.map((i) => analytic[i]), fd, { rtol: 1e-3, atol: 5e-4 }, `${kind} finite differences`);
    for (const t of [loss, pred, target, w]) t.dispose();
  }
});

test("reconstruction: a NaN difference makes the loss and its element's gradient NaN, the others as they were", async (engine) => {
  // sign(NaN) is 0 and NaN fails every comparison: l1, huber and smoothL1 gave that element a gradient of 0.
  const x = [0.3, NaN, -0.7, 2];
  using pred = engine.tensor(x, [4]);
  using target = engine.zeros([4]);
  for (const kind of KINDS) {
    const [loss, g] = await Promise.all(
      engine.tidy(() => {
        const loss = LOSSES[kind](pred, target, { reduction: "sum" });
        return [loss, ...grad(loss, [pred])];
      }).map(take),
    );
    assert(Number.isNaN(loss[0]), `${kind}: loss ${loss[0]}`);
    assert(Number.isNaN(g[1]), `${kind}: the NaN element's gradient ${g[1]}`);
    assert([0, 2, 3].every((i) => Number.isFinite(g[i])), `${kind}: the others' gradients ${g}`);
  }
});

test("reconstruction: target gradients match central finite differences, a broadcast target too", async (engine) => {
  const shape = [3, 5];
  for (const kind of KINDS) {
    // bce takes a target of the logits' shape; the others one broadcast over pred's rows.
    const targetShape = kind === "bceWithLogits" ? shape : [5];
    const { x } = inputs(kind, 15, 510);
    const { y } = inputs(kind, targetShape.reduce((a, b) => a * b, 1), 511);
    const pred = engine.tensor(x, shape);
    const w = engine.tensor(randomArray(15, 512, 0.5, 1.5), shape);
    const lossOf = async (v: Float32Array) => {
      const t = engine.tensor(v, targetShape);
      const l = noGrad(() => LOSSES[kind](pred, t, { weight: w, reduction: "sum" }));
      const r = (await take(l))[0];
      t.dispose();
      return r;
    };
    const target = engine.tensor(y, targetShape);
    const loss = LOSSES[kind](pred, target, { weight: w, reduction: "sum" });
    const [gt] = grad(loss, [target]);
    const analytic = await take(gt);
    // Skip targets within 2h of a kink (|d| = 0, delta, beta) of a difference d = pred[r, j] − target[j].
    const h = 1e-2;
    const nearKink = (d: number) => d < 2 * h || Math.abs(d - PARAM[kind]) < 2 * h;
    const smooth = [...y.keys()].filter((j) =>
      kind === "mse" || kind === "bceWithLogits" ||
      [0, 1, 2].every((r) => !nearKink(Math.abs(x[r * 5 + j] - y[j])))
    );
    assert(smooth.length >= 3, `${kind}: too few smooth points`);
    const fd = await finiteDifference(lossOf, y, smooth, h);
    // As for pred: f32 sums of ~15 terms of size ~1 give ~1e-4 over 2h; bce is linear in the target (exact).
    assertClose(smooth.map((j) => analytic[j]), fd, { rtol: 1e-3, atol: 5e-4 }, `${kind} target fd`);
    for (const t of [loss, pred, target, w]) t.dispose();
  }
});

test("reconstruction: 64-million-element mse matches float64 within 1e-5 relative", async (engine) => {
  // 256 MiB per tensor: over maxStorageBufferBindingSize, so the op runs in two windows per input and
  // sums by trees of fan-in 32 (measured error 4e-8; a serial f32 sum is off by 18% here).
  const n = 64 * 1024 * 1024;
  const before = engine.memory();
  // Weyl sequences: equidistributed in [0, 1) and far cheaper to make than 2·64 Mi calls of rng().
  const x = new Float32Array(n);
  const y = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    x[i] = (i * 0.6180339887498949) % 1;
    y[i] = (i * 0.7548776662466927 + 0.5) % 1;
  }
  let ref = 0;
  for (let i = 0; i < n; i++) ref += (x[i] - y[i]) ** 2;
  ref /= n;
  const pred = engine.tensor(x, [64, 1024, 1024]);
  const target = engine.tensor(y, [64, 1024, 1024]);
  const got = (await take(noGrad(() => mse(pred, target))))[0];
  assertClose([got], [ref], { rtol: 1e-5, atol: 0 }, "64M mse");
  pred.dispose();
  target.dispose();
  assertNoLeak(engine, before, "64M mse");
});

async function checkMasked(
  engine: Engine,
  shape: number[],
  patch: number,
  normPix: boolean,
  patchified: boolean,
  maskDtype: "f32" | "u32",
  seed: number,
  values = { offset: 0, spread: 1, rtol: 1e-5 },
): Promise<void> {
  const [n, c, h, w] = shape;
  const what = `maskedMSE ${
    JSON.stringify(shape)
  } p${patch} normPix ${normPix} patchified ${patchified} ${maskDtype} target ${values.offset} + ${values.spread}·u`;
  const size = n * c * h * w;
  const perImage = (h / patch) * (w / patch);
  const img = randomArray(size, seed, 0, 1);
  const tv = randomArray(size, seed + 1, values.offset, values.offset + values.spread);
  const pv = patchified ? Float32Array.from(refPatchify(img, n, c, h, w, patch)) : img;
  const mv = Array.from(randomArray(n * perImage, seed + 2, 0, 1), (u) => (u < 0.75 ? 1 : 0));
  mv[0] = 1;
  const before = engine.memory();
  const pred = engine.tensor(pv, patchified ? [n, perImage, patch * patch * c] : shape);
  const target = engine.tensor(tv, shape);
  const mask = engine.tensor(maskDtype === "u32" ? Uint32Array.from(mv) : mv, [n, perImage], maskDtype);
  const ref = refMaskedMSE(pv, patchified, tv, shape, mv, patch, normPix);
  const loss = maskedMSE(pred, target, mask, { patch, normPix });
  // Patch sums of ≤ 768 terms and a tree over patches in f32: 1e-5 relative for targets in [0, 1].
  const rtol = values.rtol;
  assertClose(await loss.toArray(), [ref.loss], { rtol, atol: 0 }, what);
  const forward = noGrad(() => maskedMSE(pred, target, mask, { patch, normPix }));
  assertClose(await take(forward), [ref.loss], { rtol, atol: 0 }, `${what} without grad`);
  const [g] = grad(loss, [pred]);
  assertClose(await take(g), ref.grad, scaledTol(ref.grad, rtol), `${what} fused grad`);
  const half = mul(loss, 0.5);
  const [gh] = grad(half, [pred]);
  const expected = ref.grad.map((v) => v / 2);
  assertClose(await take(gh), expected, scaledTol(expected, rtol), `${what} backward pass`);
  for (const t of [half, loss, pred, target, mask]) t.dispose();
  assertNoLeak(engine, before, what);
}

test("maskedMSE: against MAE's loss written with an explicit patchify", () =>
  // Patches that are multiples of 4 take the one-patch-per-invocation entries with cpuKernels (patchified pred
  // read element by element for C > 1, as vec4s for C = 1), the workgroup-per-patch ones without; bothKernels
  // runs both.
  bothKernels(async (engine) => {
    let seed = 900;
    for (const normPix of [false, true]) {
      for (const patchified of [false, true]) {
        await checkMasked(engine, [2, 3, 32, 48], 16, normPix, patchified, "f32", seed++);
        await checkMasked(engine, [3, 1, 8, 12], 4, normPix, patchified, "u32", seed++);
        await checkMasked(engine, [3, 1, 10, 15], 5, normPix, patchified, "u32", seed++);
        await checkMasked(engine, [1, 2, 7, 7], 7, normPix, patchified, "f32", seed++);
      }
    }
  }));

test("maskedMSE: normPix stays accurate for targets far from zero", () =>
  // Targets 3 + 0.05·u: σ ≈ 0.014 against a mean of 3, where Σ t² − (Σ t)² / K in f32 loses the variance to
  // cancellation (~4% here). Each element's t − mean in f32 is off by ~ulp(3) / σ ≈ 2e-5 of its size: 1e-4.
  bothKernels(async (engine) => {
    const values = { offset: 3, spread: 0.05, rtol: 1e-4 };
    await checkMasked(engine, [2, 3, 32, 48], 16, true, false, "f32", 950, values);
    await checkMasked(engine, [2, 1, 8, 12], 4, true, true, "f32", 951, values);
  }));

test("maskedMSE: small patches of many channels stay under the loop cap (normPix walks the patch twice)", () =>
  // With cpuKernels a patch of 4 or 8 took the one-patch-per-invocation entries whatever C was; with normPix
  // [1, 2240, 4, 4] and [1, 960, 8, 8] passed llvmpipe's 65,535 loop passes there and came out 5% to 93% off,
  // silently. Such patches now go to the workgroup entries.
  bothKernels(async (engine) => {
    await checkMasked(engine, [1, 2240, 4, 4], 4, true, false, "f32", 960);
    await checkMasked(engine, [1, 960, 8, 8], 8, true, true, "f32", 961);
  }));

test("maskedMSE: more than 65,535 patches (workgroups laid over x and y)", async (engine) => {
  await checkMasked(engine, [2, 1, 512, 512], 2, true, false, "f32", 77);
});

test("maskedMSE: gradient matches central finite differences", async (engine) => {
  const shape = [1, 2, 4, 4];
  const x = randomArray(32, 40, 0, 1);
  const target = engine.tensor(randomArray(32, 41, 0, 1), shape);
  const mask = engine.tensor([1, 0, 1, 1], [1, 4]);
  const lossOf = async (v: Float32Array) => {
    const p = engine.tensor(v, shape);
    const r = (await take(noGrad(() => maskedMSE(p, target, mask, { patch: 2, normPix: true }))))[0];
    p.dispose();
    return r;
  };
  const pred = engine.tensor(x, shape);
  const loss = maskedMSE(pred, target, mask, { patch: 2, normPix: true });
  const [g] = grad(loss, [pred]);
  const all = [...x.keys()];
  // Quadratic in pred, so the central difference is exact up to f32 rounding of the loss (~1e-7 / 2h).
  assertClose(
    await take(g),
    await finiteDifference(lossOf, x, all),
    { rtol: 1e-3, atol: 1e-4 },
    "maskedMSE fd",
  );
  for (const t of [loss, pred, target, mask]) t.dispose();
});

test("ssim: value and gradient against the float64 reference and finite differences", async (engine) => {
  for (
    const [shape, window, sigma] of [
      [[2, 3, 16, 19], 11, 1.5],
      [[1, 1, 7, 5], 3, 0.8],
      [[1, 2, 1, 1], 1, 1],
      [[1, 2, 37, 41], 7, 1.2],
    ] as const
  ) {
    const size = shape.reduce((a: number, b: number) => a * b, 1);
    const xv = randomArray(size, 60, 0, 1);
    const yv = xv.map((v, i) => Math.min(1, Math.max(0, v + 0.2 * (randomArray(size, 61)[i]))));
    const before = engine.memory();
    const x = engine.tensor(xv, [...shape]);
    const y = engine.tensor(yv, [...shape]);
    const ref = refSSIM(xv, yv, shape, window, sigma);
    const s = ssim(x, y, { window, sigma });
    // Window sums of ≤ 121 f32 terms and σ² = E[x²] − μ² in f32: ~1e-5 relative on S, ~1e-4 on the gradient.
    assertClose(await s.toArray(), [ref.ssim], { rtol: 1e-5, atol: 1e-6 }, `ssim ${shape}`);
    const [g, gy] = grad(s, [x, y]);
    assertClose(await take(g), ref.grad, scaledTol(ref.grad, 1e-4), `ssim grad ${shape}`);
    assertClose(await take(gy), ref.gradY, scaledTol(ref.gradY, 1e-4), `ssim grad y ${shape}`);
    const l = ssimLoss(x, y, { window, sigma });
    assertClose(await l.toArray(), [1 - ref.ssim], { rtol: 1e-5, atol: 1e-6 }, `ssimLoss ${shape}`);
    const [gl, gly] = grad(l, [x, y]);
    const negated = ref.grad.map((v) => -v);
    assertClose(await take(gl), negated, scaledTol(negated, 1e-4), `ssimLoss grad ${shape}`);
    const negatedY = ref.gradY.map((v) => -v);
    assertClose(await take(gly), negatedY, scaledTol(negatedY, 1e-4), `ssimLoss grad y ${shape}`);
    for (const t of [s, l, x, y]) t.dispose();
    assertNoLeak(engine, before, `ssim ${shape}`);
  }
  const shape = [1, 1, 6, 6];
  const xv = randomArray(36, 62, 0, 1);
  const yv = randomArray(36, 63, 0, 1);
  const y = engine.tensor(yv, shape);
  const x = engine.tensor(xv, shape);
  const s = ssim(x, y, { window: 3 });
  const [g, gy] = grad(s, [x, y]);
  const ssimOf = (wrtY: boolean) => async (v: Float32Array) => {
    const p = engine.tensor(v, shape);
    const r = (await take(noGrad(() => wrtY ? ssim(x, p, { window: 3 }) : ssim(p, y, { window: 3 }))))[0];
    p.dispose();
    return r;
  };
  const indices = [0, 7, 14, 21, 35];
  const analytic = await take(g);
  const analyticY = await take(gy);
  // SSIM ~0.1 in f32 (1e-8 rounding) over 2h = 2e-3, plus curvature O(h²): 1e-3 relative, 2e-4 absolute.
  const fd = await finiteDifference(ssimOf(false), xv, indices, 1e-3);
  assertClose(indices.map((i) => analytic[i]), fd, { rtol: 1e-2, atol: 2e-4 }, "ssim fd");
  const fdY = await finiteDifference(ssimOf(true), yv, indices, 1e-3);
  assertClose(indices.map((i) => analyticY[i]), fdY, { rtol: 1e-2, atol: 2e-4 }, "ssim fd y");
  for (const t of [s, x, y]) t.dispose();
});

test("ssim: planes split over dispatches where the window sums pass one binding", async (engine) => {
  // 3×64 planes and a 3×3 window: the row sums take 3·62 vec4s a plane, so 46,200 planes need 131 MiB, over
  // the 128 MiB binding: two dispatches. Seven random planes repeat, so the mean is theirs and each plane's
  // gradient is its pattern's, scaled by 7 / 46,200.
  const [distinct, planes, h, w] = [7, 46200, 3, 64];
  const shape = [planes / 3, 3, h, w];
  const xs = randomArray(distinct * h * w, 70, 0, 1);
  const noise = randomArray(xs.length, 71);
  const ys = xs.map((v, i) => Math.min(1, Math.max(0, v + 0.2 * noise[i])));
  const ref = refSSIM(xs, ys, [distinct, 1, h, w], 3, 1.5);
  const size = planes * h * w;
  const tile = (a: ArrayLike<number>, scale: number) =>
    Float32Array.from({ length: size }, (_, i) => scale * a[i % a.length]);
  const before = engine.memory();
  const x = engine.tensor(tile(xs, 1), shape);
  const y = engine.tensor(tile(ys, 1), shape);
  const s = ssim(x, y, { window: 3 });
  // The mean of 2.3 million outputs by a tree in f32: 1e-5 relative.
  assertClose(await s.toArray(), [ref.ssim], { rtol: 1e-5, atol: 1e-6 }, "ssim over two dispatches");
  const [gx, gy] = grad(s, [x, y]);
  const expectedX = tile(ref.grad, distinct / planes);
  assertClose(await take(gx), expectedX, scaledTol(expectedX, 1e-4), "ssim grad over two dispatches");
  const expectedY = tile(ref.gradY, distinct / planes);
  assertClose(await take(gy), expectedY, scaledTol(expectedY, 1e-4), "ssim grad y over two dispatches");
  for (const t of [s, x, y]) t.dispose();
  assertNoLeak(engine, before, "ssim over two dispatches");
});

test("reconstruction: a loss disposed without grad frees what its forward kept; noGrad keeps nothing", async (engine) => {
  const before = engine.memory();
  const p = engine.tensor(randomArray(100, 1), [10, 10]);
  const t = engine.tensor(randomArray(100, 2), [10, 10]);
  const m = engine.tensor(new Float32Array(4).fill(1), [1, 4]);
  const img = [1, 1, 10, 10];
  const pi = engine.tensor(randomArray(100, 3), img);
  const ti = engine.tensor(randomArray(100, 4), img);
  const mid = engine.memory();
  for (const loss of [mse(p, t), maskedMSE(pi, ti, m, { patch: 5 }), ssim(pi, ti, { window: 3 })]) {
    await loss.toArray();
    loss.dispose();
  }
  // From grad's seed the backward hands over the gradient the forward wrote: no tensor is added (a backward
  // pass would allocate one while the kept one stays live).
  const fused = mse(p, t);
  const live = engine.memory().tensors;
  const [fg] = grad(fused, [p]);
  assert(engine.memory().tensors === live, `fused backward: ${engine.memory().tensors - live} extra tensors`);
  fg.dispose();
  fused.dispose();
  // tidy disposes the gradient the forward kept: the backward then runs its own pass.
  const tidied = engine.tidy(() => mse(p, t, { reduction: "sum" }));
  const [g] = grad(tidied, [p]);
  const ref = refLoss("mse", await p.toArray(), [10, 10], await t.toArray(), [10, 10], { reduction: "sum" });
  assertClose(await take(g), ref.grad, scaledTol(ref.grad, 1e-6), "grad after tidy");
  tidied.dispose();
  const unrecorded = noGrad(() => [mse(p, t), ssim(pi, ti, { window: 3 })]);
  assert(engine.memory().tensors === mid.tensors + 2, "under noGrad only the two losses are live");
  unrecorded.forEach((l) => l.dispose());
  for (const x of [p, t, m, pi, ti]) x.dispose();
  assertNoLeak(engine, before, "no saved tensors left");
});

test("reconstruction: partial sums over one binding are refused before anything is allocated", () =>
  bothKernels(async (engine) => {
    // 64 KiB bindings: 600,000 elements (windowed) leave 75,776 bytes of partial sums (one per 32 elements,
    // in whole workgroups).
    using pred = engine.zeros([600_000]);
    using target = engine.zeros([600_000]);
    const before = engine.memory();
    for (const [name, loss] of [["mse", mse], ["bceWithLogits", bceWithLogits]] as const) {
      await assertThrows(() => loss(pred, target), ShapeError, [name, "partial sums", "65536"]);
    }
    {
      // maskedMSE binds its images whole: 110,592 bytes are refused before the mask is summed.
      using images = engine.zeros([1, 3, 96, 96]);
      using mask = engine.ones([1, 36]);
      const withImages = engine.memory();
      await assertThrows(() => maskedMSE(images, images, mask, { patch: 16 }), ShapeError, [
        "maskedMSE",
        "110592",
      ]);
      assertNoLeak(engine, withImages, "maskedMSE");
    }
    assertNoLeak(engine, before);
  }, { maxStorageBufferBindingSize: 2 ** 16 }));

test("reconstruction: bad input throws a clear error and leaks nothing", async (engine) => {
  const a = engine.tensor(randomArray(12, 1), [3, 4]);
  const b = engine.tensor(randomArray(15, 2), [3, 5]);
  const c = engine.tensor(randomArray(4, 3), [4]);
  const img = engine.tensor(randomArray(2 * 3 * 8 * 8, 4), [2, 3, 8, 8]);
  const mask = engine.tensor(new Float32Array(8), [2, 4]);
  const before = engine.memory();
  await assertThrows(() => mse(a, b), ShapeError, ["[3, 4]", "[3, 5]"]);
  await assertThrows(() => l1(c, a), ShapeError, ["[3, 4]", "[4]"]);
  await assertThrows(() => huber(a, a, { weight: b }), ShapeError, ["weight [3, 5]", "[3, 4]"]);
  await assertThrows(() => bceWithLogits(a, c), ShapeError, ["[4]", "[3, 4]"]);
  await assertThrows(() => huber(a, a, { delta: 0 }), RangeError, ["delta"]);
  await assertThrows(() => smoothL1(a, a, { beta: -1 }), RangeError, ["beta"]);
  await assertThrows(() => mse(a, a, { reduction: "avg" as Reduction }), RangeError, ["reduction"]);
  await assertThrows(() => maskedMSE(img, img, mask, { patch: 3 }), ShapeError, ["[2, 3, 8, 8]", "3×3"]);
  await assertThrows(() => maskedMSE(img, img, c, { patch: 4 }), ShapeError, ["mask [4]", "[2, 4]"]);
  await assertThrows(() => maskedMSE(a, img, mask, { patch: 4 }), ShapeError, ["pred [3, 4]", "[2, 4, 48]"]);
  await assertThrows(() => maskedMSE(img, img, mask, { patch: 0 }), RangeError, ["patch"]);
  {
    const gone = engine.zeros([2, 4]);
    gone.dispose();
    await assertThrows(() => maskedMSE(img, img, gone, { patch: 4 }), Error, ["maskedMSE", "after dispose"]);
  }
  await assertThrows(() => ssim(img, a), ShapeError, ["[2, 3, 8, 8]", "[3, 4]"]);
  // A broadcast target or weight is read through per-dim strides: at most 8 dims (thrown before allocating).
  {
    using deep = engine.zeros([2, 3, 2, 3, 2, 3, 2, 3, 2]);
    using deepTarget = engine.zeros([1, 3, 1, 3, 1, 3, 1, 3, 1]);
    await assertThrows(() => mse(deep, deepTarget), ShapeError, ["[2, 3, 2, 3", "target [1, 3, 1", "9 dims"]);
    await assertThrows(() => l1(deep, deep, { weight: deepTarget, reduction: "none" }), ShapeError, [
      "weight [1, 3, 1",
      "9 dims",
    ]);
  }
  await assertThrows(() => ssim(img, img), ShapeError, ["11×11"]);
  await assertThrows(() => ssim(img, img, { window: 4 }), RangeError, ["odd"]);
  await assertThrows(() => ssim(img, img, { window: 65 }), RangeError, ["63"]);
  // Over the 128 MiB binding: one plane's window sums (4·H·Wo floats), and images bound whole.
  for (const shape of [[1, 1, 3000, 3000], [40, 1, 1024, 1024]]) {
    const huge = engine.zeros(shape);
    await assertThrows(() => ssim(huge, huge), ShapeError, [
      `[${shape.join(", ")}]`,
      "maxStorageBufferBindingSize",
    ]);
    huge.dispose();
  }
  assertNoLeak(engine, before, "failed ops");
  a.dispose();
  await assertThrows(() => mse(a, a), Error, ["used after dispose"]);
  for (const t of [b, c, img, mask]) t.dispose();
});

test("a grad() that throws past a fused loss frees the gradient its forward wrote", async (engine) => {
  // The loss hands grad() the gradient it wrote in its forward; it leaked, one per failed grad(), when a later
  // backward (exp's, whose output was disposed) threw.
  const shape = [2, 3, 4, 4];
  using x = engine.randn(shape, { seed: 1 });
  using t = engine.rand(shape, { seed: 2 });
  using mask = engine.tensor([1, 0, 1, 1, 0, 0, 1, 0], [2, 4]);
  const losses: [string, (p: Tensor) => Tensor][] = [
    ["mse", (p) => mse(p, t)],
    ["l1", (p) => l1(p, t)],
    ["huber", (p) => huber(p, t)],
    ["smoothL1", (p) => smoothL1(p, t)],
    ["bceWithLogits", (p) => bceWithLogits(p, t)],
    ["maskedMSE", (p) => maskedMSE(p, t, mask, { patch: 2 })],
  ];
  for (const [name, loss] of losses) {
    const before = engine.memory();
    const [pred, l] = engine.tidy(() => {
      const pred = exp(x);
      return [pred, loss(pred)];
    });
    pred.dispose();
    await assertThrows(() => grad(l, [x]), Error, ["exp", "disposed"]);
    l.dispose();
    assertNoLeak(engine, before, name);
  }
});
