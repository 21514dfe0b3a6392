// Core section: the adapter's ceilings (copy bandwidth, peak FMA rate), then elementwise, reduction,
// transpose, matmul, a small MLP's forward+backward, embedding lookups and optimiser steps, each on WebGPU and
// against its float64 CPU reference.
import {
  adamw,
  add,
  embedding,
  exp,
  grad,
  knnScores,
  lars,
  matmul,
  mean,
  mul,
  Params,
  relu,
  sgd,
  softmax,
  square,
  sub,
  sum,
  type Tensor,
  topk,
  transpose,
} from "../src/mod.ts";
import { refBinary, refUnary } from "../src/ref/elementwise.ts";
import { refGatherRows, refScatterAdd } from "../src/ref/gather.ts";
import { refMatmul } from "../src/ref/matmul.ts";
import { refAdamStep, refLarsStep, refSgdStep } from "../src/ref/optim.ts";
import { refSoftmax, refSum } from "../src/ref/reduce.ts";
import { refTranspose } from "../src/ref/shape.ts";
import { refKnnScores } from "../src/ref/knn.ts";
import { refTopk } from "../src/ref/topk.ts";
import { randomArray } from "../test/util.ts";
import { type BenchContext, fastest, type Row } from "./lib.ts";

const M = 2 ** 20;

/** f32 elements the copy ceilings move: 64M (16M with --quick), or as many as `limitBytes` holds. */
const copyLength = (ctx: BenchContext, limitBytes: number) =>
  Math.min(ctx.quick ? 16 * M : 64 * M, Math.floor(limitBytes / 4));

/**
 * Copy bandwidth: bytes read plus written by copyBufferToBuffer between two tensors, timed by timestamps of
 * empty compute passes around the copies (copies have no timestamps of their own), else by wall time.
 */
