// CPU reference of src/matmul.ts in float64: op(A) · op(B) over the last two dims, batch dims broadcast.

export interface RefTensor {
  data: ArrayLike<number>;
  shape: readonly number[];
}

export function refMatmul(
  a: RefTensor,
  b: RefTensor,
  options: { transA?: boolean; transB?: boolean } = {},
): { data: Float64Array; shape: number[] } {
  const [ar, ac] = a.shape.slice(-2);
  const [br, bc] = b.shape.slice(-2);
  const [m, k] = options.transA ? [ac, ar] : [ar, ac];
  const n = options.transB ? br : bc;
  const aBatch = a.shape.slice(0, -2);
  const bBatch = b.shape.slice(0, -2);
  const rank = Math.max(aBatch.length, bBatch.length);
  const batch = Array.from({ length: rank }, (_, i) => {
    const da = aBatch[aBatch.length - rank + i] ?? 1;
    const db = bBatch[bBatch.length - rank + i] ?? 1;
    if (da !== db && da !== 1 && db !== 1) {
      throw new Error(`refMatmul: batch dims ${da} and ${db} do not broadcast`);
    }
    return Math.max(da, db);
  });
  const items = batch.reduce((x, y) => x * y, 1);
  // Index of output batch item `t` in an operand with batch dims `own` (right-aligned, size-1 dims broadcast).
  const itemOf = (t: number, own: readonly number[]) => {
    let idx = 0;
    let scale = 1;
    for (let i = rank - 1, rest = t; i >= 0; i--) {
      const digit = rest % batch[i];
      rest = Math.floor(rest / batch[i]);
      const d = own[own.length - rank + i] ?? 1;
      if (d !== 1) idx += digit * scale;
      scale *= d;
    }
    return idx;
  };
  const data = new Float64Array(items * m * n);
  for (let t = 0; t < items; t++) {
    const ao = itemOf(t, aBatch) * ar * ac;
    const bo = itemOf(t, bBatch) * br * bc;
    for (let i = 0; i < m; i++) {
      for (let j = 0; j < n; j++) {
        let s = 0;
        for (let p = 0; p < k; p++) {
          const x = a.data[ao + (options.transA ? p * ac + i : i * ac + p)];
          const y = b.data[bo + (options.transB ? j * bc + p : p * bc + j)];
          s += x * y;
        }
        data[(t * m + i) * n + j] = s;
      }
    }
  }
  return { data, shape: [...batch, m, n] };
}
