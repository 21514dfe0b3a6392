// Float64 CPU reference of the reconstruction losses (src/reconstruction.ts), with PyTorch's definitions.
// Gradients are d(loss)/d(pred) and d(loss)/d(target) for an upstream gradient of 1 (of ones for reduction
// "none", unless given).

import type { Reduction } from "../reduce.ts";

export type LossKind = "mse" | "l1" | "huber" | "smoothL1" | "bceWithLogits";

/** [ℓ, dℓ/dx, dℓ/dy] of one element; `param` is huber's delta or smoothL1's beta. */
export function refElement(kind: LossKind, x: number, y: number, param: number): [number, number, number] {
  const d = x - y;
  const a = Math.abs(d);
  const s = Math.sign(d);
  switch (kind) {
    case "mse":
      return [d * d, 2 * d, -2 * d];
    case "l1":
      return [a, s, -s];
    case "huber":
      return a <= param ? [0.5 * d * d, d, -d] : [param * (a - 0.5 * param), param * s, -param * s];
    case "smoothL1":
      return a < param ? [0.5 * d * d / param, d / param, -d / param] : [a - 0.5 * param, s, -s];
    case "bceWithLogits": {
      // σ(x) − y as (1 − y) − σ(−|x|) for x ≥ 0: 1 / (1 + e^-x) − 1 would round away a gradient below 1e-16.
      const e = Math.exp(-Math.abs(x));
      const s = e / (1 + e);
      return [Math.max(x, 0) - x * y + Math.log1p(e), x >= 0 ? 1 - y - s : s - y, -x];
    }
  }
}

/** Index into a tensor of `shape` broadcast (right-aligned) to `outShape`, for flat output index `i`. */
export function broadcastIndex(i: number, shape: readonly number[], outShape: readonly number[]): number {
  let idx = 0;
  let stride = 1;
  for (let d = outShape.length - 1; d >= 0; d--) {
    const k = i % outShape[d];
    i = Math.floor(i / outShape[d]);
    const sd = d - (outShape.length - shape.length);
    if (sd >= 0) {
      if (shape[sd] !== 1) idx += k * stride;
      stride *= shape[sd];
    }
  }
  return idx;
}

/**
 * The loss (one value, or one per element for "none"), its gradient w.r.t. pred and w.r.t. target (in
 * target's shape: summed over the dims it is broadcast along). `upstream` is the upstream gradient of each
 * element for reduction "none" (default ones).
 */
export function refLoss(
  kind: LossKind,
  pred: ArrayLike<number>,
  shape: readonly number[],
  target: ArrayLike<number>,
  targetShape: readonly number[],
  options: {
    reduction?: Reduction;
    param?: number;
    weight?: ArrayLike<number>;
    weightShape?: readonly number[];
    upstream?: ArrayLike<number>;
  } = {},
): { loss: Float64Array; grad: Float64Array; gradTarget: Float64Array } {
  const n = pred.length;
  const reduction = options.reduction ?? "mean";
  const weightAt = (i: number) =>
    options.weight ? options.weight[broadcastIndex(i, options.weightShape!, shape)] : 1;
  // torch's weighted mse_loss and l1_loss average over the weights; huber_loss and BCE over the elements.
  let count = n;
  if (options.weight && (kind === "mse" || kind === "l1")) {
    count = 0;
    for (let i = 0; i < n; i++) count += weightAt(i);
  }
  const scale = reduction === "mean" ? 1 / count : 1;
  const each = new Float64Array(n);
  const grad = new Float64Array(n);
  const gradTarget = new Float64Array(target.length);
  let total = 0;
  for (let i = 0; i < n; i++) {
    const it = broadcastIndex(i, targetShape, shape);
    const [l, gx, gy] = refElement(kind, pred[i], target[it], options.param ?? 1);
    const w = weightAt(i);
    const up = options.upstream ? options.upstream[i] : 1;
    each[i] = l * w;
    grad[i] = gx * w * scale * up;
    gradTarget[it] += gy * w * scale * up;
    total += l * w;
  }
  return { loss: reduction === "none" ? each : Float64Array.of(total * scale), grad, gradTarget };
}

/**
 * MAE's patchify: images [N, C, H, W] -> [N, L, p·p·C] with L = (H/p)·(W/p) and each patch in (row, column,
 * channel) order (einsum 'nchpwq->nhwpqc').
 */
export function refPatchify(
  img: ArrayLike<number>,
  n: number,
  c: number,
  h: number,
  w: number,
  p: number,
): Float64Array {
  const hp = h / p;
  const wp = w / p;
  const out = new Float64Array(n * c * h * w);
  let o = 0;
  for (let b = 0; b < n; b++) {
    for (let i = 0; i < hp; i++) {
      for (let j = 0; j < wp; j++) {
        for (let y = 0; y < p; y++) {
          for (let x = 0; x < p; x++) {
            for (let ch = 0; ch < c; ch++) out[o++] = img[((b * c + ch) * h + i * p + y) * w + j * p + x];
          }
        }
      }
    }
  }
  return out;
}

/**
 * MAE's forward_loss written out: patchify the target (and a [N, C, H, W] pred), normalise each target patch
 * by its mean and unbiased variance (eps 1e-6) with normPix, then Σ mask·mean_patch((pred − target)²) / Σ mask.
 * `grad` is in pred's own layout.
 */
