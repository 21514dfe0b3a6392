// Reconstruction losses (shaders/reconstruction.wgsl, shaders/ssim.wgsl; CPU reference in
// src/ref/reconstruction.ts). A loss is one pass that reads pred and target once and reduces in the same pass
// (a tree: partials of 32 elements, then `combine` passes of 32 partials). While autograd records, that pass also writes
// d(loss)/d(pred) for an upstream gradient of exactly 1 and keeps it with the loss; when `grad` starts from
// this loss the backward hands that gradient over, so forward + backward read the inputs once and write the
// gradient once. Any other upstream (the loss inside a larger expression, a second `grad`) runs a backward
// pass that reads pred, target and g on the GPU. Evaluate under `noGrad` to skip the gradient write.
// Gradients flow to both arguments, as in PyTorch; the second argument's is made only when `grad` asks for it:
// −(pred's), summed over the dims a broadcast target spans (one elementwise pass); bce's −x·w likewise; ssim's
// y gradient in x's backward passes (S is symmetric in x and y: one more coefficient to gather). Weights, masks
// and maskedMSE's target are constants (grad gives zeros for them).
import { composed, isRecording, isSeed, noGrad, record } from "./autograd.ts";
import { type Binding, checkFits, checkRank, Params, windowBindings, windows } from "./engine.ts";
import { broadcastStrides, checkF32, div, mul, neg, unbroadcast } from "./elementwise.ts";
import { checkOptions, fmtShape, ShapeError } from "./errors.ts";
import { checkReduction, type Reduction, sum } from "./reduce.ts";
import { assertLive, checkEngine, sameShape, type Tensor } from "./tensor.ts";

const WG = 256;
// ITEMS in shaders/reconstruction.wgsl: elements per invocation of a loss pass and partials per invocation of
// a combine pass, so sums are trees of fan-in 32 (the loss pass writes count / 32 partials: 3% extra
// traffic). Measured on llvmpipe: 8 runs fwd+bwd at 0.75x the speed of 32, 64 about as 32.
const ITEMS = 32;
const PER_WORKGROUP = WG * ITEMS;
const LOSSES = { mse: 0, l1: 1, huber: 2, smoothL1: 3, bceWithLogits: 4 } as const;
// LOSS 5 in shaders/reconstruction.wgsl: bceWithLogits with d(loss)/d(target) in place of d(loss)/d(pred).
const BCE_TARGET = 5;
const DTYPES = { f32: 0, i32: 1, u32: 2 } as const;
// maskedMSE: an invocation loops about 3·patch²·C / 64 times; this keeps it near 3,000 (llvmpipe's loop cap).
const MAX_PATCH_PIXELS = 65536;
// The `_lanes` entries (one patch per invocation) take a patch only where their walks (lanePasses) stay under
// this, half llvmpipe's 65,535: lanePasses is an estimate (with normPix llvmpipe stopped ~7% above it: at
// C = 2,240 for patch 4, C = 960 for patch 8).
const LANES_LOOP_BUDGET = 32768;
const MASKED_LANES_WG = 64;
// ssim: an invocation loops window + 3 times (the window is applied as two 1-D passes); params hold the first
// (window + 1) / 2 taps, 32 at most.
const MAX_WINDOW = 63;

export interface LossOptions {
  /** "mean" (default) over all elements, "sum", or "none" for the per-element loss. */
  reduction?: Reduction;
  /**
   * Elementwise weight, broadcast to pred's shape. With reduction "mean", mse and l1 divide by the weights' sum,
   * the others by the element count, as torch's mse_loss, l1_loss, huber_loss and BCE do. A constant: grad
   * gives it zeros.
   */
  weight?: Tensor | null;
}

/** Mean squared error (x − y)². */
export function mse(pred: Tensor, target: Tensor, options: LossOptions = {}): Tensor {
  checkOptions("mse", options, { reduction: true, weight: true });
  return overWeights("mse", pred, target, options);
}

