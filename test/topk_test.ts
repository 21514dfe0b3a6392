import { grad, mul, ShapeError, sort, sum, topk } from "../src/mod.ts";
import type { Engine, Tensor } from "../src/mod.ts";
import { refTopk } from "../src/ref/topk.ts";
import { bothKernels, test } from "./harness.ts";
import {
  assertClose,
  assertEquals,
  assertFiniteDifferences,
  assertNoLeak,
  assertThrows,
  randomArray,
  rng,
  take,
} from "./util.ts";

const size = (shape: readonly number[]) => shape.reduce((a, b) => a * b, 1);
// Selection copies values and counts indices: both exact.
const EXACT = { rtol: 0, atol: 0 };

/** topk of x against the reference, values and indices, both orders. */
async function checkTopk(engine: Engine, x: Float32Array, shape: number[], k: number, axis?: number) {
  using t = engine.tensor(x, shape);
  for (const largest of [true, false]) {
    const what = `${shape} k ${k} axis ${axis ?? -1} ${largest ? "largest" : "smallest"}`;
    const { values, indices } = topk(t, k, { axis, largest });
    const want = refTopk(x, shape, k, axis ?? shape.length - 1, largest);
    assertEquals(values.shape, want.shape, `${what} shape`);
    assertEquals(indices.dtype, "i32", `${what} dtype`);
    assertClose(await take(indices), want.indices, EXACT, `${what} indices`);
    assertClose(await take(values), want.values, EXACT, `${what} values`);
  }
}

test("topk matches a full sort on random shapes, k from 1 to the whole row, ties by lower index", async (engine) => {
  const before = engine.memory();
  const r = rng(1);
  const dims = [1, 2, 3, 7, 13, 97, 257, 1009];
  for (let c = 0; c < 14; c++) {
    const shape = Array.from({ length: 1 + (c % 3) }, () => dims[Math.floor(r() * dims.length)]);
    const axis = c % 4 === 3 ? Math.floor(r() * shape.length) : undefined;
    const len = shape[axis ?? shape.length - 1];
    const k = [1, len, 1 + Math.floor(r() * len)][c % 3];
    // Integers in [-4, 4] (rows full of ties) or floats spread over exponents.
    const x = c % 2
      ? randomArray(size(shape), c, -4.5, 4.5).map(Math.round)
      : randomArray(size(shape), c).map((v, i) => v * 2 ** ((i % 41) - 20));
    await checkTopk(engine, x, shape, k, axis);
  }
  assertNoLeak(engine, before);
});

test("topk orders NaN above every number, −0 with +0, ±∞ at the ends", async (engine) => {
  const before = engine.memory();
  const x = Float32Array.of(0, NaN, -0, Infinity, -Infinity, 1, NaN, -1, 0, -Infinity, Infinity, -0);
  for (const k of [1, 3, 6, 12]) await checkTopk(engine, x, [12], k);
  await checkTopk(engine, x, [3, 4], 2);
  // A row of one value: the first k indices.
  await checkTopk(engine, new Float32Array(50).fill(0.25), [50], 7);
  assertNoLeak(engine, before);
});

test("topk over long rows, many rows, and k in the thousands", async (engine) => {
  const before = engine.memory();
  // 100,003 elements a row, its largest values planted twice (the first wins), and 3,000 rows of 64.
  const x = randomArray(2 * 100_003, 2);
  for (const row of [0, 1]) for (const i of [7, 99_001, 50_000]) x[row * 100_003 + i] = 3;
  await checkTopk(engine, x, [2, 100_003], 5);
  await checkTopk(engine, randomArray(3000 * 64, 3), [3000, 64], 10);
  // k = 5,000 of 20,011: every candidate ranks itself against 5,000 others.
  await checkTopk(engine, randomArray(20_011, 4), [20_011], 5000);
  assertNoLeak(engine, before);
});

test("topk runs rows in batches whose bins fit one binding, and names the limit for an x over one", () =>
  bothKernels(async (engine) => {
    const before = engine.memory();
    // 1 MiB bindings hold the bins of 1,024 rows: 3,000 rows are three batches.
    await checkTopk(engine, randomArray(3000 * 5, 7).map((v) => Math.round(4 * v)), [3000, 5], 2);
    {
      // x itself over one binding is not windowed: the error names the limit.
      using wide = engine.zeros([300, 1000]);
      await assertThrows(() => topk(wide, 2), ShapeError, [
        "topk: x of [300, 1000]",
        "1200000 bytes",
        "maxStorageBufferBindingSize (1048576 bytes)",
      ]);
      // Along another axis too, named by the caller's shape (the transposed copy leaked, naming its own).
      using deep = engine.zeros([8, 300, 200]);
      await assertThrows(() => topk(deep, 2, { axis: 1 }), ShapeError, [
        "topk: x of [8, 300, 200]",
        "1920000",
      ]);
    }
    assertNoLeak(engine, before);
  }, { maxStorageBufferBindingSize: 2 ** 20 }));

