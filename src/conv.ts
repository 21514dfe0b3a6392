// 2-D convolution as im2col and matmul: unfold (image → columns), its adjoint fold, conv2d built from them, and
// average and max pooling over unfold's windows (shaders/conv.wgsl for the two data movements; CPU reference in
// src/ref/conv.ts).
import { noGrad, record } from "./autograd.ts";
import { Params } from "./engine.ts";
import { add, checkF32, div, equal, mul, sub, where } from "./elementwise.ts";
import { checkOptions, fmtShape, ShapeError } from "./errors.ts";
import { matmul } from "./matmul.ts";
import { max, mean, sum } from "./reduce.ts";
import { concat, reshape, slice, transpose } from "./shape.ts";
import { checkEngine, type Tensor } from "./tensor.ts";

const WG = 256;
/**
 * conv2d over at most this many output positions a sample lays its columns out batch inside ([rows, N·L]) and
 * makes one product for the whole batch, not N small ones. Forward+backward on llvmpipe, batch inside against
 * per sample: 16 positions 2.8x to 3x faster, 64 1.4x, 196 (14²) 1.1x; 256 (16², 32 channels) 0.9x.
 */
const BATCH_INSIDE_POSITIONS = 196;
/** Most kernel taps (KH·KW): fold loops over them per pixel, and llvmpipe stops loops silently at 65,535. */
export const MAX_TAPS = 4096;

type Pair = number | readonly [number, number];

export interface WindowOptions {
  /** Kernel height and width (one number for both). */
  kernel: Pair;
  /** Step between output positions (default 1). */
  stride?: Pair;
  /** Zeros added on each side of the image (default 0). */
  padding?: Pair;
  /** Spacing between kernel taps (default 1). */
  dilation?: Pair;
}

/** A sliding window over an H × W image: every field a [height, width] pair; out the output positions. */
export interface Window {
  kernel: [number, number];
  stride: [number, number];
  padding: [number, number];
  dilation: [number, number];
  out: [number, number];
}

function pair(
  op: string,
  name: string,
  v: Pair | undefined,
  fallback: number,
  min: number,
): [number, number] {
  const p = v === undefined ? [fallback, fallback] : typeof v === "number" ? [v, v] : [...v];
  // Below 2^31: the kernels take them as u32 and sums of them (2^32 wrapped to 0: windows read the wrong pixels).
  if (p.length !== 2 || !p.every((d) => Number.isInteger(d) && d >= min && d < 2 ** 31)) {
    const got = Array.isArray(v) ? `[${v.join(", ")}]` : String(v);
    throw new RangeError(`${op}: ${name} must be an integer in [${min}, 2^31) or a pair of them, got ${got}`);
  }
  return [p[0], p[1]];
}

/** The window of `o` over an image of `size` [H, W]; a ShapeError where no output position fits. */
export function windowOf(op: string, size: readonly number[], o: WindowOptions): Window {
  const kernel = pair(op, "kernel", o.kernel, 1, 1);
  const stride = pair(op, "stride", o.stride, 1, 1);
  const padding = pair(op, "padding", o.padding, 0, 0);
  const dilation = pair(op, "dilation", o.dilation, 1, 1);
  if (kernel[0] * kernel[1] > MAX_TAPS) {
    throw new RangeError(`${op}: kernel ${kernel[0]}×${kernel[1]} has over ${MAX_TAPS} taps`);
  }
  const out = [0, 1].map((d) =>
    Math.floor((size[d] + 2 * padding[d] - dilation[d] * (kernel[d] - 1) - 1) / stride[d]) + 1
  ) as [number, number];
  if (out[0] < 1 || out[1] < 1) {
    const image = `${size[0]}×${size[1]} image padded by ${padding}`;
    throw new ShapeError(
      `${op}: a ${kernel[0]}×${kernel[1]} kernel (dilation ${dilation}) does not fit a ${image}`,
    );
  }
  return { kernel, stride, padding, dilation, out };
}

function params(count: number, image: readonly number[], win: Window, rows: number, pad = 0): Params {
  const [n, c, h, w] = image;
  const { kernel, stride, padding, dilation, out } = win;
  return new Params().u32(count, c, h, w, ...kernel, ...stride, ...padding, ...dilation, ...out, rows, n)
    .f32(pad);
}

