// Shape ops: reshape, transpose, slice, concat (shaders/shape.wgsl; CPU reference in src/ref/shape.ts).
// Every op is a copy (tensors never share buffers, so dispose stays simple) and keeps the dtype.
import { record } from "./autograd.ts";
import { type Binding, MAX_RANK, Params } from "./engine.ts";
import { fmtShape, ShapeError } from "./errors.ts";
import { assertLive, checkEngine, shapeSize, type Tensor } from "./tensor.ts";

const WG = 256;
/** Elements (main4: vec4s) one invocation of the strided copy moves (shaders/shape.wgsl RUN). */
const RUN = 4;
/** Shortest innermost run that `shift4` copies in whole vec4s: shorter rows are mostly ends (`main` copies them). */
const MIN_SHIFTED_ROW = 8;

/** Row-major element strides of a contiguous tensor. */
function stridesOf(shape: readonly number[]): number[] {
  const s = new Array<number>(shape.length);
  for (let d = shape.length - 1, n = 1; d >= 0; d--) {
    s[d] = n;
    n *= shape[d];
  }
  return s;
}

/** An axis in [-rank, rank) as an index in [0, rank); a RangeError otherwise. */
export function normalizeAxis(op: string, axis: number, rank: number): number {
  if (!Number.isInteger(axis) || axis < -rank || axis >= rank) {
    throw new RangeError(`${op}: axis ${axis} is out of range for rank ${rank}`);
  }
  return axis < 0 ? axis + rank : axis;
}

/** dst[dstOffset + Σ k·dstStrides] = src[srcOffset + Σ k·srcStrides] for every multi-index k of `dims`. */
interface StridedCopy {
  dims: readonly number[];
  srcStrides: readonly number[];
  srcOffset: number;
  dstStrides: readonly number[];
  dstOffset: number;
}

/** A strided copy's dims and src and dst strides, offsets apart. */
interface Coalesced {
  dims: number[];
  ss: number[];
  ds: number[];
}

/** Drops size-1 dims and merges neighbours that are contiguous in both src and dst (fewer divisions per element). */
function coalesce(c: StridedCopy): Coalesced {
  const dims: number[] = [];
  const ss: number[] = [];
  const ds: number[] = [];
  c.dims.forEach((n, d) => {
    if (n === 1) return;
    const last = dims.length - 1;
    if (last >= 0 && ss[last] === c.srcStrides[d] * n && ds[last] === c.dstStrides[d] * n) {
      dims[last] *= n;
      ss[last] = c.srcStrides[d];
      ds[last] = c.dstStrides[d];
    } else {
      dims.push(n);
      ss.push(c.srcStrides[d]);
      ds.push(c.dstStrides[d]);
    }
  });
  return dims.length ? { dims, ss, ds } : { dims: [1], ss: [1], ds: [1] };
}

/**
 * Records a strided copy: copyBufferToBuffer when it is one contiguous run, else shape.wgsl. Each binding is a
 * window of its buffer; when a tensor is over maxStorageBufferBindingSize, the copy is split along its
 * outermost dim into chunks whose src and dst spans each fit one binding (in blocks of two dims where one row
 * spans more: `copyInBlocks`). `dst` is always the op's fresh output: a copy that cannot be done disposes it
 * before throwing, so nothing leaks.
 */
