// Pretext-task generators: each returns an input and the target it makes for itself (shaders/pretext.wgsl and the
// fused view pass of shaders/augment.wgsl; CPU reference in src/ref/pretext.ts). Per-sample labels are drawn on the
// host from Philox as in src/augment.ts (counter (parameter, sample, tag, 0)); per-patch and per-token draws are
// made in the kernels from the same generator.
import {
  applyParams,
  drawUniforms,
  gaussianNoise,
  identityParams,
  imageDims,
  RANDOM_TAG,
  rotate90,
} from "./augment.ts";
import { checkFits, Params } from "./engine.ts";
import { checkOptions, fmtShape, ShapeError } from "./errors.ts";
import { assertLive, type Tensor } from "./tensor.ts";

const WG = 256;
/** tiles: most pixels of a tile row one invocation copies. */
const SPAN = 64;
const MAX_PATCHES = 4096;
/** 24-bit thresholds, as the uniforms are 24-bit. */
const BITS = 2 ** 24;

function checkSeed(op: string, seed: number): number {
  if (!Number.isSafeInteger(seed) || seed < 0) {
    throw new RangeError(`${op}: seed must be an integer in [0, 2^53), got ${seed}`);
  }
  return seed;
}

function seedWords(seed: number): [number, number] {
  return [seed >>> 0, Math.floor(seed / 2 ** 32) >>> 0];
}

function copy(x: Tensor): Tensor {
  const out = x.engine.empty(x.shape, x.dtype);
  x.engine.copy(x.buffer, 0, out.buffer, 0, x.bytes);
  return out;
}

/** Top-left pixel [row, column] of tile `tile` of a grid of th×tw tiles, `cols` per row. */
export function gridOrigin(tile: number, th: number, tw: number, cols: number): [number, number] {
  return [Math.floor(tile / cols) * th, (tile % cols) * tw];
}

/** Copies th×tw tiles: output tile t of sample n is the source rect at origins[n][t] ([row, column]). */
function tiles(
  op: string,
  x: Tensor,
  origins: [number, number][][],
  th: number,
  tw: number,
  rows: number,
): Tensor {
  const [n, c, h, w] = imageDims(op, x);
  const engine = x.engine;
  const perSample = origins[0].length;
  const t = engine.tensor(Int32Array.from(origins.flat(2)), [n, perSample, 2], "i32");
  const out = engine.empty([n, c, rows * th, (perSample / rows) * tw]);
  const runs = n * c * out.shape[2] * (perSample / rows) * Math.ceil(tw / SPAN);
  engine.run({
    op,
    shader: "pretext",
    entry: "tiles",
    constants: { WG, SPAN },
    params: new Params().u32(n, c, h, w, out.shape[2], out.shape[3], th, tw),
    buffers: [x, t, out],
    workgroups: Math.ceil(runs / WG),
  });
  t.dispose();
  return out;
}

/** Each image rotated by labels[i]·90° counter-clockwise (square images). */
export function rotationTask(x: Tensor, o: { seed: number }): { input: Tensor; labels: Tensor } {
  checkOptions("rotationTask", o, { seed: true }, true);
  const op = "rotationTask";
  const [, , h, w] = imageDims(op, x);
  if (h !== w) throw new ShapeError(`${op}: needs square images, got ${fmtShape(x.shape)}`);
  const { output, params } = rotate90(x, { seed: checkSeed(op, o.seed) });
  return {
    input: output,
    labels: x.engine.tensor(Int32Array.from(params, (q) => q.rotate), [params.length], "i32"),
  };
}

const permutationCache = new Map<string, number[][]>();

