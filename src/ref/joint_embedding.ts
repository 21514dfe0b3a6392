// Float64 CPU reference of src/joint_embedding.ts, written from the loss definitions with plain loops over the
// full D × D matrices (independent of the GPU composition and its Gram-matrix shortcut), with hand-derived
// gradients. Matrices are row-major [N, D]; each function returns the loss and its gradient to each view.

type Mat = ArrayLike<number>;

export interface JointEmbeddingRef {
  loss: number;
  dz1: Float64Array;
  dz2: Float64Array;
}

/** z minus its per-column mean. */
function centered(z: Mat, n: number, d: number): Float64Array {
  const c = Float64Array.from(z);
  for (let j = 0; j < d; j++) {
    let m = 0;
    for (let i = 0; i < n; i++) m += z[i * d + j];
    m /= n;
    for (let i = 0; i < n; i++) c[i * d + j] -= m;
  }
  return c;
}

/** Σ_k a[k, i] · b[k, j] / divisor: [d, d]. */
function crossProduct(a: Float64Array, b: Float64Array, n: number, d: number, divisor: number): Float64Array {
  const c = new Float64Array(d * d);
  for (let i = 0; i < d; i++) {
    for (let j = 0; j < d; j++) {
      let s = 0;
      for (let k = 0; k < n; k++) s += a[k * d + i] * b[k * d + j];
      c[i * d + j] = s / divisor;
    }
  }
  return c;
}

/** u = (z − mean) / sqrt(biased var + eps) per column, and the column scales s. */
function batchNorm(z: Mat, n: number, d: number, eps: number): { u: Float64Array; s: Float64Array } {
  const u = centered(z, n, d);
  const s = new Float64Array(d);
  for (let j = 0; j < d; j++) {
    let v = 0;
    for (let i = 0; i < n; i++) v += u[i * d + j] ** 2;
    s[j] = Math.sqrt(v / n + eps);
    for (let i = 0; i < n; i++) u[i * d + j] /= s[j];
  }
  return { u, s };
}

/** Gradient through batchNorm given du: per column (du − mean(du) − u·mean(du·u)) / s. */
function batchNormGrad(
  u: Float64Array,
  s: Float64Array,
  du: Float64Array,
  n: number,
  d: number,
): Float64Array {
  const dz = new Float64Array(n * d);
  for (let j = 0; j < d; j++) {
    let mg = 0;
    let mgu = 0;
    for (let i = 0; i < n; i++) {
      mg += du[i * d + j];
      mgu += du[i * d + j] * u[i * d + j];
    }
    mg /= n;
    mgu /= n;
    for (let i = 0; i < n; i++) dz[i * d + j] = (du[i * d + j] - mg - u[i * d + j] * mgu) / s[j];
  }
  return dz;
}

/** lightly's BarlowTwinsLoss: views batch-normalised separately (biased variance, eps 1e-5). */
export function refBarlowTwins(z1: Mat, z2: Mat, n: number, d: number, lambda = 5e-3): JointEmbeddingRef {
  const a = batchNorm(z1, n, d, 1e-5);
  const b = batchNorm(z2, n, d, 1e-5);
  const c = crossProduct(a.u, b.u, n, d, n);
  let loss = 0;
  // g = dloss/dC.
  const g = new Float64Array(d * d);
  for (let i = 0; i < d; i++) {
    for (let j = 0; j < d; j++) {
      const x = c[i * d + j];
      if (i === j) {
        loss += (1 - x) ** 2;
        g[i * d + j] = 2 * (x - 1);
      } else {
        loss += lambda * x * x;
        g[i * d + j] = 2 * lambda * x;
      }
    }
  }
  // C = uaᵀub / N: dua = ub gᵀ / N, dub = ua g / N.
  const dua = new Float64Array(n * d);
  const dub = new Float64Array(n * d);
  for (let k = 0; k < n; k++) {
    for (let i = 0; i < d; i++) {
      let sa = 0;
      let sb = 0;
      for (let j = 0; j < d; j++) {
        sa += g[i * d + j] * b.u[k * d + j];
        sb += g[j * d + i] * a.u[k * d + j];
      }
      dua[k * d + i] = sa / n;
      dub[k * d + i] = sb / n;
    }
  }
  return { loss, dz1: batchNormGrad(a.u, a.s, dua, n, d), dz2: batchNormGrad(b.u, b.s, dub, n, d) };
}