function stridedCopy(op: string, src: Tensor, dst: Tensor, c: StridedCopy): void {
  const e = src.engine;
  const coalesced = coalesce(c);
  const count = shapeSize(coalesced.dims);
  if (coalesced.dims.length === 1 && coalesced.ss[0] === 1 && coalesced.ds[0] === 1) {
    e.copy(src.buffer, c.srcOffset * 4, dst.buffer, c.dstOffset * 4, count * 4);
    return;
  }
  if (coalesced.dims.length > MAX_RANK) {
    dst.dispose();
    throw new ShapeError(
      `${op}: this copy has ${coalesced.dims.length} non-contiguous dims, over the supported ${MAX_RANK}`,
    );
  }
  // Whole, aligned vec4s (the innermost dim contiguous on both sides and a multiple of 4 long, every other
  // stride and both offsets multiples of 4) move a vec4 per invocation (`main4`): a quarter of the accesses.
  // From here on an element is `unit` 4-byte values.
  const last = coalesced.dims.length - 1;
  const outer = [...coalesced.ss.slice(0, last), ...coalesced.ds.slice(0, last), c.srcOffset, c.dstOffset];
  const aligned = coalesced.dims[last] % 4 === 0 && coalesced.ss[last] === 1 && coalesced.ds[last] === 1 &&
    outer.every((x) => x % 4 === 0);
  const unit = aligned ? 4 : 1;
  const scaled = (xs: number[]) => xs.map((x, d) => (d === last ? x : x / unit));
  const dims = [...coalesced.dims.slice(0, last), coalesced.dims[last] / unit];
  const [ss, ds] = [scaled(coalesced.ss), scaled(coalesced.ds)];
  const limit = Math.floor(e.maxBinding / (4 * unit));
  const align = e.bindingAlignment / (4 * unit);
  const rowCount = count / unit / dims[0];
  const extent = (strides: number[]) => strides.reduce((x, s, d) => x + (d ? (dims[d] - 1) * s : 0), 0);
  // A chunk of r rows spans (r-1)·stride + extent + 1 elements, plus up to align-1 before it for the offset.
  const fit = (strides: number[]) => Math.floor((limit - align - extent(strides)) / strides[0]) + 1;
  const rows = Math.min(dims[0], fit(ss), fit(ds));
  if (rows < 1) {
    copyInBlocks(op, src, dst, c, coalesced);
    return;
  }
  // Windows end on a whole vec4 (within the buffer): a vec4 read that reaches past a binding's end is clamped
  // whole to its last vec4 on some adapters (SwiftShader), not per element, and shift4 reads the vec4 that holds
  // a row's last elements.
  const window = (buffer: GPUBuffer, first: number, strides: number[], n: number) => {
    const base = Math.floor(first / align) * align;
    const end = first + (n - 1) * strides[0] + extent(strides) + 1;
    const bytes = 4 * unit;
    const size = Math.min(Math.ceil(((end - base) * bytes) / 16) * 16, buffer.size - base * bytes);
    return { binding: { buffer, offset: base * bytes, size }, offset: first - base };
  };
  // The innermost dim moves (the source's is another): one binding's copy goes in 4×4 blocks. A whole batch of
  // matrix transposes whose sides are multiples of 4 (NCHW → NHWC is [N, C, H·W] → [N, H·W, C]) takes blocks of
  // vec4s (`transposeBlocks`); any other, blocks of elements (`tile`), dims reordered [V, U, outer...] with V
  // the source's innermost, U the destination's.
  const v = ss.indexOf(1);
  if (!aligned && rows === dims[0] && last > 0 && ds[last] === 1 && v >= 0 && v !== last) {
    const matrix = dims[v] * dims[last];
    const batchOf = (d: number) => d !== v && d !== last && ss[d] === matrix && ds[d] === matrix;
    if (
      count === src.size && count === dst.size && c.srcOffset === 0 && c.dstOffset === 0 &&
      dims.length - 2 === dims.filter((_, d) => batchOf(d)).length && dims.length <= 3 &&
      dims[v] % 4 === 0 && dims[last] % 4 === 0
    ) {
      transposeBlocks(op, src, dst, dims[last], dims[v]);
      return;
    }
    const order = [v, last, ...[...dims.keys()].filter((d) => d !== v && d !== last)];
    const s = window(src.buffer, c.srcOffset, ss, dims[0]);
    const d = window(dst.buffer, c.dstOffset, ds, dims[0]);
    const blocks = (count / (dims[v] * dims[last])) * Math.ceil(dims[v] / 4) * Math.ceil(dims[last] / 4);
    e.run({
      op,
      shader: "shape",
      entry: "tile",
      constants: { WG },
      params: new Params().u32(blocks, dims.length, s.offset, d.offset)
        .dims(order.map((k) => dims[k])).dims(order.map((k) => ss[k]), 0).dims(order.map((k) => ds[k]), 0),
      buffers: [s.binding, d.binding],
      workgroups: Math.ceil(blocks / WG),
    });
    return;
  }
  // The innermost dim contiguous on both sides but not lined up in vec4s: whole destination vec4s shifted from
  // two source vec4s each (`shift4`), then the ends of each row (`shiftEdges`).
  const shifted = !aligned && ss[last] === 1 && ds[last] === 1 && dims[last] >= MIN_SHIFTED_ROW;
  for (let r = 0; r < dims[0]; r += rows) {
    const n = Math.min(rows, dims[0] - r);
    const s = window(src.buffer, c.srcOffset / unit + r * ss[0], ss, n);
    const d = window(dst.buffer, c.dstOffset / unit + r * ds[0], ds, n);
    const run = (entry: string, count: number, perInvocation: number) =>
      e.run({
        op,
        shader: "shape",
        entry,
        constants: { WG },
        params: new Params().u32(count, dims.length, s.offset, d.offset)
          .dims([n, ...dims.slice(1)]).dims(ss, 0).dims(ds, 0),
        buffers: [s.binding, d.binding],
        workgroups: Math.ceil(count / perInvocation / WG),
      });
    if (shifted) {
      const segments = (n * rowCount) / dims[last];
      run("shift4", segments * Math.floor(dims[last] / 4), 1);
      run("shiftEdges", segments * 6, 1);
    } else {
      run(aligned ? "main4" : "main", n * rowCount, RUN);
    }
  }
}

