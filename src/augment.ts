// Per-sample image augmentations and the SimCLR / BYOL view recipes (shaders/augment.wgsl; CPU reference in
// src/ref/augment.ts). Batches are f32 [N, C, H, W] in [0, 1], C = 1 or 3.
//
// Randomness: every per-sample parameter is drawn on the host from Philox keyed by the seed with the counter
// (parameter index, sample index, tag, 0), where tag = op + 256·stream (stream tells the views of a recipe apart).
// Drawing these few numbers per sample on the host keeps integer crop boxes identical on every adapter (WGSL's exp
// and log are not correctly rounded) and lets the CPU reference use the very same parameters; per-element noise is
// drawn in the kernel from the same generator. Parameter index 0 is the op's coin for `p`.
//
// Every random op returns `{ output, params }`: one `SampleParams` per sample, which `applyParams` replays.
import { type Binding, checkFits, type Engine, Params } from "./engine.ts";
import { noGrad } from "./autograd.ts";
import { checkOptions, fmtShape, ShapeError } from "./errors.ts";
import { sum } from "./reduce.ts";
import { philox, seedKey, uniformFromBits } from "./ref/random.ts";
import { assertLive, type Tensor } from "./tensor.ts";

const WG = 256;
const TILE = 16;
const REC = 24;
/** A dispatch's records: one 64 KiB uniform window (WebGPU's least maxUniformBufferBindingSize), RECORDS samples. */
const RECORD_WINDOW = 65536;
const RECORDS = Math.floor(RECORD_WINDOW / (REC * 4));
const MAX_SIGMA = 100;
/**
 * Blur sigmas below this go to the kernels as 0 (no blur): such a Gaussian weighs the nearest neighbour at
 * exp(−0.5 / σ²) < 1e-86, 0 in f32, so the blur is the identity, and the kernel's 1 / σ² would overflow (NaN).
 */
export const MIN_BLUR_SIGMA = 0.05;
/**
 * vec4 columns per workgroup row of view4, turn4 and the vec4 blurs (shaders/augment.wgsl `QUADS`) for rows of
 * `columns` vec4s: the row's width up to 64, so a workgroup reads whole source rows in order, where a narrow
 * tall one waits on a cache miss at every row (1.16x for simclrViews at 224² on llvmpipe, 8 → 64).
 */
function quadsFor(columns: number): number {
  return Math.min(64, 2 ** Math.ceil(Math.log2(Math.max(1, columns))));
}

/** Op tags in the Philox counter. */
export const RANDOM_TAG = {
  crop: 1,
  flip: 2,
  jitter: 3,
  grayscale: 4,
  blur: 5,
  solarize: 6,
  rotate: 7,
  erase: 8,
  noise: 9,
  jigsaw: 10,
  maskedImage: 11,
  maskedToken: 12,
  relativePosition: 13,
} as const;

export interface Jitter {
  brightness: number;
  contrast: number;
  saturation: number;
  hue: number;
  /** The order of the steps: 0 brightness, 1 contrast, 2 saturation, 3 hue. */
  order: number[];
}

export interface Box {
  top: number;
  left: number;
  height: number;
  width: number;
}

/** Everything one sample's view does, in the order applied (blur and solarize run last). */
export interface SampleParams {
  /**
   * Source region, whole pixels inside the image, resized bilinearly to the output size as torchvision's
   * crop-then-resize does it (antialias off: a crop shrunk by more than 2x aliases where torchvision's default
   * antialias would filter it).
   */
  crop: Box;
  flip: boolean;
  /** Counter-clockwise quarter turns (square outputs only). */
  rotate: number;
  jitter: Jitter | null;
  grayscale: boolean;
  erase: (Box & { value: number }) | null;
  /** Gaussian noise sigma (0: none); the noise itself comes from (seed, tag) and the element index. */
  noise: number;
  /** Gaussian blur sigma (0: none). */
  blur: number;
  /** Solarize threshold, or null. */
  solarize: number | null;
}

export type FactorRange = number | [number, number];

export interface RandomOptions {
  seed?: number;
  /** Probability that a sample gets the op. */
  p?: number;
  /** Tells apart several draws of the same op with one seed (the views of a recipe). */
  stream?: number;
}

export interface Augmented {
  output: Tensor;
  params: SampleParams[];
}

// ---- drawing ------------------------------------------------------------------------------------------------

/** Four uniforms in [0, 1) for (seed, op tag, stream, sample, parameter index). */
export function drawUniforms(
  seed: number,
  op: number,
  stream: number,
  sample: number,
  param: number,
): number[] {
  return [...philox([param, sample, op + 256 * stream, 0], seedKey(seed))].map(uniformFromBits);
}

function coin(seed: number, op: number, stream: number, sample: number, p: number): boolean {
  return drawUniforms(seed, op, stream, sample, 0)[0] < p;
}

