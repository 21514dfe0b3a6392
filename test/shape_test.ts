import { concat, grad, mul, noGrad, reshape, ShapeError, slice, sum, transpose } from "../src/mod.ts";
import type { DType, Engine, Tensor } from "../src/mod.ts";
import { refConcat, refPad, refSlice, refTranspose } from "../src/ref/shape.ts";
import { bothKernels, test } from "./harness.ts";
import {
  assertClose,
  assertEquals,
  assertNoLeak,
  assertThrows,
  finiteDifference,
  randomArray,
  rng,
  take,
} from "./util.ts";

// Shape ops copy 4-byte elements as raw bits, so every comparison is exact (tolerance 0).
const DTYPES: DType[] = ["f32", "i32", "u32"];
const EXACT = { rtol: 0, atol: 0 };

const size = (shape: readonly number[]) => shape.reduce((a, b) => a * b, 1);

/** Values that tell the dtypes apart: f32 fractions, negative i32, u32 above 2^31. */
function values(dtype: DType, n: number, seed: number): number[] {
  const r = rng(seed);
  return Array.from(
    { length: n },
    () =>
      dtype === "f32"
        ? Math.fround(r() * 8 - 4)
        : dtype === "i32"
        ? Math.floor(r() * 2 ** 32) - 2 ** 31
        : Math.floor(r() * 2 ** 32),
  );
}

/** A random shape with dims drawn from 1, small primes and a non-multiple of the workgroup size. */
function shapeOf(rank: number, seed: number): number[] {
  const r = rng(seed);
  const dims = [1, 2, 3, 5, 7, 13, 1, 4];
  return Array.from(
    { length: rank },
    (_, d) => (rank <= 2 && d === rank - 1 && r() < 0.3 ? 257 : dims[Math.floor(r() * dims.length)]),
  );
}

function shuffled(n: number, seed: number): number[] {
  const r = rng(seed);
  const p = Array.from({ length: n }, (_, i) => i);
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(r() * (i + 1));
    [p[i], p[j]] = [p[j], p[i]];
  }
  return p;
}

async function read(t: Tensor): Promise<number[]> {
  const a = Array.from(await t.toArray());
  t.dispose();
  return a;
}

test("transpose matches the reference for every dtype, random perms and shapes", async (engine) => {
  const before = engine.memory();
  for (let s = 0; s < 24; s++) {
    const dtype = DTYPES[s % 3];
    const shape = shapeOf(1 + (s % 6), s);
    const perm = s % 4 === 0 ? undefined : shuffled(shape.length, s);
    const x = values(dtype, size(shape), s);
    using t = engine.tensor(x, shape, dtype);
    const y = transpose(t, perm);
    const p = perm ?? shape.map((_, i) => shape.length - 1 - i);
    assertEquals(y.shape, p.map((a) => shape[a]), `shape of ${shape} by ${p}`);
    assertEquals(y.dtype, dtype);
    assertEquals(await read(y), refTranspose(x, shape, p), `${dtype} ${shape} perm ${p}`);
  }
  const m = engine.tensor([1, 2, 3, 4, 5, 6], [2, 3]);
  assertEquals(await read(transpose(m, [-1, 0])), [1, 4, 2, 5, 3, 6], "negative axes in perm");
  m.dispose();
  assertNoLeak(engine, before);
});

