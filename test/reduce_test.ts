import {
  argmax,
  argmin,
  type Engine,
  grad,
  logSoftmax,
  logsumexp,
  max,
  mean,
  min,
  mul,
  ShapeError,
  softmax,
  std,
  sum,
  type Tensor,
  variance,
} from "../src/mod.ts";
import {
  reducedShape,
  refArgExtremum,
  refLogSoftmax,
  refLogSoftmaxGrad,
  refLogsumexp,
  refLogsumexpGrad,
  refMax,
  refMaxGrad,
  refMean,
  refMeanGrad,
  refMin,
  refSoftmax,
  refSoftmaxGrad,
  refSum,
  refSumGrad,
  refVariance,
  refVarianceGrad,
} from "../src/ref/reduce.ts";
import { bothKernels, test } from "./harness.ts";
import {
  assertClose,
  assertCloseScaled,
  assertEquals,
  assertNoLeak,
  assertThrows,
  finiteDifference,
  randomArray,
  rng,
  take,
} from "./util.ts";

type Reduce = typeof sum;
type Ref = (
  x: ArrayLike<number>,
  shape: number[],
  axes: number[],
  keepDims?: boolean,
) => { data: Float64Array };

const size = (shape: readonly number[]) => shape.reduce((a, b) => a * b, 1);

/**
 * A test whose body must leave engine.memory() where it found it (`using` tensors are gone by then); with
 * `both`, run on the CPU adapters' kernel choices and the GPUs' (reductions cut rows into parts differently).
 */
function leakTest(name: string, body: (engine: Engine) => Promise<void>, both = false): void {
  const run = async (engine: Engine) => {
    const before = engine.memory();
    await body(engine);
    assertNoLeak(engine, before);
  };
  test(name, (engine) => both ? bothKernels(run) : run(engine));
}

// Integer-valued f32 (|x| ≤ 8, every partial < 2^24) sums exactly in any order: compared exactly, a lost or
// repeated element shows. Other f32 sums: a pass folds ≤ 64 values (ITEMS) in blocks of 8, ≤ 7 + 8 = 15
// roundings, and rows here (≤ 50M elements) take ≤ 5 passes (a first pass over vec4s folds 64 vec4s, each
// pairwise: 2 + 15 roundings, and leaves ≤ 4 passes), so each value meets ≤ 75 roundings of ≤ 2^-24 times a
// partial no larger than Σ|x| ≤ len (inputs in [-1, 1]): |error| ≤ 75·2^-24·len ≈ 4.5e-6·len. (Rows side by
// side fold 16 a pass on a CPU adapter, ≤ 7 + 2 roundings: ≤ 7 passes of them stay within the 75.)
const sumTol = (len: number) => ({ rtol: 0, atol: 4.5e-6 * len });
// mean of integer values: the exact sum times 1/len (rounded once), rounded once more.
const meanTol = { rtol: 2.4e-7, atol: 0 };
const exact = { rtol: 0, atol: 0 };
// logsumexp: m is exact; s sums positive terms exp(v − m) ≤ 1, each within WGSL exp's few ulp, with the sum's
// relative error ≤ 75·2^-24 ≈ 4.5e-6 (as above), so log s is off by ≤ ~5e-6; m + log s then rounds once.
const lseTol = { rtol: 1.2e-7, atol: 6e-6 };
// softmax = exp((x − m) − log s), m the row max: log s's error (≤ ~5e-6, as in lseTol) becomes a relative error,
// plus the roundings of the two differences and exp's ulps.
const softmaxTol = { rtol: 1.5e-5, atol: 0 };
// logSoftmax = (x − m) − log s: log s's error plus the rounding of a result of magnitude ≲ 10 (x − m is exact
// where x is within a factor 2 of m, and otherwise rounds at the result's own ulp).
const logSoftmaxTol = { rtol: 1.2e-7, atol: 1.2e-5 };

// Random shapes (rank 1..4) with dims of 1, primes and primes past the workgroup (97, 257), and random axes.
function cases(count: number, seed: number): { shape: number[]; axes: number[] }[] {
  const r = rng(seed);
  const dims = [1, 2, 3, 5, 7, 13, 97, 257];
  const out = [];
  for (let k = 0; k < count; k++) {
    const rank = 1 + (k % 4);
    let shape: number[];
    do shape = Array.from({ length: rank }, () => dims[Math.floor(r() * dims.length)]); while (
      size(shape) > 300_000
    );
    const axes = shape.map((_, i) => i).filter(() => r() < 0.5);
    out.push({ shape, axes });
  }
  return out;
}

/** Integer values in [-8, 8] as f32. */
const integers = (n: number, seed: number) => randomArray(n, seed, -8.5, 8.5).map(Math.round);

/** The axes in a random mix of positive and negative spellings. */
const spell = (axes: number[], rank: number, k: number) => axes.map((a, i) => ((k + i) % 2 ? a - rank : a));

