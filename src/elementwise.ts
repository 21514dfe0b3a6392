// Elementwise ops with NumPy broadcasting (shaders/elementwise.wgsl; CPU reference in src/ref/elementwise.ts).
import { type Binding, checkRank, type Engine, Params, windowBindings, windows } from "./engine.ts";
import { fmtShape, ShapeError } from "./errors.ts";
import { composed, record } from "./autograd.ts";
import { sum } from "./reduce.ts";
import { reshape } from "./shape.ts";
import {
  assertLive,
  checkEngine,
  type DType,
  holds,
  INTEGER_RANGE,
  sameShape,
  shapeSize,
  type Tensor,
} from "./tensor.ts";

const WG = 256;
/** broadcast with vec4 rows: vec4s per invocation (shaders/elementwise.wgsl RUN), and invocations sharing a run. */
const RUN = 16;
const LANES = 8;
export type Operand = Tensor | number;

const UNARY = {
  neg: 0,
  exp: 1,
  log: 2,
  sqrt: 3,
  relu: 4,
  gelu: 5,
  sigmoid: 6,
  tanh: 7,
  abs: 8,
  square: 9,
  reciprocal: 10,
  silu: 11,
  softplus: 12,
};
const BINARY = {
  add: 20,
  sub: 21,
  mul: 22,
  div: 23,
  pow: 24,
  maximum: 25,
  minimum: 26,
  expDiff: 27,
  equal: 28,
  greater: 29,
  keepWhere: 30,
  keepUnless: 31,
  equalOrBothNan: 32,
  reluBackward: 40,
  geluBackward: 41,
  sigmoidBackward: 42,
  tanhBackward: 43,
  absBackward: 44,
  timesNonzero: 45,
  powExponentGrad: 46,
  siluBackward: 47,
  softplusBackward: 48,
};

/** Validates an f32 input that is still live. */
export function checkF32(op: string, t: unknown): asserts t is Tensor {
  assertLive(op, t);
  if (t.dtype !== "f32") {
    throw new TypeError(`${op}: expected an f32 tensor, got ${t.dtype} ${fmtShape(t.shape)}`);
  }
}

/** The NumPy broadcast of two shapes; a ShapeError naming both when they do not broadcast. */
export function broadcastShapes(op: string, a: readonly number[], b: readonly number[]): number[] {
  const rank = Math.max(a.length, b.length);
  const out: number[] = [];
  for (let i = 0; i < rank; i++) {
    const da = a[a.length - rank + i] ?? 1;
    const db = b[b.length - rank + i] ?? 1;
    if (da !== db && da !== 1 && db !== 1) {
      throw new ShapeError(
        `${op}: shapes ${fmtShape(a)} and ${fmtShape(b)} do not broadcast (dim ${i}: ${da} vs ${db})`,
      );
    }
    out.push(da === 1 ? db : da);
  }
  return out;
}

/** Element strides of `shape` laid against `outShape` (right-aligned), 0 on broadcast dims. */
export function broadcastStrides(shape: readonly number[], outShape: readonly number[]): number[] {
  const strides = new Array(outShape.length).fill(0);
  let s = 1;
  for (let i = shape.length - 1; i >= 0; i--) {
    const o = outShape.length - shape.length + i;
    strides[o] = shape[i] === 1 ? 0 : s;
    s *= shape[i];
  }
  return strides;
}

/** Sums a broadcast gradient back down to `shape`. Consumes `g`. */
export function unbroadcast(g: Tensor, shape: readonly number[]): Tensor {
  if (sameShape(g.shape, shape)) return g;
  const lead = g.shape.length - shape.length;
  const axes: number[] = [];
  for (let i = 0; i < g.shape.length; i++) {
    if (i < lead || (shape[i - lead] === 1 && g.shape[i] !== 1)) axes.push(i);
  }
  const s = sum(g, axes, { keepDims: true });
  g.dispose();
  if (sameShape(s.shape, shape)) return s;
  const r = reshape(s, shape);
  s.dispose();
  return r;
}

