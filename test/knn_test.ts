import { argmax, knnScores, ShapeError } from "../src/mod.ts";
import type { Engine } from "../src/mod.ts";
import { refKnnScores } from "../src/ref/knn.ts";
import { bothKernels, test, twoEngines } from "./harness.ts";
import { assertClose, assertEquals, assertNoLeak, assertThrows, randomArray, rng, take } from "./util.ts";

/**
 * Bank rows at angles jΔ and queries at (m + 0.3)Δ in the first two of D dims, with random lengths: any two
 * similarities of a query differ by ≥ 0.2Δ²·cos-ish ≈ 2e-5 for Δ = 0.01, far above f32's ~1e-7, so the GPU picks
 * the reference's neighbours.
 */
function ring(n: number, queries: number, d: number, seed: number) {
  const r = rng(seed);
  const step = 0.01;
  const at = (angle: number) => {
    const len = 0.5 + r();
    return Array.from(
      { length: d },
      (_, j) => (j === 0 ? Math.cos(angle) : j === 1 ? Math.sin(angle) : 0) * len,
    );
  };
  const bank = Float32Array.from(Array.from({ length: n }, (_, j) => at(j * step)).flat());
  const features = Float32Array.from(
    Array.from({ length: queries }, () => at((Math.floor(r() * n) + 0.3) * step)).flat(),
  );
  return { bank, features };
}

async function checkKnn(engine: Engine, n: number, queries: number, classes: number, k: number, t: number) {
  const d = 4;
  const { bank, features } = ring(n, queries, d, n + k);
  const r = rng(k);
  const labels = Int32Array.from({ length: n }, () => Math.floor(r() * classes));
  using tf = engine.tensor(features, [queries, d]);
  using tb = engine.tensor(bank, [n, d]);
  using tl = engine.tensor(labels, [n], "i32");
  const scores = knnScores(tf, tb, tl, { classes, k, temperature: t });
  assertEquals(scores.shape, [queries, classes]);
  const want = refKnnScores(features, bank, labels, [queries, n, d], classes, k, t);
  // Each vote exp(s/t): s within ~2e-7 of float64 after normalising, so the weight within ~2e-7/t relative
  // (2e-6 at t = 0.1) plus exp's ulps; sums of ≤ k positive terms add a rounding each (k·6e-8 ≤ 2e-5 at 307).
  const tol = { rtol: 2e-5 + 3e-7 / t, atol: 0 };
  const what = `N ${n} B ${queries} C ${classes} k ${k} t ${t}`;
  const predicted = await take(argmax(scores, 1));
  assertClose(await take(scores), want, tol, what);
  const best = Array.from({ length: queries }, (_, i) => {
    const row = want.subarray(i * classes, (i + 1) * classes);
    return row.indexOf(Math.max(...row));
  });
  assertClose(predicted, best, { rtol: 0, atol: 0 }, `${what} predictions`);
}

test("knnScores: each query's k most similar bank rows vote with weight exp(s / t), as the reference", async (engine) => {
  const before = engine.memory();
  for (
    const [n, queries, classes, k, t] of [[1, 1, 1, 1, 0.1], [307, 13, 7, 20, 0.1], [307, 70, 3, 200, 0.5]]
  ) {
    await checkKnn(engine, n, queries, classes, k, t);
  }
  await checkKnn(engine, 97, 5, 10, 97, 0.07); // every row a neighbour
  assertNoLeak(engine, before);
});