/** Mean absolute error |x − y|. */
export function l1(pred: Tensor, target: Tensor, options: LossOptions = {}): Tensor {
  checkOptions("l1", options, { reduction: true, weight: true });
  return overWeights("l1", pred, target, options);
}

/** torch's weighted mse_loss and l1_loss average over the weights: Σ w·ℓ / Σ w with reduction "mean". */
function overWeights(kind: "mse" | "l1", pred: Tensor, target: Tensor, options: LossOptions): Tensor {
  const { weight } = options;
  if (!weight || checkReduction(kind, options.reduction) !== "mean") {
    return pointLoss(kind, pred, target, options, 0);
  }
  return composed((keep) => {
    const total = keep(pointLoss(kind, pred, target, { weight, reduction: "sum" }, 0));
    // Each weight stands for pred.size / weight.size elements of the broadcast.
    const weights = keep(noGrad(() => mul(keep(sum(weight)), pred.size / weight.size)));
    return div(total, weights);
  });
}

/** ½d² where |d| ≤ delta, else delta·(|d| − ½delta) (PyTorch's huber_loss). */
export function huber(pred: Tensor, target: Tensor, options: LossOptions & { delta?: number } = {}): Tensor {
  checkOptions("huber", options, { reduction: true, weight: true, delta: true });
  const delta = options.delta ?? 1;
  if (!(delta > 0)) throw new RangeError(`huber: delta must be > 0, got ${delta}`);
  return pointLoss("huber", pred, target, options, delta);
}

/** ½d²/beta where |d| < beta, else |d| − ½beta; beta = 0 is l1 (PyTorch's smooth_l1_loss). */
export function smoothL1(
  pred: Tensor,
  target: Tensor,
  options: LossOptions & { beta?: number } = {},
): Tensor {
  checkOptions("smoothL1", options, { reduction: true, weight: true, beta: true });
  const beta = options.beta ?? 1;
  if (!(beta >= 0)) throw new RangeError(`smoothL1: beta must be ≥ 0, got ${beta}`);
  return pointLoss("smoothL1", pred, target, options, beta);
}

/** Binary cross-entropy of sigmoid(logits) against target probabilities, computed stably from the logits. */
export function bceWithLogits(logits: Tensor, target: Tensor, options: LossOptions = {}): Tensor {
  checkOptions("bceWithLogits", options, { reduction: true, weight: true });
  return pointLoss("bceWithLogits", logits, target, options, 0);
}

function checkBroadcastTo(
  op: string,
  what: string,
  shape: readonly number[],
  predShape: readonly number[],
): void {
  const lead = predShape.length - shape.length;
  if (lead < 0 || !shape.every((d, i) => d === 1 || d === predShape[lead + i])) {
    throw new ShapeError(
      `${op}: ${what} ${fmtShape(shape)} does not broadcast to pred ${fmtShape(predShape)}`,
    );
  }
}

/**
 * Attaches a backward to `out`, keeping `saved` for it (disposed with `out`). `inputs[0]` is pred, whose
 * gradient is `backward(g)`; `others(g, predGrad)` gives the gradients of the rest of `inputs` when one of them
 * is asked for, calling `predGrad()` only if it needs pred's. `unitGrad`, the gradient the forward wrote for an
 * upstream of exactly 1, is handed over as pred's (and leaves `saved`) when the backward starts from grad's
 * seed; otherwise, or once it is gone (taken, or disposed by an enclosing `tidy`), `backward` runs.
 */