/**
 * Merges adjacent output dims along which both inputs step alike (contiguous across the pair, or broadcast on
 * both) and drops dims of size 1: the broadcast kernel divides by each remaining dim per element.
 */
function collapseDims(shape: readonly number[], sa: number[], sb: number[]): [number[], number[], number[]] {
  const dims: number[] = [];
  const ra: number[] = [];
  const rb: number[] = [];
  shape.forEach((d, i) => {
    if (d === 1) return;
    const k = dims.length - 1;
    if (k >= 0 && ra[k] === sa[i] * d && rb[k] === sb[i] * d) {
      dims[k] *= d;
      ra[k] = sa[i];
      rb[k] = sb[i];
    } else {
      dims.push(d);
      ra.push(sa[i]);
      rb.push(sb[i]);
    }
  });
  return [dims, ra, rb];
}

/** One elementwise dispatch per window of `out`; each input is one binding for all windows or one per window. */
function dispatch(
  op: string,
  entry: string,
  constants: Record<string, number>,
  params: (count: number) => Params,
  out: Tensor,
  inputs: (Binding | Binding[])[],
): void {
  // CPU adapters: four consecutive vec4s per invocation.
  const per = out.engine.cpuKernels ? 4 : 1;
  windows(out).forEach((w, i) => {
    out.engine.run({
      op,
      shader: "elementwise",
      entry,
      constants: { WG, PER: per, ...constants },
      params: params(w.count),
      buffers: [...inputs.map((x) => Array.isArray(x) ? x[i] : x), w.binding],
      workgroups: Math.ceil(w.count / 4 / per / WG),
    });
  });
}

function unary(op: keyof typeof UNARY, a: Tensor): Tensor {
  checkF32(op, a);
  const out = a.engine.empty(a.shape);
  dispatch(op, "unary", { OP: UNARY[op] }, (n) => new Params().u32(n, 0).f32(0), out, [windowBindings(a)]);
  return out;
}

/** f(a, b) into a new f32 tensor; operands of `dtype` (an integer one only for the comparisons). */
function binary(op: keyof typeof BINARY, a: Operand, b: Operand, dtype: DType = "f32"): Tensor {
  if (typeof a === "number" && typeof b === "number") {
    throw new TypeError(`${op}: at least one operand must be a tensor`);
  }
  const check = (t: Tensor) => dtype === "f32" ? checkF32(op, t) : assertLive(op, t);
  const constants = { OP: BINARY[op], OPERANDS: DTYPE_CODES[dtype] };
  if (typeof a === "number" || typeof b === "number") {
    const t = (typeof a === "number" ? b : a) as Tensor;
    const s = (typeof a === "number" ? a : b) as number;
    check(t);
    const out = t.engine.empty(t.shape);
    // An integer scalar goes in as its bits (two's complement for i32), as the tensor holds its elements.
    const params = (n: number) =>
      dtype === "f32" ? new Params().u32(n, 0).f32(s) : new Params().u32(n, 0, s >>> 0);
    const swap = typeof a === "number" ? 1 : 0;
    dispatch(op, "scalar", { ...constants, SWAP: swap }, params, out, [windowBindings(t)]);
    return out;
  }
  check(a);
  check(b);
  checkEngine(op, a, b);
  const shape = broadcastShapes(op, a.shape, b.shape);
  if (sameShape(a.shape, shape) && sameShape(b.shape, shape)) {
    // Same-shape inputs are windowed like the output.
    const out = a.engine.empty(shape);
    const inputs = [windowBindings(a), windowBindings(b)];
    dispatch(op, "binary", constants, (n) => new Params().u32(n, 0), out, inputs);
    return out;
  }
  return broadcast(op, a, b, b.shape, shape, 0, dtype);
}

/** A ShapeError unless the broadcast of `a` with `bShape` to `shape` fits one storage binding. */
function checkBroadcastFits(op: string, a: Tensor, bShape: readonly number[], shape: readonly number[]) {
  const bytes = shapeSize(shape) * 4;
  if (bytes > a.engine.maxBinding) {
    throw new ShapeError(
      `${op}: broadcasting ${fmtShape(a.shape)} with ${fmtShape(bShape)} gives ${bytes} bytes, over ` +
        `maxStorageBufferBindingSize (${a.engine.maxBinding} bytes), and no cut along its leading dim fits`,
    );
  }
}

