import {
  add,
  argmax,
  cast,
  clamp,
  div,
  equal,
  exp,
  gelu,
  grad,
  greater,
  log,
  maximum,
  mean,
  minimum,
  mul,
  neg,
  pow,
  relu,
  ShapeError,
  sigmoid,
  silu,
  softplus,
  sqrt,
  sub,
  sum,
  tanh,
  where,
} from "../src/mod.ts";
import type { DType, Tensor } from "../src/mod.ts";
import {
  refBinary,
  refCast,
  refUnary,
  refUnbroadcast,
  refWhere,
  UNARY_GRAD_REF,
} from "../src/ref/elementwise.ts";
import { bothKernels, test } from "./harness.ts";
import {
  assert,
  assertClose,
  assertEquals,
  assertFiniteDifferences,
  assertNoLeak,
  assertThrows,
  finiteDifference,
  randomArray,
  randomShape,
  rng,
  take,
} from "./util.ts";

// f32 kernels against float64 references: one rounding of the result plus WGSL's documented accuracy of
// exp/log/tanh (a few ulp) and gelu's fit of Φ (1.2e-7 relative) → rtol 2e-6 with a small atol for values near
// zero.
const TOL = { rtol: 2e-6, atol: 1e-6 };
const EXACT = { rtol: 0, atol: 0 };

const UNARY = { neg, exp, log, sqrt, relu, gelu, sigmoid, tanh, silu, softplus };
const BINARY = { add, sub, mul, div, maximum, minimum };

// Sizes: 1, primes, non-multiples of 4 (one vec4 per invocation) and of the workgroup's 1,024 elements. A
// dispatch over 65,535 workgroups is out of reach here (128 MiB windows hold 32,768 workgroups of 1,024): the
// grid laid over x and y is checked in engine_test.ts at 64 workgroups across.
const SIZES = [1, 7, 257, 1009, 65_537];

test("unary ops match the float64 reference at awkward sizes", async (engine) => {
  const before = engine.memory();
  for (const [name, op] of Object.entries(UNARY)) {
    for (const n of SIZES) {
      const positive = name === "log" || name === "sqrt";
      const x = randomArray(n, n + name.length, positive ? 0.01 : -4, 4);
      using t = engine.tensor(x, [n]);
      assertClose(await take(op(t)), refUnary(name, x), TOL, `${name} n=${n}`);
    }
  }
  assertNoLeak(engine, before);
});

test("binary ops broadcast like NumPy on random shapes", async (engine) => {
  const before = engine.memory();
  for (let s = 0; s < 12; s++) {
    const shape = randomShape(1 + (s % 4), s, 7);
    // Knock out random dims to 1 (and drop leading dims) to exercise every broadcast pattern.
    const bShape = shape.slice(s % 2).map((d, i) => ((s >> i) & 1 ? 1 : d));
    const a = randomArray(shape.reduce((x, y) => x * y, 1), s);
    const b = randomArray(bShape.reduce((x, y) => x * y, 1), 100 + s, 0.5, 2);
    using ta = engine.tensor(a, shape);
    using tb = engine.tensor(b, bShape);
    for (const [name, op] of Object.entries(BINARY)) {
      const ref = refBinary(name, a, shape, b, bShape);
      const y = op(ta, tb);
      assertClose(await take(y), ref.data, TOL, `${name} ${shape} with ${bShape}`);
      const y2 = op(tb, ta);
      assertClose(await take(y2), refBinary(name, b, bShape, a, shape).data, TOL, `${name} reversed`);
    }
  }
  assertNoLeak(engine, before);
});

test("unary, scalar and same-shape binary ops, one vec4 an invocation and (CPU adapters) runs of four", () =>
  bothKernels(async (engine) => {
    const before = engine.memory();
    // Sizes about a run of 16 elements and a workgroup of 256 runs: a run cut short, whole, one past.
    for (const n of [1, 3, 15, 16, 17, 63, 4_097, 16_385]) {
      const a = randomArray(n, n, -2, 2);
      const b = randomArray(n, n + 1, -2, 2);
      using ta = engine.tensor(a, [n]);
      using tb = engine.tensor(b, [n]);
      assertClose(await take(exp(ta)), refUnary("exp", a), TOL, `exp n=${n}`);
      assertClose(await take(mul(ta, 3)), a.map((v) => 3 * v), TOL, `mul scalar n=${n}`);
      assertClose(await take(add(ta, tb)), a.map((v, i) => v + b[i]), TOL, `add n=${n}`);
    }
    assertNoLeak(engine, before);
  }));

