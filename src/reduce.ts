// Reductions over axes: sum, mean, max, min, logsumexp, argmax, argmin, and softmax / logSoftmax, variance
// and std built on them (shaders/reduce.wgsl; CPU reference in src/ref/reduce.ts).
import { composed, noGrad, record } from "./autograd.ts";
import { checkRank, Params, type Window, windows } from "./engine.ts";
import {
  add,
  checkF32,
  div,
  equalOrBothNan,
  exp,
  maximum,
  minusSplit,
  mul,
  sqrt,
  square,
  sub,
} from "./elementwise.ts";
import { checkOptions, fmtShape, ShapeError } from "./errors.ts";
import { reshape } from "./shape.ts";
import { fusesRows, rowSoftmax } from "./softmax.ts";
import { sameShape, type Tensor } from "./tensor.ts";

const WG = 256;
const ITEMS = 64;
const OPS = { sum: 0, max: 1, logsumexp: 2, argmax: 3 } as const;

/** How a loss reduces its per-element (or per-row) values: "mean", "sum", or "none" to keep them all. */
export type Reduction = "mean" | "sum" | "none";

/** `reduction`, "mean" when undefined; a RangeError naming `op` for anything else. */
export function checkReduction(op: string, reduction: Reduction | undefined): Reduction {
  const r = reduction ?? "mean";
  if (!["mean", "sum", "none"].includes(r)) {
    throw new RangeError(`${op}: reduction must be "mean", "sum" or "none", got ${JSON.stringify(r)}`);
  }
  return r;
}

export interface ReduceOptions {
  /** Keep each reduced axis as a dim of size 1 (default false). */
  keepDims?: boolean;
}

/** Sorted, non-negative reduced axes (all when `axes` is undefined); a RangeError naming the shape otherwise. */
function normalizeAxes(op: string, shape: readonly number[], axes?: number | number[]): number[] {
  const rank = shape.length;
  const list = axes === undefined ? shape.map((_, i) => i) : typeof axes === "number" ? [axes] : axes;
  const out = list.map((a) => {
    if (!Number.isInteger(a) || a < -rank || a >= rank) {
      throw new RangeError(`${op}: axis ${a} is out of range for shape ${fmtShape(shape)}`);
    }
    return a < 0 ? a + rank : a;
  });
  if (new Set(out).size !== out.length) {
    throw new RangeError(`${op}: axes [${list}] repeat an axis of shape ${fmtShape(shape)}`);
  }
  return out.sort((a, b) => a - b);
}

/** The input shape with reduced axes set to 1. */
function keptShape(shape: readonly number[], axes: number[]): number[] {
  return shape.map((d, i) => (axes.includes(i) ? 1 : d));
}

/** The result's shape: reduced axes dropped, or kept as 1 with keepDims. */
function outShapeOf(shape: readonly number[], axes: number[], opts: ReduceOptions): number[] {
  return opts.keepDims ? keptShape(shape, axes) : shape.filter((_, i) => !axes.includes(i));
}

/**
 * Kept and reduced dims as (shape, stride) lists in input order, size-1 dims dropped and neighbours of the same
 * kind merged, so the common cases (one kept and one reduced list) need no division per element.
 */
function split(shape: readonly number[], axes: number[]) {
  const dims = {
    kept: { shape: [] as number[], stride: [] as number[] },
    reduced: { shape: [] as number[], stride: [] as number[] },
  };
  let stride = 1;
  let last: typeof dims.kept | null = null;
  for (let d = shape.length - 1; d >= 0; d--) {
    const n = shape[d];
    if (n === 1) continue;
    const list = axes.includes(d) ? dims.reduced : dims.kept;
    if (list === last) list.shape[0] *= n;
    else {
      list.shape.unshift(n);
      list.stride.unshift(stride);
    }
    last = list;
    stride *= n;
  }
  return dims;
}

const product = (xs: number[]) => xs.reduce((a, b) => a * b, 1);

/** A window of a pass's input and the chunks (row, chunk) one dispatch folds from it. */
interface Slice extends Window {
  chunk0: number;
  nchunks: number;
}