test("transposes that move the innermost dim (4×4 blocks) match the reference bit for bit", async (engine) => {
  // Batches of matrix transposes whose sides are multiples of 4 take blocks of vec4s (transpose4), every other
  // perm that moves the innermost dim blocks of elements (tile), the edge blocks cut short: square and not, one
  // block, primes, sides of 1 (a copy), row counts that are not powers of two (65 blocks), batch dims of 1 and
  // more; perms that become a matrix swap once the axes they keep together are merged (NCHW ↔ NHWC, a cyclic
  // shift, axes of size 1 between); and others with outer dims strided on both sides (MAE's patchify and its
  // inverse, a reversal). u32 bit patterns of signalling and quiet NaNs must come through unchanged.
  const before = engine.memory();
  const cases: [number[], number[] | undefined][] = [
    [[4, 4], undefined],
    [[8, 12], undefined],
    [[12, 8], [1, 0]],
    [[4, 260], undefined],
    [[3, 20, 36], [0, 2, 1]],
    [[2, 1, 4, 8], [0, 1, 3, 2]],
    [[1, 28, 4], [0, -1, -2]],
    [[1, 1], undefined],
    [[1, 7], undefined],
    [[7, 1], undefined],
    [[5, 3], undefined],
    [[13, 4], undefined],
    [[4, 13], undefined],
    [[3, 17, 11], [0, 2, 1]],
    [[2, 1, 9, 6], [0, 1, 3, 2]],
    [[259, 257], undefined],
    [[2, 3, 5, 7], [0, 2, 3, 1]],
    [[2, 5, 7, 3], [0, 3, 1, 2]],
    [[6, 4, 8], [1, 2, 0]],
    [[5, 1, 3], [2, 1, 0]],
    [[3, 4, 1, 5], [3, 0, 1, 2]],
    [[1, 4, 1, 9, 1], [0, 3, 4, 1, 2]],
    [[2, 3, 2, 4, 2, 4], [0, 2, 4, 3, 5, 1]],
    [[2, 2, 2, 4, 4, 3], [0, 5, 1, 3, 2, 4]],
    [[3, 5, 7], [2, 1, 0]],
    [[7, 1, 3, 5], [3, 2, 0, 1]],
  ];
  let seed = 900;
  for (const [shape, perm] of cases) {
    for (const dtype of DTYPES) {
      const x = values(dtype, size(shape), seed++);
      if (dtype === "u32" && x.length >= 3) x.splice(0, 3, 0x7fa00001, 0xffc00000, 0x7f800001);
      using t = engine.tensor(x, shape, dtype);
      const p = (perm ?? shape.map((_, i) => shape.length - 1 - i)).map((a) =>
        (a + shape.length) % shape.length
      );
      const y = transpose(t, perm);
      assertEquals(y.shape, p.map((a) => shape[a]), `shape of ${shape} by ${p}`);
      assertEquals(await read(y), refTranspose(x, shape, p), `${dtype} ${shape} perm ${p}`);
    }
  }
  assertNoLeak(engine, before);
});

test("transpose of [4097, 4099], 16.8M elements, names every source element", async (engine) => {
  // 4,105 workgroups of 256 4×4 element blocks (transpose1), the last row and column of blocks cut short: a
  // 128 MiB binding holds at most 8,192 such workgroups, so the grid laid over x and y is checked in
  // engine_test.ts. u32 iota: each output element must name its source index.
  const [r, c] = [4097, 4099];
  const x = new Uint32Array(r * c);
  for (let i = 0; i < x.length; i++) x[i] = i;
  using t = engine.tensor(x, [r, c], "u32");
  const y = await take(transpose(t));
  for (let j = 0; j < c; j++) {
    for (let i = 0; i < r; i++) {
      if (y[j * r + i] !== i * c + j) {
        throw new Error(`out[${j}, ${i}] = ${y[j * r + i]}, expected ${i * c + j}`);
      }
    }
  }
});

test("slice matches the reference for every dtype, with negative indices", async (engine) => {
  const before = engine.memory();
  for (let s = 0; s < 24; s++) {
    const dtype = DTYPES[s % 3];
    const shape = shapeOf(1 + (s % 5), 100 + s);
    const r = rng(s);
    const given = Math.floor(r() * (shape.length + 1));
    const begin = shape.map((n) => Math.floor(r() * n));
    const end = shape.map((n, d) => begin[d] + 1 + Math.floor(r() * (n - begin[d])));
    // Half the time pass each index counted from the end instead.
    const starts = begin.slice(0, given).map((b, d) => (r() < 0.5 ? b - shape[d] : b));
    const ends = end.slice(0, given).map((e, d) => (r() < 0.5 && e < shape[d] ? e - shape[d] : e));
    const wholeBegin = shape.map((_, d) => (d < given ? begin[d] : 0));
    const wholeEnd = shape.map((n, d) => (d < given ? end[d] : n));
    const x = values(dtype, size(shape), s);
    using t = engine.tensor(x, shape, dtype);
    const y = slice(t, starts, ends);
    assertEquals(y.shape, wholeEnd.map((e, d) => e - wholeBegin[d]));
    assertEquals(
      await read(y),
      refSlice(x, shape, wholeBegin, wholeEnd),
      `${dtype} ${shape} [${starts}] [${ends}]`,
    );
  }
  assertNoLeak(engine, before);
});