function recordFused(
  out: Tensor,
  op: string,
  inputs: Tensor[],
  unitGrad: Tensor | null,
  backward: (g: Tensor) => Tensor,
  saved: Tensor[] = [],
  others: (g: Tensor, predGrad: () => Tensor) => Tensor[] = () => [],
): Tensor {
  // record keeps this very array as the node's `saved`, so removing unitGrad from it hands it over.
  const kept = unitGrad ? [...saved, unitGrad] : saved;
  return record(out, op, inputs, (g, needs) => {
    let predGrad: Tensor | undefined;
    const takePredGrad = () => {
      if (predGrad) return predGrad;
      const at = unitGrad ? kept.indexOf(unitGrad) : -1;
      if (at >= 0 && isSeed(g) && !unitGrad!.disposed) predGrad = kept.splice(at, 1)[0];
      else predGrad = backward(g);
      return predGrad;
    };
    const rest = needs.slice(1).some((n) => n) ? others(g, takePredGrad) : [];
    if (needs[0]) return [takePredGrad(), ...rest];
    predGrad?.dispose();
    return [null, ...rest];
  }, kept);
}

/** A new scalar offset + scale·Σ values: passes summing ITEMS values per invocation until one is left. */
function sumToScalar(op: string, values: Tensor, scale = 1, offset = 0): Tensor {
  const engine = values.engine;
  let current = values;
  for (;;) {
    const outputs = Math.ceil(current.size / ITEMS);
    const last = outputs === 1;
    const next = engine.empty(last ? [] : [outputs]);
    engine.run({
      op,
      shader: "reconstruction",
      entry: "combine",
      constants: { WG, IN_DTYPE: DTYPES[current.dtype] },
      params: new Params().u32(current.size, 0, 0).f32(last ? scale : 1, last ? offset : 0),
      buffers: [current, next],
      workgroups: Math.ceil(outputs / WG),
    });
    if (current !== values) current.dispose();
    current = next;
    if (last) return current;
  }
}

