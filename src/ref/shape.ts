// CPU reference of the shape ops (src/shape.ts): plain index arithmetic, one element at a time.

function strides(shape: readonly number[]): number[] {
  const s = new Array<number>(shape.length);
  for (let d = shape.length - 1, n = 1; d >= 0; d--) {
    s[d] = n;
    n *= shape[d];
  }
  return s;
}

/** Calls fn(i, k) for every row-major index i and multi-index k of `shape`. */
function forEachIndex(shape: readonly number[], fn: (i: number, k: number[]) => void): void {
  const size = shape.reduce((a, b) => a * b, 1);
  const k = new Array<number>(shape.length).fill(0);
  for (let i = 0; i < size; i++) {
    fn(i, k);
    for (let d = shape.length - 1; d >= 0 && ++k[d] === shape[d]; d--) k[d] = 0;
  }
}

/** out[k] = x[k permuted]: output dim i is input dim perm[i]. */
export function refTranspose(
  x: ArrayLike<number>,
  shape: readonly number[],
  perm: readonly number[],
): number[] {
  const xs = strides(shape);
  const out: number[] = [];
  forEachIndex(
    perm.map((a) => shape[a]),
    (_, k) => out.push(x[k.reduce((o, kd, i) => o + kd * xs[perm[i]], 0)]),
  );
  return out;
}

/** The box [begin[d], end[d]) of each dim (non-negative, already resolved). */
export function refSlice(
  x: ArrayLike<number>,
  shape: readonly number[],
  begin: readonly number[],
  end: readonly number[],
): number[] {
  const xs = strides(shape);
  const out: number[] = [];
  forEachIndex(
    begin.map((b, d) => end[d] - b),
    (_, k) => out.push(x[k.reduce((o, kd, d) => o + (kd + begin[d]) * xs[d], 0)]),
  );
  return out;
}

/** Zeros of `shape` with g (of shape gShape) written at corner `begin`: the gradient of refSlice. */
export function refPad(
  g: ArrayLike<number>,
  gShape: readonly number[],
  shape: readonly number[],
  begin: readonly number[],
): number[] {
  const os = strides(shape);
  const out = new Array<number>(shape.reduce((a, b) => a * b, 1)).fill(0);
  forEachIndex(gShape, (i, k) => {
    out[k.reduce((o, kd, d) => o + (kd + begin[d]) * os[d], 0)] = g[i];
  });
  return out;
}

export function refConcat(xs: ArrayLike<number>[], shapes: readonly number[][], axis: number): number[] {
  const outer = shapes[0].slice(0, axis).reduce((a, b) => a * b, 1);
  const out: number[] = [];
  for (let o = 0; o < outer; o++) {
    xs.forEach((x, i) => {
      const run = shapes[i].slice(axis).reduce((a, b) => a * b, 1);
      for (let j = 0; j < run; j++) out.push(x[o * run + j]);
    });
  }
  return out;
}