export interface RefVICRegOptions {
  sim?: number;
  variance?: number;
  covariance?: number;
  eps?: number;
}

/**
 * One view's weighted regularisers of lightly's VICRegLoss, wv·relu-hinge on the std + wc·off-diagonal
 * covariance, added to `dz`; returns their value.
 */
function vicregView(
  z: Mat,
  n: number,
  d: number,
  wv: number,
  wc: number,
  eps: number,
  dz: Float64Array,
): number {
  const c = centered(z, n, d);
  const cov = crossProduct(c, c, n, d, n - 1);
  let value = 0;
  // h = dvalue/dcov (symmetric), so dc = 2 c h / (N − 1); centering passes it unchanged since Σ_k c[k, j] = 0.
  const h = new Float64Array(d * d);
  for (let i = 0; i < d; i++) {
    const std = Math.sqrt(cov[i * d + i] + eps);
    if (1 - std > 0) {
      value += (wv * (1 - std)) / d;
      h[i * d + i] = -wv / (d * 2 * std);
    }
    for (let j = 0; j < d; j++) {
      if (j === i) continue;
      value += (wc * cov[i * d + j] ** 2) / d;
      h[i * d + j] = (2 * wc * cov[i * d + j]) / d;
    }
  }
  for (let k = 0; k < n; k++) {
    for (let i = 0; i < d; i++) {
      let s = 0;
      for (let j = 0; j < d; j++) s += c[k * d + j] * h[j * d + i];
      dz[k * d + i] += (2 * s) / (n - 1);
    }
  }
  return value;
}

/** lightly's VICRegLoss: sim·mse + variance·½(v1 + v2) + covariance·(c1 + c2). */
export function refVICReg(
  z1: Mat,
  z2: Mat,
  n: number,
  d: number,
  options: RefVICRegOptions = {},
): JointEmbeddingRef {
  const { sim = 25, variance = 25, covariance = 1, eps = 1e-4 } = options;
  const dz1 = new Float64Array(n * d);
  const dz2 = new Float64Array(n * d);
  let loss = 0;
  for (let k = 0; k < n * d; k++) {
    const diff = z1[k] - z2[k];
    loss += (sim * diff * diff) / (n * d);
    dz1[k] = (2 * sim * diff) / (n * d);
    dz2[k] = -dz1[k];
  }
  loss += vicregView(z1, n, d, variance / 2, covariance, eps, dz1);
  loss += vicregView(z2, n, d, variance / 2, covariance, eps, dz2);
  return { loss, dz1, dz2 };
}

/** Row-wise softmax of (x − shift) / temp, [n, k] in float64, and its log (as x − max − log Σ: no log of 0). */
function softmaxRows(
  x: Mat,
  n: number,
  k: number,
  temp: number,
  shift: Mat | null = null,
): { p: Float64Array; logP: Float64Array } {
  const logP = Float64Array.from({ length: n * k }, (_, e) => (x[e] - (shift?.[e % k] ?? 0)) / temp);
  for (let i = 0; i < n; i++) {
    const row = logP.subarray(i * k, (i + 1) * k);
    const m = Math.max(...row);
    const lse = m + Math.log(row.reduce((s, v) => s + Math.exp(v - m), 0));
    for (let j = 0; j < k; j++) row[j] -= lse;
  }
  return { p: logP.map(Math.exp), logP };
}

/**
 * The cross-view cross-entropy over every pair (target t, student view v ≠ t): the mean over pairs and rows of
 * −Σ_j q_t log p_v, p_v = softmax(s_v / temp); the gradient of each pair's term to s_v is (p_v − q_t) / temp
 * (scaled by the mean), none to the targets.
 */
function refCrossView(
  q: Float64Array[],
  student: Mat[],
  n: number,
  k: number,
  temp: number,
): { loss: number; dStudent: Float64Array[] } {
  const p = student.map((s) => softmaxRows(s, n, k, temp));
  const dStudent = student.map(() => new Float64Array(n * k));
  const scale = 1 / (n * (q.length * student.length - q.length));
  let loss = 0;
  q.forEach((qt, t) => {
    p.forEach((pv, v) => {
      if (v === t) return;
      for (let e = 0; e < n * k; e++) {
        loss -= scale * qt[e] * pv.logP[e];
        dStudent[v][e] += scale * (pv.p[e] - qt[e]) / temp;
      }
    });
  });
  return { loss, dStudent };
}