/**
 * A strided copy one row of whose outermost dim spans more than a binding (a column of a tall matrix, in a
 * transpose). The dims go outermost first by their larger stride (those a tile must fix), then blocks of b
 * indices of the first are each copied as [dims[1], b, ...rest], which stridedCopy splits along dims[1]: tiles
 * of two dims, b leaving half a binding's span to dims[1] (b = 1, fixing the index, where the rest spans more).
 */
function copyInBlocks(op: string, src: Tensor, dst: Tensor, c: StridedCopy, copy: Coalesced): void {
  const order = [...copy.dims.keys()].sort((a, b) =>
    Math.max(copy.ss[b], copy.ds[b]) - Math.max(copy.ss[a], copy.ds[a])
  );
  const [dims, ss, ds] = [copy.dims, copy.ss, copy.ds].map((xs) => order.map((d) => xs[d]));
  const half = (src.engine.maxBinding / 4 - src.engine.bindingAlignment / 4) / 2;
  const rest = (strides: number[]) => dims.slice(2).reduce((x, n, d) => x + (n - 1) * strides[d + 2], 0);
  const fit = (strides: number[]) => Math.floor((half - rest(strides)) / strides[0]);
  const b = Math.max(1, Math.min(fit(ss), fit(ds)));
  const swap = (xs: number[]) => [xs[1], xs[0], ...xs.slice(2)];
  for (let i = 0; i < dims[0]; i += b) {
    stridedCopy(op, src, dst, {
      dims: swap([Math.min(b, dims[0] - i), ...dims.slice(1)]),
      srcStrides: swap(ss),
      srcOffset: c.srcOffset + i * ss[0],
      dstStrides: swap(ds),
      dstOffset: c.dstOffset + i * ds[0],
    });
  }
}

