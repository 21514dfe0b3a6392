import { crossEntropy, grad, mul, normalize, ShapeError, sum } from "../src/mod.ts";
import type { Engine } from "../src/mod.ts";
import { refCrossEntropy, refCrossEntropyGrad, refNormalize, refNormalizeGrad } from "../src/ref/nn.ts";
import { test } from "./harness.ts";
import {
  assert,
  assertClose,
  assertNoLeak,
  assertThrows,
  finiteDifference,
  randomArray,
  rng,
  take,
} from "./util.ts";

const size = (shape: readonly number[]) => shape.reduce((a, b) => a * b, 1);

/** Integer labels in [0, classes). */
function labelsOf(rows: number, classes: number, seed: number): Int32Array {
  const r = rng(seed);
  return Int32Array.from({ length: rows }, () => Math.floor(r() * classes));
}

// normalize: the norm is an f32 tree sum of squares (relative error ≲ log2(n)·2^-24 ≈ 1e-6 at n = 1e5), then a
// sqrt and a division, each one rounding: rtol 1e-5 leaves headroom; atol for elements near zero.
const NORM_TOL = { rtol: 1e-5, atol: 1e-7 };

// [shape, axis]: size 1, primes, a non-multiple of the workgroup, rows over the loop cap (100,003 contiguous
// elements; 70,001 elements strided along axis 0).
const NORM_CASES: [number[], number][] = [
  [[1], 0],
  [[3, 5, 7], 0],
  [[3, 5, 7], 1],
  [[3, 5, 7], -1],
  [[13, 1], 1],
  [[1, 257], -1],
  [[2, 100_003], -1],
  [[70_001, 3], 0],
];

test("normalize matches the float64 reference on every axis, rows past the loop cap included", async (engine) => {
  const before = engine.memory();
  for (const [i, [shape, axis]] of NORM_CASES.entries()) {
    const x = randomArray(size(shape), i, -2, 2);
    using t = engine.tensor(x, shape);
    const a = axis < 0 ? axis + shape.length : axis;
    assertClose(
      await take(normalize(t, { axis })),
      refNormalize(x, shape, a, 1e-12),
      NORM_TOL,
      `${shape} axis ${axis}`,
    );
  }
  assertNoLeak(engine, before);
});

test("normalize clamps the norm at eps: zero rows stay zero, short rows are divided by eps", async (engine) => {
  const x = Float32Array.of(0, 0, 0, 0.1, -0.2, 0.05, 3, 4, 0);
  using t = engine.tensor(x, [3, 3]);
  assertClose(await take(normalize(t)), refNormalize(x, [3, 3], 1, 1e-12), NORM_TOL, "default eps");
  assertClose(
    await take(normalize(t, { eps: 0.5 })),
    [0, 0, 0, 0.2, -0.4, 0.1, 0.6, 0.8, 0],
    NORM_TOL,
    "eps 0.5",
  );
});

/** Rows of [4, 6] f32 with norms near 1.4, one row of norm 0.05 (below eps 0.3) and a zero row. */
function mixedRows(seed: number): Float32Array {
  const x = randomArray(24, seed);
  x.set([0.02, -0.03, 0.01, 0.02, -0.01, 0.02], 6);
  x.fill(0, 18);
  return x;
}

test("normalize's gradient matches the reference (both sides of the clamp) and finite differences", async (engine) => {
  const before = engine.memory();
  const eps = 0.3;
  for (
    const [shape, axis, x] of [[[4, 6], 1, mixedRows(1)], [[2, 100_003], 1, randomArray(200_006, 2)]] as const
  ) {
    const w = randomArray(x.length, 3);
    using tx = engine.tensor(x, shape);
    using tw = engine.tensor(w, shape);
    const y = normalize(tx, { axis, eps });
    const wy = mul(y, tw);
    const loss = sum(wy);
    const [gx] = grad(loss, [tx]);
    const expected = refNormalizeGrad(x, w, shape, axis, eps);
    // g − y·(g·y) cancels: the error is absolute, at the scale of the row's largest gradient, not relative.
    const scale = expected.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
    assertClose(await take(gx), expected, { rtol: 1e-4, atol: 1e-4 * scale }, `${shape}`);
    for (const t of [y, wy, loss]) t.dispose();
  }
  // Central differences (h = 1e-2) of Σ w·normalize(x) on the GPU: the f32 loss rounds at ~1e-6, which /2h is
  // ~1e-4, and the O(h²) truncation is ~1e-4 for norms near 1; rows below eps are linear, so exact.
  const x = mixedRows(4);
  const w = randomArray(24, 5);
  using tw = engine.tensor(w, [4, 6]);
  const f = async (v: Float32Array) => {
    using tv = engine.tensor(v, [4, 6]);
    const y = normalize(tv, { eps });
    const wy = mul(y, tw);
    y.dispose();
    const s = sum(wy);
    wy.dispose();
    return (await take(s))[0];
  };
  const idx = [0, 5, 7, 11, 13, 20];
  const fd = await finiteDifference(f, x, idx);
  const expected = refNormalizeGrad(x, w, [4, 6], 1, eps);
  assertClose(fd, idx.map((i) => expected[i]), { rtol: 1e-2, atol: 1e-3 }, "finite differences");
  assertNoLeak(engine, { tensors: before.tensors + 1, bytes: before.bytes + 96 });
});