/** DINO: targets q_t = softmax((t − center) / teacherTemp) against the student views at studentTemp. */
export function refDino(
  teacher: Mat[],
  student: Mat[],
  n: number,
  k: number,
  center: Mat,
  teacherTemp: number,
  studentTemp: number,
): { loss: number; dStudent: Float64Array[] } {
  const q = teacher.map((t) => softmaxRows(t, n, k, teacherTemp, center).p);
  return refCrossView(q, student, n, k, studentTemp);
}

/**
 * Sinkhorn-Knopp as lightly's `sinkhorn`, in its own [K, B] layout: Q = exp(scores / epsilon)ᵀ / Σ, then per
 * iteration rows (prototypes) to sum 1/K and columns (samples) to sum 1/B; returned ×B as [B, K].
 */
export function refSinkhorn(
  scores: Mat,
  n: number,
  k: number,
  iterations: number,
  epsilon: number,
): Float64Array {
  const q = new Float64Array(k * n);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < k; j++) q[j * n + i] = Math.exp(scores[i * k + j] / epsilon);
  }
  const total = q.reduce((s, v) => s + v, 0);
  for (let e = 0; e < k * n; e++) q[e] /= total;
  for (let it = 0; it < iterations; it++) {
    for (let j = 0; j < k; j++) {
      let s = 0;
      for (let i = 0; i < n; i++) s += q[j * n + i];
      for (let i = 0; i < n; i++) q[j * n + i] /= s * k;
    }
    for (let i = 0; i < n; i++) {
      let s = 0;
      for (let j = 0; j < k; j++) s += q[j * n + i];
      for (let j = 0; j < k; j++) q[j * n + i] /= s * n;
    }
  }
  return Float64Array.from({ length: n * k }, (_, e) => q[(e % k) * n + Math.floor(e / k)] * n);
}

/**
 * SwAV as lightly's SwaVLoss: each high-resolution view's codes (Sinkhorn over its scores, then its queue's
 * rows, the batch's kept) against every other view.
 */
export function refSwav(
  high: Mat[],
  low: Mat[],
  n: number,
  k: number,
  temperature: number,
  iterations: number,
  epsilon: number,
  queue: { rows: number; values: Mat[] } | null = null,
): { loss: number; dStudent: Float64Array[] } {
  const q = high.map((h, i) => {
    if (!queue) return refSinkhorn(h, n, k, iterations, epsilon);
    const rows = n + queue.rows;
    return refSinkhorn([...Array.from(h), ...Array.from(queue.values[i])], rows, k, iterations, epsilon)
      .slice(0, n * k);
  });
  return refCrossView(q, [...high, ...low], n, k, temperature);
}

/** DINO's center update: momentum·center + (1 − momentum)·(mean of every teacher row). */
export function refDinoCenter(
  center: Mat,
  teacher: Mat[],
  n: number,
  k: number,
  momentum: number,
): Float64Array {
  const out = Float64Array.from(center, (c) => momentum * c);
  for (const t of teacher) {
    for (let e = 0; e < n * k; e++) out[e % k] += (1 - momentum) * t[e] / (n * teacher.length);
  }
  return out;
}

/**
 * DINOv2's KoLeoLoss: rows normalised (eps), each row's nearest other row by inner product (the first of
 * equals), loss −mean log(‖x̂_i − x̂_j + eps‖ + eps); the gradient through both rows of each pair and the
 * normalisation.
 */