/** All permutations of 0..k-1 in lexicographic order, k bytes each. */
function allPermutations(k: number): Uint8Array {
  let count = 1;
  for (let i = 2; i <= k; i++) count *= i;
  const out = new Uint8Array(count * k);
  const a = Uint8Array.from({ length: k }, (_, i) => i);
  for (let p = 0; p < count; p++) {
    out.set(a, p * k);
    let i = k - 2;
    while (i >= 0 && a[i] >= a[i + 1]) i--;
    if (i < 0) break;
    let j = k - 1;
    while (a[j] <= a[i]) j--;
    [a[i], a[j]] = [a[j], a[i]];
    a.subarray(i + 1).reverse();
  }
  return out;
}

/** `count` Philox-shuffled permutations of 0..k-1 (the first the identity), k bytes each. */
function shuffledPermutations(k: number, count: number): Uint8Array {
  const out = new Uint8Array(count * k);
  for (let p = 0; p < count; p++) {
    const a = out.subarray(p * k, (p + 1) * k);
    a.set(Array.from({ length: k }, (_, j) => j));
    for (let j = k - 1; j > 0 && p > 0; j--) {
      const r = Math.floor(drawUniforms(0, RANDOM_TAG.jigsaw, 1, p, j)[0] * (j + 1));
      [a[j], a[r]] = [a[r], a[j]];
    }
  }
  return out;
}

/**
 * A permutation set far apart in Hamming distance, after Noroozi & Favaro: greedily the candidate whose smallest
 * distance to those chosen is largest (first in order on ties), starting from the identity (their
 * select_permutations.py takes the largest mean distance, from a random start). Candidates are every permutation
 * up to 9 tiles, else 20,000 Philox-shuffled ones. Deterministic; cached.
 */
export function jigsawPermutations(grid: number, count: number): number[][] {
  checkJigsaw("jigsawPermutations", grid, count);
  // A copy: the caller's edits must not reach the cache (nor a later jigsawTask's labels).
  return permutationSet("jigsawPermutations", grid, count).map((p) => [...p]);
}

function checkJigsaw(op: string, grid: number, count: number): void {
  // Up to 16: candidate permutations hold tile indices as bytes (and the selection's cost grows as grid⁴).
  if (!Number.isInteger(grid) || grid < 2 || grid > 16) {
    throw new RangeError(`${op}: grid must be an integer in [2, 16], got ${grid}`);
  }
  if (!Number.isInteger(count) || count < 1) {
    throw new RangeError(`${op}: permutations must be an integer ≥ 1, got ${count}`);
  }
}

/** jigsawPermutations' set, cached (shared: not for callers to edit). */
function permutationSet(op: string, grid: number, count: number): number[][] {
  const cacheKey = `${grid},${count}`;
  const cached = permutationCache.get(cacheKey);
  if (cached) return cached;
  const k = grid * grid;
  const candidates = k <= 9 ? allPermutations(k) : shuffledPermutations(k, 20000);
  const total = candidates.length / k;
  if (count > total) {
    throw new RangeError(
      `${op}: ${count} permutations requested, but a ${grid}×${grid} grid has ${total}`,
    );
  }
  const minDist = new Int32Array(total).fill(k + 1);
  const chosen: number[][] = [];
  let next = 0;
  for (let s = 0; s < count; s++) {
    const pick = candidates.slice(next * k, (next + 1) * k);
    chosen.push([...pick]);
    let best = 0;
    for (let j = 0, at = 0; j < total; j++) {
      let d = 0;
      for (let t = 0; t < k; t++, at++) d += candidates[at] !== pick[t] ? 1 : 0;
      if (d < minDist[j]) minDist[j] = d;
      if (minDist[j] > minDist[best]) best = j;
    }
    next = best;
  }
  permutationCache.set(cacheKey, chosen);
  return chosen;
}

/**
 * Tiles shuffled by one of a fixed set of permutations: input's tile t is x's tile permutationTable[labels[i]][t].
 * Tiles are floor(H/grid)×floor(W/grid); the remainder rows and columns are dropped.
 */
