import { grad, matmul, reshape, ShapeError, type Tensor } from "../src/mod.ts";
import { refMatmul } from "../src/ref/matmul.ts";
import { bothKernels, test } from "./harness.ts";
import {
  assert,
  assertClose,
  assertEquals,
  assertNoLeak,
  assertThrows,
  finiteDifference,
  randomArray,
  take,
} from "./util.ts";

const EPS = 2 ** -23;
type Flags = { transA?: boolean; transB?: boolean };
const COMBOS: Flags[] = [{}, { transA: true }, { transB: true }, { transA: true, transB: true }];

/** Stored shapes of a and b for op(a) [..., M, K] and op(b) [..., K, N]. */
function operandShapes(aBatch: number[], bBatch: number[], m: number, k: number, n: number, f: Flags) {
  return [[...aBatch, ...(f.transA ? [k, m] : [m, k])], [...bBatch, ...(f.transB ? [n, k] : [k, n])]];
}

/**
 * Every |got − ref| ≤ bound · Σ|a||b| (the same sum over |values|, per element): the f32 summation error bound
 * scales with Σ|a_ik||b_kj|, not with the (possibly cancelling) result.
 */
function assertWithinBound(
  got: ArrayLike<number>,
  a: { data: Float32Array; shape: number[] },
  b: { data: Float32Array; shape: number[] },
  f: Flags,
  bound: number,
  what: string,
): void {
  const ref = refMatmul(a, b, f);
  const mag = refMatmul({ data: a.data.map(Math.abs), shape: a.shape }, {
    data: b.data.map(Math.abs),
    shape: b.shape,
  }, f);
  assertEquals(got.length, ref.data.length, `${what}: size`);
  let worst = 0;
  let at = 0;
  for (let i = 0; i < got.length; i++) {
    const r = Math.abs(got[i] - ref.data[i]) / mag.data[i];
    if (!(r <= worst)) [worst, at] = [r, i];
  }
  assert(
    worst <= bound,
    `${what}: element ${at}: got ${got[at]}, expected ${ref.data[at]}, error ${
      worst.toExponential(2)
    }·Σ|a||b| > ${bound.toExponential(2)}`,
  );
}

async function check(
  engine: Parameters<Parameters<typeof test>[1]>[0],
  aShape: number[],
  bShape: number[],
  f: Flags,
  seed: number,
  bound: (k: number) => number,
  lo = -1,
) {
  const before = engine.memory();
  const a = { data: randomArray(aShape.reduce((x, y) => x * y, 1), seed, lo), shape: aShape };
  const b = { data: randomArray(bShape.reduce((x, y) => x * y, 1), seed + 1, lo), shape: bShape };
  const ta = engine.tensor(a.data, aShape);
  const tb = engine.tensor(b.data, bShape);
  const c = matmul(ta, tb, f);
  const expectedShape = refMatmul({ data: [], shape: aShape }, { data: [], shape: bShape }, f).shape;
  const what = `${JSON.stringify(aShape)}·${JSON.stringify(bShape)} ${JSON.stringify(f)}`;
  assertEquals(c.shape, expectedShape, `${what}: shape`);
  const k = f.transA ? aShape.at(-2)! : aShape.at(-1)!;
  assertWithinBound(await take(c), a, b, f, bound(k), what);
  ta.dispose();
  tb.dispose();
  assertNoLeak(engine, before, what);
}

// Deterministic worst case for any summation order with one rounding per step (FMA) plus the split-K combine:
// |error| ≤ γ_{K+S}·Σ|a||b| ≈ (K + S)·2^-24·Σ|a||b| (Higham, Accuracy and Stability, §3.1); K + 1 covers S here.
const worstCase = (k: number) => (k + 1) * EPS / 2;

test("matmul: 2-D shapes incl. 1, primes and tile edges, all transpose combos, vs float64 reference", async (engine) => {
  const shapes = [[1, 1, 1], [7, 13, 5], [97, 61, 33], [1, 300, 1], [65, 9, 129], [3, 1, 200]];
  let seed = 1;
  for (const [m, k, n] of shapes) {
    for (const f of COMBOS) {
      const [as, bs] = operandShapes([], [], m, k, n, f);
      await check(engine, as, bs, f, seed++, worstCase);
    }
  }
});