function pointLoss(
  kind: keyof typeof LOSSES,
  pred: Tensor,
  target: Tensor,
  options: LossOptions,
  param: number,
): Tensor {
  const op = kind;
  const weight = options.weight ?? undefined; // null is none too, as torch's None
  const reduction = checkReduction(op, options.reduction);
  checkF32(op, pred);
  checkF32(op, target);
  if (weight) checkF32(op, weight);
  checkEngine(op, pred, target, weight);
  if (kind === "bceWithLogits" && !sameShape(target.shape, pred.shape)) {
    throw new ShapeError(
      `${op}: target ${fmtShape(target.shape)} must have the shape of the logits ${fmtShape(pred.shape)}`,
    );
  }
  checkBroadcastTo(op, "target", target.shape, pred.shape);
  if (weight) checkBroadcastTo(op, "weight", weight.shape, pred.shape);
  const engine = pred.engine;
  const broadcast = !sameShape(target.shape, pred.shape) ||
    (weight !== undefined && !sameShape(weight.shape, pred.shape));
  if (broadcast) {
    const others = `target ${fmtShape(target.shape)}${weight ? ` and weight ${fmtShape(weight.shape)}` : ""}`;
    checkRank(op, `pred ${fmtShape(pred.shape)} with ${others} broadcast`, pred.shape.length);
  }
  const predWindows = windows(pred);
  if (broadcast && predWindows.length > 1) {
    throw new ShapeError(
      `${op}: broadcasting target ${fmtShape(target.shape)}${
        weight ? ` or weight ${fmtShape(weight.shape)}` : ""
      } ` +
        `over pred ${fmtShape(pred.shape)} needs pred within one binding (maxStorageBufferBindingSize ` +
        `${engine.maxBinding} bytes); pass a target of pred's shape`,
    );
  }
  // Same-shape inputs are windowed alike; broadcast ones are bound whole.
  const alike = (t: Tensor): Binding[] =>
    sameShape(t.shape, pred.shape) ? windowBindings(t) : predWindows.map(() => t);
  const targetWindows = alike(target);
  const weightWindows = weight ? alike(weight) : predWindows.map((w) => w.binding);
  const scale = reduction === "mean" ? 1 / pred.size : 1;
  const constants = {
    WG,
    BROADCAST: broadcast ? 1 : 0,
    WEIGHTED: weight ? 1 : 0,
    LANE_RUNS: engine.cpuKernels ? 1 : 0,
  };
  const params = (count: number, partBase: number, s: number) => {
    const p = new Params().u32(count, partBase, pred.shape.length).f32(s, param);
    if (!broadcast) return p;
    const weightStrides = weight ? broadcastStrides(weight.shape, pred.shape) : [];
    return p.dims(pred.shape).dims(broadcastStrides(target.shape, pred.shape), 0).dims(weightStrides, 0);
  };
  const dispatch = (
    entry: string,
    s: number,
    extra: (i: number) => Binding[],
    partBase: number[] = [],
    overrides: Record<string, number> = {},
  ) =>
    predWindows.forEach((w, i) =>
      engine.run({
        op,
        shader: "reconstruction",
        entry,
        constants: {
          ...constants,
          LOSS: LOSSES[kind],
          UPSTREAM_EACH: reduction === "none" ? 1 : 0,
          ...overrides,
        },
        params: params(w.count, partBase[i] ?? 0, s),
        buffers: [w.binding, targetWindows[i], weightWindows[i], ...extra(i)],
        workgroups: Math.ceil(w.count / PER_WORKGROUP),
      })
    );
  // The gradient pass for upstream g, in pred's shape: d(loss)/d(pred), or bce's d(loss)/d(target).
  const gradPass = (g: Tensor, loss: number) => {
    const out = engine.empty(pred.shape);
    const ow = windows(out);
    const upstream = reduction === "none" ? windowBindings(g) : predWindows.map(() => g);
    dispatch("grad", scale, (i) => [upstream[i], ow[i].binding], [], { LOSS: loss });
    return out;
  };
  const backward = (g: Tensor) => gradPass(g, LOSSES[kind]);
  // bce's d(loss)/d(target) = −scale·x·w·g has a pass of its own; the other losses are functions of
  // pred − target: d/d(target) = −d/d(pred).
  const targetGrad = (g: Tensor, predGrad: () => Tensor) => [
    kind === "bceWithLogits" ? gradPass(g, BCE_TARGET) : unbroadcast(neg(predGrad()), target.shape),
  ];

  if (reduction === "none") {
    const out = engine.empty(pred.shape);
    const ow = windows(out);
    dispatch("loss", 1, (i) => [ow[i].binding]);
    return recordFused(out, op, [pred, target], null, backward, [], targetGrad);
  }
  const groups = predWindows.map((w) => Math.ceil(w.count / PER_WORKGROUP));
  const partialCount = groups.reduce((a, b) => a + b) * WG;
  if (4 * partialCount > engine.maxBinding) {
    throw new ShapeError(
      `${op}: ${fmtShape(pred.shape)} leaves ${4 * partialCount} bytes of partial sums, over ` +
        `maxStorageBufferBindingSize (${engine.maxBinding} bytes)`,
    );
  }
  const partials = engine.empty([partialCount]);
  const partBase = groups.map((_, i) => groups.slice(0, i).reduce((a, b) => a + b, 0) * WG);
  const saved = isRecording() ? engine.empty(pred.shape) : null;
  // Without the gradient its binding still needs a buffer of its own (two writable bindings of one buffer are
  // invalid).
  const unused = saved ? null : engine.empty([4]);
  const gradWindows = saved ? windowBindings(saved) : predWindows.map(() => unused!);
  dispatch("reduce", scale, (i) => [partials, gradWindows[i]], partBase, { WITH_GRAD: saved ? 1 : 0 });
  unused?.dispose();
  const out = sumToScalar(op, partials);
  partials.dispose();
  return recordFused(out, op, [pred, target], saved, backward, [], targetGrad);
}

/**
 * Loop passes of one `_lanes` invocation (reconstruction.wgsl laneLoss, laneLossGrad, laneTargetMoments): a walk
 * of nested (c, py, px4) loops, each loop's passes counted with its exit test, twice with normPix (the target's
 * moments take a walk of their own).
 */