export function refKoleo(x: Mat, n: number, d: number, eps = 1e-8): { loss: number; dx: Float64Array } {
  const { u, norms } = unitRows(x, n, d, eps);
  const du = new Float64Array(n * d);
  let loss = 0;
  for (let i = 0; i < n; i++) {
    let nearest = -1;
    let best = -Infinity;
    for (let j = 0; j < n; j++) {
      if (j === i) continue;
      let dot = 0;
      for (let k = 0; k < d; k++) dot += u[i * d + k] * u[j * d + k];
      if (dot > best) [best, nearest] = [dot, j];
    }
    const gap = Array.from({ length: d }, (_, k) => u[i * d + k] - u[nearest * d + k] + eps);
    const r = Math.hypot(...gap);
    loss -= Math.log(r + eps) / n;
    // d/dgap of −log(r + eps)/n = −gap / (n·r·(r + eps)), into row i and, negated, its neighbour.
    for (let k = 0; k < d; k++) {
      const g = -gap[k] / (n * r * (r + eps));
      du[i * d + k] += g;
      du[nearest * d + k] -= g;
    }
  }
  return { loss, dx: unitRowsGrad(u, norms, du, n, d, eps) };
}

/** Wang & Isola's align_loss: mean ‖x_i − y_i‖^alpha, with its gradients (0 at a zero distance). */
export function refAlignment(x: Mat, y: Mat, n: number, d: number, alpha = 2): JointEmbeddingRef {
  let loss = 0;
  const dz1 = new Float64Array(n * d);
  const dz2 = new Float64Array(n * d);
  for (let i = 0; i < n; i++) {
    let s = 0;
    for (let k = 0; k < d; k++) s += (x[i * d + k] - y[i * d + k]) ** 2;
    loss += s ** (alpha / 2) / n;
    // d/dx ‖x − y‖^alpha = alpha ‖x − y‖^(alpha − 2) (x − y)
    const scale = s > 0 ? (alpha * s ** (alpha / 2 - 1)) / n : 0;
    for (let k = 0; k < d; k++) {
      dz1[i * d + k] = scale * (x[i * d + k] - y[i * d + k]);
      dz2[i * d + k] = -dz1[i * d + k];
    }
  }
  return { loss, dz1, dz2 };
}

/** Wang & Isola's uniform_loss: log mean_{i<j} exp(−t‖x_i − x_j‖²), with its gradient. */
export function refUniformity(x: Mat, n: number, d: number, t = 2): { loss: number; dx: Float64Array } {
  const e = new Float64Array(n * n);
  let total = 0;
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < n; j++) {
      if (i === j) continue;
      let s = 0;
      for (let k = 0; k < d; k++) s += (x[i * d + k] - x[j * d + k]) ** 2;
      e[i * n + j] = Math.exp(-t * s);
      if (i < j) total += e[i * n + j];
    }
  }
  // L = log Σ_{i<j} e_ij − log(pairs); dL/dx_i = Σ_{j≠i} e_ij · (−2t)(x_i − x_j) / Σ_{i<j} e_ij
  const dx = new Float64Array(n * d);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < n; j++) {
      if (i === j) continue;
      for (let k = 0; k < d; k++) {
        dx[i * d + k] += (e[i * n + j] * -2 * t * (x[i * d + k] - x[j * d + k])) / total;
      }
    }
  }
  return { loss: Math.log(total / ((n * (n - 1)) / 2)), dx };
}

/** Rows divided by max(‖row‖, eps) (F.normalize), with those divisors. */
function unitRows(x: Mat, rows: number, d: number, eps = 1e-12): { u: Float64Array; norms: Float64Array } {
  const u = Float64Array.from(x);
  const norms = new Float64Array(rows);
  for (let r = 0; r < rows; r++) {
    let s = 0;
    for (let j = 0; j < d; j++) s += u[r * d + j] ** 2;
    norms[r] = Math.max(Math.sqrt(s), eps);
    for (let j = 0; j < d; j++) u[r * d + j] /= norms[r];
  }
  return { u, norms };
}

/** du through F.normalize: (du − u (u·du)) / ‖x‖ per row, or du / eps where the norm was clamped to eps. */
function unitRowsGrad(
  u: Float64Array,
  norms: Float64Array,
  du: Float64Array,
  rows: number,
  d: number,
  eps = 1e-12,
): Float64Array {
  const dx = new Float64Array(rows * d);
  for (let r = 0; r < rows; r++) {
    let dot = 0;
    for (let j = 0; j < d; j++) dot += u[r * d + j] * du[r * d + j];
    const projected = norms[r] > eps ? dot : 0;
    for (let j = 0; j < d; j++) dx[r * d + j] = (du[r * d + j] - u[r * d + j] * projected) / norms[r];
  }
  return dx;
}

