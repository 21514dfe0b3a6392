import {
  avgPool2d,
  conv2d,
  fold,
  grad,
  maxPool2d,
  type MaxPoolOptions,
  mul,
  type PoolOptions,
  ShapeError,
  sum,
  unfold,
  type WindowOptions,
} from "../src/mod.ts";
import type { Engine, Tensor } from "../src/mod.ts";
import { MAX_TAPS, windowOf } from "../src/conv.ts";
import { refConv2d, refConv2dGrad, refFold, refPool2d, refPool2dGrad, refUnfold } from "../src/ref/conv.ts";
import { bothKernels, test } from "./harness.ts";
import {
  assert,
  assertClose,
  assertCloseScaled,
  assertNoLeak,
  assertThrows,
  finiteDifference,
  randomArray,
  take,
} from "./util.ts";

const size = (shape: readonly number[]) => shape.reduce((a, b) => a * b, 1);

// [image shape, window]: size 1, primes, rectangular kernels, stride, padding and dilation alone and together,
// padding wider than the kernel reaches (whole rows of zeros), a stride past the kernel (pixels no tap reads).
const CASES: [number[], WindowOptions][] = [
  [[1, 1, 1, 1], { kernel: 1 }],
  [[2, 3, 7, 5], { kernel: 3, padding: 1 }],
  [[1, 2, 13, 11], { kernel: [3, 2], stride: [2, 3], padding: [1, 0], dilation: [1, 2] }],
  [[3, 1, 17, 19], { kernel: 5, dilation: 3, padding: 4 }],
  [[2, 5, 6, 9], { kernel: [1, 4], stride: 4, padding: [3, 1] }],
  [[1, 3, 31, 29], { kernel: 2, stride: 3 }],
];

// unfold only moves values: exact. fold sums at most KH·KW column values of magnitude ≤ 1 in f32, each sum's
// rounding ≤ taps · 2^-24 · taps: atol 1e-5 covers 25 taps with room; rtol for the larger sums.
const FOLD_TOL = { rtol: 1e-6, atol: 1e-5 };

test("unfold and fold match the float64 reference: padding, stride, dilation, rectangular kernels", async (engine) => {
  const before = engine.memory();
  for (const [k, [shape, o]] of CASES.entries()) {
    const win = windowOf("test", shape.slice(2), o);
    const x = randomArray(size(shape), k);
    using xt = engine.tensor(x, shape);
    const cols = unfold(xt, o);
    const rows = shape[1] * win.kernel[0] * win.kernel[1];
    assert(
      cols.shape.join() === [shape[0], rows, win.out[0] * win.out[1]].join(),
      `${shape} ${JSON.stringify(o)}: columns ${cols.shape}`,
    );
    assertClose(await take(cols), refUnfold(x, shape, win), { rtol: 0, atol: 0 }, `unfold ${shape}`);
    const c = randomArray(shape[0] * rows * win.out[0] * win.out[1], 100 + k);
    using ct = engine.tensor(c, [shape[0], rows, win.out[0] * win.out[1]]);
    const img = fold(ct, { ...o, outputSize: [shape[2], shape[3]] });
    assert(img.shape.join() === shape.join(), `fold ${shape}: got ${img.shape}`);
    assertClose(await take(img), refFold(c, shape, win), FOLD_TOL, `fold ${shape} ${JSON.stringify(o)}`);
  }
  assertNoLeak(engine, before);
});

