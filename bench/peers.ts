// Peers section: the same ops on TensorFlow.js's WebGPU backend (tfjs-core and tfjs-backend-webgpu 4.22.0),
// beside pretext on the same adapter. Both are timed alike by wall time (many calls, then one read of the
// last result's first element; the two engines' batches alternate), so each tfjs-webgpu row's note gives
// pretext's time and the ratio. gpu.js is the other JS GPU library people reach for, but it is WebGL-only and
// does not run under Deno: not compared.
import * as esbuild from "esbuild";
import type * as TF from "@tensorflow/tfjs-core";
import {
  add,
  conv2d,
  embedding,
  exp,
  grad,
  matmul,
  mse,
  mul,
  ntXent,
  randomResizedCrop,
  softmax,
  sum,
  type Tensor,
  topk,
  transpose,
} from "../src/mod.ts";
import { randomArray } from "../test/util.ts";
import { browserModule } from "../tools/bundle.ts";
import { type BenchContext, fmtMs, median } from "./lib.ts";

type Tf = typeof TF;
const M = 2 ** 20;
/** Calls per wait double until one wait covers at least this long: mapAsync polls every ~10 ms. */
const MIN_WALL_MS = 200;
const QUICK_MIN_WALL_MS = 50;
/** Wall time one side of a row may take in samples past the first (slow peers' kernels stop early). */
const BUDGET_MS = 5000;
const QUICK_BUDGET_MS = 1000;
const TEMPERATURE = 0.1;

/**
 * TF.js's npm entry points are CommonJS for Node (they require node-fetch and util), so its ES modules are
 * bundled into one with esbuild, with `process` undefined so tfjs-core does not take Deno for Node.
 */
async function loadTf(): Promise<Tf> {
  const result = await esbuild.build({
    ...browserModule,
    stdin: {
      contents: `export * from "@tensorflow/tfjs-core";
        import "@tensorflow/tfjs-core/dist/register_all_gradients";
        import "@tensorflow/tfjs-backend-webgpu";`,
      resolveDir: new URL("../", import.meta.url).pathname,
    },
    define: { process: "undefined" },
    write: false,
    logLevel: "error",
  });
  await esbuild.stop();
  const file = Deno.makeTempFileSync({ suffix: ".js" });
  try {
    Deno.writeTextFileSync(file, result.outputFiles[0].text);
    return await import(`file://${file}`);
  } finally {
    Deno.removeSync(file);
  }
}

async function initTf(): Promise<Tf> {
  let tf: Tf;
  try {
    tf = await loadTf();
    // Neither the browser nor the Node platform registers under Deno; tensors need at least isTypedArray.
    tf.setPlatform("deno", {
      fetch: (path, init) => fetch(path, init),
      now: () => performance.now(),
      encode: (text) => new TextEncoder().encode(text),
      decode: (bytes) => new TextDecoder().decode(bytes),
      isTypedArray: (a): a is Float32Array | Int32Array | Uint8Array | Uint8ClampedArray =>
        a instanceof Float32Array || a instanceof Int32Array || a instanceof Uint8Array ||
        a instanceof Uint8ClampedArray,
    });
    if (!(await tf.setBackend("webgpu"))) throw new Error("tf.setBackend('webgpu') returned false");
    await tf.ready();
  } catch (e) {
    throw new Error(`TensorFlow.js's WebGPU backend did not load: ${(e as Error).message}`, { cause: e });
  }
  return tf;
}

/** One engine's side of a row: `run` makes a result, `first` reads its first element. */
interface Side<T extends { dispose(): void }> {
  run: () => T;
  first: (t: T) => Promise<unknown>;
}

/** Wall ms of `calls` runs (each result disposed when the next is asked for), then a read of the last one. */
async function batch<T extends { dispose(): void }>(side: Side<T>, calls: number): Promise<number> {
  const t = performance.now();
  let last = side.run();
  for (let i = 1; i < calls; i++) {
    last.dispose();
    last = side.run();
  }
  await side.first(last);
  last.dispose();
  return performance.now() - t;
}

/** Calls per batch: the first batch compiles pipelines; then calls double until polling is noise. */
async function calibrate<T extends { dispose(): void }>(ctx: BenchContext, side: Side<T>): Promise<number> {
  await batch(side, 1);
  const min = ctx.quick ? QUICK_MIN_WALL_MS : MIN_WALL_MS;
  let calls = 1;
  while (calls < 1024 && await batch(side, calls) < min) calls *= 2;
  return calls;
}