export interface RefMSNOptions {
  temperature?: number;
  targetSharpenTemperature?: number;
  sinkhornIterations?: number;
  regularizationWeight?: number;
  powerLawExponent?: number;
}

/**
 * lightly's MSNLoss (PMSNLoss with `powerLawExponent`) with its gradients to the anchors and prototypes. Row-softmaxes written out; Sinkhorn as
 * lightly's (transposed, divided by its total, then prototypes' and samples' sums in turn).
 */
export function refMsn(
  anchors: Mat,
  targets: Mat,
  prototypes: Mat,
  [rows, b, k, d]: [number, number, number, number],
  o: RefMSNOptions = {},
): { loss: number; dAnchors: Float64Array; dPrototypes: Float64Array } {
  const t = o.temperature ?? 0.1;
  const weight = o.regularizationWeight ?? 1;
  const a = unitRows(anchors, rows, d);
  const p = unitRows(prototypes, k, d);
  const tg = unitRows(targets, b, d).u;
  /** Row softmax of X·Pᵀ·scale for X [n, d]. */
  const probs = (x: Float64Array, n: number, scale: number) => {
    const q = new Float64Array(n * k);
    for (let r = 0; r < n; r++) {
      for (let c = 0; c < k; c++) {
        let s = 0;
        for (let j = 0; j < d; j++) s += x[r * d + j] * p.u[c * d + j];
        q[r * k + c] = s * scale;
      }
      const m = Math.max(...q.subarray(r * k, (r + 1) * k));
      let z = 0;
      for (let c = 0; c < k; c++) z += q[r * k + c] = Math.exp(q[r * k + c] - m);
      for (let c = 0; c < k; c++) q[r * k + c] /= z;
    }
    return q;
  };
  // Targets: softmax(s / t), sharpened (p^(1/t') renormalised), then Sinkhorn.
  const sharp = probs(tg, b, 1 / t).map((v) => v ** (1 / (o.targetSharpenTemperature ?? 0.25)));
  for (let r = 0; r < b; r++) {
    const z = sharp.subarray(r * k, (r + 1) * k).reduce((x, y) => x + y, 0);
    for (let c = 0; c < k; c++) sharp[r * k + c] /= z;
  }
  const iterations = o.sinkhornIterations ?? 3;
  let target = sharp;
  if (iterations > 0) {
    const total = sharp.reduce((x, y) => x + y, 0);
    const q = sharp.map((v) => v / total);
    for (let it = 0; it < iterations; it++) {
      for (let c = 0; c < k; c++) {
        let s = 0;
        for (let r = 0; r < b; r++) s += q[r * k + c];
        for (let r = 0; r < b; r++) q[r * k + c] /= s * k;
      }
      for (let r = 0; r < b; r++) {
        let s = 0;
        for (let c = 0; c < k; c++) s += q[r * k + c];
        for (let c = 0; c < k; c++) q[r * k + c] /= s * b;
      }
    }
    target = q.map((v) => v * b);
  }
  const q = probs(a.u, rows, 1 / t);
  const mean = new Float64Array(k);
  for (let r = 0; r < rows; r++) for (let c = 0; c < k; c++) mean[c] += q[r * k + c] / rows;
  let loss = 0;
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < k; c++) loss -= (target[(r % b) * k + c] * Math.log(q[r * k + c])) / rows;
  }
  // PMSN's prior: q_c ∝ (c + 1)^−exponent.
  const power = Array.from({ length: k }, (_, c) => (c + 1) ** -(o.powerLawExponent ?? 0));
  const prior = power.map((v) => v / power.reduce((x, y) => x + y, 0));
  const pmsn = o.powerLawExponent !== undefined;
  if (weight > 0) {
    loss += weight *
      (pmsn
        ? prior.reduce((s, q, c) => s + q * (Math.log(q) - Math.log(mean[c])), 0)
        : mean.reduce((s, v) => s + v * Math.log(v), 0) + Math.log(k));
  }
  // d/dp̄_c of the regulariser: log p̄_c + 1 (MSN) or −q_c / p̄_c (PMSN).
  const dMean = Array.from(mean, (v, c) => (pmsn ? -prior[c] / v : Math.log(v) + 1));
  // d/dlogits: cross-entropy (q·Σt − t) / rows; the regulariser through q: dq_c = w · dMean_c / rows.
  const dLogits = new Float64Array(rows * k);
  for (let r = 0; r < rows; r++) {
    let tsum = 0;
    let qdq = 0;
    for (let c = 0; c < k; c++) {
      tsum += target[(r % b) * k + c];
      if (weight > 0) qdq += q[r * k + c] * weight * dMean[c] / rows;
    }
    for (let c = 0; c < k; c++) {
      const dq = weight > 0 ? weight * dMean[c] / rows : 0;
      dLogits[r * k + c] = (q[r * k + c] * tsum - target[(r % b) * k + c]) / rows + q[r * k + c] * (dq - qdq);
    }
  }
  const dA = new Float64Array(rows * d);
  const dP = new Float64Array(k * d);
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < k; c++) {
      const g = dLogits[r * k + c] / t;
      for (let j = 0; j < d; j++) {
        dA[r * d + j] += g * p.u[c * d + j];
        dP[c * d + j] += g * a.u[r * d + j];
      }
    }
  }
  return {
    loss,
    dAnchors: unitRowsGrad(a.u, a.norms, dA, rows, d),
    dPrototypes: unitRowsGrad(p.u, p.norms, dP, k, d),
  };
}