test("broadcasts whose output is over one binding run in parts along the leading dim", () =>
  // On engines that bind at most 1 MiB: outputs of 1 to 2.2 MiB, cut into parts of whole leading indices.
  // b broadcast along the leading dim (bound whole), varying along it (windowed like the output), of lower
  // rank; and rows of 1,800 elements, whose windows start on the 256-byte alignment only every 8 rows. The cut
  // runs along the merged dims: [4, 65537] (4 leading indices over the binding, uncut) times a scalar is one dim.
  bothKernels(async (engine) => {
    const before = engine.memory();
    const cases: [number[], number[]][] = [
      [[40, 8, 32, 32], [1, 8, 1, 1]],
      [[40, 8, 32, 32], [40, 1, 1, 1]],
      [[40, 8, 32, 32], [8, 32, 32]],
      [[300, 2, 30, 30], [300, 2, 1, 30]],
      [[4, 65537], [1, 1]],
    ];
    for (const [k, [shape, bShape]] of cases.entries()) {
      const a = randomArray(shape.reduce((x, y) => x * y, 1), k);
      const b = randomArray(bShape.reduce((x, y) => x * y, 1), 50 + k, 0.5, 2);
      using ta = engine.tensor(a, shape);
      using tb = engine.tensor(b, bShape);
      for (const [name, op] of [["add", add], ["div", div]] as const) {
        assertClose(
          await take(op(ta, tb)),
          refBinary(name, a, shape, b, bShape).data,
          TOL,
          `${name} ${shape}`,
        );
        assertClose(
          await take(op(tb, ta)),
          refBinary(name, b, bShape, a, shape).data,
          TOL,
          `${name} reversed`,
        );
      }
    }
    // A leading index alone over the binding (1.4 MiB) cannot be cut: the error names the limit.
    using wide = engine.zeros([2, 600, 600]);
    using row = engine.zeros([600, 600]);
    const at = engine.memory();
    await assertThrows(() => add(wide, row), ShapeError, ["maxStorageBufferBindingSize", "[2, 600, 600]"]);
    assertNoLeak(engine, at);
    wide.dispose();
    row.dispose();
    {
      // mean's gradient spreads its scalar g that way: over [4, 65537] it threw "no cut along its leading dim".
      using x = engine.full([4, 65537], 3);
      const [g] = engine.tidy(() => grad(mean(x), [x]));
      assertClose(await take(g), new Float64Array(4 * 65537).fill(1 / (4 * 65537)), TOL, "mean's gradient");
    }
    assertNoLeak(engine, before);
  }, { maxStorageBufferBindingSize: 2 ** 20 }));

test("scalars are accepted on either side", async (engine) => {
  using t = engine.tensor([1, 2, 4], [3]);
  assertClose(await take(sub(1, t)), [0, -1, -3], TOL);
  assertClose(await take(div(t, 2)), [0.5, 1, 2], TOL);
  assertClose(await take(div(2, t)), [2, 1, 0.5], TOL);
  assertClose(await take(pow(t, 2)), [1, 4, 16], TOL);
  assertClose(await take(pow(2, t)), [2, 4, 16], TOL);
});

// [a, b, a^b, d/da, d/db] by hand from C's pow and PyTorch's pow_backward (d/da = b·a^(b−1), 0 where b = 0;
// d/db = a^b·ln a, 0 where a = 0 and b ≥ 0).
const POW_CASES = [
  [2, 3, 8, 12, 8 * Math.LN2],
  [3, -2, 1 / 9, -2 / 27, Math.log(3) / 9],
  [-2, 3, -8, 12, NaN],
  [-2, 2, 4, -4, NaN],
  [-0.5, -3, -8, -48, NaN],
  [-2, 0.5, NaN, NaN, NaN],
  [0, 0, 1, 0, 0],
  [0, 2, 0, 0, 0],
  [0, 0.5, 0, Infinity, 0],
  [0, -1, Infinity, -Infinity, -Infinity],
  [NaN, 0, 1, 0, NaN],
  [1, NaN, 1, NaN, 0],
  [-1, Infinity, 1, Infinity, NaN],
  [0.5, Infinity, 0, NaN, 0],
  [2, -Infinity, 0, NaN, 0],
  [Infinity, 2, Infinity, Infinity, Infinity],
  [-Infinity, 3, -Infinity, Infinity, NaN],
  [-Infinity, -1, 0, 0, NaN],
];

