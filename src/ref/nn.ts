// CPU reference of src/nn.ts in float64.

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

/** Mean over rows of logsumexp(row) − row[label]; NaN when a label is outside [0, classes). */
export function refCrossEntropy(
  logits: ArrayLike<number>,
  labels: ArrayLike<number>,
  classes: number,
): number {
  const rows = labels.length;
  let total = 0;
  for (let n = 0; n < rows; n++) {
    const label = labels[n];
    if (!(label >= 0 && label < classes)) return NaN;
    total += logsumexpRow(logits, n, classes) - logits[n * classes + label];
  }
  return total / rows;
}

/** Gradient of crossEntropy times g: (softmax − onehot) · g / rows; NaN rows for labels outside [0, classes). */
export function refCrossEntropyGrad(
  logits: ArrayLike<number>,
  labels: ArrayLike<number>,
  classes: number,
  g = 1,
): Float64Array {
  const rows = labels.length;
  const out = new Float64Array(rows * classes);
  for (let n = 0; n < rows; n++) {
    const lse = logsumexpRow(logits, n, classes);
    const valid = labels[n] >= 0 && labels[n] < classes;
    for (let c = 0; c < classes; c++) {
      const i = n * classes + c;
      out[i] = valid ? (Math.exp(logits[i] - lse) - (c === labels[n] ? 1 : 0)) * g / rows : NaN;
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
