import {
  attention,
  crossEntropy,
  type CrossEntropyOptions,
  grad,
  maskedTokenTask,
  mul,
  normalize,
  type Reduction,
  reshape,
  ShapeError,
  sum,
} from "../src/mod.ts";
import type { Engine, Tensor } from "../src/mod.ts";
import {
  refAttention,
  refCrossEntropy,
  refCrossEntropyGrad,
  refNormalize,
  refNormalizeGrad,
} from "../src/ref/nn.ts";
import { bothKernels, test } from "./harness.ts";
import {
  assert,
  assertClose,
  assertCloseScaled,
  assertFiniteDifferences,
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

test("normalize that fails inside (a row norm over one binding) frees what it made", () =>
  bothKernels(async (engine) => {
    // 64 KiB bindings: x [20000, 4] is windowed, but its norms [20000, 1] take 80,000 bytes. The squares leaked.
    using x = engine.zeros([20_000, 4]);
    const before = engine.memory();
    await assertThrows(() => normalize(x), ShapeError, ["sum", "65536"]);
    assertNoLeak(engine, before);
  }, { maxStorageBufferBindingSize: 2 ** 16 }));

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
    assertClose(await take(loss), refCrossEntropy(logits, labels, classes), CE_TOL, `[${rows}, ${classes}]`);
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

test("crossEntropy keeps f32 precision at logits near ±3e4", async (engine) => {
  const before = engine.memory();
  const [rows, classes] = [9, 13];
  // Rounded to f32, lse ≈ 3e4 would be off by up to 2e-3 in every row's loss (ulp(3e4) / 2); taken as
  // (max − logit) + log Σ exp(x − max), the loss keeps CE_TOL and the gradient (softmax through the same split
  // logsumexp) the tolerance of checkCrossEntropyGrad.
  const logits = randomArray(rows * classes, 5, -6, 6).map((u, i) =>
    u + (Math.floor(i / classes) % 2 ? 3e4 : -3e4)
  );
  const labels = labelsOf(rows, classes, 5);
  {
    using tl = engine.tensor(logits, [rows, classes]);
    using ty = engine.tensor(labels, [rows], "i32");
    const none = { reduction: "none" } as const;
    const expected = refCrossEntropy(logits, labels, classes, none);
    assertClose(await take(crossEntropy(tl, ty, none)), expected, CE_TOL, "per-row losses");
    const loss = crossEntropy(tl, ty, { reduction: "sum" });
    const [g] = grad(loss, [tl]);
    loss.dispose();
    const tol = { rtol: 1e-4, atol: 1e-5 };
    assertClose(
      await take(g),
      refCrossEntropyGrad(logits, labels, classes, 1, { reduction: "sum" }),
      tol,
      "grad",
    );
  }
  assertNoLeak(engine, before);
});

test("crossEntropy's backward over more than 65,535 workgroups", async (engine) => {
  // [168, 100,003] = 16.8M gradient elements = 65,627 workgroups of 256; spot-check across the whole grid.
  const n = 168 * 100_003;
  const sample = [0, 1, 255, 65_535 * 256 - 1, 65_535 * 256, 65_535 * 256 + 7, n - 1];
  for (let i = 0; i < 168; i += 17) sample.push(i * 100_003 + ((i * 7919) % 100_003));
  await checkCrossEntropyGrad(engine, 168, 100_003, 99, sample);
});

test("crossEntropy: a label outside [0, C) throws at the next readback, its loss and gradient row NaN", async (engine) => {
  const before = engine.memory();
  const logits = randomArray(12, 1);
  for (const bad of [-1, 4, -(2 ** 31), 2 ** 31 - 1]) {
    const labels = Int32Array.of(1, bad, 3);
    using tl = engine.tensor(logits, [3, 4]);
    using ty = engine.tensor(labels, [3], "i32");
    const loss = crossEntropy(tl, ty);
    const [g] = grad(loss, [tl]);
    await assertThrows(() => loss.toArray(), RangeError, [
      "crossEntropy: 1 label outside [0, 4) and not ignoreIndex -100",
      `from ${bad} to ${bad}; the first in row 1`,
    ]);
    const l = await take(loss); // the check is reported once; the values stay as computed
    assert(Number.isNaN(l[0]), `label ${bad}: loss ${l[0]}`);
    assertClose(
      await take(g),
      refCrossEntropyGrad(logits, labels, 4),
      { rtol: 1e-4, atol: 1e-5 },
      `label ${bad}`,
    );
  }
  {
    // Several bad rows, beside a valid op in the same batch, reported by an unrelated tensor's readback.
    using tl = engine.tensor(randomArray(20, 2), [4, 5]);
    using ty = engine.tensor(Int32Array.of(7, -100, -3, 5), [4], "i32");
    using tz = engine.tensor(Int32Array.of(0, 1, 2, 3), [4], "i32");
    using bad = crossEntropy(tl, ty, { reduction: "none" });
    using valid = crossEntropy(tl, tz);
    using other = engine.ones([3]);
    await assertThrows(() => other.toArray(), RangeError, [
      "3 labels outside [0, 5) and not ignoreIndex -100 (from -3 to 7; the first in row 0)",
    ]);
    await engine.sync(); // reported once: nothing left
    const [v] = await valid.toArray();
    assert(Number.isFinite(v), `the valid labels' loss: ${v}`);
    assertClose(await bad.toArray(), [NaN, 0, NaN, NaN], { rtol: 0, atol: 0 }, "bad rows NaN, ignored 0");
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
  for (const ignoreIndex of [1.5, NaN, Infinity, 2 ** 31, -(2 ** 31) - 1]) {
    await assertThrows(() => crossEntropy(x, labels, { ignoreIndex }), RangeError, [
      "ignoreIndex",
      `${ignoreIndex}`,
    ]);
  }
  await assertThrows(() => crossEntropy(x, labels, { reduction: "avg" as Reduction }), RangeError, [
    "crossEntropy",
    "reduction",
    '"avg"',
  ]);
  assertNoLeak(engine, before);
});

test("crossEntropy's ignoreIndex and reductions on a hand-computed batch (PyTorch's definitions)", async (engine) => {
  const before = engine.memory();
  {
    // Row 0: log(e + e² + e³) − 3; row 1 is ignored (label −100); row 2: log 3. The mean is over the 2 kept rows.
    using tl = engine.tensor([1, 2, 3, 5, -5, 0, 0, 0, 0], [3, 3]);
    using ty = engine.tensor([2, -100, 1], [3], "i32");
    const each = [0.4076059644443806, 0, 1.0986122886681098];
    // f32 logsumexp and a sum of two: a few ulp.
    const tol = { rtol: 1e-6, atol: 1e-7 };
    assertClose(await take(crossEntropy(tl, ty, { reduction: "none" })), each, tol, "none");
    assertClose(await take(crossEntropy(tl, ty, { reduction: "sum" })), [1.5062182531124904], tol, "sum");
    const loss = crossEntropy(tl, ty);
    assertClose(await loss.toArray(), [0.7531091265562452], tol, "mean");
    // (softmax − onehot) / 2 kept rows: softmax(1, 2, 3) = (0.0900306, 0.2447285, 0.6652410); 1/3 each for row 2.
    const [g] = grad(loss, [tl]);
    loss.dispose();
    assertClose(
      await take(g),
      [0.04501528658519023, 0.12236423552739882, -0.1673795221125891, 0, 0, 0, 1 / 6, -1 / 3, 1 / 6],
      tol,
      "mean gradient",
    );
    // ignoreIndex 2 leaves out row 0 and makes −100 an ordinary label, outside [0, 3): reported, its row NaN.
    const nan = crossEntropy(tl, ty, { ignoreIndex: 2, reduction: "none" });
    await assertThrows(() => engine.sync(), RangeError, ["1 label outside [0, 3) and not ignoreIndex 2"]);
    assertClose(await take(nan), [0, NaN, 1.0986122886681098], tol, "ignoreIndex 2");
  }
  assertNoLeak(engine, before);
});

/** Labels as labelsOf, with about a third of the rows (chosen by `seed`) set to `ignoreIndex`. */
function labelsIgnoring(rows: number, classes: number, ignoreIndex: number, seed: number): Int32Array {
  const r = rng(seed + 1000);
  return labelsOf(rows, classes, seed).map((label) => (r() < 0.3 ? ignoreIndex : label));
}

/**
 * crossEntropy with `options` against the reference: the value, and the gradient for an upstream of 1.5 (mean,
 * sum) or of random weights per row (none, through sum(loss · w)).
 */
async function checkCrossEntropyOptions(
  engine: Engine,
  rows: number,
  classes: number,
  options: CrossEntropyOptions & { reduction: Reduction },
  seed: number,
) {
  const what = `[${rows}, ${classes}] ${JSON.stringify(options)}`;
  const logits = randomArray(rows * classes, seed, -6, 6);
  const labels = labelsIgnoring(rows, classes, options.ignoreIndex ?? -100, seed);
  const each = options.reduction === "none";
  const upstream = each ? randomArray(rows, seed + 1, -2, 2) : 1.5;
  using tl = engine.tensor(logits, [rows, classes]);
  using ty = engine.tensor(labels, [rows], "i32");
  using tw = engine.tensor(each ? (upstream as Float32Array) : [upstream as number], each ? [rows] : []);
  const loss = crossEntropy(tl, ty, options);
  assert(loss.size === (each ? rows : 1), `${what}: loss shape ${loss.shape}`);
  const scaled = mul(loss, tw);
  const total = each ? sum(scaled) : scaled;
  const [g] = grad(total, [tl]);
  // Per row, lse − picked cancels: its error is a few ulp of |lse| ≲ 20 (ulp 2e-6), whatever the loss; the
  // reduced losses are f32 tree sums of those (CE_TOL).
  assertClose(
    await loss.toArray(),
    refCrossEntropy(logits, labels, classes, options),
    each ? { rtol: 1e-5, atol: 1e-5 } : CE_TOL,
    `${what} loss`,
  );
  // As checkCrossEntropyGrad, with atol set by the largest upstream a row gets (1.5 / kept rows for the mean).
  const expected = refCrossEntropyGrad(logits, labels, classes, upstream, options);
  const kept = labels.filter((label) => label !== (options.ignoreIndex ?? -100)).length;
  const rowScale = each ? 2 : options.reduction === "mean" ? 1.5 / Math.max(kept, 1) : 1.5;
  assertClose(await take(g), expected, { rtol: 1e-4, atol: 1e-5 * rowScale }, `${what} gradient`);
  for (const t of new Set<Tensor>([loss, scaled, total])) t.dispose();
}

// Sizes 1, primes and non-multiples of the 256-wide workgroup; ignoreIndex the default, or a class in range.
const IGNORE_CASES: [number, number, number | undefined][] = [
  [1, 1, undefined],
  [1, 7, 3],
  [2, 5, undefined],
  [13, 257, 0],
  [257, 3, undefined],
  [1031, 11, 10],
  [2053, 2, undefined],
];

test("crossEntropy with ignored rows matches the reference for every reduction", async (engine) => {
  const before = engine.memory();
  for (const [i, [rows, classes, ignoreIndex]] of IGNORE_CASES.entries()) {
    for (const reduction of ["mean", "sum", "none"] as const) {
      await checkCrossEntropyOptions(engine, rows, classes, { ignoreIndex, reduction }, 20 + i);
    }
  }
  assertNoLeak(engine, before);
});

test("crossEntropy whose logits are over one binding runs in parts of rows", () =>
  // On engines that bind at most 1 MiB: logits [300, 1,001] (1.2 MB) in parts of 256 and 44 rows (rows of
  // 1,001 classes start on the 256-byte alignment every 64 rows), every reduction, a third of the rows ignored.
  bothKernels(async (engine) => {
    const before = engine.memory();
    for (const reduction of ["mean", "sum", "none"] as const) {
      await checkCrossEntropyOptions(engine, 300, 1001, { reduction }, 40);
    }
    {
      // A bad label in the second part is reported by its row in the whole batch.
      const labels = labelsOf(300, 1001, 41);
      labels[290] = 1001;
      using tl = engine.tensor(randomArray(300 * 1001, 42), [300, 1001]);
      using ty = engine.tensor(labels, [300], "i32");
      using loss = crossEntropy(tl, ty);
      await assertThrows(() => loss.toArray(), RangeError, ["from 1001 to 1001; the first in row 290"]);
    }
    // Rows of 4,099 classes start on the alignment every 64 rows, and 64 of them (1,049,344 bytes) are over the
    // binding: no part fits, and the error names the limit.
    using wide = engine.empty([70, 4099]);
    using labels = engine.zeros([70], "i32");
    const at = engine.memory();
    await assertThrows(() => crossEntropy(wide, labels), ShapeError, [
      "[70, 4099]",
      "maxStorageBufferBindingSize (1048576 bytes)",
    ]);
    assertNoLeak(engine, at);
    wide.dispose();
    labels.dispose();
    assertNoLeak(engine, before);
  }, { maxStorageBufferBindingSize: 2 ** 20 }));

test("crossEntropy with ignored rows: finite differences for every reduction", async (engine) => {
  const before = engine.memory();
  {
    const logits = randomArray(20, 3, -2, 2);
    const labels = Int32Array.of(4, -100, 0, 2);
    const w = randomArray(4, 4, -2, 2);
    using ty = engine.tensor(labels, [4], "i32");
    using tw = engine.tensor(w, [4]);
    // Indices in every row, the ignored row 1 (gradient 0) included.
    const idx = [0, 4, 6, 9, 10, 13, 19];
    for (const reduction of ["mean", "sum", "none"] as const) {
      const f = async (v: Float32Array) => {
        using tv = engine.tensor(v, [4, 5]);
        using loss = crossEntropy(tv, ty, { reduction });
        if (reduction !== "none") return (await loss.toArray())[0];
        using weighted = mul(loss, tw);
        return (await take(sum(weighted)))[0];
      };
      const fd = await finiteDifference(f, logits, idx);
      const expected = refCrossEntropyGrad(logits, labels, 5, reduction === "none" ? w : 1, { reduction });
      // h = 1e-2: the f32 loss (≲ 10) rounds at ≲ 1e-6, /2h → 5e-5; the O(h²) truncation is ~1e-5 (gradients
      // ≲ 2 here).
      assertClose(
        fd,
        idx.map((i) => expected[i]),
        { rtol: 1e-2, atol: 2e-4 },
        `${reduction} finite differences`,
      );
    }
  }
  assertNoLeak(engine, before);
});

test("crossEntropy of a row holding +∞ is NaN, its gradient row too, as torch's (the loss was +∞)", async (engine) => {
  const x = [1, Infinity, 2, 1, Infinity, 2, 3, 0, 4];
  const labels = [0, 1, 2];
  using tl = engine.tensor(x, [3, 3]);
  using ty = engine.tensor(labels, [3], "i32");
  const tol = { rtol: 1e-6, atol: 1e-7 };
  const options = { reduction: "none" } as const;
  assertClose(await take(crossEntropy(tl, ty, options)), refCrossEntropy(x, labels, 3, options), tol, "loss");
  assertClose(refCrossEntropy(x, labels, 3, options).slice(0, 2), [NaN, NaN], tol, "reference loss");
  const [g] = engine.tidy(() => grad(sum(crossEntropy(tl, ty, options)), [tl]));
  assertClose(await take(g), refCrossEntropyGrad(x, labels, 3, [1, 1, 1], options), tol, "gradient");
});

test("crossEntropy with every row ignored: the mean is NaN (0/0), the sum 0, the gradients 0", async (engine) => {
  const before = engine.memory();
  {
    using tl = engine.tensor(randomArray(15, 5), [5, 3]);
    using ty = engine.tensor(new Int32Array(5).fill(7), [5], "i32");
    for (const reduction of ["mean", "sum", "none"] as const) {
      const loss = crossEntropy(tl, ty, { ignoreIndex: 7, reduction });
      const expected = reduction === "mean" ? [NaN] : reduction === "sum" ? [0] : [0, 0, 0, 0, 0];
      assertClose(await loss.toArray(), expected, { rtol: 0, atol: 0 }, `${reduction} loss`);
      const total = reduction === "none" ? sum(loss) : loss;
      const [g] = grad(total, [tl]);
      assertClose(await take(g), new Float64Array(15), { rtol: 0, atol: 0 }, `${reduction} gradient`);
      if (total !== loss) total.dispose();
      loss.dispose();
    }
  }
  assertNoLeak(engine, before);
});

test("crossEntropy over maskedTokenTask's labels leaves out the unchosen positions (-100), as BERT", async (engine) => {
  const before = engine.memory();
  {
    const [n, len, vocab] = [4, 37, 50];
    using tokens = engine.tensor(
      Int32Array.from({ length: n * len }, (_, i) => (i * 7919) % vocab),
      [n, len],
      "i32",
    );
    const { input, labels } = maskedTokenTask(tokens, { seed: 5, maskId: 0, vocabSize: vocab });
    input.dispose();
    using flat = reshape(labels, [n * len]);
    labels.dispose();
    const host = await flat.toArray();
    const chosen = host.filter((label) => label !== -100).length;
    assert(chosen > 0 && chosen < n * len, `${chosen} of ${n * len} positions chosen`);
    const logits = randomArray(n * len * vocab, 6, -6, 6);
    using tl = engine.tensor(logits, [n * len, vocab]);
    const loss = crossEntropy(tl, flat);
    const [g] = grad(loss, [tl]);
    assertClose(await take(loss), refCrossEntropy(logits, host, vocab), CE_TOL, "loss");
    // As checkCrossEntropyGrad, with 1/chosen rows as the scale.
    assertClose(
      await take(g),
      refCrossEntropyGrad(logits, host, vocab),
      { rtol: 1e-4, atol: 1e-5 / chosen },
      "gradient",
    );
  }
  assertNoLeak(engine, before);
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

/** attention on the GPU: the output and the gradients of Σ out·w to q, k and v. */
async function attentionOnGpu(
  engine: Engine,
  [q, k, v, w]: Float32Array[],
  [b, lq, lk, d, dv]: number[],
  options: { scale?: number; mask?: Float32Array; causal?: boolean },
) {
  using tq = engine.tensor(q, [b, lq, d]);
  using tk = engine.tensor(k, [b, lk, d]);
  using tv = engine.tensor(v, [b, lk, dv]);
  using tw = engine.tensor(w, [b, lq, dv]);
  using mask = options.mask ? engine.tensor(options.mask, [lq, lk]) : undefined;
  const results = engine.tidy(() => {
    const out = attention(tq, tk, tv, { scale: options.scale, mask, causal: options.causal });
    return [out, ...grad(sum(mul(out, tw)), [tq, tk, tv])];
  });
  return await Promise.all(results.map(take));
}

test("attention matches the float64 reference, value and gradients, with a mask, causal, and Lq ≠ Lk", async (engine) => {
  const before = engine.memory();
  for (const [b, lq, lk, d, dv] of [[1, 1, 1, 1, 1], [2, 5, 7, 4, 6], [6, 17, 17, 8, 8]]) {
    const inputs = [[b, lq, d], [b, lk, d], [b, lk, dv], [b, lq, dv]].map((s, i) =>
      randomArray(size(s), 10 * b + i)
    );
    const dims: [number, number, number, number, number] = [b, lq, lk, d, dv];
    const hidden = Float32Array.from({ length: lq * lk }, (_, x) => (x % 3 === 1 ? -Infinity : 0));
    hidden.fill(0, 0, lk); // row 0 sees every key
    for (let i = 0; i < lq; i++) hidden[i * lk] = 0; // every query sees key 0
    const causal = Float32Array.from(
      { length: lq * lk },
      (_, x) => (x % lk > Math.floor(x / lk) ? -Infinity : 0),
    );
    const cases = [
      { what: "plain", options: {}, scale: 1 / Math.sqrt(d), mask: undefined },
      { what: "scale 0.3, mask", options: { scale: 0.3, mask: hidden }, scale: 0.3, mask: hidden },
      { what: "causal", options: { causal: true }, scale: 1 / Math.sqrt(d), mask: causal },
    ];
    for (const c of cases) {
      const [out, dq, dk, dvGot] = await attentionOnGpu(engine, inputs, dims, c.options);
      const ref = refAttention(inputs[0], inputs[1], inputs[2], inputs[3], dims, c.scale, c.mask);
      // Sums of ≤ 17 products of values ≤ 1 in f32 and softmax's 1.5e-5 relative: 1e-4 of the largest element.
      const what = `attention ${dims} ${c.what}`;
      assertCloseScaled(out, ref.out, 1e-4, what);
      assertCloseScaled(dq, ref.dq, 1e-4, `${what} dq`);
      assertCloseScaled(dk, ref.dk, 1e-4, `${what} dk`);
      assertCloseScaled(dvGot, ref.dv, 1e-4, `${what} dv`);
    }
  }
  assertNoLeak(engine, before);
});

test("attention: a query whose every key is hidden gets zeros and no NaN in any gradient, as torch's safe softmax", async (engine) => {
  // Lq 3, Lk 5, two batch items: the mask hides key 0 from query 0, the one key the causal triangle leaves it
  // (once it saw the causally hidden keys instead, at −1e30). Its softmax was NaN, and through Pᵀ·dO every
  // key's and value's gradient was NaN; torch (2.5 on) gives the row zeros. Without causal, a mask hiding row 1
  // whole does the same.
  const [b, lq, lk, d, dv] = [2, 3, 5, 4, 2];
  const inputs = [[b, lq, d], [b, lk, d], [b, lk, dv], [b, lq, dv]].map((s, i) =>
    randomArray(size(s), 61 + i)
  );
  const causalHide = new Float32Array(lq * lk);
  causalHide[0] = -Infinity;
  const rowHide = new Float32Array(lq * lk).fill(-Infinity, lk, 2 * lk);
  const triangle = Float32Array.from(
    { length: lq * lk },
    (_, x) => (x % lk > Math.floor(x / lk) ? -Infinity : 0),
  );
  const cases = [
    {
      what: "causal + mask",
      options: { causal: true, mask: causalHide },
      mask: triangle.map((t, x) => t + causalHide[x]),
      row: 0,
    },
    { what: "mask", options: { mask: rowHide }, mask: rowHide, row: 1 },
  ];
  for (const c of cases) {
    const [out, dq, dk, dvGot] = await attentionOnGpu(engine, inputs, [b, lq, lk, d, dv], c.options);
    const ref = refAttention(
      inputs[0],
      inputs[1],
      inputs[2],
      inputs[3],
      [b, lq, lk, d, dv],
      1 / Math.sqrt(d),
      c.mask,
    );
    for (
      const [got, want, name] of [[out, ref.out, "out"], [dq, ref.dq, "dq"], [dk, ref.dk, "dk"], [
        dvGot,
        ref.dv,
        "dv",
      ]] as const
    ) {
      assert(got.every(Number.isFinite), `${c.what} ${name}: ${got}`);
      // As the plain attention test: sums of ≤ 5 products of values ≤ 1, softmax's 1.5e-5 relative.
      assertCloseScaled(got, want, 1e-4, `${c.what} ${name}`);
    }
    for (let n = 0; n < b; n++) {
      const row = out.slice((n * lq + c.row) * dv, (n * lq + c.row + 1) * dv);
      assert(row.every((x) => x === 0), `${c.what}: item ${n} query ${c.row} is ${row}, not zeros`);
    }
  }
});

test("attention: gradients match finite differences; bad shapes throw", async (engine) => {
  const before = engine.memory();
  const dims = [2, 3, 4, 5, 2];
  const [b, lq, lk, d, dv] = dims;
  const inputs = [[b, lq, d], [b, lk, d], [b, lk, dv], [b, lq, dv]].map((s, i) =>
    randomArray(size(s), 40 + i)
  );
  const [, dq] = await attentionOnGpu(engine, inputs, dims, { causal: true });
  const lossOf = async (x: Float32Array) => {
    using tq = engine.tensor(x, [b, lq, d]);
    using tk = engine.tensor(inputs[1], [b, lk, d]);
    using tv = engine.tensor(inputs[2], [b, lk, dv]);
    using tw = engine.tensor(inputs[3], [b, lq, dv]);
    return (await take(engine.tidy(() => sum(mul(attention(tq, tk, tv, { causal: true }), tw)))))[0];
  };
  const probe = [0, 7, 13, 29];
  // h = 1e-2: truncation ~h²·|f'''| and f32 rounding ~6e-8·|f|/h, under 1e-3.
  await assertFiniteDifferences(
    dq,
    lossOf,
    inputs[0],
    probe,
    1e-2,
    { rtol: 1e-2, atol: 1e-3 },
    "attention dq",
  );
  {
    using q = engine.zeros([2, 3, 4]);
    using k = engine.zeros([2, 5, 3]);
    using v = engine.zeros([2, 6, 2]);
    await assertThrows(() => attention(q, k, v), ShapeError, [
      "attention",
      "[2, 3, 4]",
      "[2, 5, 3]",
      "[2, 6, 2]",
    ]);
    using flat = engine.zeros([4]);
    await assertThrows(() => attention(flat, flat, flat), ShapeError, ["attention", "[4]"]);
  }
  assertNoLeak(engine, before);
});