function checkBinding(op: string, bytes: number, shape: readonly number[], maxBinding: number): void {
  if (bytes > maxBinding) {
    const limit = `maxStorageBufferBindingSize (${maxBinding} bytes)`;
    throw new ShapeError(`${op}: ${fmtShape(shape)} is ${bytes} bytes, over ${limit}; split the batch`);
  }
}

/**
 * How columns are laid out: `rows` per sample (C·KH·KW, or more that are zero), and either PyTorch's
 * [N, rows, L] or, `batchInside`, [rows, N·L]: the whole batch as one matrix.
 */
interface Columns {
  rows: number;
  batchInside: boolean;
  /** The value of taps in the padding (default 0). */
  pad?: number;
}

/** unfold's kernel: the columns of image x [N, C, H, W]. */
function unfoldRaw(x: Tensor, win: Window, layout?: Columns): Tensor {
  const [n, c] = x.shape;
  const { rows, batchInside, pad } = layout ??
    { rows: c * win.kernel[0] * win.kernel[1], batchInside: false };
  const positions = win.out[0] * win.out[1];
  const shape = batchInside ? [rows, n * positions] : [n, rows, positions];
  const elements = n * rows * positions;
  checkBinding("unfold", 4 * elements, shape, x.engine.maxBinding);
  const out = x.engine.empty(shape);
  // Four positions per invocation where every line of L positions holds whole vec4s.
  const count = positions % 4 === 0 ? elements / 4 : elements;
  x.engine.run({
    op: "unfold",
    shader: "conv",
    entry: positions % 4 === 0 ? "unfold4" : "unfold",
    constants: { WG, BATCH_INSIDE: +batchInside },
    params: params(count, x.shape, win, rows, pad),
    buffers: [x, out],
    workgroups: Math.ceil(count / WG),
  });
  return out;
}

/** fold's kernel: the image `image` ([N, C, H, W]) of columns laid out as `batchInside` says. */
function foldRaw(cols: Tensor, image: readonly number[], win: Window, batchInside = false): Tensor {
  const count = image[0] * image[1] * image[2] * image[3];
  checkBinding("fold", 4 * count, image, cols.engine.maxBinding);
  checkBinding("fold", cols.bytes, cols.shape, cols.engine.maxBinding);
  const out = cols.engine.empty(image);
  cols.engine.run({
    op: "fold",
    shader: "conv",
    entry: "fold",
    constants: { WG, UNIT_STRIDE: +(win.stride[0] === 1 && win.stride[1] === 1), BATCH_INSIDE: +batchInside },
    params: params(count, image, win, batchInside ? cols.shape[0] : cols.shape[1]),
    buffers: [cols, out],
    workgroups: Math.ceil(count / WG),
  });
  return out;
}

function checkImage(op: string, x: Tensor): void {
  checkF32(op, x);
  if (x.shape.length !== 4) {
    throw new ShapeError(`${op}: expected an image batch [N, C, H, W], got ${fmtShape(x.shape)}`);
  }
}

/**
 * Sliding-window columns of an image batch, like torch.nn.functional.unfold: x [N, C, H, W] → [N, C·KH·KW, L],
 * L = OH·OW output positions row-major, row (c·KH + i)·KW + j holding tap (i, j) of channel c, zero where a tap
 * falls in the padding. Its gradient is `fold`.
 */
export function unfold(x: Tensor, options: WindowOptions): Tensor {
  checkOptions("unfold", options, { kernel: true, stride: true, padding: true, dilation: true }, true);
  checkImage("unfold", x);
  const win = windowOf("unfold", x.shape.slice(2), options);
  return record(unfoldRaw(x, win), "unfold", [x], (g) => [foldRaw(g, x.shape, win)]);
}

/**
 * The adjoint of `unfold`, like torch.nn.functional.fold: columns [N, C·KH·KW, L] → image [N, C, ...outputSize],
 * each pixel the sum of the column elements whose tap reads it (overlapping windows add up). Its gradient is
 * `unfold`.
 */