leakTest(
  "sum, mean, max and min over axes match float64 on random shapes (integer values), keepDims both ways",
  async (engine) => {
    const ops: [string, Reduce, Ref, { rtol: number; atol: number }][] = [
      ["sum", sum, refSum, exact],
      ["mean", mean, refMean, meanTol],
      ["max", max, refMax, exact],
      ["min", min, refMin, exact],
    ];
    // Reduced axes ending the shape behind others, which sum, mean, max and min split into two reductions.
    const split = [
      { shape: [5, 7, 3, 11], axes: [0, 2, 3] },
      { shape: [4, 1, 6, 2, 9], axes: [0, 1, 3, 4] },
      { shape: [3, 97, 257], axes: [0, 2] },
    ];
    for (const [k, { shape, axes }] of [...cases(24, 1), ...split].entries()) {
      const x = integers(size(shape), k);
      using t = engine.tensor(x, shape);
      for (const [name, op, ref, tol] of ops) {
        for (const keepDims of [false, true]) {
          const y = op(t, spell(axes, shape.length, k), { keepDims });
          assertEquals(y.shape, reducedShape(shape, axes, keepDims), `${name} ${shape} axes ${axes} shape`);
          assertClose(
            await take(y),
            ref(x, shape, axes, keepDims).data,
            tol,
            `${name} ${shape} axes ${axes}`,
          );
        }
      }
    }
  },
  true,
);

leakTest(
  "axes default to all; a scalar axis, [] and a full reduction give NumPy's shapes",
  async (engine) => {
    const x = integers(2 * 3 * 5, 3);
    using t = engine.tensor(x, [2, 3, 5]);
    const all = sum(t);
    assertEquals(all.shape, []);
    assertClose(await take(all), refSum(x, [2, 3, 5], [0, 1, 2]).data, exact);
    const kept = max(t, undefined, { keepDims: true });
    assertEquals(kept.shape, [1, 1, 1]);
    assertClose(await take(kept), refMax(x, [2, 3, 5], [0, 1, 2]).data, exact);
    const last = mean(t, -1);
    assertEquals(last.shape, [2, 3]);
    assertClose(await take(last), refMean(x, [2, 3, 5], [2]).data, meanTol);
    const none = sum(t, []);
    assertEquals(none.shape, [2, 3, 5]);
    assertClose(await take(none), x, exact);
  },
);

leakTest("logsumexp over axes matches float64 on random shapes", async (engine) => {
  for (const [k, { shape, axes }] of cases(16, 2).entries()) {
    const x = randomArray(size(shape), 100 + k, -2, 2);
    using t = engine.tensor(x, shape);
    for (const keepDims of [false, true]) {
      const y = logsumexp(t, spell(axes, shape.length, k), { keepDims });
      assertEquals(y.shape, reducedShape(shape, axes, keepDims));
      assertClose(
        await take(y),
        refLogsumexp(x, shape, axes, keepDims).data,
        lseTol,
        `${shape} axes ${axes}`,
      );
    }
  }
}, true);

leakTest("softmax and logSoftmax along any axis match float64", async (engine) => {
  for (const [k, { shape }] of cases(12, 3).entries()) {
    const x = randomArray(size(shape), 200 + k, -2, 2);
    using t = engine.tensor(x, shape);
    const axis = k % shape.length;
    assertClose(
      await take(softmax(t, axis)),
      refSoftmax(x, shape, axis),
      softmaxTol,
      `softmax ${shape} axis ${axis}`,
    );
    assertClose(
      await take(logSoftmax(t, axis - shape.length)),
      refLogSoftmax(x, shape, axis),
      logSoftmaxTol,
      `logSoftmax ${shape}`,
    );
  }
});

leakTest("multi-pass rows: 100,003 elements along the inner and the outer axis", async (engine) => {
  // 100,003 > 16,384 elements per chunk: a second pass folds 7 partials per row. Axis 0 reads with stride 3.
  for (const shape of [[3, 100_003], [100_003, 3]]) {
    const axis = shape[0] === 3 ? 1 : 0;
    const ints = integers(size(shape), 6);
    {
      using t = engine.tensor(ints, shape);
      assertClose(await take(sum(t, axis)), refSum(ints, shape, [axis]).data, exact, `integer sum ${shape}`);
    }
    const x = randomArray(size(shape), 7);
    using t = engine.tensor(x, shape);
    assertClose(await take(sum(t, axis)), refSum(x, shape, [axis]).data, sumTol(100_003), `sum ${shape}`);
    assertClose(await take(max(t, axis)), refMax(x, shape, [axis]).data, exact, `max ${shape}`);
    assertClose(await take(logsumexp(t, axis)), refLogsumexp(x, shape, [axis]).data, lseTol, `lse ${shape}`);
  }
}, true);

leakTest(
  "reductions over outer axes, the innermost dim kept (4 neighbouring rows per invocation)",
  async (engine) => {
    // Kept innermost dims of 4, 8 and 12 read 4 rows as one vec4 per step and lay their partials as the rows
    // lie, [parts, rows]; one kept dim of 6 or 7 reads 4 rows element by element, its last group short; [5, 2,
    // 3] (two kept dims, 3 innermost) reads one row per invocation. [2, 70_001, 4] and [70_001, 7] fold 70,001
    // elements a row: 16 a part on a CPU adapter, so five such passes (argmax's pairs: one, then the [rows,
    // parts] path).
    const cases: [number[], number[]][] = [
      [[97, 12], [0]],
      [[5, 7, 8], [0, 1]],
      [[3, 16, 4], [1]],
      [[13, 6], [0]],
      [[2, 70_001, 4], [1]],
      [[70_001, 7], [0]],
      [[5, 2, 3], [0]],
    ];
    for (const [shape, axes] of cases) {
      const ints = integers(size(shape), 9);
      using t = engine.tensor(ints, shape);
      for (const keepDims of [false, true]) {
        const what = `${shape} axes ${axes} keepDims ${keepDims}`;
        assertClose(
          await take(sum(t, axes, { keepDims })),
          refSum(ints, shape, axes, keepDims).data,
          exact,
          what,
        );
        assertClose(
          await take(max(t, axes, { keepDims })),
          refMax(ints, shape, axes, keepDims).data,
          exact,
          what,
        );
      }
      // Integers in [-8, 8] tie everywhere: the first occurrence must win across parts and passes.
      if (axes.length === 1) {
        for (const [name, f, smallest] of [["argmax", argmax, false], ["argmin", argmin, true]] as const) {
          const want = refArgExtremum(ints, shape, axes[0], false, smallest).data;
          assertClose(await take(f(t, axes[0])), want, exact, `${name} ${shape}`);
        }
      }
      const x = randomArray(size(shape), 10, -2, 2);
      using u = engine.tensor(x, shape);
      assertClose(await take(logsumexp(u, axes)), refLogsumexp(x, shape, axes).data, lseTol, `lse ${shape}`);
    }
  },
  true,
);