/** Same elements, new shape (one dim may be -1). */
export function reshape(x: Tensor, shape: readonly number[]): Tensor {
  assertLive("reshape", x);
  if (!shape.every((d) => d === -1 || (Number.isInteger(d) && d >= 0))) {
    throw new ShapeError(`reshape: ${fmtShape(shape)} must hold integers ≥ 0 and at most one -1`);
  }
  const known = shape.filter((d) => d !== -1);
  const free = shape.length - known.length;
  const rest = shapeSize(known);
  const resolved = free === 1 && rest > 0 && x.size % rest === 0
    ? shape.map((d) => (d === -1 ? x.size / rest : d))
    : shape;
  if (free > 1 || shapeSize(resolved.map((d) => Math.max(d, 0))) !== x.size || resolved.includes(-1)) {
    throw new ShapeError(
      `reshape: cannot reshape ${fmtShape(x.shape)} (${x.size} elements) to ${fmtShape(shape)}`,
    );
  }
  const out = x.engine.empty(resolved, x.dtype);
  x.engine.copy(x.buffer, 0, out.buffer, 0, x.bytes);
  return record(out, "reshape", [x], (g) => [reshape(g, x.shape)]);
}

/**
 * Records [batch, R, C] → [batch, C, R] of x's elements (R, C its last two dims unless given, multiples of 4)
 * into `out` (a tensor or window of x's size) in 4×4 blocks of vec4s (`transpose4`), no autograd. x within one
 * binding.
 */
export function transposeBlocks(
  op: string,
  x: Tensor,
  out: Binding,
  rows = x.shape[x.shape.length - 2],
  cols = x.shape[x.shape.length - 1],
): void {
  x.engine.run({
    op,
    shader: "shape",
    entry: "transpose4",
    constants: { WG },
    params: new Params().u32(x.size / 16, 0, 0, 0).dims([rows / 4, cols / 4]).dims([]).dims([]),
    buffers: [x, out],
    workgroups: Math.ceil(x.size / 16 / WG),
  });
}

/**
 * Permutes the axes: output dim i is input dim perm[i] (like torch.permute / np.transpose); perm defaults to
 * reversing the axes and may use negative axes.
 */
export function transpose(x: Tensor, perm?: readonly number[]): Tensor {
  assertLive("transpose", x);
  const rank = x.shape.length;
  const p = (perm ?? x.shape.map((_, i) => rank - 1 - i)).map((a) => {
    if (!Number.isInteger(a) || a < -rank || a >= rank) {
      throw new RangeError(
        `transpose: perm [${perm}] has axis ${a}, out of range for shape ${fmtShape(x.shape)}`,
      );
    }
    return a < 0 ? a + rank : a;
  });
  if (p.length !== rank || new Set(p).size !== rank) {
    throw new RangeError(
      `transpose: perm [${perm}] is not a permutation of the ${rank} axes of ${fmtShape(x.shape)}`,
    );
  }
  const shape = p.map((a) => x.shape[a]);
  const xs = stridesOf(x.shape);
  const out = x.engine.empty(shape, x.dtype);
  stridedCopy("transpose", x, out, {
    dims: shape,
    srcStrides: p.map((a) => xs[a]),
    srcOffset: 0,
    dstStrides: stridesOf(shape),
    dstOffset: 0,
  });
  const inverse = p.map((_, i) => p.indexOf(i));
  return record(out, "transpose", [x], (g) => [transpose(g, inverse)]);
}

/**
 * The box [starts[d], ends[d]) of each dim d, like NumPy's x[s0:e0, s1:e1, ...] with step 1; dims past
 * starts.length are taken whole. Negative values count from the end of the dim (-1 is the last element).
 * Each range must be non-empty and inside its dim: a RangeError otherwise, never silent clamping.
 */