export function fold(
  cols: Tensor,
  options: WindowOptions & { outputSize: readonly [number, number] },
): Tensor {
  checkOptions("fold", options, {
    kernel: true,
    stride: true,
    padding: true,
    dilation: true,
    outputSize: true,
  }, true);
  const op = "fold";
  checkF32(op, cols);
  const size = options.outputSize;
  if (size?.length !== 2 || !size.every((d) => Number.isInteger(d) && d >= 1)) {
    throw new RangeError(
      `${op}: outputSize must be two positive integers [H, W], got ${JSON.stringify(size)}`,
    );
  }
  const win = windowOf(op, size, options);
  const taps = win.kernel[0] * win.kernel[1];
  const positions = win.out[0] * win.out[1];
  if (cols.shape.length !== 3 || cols.shape[1] % taps !== 0 || cols.shape[2] !== positions) {
    const kernel = `${win.kernel[0]}×${win.kernel[1]} kernel`;
    const over = `${size[0]}×${size[1]} (${win.out[0]}×${win.out[1]} positions)`;
    throw new ShapeError(
      `${op}: columns ${
        fmtShape(cols.shape)
      } must be [N, C·${taps}, ${positions}] for a ${kernel} over ${over}`,
    );
  }
  const c = cols.shape[1] / taps;
  return record(foldRaw(cols, [cols.shape[0], c, ...size], win), op, [cols], (g) => [unfoldRaw(g, win)]);
}

export interface Conv2dOptions extends Omit<WindowOptions, "kernel"> {
  /** Added to each output channel: [O]. */
  bias?: Tensor;
}

/**
 * 2-D cross-correlation, like torch.nn.functional.conv2d: x [N, C, H, W], weight [O, C, KH, KW], optional bias
 * [O] → [N, O, OH, OW]. Computed as weight [O, C·KH·KW] · unfold(x), per sample or, where a sample has few
 * output positions, for the whole batch in one product; the backward unfolds x again rather than keep the
 * columns (C·KH·KW times x's size) alive between the passes.
 */
export function conv2d(x: Tensor, weight: Tensor, options: Conv2dOptions = {}): Tensor {
  checkOptions("conv2d", options, { stride: true, padding: true, dilation: true, bias: true });
  const op = "conv2d";
  checkImage(op, x);
  checkF32(op, weight);
  const bias = options.bias;
  if (bias) checkF32(op, bias);
  const [n, c, h, w] = x.shape;
  if (weight.shape.length !== 4 || weight.shape[1] !== c) {
    throw new ShapeError(
      `${op}: weight ${fmtShape(weight.shape)} must be [O, ${c}, KH, KW] for input ${fmtShape(x.shape)}`,
    );
  }
  const [o, , kh, kw] = weight.shape;
  if (bias && (bias.shape.length !== 1 || bias.shape[0] !== o)) {
    throw new ShapeError(
      `${op}: bias ${fmtShape(bias.shape)} must be [${o}] for weight ${fmtShape(weight.shape)}`,
    );
  }
  checkEngine(op, x, weight, bias);
  const win = windowOf(op, [h, w], { ...options, kernel: [kh, kw] });
  const taps = c * kh * kw;
  // Columns and the weight matrix padded with zero rows to a multiple of 4: the product's K then takes
  // matmul's vec4 path on CPU adapters (a 3×3 kernel over 3 channels ran 2.8x faster at K 28 than at 27).
  const rows = Math.ceil(taps / 4) * 4;
  const positions = win.out[0] * win.out[1];
  const layout = { rows, batchInside: positions <= BATCH_INSIDE_POSITIONS };
  const e = x.engine;
  const matrix = () => {
    const wm = reshape(weight, [o, taps]);
    return rows === taps ? wm : concat([wm, e.zeros([o, rows - taps])], 1);
  };
  // The batch-inside product is [O, m·L]; the output and its gradient are [m, O, L].
  const toSamples = (t: Tensor, m: number) => transpose(reshape(t, [o, m, positions]), [1, 0, 2]);
  const toChannels = (g: Tensor, m: number) =>
    reshape(transpose(reshape(g, [m, o, positions]), [1, 0, 2]), [o, m * positions]);
  const chunks = sampleChunks(op, x, [
    rows * positions,
    o * positions,
    c * h * w,
    o * rows * Math.ceil(positions / 1024),
  ]);
  const y = e.empty([n, o, ...win.out]);
  noGrad(() =>
    chunks.forEach(([s0, s1]) =>
      e.tidy(() => {
        const m = s1 - s0;
        const prod = matmul(matrix(), unfoldRaw(samples(x, s0, s1), win, layout));
        const part = layout.batchInside ? toSamples(prod, m) : prod;
        const out = bias ? add(part, reshape(bias, [o, 1])) : part;
        place(y, out, s0);
      })
    )
  );
  const inputs = bias ? [x, weight, bias] : [x, weight];
  return record(y, op, inputs, (g, needs) =>
    e.tidy(() => {
      const dx = needs[0] ? e.empty(x.shape) : null;
      let dw: Tensor | null = null;
      for (const [s0, s1] of chunks) {
        const m = s1 - s0;
        dw = e.tidy(() => {
          const gs = samples(g, s0, s1);
          const gm = layout.batchInside ? toChannels(gs, m) : reshape(gs, [m, o, positions]);
          if (dx) {
            const part = foldRaw(
              matmul(matrix(), gm, { transA: true }),
              [m, c, h, w],
              win,
              layout.batchInside,
            );
            place(dx, part, s0);
          }
          if (!needs[1]) return null;
          // [O, rows] at once, or [m, O, rows] summed over the samples; added to the chunks before.
          const prod = matmul(gm, unfoldRaw(samples(x, s0, s1), win, layout), { transB: true });
          const summed = layout.batchInside ? prod : sum(prod, 0);
          return dw ? add(dw, summed) : summed;
        });
      }
      const dweight = dw && reshape(rows === taps ? dw : slice(dw, [0, 0], [o, taps]), weight.shape);
      const db = bias && needs[2] ? sum(g, [0, 2, 3]) : null;
      return bias ? [dx, dweight, db] : [dx, dweight];
    }));
}