// Where a tensor is over maxStorageBufferBindingSize (128 MiB on llvmpipe; Chromium's SwiftShader binds 1 GiB,
// so there these two tests run unwindowed), the first pass reads it window by window.
leakTest("one dispatch of more than 65,535 workgroups (a tensor just over 128 MiB)", async (engine) => {
  // Rows of 2 are one invocation's each, 256 to a workgroup: 16,777,259 rows need 65,537 workgroups (the grid
  // spills into y), and 134,218,072 bytes exceed a 128 MiB binding by a few rows: windows cut between rows.
  const shape = [16_777_259, 2];
  using t = engine.rand(shape, { seed: 5 });
  const x = await t.toArray();
  assertClose(await take(sum(t, 1)), refSum(x, shape, [1]).data, sumTol(2), "sum");
  assertClose(await take(max(t, -1)), refMax(x, shape, [1]).data, exact, "max");
});

leakTest("a row of 50M elements (200 MB) matches the float64 sum of the same numbers", async (engine) => {
  const n = 50_000_000;
  // The exact values the GPU reduces (rand itself is checked bit for bit against Philox), read back once.
  let x: Float32Array;
  {
    using t = engine.rand([n], { seed: 11 });
    x = (await t.toArray()) as Float32Array;
    let s = 0;
    let m = -Infinity;
    for (let i = 0; i < n; i++) {
      s += x[i];
      m = Math.max(m, x[i]);
    }
    let e = 0;
    for (let i = 0; i < n; i++) e += Math.exp(x[i] - m);
    // One row of 50M (over 65,535·256, a loop the cap would cut short in one invocation): five passes, each
    // value meeting ≤ 75 roundings (see sumTol) of a partial no larger than the total (all terms ≥ 0), so the
    // relative error is ≤ 75·2^-24 ≈ 4.5e-6 in the worst case.
    assertClose(await take(sum(t)), [s], { rtol: 4.5e-6, atol: 0 }, "sum");
    assertClose(await take(mean(t)), [s / n], { rtol: 4.7e-6, atol: 0 }, "mean");
    assertClose(await take(max(t)), [m], exact, "max");
    // log Σ exp(x − m) ≈ 17.4 with terms in (e^-1, 1]: the sum's relative bound (plus exp's ulps) becomes
    // ≤ 5e-6 absolute in log s, and m + log s rounds once more (1e-6): lseTol's atol.
    assertClose(await take(logsumexp(t)), [m + Math.log(e)], { rtol: 0, atol: lseTol.atol }, "logsumexp");
  }
  {
    // The same numbers as [8, n/8] reduced over axis 0: rows read with stride n/8 cross the windows (if
    // any), so each window folds every row into a partial of its own.
    const cols = n / 8;
    using t = engine.rand([8, cols], { seed: 11 });
    const s = new Float64Array(cols);
    const m = new Float64Array(cols).fill(-Infinity);
    const e = new Float64Array(cols);
    for (let i = 0; i < n; i++) {
      s[i % cols] += x[i];
      m[i % cols] = Math.max(m[i % cols], x[i]);
    }
    for (let i = 0; i < n; i++) e[i % cols] += Math.exp(x[i] - m[i % cols]);
    assertClose(await take(sum(t, 0)), s, sumTol(8), "strided sum");
    assertClose(await take(max(t, 0)), m, exact, "strided max");
    assertClose(
      await take(logsumexp(t, 0)),
      m.map((v, c) => v + Math.log(e[c])),
      lseTol,
      "strided logsumexp",
    );
  }
});