test("topk refuses k whose candidates of one row are over one binding, before allocating", () =>
  bothKernels(async (engine) => {
    // 64 KiB bindings: 10,000 candidates of 8 bytes take 80,000 (x and its indices take 40,000 each). No row
    // fitted its batch: the batch was empty, and the indices leaked.
    using x = engine.zeros([1, 10_000]);
    const before = engine.memory();
    await assertThrows(() => sort(x), ShapeError, ["one row's candidates", "80000 bytes", "65536"]);
    assertNoLeak(engine, before);
  }, { maxStorageBufferBindingSize: 2 ** 16 }));

test("topk values carry the gradient back to the elements they came from", async (engine) => {
  const before = engine.memory();
  const shape = [5, 9];
  // Distinct values 0.05 apart (> 2h): the finite differences never cross a tie.
  const r = rng(5);
  const x = Float32Array.from(
    Array.from({ length: 45 }, (_, i) => i * 0.05).map((v) => ({ v, k: r() })).sort((a, b) => a.k - b.k),
    (e) => e.v,
  );
  const w = randomArray(27, 6);
  for (const axis of [1, 0]) {
    const wShape = axis === 1 ? [5, 3] : [3, 9];
    const wSlice = w.subarray(0, size(wShape));
    using t = engine.tensor(x, shape);
    using tw = engine.tensor(wSlice, wShape);
    const [g] = engine.tidy(() => grad(sum(mul(topk(t, 3, { axis }).values, tw)), [t]));
    // The reference: w scattered to the chosen elements.
    const want = new Float64Array(45);
    const { indices } = refTopk(x, shape, 3, axis);
    indices.forEach((i, j) => {
      const at = axis === 1 ? Math.floor(j / 3) * 9 + i : i * 9 + (j % 9);
      want[at] += wSlice[j];
    });
    const got = await take(g);
    assertClose(got, want, EXACT, `axis ${axis}`);
    const lossOf = async (v: Float32Array) => {
      using u = engine.tensor(v, shape);
      return (await take(engine.tidy(() => sum(mul(topk(u, 3, { axis }).values, tw)))))[0];
    };
    const probe = [0, 8, 17, 30, 44];
    // Linear between ties: differences of sums of 15 f32 products (≲ 1e-6 each) over 2h = 0.02.
    await assertFiniteDifferences(got, lossOf, x, probe, 0.01, { rtol: 0, atol: 2e-4 }, `axis ${axis}`);
  }
  assertNoLeak(engine, before);
});

test("topk refuses a bad k, axis, dtype or rank, and a disposed tensor", async (engine) => {
  using t = engine.zeros([4, 6]);
  using long = engine.zeros([20_000]);
  using ints = engine.zeros([5], "i32");
  using scalar = engine.tensor([1], []);
  const before = engine.memory();
  for (const k of [0, 7, 2.5]) await assertThrows(() => topk(t, k), RangeError, ["k", "[1, 6]", String(k)]);
  await assertThrows(() => topk(t, 2, { axis: 2 }), RangeError, ["axis 2", "[4, 6]"]);
  await assertThrows(() => topk(long, 16_385), RangeError, ["16385", "16384"]);
  await assertThrows(() => topk(ints, 1), TypeError, ["topk", "i32"]);
  await assertThrows(() => topk(scalar, 1), ShapeError, ["topk", "[]"]);
  const gone = engine.zeros([3]);
  gone.dispose();
  await assertThrows(() => topk(gone, 1), Error, ["dispose"]);
  assertNoLeak(engine, before, "after the refusals");
});

test("sort orders a whole axis, ascending or descending, stable, NaN at the large end", async (engine) => {
  const before = engine.memory();
  const x = Float32Array.of(3, NaN, -1, 3, 0, -0, Infinity, -2, 3, NaN, 1, -Infinity);
  for (const [shape, axis] of [[[12], -1], [[3, 4], 1], [[3, 4], 0], [[2, 3, 2], 1]] as const) {
    using t = engine.tensor(x, [...shape]);
    for (const descending of [false, true]) {
      const { values, indices } = sort(t, { axis, descending });
      const want = refTopk(
        x,
        [...shape],
        shape[(axis + shape.length) % shape.length],
        (axis + shape.length) % shape.length,
        descending,
      );
      const what = `sort ${shape} axis ${axis} ${descending ? "descending" : "ascending"}`;
      assertClose(await take(indices), want.indices, EXACT, `${what} indices`);
      assertClose(await take(values), want.values, EXACT, `${what} values`);
    }
  }
  {
    using long = engine.zeros([2, 16_385]);
    await assertThrows(() => sort(long), RangeError, ["sort", "16385", "16384"]);
  }
  await assertThrows(() => sort(null as unknown as Tensor), TypeError, ["sort", "Tensor", "null"]);
  assertNoLeak(engine, before);
});
