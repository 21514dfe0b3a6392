// Neural-network ops built on the core ones: L2 normalize, cross-entropy (shaders/nn.wgsl for the per-row losses,
// the mean over the rows not ignored and cross-entropy's backward), and scaled dot-product attention composed of
// matmul and softmax (CPU reference in src/ref/nn.ts).
import { composed, noGrad, record } from "./autograd.ts";
import { type Binding, Params } from "./engine.ts";
import {
  add,
  checkF32,
  div,
  equal,
  greater,
  masked,
  maximum,
  mul,
  sqrt,
  square,
  sub,
  where,
} from "./elementwise.ts";
import { matmul } from "./matmul.ts";
import { checkOptions, describeBadIndices, fmtShape, ShapeError } from "./errors.ts";
import { checkReduction, max, type Reduction, softmax, splitLogsumexp, sum } from "./reduce.ts";
import { normalizeAxis, reshape } from "./shape.ts";
import { assertLive, checkEngine, type Tensor } from "./tensor.ts";

const WG = 256;
const NAN_BITS = 0x7fc00000;

/** ||x||₂ along `axis` (kept as a dim of size 1). */
/** ||x||₂ along `axis`, kept as a dim of 1 (call inside a tidy: it leaves two temporaries). */
function l2norm(x: Tensor, axis: number): Tensor {
  return sqrt(sum(square(x), axis, { keepDims: true }));
}

/**
 * x / max(||x||₂, eps) along `axis` (default the last), like torch.nn.functional.normalize with p = 2.
 * Rows whose norm is at most eps are scaled by 1/eps, and their gradient is g/eps.
 */
export function normalize(x: Tensor, options: { axis?: number; eps?: number } = {}): Tensor {
  checkOptions("normalize", options, { axis: true, eps: true });
  assertLive("normalize", x);
  checkF32("normalize", x);
  const axis = normalizeAxis("normalize", options.axis ?? -1, x.shape.length);
  const eps = options.eps ?? 1e-12;
  if (!(eps >= 0 && eps < Infinity)) {
    throw new RangeError(`normalize: eps must be finite and ≥ 0, got ${eps}`);
  }
  // Tidied: the temporaries go, also where an op in the middle throws.
  const y = noGrad(() => x.engine.tidy(() => div(x, maximum(l2norm(x, axis), eps))));
  return record(y, "normalize", [x], (g) =>
    x.engine.tidy(() => {
      // Where the norm r > eps: (g − y·Σ g·y) / r. Where it is clamped to eps: g / eps. Recomputed from x so
      // that no hidden tensor outlives the forward.
      const r = l2norm(x, axis);
      const n = maximum(r, eps);
      const y = div(x, n);
      const dot = sum(mul(g, y), axis, { keepDims: true });
      return [div(sub(g, mul(y, mul(dot, greater(r, eps)))), n)];
    }));
}

export interface CrossEntropyOptions {
  /** Rows whose label is this i32 are left out: loss 0, gradient 0, not counted by the mean (default -100). */
  ignoreIndex?: number;
  /** "mean" (default) over the rows not ignored, "sum", or "none" for the per-row losses [N]. */
  reduction?: Reduction;
}

/**
 * Parts [first row, rows] of `logits` [N, C] that each fit one storage binding, every part starting on the
 * binding alignment (one part where the whole fits); a ShapeError where even the fewest aligned rows do not.
 */
function rowParts(op: string, logits: Tensor): [number, number][] {
  const e = logits.engine;
  const [rows, classes] = logits.shape;
  if (logits.bytes <= e.maxBinding) return [[0, rows]];
  const gcd = (x: number, y: number): number => (y ? gcd(y, x % y) : x);
  const step = e.bindingAlignment / gcd(4 * classes, e.bindingAlignment);
  const per = Math.floor(e.maxBinding / (4 * classes) / step) * step;
  if (per < 1) {
    throw new ShapeError(
      `${op}: logits ${fmtShape(logits.shape)}: ${step} rows of ${classes} classes (${4 * step * classes} ` +
        `bytes) are over maxStorageBufferBindingSize (${e.maxBinding} bytes)`,
    );
  }
  return Array.from({ length: Math.ceil(rows / per) }, (_, k) => [k * per, Math.min(per, rows - k * per)]);
}

