import { embedding, gatherRows, grad, mul, ShapeError, sum } from "../src/mod.ts";
import type { Engine, Tensor } from "../src/mod.ts";
import { refGatherRows, refScatterAdd } from "../src/ref/gather.ts";
import { bothKernels, test } from "./harness.ts";
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
const exact = { rtol: 0, atol: 0 };

/** `n` ids uniform in [0, len): repeats wherever n is near len or above. */
function randomIds(n: number, len: number, seed: number): Int32Array {
  const r = rng(seed);
  return Int32Array.from({ length: n }, () => Math.floor(r() * len));
}

/** Integers in [-4, 4]: sums of them are exact in f32 in any order, so repeated ids' gradients compare exactly. */
function smallIntegers(n: number, seed: number): Float32Array {
  const r = rng(seed);
  return Float32Array.from({ length: n }, () => Math.floor(r() * 9) - 4);
}

/**
 * f(x, ids) against the reference, and the gradient of Σ f·w for integer weights w, exactly: a gather copies,
 * and the scatter-add sums integers.
 */
async function checkGather(
  engine: Engine,
  what: string,
  f: (x: Tensor, ids: Tensor) => Tensor,
  x: Float32Array,
  xShape: number[],
  ids: Int32Array,
  idsShape: number[],
  rows: [number, number, number],
): Promise<void> {
  using tx = engine.tensor(x, xShape);
  using ti = engine.tensor(ids, idsShape, "i32");
  const y = f(tx, ti);
  const w = smallIntegers(y.size, ids.length);
  using tw = engine.tensor(w, y.shape);
  assertClose(await y.toArray(), refGatherRows(x, rows, ids), exact, `${what} value`);
  const yw = mul(y, tw);
  const loss = sum(yw);
  const [g] = grad(loss, [tx]);
  for (const t of [y, yw, loss]) t.dispose();
  assertClose(await take(g), refScatterAdd(w, rows, ids), exact, `${what} gradient`);
}

test("embedding matches the reference on random tables and ids, repeated ids summing their gradients", async (engine) => {
  const before = engine.memory();
  // Vocabulary V, width D (1, primes, multiples of 4 take the vec4 path), ids of ranks 1 to 3.
  const cases: [number, number, number[]][] = [
    [1, 1, [1]],
    [7, 3, [5]],
    [13, 4, [3, 7]],
    [1000, 13, [2, 3, 17]],
    [50, 64, [257]],
  ];
  for (const [k, [v, d, idsShape]] of cases.entries()) {
    const table = randomArray(v * d, k);
    const ids = randomIds(size(idsShape), v, 10 + k);
    await checkGather(
      engine,
      `embedding V=${v} D=${d}`,
      (x, i) => {
        const y = embedding(i, x);
        assert(y.shape.join() === [...idsShape, d].join(), `shape ${y.shape}`);
        return y;
      },
      table,
      [v, d],
      ids,
      idsShape,
      [1, v, d],
    );
  }
  assertNoLeak(engine, before);
});

test("gatherRows matches the reference: subsets, repeats and permutations of each item's rows", async (engine) => {
  const before = engine.memory();
  // [B, L, ...rest] by [B, K]: K below, equal to and above L; rest none, one dim or two (D = 6 and 48: both
  // paths); MAE's shape at 224² (196 patches, 49 visible).
  const cases: [number[], number, "random" | "permutation"][] = [
    [[1, 1], 1, "random"],
    [[2, 5, 3], 7, "random"],
    [[4, 11, 2, 3], 11, "permutation"],
    [[5, 7, 4], 1, "random"],
    [[3, 196, 48], 49, "permutation"],
  ];
  for (const [c, [shape, k, kind]] of cases.entries()) {
    const [b, len] = shape;
    const dim = size(shape.slice(2));
    const ids = kind === "random" ? randomIds(b * k, len, 20 + c) : new Int32Array(b * k);
    if (kind === "permutation") {
      // Each item's first k of a shuffle of its rows (Fisher–Yates): distinct ids.
      const r = rng(30 + c);
      for (let i = 0; i < b; i++) {
        const order = Array.from({ length: len }, (_, j) => j);
        for (let j = len - 1; j > 0; j--) {
          const s = Math.floor(r() * (j + 1));
          [order[j], order[s]] = [order[s], order[j]];
        }
        ids.set(order.slice(0, k), i * k);
      }
    }
    const x = randomArray(size(shape), 40 + c);
    await checkGather(engine, `gatherRows ${shape} by [${b}, ${k}]`, gatherRows, x, shape, ids, [b, k], [
      b,
      len,
      dim,
    ]);
  }
  assertNoLeak(engine, before);
});

test("gatherRows' gradient matches finite differences", async (engine) => {
  const before = engine.memory();
  {
    const shape = [2, 4, 3];
    const x = randomArray(24, 5);
    using ti = engine.tensor(Int32Array.of(3, 0, 3, 1, 1, 2), [2, 3], "i32");
    using tw = engine.tensor(randomArray(18, 6, 0.5, 1.5), [2, 3, 3]);
    const loss = async (v: Float32Array) => {
      using tv = engine.tensor(v, shape);
      using y = gatherRows(tv, ti);
      using yw = mul(y, tw);
      return (await take(sum(yw)))[0];
    };
    using tx = engine.tensor(x, shape);
    const y = gatherRows(tx, ti);
    const yw = mul(y, tw);
    const l = sum(yw);
    const [g] = grad(l, [tx]);
    for (const t of [y, yw, l]) t.dispose();
    const ga = await take(g);
    // Row 3 of item 0 twice, rows 1 and 2 of item 1 (1 twice); rows never picked have gradient 0.
    const idx = [0, 3, 9, 11, 12, 15, 18, 23];
    const fd = await finiteDifference(loss, x, idx);
    // h = 1e-2 on a linear loss: only f32 rounding of the loss (~2e-7 of ~5) over 2h, ~1e-4.
    assertClose(idx.map((i) => ga[i]), fd, { rtol: 1e-3, atol: 2e-4 }, "finite differences");
  }
  assertNoLeak(engine, before);
});

