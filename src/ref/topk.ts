// CPU reference of src/topk.ts: each row sorted whole, in float64.

/**
 * The k largest (or smallest) elements along `axis` of x [shape] and their indices, as torch.topk(sorted=True):
 * NaN above every number, −0 equal to +0, the lower index first among equals.
 */
export function refTopk(
  x: ArrayLike<number>,
  shape: readonly number[],
  k: number,
  axis = shape.length - 1,
  largest = true,
): { values: Float64Array; indices: Float64Array; shape: number[] } {
  const len = shape[axis];
  const inner = shape.slice(axis + 1).reduce((a, b) => a * b, 1);
  const outer = shape.slice(0, axis).reduce((a, b) => a * b, 1);
  const out = shape.map((d, i) => (i === axis ? k : d));
  const values = new Float64Array(outer * k * inner);
  const indices = new Float64Array(values.length);
  // Positive when a ranks below b.
  const order = (a: number, b: number) => {
    if (Number.isNaN(a) || Number.isNaN(b)) {
      return (largest ? 1 : -1) * (Number(Number.isNaN(b)) - Number(Number.isNaN(a)));
    }
    return largest ? b - a : a - b;
  };
  for (let o = 0; o < outer; o++) {
    for (let j = 0; j < inner; j++) {
      const at = (i: number) => (o * len + i) * inner + j;
      const row = Array.from({ length: len }, (_, i) => i);
      row.sort((p, q) => order(x[at(p)], x[at(q)]) || p - q);
      for (let r = 0; r < k; r++) {
        values[(o * k + r) * inner + j] = x[at(row[r])];
        indices[(o * k + r) * inner + j] = row[r];
      }
    }
  }
  return { values, indices, shape: out };
}