test("pow follows PyTorch at 0, at negative bases and at NaN, its gradients too", async (engine) => {
  const before = engine.memory();
  const column = (k: number) => POW_CASES.map((c) => c[k]);
  // Exact values where the table has them; the finite ones come from exp2(b·log2|a|): rtol 2e-6.
  {
    using a = engine.tensor(column(0), [POW_CASES.length]);
    using b = engine.tensor(column(1), [POW_CASES.length]);
    const y = pow(a, b);
    const loss = sum(y);
    const [ga, gb] = grad(loss, [a, b]);
    loss.dispose();
    assertClose(await take(y), column(2), TOL, "a^b");
    assertClose(await take(ga), column(3), TOL, "d/da");
    assertClose(await take(gb), column(4), TOL, "d/db");
  }
  // The scalar paths: each row's exponent (then base) as a scalar.
  for (const [a, b, y, da, db] of POW_CASES) {
    using ta = engine.tensor([a], [1]);
    const ya = pow(ta, b);
    const [ga] = grad(ya, [ta]);
    assertClose(await take(ya), [y], TOL, `tensor ${a} ^ scalar ${b}`);
    assertClose(await take(ga), [da], TOL, `d/da of tensor ${a} ^ scalar ${b}`);
    using tb = engine.tensor([b], [1]);
    const yb = pow(a, tb);
    const [gb] = grad(yb, [tb]);
    assertClose(await take(yb), [y], TOL, `scalar ${a} ^ tensor ${b}`);
    assertClose(await take(gb), [db], TOL, `d/db of scalar ${a} ^ tensor ${b}`);
  }
  assertClose(refBinary("pow", column(0), [18], column(1), [18]).data, column(2), TOL, "reference");
  // Small integer exponents by squaring and 0.5 by sqrt are correctly rounded here, as PyTorch's (through
  // exp2(b·log2|a|), 10^7 was 9999996 and (−1000)² 999999.875): x², x³, 1/x, 1/x² of integers and 10^k exactly.
  {
    const bases = Array.from({ length: 2000 }, (_, i) => i - 1000);
    using ints = engine.tensor(bases, [bases.length]);
    for (const b of [1, 2, 3, -1, -2, 0.5]) {
      const want = bases.map((x) => Math.fround(x ** b));
      assertClose(await take(pow(ints, b)), want, EXACT, `x^${b} of integers −1000 .. 999`);
    }
    using powers = engine.tensor([0, 1, 2, 3, 4, 5, 6, 7], [8]);
    assertClose(await take(pow(10, powers)), [1, 10, 100, 1e3, 1e4, 1e5, 1e6, 1e7], EXACT, "10^k");
  }
  {
    // Subnormal bases: llvmpipe's log2 of one is about −127 (1e-40^0.1 came out 1.5e-4 for 1e-4) and SwiftShader
    // takes one for 0; through its bits both are right. exp2 of b·log2 a few ulp of 10 → rtol 2e-6.
    const tiny = Float32Array.from([1e-40, 1e-45, 5e-39, 1e-40, 1e-40]);
    const exponents = [0.1, 0.25, 0.5, -0.5, -0.25];
    using a = engine.tensor(tiny, [5]);
    using b = engine.tensor(exponents, [5]);
    const want = refBinary("pow", tiny, [5], exponents, [5]).data;
    assertClose(await take(pow(a, b)), want, { rtol: 2e-6, atol: 0 }, "subnormal bases");
  }
  assertNoLeak(engine, before);
});

test("broadcasts whose innermost dim is a multiple of 4 (vec4 rows) match the reference", async (engine) => {
  const before = engine.memory();
  // A run is up to 16 vec4s per invocation, lanes = min(8, ⌈vec4s / 16⌉) invocations sharing it (each taking
  // every lanes-th vec4): rows of 68 and 132 elements are one run of 2 and 3 lanes; rows of 516 and 1,044 are
  // runs of 8 lanes, whose last run has 1 and 5 vec4s (the other lanes idle).
  const cases = [
    [[6, 8], [8]],
    [[2, 3, 4], [3, 1]],
    [[5, 1, 12], [1, 7, 12]],
    [[4], [3, 4]],
    [[3, 4], [1]],
    [[2, 1, 8], [2, 3, 1]],
    [[3, 68], [68]],
    [[2, 1, 132], [1, 3, 1]],
    [[5, 516], [5, 1]],
    [[3, 1044], [1044]],
    [[2, 1, 1044], [1, 3, 1]],
  ];
  for (const [k, [aShape, bShape]] of cases.entries()) {
    const a = randomArray(aShape.reduce((x, y) => x * y, 1), 300 + k);
    const b = randomArray(bShape.reduce((x, y) => x * y, 1), 400 + k, 0.5, 2);
    using ta = engine.tensor(a, aShape);
    using tb = engine.tensor(b, bShape);
    for (const [name, op] of Object.entries(BINARY)) {
      assertClose(
        await take(op(ta, tb)),
        refBinary(name, a, aShape, b, bShape).data,
        TOL,
        `${name} ${aShape} ${bShape}`,
      );
      assertClose(
        await take(op(tb, ta)),
        refBinary(name, b, bShape, a, aShape).data,
        TOL,
        `${name} reversed`,
      );
    }
  }
  assertNoLeak(engine, before);
});

// log and sqrt of -1 are NaN too (adapters differ below 0: SwiftShader's log gives ln|x|).
test("NaN propagates like the reference", async (engine) => {
  using t = engine.tensor([NaN, 1, -1], [3]);
  for (const [name, op] of Object.entries(UNARY)) {
    assertClose(await take(op(t)), refUnary(name, [NaN, 1, -1]), TOL, name);
  }
  using u = engine.tensor([2, NaN, 0], [3]);
  for (const [name, op] of Object.entries(BINARY)) {
    assertClose(await take(op(t, u)), refBinary(name, [NaN, 1, -1], [3], [2, NaN, 0], [3]).data, TOL, name);
  }
  // relu's gradient at NaN passes g, as torch's threshold_backward (NaN ≤ 0 is false); it gave 0.
  const [g] = engine.tidy(() => grad(sum(relu(t)), [t]));
  assertClose(await take(g), [NaN, 1, -1].map(UNARY_GRAD_REF.relu), EXACT, "relu'");
});