/**
 * The first pass's windows of `x` (one, when it fits a binding). Contiguous rows are cut between chunks, so each
 * chunk is read from one window (nwin 1); strided rows can span windows, so every window folds every chunk into
 * partials of its own (nwin = windows).
 */
function slices(x: Tensor, contiguous: boolean, len: number, chunks: number, span: number) {
  const total = (x.size / len) * chunks;
  const whole = windows(x);
  if (whole.length === 1 || !contiguous) {
    return { nwin: whole.length, slices: whole.map((w): Slice => ({ ...w, chunk0: 0, nchunks: total })) };
  }
  const e = x.engine;
  const align = e.bindingAlignment / 4;
  const limit = Math.floor(e.maxBinding / 4);
  const start = (q: number) => Math.floor(q / chunks) * len + (q % chunks) * span;
  const out: Slice[] = [];
  for (let q = 0; q < total;) {
    const first = Math.floor(start(q) / align) * align;
    // The most chunks from q on whose elements fit one binding starting at `first` (start is monotonic).
    let end = q + 1;
    for (let step = 2 ** Math.ceil(Math.log2(total)); step >= 1; step /= 2) {
      if (end + step <= total && start(end + step) - first <= limit) end += step;
    }
    const count = start(end) - first;
    out.push({
      first,
      count,
      binding: { buffer: x.buffer, offset: first * 4, size: Math.ceil(count / 4) * 16 },
      chunk0: q,
      nchunks: end - q,
    });
    q = end;
  }
  return { nwin: 1, slices: out };
}

/** How a reduction's passes run: `scale` multiplies the result (mean: 1 / len; min: −1), `negate` reads −x. */
interface Run {
  scale?: number;
  negate?: boolean;
  /** logsumexp's last pass writes the max m of each row and log Σ exp(x − m) `half` elements on. */
  half?: number;
  /** With `half`: log Σ is NaN where m = +∞, so x − m − log Σ is NaN along the row (softmax's rule). */
  nanAtInf?: boolean;
}

/**
 * Records the passes reducing the given axes of `x` with OP and returns the result (shape `outShape`; i32 for
 * argmax). The first pass reads `x` window by window; each later pass reduces the contiguous partials of the one
 * before.
 */
