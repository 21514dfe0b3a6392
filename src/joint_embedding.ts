// Joint-embedding losses without negatives, composed from GPU ops (elementwise, reduce, matmul) that autograd
// differentiates; CPU reference in src/ref/joint_embedding.ts. The cross-view cross-entropies of DINO (against
// a centred, sharpened teacher) and SwAV (against Sinkhorn codes), and the redundancy-reduction losses Barlow
// Twins and VICReg. The latter two need
// Σ_ij (aᵀb)_ij² for a, b [N, D]: it equals Σ_kl (aaᵀ)_kl (bbᵀ)_kl, so when N < D the N × N Gram matrices are
// formed instead of the D × D one (live memory O(N·D + min(N, D)²)); diagonals come from columnwise dot
// products, never from a D × D mask.
// Semantics follow lightly 1.5.x's losses (after lightly-ai/lightly#1806, Feb 2025): see each function.
import { composed, noGrad } from "./autograd.ts";
import {
  add,
  checkF32,
  div,
  equal,
  exp,
  log,
  maximum,
  mul,
  neg,
  pow,
  relu,
  sqrt,
  square,
  sub,
} from "./elementwise.ts";
import { embedding } from "./gather.ts";
import { matmul } from "./matmul.ts";
import { emaUpdate } from "./optim.ts";
import { normalize } from "./nn.ts";
import { argmax, logSoftmax, logsumexp, mean, softmax, sum } from "./reduce.ts";
import { concat, reshape, slice } from "./shape.ts";
import { checkOptions, fmtShape, ShapeError } from "./errors.ts";
import { checkEngine, sameShape, type Tensor } from "./tensor.ts";
import type { Engine } from "./engine.ts";

/** F.batch_norm's default eps, which lightly's BarlowTwinsLoss standardises with. */
const BATCH_NORM_EPS = 1e-5;

/** [n, n] with `value` on the diagonal and 0 elsewhere (row id = column id), outside the graph. */
function diagonal(engine: Engine, n: number, value: number): Tensor {
  return noGrad(() =>
    engine.tidy(() => {
      const ids = engine.tensor(Float32Array.from({ length: n }, (_, i) => i), [n, 1]);
      return mul(equal(ids, reshape(ids, [1, n])), value);
    })
  );
}

/** Validates two views [N, D] of equal shape with N ≥ 2; returns [N, D]. */
function checkViews(op: string, z1: Tensor, z2: Tensor): [number, number] {
  for (const [name, z] of [["z1", z1], ["z2", z2]] as const) {
    checkF32(op, z);
    if (z.shape.length !== 2) {
      throw new ShapeError(`${op}: ${name} must be 2-D [N, D], got ${fmtShape(z.shape)}`);
    }
  }
  checkEngine(op, z1, z2);
  if (z1.shape[0] !== z2.shape[0] || z1.shape[1] !== z2.shape[1]) {
    throw new ShapeError(`${op}: z1 ${fmtShape(z1.shape)} and z2 ${fmtShape(z2.shape)} differ in shape`);
  }
  const [n, dim] = z1.shape;
  if (n < 2) {
    throw new ShapeError(
      `${op}: needs a batch of at least 2 rows to estimate per-feature variance, got z1 ${
        fmtShape(z1.shape)
      }`,
    );
  }
  return [n, dim];
}

/** A RangeError unless `value` is a finite number ≥ 0 (> 0 with `positive`). */
function checkNonNegative(op: string, name: string, value: number, positive = false): number {
  if (!(positive ? value > 0 : value >= 0) || !Number.isFinite(value)) {
    throw new RangeError(`${op}: ${name} must be a finite number ${positive ? ">" : "≥"} 0, got ${value}`);
  }
  return value;
}

/** z minus its per-feature mean over the batch. */
function center(z: Tensor, keep: (t: Tensor) => Tensor): Tensor {
  return keep(sub(z, keep(mean(z, 0, { keepDims: true }))));
}

/**
 * Σ_{i≠j} (aᵀb)_ij² for a, b [N, D], through the smaller Gram side. With N ≥ D the D × D product with its
 * diagonal masked out: less Σ_i (aᵀb)_ii² instead, f32 would lose the small off-diagonal sum of near-identical
 * views beside a diagonal near N² each (3e-4 relative at N = 4,096, D = 4). With N < D the N × N Gram products
 * give Σ_ij, less the diagonal's squares; there the off-diagonal terms outnumber the diagonal's by D.
 */