/** Python's round (half to even), as torchvision's int(round(x)). */
function roundHalfEven(x: number): number {
  const r = Math.round(x);
  return Math.abs(x % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/** Parameters that leave an h×w image as it is: a starting point for hand-made `applyParams` records. */
export function identityParams(h: number, w: number): SampleParams {
  return {
    crop: { top: 0, left: 0, height: h, width: w },
    flip: false,
    rotate: 0,
    jitter: null,
    grayscale: false,
    erase: null,
    noise: 0,
    blur: 0,
    solarize: null,
  };
}

/** torchvision's RandomResizedCrop.get_params: 10 tries at a random area and log-uniform aspect, then center. */
function drawCrop(
  u: (param: number) => number[],
  h: number,
  w: number,
  scale: [number, number],
  ratio: [number, number],
): Box {
  const area = h * w;
  const logRatio = [Math.log(ratio[0]), Math.log(ratio[1])];
  for (let attempt = 0; attempt < 10; attempt++) {
    const r = u(1 + attempt);
    const target = area * (scale[0] + r[0] * (scale[1] - scale[0]));
    const aspect = Math.exp(logRatio[0] + r[1] * (logRatio[1] - logRatio[0]));
    const cw = roundHalfEven(Math.sqrt(target * aspect));
    const ch = roundHalfEven(Math.sqrt(target / aspect));
    if (cw > 0 && cw <= w && ch > 0 && ch <= h) {
      return {
        top: Math.floor(r[2] * (h - ch + 1)),
        left: Math.floor(r[3] * (w - cw + 1)),
        height: ch,
        width: cw,
      };
    }
  }
  const inRatio = w / h;
  let cw = w;
  let ch = h;
  if (inRatio < Math.min(...ratio)) ch = roundHalfEven(w / Math.min(...ratio));
  else if (inRatio > Math.max(...ratio)) cw = roundHalfEven(h * Math.max(...ratio));
  return { top: Math.floor((h - ch) / 2), left: Math.floor((w - cw) / 2), height: ch, width: cw };
}

/**
 * torchvision's ColorJitter._check_input: a number v is [center − v, center + v] (clipped at 0 for the
 * multiplicative factors, center 1); a pair is taken as given. Either must lie within [0, ∞) (factors) or
 * [−0.5, 0.5] (hue, center 0).
 */
function factorRange(op: string, name: string, v: FactorRange, center: number): [number, number] {
  if (typeof v === "number" && !(v >= 0 && v < Infinity)) {
    throw new RangeError(`${op}: ${name} must be finite and ≥ 0, got ${v}`);
  }
  const [lowest, highest] = center === 1 ? [0, Infinity] : [-0.5, 0.5];
  const r: [number, number] = typeof v === "number"
    ? [Math.max(center - v, lowest), center + v]
    : [v?.[0], v?.[1]];
  // Numbers only: strings compare as text and "0.2" + r·… concatenates.
  if (!(isPair(r) && r[0] >= lowest && r[0] <= r[1] && r[1] <= highest)) {
    throw new RangeError(
      `${op}: ${name} range [${r}] is not an increasing pair within [${lowest}, ${highest}]`,
    );
  }
  return r;
}

export interface JitterOptions {
  brightness?: FactorRange;
  contrast?: FactorRange;
  saturation?: FactorRange;
  hue?: FactorRange;
}

type JitterRanges = Record<keyof JitterOptions, [number, number]>;

/** The options' ranges, checked whether or not any sample jitters. */
function jitterRanges(op: string, o: JitterOptions): JitterRanges {
  return {
    brightness: factorRange(op, "brightness", o.brightness ?? 0, 1),
    contrast: factorRange(op, "contrast", o.contrast ?? 0, 1),
    saturation: factorRange(op, "saturation", o.saturation ?? 0, 1),
    hue: factorRange(op, "hue", o.hue ?? 0, 0),
  };
}

/** torchvision's ColorJitter.get_params: a random order and a factor per step (identity when the range is 0). */
function drawJitter(u: (param: number) => number[], ranges: JitterRanges): Jitter {
  const r = u(1);
  const pick = ([lo, hi]: [number, number], k: number) => lo === hi ? lo : lo + r[k] * (hi - lo);
  const order = [0, 1, 2, 3];
  const s = u(2);
  for (let k = 3; k > 0; k--) {
    const j = Math.floor(s[3 - k] * (k + 1));
    [order[k], order[j]] = [order[j], order[k]];
  }
  return {
    brightness: pick(ranges.brightness, 0),
    contrast: pick(ranges.contrast, 1),
    saturation: pick(ranges.saturation, 2),
    hue: pick(ranges.hue, 3),
    order,
  };
}

/** torchvision's RandomErasing.get_params; null when no try fits. */
function drawErase(
  u: (param: number) => number[],
  h: number,
  w: number,
  scale: [number, number],
  ratio: [number, number],
  value: number,
): (Box & { value: number }) | null {
  const logRatio = [Math.log(ratio[0]), Math.log(ratio[1])];
  for (let attempt = 0; attempt < 10; attempt++) {
    const r = u(1 + attempt);
    const area = h * w * (scale[0] + r[0] * (scale[1] - scale[0]));
    const aspect = Math.exp(logRatio[0] + r[1] * (logRatio[1] - logRatio[0]));
    const eh = roundHalfEven(Math.sqrt(area * aspect));
    const ew = roundHalfEven(Math.sqrt(area / aspect));
    if (!(eh < h && ew < w)) continue;
    return {
      top: Math.floor(r[2] * (h - eh + 1)),
      left: Math.floor(r[3] * (w - ew + 1)),
      height: eh,
      width: ew,
      value,
    };
  }
  return null;
}

// ---- validation ---------------------------------------------------------------------------------------------

/** [N, C, H, W] of an f32 image batch with C = 1 or 3; throws naming the shape otherwise. */
export function imageDims(op: string, x: Tensor): [number, number, number, number] {
  assertLive(op, x);
  if (x.dtype !== "f32") {
    throw new TypeError(`${op}: expected an f32 image batch, got ${x.dtype} ${fmtShape(x.shape)}`);
  }
  if (x.shape.length !== 4) {
    throw new ShapeError(
      `${op}: expected an image batch [N, C, H, W], got rank ${x.shape.length} ${fmtShape(x.shape)}`,
    );
  }
  const [n, c, h, w] = x.shape;
  if (c !== 1 && c !== 3) throw new ShapeError(`${op}: C must be 1 or 3, got ${c} in ${fmtShape(x.shape)}`);
  checkFits(op, x.engine, x.shape);
  return [n, c, h, w];
}

function checkSeed(op: string, seed: number): number {
  if (!Number.isSafeInteger(seed) || seed < 0) {
    throw new RangeError(`${op}: seed must be an integer in [0, 2^53), got ${seed}`);
  }
  return seed;
}

function checkP(op: string, p: number): number {
  if (!(typeof p === "number" && p >= 0 && p <= 1)) {
    throw new RangeError(`${op}: p must be in [0, 1], got ${p}`);
  }
  return p;
}

/** A draw's tag is op + 256·stream in a u32: past 2^24 a stream would wrap onto another's numbers. */
function checkStream(op: string, stream: number): number {
  if (!(Number.isInteger(stream) && stream >= 0 && stream < 2 ** 24)) {
    throw new RangeError(`${op}: stream must be an integer in [0, 2^24), got ${stream}`);
  }
  return stream;
}

/** Two finite numbers (not strings, which compare as text): a range's ends. */
function isPair(r: unknown): r is [number, number] {
  return Array.isArray(r) && r.length === 2 && r.every((v) => typeof v === "number" && Number.isFinite(v));
}

function checkRange(
  op: string,
  name: string,
  r: [number, number],
  min: number,
  max = Infinity,
): [number, number] {
  if (!(isPair(r) && r[0] >= min && r[0] <= r[1] && r[1] <= max)) {
    throw new RangeError(`${op}: ${name} must be an increasing pair within [${min}, ${max}], got [${r}]`);
  }
  return r;
}

function outSize(op: string, size: number | [number, number]): [number, number] {
  const s: [number, number] = typeof size === "number" ? [size, size] : size;
  if (!s.every((d) => Number.isInteger(d) && d > 0)) {
    throw new RangeError(`${op}: size must be positive integers, got ${s}`);
  }
  return s;
}

// ---- the kernels --------------------------------------------------------------------------------------------

function packRecords(params: SampleParams[]): Float32Array {
  const r = new Float32Array(params.length * REC);
  params.forEach((q, n) => {
    const j = q.jitter;
    const e = q.erase;
    r.set([
      q.crop.top,
      q.crop.left,
      q.crop.height,
      q.crop.width,
      q.flip ? 1 : 0,
      q.rotate,
      j ? 1 : 0,
      j?.brightness ?? 1,
      j?.contrast ?? 1,
      j?.saturation ?? 1,
      j?.hue ?? 0,
      j ? j.order.reduce((code, step, k) => code + step * 4 ** k, 0) : 0,
      q.grayscale ? 1 : 0,
      q.solarize === null ? 0 : 1,
      e ? 1 : 0,
      e?.top ?? 0,
      e?.left ?? 0,
      e?.height ?? 0,
      e?.width ?? 0,
      e?.value ?? 0,
      q.noise,
      q.blur < MIN_BLUR_SIGMA ? 0 : q.blur,
      q.solarize ?? 0,
    ], n * REC);
  });
  return r;
}

/**
 * The vec4s of a source row that view4 reads for four neighbouring output pixels (shaders/augment.wgsl `NV`), or
 * 0 where view4 does not apply: widths not multiples of 4, an odd quarter turn, or a crop so much wider than the
 * output that more than 4 would be needed. Four pixels at scale s = crop width / output width sample source
 * columns ceil(3s) + 2 apart at most (3s exactly in f32 when s ≤ 1: both sides are small integers then),
 * starting at any of a vec4's 4 lanes.
 */
function sourceQuads(params: SampleParams[], w: number, ow: number, unscaled: boolean): number {
  if (w % 4 || ow % 4 || params.some((q) => q.rotate % 2)) return 0;
  if (unscaled) return 1;
  const scale = Math.max(...params.map((q) => q.crop.width / ow));
  const span = scale <= 1 ? 3 : Math.ceil(3 * scale + 1e-4);
  const nv = Math.ceil((span + 5) / 4);
  return nv <= 4 ? nv : 0;
}

export interface ApplyOptions {
  /** Output [height, width] (default the input's). */
  size?: number | [number, number];
  /** Key of the Gaussian noise (the seed the params were drawn with). */
  seed?: number;
  stream?: number;
  /** Write the grayscale of a 3-channel input as one channel. */
  grayOutput?: boolean;
  /** Per-channel (x - mean) / std after everything else in the fused pass. */
  normalize?: { mean: number[]; std: number[] };
}

/**
 * Renders one view per sample from its parameters: the fused pass (geometry, bilinear resize, jitter, grayscale,
 * solarize, erase, noise, normalize; preceded by a per-sample mean when contrast needs it), then the two passes of
 * the separable blur for samples with a blur sigma. Replays any op's `params` exactly.
 */
export function applyParams(x: Tensor, params: SampleParams[], options: ApplyOptions = {}): Tensor {
  checkOptions("applyParams", options, {
    size: true,
    seed: true,
    stream: true,
    grayOutput: true,
    normalize: true,
  });
  const op = "applyParams";
  const [n, c, h, w] = imageDims(op, x);
  const [oh, ow] = outSize(op, options.size ?? [h, w]);
  if (params.length !== n) {
    throw new ShapeError(`${op}: ${params.length} parameter records for a batch ${fmtShape(x.shape)}`);
  }
  for (const q of params) {
    if (![0, 1, 2, 3].includes(q.rotate)) {
      throw new RangeError(`${op}: rotate ${q.rotate} is not a count of quarter turns 0, 1, 2 or 3`);
    }
    if (q.rotate % 2 && oh !== ow) {
      throw new ShapeError(`${op}: rotating by 90° needs a square output, got ${oh}×${ow}`);
    }
    if (!(q.blur >= 0 && q.blur <= MAX_SIGMA)) {
      throw new RangeError(`${op}: blur sigma ${q.blur} outside [0, ${MAX_SIGMA}]`);
    }
    const { top, left, height, width } = q.crop;
    if (
      ![top, left, height, width].every(Number.isInteger) || top < 0 || left < 0 || height < 1 ||
      width < 1 || top + height > h || left + width > w
    ) {
      throw new RangeError(
        `${op}: crop ${JSON.stringify(q.crop)} is not a box of whole pixels inside ${h}×${w}`,
      );
    }
    const order = q.jitter?.order ?? [0, 1, 2, 3];
    if (order.length !== 4 || [0, 1, 2, 3].some((step) => !order.includes(step))) {
      throw new RangeError(`${op}: jitter order [${order}] is not an order of the steps 0, 1, 2, 3`);
    }
  }
  const oc = options.grayOutput ? 1 : c;
  checkFits(op, x.engine, [n, oc, oh, ow]);
  const tilesX = Math.ceil(ow / TILE);
  const tilesY = Math.ceil(oh / TILE);
  const unscaled = oh === h && ow === w &&
    params.every(({ crop }) => crop.top === 0 && crop.left === 0 && crop.height === h && crop.width === w);
  const nv = sourceQuads(params, w, ow, unscaled);
  // Geometry alone (turns, flips) on sides that are multiples of 4: 4×4 blocks of vec4s (turn4).
  const geometryOnly = params.every((q) =>
    !q.jitter && !q.grayscale && q.solarize === null && !q.erase && q.noise === 0
  );
  const plain = unscaled && geometryOnly && !options.grayOutput && !options.normalize;
  const turn = plain && h % 4 === 0 && w % 4 === 0;
  // No sample turns or flips either (a blur alone): the view is a copy, which copyBufferToBuffer makes at the
  // adapter's copy bandwidth (a view pass copying ran at a tenth of it on llvmpipe).
  const copy = plain && params.every((q) => q.rotate === 0 && !q.flip);
  const engine = x.engine;
  const seed = checkSeed(op, options.seed ?? 0);
  checkStream(op, options.stream ?? 0);
  const norm = options.normalize;
  if (norm && (norm.mean.length < c || norm.std.length < c || norm.std.some((s) => s === 0))) {
    throw new RangeError(
      `normalize: need ${c} means and ${c} non-zero stds, got mean [${norm.mean}] std [${norm.std}]`,
    );
  }
  // The records of each chunk of RECORDS samples fill one 64 KiB window, bound as a uniform buffer.
  const chunks = Math.ceil(n / RECORDS);
  const packed = new Float32Array(chunks * (RECORD_WINDOW / 4));
  for (let k = 0; k < chunks; k++) {
    packed.set(packRecords(params.slice(k * RECORDS, (k + 1) * RECORDS)), k * (RECORD_WINDOW / 4));
  }
  const records = engine.tensor(packed, [packed.length]);
  const temps: Tensor[] = [records];
  // A dispatch may still throw (a grid over the workgroup limits): nothing made here outlives it.
  const out = engine.empty([n, oc, oh, ow]);
  try {
    const uniforms = (first: number) =>
      new Params().u32(n, h, w, oh, ow, tilesX, first, seed >>> 0, Math.floor(seed / 2 ** 32) >>> 0)
        .u32(RANDOM_TAG.noise + 256 * (options.stream ?? 0), norm ? 1 : 0)
        .f32(...[0, 1, 2].map((k) => norm?.mean[k] ?? 0), ...[0, 1, 2].map((k) => norm?.std[k] ?? 1));
    /** One dispatch per chunk: its uniforms, its records window and its sample count (workgroup z). */
    const perChunk = (fn: (uniforms: Params, window: Binding, count: number) => void) => {
      for (let k = 0; k < chunks; k++) {
        const window = { buffer: records.buffer, offset: k * RECORD_WINDOW, size: RECORD_WINDOW };
        fn(uniforms(k * RECORDS), window, Math.min(RECORDS, n - k * RECORDS));
      }
    };
    // Output rows per view4 invocation: two where no crop is taller than the output (their taps share a row).
    const viewRows = nv && !unscaled && params.every((q) => q.crop.height <= oh) ? 2 : 1;
    // Each sample's grayscale sum (contrast blends toward its mean), from partial sums of row segments. Without
    // contrast the kernels read none (a factor of 1 skips the step), and the chunk's records window stands in: the
    // records whole could pass one binding.
    let sums: Tensor | null = null;
    if (params.some((q) => q.jitter && q.jitter.contrast !== 1)) {
      const segments = Math.ceil(oh / viewRows) * tilesX;
      const partials = engine.empty([n, segments]);
      perChunk((uniforms, window, count) =>
        engine.run({
          op,
          shader: "augment",
          entry: nv ? "stats4" : "stats",
          constants: {
            WG,
            TILE,
            C: c,
            OC: oc,
            UNSCALED: +unscaled,
            ...(nv ? { NV: nv, ROWS: viewRows } : {}),
          },
          params: uniforms,
          buffers: [x, window, partials],
          workgroups: [Math.ceil(segments / WG), 1, count],
        })
      );
      sums = noGrad(() => sum(partials, 1));
      temps.push(partials, sums);
    }
    const flags = {
      WG,
      TILE,
      C: c,
      OC: oc,
      UNSCALED: +unscaled,
      JITTER: +params.some((q) => q.jitter),
      NOISE: +params.some((q) => q.noise !== 0),
    };
    const quads = quadsFor(ow / 4);
    const lines = WG / quads;
    const [entry, constants, grid]: [string, Record<string, number>, number[]] = turn
      ? ["turn4", { WG, QUADS: quads, C: c }, [Math.ceil(ow / 4 / quads), Math.ceil(oh / 4 / lines)]]
      : nv
      ? ["view4", { ...flags, NV: nv, QUADS: quads, ROWS: viewRows }, [
        Math.ceil(ow / 4 / quads),
        Math.ceil(oh / viewRows / lines),
      ]]
      : ["view", flags, [tilesX, tilesY]];
    if (copy) {
      engine.copy(x.buffer, 0, out.buffer, 0, x.bytes);
    } else {
      perChunk((uniforms, window, count) =>
        engine.run({
          op,
          shader: "augment",
          entry,
          constants,
          params: uniforms,
          buffers: turn ? [x, window, out] : [x, window, sums ?? window, out],
          workgroups: [grid[0], grid[1], count],
        })
      );
    }
    if (params.some((q) => q.blur > 0)) {
      const tmp = engine.empty(out.shape);
      temps.push(tmp);
      // The largest radius: ceil(3σ), rounded in f32 on the GPU (one more here for safety). At or past a side - 1
      // reflections fold more than once (FAR).
      const radius = Math.max(...params.map((q) => (q.blur > 0 ? Math.ceil(3 * q.blur) + 1 : 0)));
      const far = +(radius >= Math.min(oh, ow));
      const pass = (
        entry: string,
        src: Tensor,
        dst: Tensor,
        constants: Record<string, number>,
        grid: number[],
      ) =>
        perChunk((uniforms, window, count) =>
          engine.run({
            op,
            shader: "augment",
            entry,
            constants: { WG, TILE, OC: oc, FAR: far, ...constants },
            params: uniforms,
            buffers: [src, window, dst],
            workgroups: [grid[0], grid[1], count],
          })
        );
      if (ow % 4) {
        pass("blur", out, tmp, { DIR: 0 }, [tilesX, tilesY]);
        pass("blur", tmp, out, { DIR: 1 }, [tilesX, tilesY]);
      } else {
        // Rows of whole vec4s: four pixels per invocation. Along W, the vec4 columns CB or more from both ends
        // read their neighbours whole, unreflected, two columns per invocation (CB up to 4: the loop over them
        // stays short enough to unroll).
        const w4 = ow / 4;
        const cb = Math.ceil(radius / 4);
        /** A pass of `columns` invocations across (vec4 columns, or pairs of them) and `rows` lines (rows, or
         * blocks of 4 rows along H). */
        const along = (
          entry: string,
          src: Tensor,
          dst: Tensor,
          constants: Record<string, number>,
          columns: number,
          rows: number,
        ) => {
          const quads = quadsFor(columns);
          pass(entry, src, dst, { ...constants, QUADS: quads }, [
            Math.ceil(columns / quads),
            Math.ceil(rows / (WG / quads)),
          ]);
        };
        if (!far && 2 * cb < w4 && cb <= 4) {
          along("blurW4Inner", out, tmp, { CB: cb }, Math.ceil((w4 - 2 * cb) / 2), oh);
          along("blurW4", out, tmp, { CB: cb, EDGES: 1 }, 2 * cb, oh);
        } else {
          along("blurW4", out, tmp, {}, w4, oh);
        }
        along("blurH4", tmp, out, {}, w4, Math.ceil(oh / 4));
      }
    }
  } catch (e) {
    out.dispose();
    throw e;
  } finally {
    for (const t of temps) t.dispose();
  }
  return out;
}

/** Draws one record per sample with `fill` (given the sample's uniform source) and renders them. */
function augment(
  op: string,
  x: Tensor,
  o: RandomOptions,
  tag: number,
  fill: (q: SampleParams, u: (param: number) => number[], applies: boolean, h: number, w: number) => void,
  apply: ApplyOptions = {},
): Augmented {
  const [n, , h, w] = imageDims(op, x);
  const seed = checkSeed(op, o.seed ?? 0);
  const p = checkP(op, o.p ?? 1);
  const stream = checkStream(op, o.stream ?? 0);
  const params = Array.from({ length: n }, (_, i) => {
    const q = identityParams(h, w);
    fill(q, (param) => drawUniforms(seed, tag, stream, i, param), coin(seed, tag, stream, i, p), h, w);
    return q;
  });
  return { output: applyParams(x, params, { seed, stream, ...apply }), params };
}

// ---- the ops ------------------------------------------------------------------------------------------------

/**
 * torchvision's RandomResizedCrop: a box of area scale·HW and aspect ratio in `ratio` (log-uniform; 10 tries,
 * then the central crop), resized to `size` as `Box` says.
 */
export function randomResizedCrop(
  x: Tensor,
  o: RandomOptions & { size: number | [number, number]; scale?: [number, number]; ratio?: [number, number] },
): Augmented {
  checkOptions("randomResizedCrop", o, {
    seed: true,
    p: true,
    stream: true,
    size: true,
    scale: true,
    ratio: true,
  }, true);
  const op = "randomResizedCrop";
  const scale = checkRange(op, "scale", o.scale ?? [0.08, 1], 0, 1);
  const ratio = checkRange(op, "ratio", o.ratio ?? [3 / 4, 4 / 3], Number.MIN_VALUE);
  return augment(op, x, o, RANDOM_TAG.crop, (q, u, applies, h, w) => {
    if (applies) q.crop = drawCrop(u, h, w, scale, ratio);
  }, { size: outSize(op, o.size) });
}

export function horizontalFlip(x: Tensor, o: RandomOptions = {}): Augmented {
  checkOptions("horizontalFlip", o, { seed: true, p: true, stream: true });
  return augment("horizontalFlip", x, { ...o, p: o.p ?? 0.5 }, RANDOM_TAG.flip, (q, _u, applies) => {
    q.flip = applies;
  });
}

/** torchvision's ColorJitter: brightness, contrast, saturation, hue in a random order per sample. */
export function colorJitter(x: Tensor, o: RandomOptions & JitterOptions = {}): Augmented {
  checkOptions("colorJitter", o, {
    seed: true,
    p: true,
    stream: true,
    brightness: true,
    contrast: true,
    saturation: true,
    hue: true,
  });
  const op = "colorJitter";
  const ranges = jitterRanges(op, o);
  return augment(op, x, o, RANDOM_TAG.jitter, (q, u, applies) => {
    if (applies) q.jitter = drawJitter(u, ranges);
  });
}

/** Grayscale (ITU-R 601 weights) kept at the input's channel count. */
export function randomGrayscale(x: Tensor, o: RandomOptions = {}): Augmented {
  checkOptions("randomGrayscale", o, { seed: true, p: true, stream: true });
  return augment("randomGrayscale", x, { ...o, p: o.p ?? 0.1 }, RANDOM_TAG.grayscale, (q, _u, applies) => {
    q.grayscale = applies;
  });
}

/** Separable Gaussian blur with sigma uniform in the range and radius ceil(3·sigma), reflected borders. */
export function gaussianBlur(x: Tensor, o: RandomOptions & { sigma?: FactorRange } = {}): Augmented {
  checkOptions("gaussianBlur", o, { seed: true, p: true, stream: true, sigma: true });
  const op = "gaussianBlur";
  const s = o.sigma ?? [0.1, 2];
  const sigma = checkRange(op, "sigma", typeof s === "number" ? [s, s] : s, 0, MAX_SIGMA);
  return augment(op, x, o, RANDOM_TAG.blur, (q, u, applies) => {
    if (applies) q.blur = sigma[0] + u(1)[0] * (sigma[1] - sigma[0]);
  });
}

/** Pixels ≥ threshold become 1 - x. */
export function solarize(x: Tensor, o: RandomOptions & { threshold?: number } = {}): Augmented {
  checkOptions("solarize", o, { seed: true, p: true, stream: true, threshold: true });
  const threshold = o.threshold ?? 0.5;
  if (typeof threshold !== "number" || Number.isNaN(threshold)) {
    throw new RangeError(`solarize: threshold must be a number, got ${threshold}`);
  }
  return augment("solarize", x, o, RANDOM_TAG.solarize, (q, _u, applies) => {
    if (applies) q.solarize = threshold;
  });
}

/** A random number of counter-clockwise quarter turns per sample (k uniform in 0..3); square images only. */
export function rotate90(x: Tensor, o: Omit<RandomOptions, "p"> = {}): Augmented {
  checkOptions("rotate90", o, { seed: true, stream: true });
  const [, , h, w] = imageDims("rotate90", x);
  if (h !== w) throw new ShapeError(`rotate90: needs square images, got ${fmtShape(x.shape)}`);
  return augment("rotate90", x, o, RANDOM_TAG.rotate, (q, u) => {
    q.rotate = Math.floor(u(0)[1] * 4);
  });
}

/** torchvision's RandomErasing (cutout): one rectangle per sample set to `value`. */
export function randomErasing(
  x: Tensor,
  o: RandomOptions & { scale?: [number, number]; ratio?: [number, number]; value?: number } = {},
): Augmented {
  checkOptions("randomErasing", o, {
    seed: true,
    p: true,
    stream: true,
    scale: true,
    ratio: true,
    value: true,
  });
  const op = "randomErasing";
  const scale = checkRange(op, "scale", o.scale ?? [0.02, 0.33], 0, 1);
  const ratio = checkRange(op, "ratio", o.ratio ?? [0.3, 3.3], Number.MIN_VALUE);
  return augment(op, x, { ...o, p: o.p ?? 0.5 }, RANDOM_TAG.erase, (q, u, applies, h, w) => {
    if (applies) q.erase = drawErase(u, h, w, scale, ratio, o.value ?? 0);
  });
}

/** x + sigma·N(0, 1) per element, clipped to [0, 1]. */
export function gaussianNoise(x: Tensor, o: RandomOptions & { sigma: number }): Augmented {
  checkOptions("gaussianNoise", o, { seed: true, p: true, stream: true, sigma: true }, true);
  if (!(o.sigma >= 0)) throw new RangeError(`gaussianNoise: sigma must be ≥ 0, got ${o.sigma}`);
  return augment("gaussianNoise", x, o, RANDOM_TAG.noise, (q, _u, applies) => {
    if (applies) q.noise = o.sigma;
  });
}

/** (x - mean[c]) / std[c] per channel. */
export function normalizeChannels(x: Tensor, mean: number[], std: number[]): Tensor {
  const [n, , h, w] = imageDims("normalize", x);
  return applyParams(x, Array.from({ length: n }, () => identityParams(h, w)), { normalize: { mean, std } });
}

// ---- recipes ------------------------------------------------------------------------------------------------

export interface Views {
  views: [Tensor, Tensor];
  params: [SampleParams[], SampleParams[]];
}

interface ViewRecipe {
  size: [number, number];
  scale: [number, number];
  jitter: JitterOptions;
  blur: number;
  solarize: number;
}

/**
 * One view per recipe, view k drawn from stream k: crop (the recipe's scale, aspect ratio 3/4 to 4/3), flip 0.5,
 * jitter p 0.8, grayscale p 0.2, blur (sigma 0.1 to 2) and solarize with the recipe's probabilities.
 */
function recipeViews(op: string, x: Tensor, seed: number, recipes: ViewRecipe[]) {
  const [n, , h, w] = imageDims(op, x);
  checkSeed(op, seed);
  const jitter = recipes.map((r) => jitterRanges(op, r.jitter));
  const drawn = recipes.map((r, stream) =>
    Array.from({ length: n }, (_, i) => {
      const u = (tag: number) => (param: number) => drawUniforms(seed, tag, stream, i, param);
      const heads = (tag: number, p: number) => coin(seed, tag, stream, i, p);
      const q = identityParams(h, w);
      q.crop = drawCrop(u(RANDOM_TAG.crop), h, w, r.scale, [3 / 4, 4 / 3]);
      q.flip = heads(RANDOM_TAG.flip, 0.5);
      if (heads(RANDOM_TAG.jitter, 0.8)) q.jitter = drawJitter(u(RANDOM_TAG.jitter), jitter[stream]);
      q.grayscale = heads(RANDOM_TAG.grayscale, 0.2);
      if (heads(RANDOM_TAG.blur, r.blur)) q.blur = 0.1 + u(RANDOM_TAG.blur)(1)[0] * 1.9;
      if (heads(RANDOM_TAG.solarize, r.solarize)) q.solarize = 0.5;
      return q;
    })
  );
  // Every view's size is checked before any is made, and a view that still throws frees those made before it.
  const c = x.shape[1];
  for (const r of recipes) checkFits(op, x.engine, [n, c, ...outSize(op, r.size)]);
  const views: Tensor[] = [];
  try {
    drawn.forEach((params, stream) =>
      views.push(applyParams(x, params, { size: recipes[stream].size, seed, stream }))
    );
  } catch (e) {
    for (const v of views) v.dispose();
    throw e;
  }
  return { views, params: drawn };
}

function twoViews(
  op: string,
  x: Tensor,
  seed: number,
  size: number | [number, number],
  recipes: Omit<ViewRecipe, "size" | "scale">[],
): Views {
  const out = outSize(op, size);
  const { views, params } = recipeViews(
    op,
    x,
    seed,
    recipes.map((r) => ({ ...r, size: out, scale: [0.08, 1] })),
  );
  return { views: [views[0], views[1]], params: [params[0], params[1]] };
}

/**
 * SimCLR's two views as lightly's SimCLRTransform draws them: crop scale [0.08, 1], flip 0.5, jitter
 * (0.8, 0.8, 0.8, 0.2)·strength with p 0.8, grayscale p 0.2, blur p 0.5 with sigma in [0.1, 2].
 */
export function simclrViews(
  x: Tensor,
  o: { seed: number; size: number | [number, number]; strength?: number },
): Views {
  checkOptions("simclrViews", o, { seed: true, size: true, strength: true }, true);
  const s = o.strength ?? 1;
  if (!(typeof s === "number" && s >= 0 && s < Infinity)) {
    throw new RangeError(`simclrViews: strength must be finite and ≥ 0, got ${s}`);
  }
  const jitter = { brightness: 0.8 * s, contrast: 0.8 * s, saturation: 0.8 * s, hue: Math.min(0.2 * s, 0.5) };
  return twoViews("simclrViews", x, o.seed, o.size, [{ jitter, blur: 0.5, solarize: 0 }, {
    jitter,
    blur: 0.5,
    solarize: 0,
  }]);
}

/** BYOL's asymmetric pair: blur p 1.0 and 0.1, solarize p 0 and 0.2, jitter (0.4, 0.4, 0.2, 0.1) with p 0.8. */
export function byolViews(x: Tensor, o: { seed: number; size: number | [number, number] }): Views {
  checkOptions("byolViews", o, { seed: true, size: true }, true);
  const jitter = { brightness: 0.4, contrast: 0.4, saturation: 0.2, hue: 0.1 };
  return twoViews("byolViews", x, o.seed, o.size, [{ jitter, blur: 1, solarize: 0 }, {
    jitter,
    blur: 0.1,
    solarize: 0.2,
  }]);
}

export interface MultiCropOptions {
  seed: number;
  /** Side (or [height, width]) of the two global views (default 224) and of the local ones (default 96). */
  globalSize?: number | [number, number];
  localSize?: number | [number, number];
  /** Local views per image (default 6). */
  localCrops?: number;
}

/** Global and local views of a multi-crop recipe, each with the parameters it drew (`applyParams` replays). */
export interface MultiCropViews {
  global: [Tensor, Tensor];
  local: Tensor[];
  params: { global: [SampleParams[], SampleParams[]]; local: SampleParams[][] };
}

/** Two global views then the local ones (streams 0, 1, then 2 onwards), from their recipes. */
function multiCrop(
  op: string,
  x: Tensor,
  o: MultiCropOptions,
  global: [Omit<ViewRecipe, "size">, Omit<ViewRecipe, "size">],
  local: Omit<ViewRecipe, "size">,
): MultiCropViews {
  const crops = o.localCrops ?? 6;
  if (!(Number.isInteger(crops) && crops >= 0)) {
    throw new RangeError(`${op}: localCrops must be an integer ≥ 0, got ${crops}`);
  }
  const g = outSize(op, o.globalSize ?? 224);
  const l = outSize(op, o.localSize ?? 96);
  const recipes = [...global.map((r) => ({ ...r, size: g })), ...Array(crops).fill({ ...local, size: l })];
  const { views, params } = recipeViews(op, x, o.seed, recipes);
  return {
    global: [views[0], views[1]],
    local: views.slice(2),
    params: { global: [params[0], params[1]], local: params.slice(2) },
  };
}

/**
 * DINO's multi-crop as lightly's DINOTransform draws it: two global views (crop scale 0.4 to 1, blur p 1.0 and
 * 0.1, the second solarized with p 0.2) and `localCrops` local ones (scale 0.05 to 0.4, blur p 0.5); all with
 * flip 0.5, jitter (0.4, 0.4, 0.2, 0.1) with p 0.8, grayscale p 0.2. Resampling is bilinear (DINO's is bicubic).
 */
export function dinoViews(x: Tensor, o: MultiCropOptions): MultiCropViews {
  checkOptions("dinoViews", o, { seed: true, globalSize: true, localSize: true, localCrops: true }, true);
  const jitter = { brightness: 0.4, contrast: 0.4, saturation: 0.2, hue: 0.1 };
  const scale: [number, number] = [0.4, 1];
  return multiCrop("dinoViews", x, o, [{ scale, jitter, blur: 1, solarize: 0 }, {
    scale,
    jitter,
    blur: 0.1,
    solarize: 0.2,
  }], { scale: [0.05, 0.4], jitter, blur: 0.5, solarize: 0 });
}

/**
 * SwAV's multi-crop (Caron et al. 2020): two global views of crop scale 0.14 to 1 and `localCrops` local ones of
 * scale 0.05 to 0.14; all with flip 0.5, jitter (0.8, 0.8, 0.8, 0.2) with p 0.8, grayscale p 0.2, blur p 0.5.
 */
export function swavViews(x: Tensor, o: MultiCropOptions): MultiCropViews {
  checkOptions("swavViews", o, { seed: true, globalSize: true, localSize: true, localCrops: true }, true);
  const jitter = { brightness: 0.8, contrast: 0.8, saturation: 0.8, hue: 0.2 };
  const view = (scale: [number, number]) => ({ scale, jitter, blur: 0.5, solarize: 0 });
  return multiCrop("swavViews", x, o, [view([0.14, 1]), view([0.14, 1])], view([0.05, 0.14]));
}

// ---- images -------------------------------------------------------------------------------------------------

/** A batch [N, 3, H, W] in [0, 1] from RGBA8 pixels (alpha dropped), converted on the GPU. */
export function images(
  engine: Engine,
  pixels: Uint8Array | Uint8ClampedArray | ImageData[],
  o: { n: number; height: number; width: number },
): Tensor {
  checkOptions("images", o, { n: true, height: true, width: true }, true);
  const { n, height, width } = o;
  if (![n, height, width].every((d) => Number.isInteger(d) && d > 0)) {
    throw new RangeError(`images: n, height, width must be positive integers, got ${n}, ${height}, ${width}`);
  }
  checkFits("images", engine, [n, 3, height, width]);
  const count = n * height * width;
  const bytes = new Uint8Array(count * 4);
  if (Array.isArray(pixels)) {
    if (pixels.length !== n) throw new ShapeError(`images: ${pixels.length} ImageData for n = ${n}`);
    pixels.forEach((d, i) => {
      if (d.width !== width || d.height !== height) {
        throw new ShapeError(`images: ImageData ${i} is ${d.width}×${d.height}, expected ${width}×${height}`);
      }
      bytes.set(d.data, i * height * width * 4);
    });
  } else {
    if (!(pixels instanceof Uint8Array || pixels instanceof Uint8ClampedArray)) {
      throw new TypeError(`images: pixels must be RGBA bytes (Uint8Array, Uint8ClampedArray) or ImageData[]`);
    }
    if (pixels.length !== count * 4) {
      throw new ShapeError(
        `images: ${pixels.length} bytes do not hold [${n}, ${height}, ${width}] RGBA pixels (${count * 4})`,
      );
    }
    bytes.set(pixels);
  }
  const packed = engine.tensor(new Uint32Array(bytes.buffer), [count], "u32");
  const out = engine.empty([n, 3, height, width]);
  // Four pixels per invocation where every image holds whole vec4s of them.
  const quads = (height * width) % 4 === 0;
  engine.run({
    op: "images",
    shader: "augment",
    entry: quads ? "unpack4" : "unpack",
    constants: { WG },
    params: new Params().u32(n, height, width),
    buffers: [packed, out],
    workgroups: Math.ceil(count / (quads ? 4 : 1) / WG),
  });
  packed.dispose();
  return out;
}
