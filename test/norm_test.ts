import { batchNorm, grad, layerNorm, mul, ShapeError, sum } from "../src/mod.ts";
import type { Engine, Tensor } from "../src/mod.ts";
import { groups, type RefAffine, refStandardize, refStandardizeGrad } from "../src/ref/norm.ts";
import { bothKernels, test } from "./harness.ts";
import {
  assertClose,
  assertCloseScaled,
  assertNoLeak,
  assertThrows,
  finiteDifference,
  randomArray,
  take,
} from "./util.ts";

const size = (shape: readonly number[]) => shape.reduce((a, b) => a * b, 1);

/** `values` (shaped `from`, broadcast against `shape` as a trailing or channel block) per element of `shape`. */
function spread(values: Float32Array, shape: readonly number[], at: (i: number) => number): Float64Array {
  return Float64Array.from({ length: size(shape) }, (_, i) => values[at(i)]);
}

/** Σ over elements of v into `n` slots by `at`. */
function sumInto(v: ArrayLike<number>, n: number, at: (i: number) => number): Float64Array {
  const out = new Float64Array(n);
  for (let i = 0; i < v.length; i++) out[at(i)] += v[i];
  return out;
}

// y: μ and σ² are f32 tree sums (relative error ~1e-6 even over 100,003 elements), then one subtraction, a
// square root and a few products of magnitude ≤ ~4 (|x̂| ≤ √n for a group of n, here ≤ ~3): 1e-5 both ways.
const Y_TOL = { rtol: 1e-5, atol: 1e-5 };
// dx subtracts the group means of gγ and gγ·x̂ from gγ: terms of magnitude ~1 whose f32 errors (~1e-6 each)
// are set by the largest of them, so the bound scales with the largest |dx|.
const DX_RTOL = 3e-5;

interface Case {
  shape: number[];
  /** Reduced axes (a group: the elements sharing every other coordinate). */
  axes: number[];
  affine: boolean;
}

/**
 * The op on random x with γ, β and upstream g; its output and gradients beside the float64 reference's.
 * γ and β are `paramShape`; `paramAt` maps an element of x to its slot in them.
 */
async function check(
  engine: Engine,
  c: Case,
  paramShape: number[],
  paramAt: (i: number) => number,
  run: (x: Tensor, o: { weight?: Tensor; bias?: Tensor }) => Tensor,
  seed: number,
  what: string,
) {
  const params = size(paramShape);
  const x = randomArray(size(c.shape), seed, -2, 2);
  const w = randomArray(params, seed + 1, 0.5, 1.5);
  const b = randomArray(params, seed + 2);
  const g = randomArray(size(c.shape), seed + 3);
  const [y, dx, dw, db] = await Promise.all(
    engine.tidy(() => {
      const xt = engine.tensor(x, c.shape);
      const [wt, bt] = [engine.tensor(w, paramShape), engine.tensor(b, paramShape)];
      const y = run(xt, c.affine ? { weight: wt, bias: bt } : {});
      const loss = sum(mul(y, engine.tensor(g, c.shape)));
      return [y, ...grad(loss, [xt, wt, bt])];
    }).map(take),
  );
  const gs = groups(c.shape, c.axes);
  const a: RefAffine = {
    weight: c.affine ? spread(w, c.shape, paramAt) : null,
    bias: c.affine ? spread(b, c.shape, paramAt) : null,
    eps: 1e-5,
  };
  assertClose(y, refStandardize(x, gs, a), Y_TOL, `${what} ${c.shape} y`);
  const ref = refStandardizeGrad(x, g, gs, a);
  assertCloseScaled(dx, ref.dx, DX_RTOL, `${what} ${c.shape} dx`);
  // Unused parameters get zero gradients; used ones sum over the batch (f32 tree sums of ≤ 100,003 terms).
  const zeros = new Float64Array(params);
  assertCloseScaled(
    dw,
    c.affine ? sumInto(ref.gxhat, params, paramAt) : zeros,
    1e-5,
    `${what} ${c.shape} dweight`,
  );
  assertCloseScaled(db, c.affine ? sumInto(g, params, paramAt) : zeros, 1e-5, `${what} ${c.shape} dbias`);
}

// Normalised trailing dims: one element (variance 0: y = β), primes, a row past the workgroup and one past
// llvmpipe's loop cap (100,003), two trailing dims.
const LAYER_CASES: [number[], number, boolean][] = [
  [[1, 1], 1, true],
  [[3, 7], 1, true],
  [[4, 257], 1, false],
  [[2, 5, 13], 2, true],
  [[2, 100_003], 1, true],
];

test("layerNorm and its gradients match the float64 reference", async (engine) => {
  const before = engine.memory();
  for (const [k, [shape, dims, affine]] of LAYER_CASES.entries()) {
    const normalized = shape.slice(-dims);
    const params = size(normalized);
    const axes = normalized.map((_, i) => shape.length - dims + i);
    await check(
      engine,
      { shape, axes, affine },
      normalized,
      (i) => i % params,
      (x, o) => layerNorm(x, normalized, o),
      10 * k,
      "layerNorm",
    );
  }
  assertNoLeak(engine, before);
});