async function copyCeiling(ctx: BenchContext): Promise<number> {
  const { engine } = ctx;
  const n = copyLength(ctx, engine.limits.maxBufferSize);
  const copies = 4;
  using src = engine.rand([n]);
  using dst = engine.zeros([n]);
  await engine.sync();
  const device = engine.device;
  const timestamps = device.features.has("timestamp-query");
  const querySet = timestamps ? device.createQuerySet({ type: "timestamp", count: 2 }) : null;
  const resolve = device.createBuffer({
    size: 16,
    usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC,
  });
  const staging = device.createBuffer({ size: 16, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
  const samples: number[] = [];
  try {
    for (let r = 0; r < (ctx.quick ? 3 : 5); r++) {
      const encoder = device.createCommandEncoder();
      if (querySet) {
        encoder.beginComputePass({ timestampWrites: { querySet, beginningOfPassWriteIndex: 0 } }).end();
      }
      for (let i = 0; i < copies; i++) encoder.copyBufferToBuffer(src.buffer, 0, dst.buffer, 0, n * 4);
      if (querySet) {
        encoder.beginComputePass({ timestampWrites: { querySet, endOfPassWriteIndex: 1 } }).end();
        encoder.resolveQuerySet(querySet, 0, 2, resolve, 0);
        encoder.copyBufferToBuffer(resolve, 0, staging, 0, 16);
      }
      const start = performance.now();
      device.queue.submit([encoder.finish()]);
      if (querySet) {
        await staging.mapAsync(GPUMapMode.READ);
        const [t0, t1] = new BigUint64Array(staging.getMappedRange().slice(0));
        staging.unmap();
        samples.push(Number(t1 - t0) / 1e6);
      } else {
        await device.queue.onSubmittedWorkDone();
        samples.push(performance.now() - start);
      }
    }
  } finally {
    querySet?.destroy();
    resolve.destroy();
    staging.destroy();
  }
  const ms = fastest(samples);
  ctx.add({
    kernel: "ceiling: copy",
    size: `${n / M}M f32 x${copies}`,
    backend: "webgpu",
    ms,
    bytes: 2 * 4 * n * copies,
  });
  return (2 * 4 * n * copies) / ms / 1e6;
}

/** Peak f32 rate from shaders/ceiling.wgsl: `rounds` grows until one run takes long enough to time well. */
async function fmaCeiling(ctx: BenchContext): Promise<number> {
  const { engine } = ctx;
  const WG = 64;
  const workgroups = 16384;
  const invocations = WG * workgroups;
  using out = engine.empty([invocations]);
  const run = (rounds: number) =>
    engine.run({
      op: "fma ceiling",
      shader: "ceiling",
      entry: "fma_peak",
      constants: { WG },
      params: new Params().u32(rounds).f32(0.999, 0.001),
      buffers: [out],
      workgroups,
    });
  // Far below llvmpipe's 65,535-iteration cap on one invocation's loops.
  const MAX_ROUNDS = 16384;
  // Long enough that launching the million invocations and storing their results (~50 ms on llvmpipe) is noise.
  const target = ctx.quick ? 100 : 500;
  let rounds = 16;
  let ms = await ctx.gpu(() => run(rounds), 1);
  while (ms < target && rounds < MAX_ROUNDS) {
    rounds = Math.min(MAX_ROUNDS, rounds * Math.max(2, Math.ceil(target / Math.max(ms, 0.01))));
    ms = await ctx.gpu(() => run(rounds), 1);
  }
  ms = await ctx.gpu(() => run(rounds), undefined, fastest);
  const flops = invocations * rounds * 256;
  ctx.add({
    kernel: "ceiling: fma",
    size: `${invocations / M}M inv x${rounds}`,
    backend: "webgpu",
    ms,
    flops,
  });
  return flops / ms / 1e6;
}

/**
 * A kernel's copy (shaders/ceiling.wgsl's copy_peak) in both layouts, the faster kept. Rows are not rated against
 * it: it says what a kernel that reads and writes storage once per vec4 reaches on this adapter, beside
 * copyBufferToBuffer's bandwidth (on llvmpipe about half of it, each access a loop over the SIMD lanes).
 */
async function copyKernel(ctx: BenchContext): Promise<void> {
  const { engine } = ctx;
  const n = copyLength(ctx, engine.limits.maxStorageBufferBindingSize);
  const WG = 256;
  using src = engine.rand([n]);
  using dst = engine.zeros([n]);
  const run = (per: number) =>
    engine.run({
      op: "copy kernel",
      shader: "ceiling",
      entry: "copy_peak",
      constants: { WG, PER: per },
      params: new Params().u32(0).f32(0, 0).u32(n / 4),
      buffers: [src, dst],
      workgroups: Math.ceil(n / 4 / per / WG),
    });
  let ms = Infinity;
  for (const per of [1, 4]) ms = Math.min(ms, await ctx.gpu(() => run(per), undefined, fastest));
  ctx.add({ kernel: "ceiling: copy kernel", size: `${n / M}M f32`, backend: "webgpu", ms, bytes: 2 * 4 * n });
}

/** Measures the ceilings (before any section: rows report their fraction of them). */
export async function measureCeilings(ctx: BenchContext): Promise<void> {
  ctx.ceilings.copyGBps = await copyCeiling(ctx);
  ctx.ceilings.fmaGFLOPs = await fmaCeiling(ctx);
  await copyKernel(ctx);
}

const label = (n: number) => (n >= M ? `${n / M}M` : `${n / 1024}K`);
const fmtShape = (s: readonly number[]) => `[${s.join(", ")}]`;

/**
 * Adds the WebGPU row of `row` and the CPU reference's row. CPU references on big inputs (over `4M`
 * elements, or `big`) take seconds: --quick leaves them out and the full run times one call.
 */
async function compare(
  ctx: BenchContext,
  row: Omit<Row, "backend" | "ms">,
  elements: number,
  gpu: () => void,
  cpu: () => unknown,
): Promise<void> {
  ctx.add({ ...row, backend: "webgpu", ms: await ctx.gpu(gpu) });
  const big = elements > 4 * M;
  if (!ctx.quick || !big) ctx.add({ ...row, backend: "cpu", ms: ctx.cpu(cpu, big ? 1 : 3) });
}

async function elementwise(ctx: BenchContext): Promise<void> {
  const { engine } = ctx;
  for (const n of [M, 16 * M]) {
    const xa = randomArray(n, 1);
    const xb = randomArray(n, 2);
    using a = engine.tensor(xa, [n]);
    using b = engine.tensor(xb, [n]);
    const size = label(n);
    for (const [kernel, op] of [["exp", exp], ["relu", relu]] as const) {
      await compare(
        ctx,
        { kernel, size, bytes: 8 * n },
        n,
        () => op(a).dispose(),
        () => refUnary(kernel, xa),
      );
    }
    for (const [kernel, op] of [["add", add], ["mul", mul]] as const) {
      const cpu = () => refBinary(kernel, xa, [n], xb, [n]);
      await compare(ctx, { kernel, size, bytes: 12 * n }, n, () => op(a, b).dispose(), cpu);
    }
  }
  // A bias add: each row of an [R, 1024] matrix plus one [1024] vector.
  const cols = 1024;
  for (const rows of ctx.quick ? [4096] : [1024, 16384]) {
    const xa = randomArray(rows * cols, 3);
    const xb = randomArray(cols, 4);
    using a = engine.tensor(xa, [rows, cols]);
    using b = engine.tensor(xb, [cols]);
    const row = {
      kernel: "add (broadcast)",
      size: `${fmtShape([rows, cols])}+[${cols}]`,
      bytes: 4 * (2 * rows + 1) * cols,
    };
    const cpu = () => refBinary("add", xa, [rows, cols], xb, [cols]);
    await compare(ctx, row, rows * cols, () => add(a, b).dispose(), cpu);
  }
}

async function reductions(ctx: BenchContext): Promise<void> {
  const { engine } = ctx;
  for (const n of [M, 16 * M]) {
    const x = randomArray(n, 5);
    using t = engine.tensor(x, [n]);
    const row = { kernel: "sum", size: label(n), bytes: 4 * n + 4 };
    await compare(ctx, row, n, () => sum(t).dispose(), () => refSum(x, [n], [0]));
  }
  for (const shape of ctx.quick ? [[4096, 1024]] : [[256, 1024], [4096, 1024]]) {
    const n = shape[0] * shape[1];
    const x = randomArray(n, 6, -4, 4);
    using t = engine.tensor(x, shape);
    const row = { kernel: "softmax (rows)", size: fmtShape(shape), bytes: 8 * n };
    await compare(ctx, row, n, () => softmax(t).dispose(), () => refSoftmax(x, shape, 1));
  }
}

/** 2-D transposes in 4×4 blocks: of vec4s where both dims are multiples of 4, else of elements. */
async function transposes(ctx: BenchContext): Promise<void> {
  const { engine } = ctx;
  const shapes = ctx.quick ? [[1024, 1024], [1023, 1025]] : [[1024, 1024], [4096, 4096], [4095, 4097]];
  for (const [rows, cols] of shapes) {
    const n = rows * cols;
    const x = randomArray(n, 12);
    using t = engine.tensor(x, [rows, cols]);
    const row = { kernel: "transpose", size: fmtShape([rows, cols]), bytes: 8 * n };
    await compare(ctx, row, n, () => transpose(t).dispose(), () => refTranspose(x, [rows, cols], [1, 0]));
  }
}

async function matmuls(ctx: BenchContext): Promise<void> {
  const { engine } = ctx;
  for (const n of [256, 1024]) {
    const xa = randomArray(n * n, 7);
    const xb = randomArray(n * n, 8);
    using a = engine.tensor(xa, [n, n]);
    using b = engine.tensor(xb, [n, n]);
    const row = { kernel: "matmul", size: `${n}³`, flops: 2 * n ** 3, bytes: 3 * 4 * n * n };
    // The CPU reference's cost goes with n³: count it as that many elements.
    const cpu = () => refMatmul({ data: xa, shape: [n, n] }, { data: xb, shape: [n, n] });
    await compare(ctx, row, n ** 3 / 64, () => matmul(a, b).dispose(), cpu);
  }
}
const MLP = { batch: 256, inputs: 256, hidden: 512, outputs: 64 };
type MlpData<T> = { x: T; y: T; w1: T; b1: T; w2: T; b2: T };

/** Float64 forward+backward of the MLP below: gradients of mean((relu(x·W1 + b1)·W2 + b2 − y)²). */
function refMlp({ x, y, w1, b1, w2, b2 }: MlpData<Float32Array>): Float64Array[] {
  const { batch, inputs, hidden, outputs } = MLP;
  const mm = (a: ArrayLike<number>, as: number[], b: ArrayLike<number>, bs: number[], t = {}) =>
    refMatmul({ data: a, shape: as }, { data: b, shape: bs }, t).data;
  const z1 =
    refBinary("add", mm(x, [batch, inputs], w1, [inputs, hidden]), [batch, hidden], b1, [hidden]).data;
  const h = refUnary("relu", z1);
  const z2 =
    refBinary("add", mm(h, [batch, hidden], w2, [hidden, outputs]), [batch, outputs], b2, [outputs]).data;
  const g2 = z2.map((v, i) => (2 * (v - y[i])) / z2.length);
  const gh = mm(g2, [batch, outputs], w2, [hidden, outputs], { transB: true });
  const gz1 = gh.map((v, i) => (z1[i] > 0 ? v : 0));
  return [
    mm(x, [batch, inputs], gz1, [batch, hidden], { transA: true }),
    refSum(gz1, [batch, hidden], [0]).data,
    mm(h, [batch, hidden], g2, [batch, outputs], { transA: true }),
    refSum(g2, [batch, outputs], [0]).data,
  ];
}

async function mlp(ctx: BenchContext): Promise<void> {
  const { batch, inputs, hidden, outputs } = MLP;
  const shapes: MlpData<number[]> = {
    x: [batch, inputs],
    y: [batch, outputs],
    w1: [inputs, hidden],
    b1: [hidden],
    w2: [hidden, outputs],
    b2: [outputs],
  };
  // Inputs and targets in [-1, 1), parameters in [-0.1, 0.1).
  const host = Object.fromEntries(
    Object.entries(shapes).map(([name, shape], i) => {
      const scale = name.length === 1 ? 1 : 0.1;
      return [name, randomArray(shape.reduce((p: number, d: number) => p * d, 1), 9 + i, -scale, scale)];
    }),
  ) as MlpData<Float32Array>;
  const t = Object.fromEntries(
    Object.entries(shapes).map(([name, shape]) => {
      return [name, ctx.engine.tensor(host[name as keyof typeof host], shape)];
    }),
  ) as MlpData<Tensor>;
  try {
    const step = () =>
      ctx.engine.tidy(() => {
        const h = relu(add(matmul(t.x, t.w1), t.b1));
        const loss = mean(square(sub(add(matmul(h, t.w2), t.b2), t.y)));
        grad(loss, [t.w1, t.b1, t.w2, t.b2]);
      });
    // Forward plus the backward's products: each weight's gradient, and the hidden layer's (x needs none).
    const flops = 4 * batch * inputs * hidden + 6 * batch * hidden * outputs;
    const row = { kernel: "mlp fwd+bwd", size: `${batch}x${inputs}-${hidden}-${outputs}`, flops };
    await compare(ctx, row, batch * hidden, step, () => refMlp(host));
  } finally {
    for (const x of Object.values(t)) x.dispose();
  }
}

/**
 * A BERT-base embedding table [30,522, 768] looked up by 8,192 token ids (a batch of 16 × 512), forward (bytes:
 * the ids, the rows read and the output written) and forward+backward of Σ y·u (the dense table gradient: a
 * zero fill, the product's passes and the scatter-add).
 */
async function embeddings(ctx: BenchContext): Promise<void> {
  const { engine } = ctx;
  const [vocab, dim, n] = [30_522, 768, ctx.quick ? 2048 : 8192];
  const table = randomArray(vocab * dim, 20);
  const idList = Int32Array.from({ length: n }, (_, i) => (i * 7919 + 13) % vocab);
  const up = randomArray(n * dim, 21);
  using w = engine.tensor(table, [vocab, dim]);
  using ids = engine.tensor(idList, [n], "i32");
  using u = engine.tensor(up, [n, dim]);
  const size = `${n} ids of [${vocab}, ${dim}]`;
  const rows: [number, number, number] = [1, vocab, dim];
  await compare(
    ctx,
    { kernel: "embedding", size, bytes: 4 * n + 8 * n * dim },
    n * dim,
    () => embedding(ids, w).dispose(),
    () => refGatherRows(table, rows, idList),
  );
  const step = () =>
    engine.tidy(() => {
      grad(sum(mul(embedding(ids, w), u)), [w]);
    });
  await compare(ctx, { kernel: "embedding fwd+bwd", size }, n * dim, step, () => {
    refGatherRows(table, rows, idList);
    refScatterAdd(up, rows, idList);
  });
}

/**
 * Selection: topk of 200 along rows of 50,000 (a kNN evaluation's similarities to a feature bank), and the whole
 * weighted kNN classifier over a bank of 50,000 × 128 (the similarity matmul included). Bytes are one read of x.
 */
async function selection(ctx: BenchContext): Promise<void> {
  const { engine } = ctx;
  const [queries, bankRows, dim, k] = [ctx.quick ? 64 : 256, 50_000, 128, 200];
  const xs = randomArray(queries * bankRows, 22);
  using x = engine.tensor(xs, [queries, bankRows]);
  const size = `[${queries}, ${bankRows}], k ${k}`;
  await compare(ctx, { kernel: "topk", size, bytes: 4 * xs.length }, xs.length, () => {
    const r = topk(x, k);
    r.values.dispose();
    r.indices.dispose();
  }, () => refTopk(xs, [queries, bankRows], k));
  const fs = randomArray(queries * dim, 23);
  const bs = randomArray(bankRows * dim, 24);
  const ls = Int32Array.from({ length: bankRows }, (_, i) => i % 10);
  using f = engine.tensor(fs, [queries, dim]);
  using bank = engine.tensor(bs, [bankRows, dim]);
  using labels = engine.tensor(ls, [bankRows], "i32");
  await compare(
    ctx,
    {
      kernel: "knnScores",
      size: `${queries} of [${bankRows}, ${dim}], k ${k}`,
      flops: 2 * queries * bankRows * dim,
    },
    xs.length,
    () => knnScores(f, bank, labels, { classes: 10, k }).dispose(),
    () => refKnnScores(fs, bs, ls, [queries, bankRows, dim], 10, k, 0.1),
  );
}

/**
 * One optimiser step on a [16K, 1024] parameter. Bytes are what a step must move at least: SGD with momentum
 * reads w, g and the buffer and writes w and the buffer; AdamW reads w, g, m, v and writes w, m, v; LARS reads
 * w and g once more for its norms before its momentum step.
 */
async function optimisers(ctx: BenchContext): Promise<void> {
  const { engine } = ctx;
  const shape = [ctx.quick ? 1024 : 16384, 1024];
  const n = shape[0] * shape[1];
  const xw = randomArray(n, 7);
  const xg = randomArray(n, 8, -1e-2, 1e-2);
  using w = engine.tensor(xw, shape);
  using g = engine.tensor(xg, shape);
  const w64 = Float64Array.from(xw);
  const state = [new Float64Array(n), new Float64Array(n)];
  const size = fmtShape(shape);
  const rows = [
    {
      kernel: "sgd (momentum)",
      words: 5,
      make: () => sgd([w], { lr: 1e-3, momentum: 0.9 }),
      cpu: () =>
        refSgdStep(w64, xg, state[0], {
          lr: 1e-3,
          momentum: 0.9,
          dampening: 0,
          weightDecay: 0,
          nesterov: false,
        }, false),
    },
    {
      kernel: "adamw",
      words: 7,
      make: () => adamw([w], { lr: 1e-3 }),
      cpu: () =>
        refAdamStep(w64, xg, state[0], state[1], 2, {
          lr: 1e-3,
          beta1: 0.9,
          beta2: 0.999,
          eps: 1e-8,
          weightDecay: 0.01,
          decoupled: true,
        }),
    },
    {
      kernel: "lars",
      words: 7,
      make: () => lars([w], { lr: 0.1, weightDecay: 1e-6 }),
      cpu: () =>
        refLarsStep(w64, xg, state[0], { lr: 0.1, momentum: 0.9, weightDecay: 1e-6, eta: 1e-3, adapt: true }),
    },
  ];
  for (const { kernel, words, make, cpu } of rows) {
    using opt = make();
    await compare(ctx, { kernel, size, bytes: 4 * words * n }, n, () => opt.step([g]), cpu);
  }
}

export async function bench(ctx: BenchContext): Promise<void> {
  await elementwise(ctx);
  await reductions(ctx);
  await transposes(ctx);
  await matmuls(ctx);
  await mlp(ctx);
  await embeddings(ctx);
  await selection(ctx);
  await optimisers(ctx);
}
