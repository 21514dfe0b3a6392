// Normalisation layers built on the core ops: layerNorm (transformers, MAE's ViT) and batchNorm (the BatchNorm of
// SimCLR's, BYOL's and VICReg's projection heads and of ResNets), each one autograd node whose backward is the
// closed form (CPU reference in src/ref/norm.ts).
import { noGrad, record } from "./autograd.ts";
import { add, checkF32, div, mul, sqrt, square, sub } from "./elementwise.ts";
import { checkOptions, fmtShape, ShapeError } from "./errors.ts";
import { emaUpdate } from "./optim.ts";
import { asShape, mean, sum } from "./reduce.ts";
import { reshape } from "./shape.ts";
import { checkEngine, sameShape, type Tensor } from "./tensor.ts";

export interface AffineOptions {
  /** Scale γ (default none, or null: 1). */
  weight?: Tensor | null;
  /** Shift β (default none, or null: 0). */
  bias?: Tensor | null;
  /** Added to the variance under the square root (default 1e-5, PyTorch's). */
  eps?: number;
}

function checkEps(op: string, eps: number): number {
  if (!(eps >= 0 && eps < Infinity)) throw new RangeError(`${op}: eps must be finite and ≥ 0, got ${eps}`);
  return eps;
}

/**
 * (x − μ) / √(σ² + eps) · γ + β over `axes`, the statistics those of x (biased variance) or, with `fixed`, given
 * (keepDims-shaped, handed over: the autograd node keeps and disposes them). γ and β come shaped to broadcast
 * against x (`affine`). `onStats` sees the batch statistics (keepDims-shaped) before they go.
 */
function standardize(
  op: string,
  x: Tensor,
  axes: number[],
  eps: number,
  affine: { weight?: Tensor | null; bias?: Tensor | null; shape: number[] },
  fixed?: { mean: Tensor; var: Tensor },
  onStats?: (mean: Tensor, variance: Tensor) => void,
): Tensor {
  const e = x.engine;
  const keep = { keepDims: true };
  const { y, mu, inv } = noGrad(() =>
    e.tidy(() => {
      const mu = fixed ? fixed.mean : mean(x, axes, keep);
      const variance = fixed ? fixed.var : mean(square(sub(x, mu)), axes, keep);
      if (!fixed) onStats?.(mu, variance);
      const inv = div(1, sqrt(add(variance, eps)));
      let y = mul(sub(x, mu), inv);
      if (affine.weight) y = mul(y, asShape(affine.weight, affine.shape));
      if (affine.bias) y = add(y, asShape(affine.bias, affine.shape));
      return { y, mu, inv };
    })
  );
  fixed?.var.dispose();
  // Parameter gradients sum over the axes where γ broadcasts.
  const paramAxes = x.shape.map((_, i) => i).filter((i) => affine.shape[i] === 1);
  const inputs = [x, affine.weight, affine.bias].filter((t): t is Tensor => t != null);
  return record(y, op, inputs, (g, needs) =>
    e.tidy(() => {
      const xhat = mul(sub(x, mu), inv);
      const gx = affine.weight ? mul(g, asShape(affine.weight, affine.shape)) : g;
      let dx: Tensor | null = null;
      if (needs[0]) {
        // Through the batch statistics: dx = inv · (gx − mean(gx) − x̂ · mean(gx · x̂)); with fixed ones inv · gx.
        dx = fixed
          ? mul(gx, inv)
          : mul(inv, sub(sub(gx, mean(gx, axes, keep)), mul(xhat, mean(mul(gx, xhat), axes, keep))));
      }
      const paramGrad = (t: Tensor, v: Tensor) => reshape(sum(v, paramAxes), t.shape);
      const grads = [dx];
      if (affine.weight) grads.push(needs[grads.length] ? paramGrad(affine.weight, mul(g, xhat)) : null);
      if (affine.bias) grads.push(needs[grads.length] ? paramGrad(affine.bias, g) : null);
      return grads;
    }), [mu, inv]);
}

/** A parameter left out may be undefined or null (torch's None); `required` ones (the running pair) may not. */
function checkParam(
  op: string,
  name: string,
  t: Tensor | null | undefined,
  shape: readonly number[],
  x: Tensor,
  required = false,
) {
  if (t == null) {
    if (required) throw new TypeError(`${op}: ${name} must be a tensor, got ${t}`);
    return;
  }
  checkF32(op, t);
  checkEngine(op, x, t);
  if (!sameShape(t.shape, shape)) {
    throw new ShapeError(
      `${op}: ${name} ${fmtShape(t.shape)} must be ${fmtShape(shape)} for input ${fmtShape(x.shape)}`,
    );
  }
}