test("log is right near 1 and at zero, log and sqrt right for subnormals (NaN for negative ones)", async (engine) => {
  // The built-in log need only be within 2^-21 absolute: log(1 − 2^-24) came out 39% (SwiftShader) and 73%
  // (llvmpipe) off; the kernel's series near 1 is within a few ulp: rtol 2e-7 and no atol.
  const near1 = Float32Array.from([
    1 - 2 ** -24,
    1 - 2 ** -21,
    0.999995,
    0.99,
    0.75,
    0.7499,
    1 + 2 ** -23,
    1.2499,
    1.25,
  ]);
  using n = engine.tensor(near1, [near1.length]);
  assertClose(await take(log(n)), refUnary("log", near1), { rtol: 2e-7, atol: 0 }, "log near 1");
  // llvmpipe's log gave about −88 for every subnormal (−88.02 for 1e-40, whose log is −92.10), SwiftShader's
  // −88.03 for 0 and ln|x| for a negative subnormal (it flushes x to −0 before x < 0). A subnormal's log comes
  // from its bits, log(b) − 149·ln 2: a few ulp of 100 → atol 3e-5 (rtol 1e-7: the normal ones are a few ulp).
  const x = Float32Array.from([
    1e-40,
    1e-45,
    1e-39,
    1.1e-38,
    5e-42,
    2 ** -126,
    2 ** -126 - 2 ** -149,
    0,
    -0,
    -1e-40,
  ]);
  using t = engine.tensor(x, [x.length]);
  assertClose(await take(log(t)), refUnary("log", x), { rtol: 1e-7, atol: 3e-5 }, "log");
  // SwiftShader flushed them to 0 for sqrt too (sqrt(1e-40) is 1e-20): the bits again, rounded twice → 2e-7.
  assertClose(await take(sqrt(t)), refUnary("sqrt", x), { rtol: 2e-7, atol: 0 }, "sqrt");
});

test("gelu and its gradient keep relative precision in the lower tail", async (engine) => {
  // gelu(x) = x·Φ(x): at x = −5 it is −1.4e-6, at −12 −2e-32. Computed as 1 + erf(x/√2), Φ cancels to
  // nothing (1.6e-3 relative error at −5, 100% at −10); through erfc it keeps ~1e-7 relative, plus exp's
  // 6e-8·x²/2 from rounding x²/2 (4e-6 at x = −12): rtol 1e-5 and no atol. Past −13, Φ(x) is below f32's
  // normal range, which SwiftShader flushes to 0.
  const x = [-1, -2, -3, -4, -5, -6, -8, -10, -12, 1, 3, 6];
  const before = engine.memory();
  {
    using t = engine.tensor(x, [x.length]);
    const tol = { rtol: 1e-5, atol: 0 };
    assertClose(await take(gelu(t)), refUnary("gelu", x), tol, "gelu");
    const y = gelu(t);
    const loss = sum(y);
    const [g] = grad(loss, [t]);
    loss.dispose();
    y.dispose();
    assertClose(await take(g), Float64Array.from(x, UNARY_GRAD_REF.gelu), tol, "gelu'");
  }
  assertNoLeak(engine, before);
});

test("tanh keeps f32's relative precision near 0 and saturates to ±1, ±0 and NaN kept", async (engine) => {
  // An adapter's tanh need only be within WGSL's absolute bound: llvmpipe's was 1e-2 off at 1e-6 and gave 3e-8 for
  // 1e-20. The kernel's (Cephes' tanhf: 2 ulp below 0.625, exp's few ulp above) holds 1e-6 relative everywhere.
  const x = [
    1e-20,
    -1e-9,
    1e-6,
    -1e-4,
    1e-3,
    0.1,
    -0.5,
    0.6249,
    0.6251,
    -1,
    2,
    5,
    -9,
    10,
    40,
    1e30,
    -Infinity,
  ];
  using t = engine.tensor(x, [x.length]);
  assertClose(await take(tanh(t)), refUnary("tanh", x), { rtol: 1e-6, atol: 0 }, "tanh");
  using zeros = engine.tensor([0, -0, NaN], [3]);
  const z = await take(tanh(zeros));
  assert(Object.is(z[0], 0) && Object.is(z[1], -0) && Number.isNaN(z[2]), `tanh(0, −0, NaN) = ${z}`);
});

test("silu and softplus keep relative precision in their tails and never overflow, their gradients too", async (engine) => {
  const before = engine.memory();
  {
    const x = [-80, -30, -20, -5, -1e-3, 0, 1e-3, 5, 20, 30, 80, 1e4];
    using t = engine.tensor(x, [x.length]);
    for (const [name, op] of Object.entries({ silu, softplus })) {
      // exp, sigmoid and log(1 + e) each a few ulp relative: 1e-5 relative holds down to softplus(−80) = 1.8e-35.
      const tol = { rtol: 1e-5, atol: 0 };
      using y = op(t);
      using loss = sum(y);
      assertClose(await y.toArray(), refUnary(name, x), tol, name);
      assertClose(await take(grad(loss, [t])[0]), x.map(UNARY_GRAD_REF[name]), tol, `${name}'`);
    }
  }
  assertNoLeak(engine, before);
});