test("fold is unfold's adjoint and each is the other's gradient", async (engine) => {
  const before = engine.memory();
  const shape = [2, 3, 11, 8];
  const o = {
    kernel: [3, 4],
    stride: [2, 3],
    padding: [2, 1],
    dilation: [1, 2],
    outputSize: [11, 8],
  } as const;
  const win = windowOf("test", shape.slice(2), o);
  const colsShape = [2, 3 * 12, win.out[0] * win.out[1]];
  const [l, r, dx, folded, dg, cols] = await Promise.all(
    engine.tidy(() => {
      const x = engine.tensor(randomArray(size(shape), 1), shape);
      const g = engine.tensor(randomArray(size(colsShape), 2), colsShape);
      const { outputSize: _, ...window } = o; // unfold takes no outputSize
      const cols = unfold(x, window);
      const left = sum(mul(cols, g));
      const folded = fold(g, o);
      const [dx] = grad(left, [x]);
      const [dg] = grad(sum(mul(fold(g, o), x)), [g]);
      return [left, sum(mul(x, folded)), dx, folded, dg, cols];
    }).map(take),
  );
  // ⟨unfold(x), g⟩ = ⟨x, fold(g)⟩, both f32 sums of ~2,000 terms of magnitude ≤ 1: they agree to ~1e-5.
  assert(
    Math.abs(l[0] - r[0]) <= 1e-5 * Math.max(1, Math.abs(l[0])),
    `⟨unfold x, g⟩ ${l} vs ⟨x, fold g⟩ ${r}`,
  );
  assertClose(dx, folded, { rtol: 0, atol: 0 }, "unfold's gradient is fold");
  assertClose(dg, cols, { rtol: 0, atol: 0 }, "fold's gradient is unfold");
  assertNoLeak(engine, before);
});

test("unfold and fold over 65,535 workgroups", async (engine) => {
  const before = engine.memory();
  // 4 channels × 25 taps × 420² positions: 17.6M column elements, 68,907 workgroups of 256.
  const shape = [1, 4, 420, 420];
  const o: WindowOptions = { kernel: 5, padding: 2 };
  const x = randomArray(size(shape), 3);
  const xt = engine.tensor(x, shape);
  const expected = refUnfold(x, shape, windowOf("test", [420, 420], o));
  assertClose(await take(unfold(xt, o)), expected, { rtol: 0, atol: 0 }, "unfold");
  xt.dispose();
  // fold onto 4,100² pixels (16.8M, 65,664 workgroups): a 2×2 kernel of stride 2 reads each pixel once.
  const big = [1, 1, 4100, 4100];
  const f: WindowOptions = { kernel: 2, stride: 2 };
  const c = randomArray(4 * 2050 * 2050, 4);
  const ct = engine.tensor(c, [1, 4, 2050 * 2050]);
  const folded = await take(fold(ct, { ...f, outputSize: [4100, 4100] }));
  ct.dispose();
  assertClose(folded, refFold(c, big, windowOf("test", [4100, 4100], f)), { rtol: 0, atol: 0 }, "fold");
  assertNoLeak(engine, before);
});

// [x shape, weight shape, options]: a 1×1 convolution, primes, stride and dilation, padding, no bias, and
// positions in whole vec4s (unfold4) that wrap across output rows. Up to 196 positions a sample the columns are
// laid out batch inside; the last two cases (221 and 256 positions, the second in vec4s) take PyTorch's layout.
type ConvCase = Omit<WindowOptions, "kernel"> & { bias: boolean };
const CONV_CASES: [number[], number[], ConvCase][] = [
  [[1, 1, 1, 1], [1, 1, 1, 1], { bias: true }],
  [[2, 3, 9, 7], [5, 3, 3, 3], { padding: 1, bias: true }],
  [[3, 2, 13, 11], [4, 2, 3, 2], { stride: [1, 2], dilation: [3, 1], padding: [0, 2], bias: false }],
  [[1, 7, 5, 5], [8, 7, 5, 5], { padding: 2, bias: true }],
  [[2, 3, 10, 6], [4, 3, 3, 3], { padding: 1, bias: true }],
  [[2, 3, 13, 17], [4, 3, 3, 3], { padding: 1, bias: true }],
  [[3, 2, 16, 20], [6, 2, 3, 3], { padding: [1, 0], dilation: [1, 2], bias: false }],
];