test("concat matches the reference for every dtype and axis", async (engine) => {
  const before = engine.memory();
  for (let s = 0; s < 24; s++) {
    const dtype = DTYPES[s % 3];
    const shape = shapeOf(1 + (s % 4), 200 + s);
    const axis = s % shape.length;
    const r = rng(s);
    const count = 1 + Math.floor(r() * 4);
    const shapes = Array.from(
      { length: count },
      () => shape.map((n, d) => (d === axis ? 1 + Math.floor(r() * 6) : n)),
    );
    const xs = shapes.map((sh, i) => values(dtype, size(sh), 10 * s + i));
    const ts = xs.map((x, i) => engine.tensor(x, shapes[i], dtype));
    // Every other case passes the axis counted from the end.
    const y = concat(ts, s % 2 ? axis - shape.length : axis);
    assertEquals(y.shape, shape.map((n, d) => (d === axis ? shapes.reduce((a, sh) => a + sh[axis], 0) : n)));
    assertEquals(
      await read(y),
      refConcat(xs, shapes, axis),
      `${dtype} ${shapes.map((sh) => `[${sh}]`)} axis ${axis}`,
    );
    ts.forEach((t) => t.dispose());
  }
  assertNoLeak(engine, before);
});

test("a large concat along the last axis writes all 16.8M elements", async (engine) => {
  // Along axis 1 the slabs interleave, so the kernel (not a buffer copy) writes 16.8M elements.
  const rows = 4099;
  const a = engine.tensor(Uint32Array.from({ length: rows * 4000 }, (_, i) => i), [rows, 4000], "u32");
  const b = engine.tensor(Uint32Array.from({ length: rows * 97 }, (_, i) => 2 ** 31 + i), [rows, 97], "u32");
  const y = await take(concat([a, b], 1));
  for (let i = 0; i < rows; i++) {
    for (let j = 0; j < 4097; j++) {
      const want = j < 4000 ? i * 4000 + j : 2 ** 31 + i * 97 + j - 4000;
      if (y[i * 4097 + j] !== want) throw new Error(`out[${i}, ${j}] = ${y[i * 4097 + j]}, expected ${want}`);
    }
  }
  a.dispose();
  b.dispose();
});

/** Slices of a u32 tensor (NaN bit patterns first, which must survive) against the reference, bit for bit. */
async function checkSlices(
  engine: Engine,
  shape: number[],
  seed: number,
  ranges: number[][][],
): Promise<void> {
  const x = values("u32", size(shape), seed);
  x.splice(0, 3, 0x7fa00001, 0xffc00000, 0x7f800001);
  using t = engine.tensor(x, shape, "u32");
  for (const [begin, end] of ranges) {
    assertEquals(await read(slice(t, begin, end)), refSlice(x, shape, begin, end), `slice ${begin}..${end}`);
  }
}

/** A concat of [3, w] u32 tensors along the last axis against the reference. */
async function checkConcat(engine: Engine, widths: number[], seed: number): Promise<void> {
  const parts = widths.map((w, k) => values("u32", 3 * w, seed + k));
  const tensors = parts.map((v, k) => engine.tensor(v, [3, widths[k]], "u32"));
  assertEquals(
    await read(concat(tensors, 1)),
    refConcat(parts, widths.map((w) => [3, w]), 1),
    `concat widths ${widths}`,
  );
  tensors.forEach((t) => t.dispose());
}