/**
 * lightly's TiCoLoss on z_a, z_b [n, d] with the covariance estimate c [d, d] (symmetric): the loss, its
 * gradients (through B = aᵀa / n, not c) and the next estimate C' = β·c + (1 − β)·B.
 */
export function refTiCo(
  za: Mat,
  zb: Mat,
  c: Mat,
  n: number,
  d: number,
  beta = 0.9,
  rho = 20,
): { loss: number; dza: Float64Array; dzb: Float64Array; next: Float64Array } {
  const a = unitRows(za, n, d);
  const b = unitRows(zb, n, d);
  const batch = new Float64Array(d * d);
  for (let i = 0; i < n; i++) {
    for (let p = 0; p < d; p++) {
      for (let q = 0; q < d; q++) batch[p * d + q] += (a.u[i * d + p] * a.u[i * d + q]) / n;
    }
  }
  const next = Float64Array.from(batch, (v, e) => beta * c[e] + (1 - beta) * v);
  let loss = 1;
  const da = new Float64Array(n * d);
  const db = new Float64Array(n * d);
  for (let i = 0; i < n; i++) {
    for (let p = 0; p < d; p++) {
      let cu = 0; // (C' a_i)_p
      let bu = 0; // (B a_i)_p
      for (let q = 0; q < d; q++) {
        cu += next[p * d + q] * a.u[i * d + q];
        bu += batch[p * d + q] * a.u[i * d + q];
      }
      loss += (-a.u[i * d + p] * b.u[i * d + p] + rho * a.u[i * d + p] * cu) / n;
      // d/da_i: −b_i / n + 2ρ C' a_i / n + (through B) 2ρ (1 − β) B a_i / n
      da[i * d + p] = (-b.u[i * d + p] + 2 * rho * cu + 2 * rho * (1 - beta) * bu) / n;
      db[i * d + p] = -a.u[i * d + p] / n;
    }
  }
  return {
    loss,
    dza: unitRowsGrad(a.u, a.norms, da, n, d),
    dzb: unitRowsGrad(b.u, b.norms, db, n, d),
    next,
  };
}

/** lightly's HypersphereLoss: alignment of the normalised views plus lam × their mean uniformity. */
export function refHypersphere(
  za: Mat,
  zb: Mat,
  n: number,
  d: number,
  t = 1,
  lam = 1,
  alpha = 2,
): JointEmbeddingRef {
  const x = unitRows(za, n, d);
  const y = unitRows(zb, n, d);
  const align = refAlignment(x.u, y.u, n, d, alpha);
  const ux = refUniformity(x.u, n, d, t);
  const uy = refUniformity(y.u, n, d, t);
  const dx = align.dz1.map((v, i) => v + (lam / 2) * ux.dx[i]);
  const dy = align.dz2.map((v, i) => v + (lam / 2) * uy.dx[i]);
  return {
    loss: align.loss + (lam / 2) * (ux.loss + uy.loss),
    dz1: unitRowsGrad(x.u, x.norms, dx, n, d),
    dz2: unitRowsGrad(y.u, y.norms, dy, n, d),
  };
}