/** conv2d of the case on the GPU and its gradients w.r.t. x, weight and bias of Σ g·y. */
async function convAndGrads(engine: Engine, xs: number[], ws: number[], o: ConvCase, seed: number) {
  const x = randomArray(size(xs), seed);
  const w = randomArray(size(ws), seed + 1);
  const b = randomArray(ws[0], seed + 2);
  using xt = engine.tensor(x, xs);
  using wt = engine.tensor(w, ws);
  using bt = engine.tensor(b, [ws[0]]);
  const { stride, padding, dilation } = o;
  const y = conv2d(xt, wt, { stride, padding, dilation, bias: o.bias ? bt : undefined });
  const win = windowOf("test", xs.slice(2), { stride, padding, dilation, kernel: [ws[2], ws[3]] });
  const g = randomArray(y.size, seed + 3);
  using gt = engine.tensor(g, y.shape);
  const prod = mul(y, gt);
  const loss = sum(prod);
  const grads = await Promise.all(grad(loss, o.bias ? [xt, wt, bt] : [xt, wt]).map(take));
  const out = await take(y);
  prod.dispose();
  loss.dispose();
  return { x, w, b, g, win, out, grads };
}

test("conv2d and its gradients match direct float64 sums: stride, padding, dilation, bias", async (engine) => {
  const before = engine.memory();
  for (const [k, [xs, ws, o]] of CONV_CASES.entries()) {
    const { x, w, b, g, win, out, grads } = await convAndGrads(engine, xs, ws, o, 10 * k);
    const what = `${xs} * ${ws} ${JSON.stringify(o)}`;
    // Each output sums C·KH·KW ≤ 175 products of magnitude ≤ 1 in f32 (matmul); the gradients sum over the
    // batch and positions too (≤ 429 terms): rounding grows like √terms · 2^-24 of the largest output.
    assertCloseScaled(out, refConv2d(x, xs, w, ws, o.bias ? b : null, win), 1e-5, `y ${what}`);
    const ref = refConv2dGrad(x, xs, w, ws, g, win);
    assertCloseScaled(grads[0], ref.dx, 1e-5, `dx ${what}`);
    assertCloseScaled(grads[1], ref.dw, 1e-5, `dweight ${what}`);
    if (o.bias) assertCloseScaled(grads[2], ref.db, 1e-5, `dbias ${what}`);
  }
  assertNoLeak(engine, before);
});

/**
 * avgPool2d and maxPool2d of x (shaped `shape`) and their gradients of Σ g·pool(x), against the float64
 * reference. A max is exact; an average sums ≤ 9 values of magnitude ≤ 3 in f32 (and the gradient divides once).
 */
async function checkPools(engine: Engine, x: Float32Array, shape: number[], o: MaxPoolOptions, seed: number) {
  const win = windowOf("test", shape.slice(2), { ...o, stride: o.stride ?? o.kernel });
  const g = randomArray(shape[0] * shape[1] * win.out[0] * win.out[1], seed);
  const tol = { rtol: 1e-6, atol: 1e-6 };
  // Dilation is max_pool2d's alone (avg_pool2d has none).
  const kinds = o.dilation
    ? [["max", maxPool2d]] as const
    : [["avg", avgPool2d], ["max", maxPool2d]] as const;
  for (const [kind, pool] of kinds) {
    const [y, dx] = await Promise.all(
      engine.tidy(() => {
        const xt = engine.tensor(x, shape);
        const y = pool(xt, o);
        return [y, ...grad(sum(mul(y, engine.tensor(g, y.shape))), [xt])];
      }).map(take),
    );
    assertClose(y, refPool2d(x, shape, win, kind), tol, `${kind} ${shape} ${JSON.stringify(o)}`);
    assertClose(dx, refPool2dGrad(x, shape, win, kind, g), tol, `${kind} gradient ${shape}`);
  }
}

