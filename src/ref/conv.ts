// CPU reference of src/conv.ts in float64: unfold and fold by their definitions, and conv2d with its gradients
// as direct sums over the kernel (no columns), so the GPU's im2col route is checked against an independent one.
import type { Window } from "../conv.ts";

/** Image pixel (y, x) that tap (i, j) of output position (oy, ox) reads, or null where it is padding. */
function tapPixel(win: Window, size: readonly number[], oy: number, ox: number, i: number, j: number) {
  const y = oy * win.stride[0] - win.padding[0] + i * win.dilation[0];
  const x = ox * win.stride[1] - win.padding[1] + j * win.dilation[1];
  return y >= 0 && y < size[0] && x >= 0 && x < size[1] ? y * size[1] + x : null;
}

/** Calls fn(plane pixel, column row, position) for every tap of channel c's window that reads a pixel. */
function forEachTap(
  win: Window,
  size: readonly number[],
  c: number,
  fn: (px: number, row: number, at: number) => void,
) {
  const [kh, kw] = win.kernel;
  for (let i = 0; i < kh; i++) {
    for (let j = 0; j < kw; j++) {
      for (let oy = 0; oy < win.out[0]; oy++) {
        for (let ox = 0; ox < win.out[1]; ox++) {
          const px = tapPixel(win, size, oy, ox, i, j);
          if (px !== null) fn(px, (c * kh + i) * kw + j, oy * win.out[1] + ox);
        }
      }
    }
  }
}

/** [N, C·KH·KW, L] columns of x [N, C, H, W]. */
export function refUnfold(x: ArrayLike<number>, shape: readonly number[], win: Window): Float64Array {
  const [n, c, h, w] = shape;
  const rows = c * win.kernel[0] * win.kernel[1];
  const positions = win.out[0] * win.out[1];
  const out = new Float64Array(n * rows * positions);
  for (let s = 0; s < n; s++) {
    for (let ch = 0; ch < c; ch++) {
      forEachTap(win, [h, w], ch, (px, row, at) => {
        out[(s * rows + row) * positions + at] = x[(s * c + ch) * h * w + px];
      });
    }
  }
  return out;
}

/** Image [N, C, H, W] summed from columns [N, C·KH·KW, L]. */
export function refFold(cols: ArrayLike<number>, shape: readonly number[], win: Window): Float64Array {
  const [n, c, h, w] = shape;
  const rows = c * win.kernel[0] * win.kernel[1];
  const positions = win.out[0] * win.out[1];
  const out = new Float64Array(n * c * h * w);
  for (let s = 0; s < n; s++) {
    for (let ch = 0; ch < c; ch++) {
      forEachTap(win, [h, w], ch, (px, row, at) => {
        out[(s * c + ch) * h * w + px] += cols[(s * rows + row) * positions + at];
      });
    }
  }
  return out;
}

/** Visits every (sample, output channel, input channel, tap that reads a pixel): its x, weight and y indices. */
function forEachProduct(
  xShape: readonly number[],
  wShape: readonly number[],
  win: Window,
  fn: (xi: number, wi: number, yi: number) => void,
): void {
  const [n, c, h, w] = xShape;
  const [o, , kh, kw] = wShape;
  const positions = win.out[0] * win.out[1];
  for (let s = 0; s < n; s++) {
    for (let oc = 0; oc < o; oc++) {
      for (let ch = 0; ch < c; ch++) {
        for (let i = 0; i < kh; i++) {
          for (let j = 0; j < kw; j++) {
            for (let oy = 0; oy < win.out[0]; oy++) {
              for (let ox = 0; ox < win.out[1]; ox++) {
                const px = tapPixel(win, [h, w], oy, ox, i, j);
                if (px === null) continue;
                fn(
                  (s * c + ch) * h * w + px,
                  ((oc * c + ch) * kh + i) * kw + j,
                  (s * o + oc) * positions + oy * win.out[1] + ox,
                );
              }
            }
          }
        }
      }
    }
  }
}