/**
 * Ranges [s0, s1) of x's samples whose work fits one storage binding, from the bytes / 4 each sample needs in
 * each of conv2d's tensors (columns, product, image, matmul's partial sums): the whole batch where it fits.
 */
function sampleChunks(op: string, x: Tensor, perSample: number[]): [number, number][] {
  const bytes = 4 * Math.max(...perSample);
  if (bytes > x.engine.maxBinding) {
    const limit = `maxStorageBufferBindingSize (${x.engine.maxBinding} bytes)`;
    throw new ShapeError(
      `${op}: one sample of ${fmtShape(x.shape)} needs a ${bytes}-byte buffer, over ${limit}`,
    );
  }
  const per = Math.floor(x.engine.maxBinding / bytes);
  const n = x.shape[0];
  return Array.from({ length: Math.ceil(n / per) }, (_, k) => [k * per, Math.min(n, (k + 1) * per)]);
}

/** Writes `part` (samples from s0 on) into its place in `whole`: samples()'s inverse. */
function place(whole: Tensor, part: Tensor, s0: number): void {
  whole.engine.copy(part.buffer, 0, whole.buffer, (s0 * whole.size / whole.shape[0]) * 4, part.bytes);
}

/** Samples [s0, s1) of t (a copy), or t itself where that is all of them. */
function samples(t: Tensor, s0: number, s1: number): Tensor {
  if (s0 === 0 && s1 === t.shape[0]) return t;
  const per = t.size / t.shape[0];
  const out = t.engine.empty([s1 - s0, ...t.shape.slice(1)]);
  t.engine.copy(t.buffer, s0 * per * 4, out.buffer, 0, out.bytes);
  return out;
}

export interface PoolOptions {
  /** Window height and width (one number for both). */
  kernel: Pair;
  /** Step between windows (default: the kernel, PyTorch's). */
  stride?: Pair;
  /** Padding on each side, at most half the kernel (default 0). */
  padding?: Pair;
}

export interface MaxPoolOptions extends PoolOptions {
  /** Spacing of a window's taps (default 1), as max_pool2d's. */
  dilation?: Pair;
}

/** The pooling window of `o` over x's images; PyTorch's bound on the padding. */
function poolWindow(op: string, x: Tensor, o: MaxPoolOptions): Window {
  checkImage(op, x);
  const { kernel, stride = kernel, padding, dilation } = o;
  const win = windowOf(op, x.shape.slice(2), { kernel, stride, padding, dilation });
  if (win.padding.some((p, d) => p > win.kernel[d] / 2)) {
    throw new RangeError(
      `${op}: padding ${win.padding} is over half the ${win.kernel[0]}×${win.kernel[1]} kernel`,
    );
  }
  return win;
}

/** x's pooling windows [N, C, taps, L], the padding's taps at `pad`. */
function poolColumns(x: Tensor, win: Window, pad: number): Tensor {
  const [n, c] = x.shape;
  const taps = win.kernel[0] * win.kernel[1];
  const cols = unfoldRaw(x, win, { rows: c * taps, batchInside: false, pad });
  const out = reshape(cols, [n, c, taps, win.out[0] * win.out[1]]);
  cols.dispose();
  return out;
}