test("unary gradients match the analytic derivative and finite differences", async (engine) => {
  const before = engine.memory();
  for (const [name, op] of Object.entries(UNARY)) {
    if (name === "neg") continue;
    const positive = name === "log" || name === "sqrt";
    const x = randomArray(31, name.length, positive ? 0.2 : -3, 3);
    using t = engine.tensor(x, [31]);
    const y = op(t);
    const loss = sum(y);
    const [g] = grad(loss, [t]);
    loss.dispose();
    y.dispose();
    const got = await take(g);
    // f32 chain: forward value (rtol 2e-6) times the backward kernel's own rounding.
    assertClose(got, Float64Array.from(x, UNARY_GRAD_REF[name]), { rtol: 1e-5, atol: 1e-6 }, `${name}'`);
    // Finite differences in f32 with h = 1e-2: truncation error ~h²·f''' and f32 rounding ~eps·|f|/h, ≈ 1e-3.
    const f = async (v: Float32Array) => {
      using xt = engine.tensor(v, [31]);
      const y = op(xt);
      const s = sum(y);
      y.dispose();
      return (await take(s))[0];
    };
    const idx = [0, 7, 30];
    assertClose(
      idx.map((i) => got[i]),
      await finiteDifference(f, x, idx),
      { rtol: 1e-2, atol: 2e-3 },
      `${name} fd`,
    );
  }
  assertNoLeak(engine, before);
});

test("binary gradients sum over broadcast dims", async (engine) => {
  const before = engine.memory();
  {
    const aShape = [3, 1, 5];
    const bShape = [4, 1];
    const a = randomArray(15, 1, 0.5, 2);
    const b = randomArray(4, 2, 0.5, 2);
    using ta = engine.tensor(a, aShape);
    using tb = engine.tensor(b, bShape);
    const out = [3, 4, 5];
    // d/da and d/db of sum(op(a, b)) per element, then summed back to each shape.
    const partials: Record<string, [(x: number, y: number) => number, (x: number, y: number) => number]> = {
      add: [() => 1, () => 1],
      sub: [() => 1, () => -1],
      mul: [(_, y) => y, (x) => x],
      div: [(_, y) => 1 / y, (x, y) => -x / (y * y)],
      pow: [(x, y) => y * x ** (y - 1), (x, y) => x ** y * Math.log(x)],
    };
    const ops: Record<string, (x: Tensor, y: Tensor) => Tensor> = { add, sub, mul, div, pow };
    for (const [name, [da, db]] of Object.entries(partials)) {
      const y = ops[name](ta, tb);
      const loss = sum(y);
      const [ga, gb] = grad(loss, [ta, tb]);
      loss.dispose();
      y.dispose();
      const ea = refBinary("add", a, aShape, b, bShape); // for the output size only
      const pa = new Float64Array(ea.data.length);
      const pb = new Float64Array(ea.data.length);
      const av = refBinary("add", a, aShape, new Float64Array(4), bShape).data;
      const bv = refBinary("add", new Float64Array(15), aShape, b, bShape).data;
      for (let i = 0; i < pa.length; i++) [pa[i], pb[i]] = [da(av[i], bv[i]), db(av[i], bv[i])];
      // Sums of ≤ 4 f32 terms: rtol 1e-5.
      assertClose(await take(ga), refUnbroadcast(pa, out, aShape), { rtol: 1e-5, atol: 1e-6 }, `${name} da`);
      assertClose(await take(gb), refUnbroadcast(pb, out, bShape), { rtol: 1e-5, atol: 1e-6 }, `${name} db`);
    }
  }
  assertNoLeak(engine, before);
});

test("maximum and minimum send the gradient to the winner, ties split evenly, broadcast dims summed", async (engine) => {
  const before = engine.memory();
  {
    // Integer values, so ties between a and b come up often; b broadcast along the first dim. A NaN on either
    // side gives both the whole gradient, as torch's (neither loses); it gave both 0.
    const a = randomArray(4 * 6, 3, -2.5, 2.5).map(Math.round);
    const b = randomArray(6, 4, -2.5, 2.5).map(Math.round);
    a[7] = NaN;
    b[4] = NaN;
    using ta = engine.tensor(a, [4, 6]);
    using tb = engine.tensor(b, [6]);
    for (const [name, op, wins] of [["maximum", maximum, 1], ["minimum", minimum, -1]] as const) {
      const w = randomArray(24, 5);
      using tw = engine.tensor(w, [4, 6]);
      const [ga, gb] = engine.tidy(() => grad(sum(mul(op(ta, tb), tw)), [ta, tb]));
      const share = (x: number, y: number) =>
        Number.isNaN(x - y) ? 1 : x === y ? 0.5 : Math.sign(x - y) === wins ? 1 : 0;
      const wantA = Float64Array.from(a, (x, i) => w[i] * share(x, b[i % 6]));
      const wantB = new Float64Array(6);
      a.forEach((x, i) => (wantB[i % 6] += w[i] * share(b[i % 6], x)));
      // Halves and sums of 4 f32 products: one rounding each.
      assertClose(await take(ga), wantA, { rtol: 1e-6, atol: 1e-7 }, `${name} da`);
      assertClose(await take(gb), wantB, { rtol: 1e-6, atol: 1e-6 }, `${name} db`);
    }
    // A scalar operand gets no gradient; the tensor's is the same rule.
    const [g] = engine.tidy(() => grad(sum(minimum(ta, 0)), [ta]));
    assertClose(
      await take(g),
      Float64Array.from(a, (x) => (Number.isNaN(x) ? 1 : x === 0 ? 0.5 : x < 0 ? 1 : 0)),
      EXACT,
      "minimum(a, 0)",
    );
  }
  assertNoLeak(engine, before);
});