leakTest("NaN and infinities propagate like the reference", async (engine) => {
  const rows = [
    [1, NaN, 3, 2],
    [-Infinity, -Infinity, -Infinity, -Infinity],
    [1, Infinity, 2, -Infinity],
    [NaN, Infinity, 0, 0],
    [5, -Infinity, 5, 1],
    [2, NaN, -1, NaN],
  ];
  const x = rows.flat();
  const shape = [rows.length, 4];
  using t = engine.tensor(x, shape);
  // Non-finite entries must match exactly; the finite ones (rows 4's lse) within lseTol.
  assertClose(await take(sum(t, 1)), refSum(x, shape, [1]).data, exact, "sum");
  assertClose(await take(max(t, 1)), refMax(x, shape, [1]).data, exact, "max");
  assertClose(await take(min(t, 1)), refMin(x, shape, [1]).data, exact, "min");
  // The first NaN, else the first extreme: argmax [1, 0, 1, 0, 0, 1], argmin [1, 0, 3, 0, 1, 1].
  for (const [name, f, smallest] of [["argmax", argmax, false], ["argmin", argmin, true]] as const) {
    const want = refArgExtremum(x, shape, 1, false, smallest).data;
    assertClose(await take(f(t, 1)), want, exact, name);
  }
  assertClose(await take(logsumexp(t, 1)), refLogsumexp(x, shape, [1]).data, lseTol, "logsumexp");
  // exp(x − lse) in one pass: NaN where the reference has NaN (an all −∞ row, ∞ − ∞, a NaN input), not ∞. A row
  // holding +∞ is NaN throughout, as torch's (it gave [0, NaN, 0, 0]); along axis 0 too, which subtracts the
  // split logsumexp in a pass of its own.
  assertClose(await take(softmax(t, 1)), refSoftmax(x, shape, 1), lseTol, "softmax");
  assertClose(
    refSoftmax(x, shape, 1).slice(8, 12),
    [NaN, NaN, NaN, NaN],
    exact,
    "reference softmax of [1, ∞, 2, −∞]",
  );
  assertClose(await take(logSoftmax(t, 1)), refLogSoftmax(x, shape, 1), logSoftmaxTol, "logSoftmax");
  for (
    const [name, op, ref] of [["softmax", softmax, refSoftmax], [
      "logSoftmax",
      logSoftmax,
      refLogSoftmax,
    ]] as const
  ) {
    assertClose(await take(op(t, 0)), ref(x, shape, 0), logSoftmaxTol, `${name} along axis 0`);
  }
  // logsumexp's gradient keeps torch's exp(x − ∞) on such a row: NaN at the ∞ alone, 0 elsewhere.
  const [g] = engine.tidy(() => grad(sum(logsumexp(t, 1)), [t]));
  const got = await take(g);
  assertClose(
    got,
    refLogsumexpGrad(x, new Float64Array(rows.length).fill(1), shape, [1]),
    lseTol,
    "logsumexp'",
  );
  assertClose(got.slice(8, 12), [0, NaN, 0, 0], exact, "logsumexp' of [1, ∞, 2, −∞]");
});

leakTest("softmax and logSoftmax keep f32 precision at logits near ±1e4 and 3e4", async (engine) => {
  const x = [1e4, 1e4 - 1, -1e4, 0, 1e4 - 3, -1e4, -1e4 + 2, -1e4 + 0.5, 9999.5, -1e4, 3, -5];
  // Rounded to f32, lse ≈ 1e4 or 3e4 would be off by up to half an ulp (4.9e-4, 2e-3), which x − lse carries into
  // every result; kept as max and log-sum apart, the usual tolerances hold. The shapes take every path of the
  // elementwise pass: rows of vec4s with one lse per row ([3, 4] and [6, 8] along axis 1), a different lse per
  // column (axis 0), and rows that are not whole vec4s ([7, 5]).
  const cases: [number[], ArrayLike<number>, number][] = [[[3, 4], x, 1]];
  for (const [k, shape] of [[6, 8], [7, 5], [3, 2, 12]].entries()) {
    const v = randomArray(size(shape), 70 + k, -4, 4).map((u, i) => u + (i % 3 === 0 ? -3e4 : 3e4));
    for (let axis = 0; axis < shape.length; axis++) cases.push([shape, v, axis]);
  }
  for (const [shape, v, axis] of cases) {
    using input = engine.tensor(v, shape);
    assertClose(
      await take(softmax(input, axis)),
      refSoftmax(v, shape, axis),
      softmaxTol,
      `softmax ${shape}, ${axis}`,
    );
    assertClose(
      await take(logSoftmax(input, axis)),
      refLogSoftmax(v, shape, axis),
      logSoftmaxTol,
      `logSoftmax ${shape}, ${axis}`,
    );
  }
});

// ---- gradients -----------------------------------------------------------------------------------------------

// Gradients of loss = Σ y·w (w random, so each output gets its own upstream gradient) against the float64
// reference (the backward is a few f32 elementwise ops and one reduction: rtol 1e-5, atol 1e-6) and against
// central differences of the f32 loss with h = 1e-2 (loss rounding ~1e-6·|loss| / 2h plus O(h²) curvature:
// rtol 1e-2, atol 2e-3).
const gradTol = { rtol: 1e-5, atol: 1e-6 };
const fdTol = { rtol: 1e-2, atol: 2e-3 };

async function checkGrad(
  engine: Engine,
  name: string,
  f: (t: Tensor) => Tensor,
  x: Float32Array,
  shape: number[],
  ref: (x: Float32Array, w: Float32Array) => Float64Array,
): Promise<void> {
  using t = engine.tensor(x, shape);
  const probe = f(t);
  const outShape = [...probe.shape];
  probe.dispose();
  const w = randomArray(size(outShape), 99, 0.5, 1.5);
  using wt = engine.tensor(w, outShape);
  const loss = (t: Tensor) => {
    const y = f(t);
    const yw = mul(y, wt);
    const l = sum(yw);
    return { y, yw, l };
  };
  const { y, yw, l } = loss(t);
  const [g] = grad(l, [t]);
  for (const v of [y, yw, l]) v.dispose();
  const ga = await take(g);
  assertClose(ga, ref(x, w), gradTol, `${name} gradient vs reference`);
  const indices = [0, Math.floor(x.length / 2), x.length - 1];
  const fd = await finiteDifference(
    async (xs) => {
      using u = engine.tensor(xs, shape);
      const { y, yw, l } = loss(u);
      y.dispose();
      yw.dispose();
      return (await take(l))[0];
    },
    x,
    indices,
  );
  assertClose(indices.map((i) => ga[i]), fd, fdTol, `${name} gradient vs finite differences`);
}