test("matmul: both kernels (workgroup-memory tiles; CPU adapters' vec4 and uniform-slab reads) where dims are multiples of 4", () =>
  // Dims that are all multiples of 4 take the `slab` entry with cpuKernels for one batch item, M ≥ 256 (512 with
  // A transposed) and K ≤ 1,024 (else `direct`), and the tiled one without; bothKernels runs both. Shapes cross
  // the tile edges (64, 128), take narrow and short products on direct (N = 28, 60: 2 or 4 invocations across;
  // M = 4 and 8, 12 and 16, 20: 1, 2 or 4 invocations down) and cross
  // the slab's edges (16 rows, 8 columns), fill the slab's window (K = 1,024: one block a window), put several
  // 16-row blocks in one window (K = 4: 17 blocks, the last part past M; K = 400: 2 blocks a window over 10
  // windows, the last window's second block wholly past M), take a transposed A into the slab (M = 516, 520),
  // split K over slices (K > 1,024) and broadcast a batch.
  bothKernels(async (engine) => {
    let seed = 300;
    const direct = [[4, 4, 4], [8, 12, 68], [68, 4, 132], [20, 1024, 12], [132, 2052, 8], [12, 20, 28], [
      16,
      8,
      60,
    ]];
    const slab = [[260, 4, 132], [300, 400, 72], [256, 1024, 12], [516, 8, 12], [520, 400, 8]];
    for (const [m, k, n] of [...direct, ...slab]) {
      for (const f of COMBOS) {
        const [as, bs] = operandShapes([], [], m, k, n, f);
        await check(engine, as, bs, f, seed++, worstCase);
      }
    }
    for (const f of COMBOS) {
      const [as, bs] = operandShapes([3, 2], [2], 12, 8, 20, f);
      await check(engine, as, bs, f, seed++, worstCase);
    }
  }));

test("matmul: batch dims broadcast NumPy-style, 2-D operand against batched, with transposes", async (engine) => {
  const cases: [number[], number[]][] = [[[2, 1], [3]], [[], [4]], [[5], []], [[3], [3]], [[1, 2, 1], [
    2,
    1,
    3,
  ]]];
  let seed = 100;
  for (const [ab, bb] of cases) {
    for (const f of COMBOS) {
      const [as, bs] = operandShapes(ab, bb, 5, 7, 6, f);
      await check(engine, as, bs, f, seed++, worstCase);
    }
  }
});

test("matmul: K = 100,000 splits K across workgroups and stays exact (llvmpipe loop cap)", async (engine) => {
  // Values in [0.5, 1): no cancellation, so a dropped K-range (a loop silently cut short) shows up as a large
  // shortfall. Tolerance: the probabilistic f32 bound √K·eps·Σ|a||b| (Higham & Mary 2019), ≈ 3.8e-5·Σ|a||b|;
  // losing a single term of ~0.56 would be ≥ 2.2e-5·Σ|a||b| ≈ 0.56/25,000 ... while a lost slice is ~1e-2.
  const k = 100_000;
  await check(engine, [3, k], [k, 2], {}, 7, (k) => Math.sqrt(k) * EPS, 0.5);
  await check(engine, [k, 2], [3, k], { transA: true, transB: true }, 8, (k) => Math.sqrt(k) * EPS, 0.5);
});

test("matmul: a dispatch of more than 65,535 workgroups (65,537 batch items, 2-D b broadcast)", async (engine) => {
  await check(engine, [65_537, 2, 3], [3, 2], {}, 11, worstCase);
});

test("matmul: a transposed A of one whole binding takes the slab (its padded copy is past one binding)", async (engine) => {
  // With cpuKernels (CPU adapters, as in CI) a transposed A of M ≥ 512 rows is block-transposed into a copy with
  // 64 KiB of slack after it; with A exactly maxStorageBufferBindingSize that copy is bigger than one binding,
  // so the transpose must write it through a window of A's size.
  const k = 1024;
  const m = Math.floor(engine.maxBinding / 4 / k / 16) * 16;
  await check(engine, [k, m], [k, 4], { transA: true }, 13, worstCase, 0);
});

/** Scalar loss Σ C·W as a [1, 1] product (a differentiable scalar without other op families), and its temporary. */
function loss(c: Tensor, w: Tensor): [Tensor, Tensor] {
  const flat = reshape(c, [1, c.size]);
  return [matmul(flat, w), flat];
}

