// A masked autoencoder (He et al., 2021) in miniature: three quarters of each image's patches are hidden, the
// encoder (one transformer block) sees only the visible ones, gathered by maskedImageTask's `shuffle`; the
// decoder puts mask tokens in the hidden places (`restore`), attends over all of them and predicts their pixels,
// scored by maskedMSE. Images are examples/simclr.ts's striped and chequered patterns, each tinted with a random
// colour that only its visible patches tell: the held-out loss on a fixed masking falls below what predicting
// grey everywhere scores as the model carries that colour to the hidden patches.
//   deno run -A examples/mae.ts [--steps 300]
import {
  adamw,
  add,
  attention,
  concat,
  type Engine,
  gatherRows,
  gelu,
  grad,
  init,
  layerNorm,
  maskedImageTask,
  maskedMSE,
  matmul,
  mul,
  noGrad,
  reshape,
  slice,
  type Tensor,
  transpose,
} from "../src/mod.ts";
import { refRand } from "../src/ref/random.ts";
import { patterns } from "./simclr.ts";

export interface MaeOptions {
  steps: number;
  /** Images per step. */
  batch?: number;
  seed?: number;
  /** AdamW's learning rate. */
  lr?: number;
  /** Called with the step and its loss every `logEvery` steps. */
  log?: (step: number, loss: number) => void;
  logEvery?: number;
}

export interface MaeResult {
  /** The training loss of every `logEvery`-th step. */
  losses: number[];
  /** maskedMSE of the held-out images under one fixed masking, before and after training. */
  heldOutLossBefore: number;
  heldOutLossAfter: number;
}

const IMAGE = 32;
const PATCH = 8;
const PATCHES = (IMAGE / PATCH) ** 2;
const PIXELS = PATCH * PATCH * 3;
const RATIO = 0.75;
const VISIBLE = PATCHES - Math.round(RATIO * PATCHES);
const WIDTH = 64; // encoder and decoder token width
const TRAIN = 512;
const HELD_OUT = 128;

/** examples/simclr.ts's patterns at 30% over a random tint (three Philox draws per image), RGBA. */
function tintedPatterns(n: number, seed: number): Uint8Array {
  const { rgba } = patterns(n, IMAGE, seed);
  const tints = refRand(3 * n, seed + 1);
  for (let i = 0; i < rgba.length; i++) {
    const c = i % 4;
    if (c < 3) rgba[i] = 0.3 * rgba[i] + 0.7 * 255 * tints[3 * Math.floor(i / (4 * IMAGE * IMAGE)) + c];
  }
  return rgba;
}

/** [N, 3, H, W] as MAE's tokens [N, patches, PATCH²·3], pixels in row, column, channel order (maskedMSE's). */
function patchify(x: Tensor): Tensor {
  const n = x.shape[0];
  const side = IMAGE / PATCH;
  const grid = reshape(x, [n, 3, side, PATCH, side, PATCH]);
  const moved = transpose(grid, [0, 2, 4, 3, 5, 1]);
  const tokens = reshape(moved, [n, PATCHES, PIXELS]);
  grid.dispose();
  moved.dispose();
  return tokens;
}

/**
 * The model's weights (drawn from `seed`) and its loss: maskedMSE of `images` [N, 3, 32, 32] under MAE's
 * masking drawn from `maskSeed`, recorded for grad. Call `loss` inside engine.tidy.
 */