function sumSquaredOffDiagonal(a: Tensor, b: Tensor, keep: (t: Tensor) => Tensor): Tensor {
  const [n, dim] = a.shape;
  if (n >= dim) {
    const offDiagonal = keep(sub(1, keep(diagonal(a.engine, dim, 1))));
    return keep(sum(keep(square(keep(mul(keep(matmul(a, b, { transA: true })), offDiagonal))))));
  }
  const ga = keep(matmul(a, a, { transB: true }));
  const both = keep(a === b ? square(ga) : mul(ga, keep(matmul(b, b, { transB: true }))));
  const onDiagonal = keep(sum(keep(square(keep(sum(keep(mul(a, b)), 0))))));
  return keep(sub(keep(sum(both)), onDiagonal));
}

export interface BarlowTwinsOptions {
  /** Weight of the off-diagonal (redundancy) term (default 5e-3); must be ≥ 0. */
  lambda?: number;
}

/**
 * Barlow Twins (Zbontar et al. 2021) as lightly's BarlowTwinsLoss since lightly-ai/lightly#1806: each view
 * standardised per feature over the batch on its own, as F.batch_norm in training mode does it (biased
 * variance, eps 1e-5 under the square root); C = z1ᵀz2 / N [D, D];
 * loss = Σ_i (1 − C_ii)² + λ Σ_{i≠j} C_ij². z1, z2: [N, D], N ≥ 2. (Earlier lightly divided by the unbiased
 * z.std(0) without eps, then briefly batch-normalised both views together, which broke affine invariance.)
 */
export function barlowTwins(z1: Tensor, z2: Tensor, options: BarlowTwinsOptions = {}): Tensor {
  checkOptions("barlowTwins", options, { lambda: true });
  const op = "barlowTwins";
  const [n] = checkViews(op, z1, z2);
  const lambda = checkNonNegative(op, "lambda", options.lambda ?? 5e-3);
  return composed((keep) => {
    const standardize = (z: Tensor) => {
      const c = center(z, keep);
      const variance = keep(mean(keep(square(c)), 0, { keepDims: true }));
      return keep(div(c, keep(sqrt(keep(add(variance, BATCH_NORM_EPS))))));
    };
    const u1 = standardize(z1);
    const u2 = standardize(z2);
    const diag = keep(mean(keep(mul(u1, u2)), 0));
    const onDiag = keep(sum(keep(square(keep(sub(1, diag))))));
    const offDiag = keep(mul(sumSquaredOffDiagonal(u1, u2, keep), 1 / (n * n)));
    return add(onDiag, keep(mul(offDiag, lambda)));
  });
}

export interface VICRegOptions {
  /** Weight of the invariance (MSE) term, lightly's lambda_param (default 25); must be ≥ 0. */
  sim?: number;
  /** Weight of the variance term, lightly's mu_param (default 25); must be ≥ 0. */
  variance?: number;
  /** Weight of the covariance term, lightly's nu_param (default 1); must be ≥ 0. */
  covariance?: number;
  /** Added to the variance under the square root (default 1e-4); must be ≥ 0. */
  eps?: number;
}

/**
 * VICReg (Bardes et al. 2022) as lightly's VICRegLoss (lightly 1.5.x, the version with gather_distributed and eps):
 * sim·mse(z1, z2) + variance·½(v(z1) + v(z2)) + covariance·(c(z1) + c(z2)), where v(z) is the mean over
 * features of relu(1 − sqrt(var + eps)) with the unbiased variance over the batch, and c(z) = Σ_{i≠j} cov_ij² / D
 * with cov = (z − mean)ᵀ(z − mean) / (N − 1). z1, z2: [N, D], N ≥ 2.
 */