/**
 * Layer normalisation, like torch.nn.functional.layer_norm: each sample standardised over its last dims
 * (`normalizedShape`, which must match them) with its own mean and biased variance, then scaled by `weight` and
 * shifted by `bias` (both `normalizedShape`).
 */
export function layerNorm(
  x: Tensor,
  normalizedShape: readonly number[],
  options: AffineOptions = {},
): Tensor {
  checkOptions("layerNorm", options, { weight: true, bias: true, eps: true });
  const op = "layerNorm";
  checkF32(op, x);
  const k = normalizedShape.length;
  if (k === 0 || k > x.shape.length || !sameShape(x.shape.slice(-k), normalizedShape)) {
    throw new ShapeError(
      `${op}: normalizedShape ${fmtShape(normalizedShape)} must be the last dims of input ${
        fmtShape(x.shape)
      }`,
    );
  }
  checkParam(op, "weight", options.weight, normalizedShape, x);
  checkParam(op, "bias", options.bias, normalizedShape, x);
  const eps = checkEps(op, options.eps ?? 1e-5);
  const axes = normalizedShape.map((_, i) => x.shape.length - k + i);
  const shape = x.shape.map((d, i) => (i < x.shape.length - k ? 1 : d));
  return standardize(op, x, axes, eps, { ...options, shape });
}

export interface BatchNormOptions extends AffineOptions {
  /**
   * Running statistics [C]: used instead of the batch's when `training` is false; updated in place from the
   * batch's when it is true, as running = (1 − momentum)·running + momentum·batch, the variance unbiased.
   */
  running?: { mean: Tensor; var: Tensor };
  /** Batch statistics (default true) or the running ones. */
  training?: boolean;
  /** Weight of the batch in the running statistics (default 0.1, PyTorch's). */
  momentum?: number;
}

/**
 * Batch normalisation, like torch.nn.functional.batch_norm: x [N, C, ...] standardised per channel over the
 * batch and every other dim, then scaled by `weight` and shifted by `bias` (both [C]). In training (the default)
 * the statistics are the batch's (biased variance), and `running` ones, if given, are updated in place.
 */
export function batchNorm(x: Tensor, options: BatchNormOptions = {}): Tensor {
  checkOptions("batchNorm", options, {
    weight: true,
    bias: true,
    eps: true,
    running: true,
    training: true,
    momentum: true,
  });
  const op = "batchNorm";
  checkF32(op, x);
  if (x.shape.length < 2) throw new ShapeError(`${op}: input ${fmtShape(x.shape)} must be [N, C, ...]`);
  const c = x.shape[1];
  checkParam(op, "weight", options.weight, [c], x);
  checkParam(op, "bias", options.bias, [c], x);
  if (options.running) {
    checkParam(op, "running mean", options.running.mean, [c], x, true);
    checkParam(op, "running var", options.running.var, [c], x, true);
  }
  const eps = checkEps(op, options.eps ?? 1e-5);
  const momentum = options.momentum ?? 0.1;
  if (!(momentum >= 0 && momentum <= 1)) {
    throw new RangeError(`${op}: momentum must be in [0, 1], got ${momentum}`);
  }
  const training = options.training ?? true;
  const running = options.running;
  if (!training && !running) throw new Error(`${op}: training false needs running statistics`);
  const count = x.size / c;
  if (training && count < 2) {
    throw new ShapeError(`${op}: input ${fmtShape(x.shape)} has 1 value per channel; training needs more`);
  }
  const axes = x.shape.map((_, i) => i).filter((i) => i !== 1);
  const shape = x.shape.map((d, i) => (i === 1 ? d : 1));
  if (!training) {
    const fixed = noGrad(() => ({ mean: reshape(running!.mean, shape), var: reshape(running!.var, shape) }));
    return standardize(op, x, axes, eps, { ...options, shape }, fixed);
  }
  // The running statistics move toward the batch's, the variance unbiased (n / (n − 1)).
  const update = (mu: Tensor, variance: Tensor) =>
    x.engine.tidy(() => {
      const unbiased = mul(reshape(variance, [c]), count / (count - 1));
      emaUpdate([running!.mean, running!.var], [reshape(mu, [c]), unbiased], { momentum: 1 - momentum });
    });
  return standardize(op, x, axes, eps, { ...options, shape }, undefined, running ? update : undefined);
}