function reduce(
  op: keyof typeof OPS,
  name: string,
  x: Tensor,
  axes: number[],
  outShape: number[],
  { scale = 1, negate = false, half = 0, nanAtInf = false }: Run = {},
): Tensor {
  // Reduced axes that end the shape behind others (conv2d's bias gradient, axes [0, 2, 3]): the trailing run
  // first, as contiguous rows, then the others over what is left (on llvmpipe [64, 64, 32, 32] ran 7x faster
  // than as one strided reduction). A max of maxes and a sum of sums are the same reduction.
  const run = axes.filter((a, i) => a === x.shape.length - axes.length + i);
  const rest = axes.slice(0, axes.length - run.length);
  const size = (list: number[]) => product(list.map((a) => x.shape[a]));
  if ((op === "sum" || op === "max") && size(run) > 1 && size(rest) > 1) {
    // min's inner pass gives the minima (−max(−x)), which the outer one negates again.
    const inner = reduce(op, name, x, run, x.shape.slice(0, run[0]), { negate, scale: negate ? -1 : 1 });
    const out = reduce(op, name, inner, rest, outShape, { negate, scale });
    inner.dispose();
    return out;
  }
  const e = x.engine;
  const pairs = op === "logsumexp" || op === "argmax";
  let { kept, reduced } = split(x.shape, axes);
  const what = (dims: string) =>
    `${dims} dims of ${fmtShape(x.shape)} over axes [${axes}] (neighbours merged)`;
  checkRank(name, what("kept"), kept.shape.length);
  checkRank(name, what("reduced"), reduced.shape.length);
  const rows = product(kept.shape);
  let len = product(reduced.shape);
  const contiguous = kept.shape.length <= 1 && reduced.shape.length <= 1 &&
    reduced.stride.every((s) => s === 1);
  let source = x;
  for (let pass = 0;; pass++) {
    // Later passes read partials laid [rows, parts], or after KEPT4 [parts, rows] (rows side by side).
    const rowsContiguous = pass === 0 ? contiguous : reduced.stride[0] === 1;
    // Contiguous rows of a multiple of 4 are read as vec4s: `unit` elements per item.
    const unit = pass === 0 && contiguous && len % 4 === 0 ? 4 : 1;
    const items = len / unit;
    // Strided rows side by side in memory: neighbouring invocations take neighbouring rows, or (KEPT4: one
    // window, one reduced dim, no pairs to read) each 4 rows, in parts of consecutive items: as a vec4 where
    // the innermost kept dim is a multiple of 4, else (one kept dim) element by element.
    const rowsFast = !rowsContiguous && kept.stride.at(-1) === 1;
    const unaligned = kept.shape.at(-1)! % 4 !== 0;
    const kept4 = rowsFast && (!unaligned || kept.shape.length === 1) && reduced.shape.length === 1 &&
      !(pairs && pass > 0) && windows(source).length === 1;
    // Parts per chunk: enough that each folds ≤ ITEMS items (rows of ≤ ITEMS: one part per row). A GPU's
    // neighbouring invocations read neighbouring items (WG parts); a CPU's SIMD lanes then read a page apart
    // at each step, where its prefetcher stops and every read waits on memory (sum 16M 2.4x slower on
    // llvmpipe), so there 4 parts take one 64-byte line per step and each part's reads run in order. KEPT4's
    // SIMD groups read whole lines already: one part per chunk, of 16 consecutive items on a CPU adapter,
    // where parts of 64 items 4 apart ran [4096, 4096] over axis 0 2.2x slower (a page per step).
    const perPart = kept4 && e.cpuKernels ? 16 : ITEMS;
    const seg = kept4 ? 1 : Math.min(e.cpuKernels ? 4 : WG, Math.ceil(items / ITEMS));
    const chunks = Math.ceil(items / (seg * perPart));
    const { nwin, slices: parts } = pass === 0
      ? slices(x, contiguous, len, chunks, seg * perPart * unit)
      : { nwin: 1, slices: windows(source).map((w): Slice => ({ ...w, chunk0: 0, nchunks: rows * chunks })) };
    const last = chunks * seg * nwin === 1;
    const count = last ? (half > 0 ? 2 * half : rows) : rows * chunks * seg * nwin * (pairs ? 2 : 1);
    const bytes = count * 4;
    // Window w's dispatch, writing its partials into `out` (with `apart`, a set of its own: win 0 of 1).
    const dispatch = (s: Slice, w: number, out: Tensor, apart = false) =>
      e.run({
        op: name,
        shader: "reduce",
        constants: {
          WG,
          ITEMS: perPart,
          OP: OPS[op],
          PAIRS_IN: pairs && pass > 0 ? 1 : 0,
          PAIRS_OUT: pairs && !last ? 1 : 0,
          CONTIGUOUS: rowsContiguous ? 1 : 0,
          VEC4: unit === 4 ? 1 : 0,
          ROWS_FAST: rowsFast ? 1 : 0,
          KEPT4: kept4 ? 1 : 0,
          UNALIGNED: kept4 && unaligned ? 1 : 0,
          SPLIT: half > 0 && last ? 1 : 0,
          NAN_AT_INF: nanAtInf ? 1 : 0,
          NEGATE: negate && pass === 0 ? 1 : 0,
        },
        params: new Params()
          .u32(items, chunks, seg, s.first / unit, s.count / unit, s.chunk0 * seg, s.nchunks * seg)
          .u32(apart ? 1 : nwin, apart || nwin === 1 ? 0 : w, kept.shape.length, reduced.shape.length)
          .f32(last ? scale : 1, -Infinity).u32(half)
          .dims(kept.shape).dims(kept.stride.map((st) => st / unit)).dims(reduced.shape).dims(reduced.stride),
        buffers: [s.binding, out],
        workgroups: Math.ceil((kept4 ? Math.ceil(rows / 4) * chunks : s.nchunks * seg) / WG),
      });
    if (bytes > e.maxBinding) {
      // Strided rows over several windows, each window's partials a set of its own: where one set fits, each
      // is reduced apart and the results combined (a sum of sums, a max of maxes; logsumexp's and argmax's
      // pairs are not combined so).
      if (pass === 0 && nwin > 1 && !pairs && bytes / nwin <= e.maxBinding) {
        const results = parts.map((s, w) => {
          const partials = e.empty([rows, chunks * seg]);
          dispatch(s, w, partials, true);
          const r = reduce(op, name, partials, [1], outShape);
          partials.dispose();
          return r;
        });
        const combined = noGrad(() =>
          e.tidy(() => {
            const total = results.reduce((a, b) => op === "sum" ? add(a, b) : maximum(a, b));
            return scale === 1 ? total : mul(total, scale);
          })
        );
        for (const r of results) r.dispose();
        return combined;
      }
      throw new ShapeError(
        `${name}: reducing axes [${axes}] of ${fmtShape(x.shape)} leaves ${bytes} bytes of partials, ` +
          `over maxStorageBufferBindingSize (${e.maxBinding} bytes)`,
      );
    }
    const out = e.empty(last ? outShape : [count], last && op === "argmax" ? "i32" : "f32");
    parts.forEach((s, w) => dispatch(s, w, out));
    if (source !== x) source.dispose();
    if (last) return out;
    len = chunks * seg * nwin;
    kept = { shape: [rows], stride: [kept4 ? 1 : len] };
    reduced = { shape: [len], stride: [kept4 ? rows : 1] };
    source = out;
  }
}

