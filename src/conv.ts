// 2-D convolution as im2col and matmul: unfold (image → columns), its adjoint fold, and conv2d built from them
// (shaders/conv.wgsl for the two data movements; CPU reference in src/ref/conv.ts).
import { noGrad, record } from "./autograd.ts";
import { Params } from "./engine.ts";
import { add, checkF32 } from "./elementwise.ts";
import { fmtShape, ShapeError } from "./errors.ts";
import { matmul } from "./matmul.ts";
import { sum } from "./reduce.ts";
import { concat, reshape, slice } from "./shape.ts";
import type { Tensor } from "./tensor.ts";

const WG = 256;
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
  const p: [number, number] = v === undefined
    ? [fallback, fallback]
    : typeof v === "number"
    ? [v, v]
    : [v[0], v[1]];
  if (!p.every((d) => Number.isInteger(d) && d >= min)) {
    throw new RangeError(`${op}: ${name} must be integers ≥ ${min}, got ${JSON.stringify(v)}`);
  }
  return p;
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
    throw new ShapeError(
      `${op}: a ${kernel[0]}×${kernel[1]} kernel (dilation ${dilation}) does not fit a ${size[0]}×${
        size[1]
      } ` +
        `image padded by ${padding}`,
    );
  }
  return { kernel, stride, padding, dilation, out };
}

function params(count: number, c: number, h: number, w: number, win: Window, rows: number): Params {
  const { kernel, stride, padding, dilation, out } = win;
  return new Params().u32(count, c, h, w, ...kernel, ...stride, ...padding, ...dilation, ...out, rows);
}

function checkBinding(op: string, bytes: number, shape: readonly number[], maxBinding: number): void {
  if (bytes > maxBinding) {
    throw new ShapeError(
      `${op}: ${
        fmtShape(shape)
      } is ${bytes} bytes, over maxStorageBufferBindingSize (${maxBinding} bytes); ` +
        "split the batch",
    );
  }
}

/** unfold's kernel: columns [N, rows, L] of image x [N, C, H, W], rows from C·KH·KW on zero. */
function unfoldRaw(x: Tensor, win: Window, rows = x.shape[1] * win.kernel[0] * win.kernel[1]): Tensor {
  const [n, c, h, w] = x.shape;
  const positions = win.out[0] * win.out[1];
  const shape = [n, rows, positions];
  const elements = n * rows * positions;
  checkBinding("unfold", 4 * elements, shape, x.engine.maxBinding);
  const out = x.engine.empty(shape);
  // Four positions per invocation where every row of columns holds whole vec4s.
  const count = positions % 4 === 0 ? elements / 4 : elements;
  x.engine.run({
    op: "unfold",
    shader: "conv",
    entry: positions % 4 === 0 ? "unfold4" : "unfold",
    constants: { WG },
    params: params(count, c, h, w, win, rows),
    buffers: [x, out],
    workgroups: Math.ceil(count / WG),
  });
  return out;
}

/** fold's kernel: image [N, C, H, W] of columns [N, rows, L] (rows past C·KH·KW not read). */
function foldRaw(cols: Tensor, c: number, size: readonly number[], win: Window): Tensor {
  const [h, w] = size;
  const shape = [cols.shape[0], c, h, w];
  const count = shape[0] * c * h * w;
  checkBinding("fold", 4 * count, shape, cols.engine.maxBinding);
  const out = cols.engine.empty(shape);
  cols.engine.run({
    op: "fold",
    shader: "conv",
    entry: "fold",
    constants: { WG, UNIT_STRIDE: +(win.stride[0] === 1 && win.stride[1] === 1) },
    params: params(count, c, h, w, win, cols.shape[1]),
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
  checkImage("unfold", x);
  const [, c, h, w] = x.shape;
  const win = windowOf("unfold", [h, w], options);
  return record(unfoldRaw(x, win), "unfold", [x], (g) => [foldRaw(g, c, [h, w], win)]);
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
    throw new ShapeError(
      `${op}: columns ${fmtShape(cols.shape)} must be [N, C·${taps}, ${positions}] for a ` +
        `${win.kernel[0]}×${win.kernel[1]} kernel over ${size[0]}×${size[1]} (${win.out[0]}×${
          win.out[1]
        } positions)`,
    );
  }
  const c = cols.shape[1] / taps;
  return record(foldRaw(cols, c, size, win), op, [cols], (g) => [unfoldRaw(g, win)]);
}

export interface Conv2dOptions extends Omit<WindowOptions, "kernel"> {
  /** Added to each output channel: [O]. */
  bias?: Tensor;
}

/**
 * 2-D cross-correlation, like torch.nn.functional.conv2d: x [N, C, H, W], weight [O, C, KH, KW], optional bias
 * [O] → [N, O, OH, OW]. Computed as weight [O, C·KH·KW] · unfold(x) per sample; the backward unfolds x again
 * rather than keep the columns (C·KH·KW times x's size) alive between the passes.
 */
export function conv2d(x: Tensor, weight: Tensor, options: Conv2dOptions = {}): Tensor {
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
  for (const t of [weight, bias]) {
    if (t && t.engine !== x.engine) throw new Error(`${op}: tensors belong to different engines`);
  }
  const win = windowOf(op, [h, w], { ...options, kernel: [kh, kw] });
  const taps = c * kh * kw;
  // Columns and the weight matrix padded with zero rows to a multiple of 4: the product's K then takes
  // matmul's vec4 path on CPU adapters (a 3×3 kernel over 3 channels ran 2.8x faster at K 28 than at 27).
  const rows = Math.ceil(taps / 4) * 4;
  const positions = win.out[0] * win.out[1];
  const matrix = () => {
    const wm = reshape(weight, [o, taps]);
    if (rows === taps) return wm;
    const zeros = x.engine.zeros([o, rows - taps]);
    const padded = concat([wm, zeros], 1);
    for (const t of [wm, zeros]) t.dispose();
    return padded;
  };
  const y = noGrad(() => {
    const cols = unfoldRaw(x, win, rows);
    const wm = matrix();
    const prod = matmul(wm, cols);
    cols.dispose();
    wm.dispose();
    const shaped = reshape(prod, [n, o, ...win.out]);
    prod.dispose();
    if (!bias) return shaped;
    const b = reshape(bias, [o, 1, 1]);
    const out = add(shaped, b);
    for (const t of [b, shaped]) t.dispose();
    return out;
  });
  const inputs = bias ? [x, weight, bias] : [x, weight];
  return record(y, op, inputs, (g, needs) => {
    const gm = reshape(g, [n, o, positions]);
    let dx: Tensor | null = null;
    let dw: Tensor | null = null;
    if (needs[0]) {
      const wm = matrix();
      const dcols = matmul(wm, gm, { transA: true });
      dx = foldRaw(dcols, c, [h, w], win);
      for (const t of [wm, dcols]) t.dispose();
    }
    if (needs[1]) {
      const cols = unfoldRaw(x, win, rows);
      const perSample = matmul(gm, cols, { transB: true });
      const summed = sum(perSample, 0);
      const used = rows === taps ? summed : slice(summed, [0, 0], [o, taps]);
      dw = reshape(used, weight.shape);
      for (const t of new Set([cols, perSample, summed, used])) t.dispose();
    }
    const db = bias && needs[2] ? sum(g, [0, 2, 3]) : null;
    gm.dispose();
    return bias ? [dx, dw, db] : [dx, dw];
  });
}