// crossEntropy: logsumexp and exp are f32 (a few ulp each, times |x − lse| ≲ 20), the batch mean a tree sum:
// relative error ~2e-6 on the loss.
const CE_TOL = { rtol: 1e-5, atol: 1e-6 };

test("crossEntropy matches the float64 reference, C = 100,003 included", async (engine) => {
  const before = engine.memory();
  for (
    const [i, [rows, classes]] of [[1, 1], [1, 7], [5, 3], [13, 257], [64, 1000], [3, 100_003], [2053, 2]]
      .entries()
  ) {
    const logits = randomArray(rows * classes, i, -6, 6);
    const labels = labelsOf(rows, classes, i);
    using tl = engine.tensor(logits, [rows, classes]);
    using ty = engine.tensor(labels, [rows], "i32");
    const loss = crossEntropy(tl, ty);
    assert(loss.size === 1, `loss shape ${loss.shape}`);
    assertClose(
      await take(loss),
      [refCrossEntropy(logits, labels, classes)],
      CE_TOL,
      `[${rows}, ${classes}]`,
    );
  }
  assertNoLeak(engine, before);
});

/** grad of crossEntropy against the reference: p − onehot cancels near p = 1, so atol is set by the 1/rows scale. */
async function checkCrossEntropyGrad(
  engine: Engine,
  rows: number,
  classes: number,
  seed: number,
  sample?: number[],
) {
  const logits = randomArray(rows * classes, seed, -6, 6);
  const labels = labelsOf(rows, classes, seed);
  using tl = engine.tensor(logits, [rows, classes]);
  using ty = engine.tensor(labels, [rows], "i32");
  const loss = crossEntropy(tl, ty);
  const [g] = grad(loss, [tl]);
  loss.dispose();
  const got = await take(g);
  const expected = refCrossEntropyGrad(logits, labels, classes);
  const at = sample ?? expected.map((_, i) => i);
  // softmax is exp(x − lse) in f32: relative error ~2e-6; p − 1 on the label loses it to cancellation.
  assertClose(
    at.map((i) => got[i]),
    at.map((i) => expected[i]),
    { rtol: 1e-4, atol: 1e-5 / rows },
    `[${rows}, ${classes}]`,
  );
}

test("crossEntropy's gradient matches the reference and finite differences", async (engine) => {
  const before = engine.memory();
  for (const [i, [rows, classes]] of [[1, 1], [1, 7], [5, 3], [13, 257], [3, 100_003]].entries()) {
    await checkCrossEntropyGrad(engine, rows, classes, 10 + i);
  }
  const logits = randomArray(20, 1, -2, 2);
  using ty = engine.tensor(labelsOf(4, 5, 1), [4], "i32");
  const f = async (v: Float32Array) => {
    using tv = engine.tensor(v, [4, 5]);
    return (await take(crossEntropy(tv, ty)))[0];
  };
  const idx = [0, 3, 7, 12, 19];
  const fd = await finiteDifference(f, logits, idx);
  const expected = refCrossEntropyGrad(logits, await ty.toArray(), 5);
  // h = 1e-2: the f32 loss (~1.6) rounds at ~2e-7, /2h → 1e-5; the O(h²) truncation is ~1e-5 for gradients ~0.05.
  assertClose(fd, idx.map((i) => expected[i]), { rtol: 1e-2, atol: 2e-4 }, "finite differences");
  assertNoLeak(engine, { tensors: before.tensors + 1, bytes: before.bytes + 16 });
});