/**
 * f(a, b) broadcast to `shape`, b having shape `bShape`. With `half`, b is a sum kept as two halves, its first
 * term and from element `half` on its second (a multiple of 4), and a − b is taken as (a − first) − second.
 * An output over one storage binding runs in parts along its leading dim where it can be cut (`leadingParts`).
 */
function broadcast(
  op: keyof typeof BINARY,
  a: Tensor,
  b: Tensor,
  bShape: readonly number[],
  shape: number[],
  half = 0,
  dtype: DType = "f32",
): Tensor {
  const [dims, sa, sb] = broadcastDims(op, a.shape, bShape, shape);
  // Cut along the leading dim of the merged dims, as the operands lie in memory: [4, 8388609] times a scalar is
  // one dim of 33554436 to cut at any aligned offset, where its own leading dim of 4 had no cut that fits.
  const merged = (strides: number[]) => dims.map((d, i) => (strides[i] === 0 ? 1 : d));
  const [aDims, bDims] = [merged(sa), merged(sb)];
  const plan = 4 * shapeSize(shape) > a.engine.maxBinding ? leadingParts(a, aDims, b, bDims, dims) : null;
  if (!plan) {
    checkBroadcastFits(op, a, bShape, shape);
    const out = a.engine.empty(shape);
    broadcastInto(a.engine, op, a, a.shape, b, bShape, out, shape, half, dtype);
    return out;
  }
  const e = a.engine;
  const out = e.empty(shape);
  const { rows, parts } = plan;
  // Leading indices [s0, s0 + m) of a tensor whose leading index holds r elements: a window where it starts on
  // the binding alignment (the output's always do), else a copy (an operand's rows need not line up as the
  // output's do).
  const temps: Tensor[] = [];
  const leading = (t: Tensor, tShape: readonly number[], r: number, s0: number, m: number): Binding => {
    if ((4 * r * s0) % e.bindingAlignment === 0) {
      return {
        buffer: t.buffer,
        offset: 4 * r * s0,
        size: Math.min(t.buffer.size - 4 * r * s0, Math.ceil(r * m / 4) * 16),
      };
    }
    const copy = e.empty([m, ...tShape.slice(1)]);
    e.copy(t.buffer, 4 * r * s0, copy.buffer, 0, 4 * r * m);
    temps.push(copy);
    return copy;
  };
  // A split b's halves for leading indices [s0, s0 + m), copied side by side as a split of its own.
  const splitPart = (s0: number, m: number): [Tensor, number] => {
    const n = rows.b * m;
    const partHalf = Math.ceil(n / 4) * 4;
    const copy = e.empty([2 * partHalf]);
    e.copy(b.buffer, 4 * rows.b * s0, copy.buffer, 0, 4 * n);
    e.copy(b.buffer, 4 * (half + rows.b * s0), copy.buffer, 4 * partHalf, 4 * n);
    temps.push(copy);
    return [copy, partHalf];
  };
  for (const [s0, m] of parts) {
    const cut = (s: readonly number[]) => [m, ...s.slice(1)];
    const [bPart, partHalf] = half > 0 && rows.b
      ? splitPart(s0, m)
      : [rows.b ? leading(b, bDims, rows.b, s0, m) : b, half];
    broadcastInto(
      e,
      op,
      rows.a ? leading(a, aDims, rows.a, s0, m) : a,
      rows.a ? cut(aDims) : aDims,
      bPart,
      rows.b ? cut(bDims) : bDims,
      leading(out, dims, rows.out, s0, m),
      cut(dims),
      partHalf,
      dtype,
    );
  }
  for (const t of temps) t.dispose();
  return out;
}

/**
 * How to cut a broadcast's output along its leading dim so each part fits one binding: the elements per leading
 * index of the output and of each operand (0 for one broadcast along that dim, which is bound whole and so must
 * fit one binding), and the parts [first index, count], every output window starting on the binding alignment.
 * Null where no such cut exists.
 */