export function vicreg(z1: Tensor, z2: Tensor, options: VICRegOptions = {}): Tensor {
  checkOptions("vicreg", options, { sim: true, variance: true, covariance: true, eps: true });
  const op = "vicreg";
  const [n, dim] = checkViews(op, z1, z2);
  const sim = checkNonNegative(op, "sim", options.sim ?? 25);
  const varWeight = checkNonNegative(op, "variance", options.variance ?? 25);
  const covWeight = checkNonNegative(op, "covariance", options.covariance ?? 1);
  const eps = checkNonNegative(op, "eps", options.eps ?? 1e-4);
  return composed((keep) => {
    const invariance = keep(mean(keep(square(keep(sub(z1, z2))))));
    // Each view's variance and covariance terms, already weighted: variance/2 · v(z) + covariance · c(z).
    const regularizers = (z: Tensor) => {
      const c = center(z, keep);
      const variance = keep(mul(keep(sum(keep(square(c)), 0)), 1 / (n - 1)));
      const std = keep(sqrt(keep(add(variance, eps))));
      const v = keep(mean(keep(relu(keep(sub(1, std))))));
      const offDiag = keep(mul(sumSquaredOffDiagonal(c, c, keep), 1 / ((n - 1) * (n - 1))));
      return keep(add(keep(mul(v, varWeight / 2)), keep(mul(offDiag, covWeight / dim))));
    };
    const both = keep(add(regularizers(z1), regularizers(z2)));
    return add(keep(mul(invariance, sim)), both);
  });
}

export interface KoLeoOptions {
  /** F.normalize's and PairwiseDistance's eps (default 1e-8, as DINOv2's). */
  eps?: number;
}

/**
 * DINOv2's KoLeo regulariser (Sablayrolles et al. 2019; facebookresearch/dinov2's KoLeoLoss), which spreads a
 * batch over the sphere: rows of x [N, D] L2-normalised, each row's nearest other row by inner product (its
 * own left out, the first of equals), and −mean log(‖x̂_i − x̂_nn(i) + eps‖ + eps). The choice of neighbours
 * passes no gradient; both rows of each pair get theirs.
 */
export function koleo(x: Tensor, options: KoLeoOptions = {}): Tensor {
  checkOptions("koleo", options, { eps: true });
  const op = "koleo";
  const [n] = checkSameViews(op, [["x", x]]);
  if (n < 2) {
    throw new RangeError(`${op}: needs at least 2 rows to find neighbours, got ${fmtShape(x.shape)}`);
  }
  const eps = checkNonNegative(op, "eps", options.eps ?? 1e-8);
  return composed((keep) => {
    const unit = keep(normalize(x, { eps }));
    // Inner products with the diagonal lowered by 2 (DINOv2 sets it to −1).
    const nearest = keep(
      noGrad(() =>
        x.engine.tidy(() => argmax(sub(matmul(unit, unit, { transB: true }), diagonal(x.engine, n, 2)), 1))
      ),
    );
    const gap = keep(add(keep(sub(unit, keep(embedding(nearest, unit)))), eps));
    const distance = keep(sqrt(keep(sum(keep(square(gap)), 1))));
    return neg(keep(mean(keep(log(keep(add(distance, eps)))))));
  });
}

/**
 * Wang & Isola's alignment (2020, their `align_loss`): mean_i ‖x_i − y_i‖^alpha over positive pairs, rows
 * [N, D] of two views as given (their features are normalised first). Lower is better aligned. At alpha < 2 a
 * zero distance gets gradient 0 (its squared distance is floored at 1e-30), as PyTorch's norm gives.
 */
export function alignment(x: Tensor, y: Tensor, options: { alpha?: number } = {}): Tensor {
  checkOptions("alignment", options, { alpha: true });
  const op = "alignment";
  checkSameViews(op, [["x", x], ["y", y]]);
  const alpha = checkNonNegative(op, "alpha", options.alpha ?? 2, true);
  return composed((keep) => {
    const squared = keep(sum(keep(square(keep(sub(x, y)))), 1));
    const powered = alpha === 2 ? squared : keep(pow(keep(maximum(squared, 1e-30)), alpha / 2));
    return mean(powered);
  });
}

/**
 * Wang & Isola's uniformity (2020, their `uniform_loss`): log mean_{i<j} exp(−t‖x_i − x_j‖²) over the rows of
 * x [N, D], N ≥ 2 (their features are normalised first). Lower is more uniform on the sphere. Forms the N × N
 * squared distances (from the Gram matrix), so its memory is O(N²).
 */
