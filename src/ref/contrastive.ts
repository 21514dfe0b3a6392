// Float64 CPU reference of src/contrastive.ts, written from the loss definitions with plain loops over the full
// similarity matrix (independent of the fused kernels). Matrices are row-major Float64Arrays; each function
// returns the loss and the gradient of the loss with respect to each differentiable input.

const EPS = 1e-12;

type Mat = ArrayLike<number>;

/** torch.nn.functional.normalize rows: x / max(|x|, eps), with norms. */
function normalizeRows(x: Mat, rows: number, dim: number): { u: Float64Array; norms: Float64Array } {
  const u = new Float64Array(rows * dim);
  const norms = new Float64Array(rows);
  for (let i = 0; i < rows; i++) {
    let ss = 0;
    for (let d = 0; d < dim; d++) ss += x[i * dim + d] ** 2;
    norms[i] = Math.sqrt(ss);
    for (let d = 0; d < dim; d++) u[i * dim + d] = x[i * dim + d] / Math.max(norms[i], EPS);
  }
  return { u, norms };
}

/** Gradient through normalizeRows given the gradient du of its output. */
function normalizeRowsGrad(
  u: Float64Array,
  norms: Float64Array,
  du: Float64Array,
  dim: number,
): Float64Array {
  const dx = new Float64Array(du.length);
  for (let i = 0; i < norms.length; i++) {
    let dot = 0;
    for (let d = 0; d < dim; d++) dot += u[i * dim + d] * du[i * dim + d];
    for (let d = 0; d < dim; d++) {
      const k = i * dim + d;
      dx[k] = norms[i] > EPS ? (du[k] - u[k] * dot) / norms[i] : du[k] / EPS;
    }
  }
  return dx;
}

/**
 * Cross-entropy of logit rows with soft targets: loss = Σ_i weight_i · (lse_i − Σ_j target_ij · logit_ij),
 * lse_i over the entries where `allowed` (the targets may lie outside them: DCL), and dloss/dlogits.
 */
function crossEntropy(
  logits: Float64Array,
  rows: number,
  cols: number,
  allowed: (i: number, j: number) => boolean,
  target: (i: number, j: number) => number,
  weight: (i: number) => number,
): { loss: number; dlogits: Float64Array } {
  let loss = 0;
  const dlogits = new Float64Array(rows * cols);
  for (let i = 0; i < rows; i++) {
    const w = weight(i);
    if (w === 0) continue;
    let m = -Infinity;
    for (let j = 0; j < cols; j++) if (allowed(i, j)) m = Math.max(m, logits[i * cols + j]);
    let s = 0;
    for (let j = 0; j < cols; j++) if (allowed(i, j)) s += Math.exp(logits[i * cols + j] - m);
    const lse = m + Math.log(s);
    loss += w * lse;
    for (let j = 0; j < cols; j++) {
      const t = target(i, j);
      const inLse = allowed(i, j);
      if (!inLse && t === 0) continue;
      loss -= w * t * logits[i * cols + j];
      dlogits[i * cols + j] = w * ((inLse ? Math.exp(logits[i * cols + j] - lse) : 0) - t);
    }
  }
  return { loss, dlogits };
}

/** logits = a·bᵀ · scale for a [ra, dim], b [rb, dim]. */
function logitsOf(a: Mat, b: Mat, ra: number, rb: number, dim: number, scale: number): Float64Array {
  const out = new Float64Array(ra * rb);
  for (let i = 0; i < ra; i++) {
    for (let j = 0; j < rb; j++) {
      let s = 0;
      for (let d = 0; d < dim; d++) s += a[i * dim + d] * b[j * dim + d];
      out[i * rb + j] = s * scale;
    }
  }
  return out;
}