function lanePasses(channels: number, patch: number, normPix: boolean): number {
  const walk = channels * (1 + (patch + 1) + patch * (patch / 4 + 1)) + 1;
  return (normPix ? 2 : 1) * walk;
}

/**
 * MAE's loss: images [N, C, H, W] cut into patch×patch patches (L per image), the mean squared error over the
 * pixels of each patch, averaged over patches with `mask` [N, L] as weights (1 = masked, reconstructed):
 * Σ mask·mse(patch) / Σ mask. `pred` is [N, C, H, W] like `target`, or MAE's patchified [N, L, patch²·C]
 * (pixels in row, column, channel order). With `normPix` each target patch is first normalised by its own
 * mean and unbiased variance (eps 1e-6), as MAE's norm_pix_loss. The mask may be f32, i32 or u32.
 * Differentiable in pred only: the target (an image, as in MAE) and the mask are constants. Patches with mask 0
 * are not read, so a NaN there stays out of the loss, where MAE's (loss·mask).sum() would be NaN.
 */
export function maskedMSE(
  pred: Tensor,
  target: Tensor,
  mask: Tensor,
  options: { patch: number; normPix?: boolean },
): Tensor {
  checkOptions("maskedMSE", options, { patch: true, normPix: true }, true);
  const op = "maskedMSE";
  const { patch } = options;
  const normPix = options.normPix ?? false;
  checkF32(op, pred);
  checkF32(op, target);
  checkEngine(op, pred, target, mask);
  assertLive(op, mask);
  if (!Number.isInteger(patch) || patch < 1) {
    throw new RangeError(`${op}: patch must be an integer ≥ 1, got ${patch}`);
  }
  if (target.shape.length !== 4) {
    throw new ShapeError(`${op}: target must be images [N, C, H, W], got ${fmtShape(target.shape)}`);
  }
  const [n, c, h, w] = target.shape;
  if (h % patch || w % patch) {
    throw new ShapeError(
      `${op}: target ${fmtShape(target.shape)} does not split into ${patch}×${patch} patches`,
    );
  }
  const perImage = (h / patch) * (w / patch);
  const k = patch * patch * c;
  const patchified = sameShape(pred.shape, [n, perImage, k]);
  if (!patchified && !sameShape(pred.shape, target.shape)) {
    throw new ShapeError(
      `${op}: pred ${fmtShape(pred.shape)} must be ${fmtShape(target.shape)} like target ${
        fmtShape(target.shape)
      } ` +
        `or patchified ${fmtShape([n, perImage, k])}`,
    );
  }
  if (!sameShape(mask.shape, [n, perImage])) {
    throw new ShapeError(
      `${op}: mask ${fmtShape(mask.shape)} must be ${fmtShape([n, perImage])} for target ${
        fmtShape(target.shape)
      } and patch ${patch}`,
    );
  }
  if (k > MAX_PATCH_PIXELS) {
    throw new RangeError(`${op}: patch²·C = ${k} exceeds the supported ${MAX_PATCH_PIXELS}`);
  }
  if (normPix && k < 2) {
    throw new RangeError(`${op}: normPix needs patch²·C ≥ 2 for an unbiased variance, got ${k}`);
  }
  const engine = pred.engine;
  checkFits(op, engine, target.shape);
  const patches = n * perImage;
  const msum = sumToScalar(op, mask);
  // CPU adapters: one patch per invocation, reading vec4s along patch rows, where its walks fit the loop budget.
  const lanes = engine.cpuKernels && patch % 4 === 0 &&
    lanePasses(target.shape[1], patch, normPix) <= LANES_LOOP_BUDGET;
  const run = (entry: string, buffers: Binding[]) =>
    engine.run({
      op,
      shader: "reconstruction",
      entry: lanes ? `${entry}_lanes` : entry,
      constants: {
        WG: lanes ? MASKED_LANES_WG : maskedWorkgroup(k),
        NORM_PIX: normPix ? 1 : 0,
        PATCHIFIED: patchified ? 1 : 0,
        IN_DTYPE: DTYPES[mask.dtype],
        ...(lanes ? { PRED_STRIDE: patchified ? c : 1 } : {}),
      },
      params: new Params().u32(patches, 0, 4).f32(1, 1e-6).dims([n, c, h, w, patch, w / patch]),
      buffers: [pred, target, mask, msum, ...buffers],
      workgroups: lanes ? Math.ceil(patches / MASKED_LANES_WG) : patches,
    });
  const partials = engine.empty([patches]);
  const saved = isRecording() ? engine.empty(pred.shape) : null;
  run(saved ? "masked_grad" : "masked", saved ? [partials, saved] : [partials]);
  const out = sumToScalar(op, partials);
  partials.dispose();
  return recordFused(out, op, [pred], saved, (g) => {
    const gp = engine.empty(pred.shape);
    run("masked_backward", [g, gp]);
    return gp;
  }, [msum]);
}