test("clamp limits to [lo, hi] as PyTorch's, NaN kept, the gradient passing where lo ≤ x ≤ hi", async (engine) => {
  const before = engine.memory();
  {
    const x = [-3, -1, -0.5, 0, 0.5, 1, 2, NaN, Infinity, -Infinity];
    using t = engine.tensor(x, [x.length]);
    const cases: [number | undefined, number | undefined][] = [[-1, 1], [undefined, 0.5], [-0.5, undefined], [
      2,
      2,
    ]];
    for (const [lo, hi] of cases) {
      const want = x.map((v) =>
        Number.isNaN(v) ? NaN : Math.min(Math.max(v, lo ?? -Infinity), hi ?? Infinity)
      );
      const [y, g] = engine.tidy(() => {
        const y = clamp(t, lo, hi);
        return [y, grad(sum(y), [t])[0]];
      });
      assertClose(await take(y), want, EXACT, `clamp ${lo} ${hi}`);
      const pass = x.map((v) => (v >= (lo ?? -Infinity) && v <= (hi ?? Infinity) ? 1 : 0));
      assertClose(await take(g), pass, EXACT, `clamp ${lo} ${hi} gradient`);
    }
    await assertThrows(() => clamp(t, 1, -1), RangeError, ["lo 1", "hi -1"]);
    using ints = engine.zeros([2], "i32");
    await assertThrows(() => clamp(ints, 0, 1), TypeError, ["clamp", "i32"]);
  }
  assertNoLeak(engine, before);
});

test("cast converts between f32, i32 and u32 as the reference: truncation, saturation, NaN to 0, wrapping", () =>
  // On engines that bind at most 1 MiB, so 300,007 elements (1.2 MiB) run in two windows.
  bothKernels(async (engine) => {
    const before = engine.memory();
    const edges = [
      NaN,
      Infinity,
      -Infinity,
      0,
      -0,
      0.5,
      -0.5,
      1.99,
      -1.99,
      2 ** 24 + 2,
      2147483520,
      2 ** 31,
      -(2 ** 31),
      -2147483904,
      4294967040,
      2 ** 32,
      3e38,
      -3e38,
    ];
    const ints = [
      0,
      1,
      -1,
      7,
      -(2 ** 31),
      2 ** 31 - 1,
      2 ** 24,
      -(2 ** 24),
      2 ** 24 + 1,
      123456789,
      -987654321,
    ];
    for (const n of [1, 7, 18, 4_099, 300_007]) {
      const f = Float32Array.from({ length: n }, (_, i) => i < edges.length ? edges[i] : 0);
      f.set(randomArray(Math.max(0, n - edges.length), n, -1e6, 1e6), Math.min(n, edges.length));
      const i32 = Int32Array.from({ length: n }, (_, i) => i < ints.length ? ints[i] : (i * 2654435761) | 0);
      const u32 = new Uint32Array(i32.buffer);
      const inputs = { f32: f, i32, u32 } as const;
      for (const from of ["f32", "i32", "u32"] as const) {
        using x = engine.tensor(inputs[from], [n], from);
        for (const to of ["f32", "i32", "u32"] as const) {
          const y = cast(x, to);
          assertEquals(y.dtype, to, `cast ${from} → ${to} dtype`);
          const got = await y.toArray();
          y.dispose();
          const want = refCast(inputs[from], from, to);
          // Exact, but for an integer over 2^24 to f32: WGSL lets the conversion round either way, so one ulp.
          for (let k = 0; k < n; k++) {
            const ok = Object.is(got[k], want[k]) || got[k] === want[k] ||
              (Number.isNaN(got[k]) && Number.isNaN(want[k])) ||
              (to === "f32" && from !== "f32" && Math.abs(got[k] - want[k]) <= Math.abs(want[k]) * 2 ** -23);
            assert(
              ok,
              `cast ${from} → ${to} n=${n}: element ${k} (${inputs[from][k]}) gave ${got[k]}, want ${
                want[k]
              }`,
            );
          }
        }
      }
    }
    assertNoLeak(engine, before);
  }, { maxStorageBufferBindingSize: 2 ** 20 }));