/** Slice's backward (a pad into zeros) of x [shape] sliced begin..end, against the reference. */
async function checkPad(engine: Engine, shape: number[], begin: number[], end: number[], seed: number) {
  const gs = end.map((e, d) => e - begin[d]);
  const g = values("f32", size(gs), seed);
  using tx = engine.tensor(values("f32", size(shape), seed + 1), shape);
  using tg = engine.tensor(g, gs);
  const dx = engine.tidy(() => grad(sum(mul(slice(tx, begin, end), tg)), [tx])[0]);
  assertEquals(await read(dx), refPad(g, gs, shape, begin), `slice ${begin}..${end} backward (pad)`);
}

test("copies whose innermost run is whole, aligned vec4s (main4) match the reference bit for bit", async (engine) => {
  // Slices, concats, pads (slice's backward) and transposes that keep the last dim move a vec4 per invocation
  // where the innermost run is contiguous on both sides, a multiple of 4 long and every stride and offset a
  // multiple of 4; a start 2 elements off takes the element-wise kernel. u32 NaN bit patterns must survive.
  const before = engine.memory();
  await checkSlices(engine, [6, 12, 20], 950, [
    [[1, 4, 8], [5, 12, 16]],
    [[0, 0, 2], [6, 12, 10]],
    [[2, 0, 0], [4, 12, 20]],
  ]);
  await checkConcat(engine, [8, 12], 951);
  {
    const hs = [2, 3, 4, 8];
    const h = values("f32", size(hs), 953);
    using th = engine.tensor(h, hs);
    assertEquals(
      await read(transpose(th, [1, 0, 2, 3])),
      refTranspose(h, hs, [1, 0, 2, 3]),
      "heads transpose",
    );
  }
  await checkPad(engine, [6, 12, 20], [1, 4, 8], [5, 12, 16], 954);
  assertNoLeak(engine, before);
});

test("copies whose innermost run is contiguous but not vec4-aligned (shift4) match the reference bit for bit", async (engine) => {
  // Runs of 8 or more contiguous elements on both sides whose starts or lengths are not multiples of 4: whole
  // destination vec4s from two shifted source vec4s (every shift 0..3 appears), then up to 3 elements at each
  // end of a row; runs of 8, a rank-3 slice, odd concat widths and a pad (slice's backward) into a larger row.
  const before = engine.memory();
  await checkSlices(engine, [5, 7, 37], 960, [
    [[0, 0, 1], [5, 7, 37]],
    [[1, 2, 3], [4, 7, 11]],
    [[0, 1, 2], [5, 6, 34]],
    [[2, 0, 5], [3, 7, 36]],
    [[0, 3, 0], [5, 5, 29]],
  ]);
  await checkConcat(engine, [9, 13, 8, 11], 961);
  await checkPad(engine, [6, 7, 37], [1, 1, 3], [5, 6, 33], 965);
  assertNoLeak(engine, before);
});

test("a transpose whose output rows each span more than one binding runs in tiles of two dims", () =>
  // 1 MiB bindings (262,144 elements): one output row of [700, 450]ᵀ reads a column spanning 314,551 elements,
  // so the copy goes in blocks of output rows, each split along the input's rows. [3, 700, 450] moves its last
  // axis first (blocks of the batch's columns) or second; [2, 300, 600, 3] by [3, 2, 1, 0] spans more than a
  // binding in a row of the two outer output dims (three levels of blocks). u32 iota: each output element names
  // its source, exactly.
  bothKernels(async (engine) => {
    const before = engine.memory();
    const cases: [number[], number[]][] = [
      [[700, 450], [1, 0]],
      [[3, 700, 450], [2, 0, 1]],
      [[3, 700, 450], [0, 2, 1]],
      [[2, 300, 600, 3], [3, 2, 1, 0]],
    ];
    for (const [shape, perm] of cases) {
      const x = Uint32Array.from({ length: size(shape) }, (_, i) => i);
      using t = engine.tensor(x, shape, "u32");
      const want = refTranspose(Array.from(x), shape, perm);
      assertClose(await take(transpose(t, perm)), want, EXACT, `transpose ${shape} by [${perm}]`);
    }
    assertNoLeak(engine, before);
  }, { maxStorageBufferBindingSize: 2 ** 20 }));

