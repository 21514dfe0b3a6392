// CPU reference of src/knn.ts in float64: cosine similarities, a full sort, the weighted vote.

export function refKnnScores(
  features: ArrayLike<number>,
  bank: ArrayLike<number>,
  labels: ArrayLike<number>,
  [queries, n, d]: [number, number, number],
  classes: number,
  k: number,
  temperature: number,
): Float64Array {
  /** Rows divided by max(‖row‖, 1e-12), as F.normalize. */
  const unit = (x: ArrayLike<number>, rows: number) => {
    const u = Float64Array.from(x);
    for (let r = 0; r < rows; r++) {
      let s = 0;
      for (let j = 0; j < d; j++) s += u[r * d + j] ** 2;
      const norm = Math.max(Math.sqrt(s), 1e-12);
      for (let j = 0; j < d; j++) u[r * d + j] /= norm;
    }
    return u;
  };
  const q = unit(features, queries);
  const b = unit(bank, n);
  const scores = new Float64Array(queries * classes);
  const sim = new Float64Array(n);
  for (let i = 0; i < queries; i++) {
    for (let r = 0; r < n; r++) {
      let dot = 0;
      for (let j = 0; j < d; j++) dot += q[i * d + j] * b[r * d + j];
      sim[r] = dot;
    }
    const order = Array.from({ length: n }, (_, r) => r).sort((x, y) => sim[y] - sim[x] || x - y);
    for (const r of order.slice(0, k)) scores[i * classes + labels[r]] += Math.exp(sim[r] / temperature);
  }
  return scores;
}