export function uniformity(x: Tensor, options: { t?: number } = {}): Tensor {
  checkOptions("uniformity", options, { t: true });
  const op = "uniformity";
  const [n] = checkSameViews(op, [["x", x]]);
  if (n < 2) throw new RangeError(`${op}: needs at least 2 rows to form pairs, got ${fmtShape(x.shape)}`);
  const t = checkNonNegative(op, "t", options.t ?? 2, true);
  return composed((keep) => {
    const norms = keep(sum(keep(square(x)), 1, { keepDims: true }));
    const gram = keep(matmul(x, x, { transB: true }));
    // ‖x_i − x_j‖² = ‖x_i‖² + ‖x_j‖² − 2 x_i·x_j, each pair twice over i ≠ j: the diagonal pushed to −∞ in exp.
    const squared = keep(sub(keep(add(norms, keep(reshape(norms, [1, n])))), keep(mul(gram, 2))));
    const logits = keep(sub(keep(mul(squared, -t)), keep(diagonal(x.engine, n, 1e30))));
    return sub(keep(logsumexp(logits)), Math.log(n * (n - 1)));
  });
}

export interface HypersphereOptions {
  /** uniformity's t (default 1, as lightly's). */
  t?: number;
  /** Weight of the uniformity term (default 1). */
  lam?: number;
  /** alignment's alpha (default 2). */
  alpha?: number;
}

/**
 * lightly's HypersphereLoss (Wang & Isola 2020): both views L2-normalised, alignment(x̂, ŷ) +
 * lam·(uniformity(x̂) + uniformity(ŷ)) / 2.
 */
export function hypersphere(za: Tensor, zb: Tensor, options: HypersphereOptions = {}): Tensor {
  checkOptions("hypersphere", options, { t: true, lam: true, alpha: true });
  const op = "hypersphere";
  checkSameViews(op, [["za", za], ["zb", zb]]);
  const lam = checkNonNegative(op, "lam", options.lam ?? 1);
  return composed((keep) => {
    const x = keep(normalize(za));
    const y = keep(normalize(zb));
    const align = keep(alignment(x, y, { alpha: options.alpha ?? 2 }));
    const uniform = keep(
      add(keep(uniformity(x, { t: options.t ?? 1 })), keep(uniformity(y, { t: options.t ?? 1 }))),
    );
    return add(align, keep(mul(uniform, lam / 2)));
  });
}

export interface TiCoOptions {
  /** The covariance estimate C [D, D] (zeros at first, as lightly's), made C' in place unless `update` is false. */
  covariance: Tensor;
  /** Momentum of the covariance estimate (default 0.9), in [0, 1]. */
  beta?: number;
  /** Weight of the covariance term (default 20). */
  rho?: number;
  /** Replace C by C' after forming the loss (default true), as lightly's forward does. */
  update?: boolean;
}

/**
 * TiCo (Zhu et al. 2022) as lightly's TiCoLoss: z_a, z_b [N, D] L2-normalised, B = z_aᵀz_a / N, C' = β·C +
 * (1 − β)·B, and the loss 1 − mean_i z_a,i·z_b,i + ρ·mean_i z_a,iᵀ C' z_a,i; its gradient reaches z_a (also
 * through B) and z_b, not the earlier estimate C.
 */
export function tico(za: Tensor, zb: Tensor, options: TiCoOptions): Tensor {
  checkOptions("tico", options, { covariance: true, beta: true, rho: true, update: true });
  const op = "tico";
  const [n, d] = checkSameViews(op, [["za", za], ["zb", zb]]);
  const c = options?.covariance;
  if (c === undefined) {
    throw new TypeError(
      `${op}: needs options.covariance, the running [${d}, ${d}] covariance (engine.zeros to start)`,
    );
  }
  checkF32(op, c);
  if (c.engine !== za.engine) throw new Error(`${op}: covariance and views belong to different engines`);
  if (c.shape.length !== 2 || c.shape[0] !== d || c.shape[1] !== d) {
    throw new ShapeError(
      `${op}: covariance ${fmtShape(c.shape)} must be [${d}, ${d}] for za ${fmtShape(za.shape)}`,
    );
  }
  const beta = checkNonNegative(op, "beta", options.beta ?? 0.9);
  if (beta > 1) throw new RangeError(`${op}: beta must be in [0, 1], got ${beta}`);
  const rho = checkNonNegative(op, "rho", options.rho ?? 20);
  return composed((keep) => {
    const a = keep(normalize(za));
    const b = keep(normalize(zb));
    const batchCovariance = keep(mul(keep(matmul(a, a, { transA: true })), 1 / n));
    const mixed = keep(add(keep(mul(c, beta)), keep(mul(batchCovariance, 1 - beta))));
    const agreement = keep(mean(keep(sum(keep(mul(a, b)), 1))));
    const spread = keep(mean(keep(sum(keep(mul(keep(matmul(a, mixed)), a)), 1))));
    const loss = add(keep(sub(1, agreement)), keep(mul(spread, rho)));
    // C ← β·C + (1 − β)·B = C', recorded after the loss, so the loss read the earlier C.
    if (options.update !== false) emaUpdate([c], [batchCovariance], { momentum: beta });
    return loss;
  });
}