/**
 * −log softmax(logits)[label] per row, reduced over the batch, like torch.nn.functional.cross_entropy: logits
 * f32 [N, C], labels i32 [N] holding class indices. Rows labelled `ignoreIndex` contribute nothing; the mean
 * divides by the rows left (counted on the GPU), so a batch whose rows are all ignored has a NaN mean (PyTorch's
 * 0/0) and a sum of 0. Only the logits get a gradient. Any other label outside [0, C) makes its row's loss and
 * gradient NaN (and so a mean or sum), and the next readback or sync throws a RangeError naming the labels and
 * the first row (checking on the host would need a readback here). The labels must stay alive until grad() has
 * run. Logits over one storage binding run in parts of rows, of at most maxStorageBufferBindingSize / 8 rows in
 * all (each row's statistics take 8 bytes in one binding: with C ≤ 2 classes, more than its logits).
 */
export function crossEntropy(logits: Tensor, labels: Tensor, options: CrossEntropyOptions = {}): Tensor {
  checkOptions("crossEntropy", options, { ignoreIndex: true, reduction: true });
  const op = "crossEntropy";
  assertLive(op, logits);
  assertLive(op, labels);
  checkF32(op, logits);
  const reduction = checkReduction(op, options.reduction);
  const ignoreIndex = options.ignoreIndex ?? -100;
  if (!Number.isInteger(ignoreIndex) || ignoreIndex < -(2 ** 31) || ignoreIndex >= 2 ** 31) {
    throw new RangeError(`${op}: ignoreIndex must be an i32 integer, got ${ignoreIndex}`);
  }
  if (labels.dtype !== "i32") {
    throw new TypeError(
      `${op}: labels must be i32 class indices, got ${labels.dtype} ${fmtShape(labels.shape)}`,
    );
  }
  if (logits.shape.length !== 2 || labels.shape.length !== 1 || labels.shape[0] !== logits.shape[0]) {
    throw new ShapeError(
      `${op}: logits ${fmtShape(logits.shape)} and labels ${fmtShape(labels.shape)} must be [N, C] and [N]`,
    );
  }
  checkEngine(op, logits, labels);
  const e = logits.engine;
  const [rows, classes] = logits.shape;
  const parts = rowParts(op, logits);
  const params = (count: number, row0 = 0) =>
    new Params().u32(count, rows, classes, NAN_BITS).i32(ignoreIndex).u32(Math.ceil(rows / 4) * 4, row0);
  /** One dispatch of `entry` per part of rows, `window` binding that part of a [rows, classes] tensor. */
  const perPart = (
    entry: string,
    constants: Record<string, number>,
    buffers: (window: (t: Tensor) => Binding) => Binding[],
    count: (m: number) => number,
  ) => {
    for (const [r0, m] of parts) {
      const window = (t: Tensor): Binding =>
        parts.length === 1
          ? t
          : { buffer: t.buffer, offset: 4 * r0 * classes, size: Math.ceil(m * classes / 4) * 16 };
      e.run({
        op: entry === "backward" ? `${op} (backward)` : op,
        shader: "nn",
        entry,
        constants,
        params: params(count(m), r0),
        buffers: buffers(window),
        workgroups: Math.ceil(count(m) / WG),
      });
    }
  };
  // num[0] / kept rows as a new tensor [] (NaN where no row is kept); `sums` is nll's (Σ loss, kept rows).
  const overKept = (num: Tensor, sums: Tensor) => {
    const out = e.empty([]);
    e.run({ op, shader: "nn", entry: "mean", params: params(1), buffers: [num, sums, out], workgroups: 1 });
    return out;
  };
  // The mean keeps its sums [2] with the loss: the backward divides by the kept rows too.
  const { loss, sums } = noGrad(() => {
    const lse = splitLogsumexp(op, logits, [1]);
    const count = reduction === "mean";
    const nll = e.empty(count ? [2, rows] : [rows]);
    const bad = e.dataCheck(describeBadIndices({
      op,
      noun: "label",
      outside: `[0, ${classes}) and not ignoreIndex ${ignoreIndex}`,
      place: "row",
      effect: "their rows' loss and gradient are NaN",
    }));
    perPart(
      "nll",
      { WG, COUNT: count ? 1 : 0 },
      (window) => [window(logits), labels, nll, lse, bad],
      (m) => m,
    );
    lse.dispose();
    if (reduction === "none") return { loss: nll, sums: null };
    const sums = sum(nll, reduction === "mean" ? 1 : undefined);
    nll.dispose();
    if (reduction === "sum") return { loss: sums, sums: null };
    return { loss: overKept(sums, sums), sums };
  });
  return record(loss, op, [logits], (g) => {
    assertLive(op, labels);
    // The mean's upstream is g / kept rows: one value, like the sum's; "none" has one per row.
    const upstream = sums ? overKept(g, sums) : g;
    const p = softmax(logits, 1);
    const out = e.empty(logits.shape);
    perPart(
      "backward",
      { WG, UPSTREAM_EACH: reduction === "none" ? 1 : 0 },
      (window) => [window(p), labels, window(out), upstream],
      (m) => m * classes,
    );
    p.dispose();
    if (upstream !== g) upstream.dispose();
    return [out];
  }, sums ? [sums] : []);
}