leakTest(
  "gradients of sum, mean and logsumexp match the reference and finite differences",
  async (engine) => {
    const shape = [3, 5, 7];
    const x = randomArray(size(shape), 31);
    for (
      const [axes, keepDims] of [[[1], false], [[0, 2], true], [[-1], true], [undefined, false]] as const
    ) {
      const ax = axes === undefined ? [0, 1, 2] : axes.map((a) => (a + 3) % 3);
      const opts = { keepDims };
      const a = axes === undefined ? undefined : [...axes];
      await checkGrad(
        engine,
        `sum ${axes}`,
        (t) => sum(t, a, opts),
        x,
        shape,
        (_, w) => refSumGrad(w, shape, ax),
      );
      await checkGrad(
        engine,
        `mean ${axes}`,
        (t) => mean(t, a, opts),
        x,
        shape,
        (_, w) => refMeanGrad(w, shape, ax),
      );
      await checkGrad(
        engine,
        `lse ${axes}`,
        (t) => logsumexp(t, a, opts),
        x,
        shape,
        (x, w) => refLogsumexpGrad(x, w, shape, ax),
      );
    }
  },
);

leakTest(
  "logsumexp's gradient keeps f32 precision when the rows' values are large (max 3e4 to 1e8)",
  async (engine) => {
    // The gradient is softmax: from exp(x − y), y = m + log Σ rounded to f32 carried ulp(m) into every term
    // (1e-3 off at m = 3e4; at 1e8 every element got 1). With m and log Σ apart it keeps softmax's bound.
    const offsets = [3e4, 1e6, 1e8];
    const base = [0, 0.25, -1, 0.5, -0.5, 2, -2, 1];
    const x = Float32Array.from(offsets.flatMap((m) => base.map((v) => m + 8 * v)));
    const shape = [offsets.length, base.length];
    using t = engine.tensor(x, shape);
    using w = engine.tensor([1, 2, 3], [3]);
    const g = engine.tidy(() => grad(sum(mul(logsumexp(t, 1), w)), [t])[0]);
    assertClose(await take(g), refLogsumexpGrad(x, [1, 2, 3], shape, [1]), softmaxTol, "d logsumexp / dx");
    // The reference keeps the halves apart too: in float64 m + log 2 rounds to m from |m| ~ 1e15 on.
    const huge = Float32Array.of(1e17, 1e17, -3e38, -3e38);
    using h = engine.tensor(huge, [2, 2]);
    assertClose(
      await take(logSoftmax(h, 1)),
      refLogSoftmax(huge, [2, 2], 1),
      logSoftmaxTol,
      "logSoftmax at 1e17",
    );
  },
  true,
);

leakTest(
  "max and min gradients match the reference and finite differences (distinct values)",
  async (engine) => {
    const shape = [4, 6];
    // Distinct values 0.05 apart (> 2h): the finite difference never crosses a tie.
    const r = rng(8);
    const x = Float32Array.from(
      Array.from({ length: 24 }, (_, i) => i * 0.05).map((v) => ({ v, k: r() })).sort((a, b) => a.k - b.k),
      (e) => e.v,
    );
    for (const [name, op, sign] of [["max", max, 1], ["min", min, -1]] as const) {
      for (const axes of [[1], [0], [0, 1]]) {
        // min(x) = −max(−x): max's reference on −x spreads min's gradient alike.
        await checkGrad(
          engine,
          `${name} ${axes}`,
          (t) => op(t, axes),
          x,
          shape,
          (x, w) => refMaxGrad(x.map((v) => sign * v), w, shape, axes),
        );
      }
    }
  },
);

leakTest("max and min gradients split ties evenly", async (engine) => {
  using t = engine.tensor([1, 3, 3, 2, 2, 2, 0, -1, -1], [3, 3]);
  const cases = [
    [max, [0, 0.5, 0.5, 1 / 3, 1 / 3, 1 / 3, 1, 0, 0]],
    [min, [1, 0, 0, 1 / 3, 1 / 3, 1 / 3, 0, 0.5, 0.5]],
  ] as const;
  for (const [op, want] of cases) {
    const [g] = engine.tidy(() => grad(sum(op(t, 1)), [t]));
    assertClose(await take(g), want, { rtol: 1e-7, atol: 0 }, op.name);
  }
});

leakTest("max and min gradients go to a row's NaNs, as torch's max() has them", async (engine) => {
  // NaN wins the reduction, so it takes the gradient (split between NaNs); an equal ordinary maximum takes none.
  const x = [1, NaN, 3, NaN, NaN, 5, 2, 2, 0];
  const shape = [3, 3];
  using t = engine.tensor(x, shape);
  const w = [1, 2, 0];
  using g = engine.tensor(w, [3]);
  for (const [op, sign] of [[max, 1], [min, -1]] as const) {
    const [dx] = engine.tidy(() => grad(sum(mul(op(t, 1), g)), [t]));
    const want = refMaxGrad(x.map((v) => sign * v), w, shape, [1]);
    assertClose(await take(dx), want, exact, op.name);
    assertClose(want, [0, 1, 0, 1, 1, 0, 0, 0, 0], exact, `reference ${op.name}`);
  }
});