export function jigsawTask(
  x: Tensor,
  o: { seed: number; grid?: number; permutations?: number },
): { input: Tensor; labels: Tensor; permutationTable: number[][] } {
  checkOptions("jigsawTask", o, { seed: true, grid: true, permutations: true }, true);
  const op = "jigsawTask";
  const [n, , h, w] = imageDims(op, x);
  const seed = checkSeed(op, o.seed);
  const grid = o.grid ?? 3;
  const count = o.permutations ?? 100;
  checkJigsaw(op, grid, count);
  if (grid > h || grid > w) {
    throw new ShapeError(`${op}: a ${grid}×${grid} grid does not fit images ${fmtShape(x.shape)}`);
  }
  const table = permutationSet(op, grid, count);
  const labels = Array.from(
    { length: n },
    (_, i) => Math.floor(drawUniforms(seed, RANDOM_TAG.jigsaw, 0, i, 0)[0] * count),
  );
  const [th, tw] = [Math.floor(h / grid), Math.floor(w / grid)];
  const origins = labels.map((l) => table[l].map((tile) => gridOrigin(tile, th, tw, grid)));
  const input = tiles(op, x, origins, th, tw, grid);
  return {
    input,
    labels: x.engine.tensor(Int32Array.from(labels), [n], "i32"),
    permutationTable: table.map((p) => [...p]),
  };
}

/** Neighbor offsets (dy, dx) of the 8 classes, in reading order (Doersch et al.). */
export const NEIGHBORS = [[-1, -1], [-1, 0], [-1, 1], [0, -1], [0, 1], [1, -1], [1, 0], [1, 1]];

/**
 * Doersch et al.'s context prediction: a center patch (a random inner cell of a grid×grid grid of th×tw patches
 * with `gap` pixels between them) and one of its 8 neighbors; labels[i] indexes NEIGHBORS. Each patch moves by
 * up to `jitter` pixels each way (kept inside the image). Gaps and jitter deny the network the trivial cues of
 * continuing lines and textures across patch borders (Doersch et al. use a gap of half a patch and a jitter of 7
 * pixels on 96-pixel patches); patches are floor((H − (grid − 1)·gap) / grid) high, likewise wide.
 */
export function relativePositionTask(
  x: Tensor,
  o: { seed: number; grid?: number; gap?: number; jitter?: number },
): { center: Tensor; neighbor: Tensor; labels: Tensor } {
  checkOptions("relativePositionTask", o, { seed: true, grid: true, gap: true, jitter: true }, true);
  const op = "relativePositionTask";
  const [n, , h, w] = imageDims(op, x);
  const seed = checkSeed(op, o.seed);
  const grid = o.grid ?? 3;
  const gap = o.gap ?? 0;
  const jitter = o.jitter ?? 0;
  if (!Number.isInteger(grid) || grid < 3) {
    throw new RangeError(`${op}: grid must be an integer ≥ 3, got ${grid}`);
  }
  for (const [name, v] of [["gap", gap], ["jitter", jitter]] as const) {
    if (!Number.isInteger(v) || v < 0) {
      throw new RangeError(`${op}: ${name} must be an integer ≥ 0, got ${v}`);
    }
  }
  const th = Math.floor((h - (grid - 1) * gap) / grid);
  const tw = Math.floor((w - (grid - 1) * gap) / grid);
  if (th < 1 || tw < 1) {
    throw new ShapeError(
      `${op}: a ${grid}×${grid} grid with gap ${gap} does not fit images ${fmtShape(x.shape)}`,
    );
  }
  // Cell (r, c)'s patch moved by a jitter drawn from u1, u2 in [0, 1), clamped into the image.
  const place = (r: number, c: number, u1: number, u2: number): [number, number] => {
    const shift = (u: number) => Math.floor(u * (2 * jitter + 1)) - jitter;
    return [
      Math.min(Math.max(r * (th + gap) + shift(u1), 0), h - th),
      Math.min(Math.max(c * (tw + gap) + shift(u2), 0), w - tw),
    ];
  };
  const centers: [number, number][][] = [];
  const neighbors: [number, number][][] = [];
  const labels = Array.from({ length: n }, (_, i) => {
    const r = drawUniforms(seed, RANDOM_TAG.relativePosition, 0, i, 0);
    const j = drawUniforms(seed, RANDOM_TAG.relativePosition, 0, i, 1);
    const cy = 1 + Math.floor(r[1] * (grid - 2));
    const cx = 1 + Math.floor(r[2] * (grid - 2));
    const label = Math.floor(r[0] * 8);
    const [dy, dx] = NEIGHBORS[label];
    centers.push([place(cy, cx, j[0], j[1])]);
    neighbors.push([place(cy + dy, cx + dx, j[2], j[3])]);
    return label;
  });
  return {
    center: tiles(op, x, centers, th, tw, 1),
    neighbor: tiles(op, x, neighbors, th, tw, 1),
    labels: x.engine.tensor(Int32Array.from(labels), [n], "i32"),
  };
}

