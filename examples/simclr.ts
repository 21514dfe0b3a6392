// SimCLR end to end: an encoder learns, from unlabelled images and the NT-Xent pretext task alone, features in
// which images of one class lie nearer each other. The data is synthetic (stripes three ways and checkers, each
// image in a random colour on its complement, with a random period and phase) so the example needs no download.
// What it learnt is measured on held-out images: the loss of one fixed pair of views, and the accuracy of a
// 1-nearest-neighbour classifier on the encoder's features against the labelled training images.
//
//   deno run -A examples/simclr.ts [--steps 300]
//
// `train` runs in a browser too (test/examples_test.ts runs a short one in Deno and in Chromium).
import {
  adamw,
  add,
  argmax,
  conv2d,
  type Engine,
  grad,
  init,
  matmul,
  mean,
  mul,
  noGrad,
  normalize,
  ntXent,
  randomResizedCrop,
  relu,
  simclrViews,
  slice,
  type Tensor,
} from "../src/mod.ts";
import { refRand } from "../src/ref/random.ts";

export const CLASSES = ["horizontal stripes", "vertical stripes", "checkers", "diagonal stripes"];

/**
 * `n` RGBA images of `size`², image i of class i mod 4 in a random colour on its complement, with a random period
 * and phase (six Philox draws per image, as `engine.rand` would draw them).
 */
export function patterns(n: number, size: number, seed: number): { rgba: Uint8Array; labels: number[] } {
  const draws = refRand(6 * n, seed);
  const rgba = new Uint8Array(n * size * size * 4);
  const labels: number[] = [];
  for (let i = 0; i < n; i++) {
    const label = i % CLASSES.length;
    labels.push(label);
    const [r, g, b, u, v, w] = draws.subarray(6 * i, 6 * i + 6);
    const fg = [r, g, b].map((c) => 255 * c);
    const bg = fg.map((c) => 255 - c);
    const period = 4 + 4 * u;
    const phase = period * v;
    const slope = w < 0.5 ? 1 : -1;
    for (let y = 0; y < size; y++) {
      for (let x = 0; x < size; x++) {
        const band = (t: number) => Math.floor((t + phase) / (period / 2)) % 2;
        const on = [band(y), band(x), band(x) ^ band(y), band((x + slope * y) / Math.SQRT2)][label];
        const at = ((i * size + y) * size + x) * 4;
        for (let c = 0; c < 3; c++) rgba[at + c] = on ? fg[c] : bg[c];
        rgba[at + 3] = 255;
      }
    }
  }
  return { rgba, labels };
}

export interface TrainOptions {
  steps: number;
  /** Images per step (two views each). */
  batch?: number;
  /** Side of the views and of the encoder's input. */
  viewSize?: number;
  seed?: number;
  /** AdamW's learning rate. */
  lr?: number;
  /** Called with the step and its loss every `logEvery` steps. */
  log?: (step: number, loss: number) => void;
  logEvery?: number;
}

export interface TrainResult {
  /** ntXent of every `logEvery`-th step. */
  losses: number[];
  /** ntXent of one fixed pair of views of the held-out images, before and after training. */
  heldOutLossBefore: number;
  heldOutLossAfter: number;
  /** 1-nearest-neighbour accuracy on held-out images, features of the encoder before and after training. */
  accuracyBefore: number;
  accuracyAfter: number;
}

const IMAGE = 32;
const TRAIN = 768;
const HELD_OUT = 256;
const PATCH = 4;
const HIDDEN = 256;
const PROJECTION = 64;