export interface DinoOptions {
  /** The running center of the teacher's logits, [K]; `dinoCenter` updates it after each step. */
  center: Tensor;
  /** Sharpens the teacher (default 0.04, DINO's and lightly's; the paper also warms it up to 0.07); must be > 0. */
  teacherTemp?: number;
  /** Default 0.1; must be > 0. */
  studentTemp?: number;
}

/** Validates views that must all be f32 [B, K] like the first; returns [B, K]. */
function checkSameViews(op: string, views: readonly (readonly [string, Tensor])[]): [number, number] {
  const [firstName, first] = views[0];
  for (const [name, t] of views) {
    checkF32(`${op}: ${name}`, t);
    if (t.shape.length !== 2 || !sameShape(t.shape, first.shape)) {
      throw new ShapeError(
        `${op}: ${name} ${fmtShape(t.shape)} is not [B, K] like ${firstName} ${fmtShape(first.shape)}`,
      );
    }
    checkEngine(op, first, t);
  }
  return [first.shape[0], first.shape[1]];
}

const named = (what: string, views: readonly Tensor[]) => views.map((t, i) => [`${what}[${i}]`, t] as const);

/** A [K] center of the views' engine (`view`: one of them). */
function checkCenter(op: string, center: Tensor, k: number, view: Tensor): void {
  checkF32(`${op}: center`, center);
  if (center.engine !== view.engine) throw new Error(`${op}: center and views belong to different engines`);
  if (!sameShape(center.shape, [k])) {
    throw new ShapeError(
      `${op}: center ${fmtShape(center.shape)} must be [${k}], one value per column of the views`,
    );
  }
}

/**
 * The cross-view cross-entropy DINO and SwAV share: targets q_t (no gradient; q_t belongs to student view t),
 * student views s_v; the mean over every pair (t, v ≠ t) and the batch of −Σ_k q_t · log_softmax(s_v / temp).
 * Each student view is matched against the sum of the targets but its own, summed directly (a total minus q_v
 * would cancel, and lose small probabilities to the rounding of the total).
 */
function crossViewEntropy(
  q: readonly Tensor[],
  student: readonly Tensor[],
  temp: number,
  keep: (t: Tensor) => Tensor,
): Tensor {
  const [b] = student[0].shape;
  const pairs = q.length * student.length - q.length;
  const against = (v: number) => {
    const others = q.filter((_, t) => t !== v);
    if (others.length === 0) return null; // the single target's own view
    return noGrad(() => others.slice(1).reduce((acc, x) => keep(add(acc, x)), others[0]));
  };
  const all = against(-1)!;
  const terms = student.flatMap((s, v) => {
    const w = v < q.length ? against(v) : all;
    if (!w) return [];
    return [keep(sum(keep(mul(w, keep(logSoftmax(keep(mul(s, 1 / temp))))))))];
  });
  const total = terms.slice(1).reduce((acc, x) => keep(add(acc, x)), terms[0]);
  return mul(total, -1 / (b * pairs));
}

/** Target views first, then at least as many student views (the targets' own first), 2 or more. */
function checkViewCounts(op: string, targets: number, student: number, what: string): void {
  if (targets === 0 || student < Math.max(2, targets)) {
    throw new RangeError(
      `${op}: needs ${what} views and at least as many student views (the ${what}'s first), 2 or more: got ` +
        `${targets} ${what} and ${student} student views`,
    );
  }
}