export function slice(x: Tensor, starts: readonly number[], ends: readonly number[]): Tensor {
  assertLive("slice", x);
  const rank = x.shape.length;
  const what = () => `starts [${starts}] and ends [${ends}] for shape ${fmtShape(x.shape)}`;
  if (starts.length !== ends.length || starts.length > rank) {
    throw new RangeError(`slice: ${what()}: need equally many starts and ends, at most one per dim`);
  }
  const fromEnd = (i: number, n: number) => (i < 0 ? i + n : i);
  const begin = x.shape.map((n, d) => fromEnd(starts[d] ?? 0, n));
  const end = x.shape.map((n, d) => fromEnd(ends[d] ?? n, n));
  x.shape.forEach((n, d) => {
    if (
      !Number.isInteger(begin[d]) || !Number.isInteger(end[d]) || begin[d] < 0 || end[d] > n ||
      begin[d] >= end[d]
    ) {
      throw new RangeError(
        `slice: ${what()}: dim ${d} range [${begin[d]}, ${end[d]}) is empty or outside [0, ${n})`,
      );
    }
  });
  const shape = begin.map((b, d) => end[d] - b);
  const xs = stridesOf(x.shape);
  const out = x.engine.empty(shape, x.dtype);
  stridedCopy("slice", x, out, {
    dims: shape,
    srcStrides: xs,
    srcOffset: begin.reduce((o, b, d) => o + b * xs[d], 0),
    dstStrides: stridesOf(shape),
    dstOffset: 0,
  });
  return record(out, "slice", [x], (g) => [pad(g, x.shape, begin)]);
}

/** Zeros of `shape` with `g` written at the corner `begin` (the backward of slice). */
function pad(g: Tensor, shape: readonly number[], begin: readonly number[]): Tensor {
  const out = g.engine.zeros(shape, g.dtype);
  const os = stridesOf(shape);
  stridedCopy("slice (backward)", g, out, {
    dims: g.shape,
    srcStrides: stridesOf(g.shape),
    srcOffset: 0,
    dstStrides: os,
    dstOffset: begin.reduce((o, b, d) => o + b * os[d], 0),
  });
  return out;
}

/** Joins tensors of one dtype along `axis` (negative counts from the end); all other dims must match. */
export function concat(tensors: readonly Tensor[], axis = 0): Tensor {
  if (tensors.length === 0) throw new RangeError("concat: needs at least one tensor");
  tensors.forEach((t) => assertLive("concat", t));
  const first = tensors[0];
  const shapes = () => tensors.map((t) => fmtShape(t.shape)).join(", ");
  const rank = first.shape.length;
  if (tensors.some((t) => t.shape.length !== rank)) {
    throw new ShapeError(`concat: ranks differ in shapes ${shapes()}`);
  }
  const a = normalizeAxis("concat", axis, rank);
  if (tensors.some((t) => t.shape.some((n, d) => d !== a && n !== first.shape[d]))) {
    throw new ShapeError(`concat: shapes ${shapes()} differ outside axis ${axis}`);
  }
  if (tensors.some((t) => t.dtype !== first.dtype)) {
    throw new TypeError(
      `concat: dtypes differ: ${tensors.map((t) => `${t.dtype} ${fmtShape(t.shape)}`).join(", ")}`,
    );
  }
  checkEngine("concat", first, ...tensors);
  const shape = first.shape.map((n, d) => (d === a ? tensors.reduce((s, t) => s + t.shape[a], 0) : n));
  const out = first.engine.empty(shape, first.dtype);
  const os = stridesOf(shape);
  const offsets: number[] = [];
  let at = 0;
  for (const t of tensors) {
    offsets.push(at);
    stridedCopy("concat", t, out, {
      dims: t.shape,
      srcStrides: stridesOf(t.shape),
      srcOffset: 0,
      dstStrides: os,
      dstOffset: at * os[a],
    });
    at += t.shape[a];
  }
  return record(out, "concat", [...tensors], (g) =>
    tensors.map((t, i) => {
      const starts = shape.map((_, d) => (d === a ? offsets[i] : 0));
      return slice(g, starts, starts.map((s, d) => s + t.shape[d]));
    }));
}