/** Patch pixels per workgroup pass: ≤ 64 invocations, as each tree level is a barrier (costly on CPU adapters). */
function maskedWorkgroup(k: number): number {
  return Math.max(8, Math.min(64, 2 ** Math.ceil(Math.log2(k))));
}

/** The normalised 1-D Gaussian window. */
function gaussianTaps(size: number, sigma: number): number[] {
  const r = (size - 1) / 2;
  const g = Array.from({ length: size }, (_, i) => Math.exp(-((i - r) ** 2) / (2 * sigma * sigma)));
  const total = g.reduce((a, b) => a + b, 0);
  return g.map((v) => v / total);
}

/** Planes [first, first + count) of images [N, C, H, W], N·C planes in all. */
interface PlaneRange {
  first: number;
  count: number;
}

export interface SSIMOptions {
  /** Side of the Gaussian window, odd, ≤ 63 (default 11). */
  window?: number;
  /** Standard deviation of the window (default 1.5). */
  sigma?: number;
  /** Value range of the images: C1 = (0.01·range)², C2 = (0.03·range)² (default 1). */
  dataRange?: number;
}

/**
 * Mean SSIM of images x and y [N, C, H, W] (Wang et al. 2004): Gaussian window per channel, averaged over
 * every position where the window fits. Differentiable in x and y.
 */
export function ssim(x: Tensor, y: Tensor, options: SSIMOptions = {}): Tensor {
  checkOptions("ssim", options, { window: true, sigma: true, dataRange: true });
  return ssimOp("ssim", x, y, options, 1, 0);
}

/** 1 − ssim(x, y): a loss to minimise. */
export function ssimLoss(x: Tensor, y: Tensor, options: SSIMOptions = {}): Tensor {
  checkOptions("ssimLoss", options, { window: true, sigma: true, dataRange: true });
  return ssimOp("ssimLoss", x, y, options, -1, 1);
}