/** Trains encoder and projection head with SimCLR's views and loss; every tensor it makes is freed. */
export async function train(engine: Engine, o: TrainOptions): Promise<TrainResult> {
  const batch = o.batch ?? 128;
  const view = o.viewSize ?? 16;
  const seed = o.seed ?? 1;
  const logEvery = o.logEvery ?? 10;
  const temperature = 0.2;
  if (!(Number.isInteger(o.steps) && o.steps >= 1)) {
    throw new RangeError(`train: steps must be a positive integer, got ${o.steps}`);
  }
  if (!(Number.isInteger(batch) && batch >= 1 && batch <= TRAIN)) {
    throw new RangeError(`train: batch must be an integer in [1, ${TRAIN}], got ${batch}`);
  }
  if (!(Number.isInteger(view) && view >= PATCH && view % PATCH === 0)) {
    throw new RangeError(
      `train: viewSize must be a positive multiple of the patch side ${PATCH}, got ${view}`,
    );
  }
  const data = patterns(TRAIN + HELD_OUT, IMAGE, seed);
  using pool = engine.images(data.rgba, { n: TRAIN + HELD_OUT, height: IMAGE, width: IMAGE });
  // He initialisation for `fanIn` inputs, made outside the graph: the optimiser updates these tensors in place.
  const weight = (shape: number[], fanIn: number, s: number) =>
    noGrad(() => engine.tidy(() => mul(engine.randn(shape, { seed: s }), Math.sqrt(2 / fanIn))));
  const params = [
    weight([HIDDEN, 3, PATCH, PATCH], 3 * PATCH * PATCH, seed + 1),
    engine.zeros([HIDDEN]),
    weight([HIDDEN, PROJECTION], HIDDEN, seed + 2),
    engine.zeros([PROJECTION]),
  ];
  const [w1, b1, w2, b2] = params;
  // A bag of patches: a PATCH×PATCH convolution of stride PATCH puts every patch of a view through one ReLU
  // layer, averaged over the view, so a pattern counts the same wherever a crop put it (an MLP on the whole
  // view would have to learn that per position).
  const features = (v: Tensor) => mean(relu(conv2d(v, w1, { stride: PATCH, bias: b1 })), [2, 3]);
  const project = (v: Tensor) => add(matmul(features(v), w2), b2);
  const accuracy = () => nearestNeighbourAccuracy(engine, pool, data.labels, view, features);
  // The loss on one fixed pair of views of the held-out images: the same batch before and after training.
  const heldOutLoss = async () => {
    using loss = noGrad(() =>
      engine.tidy(() => {
        const { views: [a, b] } = simclrViews(slice(pool, [TRAIN], [TRAIN + HELD_OUT]), {
          seed: 7,
          size: view,
        });
        return ntXent(project(a), project(b), { temperature });
      })
    );
    return (await loss.toArray())[0];
  };
  try {
    const accuracyBefore = await accuracy();
    const heldOutLossBefore = await heldOutLoss();
    using opt = adamw(params, { lr: o.lr ?? 3e-3, weightDecay: 1e-4 });
    const losses: number[] = [];
    for (let step = 0; step < o.steps; step++) {
      const [loss, grads] = engine.tidy(() => {
        // The first TRAIN images train; the rest are held out.
        const first = (step * batch) % (TRAIN - batch + 1);
        const x = slice(pool, [first], [first + batch]);
        const { views: [a, b] } = simclrViews(x, { seed: seed * 100_003 + step, size: view });
        const loss = ntXent(project(a), project(b), { temperature });
        return [loss, grad(loss, params)] as const;
      });
      opt.step(grads);
      for (const g of grads) g.dispose();
      if (step % logEvery === 0 || step === o.steps - 1) {
        const value = (await loss.toArray())[0];
        losses.push(value);
        o.log?.(step, value);
      }
      loss.dispose();
    }
    return {
      losses,
      heldOutLossBefore,
      heldOutLossAfter: await heldOutLoss(),
      accuracyBefore,
      accuracyAfter: await accuracy(),
    };
  } finally {
    for (const p of params) p.dispose();
  }
}

/**
 * 1-nearest-neighbour accuracy of the held-out images (the last HELD_OUT of the pool) against the labelled first TRAIN,
 * by cosine similarity of their features, every image resized whole to the view size.
 */
async function nearestNeighbourAccuracy(
  engine: Engine,
  pool: Tensor,
  labels: number[],
  view: number,
  features: (x: Tensor) => Tensor,
): Promise<number> {
  using nearest = noGrad(() =>
    engine.tidy(() => {
      const whole = randomResizedCrop(pool, { seed: 0, size: view, scale: [1, 1], ratio: [1, 1] }).output;
      const f = normalize(features(whole));
      return argmax(
        matmul(slice(f, [TRAIN], [TRAIN + HELD_OUT]), slice(f, [0], [TRAIN]), { transB: true }),
        1,
      );
    })
  );
  const best = await nearest.toArray();
  return best.filter((j, i) => labels[j] === labels[TRAIN + i]).length / HELD_OUT;
}

if (import.meta.main) {
  const at = Deno.args.indexOf("--steps");
  const steps = at >= 0 ? Number(Deno.args[at + 1]) : 300;
  const engine = await init();
  console.log(`adapter: ${engine.adapterName}`);
  const started = performance.now();
  const result = await train(engine, {
    steps,
    log: (step, loss) => console.log(`step ${String(step).padStart(4)}  ntXent ${loss.toFixed(4)}`),
  });
  const pct = (x: number) => `${(100 * x).toFixed(1)}%`;
  console.log(
    `held-out ntXent ${result.heldOutLossBefore.toFixed(3)} before training, ${
      result.heldOutLossAfter.toFixed(3)
    } after; ` +
      `1-NN accuracy on held-out images (${CLASSES.length} classes, chance 25%) ${
        pct(result.accuracyBefore)
      } before, ` +
      `${pct(result.accuracyAfter)} after (${((performance.now() - started) / 1000).toFixed(1)} s)`,
  );
}
