// Contrastive section: fused ntXent forward and forward+backward against the float64 CPU reference and a
// materialising GPU version (matmul, mask, crossEntropy over the (2N)² logits), D = 128.
import {
  add,
  concat,
  crossEntropy,
  grad,
  matmul,
  mul,
  noGrad,
  normalize,
  ntXent,
  type Tensor,
} from "../src/mod.ts";
import { refNtXent } from "../src/ref/contrastive.ts";
import type { BenchContext } from "./lib.ts";

const D = 128;
const TEMPERATURE = 0.1;

/** The straightforward version: the full (2N)² logit matrix, self-similarity masked out by −1e9. Returns the
 * loss and the intermediates its backward needs. */
function materialised(z1: Tensor, z2: Tensor, mask: Tensor, labels: Tensor): Tensor[] {
  const z = concat([z1, z2], 0);
  const u = normalize(z);
  const s = matmul(u, u, { transB: true });
  const scaled = mul(s, 1 / TEMPERATURE);
  const masked = add(scaled, mask);
  return [crossEntropy(masked, labels), z, u, s, scaled, masked];
}

/** Runs the backward of a loss when asked, then disposes the loss and the intermediates. */
function run([loss, ...rest]: Tensor[], inputs: Tensor[], backward: boolean): void {
  if (backward) { for (const g of grad(loss, inputs)) g.dispose(); }
  for (const t of [loss, ...rest]) t.dispose();
}

export async function bench(ctx: BenchContext): Promise<void> {
  const e = ctx.engine;
  const sizes = ctx.quick ? [256, 1024] : [256, 1024, 4096, 16384, 65536];
  for (const n of sizes) {
    const size = `N=${n},D=${D}`;
    const pass = 2 * (2 * n) ** 2 * D;
    const matrixBytes = (2 * n) ** 2 * 4;
    // Forward + backward: the forward pass, the backward's recomputed logits and its weighted sum.
    const flops = { fwd: pass, fwdbwd: 3 * pass };
    const seconds = flops.fwdbwd / (ctx.ceilings.fmaGFLOPs * 1e9 * 0.2);
    if (n === 65536 && seconds > 120) {
      console.log(
        `ntxent ${size}: skipped, ~${seconds.toFixed(0)} s at 20% of the FMA ceiling on this adapter`,
      );
      continue;
    }
    const z1 = e.randn([n, D], { seed: 1 });
    const z2 = e.randn([n, D], { seed: 2 });
    for (const backward of [false, true]) {
      const kernel = backward ? "ntxent.fwdbwd" : "ntxent.fwd";
      const fused = () =>
        run(
          [
            backward
              ? ntXent(z1, z2, { temperature: TEMPERATURE })
              : noGrad(() => ntXent(z1, z2, { temperature: TEMPERATURE })),
          ],
          [z1, z2],
          backward,
        );
      const ms = await ctx.gpu(fused, n >= 16384 ? 1 : undefined);
      e.resetPeak();
      const base = e.memory().bytes;
      fused();
      await e.sync();
      const peak = e.memory().peakBytes - base;
      ctx.add({
        kernel,
        size,
        backend: "webgpu",
        ms,
        flops: backward ? flops.fwdbwd : flops.fwd,
        peakBytes: peak,
        note: `fused${backward && matrixBytes <= e.logitCacheBytes ? ", logits cached" : ""}; ` +
          `the (2N)² matrix alone would be ${(matrixBytes / 2 ** 20).toFixed(0)} MiB`,
      });
      if (matrixBytes <= e.maxBinding) {
        const eye = new Float32Array((2 * n) ** 2);
        for (let i = 0; i < 2 * n; i++) eye[i * 2 * n + i] = -1e9;
        const mask = e.tensor(eye, [2 * n, 2 * n]);
        const labels = e.tensor(
          Int32Array.from({ length: 2 * n }, (_, i) => (i + n) % (2 * n)),
          [2 * n],
          "i32",
        );
        const base = () =>
          run(
            backward ? materialised(z1, z2, mask, labels) : noGrad(() => materialised(z1, z2, mask, labels)),
            [z1, z2],
            backward,
          );
        const msBase = await ctx.gpu(base);
        e.resetPeak();
        const before = e.memory().bytes;
        base();
        await e.sync();
        ctx.add({
          kernel,
          size,
          backend: "webgpu",
          ms: msBase,
          flops: backward ? flops.fwdbwd : flops.fwd,
          peakBytes: e.memory().peakBytes - before,
          note: "materialising: matmul, mask, crossEntropy",
        });
        mask.dispose();
        labels.dispose();
      }
      if (backward && n <= (ctx.quick ? 256 : 4096)) {
        const a = await z1.toArray();
        const b = await z2.toArray();
        const ms = ctx.cpu(() => refNtXent(a, b, n, D, TEMPERATURE), n >= 1024 ? 1 : undefined);
        ctx.add({
          kernel,
          size,
          backend: "cpu",
          ms,
          flops: flops.fwdbwd,
          note: "float64 reference (always with gradients)",
        });
      }
    }
    z1.dispose();
    z2.dispose();
  }
}