/** da += dlogits · b · scale, db += dlogitsᵀ · a · scale. */
function logitsGrad(
  dlogits: Float64Array,
  a: Mat,
  b: Mat,
  ra: number,
  rb: number,
  dim: number,
  scale: number,
  da: Float64Array,
  db: Float64Array | null,
): void {
  for (let i = 0; i < ra; i++) {
    for (let j = 0; j < rb; j++) {
      const g = dlogits[i * rb + j] * scale;
      if (g === 0) continue;
      for (let d = 0; d < dim; d++) {
        da[i * dim + d] += g * b[j * dim + d];
        if (db) db[j * dim + d] += g * a[i * dim + d];
      }
    }
  }
}

/** lightly's NTXentLoss (no memory bank) on z1, z2 [n, dim]. */
export function refNtXent(
  z1: Mat,
  z2: Mat,
  n: number,
  dim: number,
  temperature: number,
  excludePositives = false,
): { loss: number; dz1: Float64Array; dz2: Float64Array } {
  const rows = 2 * n;
  const x = new Float64Array(rows * dim);
  x.set(Array.from(z1), 0);
  x.set(Array.from(z2), n * dim);
  const { u, norms } = normalizeRows(x, rows, dim);
  const logits = logitsOf(u, u, rows, rows, dim, 1 / temperature);
  const positive = (i: number) => (i + n) % rows;
  const ce = crossEntropy(
    logits,
    rows,
    rows,
    (i, j) => i !== j && !(excludePositives && j === positive(i)),
    (i, j) => (j === positive(i) ? 1 : 0),
    () => 1 / rows,
  );
  const du = new Float64Array(rows * dim);
  logitsGrad(ce.dlogits, u, u, rows, rows, dim, 1 / temperature, du, du);
  const dx = normalizeRowsGrad(u, norms, du, dim);
  return { loss: ce.loss, dz1: dx.slice(0, n * dim), dz2: dx.slice(n * dim) };
}

/**
 * DCLW's terms: the rows normalised, cos_i of the two views' rows i, and 1 − w_i with w = n·softmax(cos / σ)
 * over the batch (weights lightly detaches, so they take no gradient).
 */
function dclwTerms(z1: Mat, z2: Mat, n: number, dim: number, sigma: number) {
  const a = normalizeRows(z1, n, dim);
  const b = normalizeRows(z2, n, dim);
  const cos = Array.from({ length: n }, (_, i) => {
    let s = 0;
    for (let j = 0; j < dim; j++) s += a.u[i * dim + j] * b.u[i * dim + j];
    return s;
  });
  const m = Math.max(...cos);
  const e = cos.map((c) => Math.exp((c - m) / sigma));
  const total = e.reduce((x, y) => x + y, 0);
  return { a, b, cos, oneMinusW: e.map((v) => (n * v) / total - 1) };
}

/** DCLW's 1 − w_i for views z1, z2 [n, dim] (see dclwTerms). */
export function refDclwOneMinusW(z1: Mat, z2: Mat, n: number, dim: number, sigma: number): number[] {
  return dclwTerms(z1, z2, n, dim, sigma).oneMinusW;
}

/**
 * DCL (Yeh et al.'s Eq. 6): NT-Xent with each row's positive left out of its log-sum-exp over all 2N − 2
 * negatives. With `sigma`, DCLW: each positive term −s_i/τ weighted by w_i = 2 − N·softmax_i(cos_i / sigma), w
 * held constant in the gradient.
 */
export function refDcl(
  z1: Mat,
  z2: Mat,
  n: number,
  dim: number,
  temperature: number,
  sigma?: number,
): { loss: number; dz1: Float64Array; dz2: Float64Array } {
  const r = refNtXent(z1, z2, n, dim, temperature, true);
  if (sigma === undefined) return r;
  // Both directions' positive terms share cos_i: the loss gains mean_i (1 − w_i)·cos_i / τ.
  const { a, b, cos, oneMinusW } = dclwTerms(z1, z2, n, dim, sigma);
  const du1 = new Float64Array(n * dim);
  const du2 = new Float64Array(n * dim);
  let loss = r.loss;
  for (let i = 0; i < n; i++) {
    loss += (oneMinusW[i] * cos[i]) / (n * temperature);
    const g = oneMinusW[i] / (n * temperature);
    for (let j = 0; j < dim; j++) {
      du1[i * dim + j] = g * b.u[i * dim + j];
      du2[i * dim + j] = g * a.u[i * dim + j];
    }
  }
  const d1 = normalizeRowsGrad(a.u, a.norms, du1, dim);
  const d2 = normalizeRowsGrad(b.u, b.norms, du2, dim);
  return { loss, dz1: r.dz1.map((v, i) => v + d1[i]), dz2: r.dz2.map((v, i) => v + d2[i]) };
}