test("embedding over more than 65,535 workgroups, 1,320 adds to every gradient word", async (engine) => {
  // 66,000 ids × D = 257 (no vec4s): 16,962,000 invocations, 66,258 workgroups of 256 (the grid spills into y).
  // Only 50 rows, so each gradient word takes ~1,320 racing adds; integers keep every sum exact in any order.
  const before = engine.memory();
  const [v, d, n] = [50, 257, 66_000];
  const table = smallIntegers(v * d, 1);
  const ids = randomIds(n, v, 2);
  await checkGather(engine, "embedding, 66,000 ids", (x, i) => embedding(i, x), table, [v, d], ids, [n], [
    1,
    v,
    d,
  ]);
  assertNoLeak(engine, before);
});

test("ids outside the rows give NaN rows, throw at the next readback and add no gradient", async (engine) => {
  const before = engine.memory();
  const table = randomArray(15, 3);
  const ids = Int32Array.of(1, -1, 4, 5, 2, -7);
  {
    using tt = engine.tensor(table, [5, 3]);
    using ti = engine.tensor(ids, [6], "i32");
    const y = embedding(ti, tt);
    const loss = sum(y);
    const [g] = grad(loss, [tt]);
    await assertThrows(() => y.toArray(), RangeError, [
      "embedding: 3 ids outside [0, 5) (from -7 to 5; the first in position 1): their rows are NaN",
    ]);
    assertClose(await take(y), refGatherRows(table, [1, 5, 3], ids), exact, "NaN rows");
    loss.dispose();
    assertClose(
      await take(g),
      refScatterAdd(new Float32Array(18).fill(1), [1, 5, 3], ids),
      exact,
      "gradient",
    );
  }
  {
    // gatherRows names the position b·K + k.
    using tx = engine.tensor(randomArray(12, 4), [2, 3, 2]);
    using ti = engine.tensor(Int32Array.of(0, 2, 3, 1), [2, 2], "i32");
    using y = gatherRows(tx, ti);
    await assertThrows(() => y.toArray(), RangeError, [
      "1 id outside [0, 3) (from 3 to 3; the first in position 2)",
    ]);
  }
  assertNoLeak(engine, before);
});

test("embedding: a table over one storage binding is refused by its parameter's name, nothing leaked", () =>
  bothKernels(async (engine) => {
    using table = engine.zeros([70_000, 4]);
    using ids = engine.tensor(Int32Array.of(0, 3), [2], "i32");
    const before = engine.memory();
    await assertThrows(() => embedding(ids, table), ShapeError, [
      "embedding: weight of [70000, 4]",
      "1120000 bytes",
    ]);
    assertNoLeak(engine, before);
  }, { maxStorageBufferBindingSize: 2 ** 20 }));

test("embedding and gatherRows reject bad arguments with clear errors and leak nothing", async (engine) => {
  using table = engine.tensor(randomArray(12, 1), [4, 3]);
  using ids = engine.tensor(Int32Array.of(0, 3), [2], "i32");
  using floats = engine.tensor([0, 3], [2]);
  using flat = engine.tensor(randomArray(4, 2), [4]);
  using x = engine.tensor(randomArray(12, 3), [2, 3, 2]);
  using rowIds = engine.tensor(Int32Array.of(0, 1, 2), [3, 1], "i32");
  const gone = engine.tensor(Int32Array.of(1), [1], "i32");
  gone.dispose();
  const before = engine.memory();
  await assertThrows(() => embedding(floats, table), TypeError, ["ids must be i32", "f32 [2]"]);
  await assertThrows(() => embedding(ids, flat), ShapeError, ["weight [4]", "[V, D]", "ids [2]"]);
  await assertThrows(() => embedding(gone, table), Error, ["used after dispose"]);
  await assertThrows(() => gatherRows(x, rowIds), ShapeError, ["x [2, 3, 2]", "ids [3, 1]"]);
  await assertThrows(() => gatherRows(flat, ids), ShapeError, ["x [4]", "ids [2]"]);
  await assertThrows(() => gatherRows(x, ids), ShapeError, ["x [2, 3, 2]", "ids [2]"]);
  await assertThrows(() => gatherRows(rowIds, rowIds), TypeError, ["gatherRows", "i32 [3, 1]"]);
  assertNoLeak(engine, before);
  {
    // The ids are read again by the backward: disposed before grad(), it says which op needed them.
    using tx = engine.tensor(randomArray(12, 5), [2, 3, 2]);
    const picked = engine.tensor(Int32Array.of(0, 2), [2, 1], "i32");
    const y = gatherRows(tx, picked);
    const loss = sum(y);
    picked.dispose();
    await assertThrows(() => grad(loss, [tx]), Error, ["gatherRows", "used after dispose"]);
    y.dispose();
    loss.dispose();
  }
  assertNoLeak(engine, before);
});
