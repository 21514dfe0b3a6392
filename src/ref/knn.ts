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
  const unit = (x: ArrayLike<number>, rows: number) =>
    Array.from({ length: rows }, (_, r) => {
      const row = Array.from({ length: d }, (_, j) => x[r * d + j]);
      const norm = Math.max(Math.hypot(...row), 1e-12);
      return row.map((v) => v / norm);
    });
  const q = unit(features, queries);
  const b = unit(bank, n);
  const scores = new Float64Array(queries * classes);
  for (let i = 0; i < queries; i++) {
    const sim = b.map((row) => row.reduce((s, v, j) => s + v * q[i][j], 0));
    const order = sim.map((_, j) => j).sort((x, y) => sim[y] - sim[x] || x - y);
    for (const j of order.slice(0, k)) scores[i * classes + labels[j]] += Math.exp(sim[j] / temperature);
  }
  return scores;
}