function leadingParts(
  a: Tensor,
  aShape: readonly number[],
  b: Tensor,
  bShape: readonly number[],
  shape: readonly number[],
) {
  const e = a.engine;
  const lead = shape[0];
  const row = (
    s: readonly number[],
  ) => (s.length === shape.length && s[0] === lead ? shapeSize(s) / lead : 0);
  const rows = { out: shapeSize(shape) / lead, a: row(aShape), b: row(bShape) };
  if ((!rows.a && a.bytes > e.maxBinding) || (!rows.b && b.bytes > e.maxBinding)) return null;
  // Leading indices per part: a multiple of what starts every output window on the alignment.
  const gcd = (x: number, y: number): number => (y ? gcd(y, x % y) : x);
  const step = e.bindingAlignment / gcd(4 * rows.out, e.bindingAlignment);
  const per = Math.floor(e.maxBinding / (4 * rows.out) / step) * step;
  if (per < 1) return null;
  const parts = Array.from({ length: Math.ceil(lead / per) }, (_, k): [number, number] => [
    k * per,
    Math.min(per, lead - k * per),
  ]);
  return { rows, parts };
}

/** The broadcast's dims and each operand's strides, adjacent dims merged; a ShapeError past the kernel's rank. */
function broadcastDims(
  op: string,
  aShape: readonly number[],
  bShape: readonly number[],
  shape: readonly number[],
) {
  const merged = collapseDims(shape, broadcastStrides(aShape, shape), broadcastStrides(bShape, shape));
  checkRank(
    op,
    `broadcasting ${fmtShape(aShape)} with ${fmtShape(bShape)} (adjacent dims merged)`,
    merged[0].length,
  );
  return merged;
}

/** One broadcast dispatch into `out` ([shape], fitting one binding) from a and b bound as given. */
function broadcastInto(
  engine: Engine,
  op: keyof typeof BINARY,
  a: Binding,
  aShape: readonly number[],
  b: Binding,
  bShape: readonly number[],
  out: Binding,
  shape: readonly number[],
  half: number,
  dtype: DType,
): void {
  const [dims, sa, sb] = broadcastDims(op, aShape, bShape, shape);
  const size = shapeSize(shape);
  // After collapsing, an input's innermost stride is 1 (it has that dim) or 0 (broadcast along it).
  const constants = {
    OP: BINARY[op],
    OPERANDS: DTYPE_CODES[dtype],
    INNER4: Number(dims.length > 0 && dims.at(-1)! % 4 === 0),
    A_ROW: Number(sa.at(-1) === 1),
    B_ROW: Number(sb.at(-1) === 1),
    B_SPLIT: Number(half > 0),
  };
  const inner4 = constants.INNER4 ? dims.at(-1)! / 4 : 0;
  const lanes = constants.INNER4 ? Math.min(LANES, Math.ceil(inner4 / RUN)) : 0;
  // `lanes` invocations per run of up to lanes·RUN vec4s of an innermost row; else one vec4 per invocation.
  const invocations = constants.INNER4
    ? (size / 4 / inner4) * Math.ceil(inner4 / (lanes * RUN)) * lanes
    : Math.ceil(size / 4);
  engine.run({
    op,
    shader: "elementwise",
    entry: "broadcast",
    constants: { WG, ...constants },
    params: new Params().u32(size, dims.length).f32(0).u32(lanes, half / 4).dims(dims).dims(sa, 0).dims(
      sb,
      0,
    ),
    buffers: [a, b, out],
    workgroups: Math.ceil(invocations / WG),
  });
}

/**
 * a − lse ("sub") or exp(a − lse) ("expDiff") for a logsumexp kept as its two halves ([2, half]: each row's max
 * m, then log Σ exp(a − m); half a multiple of 4) broadcast from `lseShape`, taken as (a − m) − log Σ. No
 * gradient: softmax and logSoftmax record their own.
 */