test("matmul: gradients vs float64 reference and finite differences, all transpose combos", async (engine) => {
  const [m, k, n] = [5, 7, 3];
  let seed = 200;
  for (const f of COMBOS) {
    const before = engine.memory();
    const [as, bs] = operandShapes([], [], m, k, n, f);
    const ad = randomArray(m * k, seed++);
    const bd = randomArray(k * n, seed++);
    const wd = randomArray(m * n, seed++);
    const a = engine.tensor(ad, as);
    const b = engine.tensor(bd, bs);
    const w = engine.tensor(wd, [m * n, 1]);
    const c = matmul(a, b, f);
    const [l, flat] = loss(c, w);
    const [ga, gb] = grad(l, [a, b]);
    [c, l, flat].forEach((t) => t.dispose());
    const gaData = await take(ga);
    const gbData = await take(gb);
    // Reference: dL/dC = W; dA' = W·B'ᵀ, dB' = A'ᵀ·W (A' = op(A)), transposed back where the operand was.
    const gw = { data: wd, shape: [m, n] };
    const A = { data: ad, shape: as };
    const B = { data: bd, shape: bs };
    const refA = f.transA
      ? refMatmul(B, gw, { transA: f.transB, transB: true })
      : refMatmul(gw, B, { transB: !f.transB });
    const refB = f.transB
      ? refMatmul(gw, A, { transA: true, transB: f.transA })
      : refMatmul(A, gw, { transA: !f.transA });
    // Sums of ≤ 5 products of values in [-1, 1): |error| ≤ 5·2^-24·5 < 2e-6.
    const tol = { atol: 2e-6, rtol: 1e-6 };
    assertClose(gaData, refA.data, tol, `dA ${JSON.stringify(f)}`);
    assertClose(gbData, refB.data, tol, `dB ${JSON.stringify(f)}`);
    // Finite differences: the loss is linear in each operand, so central differences are exact up to the f32
    // rounding of the loss (|L| ≲ 35, 2^-24·35 ≈ 2e-6, divided by 2h = 0.02): 1e-3 is ample yet catches a swap.
    const evalLoss = async (x: Float32Array, isA: boolean) => {
      const xa = engine.tensor(isA ? x : ad, as);
      const xb = engine.tensor(isA ? bd : x, bs);
      const cc = matmul(xa, xb, f);
      const [lt, flat] = loss(cc, w);
      const lv = (await take(lt))[0];
      [xa, xb, cc, flat].forEach((t) => t.dispose());
      return lv;
    };
    const idx = [0, 4, 11, 20];
    const fdA = await finiteDifference((x) => evalLoss(x, true), ad, idx);
    const fdB = await finiteDifference((x) => evalLoss(x, false), bd, idx);
    const fdTol = { atol: 1e-3, rtol: 1e-3 };
    assertClose(idx.map((i) => gaData[i]), fdA, fdTol, `dA vs finite differences ${JSON.stringify(f)}`);
    assertClose(idx.map((i) => gbData[i]), fdB, fdTol, `dB vs finite differences ${JSON.stringify(f)}`);
    [a, b, w].forEach((t) => t.dispose());
    assertNoLeak(engine, before, `gradients ${JSON.stringify(f)}`);
  }
});

test("matmul: gradients sum over broadcast batch dims", async (engine) => {
  const before = engine.memory();
  const [m, k, n] = [3, 4, 2];
  const ad = randomArray(2 * 1 * m * k, 300);
  const bd = randomArray(3 * k * n, 301);
  const wd = randomArray(2 * 3 * m * n, 302);
  const a = engine.tensor(ad, [2, 1, m, k]);
  const b = engine.tensor(bd, [3, k, n]);
  const w = engine.tensor(wd, [wd.length, 1]);
  const c = matmul(a, b);
  const [l, flat] = loss(c, w);
  const [ga, gb] = grad(l, [a, b]);
  [c, l, flat].forEach((t) => t.dispose());
  assertEquals(ga.shape, [2, 1, m, k], "dA shape");
  assertEquals(gb.shape, [3, k, n], "dB shape");
  // dA[i] = Σ_j W[i,j]·B[j]ᵀ and dB[j] = Σ_i A[i]ᵀ·W[i,j], from the batched reference summed on the CPU.
  const gw = { data: wd, shape: [2, 3, m, n] };
  const perA = refMatmul(gw, { data: bd, shape: [3, k, n] }, { transB: true }).data; // [2, 3, m, k]
  const perB = refMatmul({ data: ad, shape: [2, 1, m, k] }, gw, { transA: true }).data; // [2, 3, k, n]
  const mk = m * k;
  // refA[i, e] = Σ_j perA[i, j, e] over the 3 broadcast items j of b.
  const refA = new Float64Array(2 * mk).map((_, t) => {
    const [i, e] = [Math.floor(t / mk), t % mk];
    return perA[(3 * i) * mk + e] + perA[(3 * i + 1) * mk + e] + perA[(3 * i + 2) * mk + e];
  });
  const refB = new Float64Array(3 * k * n).map((_, t) => perB[t] + perB[3 * k * n + t]);
  // Sums of ≤ 3·4 products of values in [-1, 1): |error| ≤ 12·2^-24·12 < 1e-5.
  assertClose(await take(ga), refA, { atol: 1e-5, rtol: 1e-6 }, "dA");
  assertClose(await take(gb), refB, { atol: 1e-5, rtol: 1e-6 }, "dB");
  [a, b, w].forEach((t) => t.dispose());
  assertNoLeak(engine, before, "broadcast gradients");
});

