// CPU reference of src/nn.ts in float64.
import type { CrossEntropyOptions } from "../nn.ts";

/** Calls fn(indices) for each line of `shape` along `axis`: the flat indices of its elements. */
function forEachLine(shape: readonly number[], axis: number, fn: (idx: number[]) => void): void {
  const n = shape[axis];
  const inner = shape.slice(axis + 1).reduce((a, b) => a * b, 1);
  const outer = shape.slice(0, axis).reduce((a, b) => a * b, 1);
  for (let o = 0; o < outer; o++) {
    for (let i = 0; i < inner; i++) fn(Array.from({ length: n }, (_, k) => (o * n + k) * inner + i));
  }
}

/** x / max(||x||₂, eps) along `axis` (non-negative). */
export function refNormalize(
  x: ArrayLike<number>,
  shape: readonly number[],
  axis: number,
  eps: number,
): Float64Array {
  const out = new Float64Array(x.length);
  forEachLine(shape, axis, (idx) => {
    const n = Math.max(Math.sqrt(idx.reduce((s, i) => s + x[i] * x[i], 0)), eps);
    for (const i of idx) out[i] = x[i] / n;
  });
  return out;
}

/** Gradient of Σ g·normalize(x): (g − y·(g·y)) / r where r = ||x|| > eps, g / eps where the norm is clamped. */
export function refNormalizeGrad(
  x: ArrayLike<number>,
  g: ArrayLike<number>,
  shape: readonly number[],
  axis: number,
  eps: number,
): Float64Array {
  const out = new Float64Array(x.length);
  forEachLine(shape, axis, (idx) => {
    const r = Math.sqrt(idx.reduce((s, i) => s + x[i] * x[i], 0));
    if (r <= eps) {
      for (const i of idx) out[i] = g[i] / eps;
      return;
    }
    const dot = idx.reduce((s, i) => s + g[i] * x[i] / r, 0);
    for (const i of idx) out[i] = (g[i] - (x[i] / r) * dot) / r;
  });
  return out;
}

/**
 * logsumexp(row) − row[label] per row: 0 where the label is ignoreIndex, NaN where it is otherwise outside
 * [0, classes). Reduced: [Σ] for "sum", [Σ / rows not ignored] for "mean" (NaN when all are ignored), or per row
 * for "none".
 */
export function refCrossEntropy(
  logits: ArrayLike<number>,
  labels: ArrayLike<number>,
  classes: number,
  options: CrossEntropyOptions = {},
): Float64Array {
  const { ignoreIndex = -100, reduction = "mean" } = options;
  const rows = labels.length;
  const each = new Float64Array(rows);
  let total = 0;
  let kept = 0;
  for (let n = 0; n < rows; n++) {
    const label = labels[n];
    if (label === ignoreIndex) continue;
    kept++;
    each[n] = label >= 0 && label < classes
      ? logsumexpRow(logits, n, classes) - logits[n * classes + label]
      : NaN;
    total += each[n];
  }
  if (reduction === "none") return each;
  return Float64Array.of(reduction === "sum" ? total : total / kept);
}

/**
 * Gradient of crossEntropy for upstream gradient `upstream` (one value, or one per row for "none"):
 * (softmax − onehot) · upstream, over the rows not ignored for "mean"; 0 for ignored rows, NaN rows for other
 * labels outside [0, classes).
 */
export function refCrossEntropyGrad(
  logits: ArrayLike<number>,
  labels: ArrayLike<number>,
  classes: number,
  upstream: number | ArrayLike<number> = 1,
  options: CrossEntropyOptions = {},
): Float64Array {
  const { ignoreIndex = -100, reduction = "mean" } = options;
  const rows = labels.length;
  let kept = 0;
  for (let n = 0; n < rows; n++) if (labels[n] !== ignoreIndex) kept++;
  const out = new Float64Array(rows * classes);
  for (let n = 0; n < rows; n++) {
    const label = labels[n];
    if (label === ignoreIndex) continue;
    const g = typeof upstream === "number" ? upstream : upstream[n];
    const scale = reduction === "mean" ? g / kept : g;
    const lse = logsumexpRow(logits, n, classes);
    const valid = label >= 0 && label < classes;
    for (let c = 0; c < classes; c++) {
      const i = n * classes + c;
      out[i] = valid ? (Math.exp(logits[i] - lse) - (c === label ? 1 : 0)) * scale : NaN;
    }
  }
  return out;
}

function logsumexpRow(logits: ArrayLike<number>, n: number, classes: number): number {
  let m = -Infinity;
  for (let c = 0; c < classes; c++) m = Math.max(m, logits[n * classes + c]);
  let s = 0;
  for (let c = 0; c < classes; c++) s += Math.exp(logits[n * classes + c] - m);
  return m + Math.log(s);
}