test("slice and concat of tensors over maxStorageBufferBindingSize are split into bindable windows", async (engine) => {
  // [8200, 4100] u32 is 134,480,000 bytes, over llvmpipe's 128 MiB binding limit: the copies run in chunks of
  // rows, each bound as a window. Splitting it in halves and joining them back must give the iota again.
  const [r, c] = [8200, 4100];
  if (r * c * 4 <= engine.maxBinding) {
    throw new Error(`pick a larger tensor for a ${engine.maxBinding}-byte limit`);
  }
  const before = engine.memory();
  const iota = new Uint32Array(r * c);
  for (let i = 0; i < iota.length; i++) iota[i] = i;
  const x = engine.tensor(iota, [r, c], "u32");
  const left = slice(x, [0, 0], [r, 2050]);
  const right = slice(x, [0, 2050], [r, c]);
  const joined = concat([left, right], 1);
  left.dispose();
  right.dispose();
  const y = await joined.toArray();
  for (let i = 0; i < y.length; i++) if (y[i] !== i) throw new Error(`joined[${i}] = ${y[i]}`);
  joined.dispose();
  // Halves of 2048 and 2052 columns: vec4-aligned runs, copied a vec4 at a time (main4) in windows of vec4s.
  const left4 = slice(x, [0, 0], [r, 2048]);
  const right4 = slice(x, [0, 2048], [r, c]);
  const joined4 = concat([left4, right4], 1);
  left4.dispose();
  right4.dispose();
  const y4 = await joined4.toArray();
  joined4.dispose();
  for (let i = 0; i < y4.length; i++) if (y4[i] !== i) throw new Error(`joined (vec4 runs)[${i}] = ${y4[i]}`);
  x.dispose();
  assertNoLeak(engine, before);
});

/** The backward of `op` at x for output gradient g, against the reference VJP and finite differences. */
async function checkGrad(
  engine: Engine,
  name: string,
  shape: number[],
  op: (t: Tensor) => Tensor,
  refVjp: (g: number[], outShape: readonly number[]) => number[],
  seed: number,
): Promise<void> {
  const x = randomArray(size(shape), seed);
  using t = engine.tensor(x, shape);
  const y = op(t);
  const outShape = y.shape;
  const g = randomArray(y.size, seed + 1);
  using gt = engine.tensor(g, outShape);
  // The node's backward with cotangent g is the gradient of Σ g·op(x) (grad() itself is tested below).
  const grads = noGrad(() => y.node!.backward(gt, y.node!.inputs.map(() => true)));
  const k = y.node!.inputs.indexOf(t);
  grads.forEach((gi, i) => i !== k && gi?.dispose());
  y.dispose();
  const got = await read(grads[k]!);
  // The backward is a copy plus zeros: exact.
  assertClose(got, refVjp(Array.from(g), outShape), EXACT, `${name} backward vs reference`);
  // Σ g·op(x) is linear in x, so central differences are exact up to float64 rounding of the sum.
  const f = async (v: Float32Array) => {
    using tv = engine.tensor(v, shape);
    const out = await read(op(tv));
    return out.reduce((acc, o, i) => acc + o * g[i], 0);
  };
  const idx = [0, Math.floor(x.length / 2), x.length - 1];
  const fd = await finiteDifference(f, x, idx);
  assertClose(
    idx.map((i) => got[i]),
    fd,
    { rtol: 1e-6, atol: 1e-6 },
    `${name} backward vs finite differences`,
  );
}

test("gradients of transpose, slice and concat match the reference and finite differences", async (engine) => {
  const before = engine.memory();
  const shape = [3, 5, 7];
  await checkGrad(
    engine,
    "transpose",
    shape,
    (t) => transpose(t, [2, 0, 1]),
    (g, os) => refTranspose(g, os, [1, 2, 0]),
    1,
  );
  await checkGrad(
    engine,
    "slice",
    shape,
    (t) => slice(t, [1, -4], [3, 4]),
    (g, os) => refPad(g, os, shape, [1, 1, 0]),
    2,
  );
  const other = engine.tensor(randomArray(3 * 2 * 7, 9), [3, 2, 7]);
  await checkGrad(
    engine,
    "concat",
    shape,
    (t) => concat([other, t, other], 1),
    (g, os) => refSlice(g, os, [0, 2, 0], [3, 7, 7]),
    3,
  );
  other.dispose();
  assertNoLeak(engine, before);
});