/**
 * MAE's masking: exactly round(ratio · patches) patches per image (MAE's code masks L − int(L·(1 − ratio)),
 * which floating point can make one more: all 10 of 10 at ratio 0.9; both mask 147 of 196 at its 0.75), chosen
 * by ranking a Philox key per patch.
 * mask [N, patches] is 1 where masked (patches row-major); input has masked pixels zeroed; target is a copy of x.
 * For an encoder that sees only the visible patches, as MAE's: shuffle i32 [N, patches] lists each image's
 * visible patches first, then its masked ones (MAE's ids_shuffle), and restore is its inverse (ids_restore), so
 * gatherRows(tokens, slice(shuffle, [0, 0], [N, patches − masked])) keeps the visible tokens and gatherRows(
 * concat([encoded, maskTokens], 1), restore) puts every token back in place.
 */
export function maskedImageTask(
  x: Tensor,
  o: { seed: number; patch?: number; ratio?: number },
): { input: Tensor; mask: Tensor; target: Tensor; shuffle: Tensor; restore: Tensor } {
  checkOptions("maskedImageTask", o, { seed: true, patch: true, ratio: true }, true);
  const op = "maskedImageTask";
  const [n, c, h, w] = imageDims(op, x);
  const seed = checkSeed(op, o.seed);
  const patch = o.patch ?? 16;
  const ratio = o.ratio ?? 0.75;
  if (!Number.isInteger(patch) || patch < 1) {
    throw new RangeError(`${op}: patch must be a positive integer, got ${patch}`);
  }
  if (h % patch || w % patch) {
    throw new ShapeError(`${op}: patch ${patch} does not divide the images ${fmtShape(x.shape)}`);
  }
  if (!(ratio >= 0 && ratio <= 1)) throw new RangeError(`${op}: ratio must be in [0, 1], got ${ratio}`);
  const cols = w / patch;
  const len = (h / patch) * cols;
  if (len > MAX_PATCHES) {
    throw new RangeError(`${op}: ${len} patches per image exceed the ${MAX_PATCHES} supported`);
  }
  const engine = x.engine;
  const params = new Params().u32(
    n,
    c,
    h,
    w,
    patch,
    0,
    0,
    0,
    cols,
    len,
    Math.round(ratio * len),
    ...seedWords(seed),
  )
    .u32(RANDOM_TAG.maskedImage);
  const keys = engine.empty([n, len], "u32");
  const mask = engine.empty([n, len]);
  const shuffle = engine.empty([n, len], "i32");
  const restore = engine.empty([n, len], "i32");
  const input = engine.empty(x.shape);
  const run = (entry: string, buffers: Tensor[], count: number) =>
    engine.run({
      op,
      shader: "pretext",
      entry,
      constants: { WG },
      params,
      buffers,
      workgroups: Math.ceil(count / WG),
    });
  run("mask_keys", [keys], n * len);
  run("mask_rank", [keys, mask, shuffle, restore], n * len);
  if (w % 4 === 0 && patch % 4 === 0) run("mask_apply4", [x, mask, input], x.size / 4);
  else run("mask_apply", [x, mask, input], x.size);
  keys.dispose();
  return { input, mask, target: copy(x), shuffle, restore };
}

