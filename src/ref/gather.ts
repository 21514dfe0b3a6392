// CPU reference of src/gather.ts in float64: x as [B, L, D] rows, ids as [B, K].

/** out[b, k, :] = x[b, ids[b, k], :]; NaN rows where an id is outside [0, L). */
export function refGatherRows(
  x: ArrayLike<number>,
  [b, len, dim]: readonly [number, number, number],
  ids: ArrayLike<number>,
): Float64Array {
  const k = ids.length / b;
  const out = new Float64Array(ids.length * dim);
  for (let q = 0; q < ids.length; q++) {
    const id = ids[q];
    const row = Math.floor(q / k) * len + id;
    for (let d = 0; d < dim; d++) out[q * dim + d] = id >= 0 && id < len ? x[row * dim + d] : NaN;
  }
  return out;
}

/** The gradient of Σ g·gatherRows(x, ids) for x: dx[b, ids[b, k], :] += g[b, k, :], ids out of range skipped. */
export function refScatterAdd(
  g: ArrayLike<number>,
  [b, len, dim]: readonly [number, number, number],
  ids: ArrayLike<number>,
): Float64Array {
  const k = ids.length / b;
  const dx = new Float64Array(b * len * dim);
  for (let q = 0; q < ids.length; q++) {
    const id = ids[q];
    if (!(id >= 0 && id < len)) continue;
    const row = Math.floor(q / k) * len + id;
    for (let d = 0; d < dim; d++) dx[row * dim + d] += g[q * dim + d];
  }
  return dx;
}