export function minusSplit(
  op: "sub" | "expDiff",
  a: Tensor,
  lse: Tensor,
  lseShape: readonly number[],
): Tensor {
  return broadcast(op, a, lse, lseShape, a.shape.slice(), lse.size / 2);
}

// ---- differentiable ops ------------------------------------------------------------------------------------

export function neg(a: Tensor): Tensor {
  return record(unary("neg", a), "neg", [a], (g) => [neg(g)]);
}

export function exp(a: Tensor): Tensor {
  const y = unary("exp", a);
  return record(y, "exp", [a], (g) => [mul(g, y)]);
}

export function log(a: Tensor): Tensor {
  return record(unary("log", a), "log", [a], (g) => [div(g, a)]);
}

export function sqrt(a: Tensor): Tensor {
  const y = unary("sqrt", a);
  return record(y, "sqrt", [a], (g) => {
    const twice = mul(y, 2);
    const r = div(g, twice);
    twice.dispose();
    return [r];
  });
}

export function relu(a: Tensor): Tensor {
  return record(unary("relu", a), "relu", [a], (g) => [binary("reluBackward", g, a)]);
}

/** GELU with the exact erf form (PyTorch's default `approximate='none'`). */
export function gelu(a: Tensor): Tensor {
  return record(unary("gelu", a), "gelu", [a], (g) => [binary("geluBackward", g, a)]);
}

export function sigmoid(a: Tensor): Tensor {
  const y = unary("sigmoid", a);
  return record(y, "sigmoid", [a], (g) => [binary("sigmoidBackward", g, y)]);
}

/** SiLU (swish), x·σ(x), as PyTorch's. */
export function silu(a: Tensor): Tensor {
  return record(unary("silu", a), "silu", [a], (g) => [binary("siluBackward", g, a)]);
}

/**
 * log(1 + eˣ), as PyTorch's softplus (beta 1), computed as max(x, 0) + log(1 + e^−|x|): no overflow, and past
 * PyTorch's threshold of 20 it returns x to f32 as PyTorch does.
 */
export function softplus(a: Tensor): Tensor {
  return record(unary("softplus", a), "softplus", [a], (g) => [binary("softplusBackward", g, a)]);
}

export function tanh(a: Tensor): Tensor {
  const y = unary("tanh", a);
  return record(y, "tanh", [a], (g) => [binary("tanhBackward", g, y)]);
}

export function abs(a: Tensor): Tensor {
  return record(unary("abs", a), "abs", [a], (g) => [binary("absBackward", g, a)]);
}

export function square(a: Tensor): Tensor {
  return record(unary("square", a), "square", [a], (g) => {
    const twice = mul(a, 2);
    const r = mul(g, twice);
    twice.dispose();
    return [r];
  });
}

const inputs = (...xs: Operand[]) => xs.filter((x): x is Tensor => typeof x !== "number");

export function add(a: Operand, b: Operand): Tensor {
  const y = binary("add", a, b);
  return record(
    y,
    "add",
    inputs(a, b),
    (g, needs) => grads(a, b, g, needs, (g) => mul(g, 1), (g) => mul(g, 1)),
  );
}

export function sub(a: Operand, b: Operand): Tensor {
  const y = binary("sub", a, b);
  return record(y, "sub", inputs(a, b), (g, needs) => grads(a, b, g, needs, (g) => mul(g, 1), neg));
}

export function mul(a: Operand, b: Operand): Tensor {
  const y = binary("mul", a, b);
  return record(
    y,
    "mul",
    inputs(a, b),
    (g, needs) => grads(a, b, g, needs, (g) => binary("mul", g, b), (g) => binary("mul", g, a)),
  );
}

export function div(a: Operand, b: Operand): Tensor {
  const y = binary("div", a, b);
  return record(
    y,
    "div",
    inputs(a, b),
    (g, needs) =>
      grads(a, b, g, needs, (g) => binary("div", g, b), (g) => {
        // d(a/b)/db = -y / b
        const t = binary("div", y, b);
        const r = binary("mul", g, t);
        t.dispose();
        const n = unary("neg", r);
        r.dispose();
        return n;
      }),
  );
}