/**
 * DINO's self-distillation loss (Caron et al. 2021) as facebookresearch/dino's DINOLoss. Each teacher view t
 * [B, K] (the global crops) is centred and sharpened, q_t = softmax((t − center) / teacherTemp), and passes no
 * gradient; each student view s_v [B, K] (the same global crops first, in the teacher's order, then the local
 * crops) is matched against every teacher view but its own: the loss is the mean over those (t, v) pairs and the
 * batch of −Σ_k q_t · log_softmax(s_v / studentTemp).
 */
export function dino(teacher: readonly Tensor[], student: readonly Tensor[], options: DinoOptions): Tensor {
  checkOptions("dino", options, { center: true, teacherTemp: true, studentTemp: true }, true);
  const op = "dino";
  checkViewCounts(op, teacher.length, student.length, "teacher");
  const [, k] = checkSameViews(op, [...named("teacher", teacher), ...named("student", student)]);
  checkCenter(op, options.center, k, teacher[0]);
  const teacherTemp = checkNonNegative(op, "teacherTemp", options.teacherTemp ?? 0.04, true);
  const studentTemp = checkNonNegative(op, "studentTemp", options.studentTemp ?? 0.1, true);
  return composed((keep) => {
    const q = noGrad(() =>
      teacher.map((t) => {
        const centred = keep(sub(t, options.center));
        return keep(softmax(keep(mul(centred, 1 / teacherTemp))));
      })
    );
    return crossViewEntropy(q, student, studentTemp, keep);
  });
}

export interface SinkhornOptions {
  /** Alternating normalisations (default 3). */
  iterations?: number;
  /** Entropic regularisation: scores are divided by it before exp (default 0.05); must be > 0. */
  epsilon?: number;
}

/**
 * SwAV's Sinkhorn-Knopp codes for prototype scores [B, K] (lightly's `sinkhorn`): Q = exp(scores / epsilon),
 * then `iterations` times each prototype's column scaled to sum 1/K and each sample's row to sum 1/B; returned
 * times B, so each row sums to 1. No gradient. The normalisations run on log Q (subtracting log-sum-exps), so
 * no score overflows and none underflows before its column is balanced: a prototype whose every score is far
 * below the others still gets its 1/K, as in exact arithmetic (in f32 exp() it would be a column of zeros).
 */
export function sinkhorn(scores: Tensor, options: SinkhornOptions = {}): Tensor {
  checkOptions("sinkhorn", options, { iterations: true, epsilon: true });
  const op = "sinkhorn";
  const [b, k] = checkSameViews(op, [["scores", scores]]);
  const iterations = options.iterations ?? 3;
  if (!(Number.isInteger(iterations) && iterations >= 0)) {
    throw new RangeError(`${op}: iterations must be an integer ≥ 0, got ${iterations}`);
  }
  const epsilon = checkNonNegative(op, "epsilon", options.epsilon ?? 0.05, true);
  const engine = scores.engine;
  return noGrad(() => {
    let logQ = mul(scores, 1 / epsilon);
    try {
      // Divides Q by its sums along `axis` (all when undefined) and multiplies it by `scale`, in log space. Each
      // step frees the last: memory stays a few [B, K] whatever the iterations.
      const normalize = (axis: number | undefined, scale: number) => {
        const next = engine.tidy(() =>
          sub(logQ, sub(logsumexp(logQ, axis, { keepDims: true }), Math.log(scale)))
        );
        logQ.dispose();
        logQ = next;
      };
      normalize(undefined, 1);
      for (let i = 0; i < iterations; i++) {
        normalize(0, 1 / k);
        normalize(1, 1 / b);
      }
      return engine.tidy(() => mul(exp(logQ), b));
    } finally {
      logQ.dispose();
    }
  });
}

export interface SwavOptions {
  /** Divides the student scores (default 0.1); must be > 0. */
  temperature?: number;
  /** Sinkhorn's iterations and epsilon (defaults 3 and 0.05). */
  sinkhorn?: SinkhornOptions;
  /** Per high-resolution view, queued scores [Q, K] of earlier batches, added to its Sinkhorn problem. */
  queue?: readonly Tensor[];
}

/**
 * SwAV's swapped prediction loss (Caron et al. 2020) as lightly's SwaVLoss: each high-resolution view's prototype
 * scores [B, K] give codes q_i = sinkhorn(scores) (over the scores and, with `queue`, that view's queued scores,
 * the codes of the batch kept; no gradient), and every other view, high or low resolution, predicts them:
 * the mean over those pairs and the batch of −Σ_k q_i · log_softmax(s_v / temperature).
 */
