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

/**
 * softmax(q·kᵀ·scale + mask)·v per batch item, q [B, Lq, D], k [B, Lk, D], v [B, Lk, Dv], mask [Lq, Lk]
 * (additive, shared by the batch) or none; with the gradients of Σ out·w for an upstream w [B, Lq, Dv].
 */
export function refAttention(
  q: ArrayLike<number>,
  k: ArrayLike<number>,
  v: ArrayLike<number>,
  w: ArrayLike<number>,
  [b, lq, lk, d, dv]: [number, number, number, number, number],
  scale: number,
  mask?: ArrayLike<number>,
): { out: Float64Array; dq: Float64Array; dk: Float64Array; dv: Float64Array } {
  const out = new Float64Array(b * lq * dv);
  const dq = new Float64Array(b * lq * d);
  const dk = new Float64Array(b * lk * d);
  const dvOut = new Float64Array(b * lk * dv);
  for (let n = 0; n < b; n++) {
    for (let i = 0; i < lq; i++) {
      const s = Array.from({ length: lk }, (_, j) => {
        let dot = 0;
        for (let c = 0; c < d; c++) dot += q[(n * lq + i) * d + c] * k[(n * lk + j) * d + c];
        return dot * scale + (mask ? mask[i * lk + j] : 0);
      });
      const m = Math.max(...s);
      const e = s.map((x) => Math.exp(x - m));
      const total = e.reduce((a, x) => a + x, 0);
      // Every key hidden: the query attends to nothing (torch's safe softmax).
      const p = e.map((x) => m === -Infinity ? 0 : x / total);
      // out = P·v; dP_j = w_i·v_j; dS = P ∘ (dP − Σ P·dP); dq = dS·k·scale, dk += dS_j q·scale, dv += P_j w_i
      const dp = new Float64Array(lk);
      for (let j = 0; j < lk; j++) {
        for (let c = 0; c < dv; c++) {
          out[(n * lq + i) * dv + c] += p[j] * v[(n * lk + j) * dv + c];
          dp[j] += w[(n * lq + i) * dv + c] * v[(n * lk + j) * dv + c];
          dvOut[(n * lk + j) * dv + c] += p[j] * w[(n * lq + i) * dv + c];
        }
      }
      const centre = p.reduce((a, pj, j) => a + pj * dp[j], 0);
      for (let j = 0; j < lk; j++) {
        const ds = p[j] * (dp[j] - centre) * scale;
        for (let c = 0; c < d; c++) {
          dq[(n * lq + i) * d + c] += ds * k[(n * lk + j) * d + c];
          dk[(n * lk + j) * d + c] += ds * q[(n * lq + i) * d + c];
        }
      }
    }
  }
  return { out, dq, dk, dv: dvOut };
}