function ssimOp(
  op: string,
  x: Tensor,
  y: Tensor,
  options: SSIMOptions,
  sign: number,
  offset: number,
): Tensor {
  const { window = 11, sigma = 1.5, dataRange = 1 } = options;
  checkF32(op, x);
  checkF32(op, y);
  checkEngine(op, x, y);
  if (!Number.isInteger(window) || window < 1 || window % 2 === 0 || window > MAX_WINDOW) {
    throw new RangeError(`${op}: window must be an odd integer in [1, ${MAX_WINDOW}], got ${window}`);
  }
  if (!(sigma > 0)) throw new RangeError(`${op}: sigma must be > 0, got ${sigma}`);
  if (!(dataRange > 0)) throw new RangeError(`${op}: dataRange must be > 0, got ${dataRange}`);
  if (x.shape.length !== 4 || !sameShape(x.shape, y.shape)) {
    throw new ShapeError(
      `${op}: x ${fmtShape(x.shape)} and y ${fmtShape(y.shape)} must be images [N, C, H, W] of one shape`,
    );
  }
  const [n, c, h, w] = x.shape;
  if (h < window || w < window) {
    throw new ShapeError(
      `${op}: images ${fmtShape(x.shape)} are smaller than the ${window}×${window} window`,
    );
  }
  const engine = x.engine;
  const planes = n * c;
  const ho = h - window + 1;
  const wo = w - window + 1;
  const outputs = planes * ho * wo;
  const scale = sign / outputs;
  // x, y and the gradients are bound whole. The window sums along rows and the gathered coefficients, a vec4
  // per row position ([H, Wo] per plane), are the largest buffers made per plane: a dispatch takes as many
  // planes as fit one binding.
  const imageBytes = x.size * 4;
  const planeBytes = 16 * h * wo;
  if (Math.max(imageBytes, planeBytes) > engine.maxBinding) {
    throw new ShapeError(
      `${op}: images ${fmtShape(x.shape)} need ${imageBytes} bytes in one binding and ${planeBytes} bytes ` +
        `of window sums per plane; maxStorageBufferBindingSize is ${engine.maxBinding} bytes`,
    );
  }
  const perDispatch = Math.floor(engine.maxBinding / planeBytes);
  const chunks: PlaneRange[] = [];
  for (let first = 0; first < planes; first += perDispatch) {
    chunks.push({ first, count: Math.min(perDispatch, planes - first) });
  }
  const halfTaps = gaussianTaps(window, sigma).slice(0, (window + 1) / 2);
  const run = (entry: string, chunk: PlaneRange, buffers: Binding[], invocations: number) =>
    engine.run({
      op,
      shader: "ssim",
      entry,
      constants: { WG },
      params: new Params()
        .u32(chunk.count, chunk.first, h, w, window)
        .f32((0.01 * dataRange) ** 2, (0.03 * dataRange) ** 2, scale, ...halfTaps),
      buffers,
      workgroups: Math.ceil(invocations / WG),
    });
  const recording = isRecording();
  const map = engine.empty([outputs]);
  const coefs: Tensor[] = [];
  for (const chunk of chunks) {
    const rowValues = chunk.count * h * wo;
    const rows = engine.empty([rowValues, 4]);
    const rowsXY = engine.empty([rowValues]);
    // Each invocation computes four neighbouring values along its pass (along rows, or down columns).
    run("moments", chunk, [x, y, rows, rowsXY], chunk.count * h * Math.ceil(wo / 4));
    const outputBlocks = chunk.count * Math.ceil(ho / 4) * wo;
    if (recording) {
      const coef = engine.empty([chunk.count * ho * wo, 4]);
      run("forward_grad", chunk, [rows, rowsXY, map, coef], outputBlocks);
      coefs.push(coef);
    } else {
      run("forward", chunk, [rows, rowsXY, map], outputBlocks);
    }
    rows.dispose();
    rowsXY.dispose();
  }
  const out = sumToScalar(op, map, scale, offset);
  map.dispose();
  if (!recording) return out;
  // One backward gives both gradients: y's shares the gathers of b and c with x's and adds that of a'.
  return record(out, op, [x, y], (g) => {
    const gx = engine.empty(x.shape);
    const gy = engine.empty(y.shape);
    chunks.forEach((chunk, i) => {
      const rowValues = chunk.count * h * wo;
      const cols = engine.empty([rowValues, 4]);
      run("gather", chunk, [coefs[i], cols], chunk.count * Math.ceil(h / 4) * wo);
      run("backward", chunk, [x, y, cols, g, gx, gy], chunk.count * h * Math.ceil(w / 4));
      cols.dispose();
    });
    return [gx, gy];
  }, coefs);
}