test("cast's gradient passes f32 to f32 through; bad dtypes and disposed tensors throw", async (engine) => {
  const before = engine.memory();
  {
    using x = engine.tensor([1, -2, 3], [3]);
    using w = engine.tensor([0.5, 4, -1], [3]);
    using y = cast(x, "f32");
    using yw = mul(y, w);
    using loss = sum(yw);
    const [g] = grad(loss, [x]);
    assertClose(await take(g), [0.5, 4, -1], TOL, "d cast / dx");
    await assertThrows(() => cast(x, "f16" as never), TypeError, ["f16", "f32, i32 or u32"]);
    const d = engine.ones([3]);
    d.dispose();
    await assertThrows(() => cast(d, "i32"), Error, ["used after dispose", "[3]"]);
  }
  assertNoLeak(engine, before);
});

// Pools with the values where comparisons go wrong: ±0 and NaN for f32; for the integers neighbours beyond 2^24
// (equal as f32), and the values where i32 and u32 order the same bits differently.
const COMPARE_POOLS = {
  f32: [-0, 0, 1, -1, 0.5, NaN, Infinity, -Infinity],
  i32: [-(2 ** 31), -16_777_217, -1, 0, 1, 16_777_216, 16_777_217, 2 ** 31 - 1],
  u32: [0, 1, 16_777_216, 16_777_217, 2 ** 31, 2 ** 31 + 1, 2 ** 32 - 1],
} as const;

test("equal and greater compare f32, i32 and u32 exactly, broadcasting and beside scalars", async (engine) => {
  const before = engine.memory();
  const ops = { equal, greater };
  // Every override set is a pipeline that SwiftShader compiles for seconds (about 70 of them took this test
  // 3m25s in CI's Chromium half), so each entry is met where the dtype changes what it does: the same-shape
  // pass (1 element, a prime past a workgroup of runs) and scalars on either side for every dtype, the
  // broadcasts (vec4 rows; element by element, either side broadcast) for the integers, whose bits they move.
  const cases: [number[], number[], boolean][] = [
    [[1], [1], false],
    [[4_099], [4_099], false],
    [[3, 8], [8], true],
    [[5, 3], [5, 1], true],
  ];
  for (const [dtype, pool] of Object.entries(COMPARE_POOLS)) {
    const draw = (n: number, seed: number) => {
      const r = rng(seed);
      return Array.from({ length: n }, () => pool[Math.floor(r() * pool.length)]);
    };
    for (const [k, [aShape, bShape, broadcasts]] of cases.entries()) {
      if (broadcasts && dtype === "f32") continue;
      const a = draw(aShape.reduce((x, y) => x * y), k);
      const b = draw(bShape.reduce((x, y) => x * y), 50 + k);
      using ta = engine.tensor(a, aShape, dtype as DType);
      using tb = engine.tensor(b, bShape, dtype as DType);
      for (const [name, op] of Object.entries(ops)) {
        const what = `${name} ${dtype} [${aShape}] with [${bShape}]`;
        assertClose(await take(op(ta, tb)), refBinary(name, a, aShape, b, bShape).data, EXACT, what);
        assertClose(
          await take(op(tb, ta)),
          refBinary(name, b, bShape, a, aShape).data,
          EXACT,
          `${what}, swapped`,
        );
        // Every scalar of the pool beside each element.
        for (const s of broadcasts ? [] : pool.filter((v) => !Number.isNaN(v))) {
          assertClose(
            await take(op(ta, s)),
            refBinary(name, a, aShape, [s], [1]).data,
            EXACT,
            `${what} ${s}`,
          );
          assertClose(
            await take(op(s, ta)),
            refBinary(name, [s], [1], a, aShape).data,
            EXACT,
            `${s} ${what}`,
          );
        }
      }
    }
  }
  {
    // README's accuracy: argmax's i32 indices against i32 labels.
    using logits = engine.tensor([0.1, 2, 3, 1, 0, 5], [3, 2]);
    using labels = engine.tensor([1, 0, 0], [3], "i32");
    using predicted = argmax(logits, 1);
    using hits = equal(predicted, labels);
    assertClose(await take(mean(hits)), [2 / 3], TOL, "accuracy");
    using f = engine.tensor([1, 0, 0], [3]);
    using u = engine.tensor([1, 0, 0], [3], "u32");
    await assertThrows(() => equal(labels, f), TypeError, ["different dtypes", "i32 [3]", "f32 [3]"]);
    await assertThrows(() => greater(u, labels), TypeError, ["different dtypes", "u32 [3]", "i32 [3]"]);
    await assertThrows(() => equal(labels, 0.5), RangeError, ["0.5", "i32"]);
    await assertThrows(() => greater(-1, u), RangeError, ["-1", "u32", "[0, 4294967295]"]);
    await assertThrows(() => equal(labels, 2 ** 31), RangeError, ["2147483648", "i32"]);
  }
  assertNoLeak(engine, before);
});