leakTest("softmax and logSoftmax gradients match the reference and finite differences", async (engine) => {
  const shape = [4, 3, 5];
  const x = randomArray(size(shape), 41, -2, 2);
  for (const axis of [-1, 1, 0]) {
    const a = (axis + 3) % 3;
    await checkGrad(
      engine,
      `softmax ${axis}`,
      (t) => softmax(t, axis),
      x,
      shape,
      (x, w) => refSoftmaxGrad(x, w, shape, a),
    );
    await checkGrad(
      engine,
      `logSoftmax ${axis}`,
      (t) => logSoftmax(t, axis),
      x,
      shape,
      (x, w) => refLogSoftmaxGrad(x, w, shape, a),
    );
  }
});

test("softmax and logSoftmax along the last axis, one workgroup a row: values and gradients match float64", () =>
  // A row takes the fused pass where each invocation walks 5 to 16,384 quads: 157 to 524,288 elements on a CPU
  // adapter (8 invocations a row), from 5,117 on a GPU (256). Rows at each end and one past it (156, 524,292:
  // the logsumexp path; a GPU's kernels take 524,292 too); lengths that are whole vec4s and not (161, 197 as
  // attention over ViT's tokens, 5,121, 524,287: quads read element by element, the last one short); rows 1,
  // prime, and 131 on engines of at most 64 workgroups a dimension (the grid laid over x and y, its last line
  // part empty).
  bothKernels(async (engine) => {
    const before = engine.memory();
    const cases = [
      [1, 157],
      [1, 156],
      [3, 5, 1028],
      [131, 161],
      [3, 2, 197],
      [2, 5120],
      [3, 5121],
      [131, 5124],
      [1, 524_288],
      [1, 524_292],
      [1, 524_287],
    ];
    for (const [k, shape] of cases.entries()) {
      const x = randomArray(size(shape), 900 + k, -6, 6);
      const w = randomArray(size(shape), 950 + k, 0.5, 1.5);
      using t = engine.tensor(x, shape);
      using wt = engine.tensor(w, shape);
      for (
        const [name, op, ref, tol, refGrad] of [
          ["softmax", softmax, refSoftmax, softmaxTol, refSoftmaxGrad],
          ["logSoftmax", logSoftmax, refLogSoftmax, logSoftmaxTol, refLogSoftmaxGrad],
        ] as const
      ) {
        const axis = shape.length - 1;
        using y = op(t, -1);
        assertClose(await y.toArray(), ref(x, shape, axis), tol, `${name} [${shape}]`);
        const [got, expected] = [
          await take(engine.tidy(() => grad(sum(mul(y, wt)), [t])[0])),
          refGrad(x, w, shape, axis),
        ];
        // As the test over one binding: logSoftmax's g − softmax·Σg cancels up to its largest term.
        if (name === "logSoftmax") assertCloseScaled(got, expected, softmaxTol.rtol, `${name}' [${shape}]`);
        else assertClose(got, expected, gradTol, `${name}' [${shape}]`);
      }
    }
    // Finite differences through the fused backward, rows of whole vec4s and not. Weights of mean 0 keep the
    // loss small (320 log-probabilities near −5 under weights near 1 sum to ~1,600, whose f32 rounding over h =
    // 1e-2 is ~1e-2), so the differences hold to ~1e-3.
    for (const shape of [[2, 160], [2, 161]]) {
      const x = randomArray(size(shape), 31, -2, 2);
      using wt = engine.tensor(randomArray(size(shape), 32, -1, 1), shape);
      for (const [name, op] of [["softmax", softmax], ["logSoftmax", logSoftmax]] as const) {
        const lossOf = (t: Tensor) => sum(mul(op(t, -1), wt));
        using t = engine.tensor(x, shape);
        const got = await take(engine.tidy(() => grad(lossOf(t), [t])[0]));
        const f = async (v: Float32Array) => {
          using u = engine.tensor(v, shape);
          return (await take(engine.tidy(() => lossOf(u))))[0];
        };
        const idx = [0, 161, size(shape) - 1];
        const fd = await finiteDifference(f, x, idx);
        assertClose(idx.map((k) => got[k]), fd, fdTol, `${name} [${shape}] vs finite differences`);
      }
    }
    // NaN and infinities in rows of 161 (quads read element by element; fused on a CPU adapter) as the
    // reference has them: NaN for an all −∞ row, ∞ − ∞ and a NaN input; the finite results within lseTol, as
    // the rows of 4 above.
    {
      const row = (specials: [number, number][]) => {
        const r = Array.from(randomArray(161, 60 + specials.length, -3, 3));
        for (const [at, v] of specials) r[at] = v;
        return r;
      };
      const special = [
        row([[1, NaN]]),
        Array(161).fill(-Infinity),
        row([[0, Infinity], [160, -Infinity]]),
        row([[3, 5], [150, 5], [7, -Infinity]]),
      ].flat();
      using st = engine.tensor(special, [4, 161]);
      assertClose(
        await take(softmax(st, 1)),
        refSoftmax(special, [4, 161], 1),
        lseTol,
        "softmax, rows of 161",
      );
      assertClose(
        await take(logSoftmax(st, 1)),
        refLogSoftmax(special, [4, 161], 1),
        logSoftmaxTol,
        "logSoftmax, rows of 161",
      );
    }
    assertNoLeak(engine, before);
  }, { maxComputeWorkgroupsPerDimension: 64 }));