export function swav(
  high: readonly Tensor[],
  low: readonly Tensor[] = [],
  options: SwavOptions = {},
): Tensor {
  checkOptions("swav", options, { temperature: true, sinkhorn: true, queue: true });
  const op = "swav";
  const student = [...high, ...low];
  checkViewCounts(op, high.length, student.length, "high-resolution");
  const [b, k] = checkSameViews(op, [...named("high", high), ...named("low", low)]);
  const temperature = checkNonNegative(op, "temperature", options.temperature ?? 0.1, true);
  const queue = options.queue;
  if (queue) {
    if (queue.length !== high.length) {
      throw new RangeError(`${op}: ${queue.length} queues for ${high.length} high-resolution views`);
    }
    queue.forEach((x, i) => {
      checkF32(`${op}: queue[${i}]`, x);
      if (x.engine !== high[0].engine) {
        throw new Error(`${op}: queue[${i}] and views belong to different engines`);
      }
      if (x.shape.length !== 2 || x.shape[1] !== k) {
        throw new ShapeError(
          `${op}: queue[${i}] ${fmtShape(x.shape)} is not [Q, ${k}] like high[0] [${b}, ${k}]`,
        );
      }
    });
  }
  return composed((keep) => {
    const q = noGrad(() =>
      high.map((h, i) => {
        if (!queue) return keep(sinkhorn(h, options.sinkhorn));
        const codes = keep(sinkhorn(keep(concat([h, queue[i]], 0)), options.sinkhorn));
        return keep(slice(codes, [0, 0], [b, k]));
      })
    );
    return crossViewEntropy(q, student, temperature, keep);
  });
}

export interface MSNOptions {
  /** Divides the anchor–prototype cosines (default 0.1); must be > 0. */
  temperature?: number;
  /** Sharpens the target probabilities, p^(1/t) renormalised (default 0.25); must be > 0. */
  targetSharpenTemperature?: number;
  /** Sinkhorn iterations on the sharpened targets (default 3; 0 leaves them as they are). */
  sinkhornIterations?: number;
  /** Weight of the regulariser on the mean anchor probability p̄ (default 1; 0 leaves it out). */
  regularizationWeight?: number;
  /**
   * PMSN (Assran et al. 2022, "prior matching"; lightly's PMSNLoss): the regulariser is KL(q ‖ p̄) for the power
   * law q_k ∝ k^−exponent, k = 1 … K, instead of MSN's log K − H(p̄).
   */
  powerLawExponent?: number;
}

/**
 * The Masked Siamese Networks loss (Assran et al. 2022) as lightly's MSNLoss: anchors [B·V, D] (V views of the
 * batch, view-major), targets [B, D] and prototypes [K, D] L2-normalised; anchor probabilities
 * softmax(a·pᵀ / temperature); target probabilities the same of the targets, sharpened and balanced by Sinkhorn
 * (no gradient) and repeated for each view; the loss is the mean cross-entropy plus regularizationWeight ×
 * (log K − the entropy of the mean anchor probability p̄), or with `powerLawExponent` × KL(power law ‖ p̄) as
 * PMSN. The gradient reaches anchors and prototypes.
 */