/**
 * BERT's masked-token recipe on i32 ids [N, L]: each position is chosen with probability `ratio`; of the chosen,
 * 80% become maskId, 10% a random id in [0, vocabSize), 10% stay. labels: the id where chosen, -100 elsewhere.
 */
export function maskedTokenTask(
  tokens: Tensor,
  o: { seed: number; ratio?: number; maskId: number; vocabSize: number },
): { input: Tensor; labels: Tensor } {
  checkOptions("maskedTokenTask", o, { seed: true, ratio: true, maskId: true, vocabSize: true }, true);
  const op = "maskedTokenTask";
  assertLive(op, tokens);
  if (tokens.dtype !== "i32") {
    throw new TypeError(`${op}: expected i32 token ids, got ${tokens.dtype} ${fmtShape(tokens.shape)}`);
  }
  if (tokens.shape.length !== 2) {
    throw new ShapeError(`${op}: expected tokens [N, L], got ${fmtShape(tokens.shape)}`);
  }
  const seed = checkSeed(op, o.seed);
  const ratio = o.ratio ?? 0.15;
  if (!(ratio >= 0 && ratio <= 1)) throw new RangeError(`${op}: ratio must be in [0, 1], got ${ratio}`);
  if (!Number.isInteger(o.vocabSize) || o.vocabSize < 1 || o.vocabSize > 2 ** 31) {
    throw new RangeError(`${op}: vocabSize must be a positive integer, got ${o.vocabSize}`);
  }
  if (!Number.isInteger(o.maskId) || o.maskId < -(2 ** 31) || o.maskId >= 2 ** 31) {
    throw new RangeError(`${op}: maskId must be an i32, got ${o.maskId}`);
  }
  const [n, len] = tokens.shape;
  const engine = tokens.engine;
  checkFits(op, engine, tokens.shape);
  const input = engine.empty(tokens.shape, "i32");
  const labels = engine.empty(tokens.shape, "i32");
  engine.run({
    op,
    shader: "pretext",
    entry: "tokens_mask",
    constants: { WG },
    params: new Params().u32(n, 0, 0, 0, 0, 0, 0, 0, 0, len, 0, ...seedWords(seed))
      .u32(RANDOM_TAG.maskedToken, Math.round(ratio * BITS)).i32(o.maskId).u32(o.vocabSize),
    buffers: [tokens, input, labels],
    workgroups: Math.ceil(tokens.size / WG),
  });
  return { input, labels };
}

/** A noisy copy (Gaussian, sigma, clipped to [0, 1]) to restore: input x + sigma·N(0, 1), target a copy of x. */
export function denoiseTask(
  x: Tensor,
  o: { seed: number; sigma: number },
): { input: Tensor; target: Tensor } {
  checkOptions("denoiseTask", o, { seed: true, sigma: true }, true);
  const { output } = gaussianNoise(x, { seed: checkSeed("denoiseTask", o.seed), sigma: o.sigma });
  return { input: output, target: copy(x) };
}

/** Grayscale input [N, 1, H, W] (ITU-R 601) and the color image [N, 3, H, W] as target. */
export function colorizationTask(x: Tensor): { input: Tensor; target: Tensor } {
  const [n, c, h, w] = imageDims("colorizationTask", x);
  if (c !== 3) throw new ShapeError(`colorizationTask: needs color images (C = 3), got ${fmtShape(x.shape)}`);
  const input = applyParams(x, Array.from({ length: n }, () => identityParams(h, w)), { grayOutput: true });
  return { input, target: copy(x) };
}