/**
 * a^b with C's and PyTorch's rules: a negative base takes integer exponents only (NaN otherwise), 0^0 = 1,
 * 0^b = ∞ for b < 0, and a^0 = 1^b = 1 even for NaN. Gradients as PyTorch: d/da = b·a^(b−1), 0 where b = 0;
 * d/db = a^b·ln a, 0 where a = 0 and b ≥ 0.
 */
export function pow(a: Operand, b: Operand): Tensor {
  const y = binary("pow", a, b);
  return record(y, "pow", inputs(a, b), (g, needs) =>
    grads(a, b, g, needs, (g) => {
      const bMinus1 = typeof b === "number" ? b - 1 : binary("sub", b, 1);
      const p = binary("pow", a, bMinus1);
      if (typeof bMinus1 !== "number") bMinus1.dispose();
      const t = binary("timesNonzero", b, p);
      p.dispose();
      return weighted(g, t);
    }, (g) => weighted(g, binary("powExponentGrad", a, y))));
}

/**
 * Elementwise maximum (gradient to the larger operand; ties split evenly; where either is NaN, to both, as torch).
 * Not differentiable w.r.t. scalars.
 */
export function maximum(a: Operand, b: Operand): Tensor {
  return extremum("maximum", a, b);
}

/** Elementwise minimum; NaN wins. Where a and b are equal each gets half the gradient, as in maximum. */
export function minimum(a: Operand, b: Operand): Tensor {
  return extremum("minimum", a, b);
}

function extremum(op: "maximum" | "minimum", a: Operand, b: Operand): Tensor {
  const y = binary(op, a, b);
  return record(y, op, inputs(a, b), (g, needs) => {
    const share = (x: Operand, other: Operand) => {
      // weight 1 − [x loses] − 0.5·[equal]: 1 where x wins, 0.5 where equal, and 1 where either is NaN (neither
      // loses), as torch's
      const loses = op === "maximum" ? binary("greater", other, x) : binary("greater", x, other);
      const eq = binary("equal", x, other);
      const half = binary("mul", eq, 0.5);
      eq.dispose();
      const lost = binary("add", loses, half);
      loses.dispose();
      half.dispose();
      const w = binary("sub", 1, lost);
      lost.dispose();
      return w;
    };
    return grads(a, b, g, needs, (g) => weighted(g, share(a, b)), (g) => weighted(g, share(b, a)));
  });
}

/**
 * PyTorch's clamp: x limited to [lo, hi] (either bound may be left out), NaN kept. The gradient passes where
 * lo ≤ x ≤ hi, that is where the result equals x (not at NaN).
 */
export function clamp(x: Tensor, lo = -Infinity, hi = Infinity): Tensor {
  checkF32("clamp", x);
  if (!(lo <= hi)) throw new RangeError(`clamp: needs lo ≤ hi, got lo ${lo} and hi ${hi}`);
  const floored = binary("maximum", x, lo);
  const y = binary("minimum", floored, hi);
  floored.dispose();
  return record(y, "clamp", [x], (g) => [weighted(g, binary("equal", y, x))]);
}

function weighted(g: Tensor, w: Tensor): Tensor {
  const r = binary("mul", g, w);
  w.dispose();
  return r;
}

/**
 * The gradients of a broadcasting op's tensor operands (`needs` in the same order): `f(g)` summed back to the
 * operand's shape, or null where the operand's gradient is not needed (its product is never made).
 */
function grads(
  a: Operand,
  b: Operand,
  g: Tensor,
  needs: boolean[],
  fa: (g: Tensor) => Tensor,
  fb: (g: Tensor) => Tensor,
): (Tensor | null)[] {
  const operands = ([[a, fa], [b, fb]] as const).filter(([x]) => typeof x !== "number");
  return operands.map(([x, f], i) => (needs[i] ? unbroadcast(f(g), (x as Tensor).shape) : null));
}