export interface AttentionOptions {
  /** Multiplies q·kᵀ (default 1/√D). */
  scale?: number;
  /** Added to the scores, broadcast to [..., Lq, Lk]: −Infinity hides a key from a query. */
  mask?: Tensor;
  /** Hides from query i every key j > i (torch's is_causal: the top-left triangle). */
  causal?: boolean;
}

/**
 * Scaled dot-product attention, as torch's F.scaled_dot_product_attention: softmax(q·kᵀ·scale + mask)·v for
 * q [..., Lq, D], k [..., Lk, D] and v [..., Lk, Dv] (batch dims broadcast as matmul's), giving [..., Lq, Dv].
 * Composed of matmul, softmax and elementwise ops, so it forms the scores: O(Lq·Lk) memory per batch item. A
 * query whose keys the mask all hides attends to nothing: zeros, and no gradient through its row, as PyTorch
 * 2.5's safe softmax (before, its NaN reached every key's and value's gradient through Pᵀ·dO).
 */
export function attention(q: Tensor, k: Tensor, v: Tensor, options: AttentionOptions = {}): Tensor {
  checkOptions("attention", options, { scale: true, mask: true, causal: true });
  const op = "attention";
  for (const t of [q, k, v]) checkF32(op, t);
  const shapes = `q ${fmtShape(q.shape)}, k ${fmtShape(k.shape)} and v ${fmtShape(v.shape)}`;
  const [lq, d] = q.shape.slice(-2);
  const [lk, dk] = k.shape.slice(-2);
  if (q.shape.length < 2 || k.shape.length < 2 || v.shape.length < 2 || d !== dk || v.shape.at(-2) !== lk) {
    throw new ShapeError(`${op}: ${shapes} must be [..., Lq, D], [..., Lk, D] and [..., Lk, Dv]`);
  }
  const scale = options.scale ?? 1 / Math.sqrt(d);
  if (!Number.isFinite(scale)) throw new RangeError(`${op}: scale must be finite, got ${scale}`);
  return composed((keep) => {
    const scores = keep(mul(keep(matmul(q, k, { transB: true })), scale));
    // What is added to the scores: the mask and the causal triangle, in the mask's shape (not the scores').
    let bias = options.mask;
    if (options.causal) {
      // −∞ where key j > query i, as torch's (the diagonal always stays seen, so only a mask hides a whole row).
      const triangle = keep(noGrad(() =>
        q.engine.tidy(() => {
          const ids = (n: number) => q.engine.tensor(Float32Array.from({ length: n }, (_, i) => i), [n]);
          return where(greater(ids(lk), reshape(ids(lq), [lq, 1])), -Infinity, 0);
        })
      ));
      bias = bias ? keep(add(bias, triangle)) : triangle;
    }
    if (!options.mask) return matmul(keep(softmax(bias ? keep(add(scores, bias)) : scores, -1)), v);
    // A hidden row gets no bias, so its softmax (and that backward, y·(g − Σ g·y)) holds no NaN, and then
    // probabilities of 0: three small passes over the bias (its shape) and one over the probabilities.
    const added = bias!;
    const hidden = keep(
      noGrad(() => q.engine.tidy(() => equal(max(added, -1, { keepDims: true }), -Infinity))),
    );
    const probs = keep(softmax(keep(add(scores, keep(masked("keepUnless", added, hidden)))), -1));
    return matmul(keep(masked("keepUnless", probs, hidden)), v);
  });
}