/**
 * Validates and runs one reduction; `backward` maps g and y, both in keepDims shape (sum and mean get y as it
 * is: they do not use it), to x's gradient. `kind` averages (mean) or negates (min).
 */
function reduction(
  op: Exclude<keyof typeof OPS, "argmax">,
  name: string,
  x: Tensor,
  axesArg: number | number[] | undefined,
  opts: ReduceOptions,
  backward: (g: Tensor, y: Tensor, axes: number[]) => Tensor,
  kind: "average" | "negate" | null = null,
): Tensor {
  checkF32(name, x);
  const axes = normalizeAxes(name, x.shape, axesArg);
  const keep = keptShape(x.shape, axes);
  const len = product(axes.map((a) => x.shape[a]));
  const y = reduce(op, name, x, axes, outShapeOf(x.shape, axes, opts), {
    scale: kind === "average" ? 1 / len : kind === "negate" ? -1 : 1,
    negate: kind === "negate",
  });
  return record(y, name, [x], (g) => {
    const gk = asShape(g, keep);
    const yk = op === "sum" ? y : asShape(y, keep);
    const r = backward(gk, yk, axes);
    if (gk !== g) gk.dispose();
    if (yk !== y) yk.dispose();
    return [r];
  });
}

/** `t` itself when it already has `shape`, else a reshaped copy. */
export function asShape(t: Tensor, shape: readonly number[]): Tensor {
  return sameShape(t.shape, shape) ? t : reshape(t, shape);
}

/** g broadcast to `shape` and multiplied by `scale`. */
function spread(g: Tensor, shape: readonly number[], scale: number): Tensor {
  const s = g.engine.full(shape, scale);
  const r = mul(s, g);
  s.dispose();
  return r;
}

/** Sum over `axes` (all by default; negative axes count from the end; `[]` none, NumPy's rule, not torch's). */
export function sum(x: Tensor, axes?: number | number[], opts: ReduceOptions = {}): Tensor {
  checkOptions("sum", opts, { keepDims: true });
  return reduction("sum", "sum", x, axes, opts, (g) => spread(g, x.shape, 1));
}

/** Mean over `axes` (all by default). */
export function mean(x: Tensor, axes?: number | number[], opts: ReduceOptions = {}): Tensor {
  checkOptions("mean", opts, { keepDims: true });
  return reduction("sum", "mean", x, axes, opts, (g) => spread(g, x.shape, g.size / x.size), "average");
}

export interface VarianceOptions extends ReduceOptions {
  /** Subtracted from the count of each row's elements in the divisor (default 1: Bessel's, as PyTorch). */
  correction?: number;
}

/**
 * Variance over `axes` (all by default), torch.var's: Σ (x − mean)² / (n − correction), n the elements of a
 * row. Two passes (the mean, then the squares of what is left), so an offset far above the spread costs no
 * precision, where E[x²] − E[x]² would cancel. A RangeError where n − correction ≤ 0 (PyTorch gives NaN or ∞).
 */
