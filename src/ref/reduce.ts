// CPU reference of src/reduce.ts in float64. Axes are given normalised (non-negative, distinct).

export interface Reduced {
  data: Float64Array;
  shape: number[];
}

/** For each element of `shape`, the flat index of its row in the result (reduced axes dropped). */
function rowOf(shape: readonly number[], axes: readonly number[]): Uint32Array {
  const size = shape.reduce((a, b) => a * b, 1);
  const rowStride = new Array<number>(shape.length).fill(0);
  for (let d = shape.length - 1, n = 1; d >= 0; d--) {
    if (axes.includes(d)) continue;
    rowStride[d] = n;
    n *= shape[d];
  }
  const rows = new Uint32Array(size);
  const idx = new Array<number>(shape.length).fill(0);
  let r = 0;
  for (let i = 0; i < size; i++) {
    rows[i] = r;
    for (let d = shape.length - 1; d >= 0; d--) {
      r += rowStride[d];
      if (++idx[d] < shape[d]) break;
      r -= rowStride[d] * shape[d];
      idx[d] = 0;
    }
  }
  return rows;
}

export function reducedShape(shape: readonly number[], axes: readonly number[], keepDims: boolean): number[] {
  return keepDims
    ? shape.map((d, i) => (axes.includes(i) ? 1 : d))
    : shape.filter((_, i) => !axes.includes(i));
}

function fold(
  x: ArrayLike<number>,
  shape: readonly number[],
  axes: readonly number[],
  keepDims: boolean,
  init: number,
  step: (acc: number, v: number) => number,
): Reduced {
  const rows = rowOf(shape, axes);
  const out = reducedShape(shape, axes, keepDims);
  const data = new Float64Array(out.reduce((a, b) => a * b, 1)).fill(init);
  for (let i = 0; i < rows.length; i++) data[rows[i]] = step(data[rows[i]], x[i]);
  return { data, shape: out };
}

const lengthOf = (shape: readonly number[], axes: readonly number[]) =>
  axes.reduce((n, a) => n * shape[a], 1);

/** Max that propagates NaN. */
const maxNaN = (a: number, b: number) => (Number.isNaN(a) || Number.isNaN(b) ? NaN : Math.max(a, b));

export function refSum(
  x: ArrayLike<number>,
  shape: readonly number[],
  axes: readonly number[],
  keepDims = false,
): Reduced {
  return fold(x, shape, axes, keepDims, 0, (a, v) => a + v);
}

export function refMean(
  x: ArrayLike<number>,
  shape: readonly number[],
  axes: readonly number[],
  keepDims = false,
): Reduced {
  const r = refSum(x, shape, axes, keepDims);
  const n = lengthOf(shape, axes);
  return { data: r.data.map((v) => v / n), shape: r.shape };
}

/** Σ (x − mean)² / (n − correction) over `axes`, two passes in float64. */
export function refVariance(
  x: ArrayLike<number>,
  shape: readonly number[],
  axes: readonly number[],
  correction: number,
  keepDims = false,
): Reduced {
  const m = refMean(x, shape, axes);
  const rows = rowOf(shape, axes);
  const out = reducedShape(shape, axes, keepDims);
  const data = new Float64Array(m.data.length);
  for (let i = 0; i < rows.length; i++) data[rows[i]] += (x[i] - m.data[rows[i]]) ** 2;
  const n = lengthOf(shape, axes);
  return { data: data.map((v) => v / (n - correction)), shape: out };
}

/** d variance / dx for upstream gradient g (one value per row): 2 (x − mean) g / (n − correction). */
export function refVarianceGrad(
  x: ArrayLike<number>,
  g: ArrayLike<number>,
  shape: readonly number[],
  axes: readonly number[],
  correction: number,
): Float64Array {
  const m = refMean(x, shape, axes);
  const rows = rowOf(shape, axes);
  const n = lengthOf(shape, axes);
  return Float64Array.from(rows, (r, i) => 2 * (x[i] - m.data[r]) * g[r] / (n - correction));
}

export function refMax(
  x: ArrayLike<number>,
  shape: readonly number[],
  axes: readonly number[],
  keepDims = false,
): Reduced {
  return fold(x, shape, axes, keepDims, -Infinity, maxNaN);
}

export function refMin(
  x: ArrayLike<number>,
  shape: readonly number[],
  axes: readonly number[],
  keepDims = false,
): Reduced {
  const minNaN = (a: number, b: number) => (Number.isNaN(a) || Number.isNaN(b) ? NaN : Math.min(a, b));
  return fold(x, shape, axes, keepDims, Infinity, minNaN);
}

/**
 * PyTorch's argmax (argmin with `smallest`) along `axis`, or over the flattened tensor when undefined: the first
 * index among equal extremes, the first NaN before any number.
 */