test("conv2d and pooling over more columns than one binding holds run in chunks of samples", () =>
  // On engines that bind at most 1 MiB: columns of 40 × 36 rows × 16² positions (1.4 MiB, PyTorch's layout: 28
  // samples a chunk) and of 100 × 72 rows × 8² positions (1.8 MiB, batch inside: 56 a chunk). Tolerances as
  // above.
  bothKernels(async (engine) => {
    const before = engine.memory();
    const cases: [number[], number[]][] = [[[40, 4, 16, 16], [4, 4, 3, 3]], [[100, 8, 8, 8], [4, 8, 3, 3]]];
    for (const [k, [xs, ws]] of cases.entries()) {
      const { x, w, b, g, win, out, grads } = await convAndGrads(
        engine,
        xs,
        ws,
        { padding: 1, bias: true },
        70 + k,
      );
      const what = `${xs} * ${ws}`;
      assertCloseScaled(out, refConv2d(x, xs, w, ws, b, win), 1e-5, `y ${what}`);
      const ref = refConv2dGrad(x, xs, w, ws, g, win);
      assertCloseScaled(grads[0], ref.dx, 1e-5, `dx ${what}`);
      assertCloseScaled(grads[1], ref.dw, 1e-5, `dweight ${what}`);
      assertCloseScaled(grads[2], ref.db, 1e-5, `dbias ${what}`);
    }
    // Pooling windows of 40 × 8 channels × 9 taps × 16² positions (2.9 MiB): 14 samples a chunk.
    const shape = [40, 8, 16, 16];
    const same: PoolOptions = { kernel: 3, stride: 1, padding: 1 };
    await checkPools(engine, randomArray(size(shape), 80, -3, -1), shape, same, 81);
    // One sample's columns alone over the binding: 1,152 rows × 16² positions (1.2 MB).
    using big = engine.zeros([1, 128, 16, 16]);
    using wide = engine.zeros([1, 128, 3, 3]);
    const at = engine.memory();
    await assertThrows(
      () => conv2d(big, wide, { padding: 1 }),
      ShapeError,
      [
        "maxStorageBufferBindingSize",
        "[1, 128, 16, 16]",
      ],
    );
    assertNoLeak(engine, at);
    {
      // fold's columns over the binding, its image not: it checked only the image, and leaked it.
      using cols = engine.zeros([1, 128 * 9, 256]);
      const withCols = engine.memory();
      await assertThrows(() => fold(cols, { kernel: 3, padding: 1, outputSize: [16, 16] }), ShapeError, [
        "fold",
        "[1, 1152, 256]",
        "maxStorageBufferBindingSize",
      ]);
      assertNoLeak(engine, withCols, "fold");
    }
    big.dispose();
    wide.dispose();
    assertNoLeak(engine, before);
  }, { maxStorageBufferBindingSize: 2 ** 20 }));

test("conv2d gradients match finite differences", async (engine) => {
  const before = engine.memory();
  const xs = [2, 2, 5, 4];
  const ws = [3, 2, 3, 3];
  const o = { stride: 2, padding: 1 };
  const x = randomArray(size(xs), 7);
  const w = randomArray(size(ws), 8);
  using gt = engine.tensor(randomArray(2 * 3 * 3 * 2, 9), [2, 3, 3, 2]);
  const lossOf = (xt: Tensor, wt: Tensor) => sum(mul(conv2d(xt, wt, o), gt));
  const loss = (xv: Float32Array, wv: Float32Array) =>
    take(engine.tidy(() => lossOf(engine.tensor(xv, xs), engine.tensor(wv, ws)))).then((l) => l[0]);
  const [dx, dw] = await Promise.all(
    engine.tidy(() => {
      const [xt, wt] = [engine.tensor(x, xs), engine.tensor(w, ws)];
      return grad(lossOf(xt, wt), [xt, wt]);
    }).map(take),
  );
  const xi = [0, 7, 19, 33, 50, 79];
  const wi = [0, 5, 17, 30, 53];
  // The loss is linear in each input, so central differences are exact up to the f32 loss's rounding: with
  // h = 1e-2 and a loss of magnitude ~3, ~2e-7 · 3 / 2e-2 ≈ 3e-5 per derivative.
  const fdx = await finiteDifference((v) => loss(v, w), x, xi);
  const fdw = await finiteDifference((v) => loss(x, v), w, wi);
  assertClose(xi.map((i) => dx[i]), fdx, { rtol: 1e-3, atol: 2e-4 }, "dx");
  assertClose(wi.map((i) => dw[i]), fdw, { rtol: 1e-3, atol: 2e-4 }, "dweight");
  gt.dispose();
  assertNoLeak(engine, before);
});

