import { dropout, grad, mul, sum, type Tensor } from "../src/mod.ts";
import { refDropout, refRand } from "../src/ref/random.ts";
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

// One f32 rounding of x · (1 / (1 − p)) against its float64 value; a dropped element is exactly 0.
const PRODUCT = { rtol: 2 ** -24, atol: 0 };

test("dropout zeroes the elements the reference's Philox draws drop and scales the rest, for every p", async (engine) => {
  const before = engine.memory();
  const seeds = [0, 7, 2 ** 40 + 5]; // the last one's high word keys the draw too
  for (const n of [1, 3, 4, 5, 97, 4099, 65_537]) {
    const x = randomArray(n, n, -3, 3);
    using t = engine.tensor(x, [n]);
    for (const p of [0, 0.1, 0.5, 0.9, 1]) {
      const seed = seeds[n % 3];
      assertClose(await take(dropout(t, { p, seed })), refDropout(x, p, seed), PRODUCT, `n ${n}, p ${p}`);
    }
  }
  {
    // A rank-4 input is the same elements in row-major order.
    const x = randomArray(2 * 3 * 5 * 7, 1);
    using t = engine.tensor(x, [2, 3, 5, 7]);
    const y = dropout(t, { seed: 3 });
    assert(y.shape.join() === "2,3,5,7", `shape ${y.shape}`);
    assertClose(await take(y), refDropout(x, 0.5, 3), PRODUCT, "rank 4, default p 0.5");
  }
  assertNoLeak(engine, before);
});

test("dropout keeps 1 − p of the elements, replays a seed bit for bit and draws apart from rand", async (engine) => {
  const before = engine.memory();
  const n = 200_000;
  const ones = engine.ones([n]);
  const p = 0.3;
  const a = await take(dropout(ones, { p, seed: 11 }));
  const kept = a.filter((v) => v !== 0).length / n;
  // Binomial: 5 standard deviations, sqrt(p(1 − p)/n) ≈ 0.001 each.
  assert(Math.abs(kept - (1 - p)) < 5 * Math.sqrt(p * (1 - p) / n), `kept ${kept} of the elements at p ${p}`);
  assert(a.every((v) => v === 0 || v === Math.fround(1 / (1 - p))), "kept elements scaled by 1 / (1 − p)");
  const again = await take(dropout(ones, { p, seed: 11 }));
  assert(again.every((v, i) => v === a[i]), "the same seed drops the same elements");
  const other = await take(dropout(ones, { p, seed: 12 }));
  assert(other.some((v, i) => v !== a[i]), "another seed drops others");
  ones.dispose();
  // rand with the same seed would give this mask if dropout shared its stream.
  const sameStream = refRand(n, 11).map((u) => u >= Math.fround(p) ? 1 : 0);
  assert(
    a.some((v, i) => (v !== 0 ? 1 : 0) !== sameStream[i]),
    "dropout's mask is not rand's of the same seed",
  );
  assertNoLeak(engine, before);
});

test("dropout's gradient is the same mask and scale, drawn again", async (engine) => {
  const before = engine.memory();
  for (const [n, p] of [[1, 0.5], [13, 0.2], [4099, 0.7]] as const) {
    const x = randomArray(n, n);
    const w = randomArray(n, n + 1);
    using tx = engine.tensor(x, [n]);
    using tw = engine.tensor(w, [n]);
    // d/dx Σ w · dropout(dropout(x)) with two seeds: w through both masks, the second's first.
    const g = engine.tidy(() =>
      grad(sum(mul(dropout(dropout(tx, { p, seed: 4 }), { p, seed: 5 }), tw)), [tx])[0]
    );
    // Two f32 roundings of w · scale · scale.
    assertClose(await take(g), refDropout(refDropout(w, p, 5), p, 4), { rtol: 2 ** -23, atol: 0 }, `n ${n}`);
  }
  // Finite differences: the loss is linear in x, so central differences of step 0.5 are exact but for f32
  // rounding of sums near 1 (about 1e-6 relative to |loss| ≤ 13 · 3.4, over h = 0.5 → atol 2e-4).
  const x = randomArray(13, 1);
  const w = randomArray(13, 2);
  const tw = engine.tensor(w, [13]);
  const lossOf = (t: Tensor) => sum(mul(dropout(t, { p: 0.4, seed: 8 }), tw));
  const fd = await finiteDifference(
    async (v) => {
      using t = engine.tensor(v, [13]);
      return (await take(engine.tidy(() => lossOf(t))))[0];
    },
    x,
    Array.from({ length: 13 }, (_, i) => i),
    0.5,
  );
  const tx = engine.tensor(x, [13]);
  const g = engine.tidy(() => grad(lossOf(tx), [tx])[0]);
  assertClose(await take(g), fd, { rtol: 0, atol: 2e-4 }, "finite differences");
  tx.dispose();
  tw.dispose();
  assertNoLeak(engine, before);
});

test("dropout propagates NaN where it drops, as PyTorch's x · mask · scale does", async (engine) => {
  const x = Float32Array.from({ length: 64 }, () => NaN);
  using t = engine.tensor(x, [64]);
  const y = await take(dropout(t, { p: 0.5, seed: 1 }));
  assert(y.every(Number.isNaN), `dropout of NaN gave ${y.filter((v) => !Number.isNaN(v)).length} numbers`);
});

test("dropout over several storage bindings draws each window's elements from their place in the tensor", () =>
  bothKernels(async (engine) => {
    const before = engine.memory();
    const n = 300_001; // 1.2 MB: two windows of 1 MiB bindings
    const x = randomArray(n, 5);
    const t = engine.tensor(x, [n]);
    assertClose(await take(dropout(t, { p: 0.25, seed: 9 })), refDropout(x, 0.25, 9), PRODUCT, "two windows");
    t.dispose();
    assertNoLeak(engine, before);
  }, { maxStorageBufferBindingSize: 2 ** 20 }));

test("dropout refuses p outside [0, 1], a missing seed, a non-f32 input and a disposed one", async (engine) => {
  using t = engine.ones([4]);
  using ints = engine.zeros([4], "i32");
  const before = engine.memory();
  for (const p of [-0.1, 1.5, NaN]) {
    await assertThrows(() => dropout(t, { p, seed: 1 }), RangeError, ["p", String(p)]);
  }
  await assertThrows(() => dropout(t, {} as { seed: number }), RangeError, ["seed", "undefined"]);
  await assertThrows(() => dropout(t, { seed: -1 }), RangeError, ["seed", "-1"]);
  await assertThrows(() => dropout(ints, { seed: 1 }), TypeError, ["f32", "i32"]);
  const gone = engine.ones([4]);
  gone.dispose();
  await assertThrows(() => dropout(gone, { seed: 1 }), Error, ["dispose"]);
  assertNoLeak(engine, before, "after the refusals");
});