test("crossEntropy's backward over more than 65,535 workgroups", async (engine) => {
  // [168, 100,003] = 16.8M gradient elements = 65,627 workgroups of 256; spot-check across the whole grid.
  const n = 168 * 100_003;
  const sample = [0, 1, 255, 65_535 * 256 - 1, 65_535 * 256, 65_535 * 256 + 7, n - 1];
  for (let i = 0; i < 168; i += 17) sample.push(i * 100_003 + ((i * 7919) % 100_003));
  await checkCrossEntropyGrad(engine, 168, 100_003, 99, sample);
});

test("crossEntropy: a label outside [0, C) makes the loss and its gradient row NaN", async (engine) => {
  const before = engine.memory();
  const logits = randomArray(12, 1);
  for (const bad of [-1, 4]) {
    const labels = Int32Array.of(1, bad, 3);
    using tl = engine.tensor(logits, [3, 4]);
    using ty = engine.tensor(labels, [3], "i32");
    const loss = crossEntropy(tl, ty);
    const [g] = grad(loss, [tl]);
    const l = await take(loss);
    assert(Number.isNaN(l[0]), `label ${bad}: loss ${l[0]}`);
    assertClose(
      await take(g),
      refCrossEntropyGrad(logits, labels, 4),
      { rtol: 1e-4, atol: 1e-5 },
      `label ${bad}`,
    );
  }
  assertNoLeak(engine, before);
});

test("nn ops reject bad arguments with clear errors and leak nothing", async (engine) => {
  using x = engine.tensor(randomArray(6, 1), [2, 3]);
  using n = engine.tensor([1, 2, 3, 4, 5, 6], [2, 3], "i32");
  using labels = engine.tensor([0, 2], [2], "i32");
  using three = engine.tensor([0, 2, 1], [3], "i32");
  using f = engine.tensor([0, 2], [2]);
  using u = engine.tensor([0, 2], [2], "u32");
  using cube = engine.tensor(randomArray(12, 2), [2, 3, 2]);
  const gone = engine.tensor([1, 2], [2]);
  gone.dispose();
  const before = engine.memory();
  await assertThrows(() => normalize(n), TypeError, ["normalize", "i32"]);
  await assertThrows(() => normalize(x, { axis: 2 }), RangeError, ["axis 2", "rank 2"]);
  await assertThrows(() => normalize(x, { eps: -1 }), RangeError, ["eps"]);
  await assertThrows(() => normalize(x, { eps: NaN }), RangeError, ["eps"]);
  await assertThrows(() => normalize(gone), Error, ["used after dispose"]);
  await assertThrows(() => crossEntropy(x, f), TypeError, ["labels must be i32", "f32 [2]"]);
  await assertThrows(() => crossEntropy(x, u), TypeError, ["labels must be i32", "u32 [2]"]);
  await assertThrows(() => crossEntropy(n, labels), TypeError, ["crossEntropy", "i32 [2, 3]"]);
  await assertThrows(() => crossEntropy(x, three), ShapeError, ["[2, 3]", "[3]"]);
  await assertThrows(() => crossEntropy(cube, labels), ShapeError, ["[2, 3, 2]", "[2]"]);
  await assertThrows(() => crossEntropy(x, gone), Error, ["used after dispose"]);
  assertNoLeak(engine, before);
  // Logits over one binding would need windowed kernels: refused up front (an uninitialised tensor suffices).
  using huge = engine.empty([336, 100_003]);
  using hugeLabels = engine.zeros([336], "i32");
  const bigBefore = engine.memory();
  await assertThrows(() => crossEntropy(huge, hugeLabels), ShapeError, [
    "[336, 100003]",
    "maxStorageBufferBindingSize",
  ]);
  assertNoLeak(engine, bigBefore, "huge logits");
});

test("crossEntropy needs its labels alive until grad()", async (engine) => {
  const before = engine.memory();
  const tl = engine.tensor(randomArray(6, 1), [2, 3]);
  const ty = engine.tensor([0, 2], [2], "i32");
  const loss = crossEntropy(tl, ty);
  ty.dispose();
  await assertThrows(() => grad(loss, [tl]), Error, ["crossEntropy", "disposed before grad()"]);
  loss.dispose();
  tl.dispose();
  assertNoLeak(engine, before);
});