export function refMaskedMSE(
  pred: ArrayLike<number>,
  predPatchified: boolean,
  target: ArrayLike<number>,
  imageShape: readonly number[],
  mask: ArrayLike<number>,
  patch: number,
  normPix: boolean,
): { loss: number; grad: Float64Array } {
  const [n, c, h, w] = imageShape;
  const t = refPatchify(target, n, c, h, w, patch);
  const x = predPatchified ? Float64Array.from(pred) : refPatchify(pred, n, c, h, w, patch);
  const k = patch * patch * c;
  const patches = n * (h / patch) * (w / patch);
  let msum = 0;
  for (let q = 0; q < patches; q++) msum += mask[q];
  let loss = 0;
  const gradPatches = new Float64Array(x.length);
  for (let q = 0; q < patches; q++) {
    const seg = t.subarray(q * k, (q + 1) * k);
    if (normPix) {
      const mean = seg.reduce((s, v) => s + v, 0) / k;
      const variance = seg.reduce((s, v) => s + (v - mean) ** 2, 0) / (k - 1);
      for (let j = 0; j < k; j++) seg[j] = (seg[j] - mean) / Math.sqrt(variance + 1e-6);
    }
    let se = 0;
    for (let j = 0; j < k; j++) {
      const d = x[q * k + j] - seg[j];
      se += d * d;
      gradPatches[q * k + j] = 2 * d * mask[q] / (k * msum);
    }
    loss += mask[q] * se / k;
  }
  if (predPatchified) return { loss: loss / msum, grad: gradPatches };
  // Scatter the patch-layout gradient back to [N, C, H, W]: patchify is a permutation.
  const order = refPatchify(Float64Array.from({ length: x.length }, (_, i) => i), n, c, h, w, patch);
  const grad = new Float64Array(x.length);
  order.forEach((src, i) => (grad[src] = gradPatches[i]));
  return { loss: loss / msum, grad };
}

/** The normalised 1-D Gaussian window. */
export function gaussianWindow(size: number, sigma: number): Float64Array {
  const r = (size - 1) / 2;
  const g = Float64Array.from({ length: size }, (_, i) => Math.exp(-((i - r) ** 2) / (2 * sigma * sigma)));
  const s = g.reduce((a, b) => a + b, 0);
  return g.map((v) => v / s);
}

/**
 * Mean SSIM of images [N, C, H, W] over every channel and every position where the window fits ("valid", as
 * Wang et al. and pytorch_msssim), and its gradients w.r.t. x and y, derived by hand:
 * S = (2μxμy + C1)(2σxy + C2) / ((μx² + μy² + C1)(σx² + σy² + C2)), with μ, E[x²], E[xy] window averages;
 * dS(p)/dx(q) = w(q − p)·(∂S/∂μx + 2x(q)·∂S/∂E[x²] + y(q)·∂S/∂E[xy]), and
 * dS(p)/dy(q) = w(q − p)·(∂S/∂μy + 2y(q)·∂S/∂E[y²] + x(q)·∂S/∂E[xy]).
 */
export function refSSIM(
  x: ArrayLike<number>,
  y: ArrayLike<number>,
  shape: readonly number[],
  window = 11,
  sigma = 1.5,
  dataRange = 1,
): { ssim: number; grad: Float64Array; gradY: Float64Array } {
  const [n, c, h, w] = shape;
  const g = gaussianWindow(window, sigma);
  const c1 = (0.01 * dataRange) ** 2;
  const c2 = (0.03 * dataRange) ** 2;
  const ho = h - window + 1;
  const wo = w - window + 1;
  const count = n * c * ho * wo;
  const grad = new Float64Array(x.length);
  const gradY = new Float64Array(y.length);
  let total = 0;
  for (let plane = 0; plane < n * c; plane++) {
    const base = plane * h * w;
    for (let i = 0; i < ho; i++) {
      for (let j = 0; j < wo; j++) {
        let mx = 0, my = 0, exx = 0, eyy = 0, exy = 0;
        for (let u = 0; u < window; u++) {
          for (let v = 0; v < window; v++) {
            const wt = g[u] * g[v];
            const q = base + (i + u) * w + j + v;
            mx += wt * x[q];
            my += wt * y[q];
            exx += wt * x[q] * x[q];
            eyy += wt * y[q] * y[q];
            exy += wt * x[q] * y[q];
          }
        }
        const a1 = 2 * mx * my + c1;
        const a2 = 2 * (exy - mx * my) + c2;
        const b1 = mx * mx + my * my + c1;
        const b2 = exx - mx * mx + eyy - my * my + c2;
        const s = (a1 * a2) / (b1 * b2);
        total += s;
        const dmx = (2 * my * (a2 - a1)) / (b1 * b2) - 2 * mx * s * (1 / b1 - 1 / b2);
        const dmy = (2 * mx * (a2 - a1)) / (b1 * b2) - 2 * my * s * (1 / b1 - 1 / b2);
        // ∂S/∂E[x²] = ∂S/∂E[y²]
        const dexx = -s / b2;
        const dexy = (2 * a1) / (b1 * b2);
        for (let u = 0; u < window; u++) {
          for (let v = 0; v < window; v++) {
            const q = base + (i + u) * w + j + v;
            grad[q] += (g[u] * g[v] * (dmx + 2 * x[q] * dexx + y[q] * dexy)) / count;
            gradY[q] += (g[u] * g[v] * (dmy + 2 * y[q] * dexx + x[q] * dexy)) / count;
          }
        }
      }
    }
  }
  return { ssim: total / count, grad, gradY };
}
