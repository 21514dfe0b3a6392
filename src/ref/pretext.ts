// CPU reference of shaders/pretext.wgsl: the same tiles, masks and token draws from the same Philox counters.
import { philox, seedKey } from "./random.ts";

const MASKED_IMAGE_TAG = 11;
const MASKED_TOKEN_TAG = 12;

/**
 * Output tile t of sample n is the th×tw source rect whose top-left pixel is origins[n][t] = [row, column]
 * (`outCols` tiles per output row).
 */
export function refTiles(
  x: ArrayLike<number>,
  [n, c, h, w]: readonly number[],
  origins: [number, number][][],
  th: number,
  tw: number,
  outCols: number,
): Float64Array {
  const oh = (origins[0].length / outCols) * th;
  const ow = outCols * tw;
  const out = new Float64Array(n * c * oh * ow);
  for (let s = 0; s < n; s++) {
    for (let ch = 0; ch < c; ch++) {
      for (let y = 0; y < oh; y++) {
        for (let xx = 0; xx < ow; xx++) {
          const [top, left] = origins[s][Math.floor(y / th) * outCols + Math.floor(xx / tw)];
          out[((s * c + ch) * oh + y) * ow + xx] =
            x[((s * c + ch) * h + top + (y % th)) * w + left + (xx % tw)];
        }
      }
    }
  }
  return out;
}

/**
 * MAE mask [N, L] (the k patches with the smallest Philox keys, ties by index), the masked input, and the order
 * visible patches first then masked ones, each by key (shuffle), with its inverse (restore).
 */
export function refMaskedImage(
  x: ArrayLike<number>,
  [n, c, h, w]: readonly number[],
  seed: number,
  patch: number,
  ratio: number,
): { input: Float64Array; mask: Float64Array; shuffle: Int32Array; restore: Int32Array } {
  const cols = w / patch;
  const len = (h / patch) * cols;
  const k = Math.round(ratio * len);
  const mask = new Float64Array(n * len);
  const shuffle = new Int32Array(n * len);
  const restore = new Int32Array(n * len);
  const key = seedKey(seed);
  for (let s = 0; s < n; s++) {
    const keys = Array.from({ length: len }, (_, l) => philox([l, s, MASKED_IMAGE_TAG, 0], key)[0]);
    const order = keys.map((_, l) => l).sort((a, b) => keys[a] - keys[b] || a - b);
    for (const l of order.slice(0, k)) mask[s * len + l] = 1;
    [...order.slice(k), ...order.slice(0, k)].forEach((l, place) => {
      shuffle[s * len + place] = l;
      restore[s * len + l] = place;
    });
  }
  const input = Float64Array.from(x);
  for (let i = 0; i < input.length; i++) {
    const s = Math.floor(i / (c * h * w));
    const y = Math.floor((i % (h * w)) / w);
    const xx = i % w;
    if (mask[s * len + Math.floor(y / patch) * cols + Math.floor(xx / patch)]) input[i] = 0;
  }
  return { input, mask, shuffle, restore };
}

/** BERT masking of ids [N, L] as shaders/pretext.wgsl tokens_mask draws it. */
export function refMaskedTokens(
  tokens: ArrayLike<number>,
  len: number,
  seed: number,
  ratio: number,
  maskId: number,
  vocab: number,
): { input: Int32Array; labels: Int32Array } {
  const key = seedKey(seed);
  const input = new Int32Array(tokens.length);
  const labels = new Int32Array(tokens.length);
  const threshold = Math.round(ratio * 2 ** 24);
  for (let i = 0; i < tokens.length; i++) {
    const r = philox([i % len, Math.floor(i / len), MASKED_TOKEN_TAG, 0], key);
    const chosen = r[0] >>> 8 < threshold;
    const action = r[1] >>> 8;
    input[i] = chosen && action < 13421773 ? maskId : chosen && action < 15099494 ? r[2] % vocab : tokens[i];
    labels[i] = chosen ? tokens[i] : -100;
  }
  return { input, labels };
}