/** CLIP / MoCo InfoNCE on query, keys [n, dim] with an optional negative bank [k, dim]. */
export function refInfoNCE(
  query: Mat,
  keys: Mat,
  n: number,
  dim: number,
  temperature: number,
  negatives: Mat | null = null,
  k = 0,
  symmetric = false,
): { loss: number; dq: Float64Array; dk: Float64Array } {
  const cols = n + k;
  const columns = new Float64Array(cols * dim);
  columns.set(Array.from(keys), 0);
  if (negatives) columns.set(Array.from(negatives), n * dim);
  const half = symmetric ? 0.5 : 1;
  const dq = new Float64Array(n * dim);
  const dcols = new Float64Array(cols * dim);
  const qk = logitsOf(query, columns, n, cols, dim, 1 / temperature);
  const ce = crossEntropy(qk, n, cols, () => true, (i, j) => (i === j ? 1 : 0), () => half / n);
  logitsGrad(ce.dlogits, query, columns, n, cols, dim, 1 / temperature, dq, dcols);
  let loss = ce.loss;
  if (symmetric) {
    const kq = logitsOf(keys, query, n, n, dim, 1 / temperature);
    const ce2 = crossEntropy(kq, n, n, () => true, (i, j) => (i === j ? 1 : 0), () => half / n);
    logitsGrad(ce2.dlogits, keys, query, n, n, dim, 1 / temperature, dcols, dq);
    loss += ce2.loss;
  }
  return { loss, dq, dk: dcols.slice(0, n * dim) };
}

/** Supervised contrastive loss (Khosla et al., L_out) on z [n, dim] with integer labels. */
export function refSupCon(
  z: Mat,
  labels: ArrayLike<number>,
  n: number,
  dim: number,
  temperature: number,
): { loss: number; dz: Float64Array } {
  const { u, norms } = normalizeRows(z, n, dim);
  const logits = logitsOf(u, u, n, n, dim, 1 / temperature);
  const positives = Array.from({ length: n }, (_, i) => {
    let c = 0;
    for (let j = 0; j < n; j++) if (j !== i && labels[j] === labels[i]) c++;
    return c;
  });
  const anchors = positives.filter((c) => c > 0).length;
  const ce = crossEntropy(
    logits,
    n,
    n,
    (i, j) => i !== j,
    (i, j) => (i !== j && labels[j] === labels[i] ? 1 / positives[i] : 0),
    (i) => (positives[i] > 0 ? 1 / anchors : 0),
  );
  const du = new Float64Array(n * dim);
  logitsGrad(ce.dlogits, u, u, n, n, dim, 1 / temperature, du, du);
  return { loss: ce.loss, dz: normalizeRowsGrad(u, norms, du, dim) };
}

/** −mean cos(p_i, z_i), gradient to p only. */
export function refNegativeCosine(
  p: Mat,
  z: Mat,
  n: number,
  dim: number,
): { loss: number; dp: Float64Array } {
  const np = normalizeRows(p, n, dim);
  const nz = normalizeRows(z, n, dim);
  let loss = 0;
  const du = new Float64Array(n * dim);
  for (let i = 0; i < n; i++) {
    for (let d = 0; d < dim; d++) {
      loss -= (np.u[i * dim + d] * nz.u[i * dim + d]) / n;
      du[i * dim + d] = -nz.u[i * dim + d] / n;
    }
  }
  return { loss, dp: normalizeRowsGrad(np.u, np.norms, du, dim) };
}
