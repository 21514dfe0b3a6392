// Reconstruction section: each loss forward (under noGrad) and forward+backward (grad from the loss: the
// fused pass) against the float64 CPU reference. Bytes are what one run must move at least: forward reads pred
// and target; forward+backward also writes the gradient (the masked loss reads only masked patches).
import {
  bceWithLogits,
  grad,
  huber,
  l1,
  maskedMSE,
  mse,
  noGrad,
  smoothL1,
  ssim,
  ssimLoss,
  type Tensor,
} from "../src/mod.ts";
import { type LossKind, refLoss, refMaskedMSE, refSSIM } from "../src/ref/reconstruction.ts";
import type { BenchContext } from "./lib.ts";

const LOSSES: [string, LossKind, (p: Tensor, t: Tensor) => Tensor][] = [
  ["mse", "mse", (p, t) => mse(p, t)],
  ["l1", "l1", (p, t) => l1(p, t)],
  ["huber", "huber", (p, t) => huber(p, t)],
  ["smoothl1", "smoothL1", (p, t) => smoothL1(p, t)],
  ["bce", "bceWithLogits", (p, t) => bceWithLogits(p, t)],
];
const PATCH = 16;
const MASK_RATIO = 0.75;

/** Equidistributed values in [0, 1) (a Weyl sequence): cheap to make at tens of millions. */
function weyl(n: number, alpha: number, offset: number): Float32Array {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = (i * alpha + offset) % 1;
  return a;
}

/** Forward (loss only) or forward+backward (loss and grad w.r.t. pred), disposing everything. */
function step(loss: (p: Tensor, t: Tensor) => Tensor, pred: Tensor, target: Tensor, backward: boolean): void {
  if (!backward) return noGrad(() => loss(pred, target)).dispose();
  const l = loss(pred, target);
  grad(l, [pred])[0].dispose();
  l.dispose();
}

export async function bench(ctx: BenchContext): Promise<void> {
  const e = ctx.engine;
  const shapes = ctx.quick ? [[16, 3, 64, 64]] : [[256, 3, 64, 64], [64, 3, 224, 224]];
  for (const shape of shapes) {
    const [n, c, h, w] = shape;
    const count = n * c * h * w;
    const size = `[${shape.join(",")}]`;
    const x = weyl(count, 0.6180339887498949, 0);
    const y = weyl(count, 0.7548776662466927, 0.5);
    const pred = e.tensor(x, shape);
    const target = e.tensor(y, shape);
    const timed = async (
      kernel: string,
      fn: () => void,
      bytes: number,
      flops?: number,
    ) => {
      ctx.add({ kernel, size, backend: "webgpu", ms: await ctx.gpu(fn), bytes, flops });
    };
    for (const [name, kind, loss] of LOSSES) {
      for (const backward of [false, true]) {
        const kernel = `recon.${name}.${backward ? "fwdbwd" : "fwd"}`;
        await timed(kernel, () => step(loss, pred, target, backward), (backward ? 3 : 2) * count * 4);
      }
      // The reference computes the value and the gradient together.
      const ms = ctx.cpu(() => refLoss(kind, x, shape, y, shape), 1);
      ctx.add({ kernel: `recon.${name}.fwdbwd`, size, backend: "cpu", ms, bytes: 3 * count * 4 });
    }

    const perImage = (h / PATCH) * (w / PATCH);
    const maskValues = Float32Array.from(
      { length: n * perImage },
      (_, i) => ((i * 0.6180339887) % 1 < MASK_RATIO ? 1 : 0),
    );
    const masked = maskValues.reduce((a, b) => a + b, 0) / maskValues.length;
    const mask = e.tensor(maskValues, [n, perImage]);
    const maskedLoss = (p: Tensor, t: Tensor) => maskedMSE(p, t, mask, { patch: PATCH, normPix: true });
    for (const backward of [false, true]) {
      const bytes = (2 * masked + (backward ? 1 : 0)) * count * 4;
      await timed(
        `recon.masked.${backward ? "fwdbwd" : "fwd"}`,
        () => step(maskedLoss, pred, target, backward),
        bytes,
      );
    }
    const maskedMs = ctx.cpu(() => refMaskedMSE(x, false, y, shape, maskValues, PATCH, true), 1);
    ctx.add({
      kernel: "recon.masked.fwdbwd",
      size,
      backend: "cpu",
      ms: maskedMs,
      note: "normPix, 75% masked",
    });
    mask.dispose();

    // SSIM is compute-bound. Its 11-tap window is separable, so the kernels (and these counts) sum along rows
    // then down columns: five moments per output forward (with ~30 flops of S and its coefficients), four
    // coefficients per pixel backward (~10 flops of the gradient). The reference sums each 11×11 window whole.
    const taps = 11;
    const rowPositions = n * c * h * (w - taps + 1);
    const outputs = n * c * (h - taps + 1) * (w - taps + 1);
    const fwdFlops = rowPositions * 5 * 2 * taps + outputs * (5 * 2 * taps + 30);
    const bwdFlops = rowPositions * 4 * 2 * taps + count * (4 * 2 * taps + 10);
    for (const backward of [false, true]) {
      const flops = fwdFlops + (backward ? bwdFlops : 0);
      const fn = () => step(backward ? ssimLoss : ssim, pred, target, backward);
      await timed(`recon.ssim.${backward ? "fwdbwd" : "fwd"}`, fn, (backward ? 3 : 2) * count * 4, flops);
    }
    const ssimImages = Math.max(1, Math.round(n / 64));
    const slice = ssimImages * c * h * w;
    const ssimMs = ctx.cpu(
      () => refSSIM(x.subarray(0, slice), y.subarray(0, slice), [ssimImages, c, h, w]),
      1,
    );
    ctx.add({
      kernel: "recon.ssim.fwdbwd",
      size,
      backend: "cpu",
      ms: (ssimMs * n) / ssimImages,
      flops: fwdFlops + bwdFlops,
      note: `timed on ${ssimImages} of ${n} images, scaled; whole 11×11 windows`,
    });
    pred.dispose();
    target.dispose();
  }
}