/**
 * A pooling op over x's windows [N, C, taps, L] (padding taps at `pad`): `reduce` makes each window's value
 * [N, C, L]; `spread` gives each tap its gradient [N, C, taps, L] from the output's gradient and value (both
 * [N, C, 1, L]), the windows (made again on demand), their taps and which lie in the image ([1, 1, taps, L],
 * 1 or 0), and fold sums them into x's gradient.
 */
function pool(
  op: string,
  x: Tensor,
  options: MaxPoolOptions,
  pad: number,
  reduce: (windows: Tensor) => Tensor,
  spread: (g: Tensor, y: Tensor, windows: () => Tensor, taps: number, inImage: () => Tensor) => Tensor,
): Tensor {
  const win = poolWindow(op, x, options);
  const [n, c, h, w] = x.shape;
  const e = x.engine;
  const taps = win.kernel[0] * win.kernel[1];
  const positions = win.out[0] * win.out[1];
  // Chunks of samples whose windows fit one binding, each written into place.
  const chunks = sampleChunks(op, x, [c * taps * positions, c * h * w]);
  const y = e.empty([n, c, ...win.out]);
  noGrad(() =>
    chunks.forEach(([s0, s1]) =>
      e.tidy(() => {
        const part = reduce(poolColumns(samples(x, s0, s1), win, pad));
        place(y, part, s0);
      })
    )
  );
  return record(y, op, [x], (g) =>
    e.tidy(() => {
      const dx = e.empty(x.shape);
      for (const [s0, s1] of chunks) {
        e.tidy(() => {
          const perWindow = [s1 - s0, c, 1, positions];
          const xs = samples(x, s0, s1);
          const each = spread(
            reshape(samples(g, s0, s1), perWindow),
            reshape(samples(y, s0, s1), perWindow),
            () => poolColumns(xs, win, pad),
            taps,
            () => poolColumns(e.ones([1, 1, h, w]), win, 0),
          );
          const part = foldRaw(reshape(each, [s1 - s0, c * taps, positions]), xs.shape, win);
          place(dx, part, s0);
        });
      }
      return [dx];
    }));
}

/**
 * Average of each window, like torch.nn.functional.avg_pool2d (padding counted, count_include_pad): x [N, C, H, W]
 * → [N, C, OH, OW]. Each tap of a window gets the window's gradient over the window's size.
 */
export function avgPool2d(x: Tensor, options: PoolOptions): Tensor {
  if (options?.constructor === Object && "dilation" in options) {
    throw new RangeError("avgPool2d: has no dilation (nor has torch's avg_pool2d)");
  }
  checkOptions("avgPool2d", options, { kernel: true, stride: true, padding: true }, true);
  const { kernel, stride, padding } = options;
  return pool(
    "avgPool2d",
    x,
    { kernel, stride, padding },
    0,
    (w) => mean(w, 2),
    (g, _y, _w, taps) => mul(g, x.engine.full([1, 1, taps, 1], 1 / taps)),
  );
}

/**
 * Maximum of each window, like torch.nn.functional.max_pool2d (padding never wins): x [N, C, H, W] →
 * [N, C, OH, OW]. The gradient goes to the window's maximal elements, ties split evenly (PyTorch gives it to one);
 * a window holding a NaN is NaN, its gradient going to its NaNs.
 */
export function maxPool2d(x: Tensor, options: MaxPoolOptions): Tensor {
  checkOptions("maxPool2d", options, { kernel: true, stride: true, padding: true, dilation: true }, true);
  return pool("maxPool2d", x, options, -Infinity, (w) => max(w, 2), (g, y, windows, _taps, inImage) => {
    const w = windows();
    // NaN ≠ NaN, so 1 − equal(v, v) marks NaNs; the padding's −∞ taps would tie with an all −∞ window.
    const isNan = (v: Tensor) => sub(1, equal(v, v));
    const hits = mul(inImage(), add(equal(w, y), mul(isNan(w), isNan(y))));
    // where, not a product: an ∞ or NaN upstream gradient reaches the hits alone (0·∞ would be NaN).
    return where(hits, div(g, sum(hits, 2, { keepDims: true })), 0);
  });
}