test("grad() flows through a chain of shape ops to every input", async (engine) => {
  // loss = Σ over a sliced, transposed concat: 1 on the elements that survive the slice, 0 elsewhere.
  const before = engine.memory();
  const a = engine.tensor(randomArray(6, 1), [2, 3]);
  const b = engine.tensor(randomArray(4, 2), [2, 2]);
  const c = concat([a, b], 1);
  const t = transpose(c);
  const s = slice(t, [1, 1], [4, 2]);
  const flat = reshape(s, [-1]);
  const first = slice(flat, [0], [1]);
  const loss = reshape(first, []);
  const [ga, gb] = grad(loss, [a, b]);
  // loss = s[0, 0] = t[1, 1] = c[1, 1] = a[1, 1].
  assertEquals(await read(ga), [0, 0, 0, 0, 1, 0]);
  assertEquals(await read(gb), [0, 0, 0, 0]);
  for (const x of [a, b, c, t, s, flat, first, loss]) x.dispose();
  assertNoLeak(engine, before);
});

test("bad arguments throw clear errors and leak nothing", async (engine) => {
  using x = engine.tensor(randomArray(30, 1), [2, 3, 5]);
  using y = engine.tensor(randomArray(8, 2), [2, 4]);
  using n = engine.tensor([1, 2, 3, 4, 5, 6, 7, 8], [2, 4], "i32");
  using one = engine.tensor([1], [1, 1]);
  // Rank 9 with every dim reversed leaves 9 strided dims, over the kernel's 8.
  using deep = engine.zeros([2, 2, 2, 2, 2, 2, 2, 2, 2]);
  const gone = engine.tensor([1, 2], [2]);
  gone.dispose();
  const before = engine.memory();
  await assertThrows(() => transpose(x, [0, 1]), RangeError, ["[0,1]", "[2, 3, 5]"]);
  await assertThrows(() => transpose(x, [0, 1, 1]), RangeError, ["not a permutation"]);
  await assertThrows(() => transpose(x, [0, 1, 3]), RangeError, ["axis 3"]);
  await assertThrows(() => transpose(x, [0, 1.5, 2]), RangeError, ["axis 1.5"]);
  await assertThrows(() => slice(x, [0, 0, 5], [2, 3, 6]), RangeError, ["dim 2", "[5, 6)", "[2, 3, 5]"]);
  await assertThrows(() => slice(x, [1], [1]), RangeError, ["dim 0", "empty"]);
  await assertThrows(() => slice(x, [-3], [2]), RangeError, ["[-1, 2)"]);
  await assertThrows(() => slice(x, [0, 0], [1]), RangeError, ["equally many"]);
  await assertThrows(() => slice(x, [0, 0, 0, 0], [1, 1, 1, 1]), RangeError, ["at most one per dim"]);
  await assertThrows(() => concat([x, y], 0), ShapeError, ["ranks differ", "[2, 3, 5]", "[2, 4]"]);
  await assertThrows(() => concat([y, y, one], 0), ShapeError, ["[2, 4], [2, 4], [1, 1]", "outside axis 0"]);
  await assertThrows(() => concat([y, n], 0), TypeError, ["f32 [2, 4]", "i32 [2, 4]"]);
  await assertThrows(() => concat([y], 2), RangeError, ["axis 2"]);
  await assertThrows(() => concat([], 0), RangeError, ["at least one"]);
  await assertThrows(() => reshape(x, [7, -1]), ShapeError, ["[2, 3, 5]", "[7, -1]"]);
  await assertThrows(() => reshape(x, [2.5, -1]), ShapeError, ["reshape", "[2.5, -1]", "integers"]);
  await assertThrows(() => transpose(deep), ShapeError, ["9 non-contiguous dims"]);
  for (
    const op of [
      () => transpose(gone),
      () => slice(gone, [0], [1]),
      () => concat([y, gone]),
      () => reshape(gone, [2]),
    ]
  ) {
    await assertThrows(op, Error, ["used after dispose", "[2]"]);
  }
  assertNoLeak(engine, before);
});