// [N, C, ...]: BatchNorm1d's [N, C] and [N, C, L], BatchNorm2d's [N, C, H, W] (primes), one value per channel
// and sample but several samples, and 70,001 values per channel.
const BATCH_CASES: [number[], boolean][] = [
  [[4, 16], true],
  [[3, 2, 17], false],
  [[5, 3, 7, 11], true],
  [[6, 5, 1, 1], true],
  [[7, 2, 10_001], true],
];

test("batchNorm in training and its gradients match the float64 reference", async (engine) => {
  const before = engine.memory();
  for (const [k, [shape, affine]] of BATCH_CASES.entries()) {
    const c = shape[1];
    const inner = size(shape.slice(2));
    const axes = shape.map((_, i) => i).filter((i) => i !== 1);
    await check(
      engine,
      { shape, axes, affine },
      [c],
      (i) => Math.floor(i / inner) % c,
      (x, o) => batchNorm(x, o),
      20 * k,
      "batchNorm",
    );
  }
  assertNoLeak(engine, before);
});

test("batchNorm and layerNorm over activations bigger than one binding", () =>
  // On engines that bind at most 1 MiB, [40, 8, 32, 32] (1.3 MiB): the broadcasts run in parts along the batch.
  bothKernels(async (engine) => {
    const before = engine.memory();
    const shape = [40, 8, 32, 32];
    await check(
      engine,
      { shape, axes: [0, 2, 3], affine: true },
      [8],
      (i) => Math.floor(i / 1024) % 8,
      (x, o) => batchNorm(x, o),
      90,
      "batchNorm",
    );
    await check(
      engine,
      { shape, axes: [2, 3], affine: true },
      [32, 32],
      (i) => i % 1024,
      (x, o) => layerNorm(x, [32, 32], o),
      91,
      "layerNorm",
    );
    assertNoLeak(engine, before);
  }, { maxStorageBufferBindingSize: 2 ** 20 }));

test("batchNorm's running statistics: updated in place in training, used in evaluation", async (engine) => {
  const shape = [6, 3, 4, 5];
  const x = randomArray(size(shape), 1, -1, 3);
  const [m0, v0] = [Float32Array.of(0.5, -1, 2), Float32Array.of(1, 2, 0.5)];
  using xt = engine.tensor(x, shape);
  using runMean = engine.tensor(m0, [3]);
  using runVar = engine.tensor(v0, [3]);
  const before = engine.memory();
  const running = { mean: runMean, var: runVar };
  await take(batchNorm(xt, { running, momentum: 0.25 }));
  const gs = groups(shape, [0, 2, 3]);
  const n = gs[0].length;
  const mu = gs.map((idx) => idx.reduce((s, i) => s + x[i], 0) / n);
  const unbiased = gs.map((idx, k) => idx.reduce((s, i) => s + (x[i] - mu[k]) ** 2, 0) / (n - 1));
  // One f32 mean (≤ ~1e-6 relative) and one blend with the old value: 1e-5.
  const expectMean = mu.map((m, k) => 0.75 * m0[k] + 0.25 * m);
  const expectVar = unbiased.map((v, k) => 0.75 * v0[k] + 0.25 * v);
  assertClose(await runMean.toArray(), expectMean, { rtol: 1e-5, atol: 1e-6 }, "running mean");
  assertClose(await runVar.toArray(), expectVar, { rtol: 1e-5, atol: 1e-6 }, "running var");
  // Evaluation: the running statistics, unchanged; the gradient goes through them as constants.
  const g = randomArray(size(shape), 2);
  const [y, dx] = await Promise.all(
    engine.tidy(() => {
      const y = batchNorm(xt, { running, training: false });
      return [y, ...grad(sum(mul(y, engine.tensor(g, shape))), [xt])];
    }).map(take),
  );
  const fixed = { mean: expectMean, var: expectVar };
  const a = { weight: null, bias: null, eps: 1e-5, fixed };
  assertClose(y, refStandardize(x, gs, a), Y_TOL, "evaluation y");
  assertClose(dx, refStandardizeGrad(x, g, gs, a).dx, Y_TOL, "evaluation dx");
  assertClose(await runMean.toArray(), expectMean, { rtol: 1e-5, atol: 1e-6 }, "evaluation leaves the mean");
  assertNoLeak(engine, before);
});