export function variance(x: Tensor, axes?: number | number[], opts: VarianceOptions = {}): Tensor {
  checkOptions("variance", opts, { keepDims: true, correction: true });
  return squaredSpread("variance", x, axes, opts);
}

/** Standard deviation over `axes`, torch.std's: √variance (options as `variance`). */
export function std(x: Tensor, axes?: number | number[], opts: VarianceOptions = {}): Tensor {
  checkOptions("std", opts, { keepDims: true, correction: true });
  return composed((keep) => sqrt(keep(squaredSpread("std", x, axes, opts))));
}

/** variance, its errors naming `op`. */
function squaredSpread(op: string, x: Tensor, axes: number | number[] | undefined, opts: VarianceOptions) {
  checkF32(op, x);
  const list = normalizeAxes(op, x.shape, axes);
  const n = list.reduce((k, a) => k * x.shape[a], 1);
  const correction = opts.correction ?? 1;
  if (!(correction >= 0 && n - correction > 0)) {
    throw new RangeError(
      `${op}: ${n} elements per row of ${fmtShape(x.shape)} over axes [${list}] with correction ` +
        `${correction} leave no degrees of freedom (correction must be ≥ 0 and below the row's length)`,
    );
  }
  return composed((keep) => {
    const centred = keep(sub(x, keep(mean(x, list, { keepDims: true }))));
    return div(keep(sum(keep(square(centred)), list, { keepDims: opts.keepDims })), n - correction);
  });
}

/**
 * g shared evenly among the elements of x equal to y, the extremum of their row (its NaNs, where it has one, as
 * torch's max() gives them the gradient): max's and min's gradient.
 */
function toExtrema(x: Tensor, g: Tensor, y: Tensor, axes: number[]): Tensor {
  const mask = equalOrBothNan(x, y);
  const ties = sum(mask, axes, { keepDims: true });
  const share = div(g, ties);
  ties.dispose();
  const r = mul(mask, share);
  mask.dispose();
  share.dispose();
  return r;
}

/** Maximum over `axes` (all by default); NaN wins. The gradient goes to the maximal elements, ties split evenly. */
export function max(x: Tensor, axes?: number | number[], opts: ReduceOptions = {}): Tensor {
  checkOptions("max", opts, { keepDims: true });
  return reduction("max", "max", x, axes, opts, (g, y, axes) => toExtrema(x, g, y, axes));
}

/** Minimum over `axes` (all by default); NaN wins. The gradient goes to the minimal elements, split among ties. */
export function min(x: Tensor, axes?: number | number[], opts: ReduceOptions = {}): Tensor {
  checkOptions("min", opts, { keepDims: true });
  return reduction("max", "min", x, axes, opts, (g, y, axes) => toExtrema(x, g, y, axes), "negate");
}

/**
 * Index (i32) of the largest element along `axis`, or of the flattened tensor when `axis` is undefined, as
 * PyTorch's argmax: the first among equals, NaN above every number. Not differentiable.
 */
export function argmax(x: Tensor, axis?: number, opts: ReduceOptions = {}): Tensor {
  checkOptions("argmax", opts, { keepDims: true });
  return indexOfExtremum("argmax", x, axis, opts, false);
}

/** Index (i32) of the smallest element along `axis` (flattened when undefined): argmax's rules, NaN first. */
export function argmin(x: Tensor, axis?: number, opts: ReduceOptions = {}): Tensor {
  checkOptions("argmin", opts, { keepDims: true });
  return indexOfExtremum("argmin", x, axis, opts, true);
}

function indexOfExtremum(
  name: string,
  x: Tensor,
  axis: number | undefined,
  opts: ReduceOptions,
  negate: boolean,
) {
  checkF32(name, x);
  if (axis !== undefined && typeof axis !== "number") {
    throw new TypeError(`${name}: takes one axis or none, got ${JSON.stringify(axis)}`);
  }
  const axes = normalizeAxes(name, x.shape, axis);
  const len = product(axes.map((a) => x.shape[a]));
  // The kernel carries indices as f32, exact below 2^24.
  if (len > 2 ** 24) {
    throw new ShapeError(
      `${name}: ${len} elements along ${axis === undefined ? "the flattened" : `axis ${axis} of`} ` +
        `${fmtShape(x.shape)}, over the 2^24 (16,777,216) an index can count`,
    );
  }
  return reduce("argmax", name, x, axes, outShapeOf(x.shape, axes, opts), { negate });
}