/**
 * 1 where a == b else 0, an f32 mask (no gradient). a and b are f32, or both i32 or both u32 (compared exactly,
 * beyond f32's 2^24), so `equal(argmax(logits, 1), labels)` marks the hits; a number beside an integer tensor
 * must be an integer of its range.
 */
export function equal(a: Operand, b: Operand): Tensor {
  return compare("equal", a, b);
}

/** 1 where a == b or both are NaN, else 0 (f32 only): the elements a max or min reduction took, NaN winning. */
export function equalOrBothNan(a: Tensor, b: Tensor): Tensor {
  return binary("equalOrBothNan", a, b);
}

/** 1 where a > b else 0, an f32 mask (no gradient); operands as `equal`'s. */
export function greater(a: Operand, b: Operand): Tensor {
  return compare("greater", a, b);
}

function compare(op: "equal" | "greater", a: Operand, b: Operand): Tensor {
  const tensors = [a, b].filter((x) => typeof x !== "number") as Tensor[];
  const dtype = tensors[0]?.dtype ?? "f32";
  if (dtype === "f32") return binary(op, a, b);
  for (const t of tensors) assertLive(op, t);
  if (tensors.length === 2 && tensors[1].dtype !== dtype) {
    throw new TypeError(
      `${op}: operands of different dtypes, ${dtype} ${fmtShape(tensors[0].shape)} and ` +
        `${tensors[1].dtype} ${fmtShape(tensors[1].shape)} (cast one to the other's)`,
    );
  }
  for (const s of [a, b]) {
    if (typeof s === "number" && !holds(dtype, s)) {
      const [lo, hi] = INTEGER_RANGE[dtype];
      throw new RangeError(`${op}: ${s} beside a ${dtype} tensor is not an integer in [${lo}, ${hi}]`);
    }
  }
  return binary(op, a, b, dtype);
}

/** a where mask ≠ 0 (keepWhere) or = 0 (keepUnless), else 0, broadcasting; a's gradient takes the same mask. */
export function masked(op: "keepWhere" | "keepUnless", a: Operand, mask: Tensor): Tensor {
  const out = binary(op, a, mask);
  if (typeof a === "number") return out;
  return record(out, "where", [a, mask], (g) => [unbroadcast(binary(op, g, mask), a.shape), null]);
}

/**
 * a where cond ≠ 0, else b (torch.where), the three broadcast NumPy-style; cond is an f32 mask such as `equal`
 * and `greater` give (NaN counts as true, as Python's bool(NaN)), a and b tensors or numbers. The gradient goes
 * to a where cond holds and to b elsewhere, and a NaN or ∞ in the branch not taken reaches neither the result
 * nor a gradient (a blend c·a + (1 − c)·b would carry it).
 */
export function where(cond: Tensor, a: Operand, b: Operand): Tensor {
  checkF32("where", cond);
  return composed((keep) => add(keep(masked("keepWhere", a, cond)), keep(masked("keepUnless", b, cond))));
}

const DTYPE_CODES: Record<DType, number> = { f32: 0, i32: 1, u32: 2 };

/**
 * x as `dtype`, a new tensor (torch's `x.to(dtype)`): an integer to f32 rounds to the nearest f32; f32 to an
 * integer truncates toward zero and saturates, NaN to 0 (Rust's `as`; PyTorch leaves those undefined); between
 * i32 and u32 the bits stay, as NumPy's astype. Only f32 to f32 carries a gradient.
 */
export function cast(x: Tensor, dtype: DType): Tensor {
  assertLive("cast", x);
  if (!Object.hasOwn(DTYPE_CODES, dtype)) {
    throw new TypeError(`cast: unknown dtype '${dtype}' (expected f32, i32 or u32)`);
  }
  const out = x.engine.empty(x.shape, dtype);
  const constants = { FROM: DTYPE_CODES[x.dtype], TO: DTYPE_CODES[dtype] };
  dispatch("cast", "convertDtype", constants, (n) => new Params().u32(n, 0).f32(0), out, [windowBindings(x)]);
  if (x.dtype !== "f32" || dtype !== "f32") return out;
  return record(out, "cast", [x], (g) => [cast(g, "f32")]);
}