test("layerNorm and batchNorm gradients match finite differences", async (engine) => {
  const shape = [3, 2, 4];
  const x = randomArray(size(shape), 5, -2, 2);
  const g = randomArray(size(shape), 6);
  using gt = engine.tensor(g, shape);
  using w = engine.tensor(Float32Array.of(1.5, 0.5, 1, 2), [4]);
  const before = engine.memory();
  const ops: [string, (t: Tensor) => Tensor][] = [
    ["layerNorm", (t) => layerNorm(t, [4], { weight: w })],
    ["batchNorm", (t) => batchNorm(t)],
  ];
  for (const [name, op] of ops) {
    const loss = (v: Float32Array) =>
      take(engine.tidy(() => sum(mul(op(engine.tensor(v, shape)), gt)))).then((l) => l[0]);
    const [dx] = await Promise.all(
      engine.tidy(() => {
        const xt = engine.tensor(x, shape);
        return grad(sum(mul(op(xt), gt)), [xt]);
      }).map(take),
    );
    const at = [0, 5, 11, 17, 23];
    // Central differences with h = 1e-2 on a smooth loss of magnitude ~3: truncation ~h²·|f'''| ≲ 1e-3 and the
    // f32 loss's rounding ~3e-7 · 3 / 2e-2 ≈ 5e-5.
    const fd = await finiteDifference(loss, x, at);
    assertClose(at.map((i) => dx[i]), fd, { rtol: 1e-2, atol: 2e-3 }, name);
  }
  assertNoLeak(engine, before);
});

test("layerNorm and batchNorm name what is wrong, and leak nothing", async (engine) => {
  using x = engine.tensor(randomArray(2 * 3 * 4, 1), [2, 3, 4]);
  using w3 = engine.ones([3]);
  using w4 = engine.ones([4]);
  using one = engine.tensor([1, 2, 3], [1, 3]);
  using flat = engine.ones([5]);
  using ints = engine.zeros([2, 3], "i32");
  const before = engine.memory();
  await assertThrows(() => layerNorm(x, [3]), ShapeError, ["[3]", "[2, 3, 4]"]);
  await assertThrows(() => layerNorm(x, []), ShapeError, ["[]", "[2, 3, 4]"]);
  await assertThrows(() => layerNorm(x, [4], { weight: w3 }), ShapeError, ["weight [3]", "[4]", "[2, 3, 4]"]);
  await assertThrows(() => layerNorm(x, [4], { eps: -1 }), RangeError, ["eps"]);
  await assertThrows(() => layerNorm(ints, [3]), TypeError, ["i32"]);
  await assertThrows(() => batchNorm(x, { bias: w4 }), ShapeError, ["bias [4]", "[3]", "[2, 3, 4]"]);
  await assertThrows(() => batchNorm(flat), ShapeError, ["[5]", "[N, C, ...]"]);
  await assertThrows(() => batchNorm(one), ShapeError, ["[1, 3]", "1 value per channel"]);
  await assertThrows(() => batchNorm(x, { training: false }), Error, ["running"]);
  await assertThrows(() => batchNorm(x, { momentum: 2 }), RangeError, ["momentum"]);
  await assertThrows(() => batchNorm(x, { running: { mean: w3, var: w4 } }), ShapeError, ["running var [4]"]);
  const gone = engine.ones([2, 3]);
  gone.dispose();
  await assertThrows(() => batchNorm(gone), Error, ["dispose"]);
  await assertThrows(() => layerNorm(x, [4], { weight: gone }), Error, ["dispose"]);
  // A running statistic of null (a JavaScript caller's None) is named; it leaked the reshaped mean.
  const nullVar = { mean: w3, var: null } as unknown as { mean: Tensor; var: Tensor };
  await assertThrows(() => batchNorm(x, { running: nullVar, training: false }), TypeError, [
    "running var",
    "null",
  ]);
  assertNoLeak(engine, before);
});

test("layerNorm and batchNorm take a weight or bias of null as none (torch's None), with gradients", async (engine) => {
  // Recording, null reached the graph's inputs: "Cannot read properties of null", and 3 tensors leaked.
  using x = engine.tensor(randomArray(2 * 3 * 4, 2), [2, 3, 4]);
  using w = engine.tensor([0.5, 2, -1, 3], [4]);
  using c = engine.tensor([0.5, 2, -1], [3]);
  const before = engine.memory();
  const cases: [string, (t: Tensor) => Tensor, (t: Tensor) => Tensor][] = [
    [
      "layerNorm",
      (t) => layerNorm(t, [4], { weight: w, bias: null }),
      (t) => layerNorm(t, [4], { weight: w }),
    ],
    ["layerNorm", (t) => layerNorm(t, [4], { weight: null, bias: w }), (t) => layerNorm(t, [4], { bias: w })],
    ["batchNorm", (t) => batchNorm(t, { weight: c, bias: null }), (t) => batchNorm(t, { weight: c })],
  ];
  for (const [name, withNull, without] of cases) {
    const [y, dx] = engine.tidy(() => {
      const y = withNull(x);
      return [y, grad(sum(mul(y, y)), [x])[0]];
    });
    const [z, dz] = engine.tidy(() => {
      const z = without(x);
      return [z, grad(sum(mul(z, z)), [x])[0]];
    });
    assertClose(await take(y), await take(z), { rtol: 0, atol: 0 }, name);
    assertClose(await take(dx), await take(dz), { rtol: 0, atol: 0 }, `${name}'`);
  }
  assertNoLeak(engine, before);
});