test("over one binding: softmax and logSoftmax run in parts along the leading dim, strided sums a window at a time", () =>
  // On engines that bind at most 1 MiB, outputs of 1.2 to 1.6 MiB. The log-sum-exp varies along the leading
  // dim (axis 1 of [300, 1001], whose rows line up with the 256-byte alignment only every 64 rows; axis 1 of
  // [40, 7, 1000]) or is broadcast along it (axis 0 of [301, 1000]; the one row of a 1-D tensor).
  bothKernels(async (engine) => {
    const before = engine.memory();
    const cases: [number[], number][] = [[[300, 1001], 1], [[40, 7, 1000], 1], [[301, 1000], 0], [
      [300_000],
      0,
    ]];
    for (const [k, [shape, axis]] of cases.entries()) {
      const x = randomArray(size(shape), 700 + k, -4, 4);
      const w = randomArray(size(shape), 800 + k, 0.5, 1.5);
      using t = engine.tensor(x, shape);
      using wt = engine.tensor(w, shape);
      // logSoftmax's gradient g − softmax·Σg cancels terms up to its largest element (rows of ~1,000 weights
      // near 1): softmax's relative error carried into them, an absolute error scaled by that element.
      for (
        const [name, op, ref, tol, refGrad, scaled] of [
          ["softmax", softmax, refSoftmax, softmaxTol, refSoftmaxGrad, false],
          ["logSoftmax", logSoftmax, refLogSoftmax, logSoftmaxTol, refLogSoftmaxGrad, true],
        ] as const
      ) {
        const y = op(t, axis);
        assertClose(await y.toArray(), ref(x, shape, axis), tol, `${name} ${shape} axis ${axis}`);
        const yw = mul(y, wt);
        const loss = sum(yw);
        const [g] = grad(loss, [t]);
        for (const v of [y, yw, loss]) v.dispose();
        const [got, expected, what] = [
          await take(g),
          refGrad(x, w, shape, axis),
          `${name} gradient ${shape}`,
        ];
        if (scaled) assertCloseScaled(got, expected, softmaxTol.rtol, what);
        else assertClose(got, expected, gradTol, what);
      }
    }
    {
      // Axis 0 of [4, 300, 512] (2.4 MB, three 1 MiB windows): strided rows each window sees all of, whose
      // partials (a set per window, 1.8 MB) were refused; each set is reduced apart and the results combined
      // (layerNorm's gradient for a [300, 512] weight is this sum). Sums of 4 in some order: sumTol(4).
      const shape = [4, 300, 512];
      const x = randomArray(size(shape), 17);
      using t = engine.tensor(x, shape);
      assertClose(await take(sum(t, 0)), refSum(x, shape, [0]).data, sumTol(4), "sum over windows");
      assertClose(await take(mean(t, 0)), refMean(x, shape, [0]).data, sumTol(4), "mean over windows");
      assertClose(await take(max(t, 0)), refMax(x, shape, [0]).data, exact, "max over windows");
      assertClose(
        await take(min(t, [0])),
        refMax(x.map((v) => -v), shape, [0]).data.map((v) => -v),
        exact,
        "min",
      );
    }
    // A leading index alone over the binding (1.2 MiB) cannot be cut: the error names the limit.
    const wide = engine.zeros([2, 300_000]);
    const at = engine.memory();
    for (const op of [softmax, logSoftmax]) {
      await assertThrows(() => op(wide, 1), ShapeError, ["maxStorageBufferBindingSize", "[2, 300000]"]);
    }
    assertNoLeak(engine, at);
    wide.dispose();
    assertNoLeak(engine, before);
  }, { maxStorageBufferBindingSize: 2 ** 20 }));

// ---- errors --------------------------------------------------------------------------------------------------

// variance over values 1000 + [-1, 1]: the mean's error δ (a few ulp of 1000) adds only n·δ² to the sum of
// squares (the cross term cancels), which then sums non-negative terms (relative error ≤ 75·2^-24, as sumTol);
// std's square root halves it. A one-pass E[x²] − E[x]² would lose everything here (ulp(1e6) = 0.06).
const varianceTol = { rtol: 1e-5, atol: 1e-7 };