export function maeModel(engine: Engine, seed: number): {
  params: Tensor[];
  loss: (images: Tensor, maskSeed: number) => Tensor;
} {
  // Weights drawn outside the graph (the optimiser updates them in place), scaled for `fanIn` inputs.
  let draws = seed * 1000;
  const weight = (shape: number[], fanIn: number) =>
    noGrad(() => engine.tidy(() => mul(engine.randn(shape, { seed: draws++ }), 1 / Math.sqrt(fanIn))));
  // A pre-norm transformer block over tokens [N, T, WIDTH]: single-head self-attention, then an MLP, each added
  // back. The encoder has one over the visible tokens, the decoder one over all of them.
  const blockWeights = () => ({
    query: weight([WIDTH, WIDTH], WIDTH),
    key: weight([WIDTH, WIDTH], WIDTH),
    value: weight([WIDTH, WIDTH], WIDTH),
    mlp1: weight([WIDTH, 2 * WIDTH], WIDTH),
    mlp2: weight([2 * WIDTH, WIDTH], 2 * WIDTH),
  });
  type Block = ReturnType<typeof blockWeights>;
  const block = (w: Block, h: Tensor) => {
    const x = layerNorm(h, [WIDTH]);
    const attended = add(h, attention(matmul(x, w.query), matmul(x, w.key), matmul(x, w.value)));
    return add(attended, matmul(gelu(matmul(layerNorm(attended, [WIDTH]), w.mlp1)), w.mlp2));
  };
  const encoder = blockWeights();
  const decoder = blockWeights();
  const p = {
    embed: weight([PIXELS, WIDTH], PIXELS),
    position: weight([PATCHES, WIDTH], 1 / 0.02 ** 2), // N(0, 0.02²), as MAE's learned position embeddings
    maskToken: weight([WIDTH], 1 / 0.02 ** 2),
    decoderPosition: weight([PATCHES, WIDTH], 1 / 0.02 ** 2),
    toPixels: weight([WIDTH, PIXELS], WIDTH),
  };
  const params = [...Object.values(encoder), ...Object.values(decoder), ...Object.values(p)];

  const loss = (images: Tensor, maskSeed: number) => {
    const n = images.shape[0];
    const task = maskedImageTask(images, { seed: maskSeed, patch: PATCH, ratio: RATIO });
    const visible = slice(task.shuffle, [0, 0], [n, VISIBLE]);
    const tokens = add(matmul(patchify(images), p.embed), p.position);
    const encoded = block(encoder, gatherRows(tokens, visible));
    // Mask tokens in the hidden places, every token back where its patch is, then the decoder.
    const hidden = add(engine.zeros([n, PATCHES - VISIBLE, WIDTH]), p.maskToken);
    const placed = add(gatherRows(concat([encoded, hidden], 1), task.restore), p.decoderPosition);
    const pixels = matmul(layerNorm(block(decoder, placed), [WIDTH]), p.toPixels);
    return maskedMSE(pixels, images, task.mask, { patch: PATCH });
  };
  return { params, loss };
}

/** Trains the encoder and decoder with MAE's masking and loss; every tensor it makes is freed. */
export async function train(engine: Engine, o: MaeOptions): Promise<MaeResult> {
  const batch = o.batch ?? 64;
  const seed = o.seed ?? 1;
  const logEvery = o.logEvery ?? 10;
  if (!(Number.isInteger(o.steps) && o.steps >= 1)) {
    throw new RangeError(`train: steps must be a positive integer, got ${o.steps}`);
  }
  if (!(Number.isInteger(batch) && batch >= 1 && batch <= TRAIN)) {
    throw new RangeError(`train: batch must be an integer in [1, ${TRAIN}], got ${batch}`);
  }
  const rgba = tintedPatterns(TRAIN + HELD_OUT, seed);
  using pool = engine.images(rgba, { n: TRAIN + HELD_OUT, height: IMAGE, width: IMAGE });
  const { params, loss } = maeModel(engine, seed);
  const heldOutLoss = async () => {
    using l = noGrad(() => engine.tidy(() => loss(slice(pool, [TRAIN], [TRAIN + HELD_OUT]), 7)));
    return (await l.toArray())[0];
  };
  try {
    const heldOutLossBefore = await heldOutLoss();
    using opt = adamw(params, { lr: o.lr ?? 2e-3, weightDecay: 0.05 });
    const losses: number[] = [];
    for (let step = 0; step < o.steps; step++) {
      const [value, grads] = engine.tidy(() => {
        const first = (step * batch) % (TRAIN - batch + 1);
        const l = loss(slice(pool, [first], [first + batch]), seed * 100_003 + step);
        return [l, grad(l, params)] as const;
      });
      opt.step(grads);
      for (const g of grads) g.dispose();
      if (step % logEvery === 0 || step === o.steps - 1) {
        const v = (await value.toArray())[0];
        losses.push(v);
        o.log?.(step, v);
      }
      value.dispose();
    }
    return { losses, heldOutLossBefore, heldOutLossAfter: await heldOutLoss() };
  } finally {
    for (const t of params) t.dispose();
  }
}

if (import.meta.main) {
  const at = Deno.args.indexOf("--steps");
  const steps = at >= 0 ? Number(Deno.args[at + 1]) : 300;
  const engine = await init();
  console.log(`adapter: ${engine.adapterName}`);
  const started = performance.now();
  const result = await train(engine, {
    steps,
    log: (step, loss) => console.log(`step ${String(step).padStart(4)}  maskedMSE ${loss.toFixed(4)}`),
  });
  console.log(
    `held-out maskedMSE ${result.heldOutLossBefore.toFixed(3)} before training, ` +
      `${result.heldOutLossAfter.toFixed(3)} after (${((performance.now() - started) / 1000).toFixed(1)} s)`,
  );
}