export function msn(anchors: Tensor, targets: Tensor, prototypes: Tensor, options: MSNOptions = {}): Tensor {
  checkOptions("msn", options, {
    temperature: true,
    targetSharpenTemperature: true,
    sinkhornIterations: true,
    regularizationWeight: true,
    powerLawExponent: true,
  });
  const op = "msn";
  for (const [name, t] of [["anchors", anchors], ["targets", targets], ["prototypes", prototypes]] as const) {
    checkF32(op, t);
    if (t.shape.length !== 2) throw new ShapeError(`${op}: ${name} must be 2-D, got ${fmtShape(t.shape)}`);
    checkEngine(op, anchors, t);
  }
  const [rows, d] = anchors.shape;
  const [b] = targets.shape;
  const shapes = `anchors ${fmtShape(anchors.shape)}, targets ${fmtShape(targets.shape)} and prototypes ${
    fmtShape(prototypes.shape)
  }`;
  if (targets.shape[1] !== d || prototypes.shape[1] !== d || rows % b !== 0) {
    throw new ShapeError(`${op}: ${shapes} must be [B·V, D], [B, D] and [K, D]`);
  }
  const temperature = checkNonNegative(op, "temperature", options.temperature ?? 0.1, true);
  const sharpen = checkNonNegative(
    op,
    "targetSharpenTemperature",
    options.targetSharpenTemperature ?? 0.25,
    true,
  );
  const weight = checkNonNegative(op, "regularizationWeight", options.regularizationWeight ?? 1);
  const exponent = options.powerLawExponent;
  if (exponent !== undefined) checkNonNegative(op, "powerLawExponent", exponent);
  const iterations = options.sinkhornIterations ?? 3;
  if (!(Number.isInteger(iterations) && iterations >= 0)) {
    throw new RangeError(`${op}: sinkhornIterations must be an integer ≥ 0, got ${iterations}`);
  }
  const k = prototypes.shape[0];
  return composed((keep) => {
    const unitPrototypes = keep(normalize(prototypes));
    const scores = (x: Tensor) => matmul(keep(normalize(x)), unitPrototypes, { transB: true });
    const logProbs = keep(logSoftmax(keep(mul(keep(scores(anchors)), 1 / temperature)), -1));
    // Sharpening softmax(s / T) by t is softmax(s / (T·t)); Sinkhorn takes its logs (epsilon 1), so its first
    // step divides the row-normalised probabilities by their total, as lightly's does.
    const target = keep(noGrad(() =>
      anchors.engine.tidy(() => {
        const sharp = logSoftmax(mul(scores(targets), 1 / (temperature * sharpen)), -1);
        const balanced = iterations > 0 ? sinkhorn(sharp, { iterations, epsilon: 1 }) : exp(sharp);
        return rows === b ? balanced : concat(Array(rows / b).fill(balanced), 0);
      })
    ));
    const crossEntropy = neg(keep(mean(keep(sum(keep(mul(target, logProbs)), 1)))));
    if (weight === 0) return crossEntropy;
    keep(crossEntropy);
    // p̄ floored at 1e-30 inside the log, so an empty prototype adds 0 (MSN) or a finite penalty (PMSN), not NaN.
    const meanProbs = keep(mean(keep(exp(logProbs)), 0));
    const logMean = keep(log(keep(maximum(meanProbs, 1e-30))));
    let regularizer: Tensor;
    if (exponent === undefined) {
      // log K − H(p̄) = Σ p̄ log p̄ + log K
      regularizer = keep(add(keep(sum(keep(mul(meanProbs, logMean)))), Math.log(k)));
    } else {
      // KL(q ‖ p̄) = Σ q log q − Σ q log p̄
      const power = Array.from({ length: k }, (_, i) => (i + 1) ** -exponent);
      const total = power.reduce((x, y) => x + y, 0);
      const q = power.map((v) => v / total);
      const entropyTerm = q.reduce((acc, v) => acc + v * Math.log(v), 0);
      const prior = keep(anchors.engine.tensor(q, [k]));
      regularizer = keep(sub(entropyTerm, keep(sum(keep(mul(prior, logMean))))));
    }
    return add(crossEntropy, keep(mul(regularizer, weight)));
  });
}

/**
 * DINO's center update, in place: center = momentum·center + (1 − momentum)·(the mean of every row of every
 * teacher view), from the teacher's logits before centering, as facebookresearch/dino's update_center.
 */
export function dinoCenter(
  center: Tensor,
  teacher: readonly Tensor[],
  options: { momentum?: number } = {},
): void {
  checkOptions("dinoCenter", options, { momentum: true });
  const op = "dinoCenter";
  if (teacher.length === 0) throw new RangeError(`${op}: no teacher views given`);
  const [, k] = checkSameViews(op, named("teacher", teacher));
  checkCenter(op, center, k, teacher[0]);
  noGrad(() => {
    const rows = teacher.length > 1 ? concat(teacher, 0) : teacher[0];
    const batch = mean(rows, 0);
    if (rows !== teacher[0]) rows.dispose();
    try {
      emaUpdate([center], [batch], { momentum: options.momentum ?? 0.9 });
    } finally {
      batch.dispose();
    }
  });
}
