// CPU reference of src/norm.ts in float64: standardisation over groups of elements (a layerNorm sample, a
// batchNorm channel), its affine step, and the gradients by the closed form, group by group.

/** Flat indices of each group: elements sharing their coordinates outside `axes`. */
export function groups(shape: readonly number[], axes: readonly number[]): number[][] {
  const size = shape.reduce((a, b) => a * b, 1);
  const byKey = new Map<number, number[]>();
  for (let i = 0; i < size; i++) {
    let key = 0;
    let rest = i;
    for (let d = shape.length - 1; d >= 0; d--) {
      const coord = rest % shape[d];
      rest = Math.floor(rest / shape[d]);
      if (!axes.includes(d)) key = key * shape[d] + coord;
    }
    if (!byKey.has(key)) byKey.set(key, []);
    byKey.get(key)!.push(i);
  }
  return [...byKey.values()];
}

/** The group's mean and biased variance, or the given ones. */
function moments(x: ArrayLike<number>, idx: number[]): [number, number] {
  const mu = idx.reduce((s, i) => s + x[i], 0) / idx.length;
  return [mu, idx.reduce((s, i) => s + (x[i] - mu) ** 2, 0) / idx.length];
}

export interface RefAffine {
  /** γ and β per element of x (already broadcast), or null for 1 and 0. */
  weight: ArrayLike<number> | null;
  bias: ArrayLike<number> | null;
  eps: number;
  /** Statistics per group (in `groups` order) to use instead of the batch's. */
  fixed?: { mean: number[]; var: number[] };
}

/** y = (x − μ) / √(σ² + eps) · γ + β per group. */
export function refStandardize(x: ArrayLike<number>, gs: number[][], a: RefAffine): Float64Array {
  const y = new Float64Array(x.length);
  gs.forEach((idx, k) => {
    const [mu, v] = a.fixed ? [a.fixed.mean[k], a.fixed.var[k]] : moments(x, idx);
    const inv = 1 / Math.sqrt(v + a.eps);
    for (const i of idx) y[i] = (x[i] - mu) * inv * (a.weight ? a.weight[i] : 1) + (a.bias ? a.bias[i] : 0);
  });
  return y;
}

/**
 * Gradients of Σ g·y: dx per element, and g·x̂ and g per element (the caller sums them over the axes where γ and
 * β broadcast). With batch statistics dx = inv·(gγ − mean(gγ) − x̂·mean(gγ·x̂)) per group.
 */
export function refStandardizeGrad(
  x: ArrayLike<number>,
  g: ArrayLike<number>,
  gs: number[][],
  a: RefAffine,
): { dx: Float64Array; gxhat: Float64Array } {
  const dx = new Float64Array(x.length);
  const gxhat = new Float64Array(x.length);
  gs.forEach((idx, k) => {
    const [mu, v] = a.fixed ? [a.fixed.mean[k], a.fixed.var[k]] : moments(x, idx);
    const inv = 1 / Math.sqrt(v + a.eps);
    const xhat = (i: number) => (x[i] - mu) * inv;
    const gx = (i: number) => g[i] * (a.weight ? a.weight[i] : 1);
    const meanGx = idx.reduce((s, i) => s + gx(i), 0) / idx.length;
    const meanGxXhat = idx.reduce((s, i) => s + gx(i) * xhat(i), 0) / idx.length;
    for (const i of idx) {
      dx[i] = a.fixed ? inv * gx(i) : inv * (gx(i) - meanGx - xhat(i) * meanGxXhat);
      gxhat[i] = g[i] * xhat(i);
    }
  });
  return { dx, gxhat };
}