test("matmul: a B shared by a batch of A (a layer's weight) is one product, forward and backward", () =>
  // b without batch dims, or with batch dims of 1, against a [2, 3, ...] batch of A, every transpose combination:
  // the forward reads A's items as the row blocks of one matrix (untransposed A), and dB is one product over
  // all their rows. [2, 3, 5, 7] exercises the direct kernels; [2, 2, 80, 12] (320 rows, dims multiples of 4)
  // the slab on CPU adapters, forward and in dB (K = 320). Reference: per item, dB summed over the items.
  bothKernels(async (engine) => {
    let seed = 400;
    for (const [m, k, n] of [[5, 7, 3], [80, 12, 8]]) {
      for (const bBatch of [[], [1, 1], [1]]) {
        for (const f of COMBOS) {
          const before = engine.memory();
          {
            const [as, bs] = operandShapes([2, m === 5 ? 3 : 2], bBatch, m, k, n, f);
            const items = as[0] * as[1];
            const ad = randomArray(items * m * k, seed++);
            const bd = randomArray(k * n, seed++);
            const wd = randomArray(items * m * n, seed++);
            using a = engine.tensor(ad, as);
            using b = engine.tensor(bd, bs);
            using w = engine.tensor(wd, [wd.length, 1]);
            const c = matmul(a, b, f);
            const what = `${JSON.stringify(as)}·${JSON.stringify(bs)} ${JSON.stringify(f)}`;
            const A = { data: ad, shape: as };
            const B = { data: bd, shape: bs };
            // Sums of ≤ 12 products of values in [-1, 1) (dB: ≤ 2·2·80 = 320): the f32 worst case (K + 1)·2^-24·K.
            const tol = (terms: number) => ({ atol: (terms + 1) * terms * EPS / 2, rtol: 0 });
            assertClose(await c.toArray(), refMatmul(A, B, f).data, tol(k), `${what}: C`);
            const [l, flat] = loss(c, w);
            const [ga, gb] = grad(l, [a, b]);
            [c, l, flat].forEach((t) => t.dispose());
            assertEquals(gb.shape, bs, `${what}: dB shape`);
            const gw = { data: wd, shape: [...as.slice(0, -2), m, n] };
            const refA = f.transA
              ? refMatmul(B, gw, { transA: f.transB, transB: true })
              : refMatmul(gw, B, { transB: !f.transB });
            const perItem = f.transB
              ? refMatmul(gw, A, { transA: true, transB: f.transA })
              : refMatmul(A, gw, { transA: !f.transA });
            const refB = new Float64Array(k * n).map((_, e) =>
              Array.from({ length: items }, (_, i) => perItem.data[i * k * n + e]).reduce((x, y) => x + y)
            );
            assertClose(await take(ga), refA.data, tol(n), `${what}: dA`);
            assertClose(await take(gb), refB, tol(items * m), `${what}: dB`);
          }
          assertNoLeak(engine, before, `shared B ${JSON.stringify(f)}`);
        }
      }
    }
  }));

test("matmul: bad input throws a clear error and leaks nothing", async (engine) => {
  const a = engine.tensor(randomArray(6, 1), [2, 3]);
  const b = engine.tensor(randomArray(8, 2), [4, 2]);
  const i = engine.tensor(new Int32Array(6), [3, 2]);
  const before = engine.memory();
  await assertThrows(() => matmul(a, b), ShapeError, ["[2, 3]", "[4, 2]", "3 vs 4"]);
  await assertThrows(() => matmul(a, b, { transA: true }), ShapeError, [
    "[2, 3]",
    "[4, 2]",
    "transA true",
    "2 vs 4",
  ]);
  await assertThrows(() => matmul(a, i), TypeError, ["i32"]);
  const x = engine.tensor(randomArray(2 * 2 * 3, 3), [2, 2, 3]);
  const y = engine.tensor(randomArray(3 * 3 * 2, 4), [3, 3, 2]);
  await assertThrows(() => matmul(x, y), ShapeError, ["[2]", "[3]"]);
  // 9 batch dims that do not merge are over the kernel's 8 (thrown before allocating).
  {
    using deepX = engine.zeros([2, 1, 2, 1, 2, 1, 2, 1, 2, 3, 3]);
    using deepY = engine.zeros([1, 2, 1, 2, 1, 2, 1, 2, 1, 3, 3]);
    await assertThrows(() => matmul(deepX, deepY), ShapeError, [
      "batch dims",
      "[2, 1, 2",
      "[1, 2, 1",
      "9 dims",
    ]);
  }
  const v = engine.tensor(randomArray(3, 5), [3]);
  await assertThrows(() => matmul(a, v), ShapeError, ["[3]", "at least 2 dims"]);
  [x, y, v].forEach((t) => t.dispose());
  assertNoLeak(engine, before, "after errors");
  b.dispose();
  await assertThrows(() => matmul(a, b, { transB: true }), Error, ["used after dispose"]);
  assertEquals(engine.memory().tensors, before.tensors - 1, "tensors after dispose");
  [a, i].forEach((t) => t.dispose());
});