test("conv2d, unfold and fold name what is wrong, and leak nothing", async (engine) => {
  using x = engine.tensor(randomArray(2 * 3 * 8 * 8, 1), [2, 3, 8, 8]);
  using w = engine.tensor(randomArray(4 * 2 * 3 * 3, 2), [4, 2, 3, 3]);
  using w3 = engine.tensor(randomArray(4 * 3 * 3 * 3, 3), [4, 3, 3, 3]);
  using b = engine.zeros([5]);
  using flat = engine.zeros([3, 64]);
  using ints = engine.zeros([2, 3, 8, 8], "i32");
  const before = engine.memory();
  await assertThrows(() => conv2d(x, w), ShapeError, ["[4, 2, 3, 3]", "[2, 3, 8, 8]"]);
  await assertThrows(() => conv2d(x, w3, { bias: b }), ShapeError, ["[5]", "[4]"]);
  await assertThrows(() => conv2d(flat, w3), ShapeError, ["[3, 64]", "[N, C, H, W]"]);
  await assertThrows(() => conv2d(ints, w3), TypeError, ["i32"]);
  await assertThrows(() => conv2d(x, w3, { stride: 0 }), RangeError, ["stride"]);
  await assertThrows(() => conv2d(x, w3, { padding: 1.5 }), RangeError, ["padding"]);
  await assertThrows(() => unfold(x, { kernel: 9 }), ShapeError, ["9×9", "8×8"]);
  await assertThrows(() => unfold(x, { kernel: [65, 64], padding: 40 }), RangeError, [`${MAX_TAPS} taps`]);
  await assertThrows(() => fold(flat, { kernel: 3, outputSize: [8, 8] }), ShapeError, ["[3, 64]", "36"]);
  await assertThrows(() => fold(x, { kernel: 3, outputSize: [8, 0] }), RangeError, ["outputSize"]);
  const gone = engine.zeros([1, 1, 4, 4]);
  gone.dispose();
  await assertThrows(() => unfold(gone, { kernel: 2 }), Error, ["dispose"]);
  await assertThrows(() => conv2d(x, gone as Tensor), Error, ["dispose"]);
  assertNoLeak(engine, before);
});

// [shape, window]: the default stride (the kernel), overlapping windows with padding (which max must never pick:
// the values are negative), rectangular windows, a 1×1 image, a row of positions in whole vec4s, and (max only)
// dilated windows.
const POOL_CASES: [number[], MaxPoolOptions][] = [
  [[2, 3, 8, 6], { kernel: 2 }],
  [[1, 2, 9, 7], { kernel: 3, stride: 2, padding: 1 }],
  [[3, 1, 11, 13], { kernel: [3, 2], stride: [1, 3], padding: [1, 1] }],
  [[2, 2, 1, 1], { kernel: 1 }],
  [[1, 4, 16, 16], { kernel: 3, stride: 1, padding: 1 }],
  [[2, 2, 10, 9], { kernel: 3, stride: 2, padding: 1, dilation: [2, 3] }],
];

test("avgPool2d and maxPool2d and their gradients match the float64 reference", async (engine) => {
  const before = engine.memory();
  for (const [k, [shape, o]] of POOL_CASES.entries()) {
    // Distinct values (no ties), all negative, so a padding tap read as 0 would win a max.
    await checkPools(engine, randomArray(size(shape), 40 + k, -3, -1), shape, o, 50 + k);
  }
  assertNoLeak(engine, before);
});

