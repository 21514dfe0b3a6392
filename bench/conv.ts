// Convolution section: conv2d forward and forward+backward (input, weight and bias gradients) at a first layer of
// a CIFAR network and a ResNet stage, against the float64 CPU reference (direct sums, timed on a few samples).
import { conv2d, grad, mul, noGrad, sum, type Tensor } from "../src/mod.ts";
import { windowOf } from "../src/conv.ts";
import { refConv2d, refConv2dGrad } from "../src/ref/conv.ts";
import type { BenchContext } from "./lib.ts";

// [x shape, weight shape]: 3×3 kernels, padding 1.
const SIZES: [number[], number[]][] = [
  [[64, 3, 32, 32], [64, 3, 3, 3]],
  [[64, 64, 16, 16], [64, 64, 3, 3]],
];

export async function bench(ctx: BenchContext): Promise<void> {
  const e = ctx.engine;
  for (const [xs, ws] of ctx.quick ? SIZES.slice(0, 1) : SIZES) {
    const [n, c, h, w] = xs;
    const [o, , kh, kw] = ws;
    const size = `${xs.join("×")}*${o}×${kh}×${kw}`;
    const win = windowOf("bench", [h, w], { kernel: [kh, kw], padding: 1 });
    const macs = n * o * c * kh * kw * win.out[0] * win.out[1];
    const x = e.randn(xs, { seed: 1 });
    const weight = e.randn(ws, { seed: 2 });
    const bias = e.randn([o], { seed: 3 });
    const upstream = e.randn([n, o, ...win.out], { seed: 4 });
    for (const backward of [false, true]) {
      const kernel = backward ? "conv2d.fwdbwd" : "conv2d.fwd";
      // Forward: one product; backward: the input's and the weight's products on top.
      const flops = 2 * macs * (backward ? 3 : 1);
      const step = () => {
        if (!backward) return noGrad(() => conv2d(x, weight, { padding: 1, bias })).dispose();
        const y = conv2d(x, weight, { padding: 1, bias });
        const prod = mul(y, upstream);
        const loss = sum(prod);
        for (const t of [...grad(loss, [x, weight, bias]), y, prod, loss]) t.dispose();
      };
      ctx.add({ kernel, size, backend: "webgpu", ms: await ctx.gpu(step), flops, note: "im2col + matmul" });
      // The reference on `sub` samples, scaled to the batch (it is linear in the batch).
      const sub = 2;
      const hx = (await x.toArray()).slice(0, sub * c * h * w);
      const [hw, hb, hg] = await Promise.all([weight, bias, upstream].map((t: Tensor) => t.toArray()));
      const subShape = [sub, c, h, w];
      const cpuMs = ctx.cpu(() => {
        refConv2d(hx, subShape, hw, ws, hb, win);
        if (backward) {
          refConv2dGrad(hx, subShape, hw, ws, hg.slice(0, sub * o * win.out[0] * win.out[1]), win);
        }
      }, 1) * n / sub;
      ctx.add({
        kernel,
        size,
        backend: "cpu",
        ms: cpuMs,
        flops,
        note: `direct sums; timed on ${sub} samples`,
      });
    }
    for (const t of [x, weight, bias, upstream]) t.dispose();
  }
}