/** y [N, O, OH, OW] = Σ over channels and taps of x · weight, plus bias per output channel. */
export function refConv2d(
  x: ArrayLike<number>,
  xShape: readonly number[],
  weight: ArrayLike<number>,
  wShape: readonly number[],
  bias: ArrayLike<number> | null,
  win: Window,
): Float64Array {
  const [n] = xShape;
  const o = wShape[0];
  const positions = win.out[0] * win.out[1];
  const y = new Float64Array(n * o * positions);
  if (bias) y.forEach((_, k) => (y[k] = bias[Math.floor(k / positions) % o]));
  forEachProduct(xShape, wShape, win, (xi, wi, yi) => (y[yi] += x[xi] * weight[wi]));
  return y;
}

/** Gradients of Σ g·conv2d(x, weight, bias) with respect to x, weight and bias. */
export function refConv2dGrad(
  x: ArrayLike<number>,
  xShape: readonly number[],
  weight: ArrayLike<number>,
  wShape: readonly number[],
  g: ArrayLike<number>,
  win: Window,
): { dx: Float64Array; dw: Float64Array; db: Float64Array } {
  const o = wShape[0];
  const positions = win.out[0] * win.out[1];
  const dx = new Float64Array(x.length);
  const dw = new Float64Array(weight.length);
  const db = new Float64Array(o);
  for (let k = 0; k < g.length; k++) db[Math.floor(k / positions) % o] += g[k];
  forEachProduct(xShape, wShape, win, (xi, wi, yi) => {
    dx[xi] += g[yi] * weight[wi];
    dw[wi] += g[yi] * x[xi];
  });
  return { dx, dw, db };
}

/** Calls fn(output index, in-image pixel indices of the window, window size) for each pooling window. */
function forEachWindow(
  shape: readonly number[],
  win: Window,
  fn: (out: number, pixels: number[], taps: number) => void,
): void {
  const [n, c, h, w] = shape;
  const [kh, kw] = win.kernel;
  for (let plane = 0; plane < n * c; plane++) {
    for (let oy = 0; oy < win.out[0]; oy++) {
      for (let ox = 0; ox < win.out[1]; ox++) {
        const pixels: number[] = [];
        for (let i = 0; i < kh; i++) {
          for (let j = 0; j < kw; j++) {
            const px = tapPixel(win, [h, w], oy, ox, i, j);
            if (px !== null) pixels.push(plane * h * w + px);
          }
        }
        fn((plane * win.out[0] + oy) * win.out[1] + ox, pixels, kh * kw);
      }
    }
  }
}

/** Average (padding counted as zeros) or maximum (padding never wins) of each window: [N, C, OH, OW]. */
export function refPool2d(
  x: ArrayLike<number>,
  shape: readonly number[],
  win: Window,
  kind: "avg" | "max",
): Float64Array {
  const y = new Float64Array(shape[0] * shape[1] * win.out[0] * win.out[1]);
  forEachWindow(shape, win, (o, pixels, taps) => {
    y[o] = kind === "avg"
      ? pixels.reduce((s, i) => s + x[i], 0) / taps
      : pixels.reduce((m, i) => Math.max(m, x[i]), -Infinity);
  });
  return y;
}

/** Gradient of Σ g·pool(x): g / taps to each in-image tap, or g split evenly over each window's maxima (its NaNs). */
export function refPool2dGrad(
  x: ArrayLike<number>,
  shape: readonly number[],
  win: Window,
  kind: "avg" | "max",
  g: ArrayLike<number>,
): Float64Array {
  const dx = new Float64Array(x.length);
  forEachWindow(shape, win, (o, pixels, taps) => {
    if (kind === "avg") {
      for (const i of pixels) dx[i] += g[o] / taps;
      return;
    }
    const m = pixels.reduce((acc, i) => Math.max(acc, x[i]), -Infinity);
    const hits = Number.isNaN(m)
      ? pixels.filter((i) => Number.isNaN(x[i]))
      : pixels.filter((i) => x[i] === m);
    for (const i of hits) dx[i] += g[o] / hits.length;
  });
  return dx;
}