test("maxPool2d gives a window of −∞ to its −∞ pixels, never the padding, and a window holding a NaN to its NaNs", async (engine) => {
  const before = engine.memory();
  const cases: [number[], number[], PoolOptions, number[]][] = [
    // PyTorch: dx = [1]. The padding taps are −∞ too, and took three quarters of it.
    [[-Infinity], [1, 1, 1, 1], { kernel: 2, padding: 1 }, [1]],
    // Windows (pad, −∞, −∞), (−∞, −∞, 5), (−∞, 5, pad): the first splits over its two pixels, not three taps.
    [[-Infinity, -Infinity, 5], [1, 1, 1, 3], { kernel: [1, 3], stride: 1, padding: [0, 1] }, [0.5, 0.5, 2]],
    // PyTorch: the NaN window's gradient to the NaN; before, 0/0 made every pixel of that window NaN.
    [[1, NaN, 3, 4, 5, 6, 7, 8], [1, 1, 2, 4], { kernel: 2 }, [0, 1, 0, 0, 0, 0, 0, 1]],
  ];
  for (const [data, shape, o, expected] of cases) {
    const win = windowOf("test", shape.slice(2), { ...o, stride: o.stride ?? o.kernel });
    const ones = new Array(win.out[0] * win.out[1]).fill(1);
    using x = engine.tensor(data, shape);
    const [dx] = await Promise.all(engine.tidy(() => grad(sum(maxPool2d(x, o)), [x])).map(take));
    const what = `${data} ${JSON.stringify(o)}`;
    // Exact: each share is 1 over a count of ≤ 2.
    assertClose(dx, expected, { rtol: 0, atol: 0 }, what);
    assertClose(
      refPool2dGrad(data, shape, win, "max", ones),
      expected,
      { rtol: 0, atol: 0 },
      `reference ${what}`,
    );
  }
  // An ∞ or NaN upstream gradient reaches the maximum alone, as torch's (0·∞ gave the others NaN).
  for (const g of [Infinity, NaN]) {
    using x = engine.tensor([1, 2, 3, 4], [1, 1, 2, 2]);
    using up = engine.tensor([g], [1, 1, 1, 1]);
    const [dx] = await Promise.all(
      engine.tidy(() => grad(sum(mul(maxPool2d(x, { kernel: 2 }), up)), [x])).map(take),
    );
    assertClose(dx, [0, 0, 0, g], { rtol: 0, atol: 0 }, `upstream ${g}`);
  }
  assertNoLeak(engine, before);
});

test("maxPool2d splits the gradient of tied maxima evenly; pooling names bad windows", async (engine) => {
  using x = engine.tensor([1, 5, 5, 2, 0, 5, 3, 4, 4], [1, 1, 3, 3]);
  const before = engine.memory();
  const [dx] = await Promise.all(engine.tidy(() => grad(sum(maxPool2d(x, { kernel: 3 })), [x])).map(take));
  assertClose(dx, [0, 1 / 3, 1 / 3, 0, 0, 1 / 3, 0, 0, 0], { rtol: 1e-6, atol: 0 }, "three tied maxima");
  await assertThrows(() => maxPool2d(x, { kernel: 2, padding: 2 }), RangeError, ["padding 2,2", "2×2"]);
  await assertThrows(() => avgPool2d(x, { kernel: 4 }), ShapeError, ["4×4", "3×3"]);
  await assertThrows(() => avgPool2d(x, { kernel: 0 }), RangeError, ["kernel"]);
  // A third value (an F.pad-style 4-tuple from JavaScript) was dropped; NaN read "null".
  const triple = [1, 1, 2] as unknown as [number, number];
  await assertThrows(() => avgPool2d(x, { kernel: triple }), RangeError, ["kernel", "pair", "[1, 1, 2]"]);
  await assertThrows(() => maxPool2d(x, { kernel: 1, padding: NaN }), RangeError, ["padding", "NaN"]);
  // u32 in the kernels: a padding of 2^32 wrapped to 0 and read pixels where every window lies in the padding.
  await assertThrows(() => maxPool2d(x, { kernel: 1, padding: 2 ** 32 }), RangeError, ["padding", "2^31"]);
  const dilated = { kernel: 1, dilation: 2 } as PoolOptions;
  await assertThrows(() => avgPool2d(x, dilated), RangeError, ["avgPool2d", "dilation"]);
  assertNoLeak(engine, before);
});