/**
 * Median wall ms of one call on each side. The two sides' batches alternate, so a host that slows down for
 * minutes at a time (this one does, by up to 2x) slows both alike instead of whichever ran second.
 */
async function alternate<A extends { dispose(): void }, B extends { dispose(): void }>(
  ctx: BenchContext,
  a: Side<A>,
  b: Side<B>,
): Promise<[number, number]> {
  const callsA = await calibrate(ctx, a);
  const callsB = await calibrate(ctx, b);
  const samplesA: number[] = [];
  const samplesB: number[] = [];
  const budget = 2 * (ctx.quick ? QUICK_BUDGET_MS : BUDGET_MS);
  let spent = 0;
  while (samplesA.length < (ctx.quick ? 3 : 7) && (samplesA.length === 0 || spent < budget)) {
    const msA = await batch(a, callsA);
    const msB = await batch(b, callsB);
    samplesA.push(msA / callsA);
    samplesB.push(msB / callsB);
    spent += msA + msB;
  }
  return [median(samplesA), median(samplesB)];
}

interface Case {
  kernel: string;
  size: string;
  bytes?: number;
  flops?: number;
  pretext: () => Tensor;
  tfjs: () => TF.Tensor;
}

export async function bench(ctx: BenchContext): Promise<void> {
  const tf = await initTf();
  const e = ctx.engine;
  // pretext's cheapest read of one element: a 4-byte copy, then a readback of it.
  const firstPretext = async (t: Tensor) => {
    const one = e.empty([1], t.dtype);
    e.copy(t.buffer, 0, one.buffer, 0, 4);
    await one.toArray();
    one.dispose();
  };
  const firstTf = async (t: TF.Tensor) => {
    const one = tf.tidy(() => tf.slice(tf.reshape(t, [-1]), 0, 1));
    await one.data();
    one.dispose();
  };
  // Both engines hold the same inputs; each case's are disposed after it.
  const held: { dispose(): void }[] = [];
  const both = (data: Float32Array, shape: number[]): [Tensor, TF.Tensor] => {
    const pair: [Tensor, TF.Tensor] = [e.tensor(data, shape), tf.tensor(data, shape)];
    held.push(...pair);
    return pair;
  };

  const cases: (() => Case)[] = [];
  const n = ctx.quick ? M : 16 * M;
  const label = `${n / M}M`;
  cases.push(() => {
    const [a, ta] = both(randomArray(n, 1), [n]);
    const [b, tb] = both(randomArray(n, 2), [n]);
    return {
      kernel: "add",
      size: label,
      bytes: 12 * n,
      pretext: () => add(a, b),
      tfjs: () => tf.add(ta, tb),
    };
  });
  cases.push(() => {
    const [a, ta] = both(randomArray(n, 1), [n]);
    return { kernel: "exp", size: label, bytes: 8 * n, pretext: () => exp(a), tfjs: () => tf.exp(ta) };
  });
  cases.push(() => {
    const [a, ta] = both(randomArray(n, 5), [n]);
    return { kernel: "sum", size: label, bytes: 4 * n + 4, pretext: () => sum(a), tfjs: () => tf.sum(ta) };
  });
  const rows = ctx.quick ? 256 : 4096;
  cases.push(() => {
    const [a, ta] = both(randomArray(rows * 1024, 6, -4, 4), [rows, 1024]);
    return {
      kernel: "softmax (rows)",
      size: `[${rows}, 1024]`,
      bytes: 8 * rows * 1024,
      pretext: () => softmax(a),
      tfjs: () => tf.softmax(ta),
    };
  });
  const side = ctx.quick ? 1024 : 4096;
  cases.push(() => {
    const [a, ta] = both(randomArray(side * side, 12), [side, side]);
    return {
      kernel: "transpose",
      size: `[${side}, ${side}]`,
      bytes: 8 * side * side,
      pretext: () => transpose(a),
      tfjs: () => tf.transpose(ta),
    };
  });
  for (const k of ctx.quick ? [256] : [256, 1024]) {
    cases.push(() => {
      const [a, ta] = both(randomArray(k * k, 7), [k, k]);
      const [b, tb] = both(randomArray(k * k, 8), [k, k]);
      return {
        kernel: "matmul",
        size: `${k}³`,
        flops: 2 * k ** 3,
        bytes: 3 * 4 * k * k,
        pretext: () => matmul(a, b),
        tfjs: () => tf.matMul(ta, tb),
      };
    });
  }
  // Token embeddings: 8,192 rows of a BERT-base table [30,522, 768] (tf.gather).
  cases.push(() => {
    const [vocab, dim, count] = [30_522, 768, ctx.quick ? 2048 : 8192];
    const [w, tw] = both(randomArray(vocab * dim, 20), [vocab, dim]);
    const idList = Int32Array.from({ length: count }, (_, i) => (i * 7919 + 13) % vocab);
    const ids = e.tensor(idList, [count], "i32");
    const tids = tf.tensor(idList, [count], "int32");
    held.push(ids, tids);
    return {
      kernel: "embedding",
      size: `${count} ids of [${vocab}, ${dim}]`,
      bytes: 4 * count + 8 * count * dim,
      pretext: () => embedding(ids, w),
      tfjs: () => tf.gather(tw, tids),
    };
  });
  // topk of 200 along rows of 50,000 (a kNN evaluation's similarities), values and indices (tf.topk).
  cases.push(() => {
    const [rows, len, k] = [ctx.quick ? 64 : 256, 50_000, 200];
    const [x, tx] = both(randomArray(rows * len, 22), [rows, len]);
    return {
      kernel: "topk",
      size: `[${rows}, ${len}], k ${k}`,
      bytes: 4 * rows * len,
      pretext: () => {
        const r = topk(x, k);
        r.indices.dispose();
        return r.values;
      },
      tfjs: () => {
        const r = tf.topk(tx, k);
        r.indices.dispose();
        return r.values;
      },
    };
  });
  // A 3×3 convolution (padding 1) forward and backward, input and weight gradients: NCHW in pretext, NHWC (TF.js's
  // own layout) in TF.js. Forward+backward returns a gradient; the loss and the other intermediates go.
  const batch = ctx.quick ? 8 : 64;
  cases.push(() => {
    const [c, hw, o] = [64, 16, 64];
    const [x, tx] = both(randomArray(batch * c * hw * hw, 1), [batch, c, hw, hw]);
    const [w, tw] = both(randomArray(o * c * 9, 2, -0.1, 0.1), [o, c, 3, 3]);
    const [up, tup] = both(randomArray(batch * o * hw * hw, 3), [batch, o, hw, hw]);
    const tfNhwc = tf.tidy(() => [tf.transpose(tx, [0, 2, 3, 1]), tf.transpose(tup, [0, 2, 3, 1])]);
    const tfFilter = tf.tidy(() => tf.transpose(tw, [2, 3, 1, 0]));
    held.push(...tfNhwc, tfFilter);
    const tfConv = tf.valueAndGrads((a: TF.Tensor, f: TF.Tensor) =>
      tf.sum(tf.mul(tf.conv2d(a as TF.Tensor4D, f as TF.Tensor4D, 1, "same"), tfNhwc[1]))
    );
    return {
      kernel: "conv2d.fwdbwd",
      size: `${[batch, c, hw, hw].join("×")}*${o}×3×3`,
      flops: 3 * 2 * batch * o * c * 9 * hw * hw,
      pretext: () => {
        const y = conv2d(x, w, { padding: 1 });
        const prod = mul(y, up);
        const loss = sum(prod);
        const [gx, gw] = grad(loss, [x, w]);
        for (const t of [y, prod, loss, gw]) t.dispose();
        return gx;
      },
      tfjs: () => tf.tidy(() => tfConv([tfNhwc[0], tfFilter]).grads[0]),
    };
  });
  // Forward+backward returns the gradient; the loss and the other intermediates go.
  const image = ctx.quick ? [16, 3, 64, 64] : [64, 3, 224, 224];
  cases.push(() => {
    const count = image.reduce((p, d) => p * d, 1);
    const [pred, tpred] = both(randomArray(count, 1, 0, 1), image);
    const [target, ttarget] = both(randomArray(count, 2, 0, 1), image);
    const tfMse = tf.valueAndGrad((p: TF.Tensor) => tf.mean(tf.squaredDifference(p, ttarget)));
    return {
      kernel: "recon.mse.fwdbwd",
      size: `[${image.join(",")}]`,
      bytes: 3 * count * 4,
      pretext: () => {
        const loss = mse(pred, target);
        const [g] = grad(loss, [pred]);
        loss.dispose();
        return g;
      },
      tfjs: () => tf.tidy(() => tfMse(tpred).grad),
    };
  });
  // TF.js has no fused ntXent: the materialised (2N)² logits, self-similarity masked by −1e9, and softmax
  // cross-entropy against the positive pairs, as the contrastive section's materialising version does.
  for (const k of ctx.quick ? [256] : [256, 1024]) {
    cases.push(() => {
      const D = 128;
      const [z1, t1] = both(randomArray(k * D, 1, -1, 1), [k, D]);
      const [z2, t2] = both(randomArray(k * D, 2, -1, 1), [k, D]);
      const mask = tf.tidy(() => tf.mul(tf.eye(2 * k), -1e9));
      const labels = Int32Array.from({ length: 2 * k }, (_, i) => (i + k) % (2 * k));
      const positives = tf.tidy(() => tf.oneHot(tf.tensor1d(labels, "int32"), 2 * k));
      held.push(mask, positives);
      const tfNtXent = tf.valueAndGrads((a: TF.Tensor, b: TF.Tensor) => {
        const z = tf.concat([a, b], 0);
        const u = tf.div(z, tf.norm(z, "euclidean", 1, true));
        const logits = tf.add(tf.mul(tf.matMul(u, u, false, true), 1 / TEMPERATURE), mask);
        return tf.losses.softmaxCrossEntropy(positives, logits);
      });
      return {
        kernel: "ntxent.fwdbwd",
        size: `N=${k},D=${D}`,
        flops: 3 * 2 * (2 * k) ** 2 * D,
        pretext: () => {
          const loss = ntXent(z1, z2, { temperature: TEMPERATURE });
          const [g1, g2] = grad(loss, [z1, z2]);
          loss.dispose();
          g2.dispose();
          return g1;
        },
        tfjs: () => tf.tidy(() => tfNtXent([t1, t2]).grads[0]),
      };
    });
  }
  // Random resized crops to 224²: pretext's per-sample crops (NCHW), and the same boxes through TF.js's
  // cropAndResize (NHWC, bilinear). Each call uploads its boxes, as pretext uploads its per-sample records.
  const crops = ctx.quick ? 8 : 64;
  cases.push(() => {
    const [h, out] = [256, 224];
    const host = randomArray(crops * 3 * h * h, 3, 0, 1);
    const x = e.tensor(host, [crops, 3, h, h]);
    const tx = tf.randomUniform([crops, h, h, 3]);
    held.push(x, tx);
    const { output, params } = randomResizedCrop(x, { seed: 1, size: out });
    output.dispose();
    const boxes = params.flatMap(({ crop }) => [
      crop.top / (h - 1),
      crop.left / (h - 1),
      (crop.top + crop.height - 1) / (h - 1),
      (crop.left + crop.width - 1) / (h - 1),
    ]);
    const indices = tf.tensor1d(params.map((_, i) => i), "int32");
    held.push(indices);
    const covered = params.reduce((s, { crop }) => s + crop.height * crop.width, 0);
    return {
      kernel: "augment.crop",
      size: `N=${crops},HW=${h}→${out}`,
      // Source pixels inside the crops read once, the output written once.
      bytes: 3 * 4 * (covered + crops * out * out),
      pretext: () => randomResizedCrop(x, { seed: 1, size: out }).output,
      tfjs: () =>
        tf.tidy(() =>
          tf.image.cropAndResize(tx as TF.Tensor4D, tf.tensor2d(boxes, [crops, 4]), indices, [out, out])
        ),
    };
  });

  try {
    for (const make of cases) {
      const c = make();
      const [ms, tfMs] = await alternate(
        ctx,
        { run: c.pretext, first: firstPretext },
        { run: c.tfjs, first: firstTf },
      );
      const ratio = tfMs / ms;
      ctx.add({
        kernel: c.kernel,
        size: c.size,
        backend: "tfjs-webgpu",
        ms: tfMs,
        bytes: c.bytes,
        flops: c.flops,
        pretextMs: ms,
        note: `pretext ${fmtMs(ms)} ms: ${(ratio >= 1 ? ratio : 1 / ratio).toFixed(1)}x ` +
          `${ratio >= 1 ? "faster" : "slower"} (wall time, both timed alike)`,
      });
      for (const t of held.splice(0)) t.dispose();
    }
  } finally {
    for (const t of held) t.dispose();
    // Frees TF.js's buffers and its device's work before the next section.
    tf.removeBackend("webgpu");
  }
}