export function refArgExtremum(
  x: ArrayLike<number>,
  shape: readonly number[],
  axis: number | undefined,
  keepDims = false,
  smallest = false,
): Reduced {
  const axes = axis === undefined ? shape.map((_, i) => i) : [axis];
  const rows = rowOf(shape, axes);
  const out = reducedShape(shape, axes, keepDims);
  const best = new Float64Array(out.reduce((a, b) => a * b, 1));
  const index = new Float64Array(best.length).fill(-1);
  const inner = axis === undefined ? 1 : shape.slice(axis + 1).reduce((a, b) => a * b, 1);
  const len = axis === undefined ? x.length : shape[axis];
  const better = (v: number, b: number) =>
    !Number.isNaN(b) && (Number.isNaN(v) || (smallest ? v < b : v > b));
  // Elements of a row come in increasing index order, so the first of equals stays.
  for (let i = 0; i < rows.length; i++) {
    const r = rows[i];
    if (index[r] < 0 || better(x[i], best[r])) {
      best[r] = x[i];
      index[r] = Math.floor(i / inner) % len;
    }
  }
  return { data: index, shape: out };
}

/** Each row's max m and log Σ exp(x − m), apart: m + log Σ rounds to m once |m| passes ~1e15 in float64. */
function logsumexpHalves(
  x: ArrayLike<number>,
  shape: readonly number[],
  axes: readonly number[],
  keepDims = false,
) {
  const m = refMax(x, shape, axes, keepDims);
  const rows = rowOf(shape, axes);
  const s = new Float64Array(m.data.length);
  for (let i = 0; i < rows.length; i++) {
    const mi = m.data[rows[i]];
    s[rows[i]] += x[i] === mi ? 1 : Math.exp(x[i] - mi);
  }
  return { m, logS: s.map(Math.log), rows };
}

export function refLogsumexp(
  x: ArrayLike<number>,
  shape: readonly number[],
  axes: readonly number[],
  keepDims = false,
): Reduced {
  const { m, logS } = logsumexpHalves(x, shape, axes, keepDims);
  return { data: m.data.map((mi, r) => mi + logS[r]), shape: m.shape };
}

/**
 * x − logsumexp(x) over `axes`, as (x − m) − log Σ; with `nanAtInf` NaN throughout a row holding +∞, as torch's
 * log_softmax (logsumexp's gradient keeps exp(x − ∞): NaN at the ∞ alone).
 */
function minusLogsumexp(
  x: ArrayLike<number>,
  shape: readonly number[],
  axes: readonly number[],
  nanAtInf = true,
): Float64Array {
  const { m, logS, rows } = logsumexpHalves(x, shape, axes);
  return Float64Array.from(
    rows,
    (r, i) => nanAtInf && m.data[r] === Infinity ? NaN : (x[i] - m.data[r]) - logS[r],
  );
}

export function refLogSoftmax(x: ArrayLike<number>, shape: readonly number[], axis: number): Float64Array {
  return minusLogsumexp(x, shape, [axis]);
}

export function refSoftmax(x: ArrayLike<number>, shape: readonly number[], axis: number): Float64Array {
  return refLogSoftmax(x, shape, axis).map(Math.exp);
}

// ---- gradients: dL/dx given x and dL/dy (g in the reduced shape, either keepDims or not) ---------------------

export function refSumGrad(
  g: ArrayLike<number>,
  shape: readonly number[],
  axes: readonly number[],
): Float64Array {
  return Float64Array.from(rowOf(shape, axes), (r) => g[r]);
}

export function refMeanGrad(
  g: ArrayLike<number>,
  shape: readonly number[],
  axes: readonly number[],
): Float64Array {
  const n = lengthOf(shape, axes);
  return refSumGrad(g, shape, axes).map((v) => v / n);
}

/** The gradient goes to the maximal elements of each row (its NaNs, where it has one), split evenly between ties. */
export function refMaxGrad(
  x: ArrayLike<number>,
  g: ArrayLike<number>,
  shape: readonly number[],
  axes: readonly number[],
): Float64Array {
  const m = refMax(x, shape, axes).data;
  const rows = rowOf(shape, axes);
  const took = (i: number) => x[i] === m[rows[i]] || (Number.isNaN(x[i]) && Number.isNaN(m[rows[i]]));
  const ties = refSum(Float64Array.from(x, (_, i) => (took(i) ? 1 : 0)), shape, axes).data;
  return Float64Array.from(rows, (r, i) => (took(i) ? g[r] / ties[r] : 0));
}

export function refLogsumexpGrad(
  x: ArrayLike<number>,
  g: ArrayLike<number>,
  shape: readonly number[],
  axes: readonly number[],
): Float64Array {
  const rows = rowOf(shape, axes);
  return minusLogsumexp(x, shape, axes, false).map((v, i) => g[rows[i]] * Math.exp(v));
}

/** y·(g − Σ g·y) along the axis. */
export function refSoftmaxGrad(
  x: ArrayLike<number>,
  g: ArrayLike<number>,
  shape: readonly number[],
  axis: number,
): Float64Array {
  const y = refSoftmax(x, shape, axis);
  const gy = refSum(y.map((v, i) => v * g[i]), shape, [axis]).data;
  const rows = rowOf(shape, [axis]);
  return y.map((v, i) => v * (g[i] - gy[rows[i]]));
}

/** g − softmax·Σg along the axis. */
export function refLogSoftmaxGrad(
  x: ArrayLike<number>,
  g: ArrayLike<number>,
  shape: readonly number[],
  axis: number,
): Float64Array {
  const y = refSoftmax(x, shape, axis);
  const gs = refSum(g, shape, [axis]).data;
  const rows = rowOf(shape, [axis]);
  return y.map((v, i) => g[i] - v * gs[rows[i]]);
}
