// Augmentation section: simclrViews at 32², 64² and 224² (batch 256 where one binding holds it) and each
// pretext-task generator at 64², on WebGPU and against the float64 CPU reference. Bytes count one read of the
// source pixels a view actually samples and one write of each output pixel; GPU times exclude the host-side
// drawing of per-sample parameters (a few Philox calls per sample).
import {
  colorizationTask,
  denoiseTask,
  identityParams,
  jigsawTask,
  maskedImageTask,
  maskedTokenTask,
  relativePositionTask,
  rotationTask,
  type SampleParams,
  simclrViews,
  type Tensor,
} from "../src/mod.ts";
import { refApplyParams } from "../src/ref/augment.ts";
import { gridOrigin } from "../src/pretext.ts";
import { refMaskedImage, refMaskedTokens, refTiles } from "../src/ref/pretext.ts";
import { randomArray } from "../test/util.ts";
import type { BenchContext } from "./lib.ts";

/** Source pixels bilinear resampling reads for one sample: touched rows × touched columns. */
function sampledPixels(q: SampleParams, size: number): number {
  const touched = (start: number, extent: number, limit: number) => {
    const seen = new Set<number>();
    for (let o = 0; o < size; o++) {
      const s = Math.min(limit - 1, Math.max(0, start + (o + 0.5) * (extent / size) - 0.5));
      seen.add(Math.floor(s)).add(Math.min(Math.floor(s) + 1, limit - 1));
    }
    return seen.size;
  };
  return touched(q.crop.top, q.crop.height, size) * touched(q.crop.left, q.crop.width, size);
}

const dispose = (r: Record<string, unknown>) => Object.values(r).forEach((t) => (t as Tensor).dispose?.());

/** CPU time of the reference on `sub` samples, scaled to `n` (the reference is linear in the batch). */
function cpuScaled(ctx: BenchContext, n: number, sub: number, fn: () => void): number {
  return (ctx.cpu(fn, 1) * n) / sub;
}

export async function bench(ctx: BenchContext): Promise<void> {
  const { engine } = ctx;
  for (const size of [32, 64, 224]) {
    const perImage = 3 * size * size * 4;
    const n = Math.min(ctx.quick && size === 224 ? 32 : 256, Math.floor(engine.maxBinding / perImage));
    const host = randomArray(n * 3 * size * size, size, 0, 1);
    using x = engine.tensor(host, [n, 3, size, size]);
    const { views, params } = simclrViews(x, { seed: 1, size });
    views.forEach((v) => v.dispose());
    const sampled = params.flat().reduce((s, q) => s + sampledPixels(q, size), 0);
    const bytes = 3 * 4 * sampled + 2 * n * perImage;
    const ms = await ctx.gpu(() => simclrViews(x, { seed: 1, size }).views.forEach((v) => v.dispose()));
    const label = { kernel: "augment.simclr", size: `N=${n},HW=${size}`, bytes };
    ctx.add({
      ...label,
      backend: "webgpu",
      ms,
      note: `${Math.round((n / ms) * 1000)} images/s (two views each)`,
    });
    const sub = Math.min(n, 4);
    const cpuMs = cpuScaled(
      ctx,
      n,
      sub,
      () =>
        params.forEach((p, v) =>
          refApplyParams(host, [sub, 3, size, size], p.slice(0, sub), { size, seed: 1, stream: v })
        ),
    );
    ctx.add({
      ...label,
      backend: "cpu",
      ms: cpuMs,
      note: `${Math.round((n / cpuMs) * 1000)} images/s; timed on ${sub}`,
    });
  }

  const [n, size] = [256, 64];
  const shape = [n, 3, size, size];
  const elems = n * 3 * size * size;
  const host = randomArray(elems, 7, 0, 1);
  using x = engine.tensor(host, shape);
  const sub = 16;
  const subShape = [sub, 3, size, size];
  const identity = (q: Partial<SampleParams>): SampleParams => ({ ...identityParams(size, size), ...q });
  const tokenShape = [n, 512];
  const ids = Int32Array.from({ length: n * 512 }, (_, i) => (i * 7919) % 30000);
  using tokens = engine.tensor(ids, tokenShape, "i32");
  const tile = Math.floor(size / 3);
  const cases: { kernel: string; bytes: number; gpu: () => void; cpu: () => void }[] = [
    {
      kernel: "pretext.rotation",
      bytes: 2 * elems * 4,
      gpu: () => dispose(rotationTask(x, { seed: 1 })),
      cpu: () =>
        refApplyParams(host, subShape, Array.from({ length: sub }, (_, i) => identity({ rotate: i % 4 }))),
    },
    {
      kernel: "pretext.jigsaw",
      bytes: 2 * n * 3 * 9 * tile * tile * 4,
      gpu: () => dispose(jigsawTask(x, { seed: 1 })),
      cpu: () =>
        refTiles(
          host,
          subShape,
          Array.from({ length: sub }, () =>
            [8, 7, 6, 5, 4, 3, 2, 1, 0].map((t) => gridOrigin(t, tile, tile, 3))),
          tile,
          tile,
          3,
        ),
    },
    {
      kernel: "pretext.masked",
      bytes: 3 * elems * 4,
      gpu: () => dispose(maskedImageTask(x, { seed: 1 })),
      cpu: () => refMaskedImage(host, subShape, 1, 16, 0.75),
    },
    {
      kernel: "pretext.relative",
      bytes: 4 * n * 3 * tile * tile * 4,
      gpu: () => dispose(relativePositionTask(x, { seed: 1 })),
      cpu: () => {
        refTiles(
          host,
          subShape,
          Array.from({ length: sub }, () => [gridOrigin(4, tile, tile, 3)]),
          tile,
          tile,
          1,
        );
        refTiles(
          host,
          subShape,
          Array.from({ length: sub }, () => [gridOrigin(1, tile, tile, 3)]),
          tile,
          tile,
          1,
        );
      },
    },
    {
      kernel: "pretext.denoise",
      bytes: 3 * elems * 4,
      gpu: () => dispose(denoiseTask(x, { seed: 1, sigma: 0.1 })),
      cpu: () =>
        refApplyParams(host, subShape, Array.from({ length: sub }, () => identity({ noise: 0.1 })), {
          seed: 1,
        }),
    },
    {
      kernel: "pretext.colorization",
      bytes: (elems + elems / 3 + elems) * 4,
      gpu: () => dispose(colorizationTask(x)),
      cpu: () =>
        refApplyParams(host, subShape, Array.from({ length: sub }, () => identity({})), { grayOutput: true }),
    },
    {
      kernel: "pretext.tokens",
      bytes: 3 * ids.length * 4,
      gpu: () => dispose(maskedTokenTask(tokens, { seed: 1, maskId: 30000, vocabSize: 30000 })),
      cpu: () => refMaskedTokens(ids.subarray(0, sub * 512), 512, 1, 0.15, 30000, 30000),
    },
  ];
  for (const c of cases) {
    const sizeLabel = c.kernel === "pretext.tokens" ? `N=${n},L=512` : `N=${n},HW=${size}`;
    const ms = await ctx.gpu(c.gpu);
    ctx.add({
      kernel: c.kernel,
      size: sizeLabel,
      backend: "webgpu",
      ms,
      bytes: c.bytes,
      note: `${Math.round((n / ms) * 1000)} images/s`,
    });
    const cpuMs = cpuScaled(ctx, n, sub, c.cpu);
    ctx.add({
      kernel: c.kernel,
      size: sizeLabel,
      backend: "cpu",
      ms: cpuMs,
      bytes: c.bytes,
      note: `timed on ${sub}`,
    });
  }
}