test("where picks a where cond ≠ 0 else b, broadcasting; the gradient goes to the branch taken, NaN in the other stays out", async (engine) => {
  const before = engine.memory();
  {
    // cond [3, 1, 5] (with a NaN, which counts as true), a [1, 4, 5], b [3, 4, 1]: output [3, 4, 5].
    const [cShape, aShape, bShape, out] = [[3, 1, 5], [1, 4, 5], [3, 4, 1], [3, 4, 5]];
    const c = Float32Array.from(randomArray(15, 1), (v) => v > 0 ? 1 : 0);
    c[7] = NaN;
    const a = randomArray(20, 2, -2, 2);
    const b = randomArray(12, 3, -2, 2);
    using tc = engine.tensor(c, cShape);
    using ta = engine.tensor(a, aShape);
    using tb = engine.tensor(b, bShape);
    using w = engine.tensor(randomArray(60, 4, -1, 1), out);
    const wv = await w.toArray();
    using y = where(tc, ta, tb);
    assertClose(await y.toArray(), refWhere(c, cShape, a, aShape, b, bShape).data, TOL, "where");
    using scalars = where(tc, 2.5, -1);
    assertClose(await scalars.toArray(), refWhere(c, cShape, [2.5], [1], [-1], [1]).data, TOL, "scalars");
    // d sum(w · where(c, a, b)): w where c holds to a, elsewhere to b, each summed back over its broadcast dims.
    using yw = mul(y, w);
    using loss = sum(yw);
    const [ga, gb] = grad(loss, [ta, tb]);
    const taken = refWhere(c, cShape, new Float64Array(60).fill(1), out, new Float64Array(60), out).data;
    const ref = (k: number) => Float64Array.from(wv, (v, i) => v * (k === 1 ? taken[i] : 1 - taken[i]));
    // Sums of ≤ 3 f32 terms: rtol 1e-5.
    const SUMS = { rtol: 1e-5, atol: 1e-6 };
    assertClose(await take(ga), refUnbroadcast(ref(1), out, aShape), SUMS, "d/da");
    assertClose(await take(gb), refUnbroadcast(ref(0), out, bShape), SUMS, "d/db");
    // Finite differences of a's elements, away from the kinks (where is linear in a and b).
    const f = async (x: Float32Array) => {
      using tx = engine.tensor(x, aShape);
      using z = where(tc, tx, tb);
      using zw = mul(z, w);
      return (await take(sum(zw)))[0];
    };
    using ga2 = grad(loss, [ta])[0];
    await assertFiniteDifferences(
      await ga2.toArray(),
      f,
      a,
      [0, 7, 19],
      1e-2,
      { rtol: 1e-3, atol: 1e-3 },
      "d/da",
    );
    // ∞ and NaN in the branch not taken: neither the result nor the gradient sees them.
    using mask = engine.tensor([1, 0, 1, 0], [4]);
    using left = engine.tensor([1, NaN, 3, Infinity], [4]);
    using right = engine.tensor([NaN, 2, -Infinity, 4], [4]);
    using picked = where(mask, left, right);
    assertEquals(Array.from(await picked.toArray()), [1, 2, 3, 4], "where past NaN and ∞");
    using total = sum(picked);
    const [gl, gr] = grad(total, [left, right]);
    assertEquals(Array.from(await take(gl)), [1, 0, 1, 0], "d/dleft");
    assertEquals(Array.from(await take(gr)), [0, 1, 0, 1], "d/dright");
    using i32 = engine.zeros([4], "i32");
    await assertThrows(() => where(i32, left, right), TypeError, ["where", "f32", "i32"]);
    using wide = engine.zeros([5]);
    await assertThrows(() => where(mask, wide, right), ShapeError, ["[4]", "[5]"]);
  }
  assertNoLeak(engine, before);
});

test("bad input is a clear error and leaks nothing", async (engine) => {
  const before = engine.memory();
  {
    using a = engine.zeros([2, 3]);
    using b = engine.zeros([4]);
    await assertThrows(() => add(a, b), ShapeError, ["[2, 3]", "[4]"]);
    using i = engine.zeros([3], "i32");
    await assertThrows(() => exp(i), TypeError, ["f32", "i32"]);
    await assertThrows(() => add(1 as never, 2 as never), TypeError, ["tensor"]);
    // Alternating broadcast dims do not merge: 9 of them are over the kernel's 8 (thrown before allocating).
    using deepA = engine.zeros([2, 1, 2, 1, 2, 1, 2, 1, 2]);
    using deepB = engine.zeros([1, 2, 1, 2, 1, 2, 1, 2, 1]);
    await assertThrows(() => mul(deepA, deepB), ShapeError, ["[2, 1, 2, 1", "[1, 2, 1, 2", "9 dims", "8"]);
    const d = engine.ones([3]);
    d.dispose();
    await assertThrows(() => mul(d, 2), Error, ["used after dispose", "[3]"]);
    await assertThrows(() => neg(d), Error, ["used after dispose"]);
  }
  assertNoLeak(engine, before);
});