/** log Σ exp(x) over `axes` (all by default), computed without overflow (running max, online rescaling). */
export function logsumexp(x: Tensor, axes?: number | number[], opts: ReduceOptions = {}): Tensor {
  checkOptions("logsumexp", opts, { keepDims: true });
  return reduction("logsumexp", "logsumexp", x, axes, opts, (g, _y, axes) => {
    // g·softmax, as exp((x − m) − log Σ) from the two halves: exp(x − y) would carry y's rounding to f32,
    // ulp(m) (the gradient 1e-3 off at m = 3e4, every element 1 at m = 1e8).
    const lse = splitLogsumexp("logsumexp", x, axes, false);
    const p = minusSplit("expDiff", x, lse, keptShape(x.shape, axes));
    lse.dispose();
    const r = mul(p, g);
    p.dispose();
    return r;
  });
}

/**
 * logsumexp of `x` over `axes` as two halves, each row's max m and then, from element `half` on (rows rounded
 * up to 4), log Σ exp(x − m): [2, half]. A caller that subtracts it takes (x − m) − log Σ, where rounding
 * m + log Σ to f32 first would cost ulp(m) (2e-3 at |m| = 3e4). No gradient. With `nanAtInf` a row holding
 * +∞ gets a NaN log Σ (softmax, logSoftmax and crossEntropy are NaN there, as torch's); logsumexp's own
 * gradient keeps torch's exp(x − ∞): 0 but at the ∞.
 */
export function splitLogsumexp(name: string, x: Tensor, axes: number[], nanAtInf = true): Tensor {
  const half = Math.ceil(product(keptShape(x.shape, axes)) / 4) * 4;
  return reduce("logsumexp", name, x, axes, [2, half], { half, nanAtInf });
}

/**
 * x − logsumexp(x) along one axis (op "sub") or its exp ("expDiff") through splitLogsumexp, recording no graph
 * (the callers record one node for the whole op).
 */
function minusLogsumexp(name: string, x: Tensor, axis: number, op: "sub" | "expDiff"): Tensor {
  checkF32(name, x);
  const axes = normalizeAxes(name, x.shape, axis);
  const keep = keptShape(x.shape, axes);
  const lse = splitLogsumexp(name, x, axes);
  try {
    return minusSplit(op, x, lse, keep);
  } finally {
    lse.dispose();
  }
}

/**
 * exp(x) normalised along `axis` (default the last), via logsumexp so large values do not overflow. Rows are
 * limited by one binding: each row's max and log-sum-exp take 8 bytes of it (16 where x is read in two windows);
 * past that a ShapeError names the limit.
 */
export function softmax(x: Tensor, axis = -1): Tensor {
  checkF32("softmax", x);
  if (fusesRows(x, normalizeAxes("softmax", x.shape, axis)[0])) return rowSoftmax(x, false);
  const y = minusLogsumexp("softmax", x, axis, "expDiff");
  return record(y, "softmax", [x], (g) => {
    // y·(g − Σ g·y)
    const gy = mul(g, y);
    const s = sum(gy, axis, { keepDims: true });
    gy.dispose();
    const d = sub(g, s);
    s.dispose();
    const r = mul(y, d);
    d.dispose();
    return [r];
  });
}

/** x − logsumexp(x) along `axis` (default the last); rows as softmax's. */
export function logSoftmax(x: Tensor, axis = -1): Tensor {
  checkF32("logSoftmax", x);
  if (fusesRows(x, normalizeAxes("logSoftmax", x.shape, axis)[0])) return rowSoftmax(x, true);
  const y = minusLogsumexp("logSoftmax", x, axis, "sub");
  return record(y, "logSoftmax", [x], (g) => {
    // g − softmax·Σg
    const s = sum(g, axis, { keepDims: true });
    const p = exp(y);
    const t = mul(p, s);
    p.dispose();
    s.dispose();
    const r = sub(g, t);
    t.dispose();
    return [r];
  });
}