leakTest(
  "variance and std match float64 on random shapes and axes, far from zero, their gradients too",
  async (engine) => {
    for (const [k, { shape, axes }] of cases(16, 5).entries()) {
      const x = randomArray(size(shape), 70 + k).map((v) => 1000 + v);
      const n = axes.reduce((m, a) => m * shape[a], 1);
      using t = engine.tensor(x, shape);
      for (const correction of n > 1 ? [0, 1] : [0]) {
        for (const keepDims of [false, true]) {
          const what = `${shape} axes ${axes} correction ${correction} keepDims ${keepDims}`;
          const ref = refVariance(x, shape, axes, correction, keepDims);
          using v = variance(t, spell(axes, shape.length, k), { correction, keepDims });
          assertEquals(v.shape, ref.shape, `variance ${what} shape`);
          assertClose(await v.toArray(), ref.data, varianceTol, `variance ${what}`);
          using sd = std(t, axes, { correction, keepDims });
          assertClose(await sd.toArray(), ref.data.map(Math.sqrt), varianceTol, `std ${what}`);
        }
        // Gradients under a random weight per row: d var/dx = 2(x − mean)·w / (n − correction), std's over 2·std.
        const ref = refVariance(x, shape, axes, correction);
        const w = randomArray(ref.data.length, 90 + k);
        using tw = engine.tensor(w, ref.shape);
        const gradOf = (op: typeof variance) =>
          engine.tidy(() => grad(sum(mul(op(t, axes, { correction }), tw)), [t])[0]);
        const dv = refVarianceGrad(x, w, shape, axes, correction);
        const ds = refVarianceGrad(
          x,
          w.map((wi, r) => wi / (2 * Math.sqrt(ref.data[r]))),
          shape,
          axes,
          correction,
        );
        // |dv| ≲ 2·|x − mean|/(n − c): an absolute floor at 1e-5 of that scale covers elements near the mean.
        const varianceGradTol = { rtol: 1e-4, atol: 1e-5 * 2 / Math.max(1, n - correction) };
        assertClose(
          await take(gradOf(variance)),
          dv,
          varianceGradTol,
          `variance' ${shape} axes ${axes} c ${correction}`,
        );
        assertClose(
          await take(gradOf(std)),
          ds,
          { ...varianceGradTol, rtol: 2e-4 },
          `std' ${shape} axes ${axes}`,
        );
      }
    }
    // Finite differences at a small size (h = 1e-2: variance is quadratic, so only f32 rounding, ~eps·|f|/h ≈ 1e-5,
    // and std's truncation ~h² stay).
    const x = randomArray(12, 3);
    for (const [name, op] of Object.entries({ variance, std })) {
      const f = async (v: Float32Array) => {
        using xt = engine.tensor(v, [3, 4]);
        return (await take(engine.tidy(() => sum(op(xt, 1)))))[0];
      };
      using t = engine.tensor(x, [3, 4]);
      const got = await take(engine.tidy(() => grad(sum(op(t, 1)), [t])[0]));
      const fd = await finiteDifference(f, x, [0, 5, 11]);
      assertClose([0, 5, 11].map((i) => got[i]), fd, { rtol: 1e-2, atol: 1e-3 }, `${name} fd`);
    }
  },
);

leakTest("bad input throws a clear error and allocates nothing", async (engine) => {
  using t = engine.tensor(randomArray(6, 1), [2, 3]);
  using ints = engine.tensor(new Int32Array([1, 2, 3]), [3]);
  for (const op of [sum, mean, max, logsumexp, variance, std]) {
    await assertThrows(() => op(ints), TypeError, ["i32"]);
    await assertThrows(() => op(t, 2), RangeError, ["axis 2", "[2, 3]"]);
    await assertThrows(() => op(t, -3), RangeError, ["axis -3", "[2, 3]"]);
    await assertThrows(() => op(t, 0.5), RangeError, ["axis 0.5", "[2, 3]"]);
    await assertThrows(() => op(t, [1, -1]), RangeError, ["repeat", "[2, 3]"]);
  }
  for (const op of [softmax, logSoftmax]) {
    await assertThrows(() => op(ints), TypeError, ["i32"]);
    await assertThrows(() => op(t, 2), RangeError, ["axis 2", "[2, 3]"]);
  }
  // One element per row leaves Bessel's correction nothing to divide by (PyTorch gives NaN).
  using column = engine.zeros([3, 1]);
  for (const [name, op] of [["variance", variance], ["std", std]] as const) {
    await assertThrows(() => op(column, 1), RangeError, [`${name}: 1 elements`, "[3, 1]", "correction 1"]);
    await assertThrows(() => op(t, 1, { correction: 3 }), RangeError, [
      "3 elements",
      "[2, 3]",
      "correction 3",
    ]);
    await assertThrows(() => op(t, 1, { correction: -1 }), RangeError, ["correction -1"]);
  }
  // 17 dims alternating kept and reduced do not merge: 9 of one kind are over the kernel's 8. (sum and max
  // reduce a trailing run of reduced dims first, on its own, which leaves 8: logsumexp does not split.)
  using deep = engine.zeros(Array.from({ length: 17 }, (_, i) => 2 + (i % 2)));
  const even = [0, 2, 4, 6, 8, 10, 12, 14, 16];
  await assertThrows(() => logsumexp(deep, even), ShapeError, ["reduced dims", "[2, 3, 2", "9 dims", "8"]);
  await assertThrows(() => max(deep, even.slice(0, 8).map((d) => d + 1)), ShapeError, [
    "kept dims",
    "9 dims",
  ]);
  const gone = engine.tensor([1, 2], [2]);
  gone.dispose();
  for (const op of [sum, mean, max, logsumexp, softmax, logSoftmax, variance, std]) {
    await assertThrows(() => op(gone), Error, ["used after dispose"]);
  }
  // Reducing axis 0 of [2, cols] leaves cols values: more than one binding holds, so the partials cannot be
  // written (WebGPU's default maxBufferSize is exactly 2·128 MiB, too small for this input).
  const cols = engine.maxBinding / 4 + 64;
  if (2 * cols * 4 <= engine.limits.maxBufferSize) {
    using wide = engine.empty([2, cols]);
    await assertThrows(() => sum(wide, 0), ShapeError, ["maxStorageBufferBindingSize", `[2, ${cols}]`]);
  }
});