test("knnScores runs queries in chunks and a bank over one binding in parts, merging the parts' neighbours", () =>
  bothKernels(async (engine) => {
    const before = engine.memory();
    // 128 KiB bindings: similarities [100, 600] take 240,000 bytes, so the queries run in chunks of 54.
    await checkKnn(engine, 600, 100, 5, 7, 0.1);
    // Scores [200, 300] take 240,000 bytes: chunks of 109 queries, each voting into a window of them (the
    // second from an aligned offset 60 floats before its first score).
    await checkKnn(engine, 50, 200, 300, 5, 0.1);
    // A bank [9003, 16] of 576,192 bytes runs in 5 parts, of 1,801, 1,801, 1,801, 1,800 and 1,800 rows; a bank
    // [10, 10922] in 4 of 3, 3, 2 and 2, enough for k = 2 (an even split: parts of 3 left a last one of 1). Random
    // rows: a query's k nearest stand apart by far more than f32's rounding, so the GPU picks the reference's.
    for (const [n, d, queries, classes, k] of [[9003, 16, 40, 5, 7], [10, 10922, 3, 4, 2]]) {
      const bank = randomArray(n * d, 1);
      const features = randomArray(queries * d, 2);
      const r = rng(3);
      const labels = Int32Array.from({ length: n }, () => Math.floor(r() * classes));
      using tb = engine.tensor(bank, [n, d]);
      using tf = engine.tensor(features, [queries, d]);
      using tl = engine.tensor(labels, [n], "i32");
      const got = await take(knnScores(tf, tb, tl, { classes, k, temperature: 0.1 }));
      const want = refKnnScores(features, bank, labels, [queries, n, d], classes, k, 0.1);
      assertClose(
        got,
        want,
        { rtol: 2e-5 + 3e-6, atol: 0 },
        `knnScores over the parts of a bank [${n}, ${d}]`,
      );
    }
    {
      // Rows of 8,192 floats: a part holds 4 rows, fewer than k.
      using wide = engine.zeros([9, 8192]);
      using labels = engine.zeros([9], "i32");
      using f = engine.zeros([2, 8192]);
      await assertThrows(() => knnScores(f, wide, labels, { classes: 2, k: 5 }), ShapeError, [
        "bank [9, 8192]",
        "3 parts",
        "of 3 rows or more",
        "fewer than k 5",
      ]);
      // Labels of a bank over one binding: refused before anything is allocated (the vote threw, leaking it all).
      using manyLabels = engine.zeros([40_000], "i32");
      using tall = engine.zeros([40_000, 1]);
      using one = engine.zeros([1, 1]);
      await assertThrows(() => knnScores(one, tall, manyLabels, { classes: 2, k: 1 }), ShapeError, [
        "bankLabels i32 [40000]",
        "160000 bytes",
      ]);
      // One query's scores over one binding: refused before anything is allocated.
      await assertThrows(() => knnScores(f, wide, labels, { classes: 40_000, k: 2 }), ShapeError, [
        "40000 scores",
        "maxStorageBufferBindingSize (131072 bytes)",
      ]);
    }
    assertNoLeak(engine, before);
  }, { maxStorageBufferBindingSize: 2 ** 17 }));

test("knnScores reports neighbours whose labels are outside [0, classes) at the next readback", async (engine) => {
  using tf = engine.tensor([1, 0, 0, 1], [2, 2]);
  using tb = engine.tensor([1, 0, 0, 1, -1, 0], [3, 2]);
  using tl = engine.tensor([0, 5, 1], [3], "i32");
  const before = engine.memory();
  // Bank row 1 (label 5) is a neighbour of both queries: two bad votes.
  const scores = knnScores(tf, tb, tl, { classes: 2, k: 2 });
  await assertThrows(() => take(scores), RangeError, [
    "knnScores",
    "2 neighbour labels",
    "[0, 2)",
    "5",
    "bank row 1",
  ]);
  assertNoLeak(engine, before);
});

test("knnScores refuses mismatched shapes, labels, k, classes and temperature", async (engine) => {
  using f = engine.zeros([4, 3]);
  using bank = engine.zeros([10, 3]);
  using wide = engine.zeros([10, 5]);
  using labels = engine.zeros([10], "i32");
  using short = engine.zeros([9], "i32");
  using floats = engine.zeros([10]);
  const before = engine.memory();
  await assertThrows(() => knnScores(f, wide, labels, { classes: 2 }), ShapeError, ["[4, 3]", "[10, 5]"]);
  await assertThrows(() => knnScores(f, bank, short, { classes: 2 }), ShapeError, ["i32 [10]", "[9]"]);
  await assertThrows(() => knnScores(f, bank, floats, { classes: 2 }), ShapeError, ["i32 [10]", "f32"]);
  await assertThrows(() => knnScores(f, bank, labels, { classes: 2, k: 11 }), RangeError, ["[1, 10]", "11"]);
  {
    // topk ranks at most 16,384 per selection: a larger k is refused here, before anything is allocated.
    using big = engine.zeros([16_385, 3]);
    using bigLabels = engine.zeros([16_385], "i32");
    await assertThrows(() => knnScores(f, big, bigLabels, { classes: 2, k: 16_385 }), RangeError, [
      "knnScores",
      "[1, 16384]",
    ]);
  }
  await assertThrows(() => knnScores(f, bank, labels, { classes: 0 }), RangeError, ["classes", "0"]);
  await assertThrows(() => knnScores(f, bank, labels, { classes: 2, temperature: 0 }), RangeError, [
    "temperature",
  ]);
  assertNoLeak(engine, before);
});

test("knnScores names tensors of two engines before it allocates (labels from another lost the batch)", async () => {
  const [mine, other] = await twoEngines();
  const before = [mine.memory(), other.memory()];
  {
    using f = mine.randn([4, 3], { seed: 1 });
    using bank = mine.randn([10, 3], { seed: 2 });
    using labels = mine.zeros([10], "i32");
    using otherBank = other.randn([10, 3], { seed: 2 });
    using otherLabels = other.zeros([10], "i32");
    const elsewhere = ["knnScores", "different engines"];
    await assertThrows(() => knnScores(f, otherBank, labels, { classes: 2 }), Error, elsewhere);
    await assertThrows(() => knnScores(f, bank, otherLabels, { classes: 2 }), Error, elsewhere);
    assertEquals(
      (await take(knnScores(f, bank, labels, { classes: 2, k: 3 }))).length,
      8,
      "the engine works",
    );
  }
  assertNoLeak(mine, before[0]);
  assertNoLeak(other, before[1]);
});
