// CPU reference (float64) of shaders/augment.wgsl: renders views from the same per-sample parameters, in the
// same order (geometry, jitter, grayscale, solarize when unblurred, erase, noise, normalize when unblurred; then
// blur, and the solarize and normalize of blurred samples).
import { type ApplyOptions, MIN_BLUR_SIGMA, type SampleParams } from "../augment.ts";
import { philox, seedKey, uniformFromBits } from "./random.ts";

const NOISE_TAG = 9;

const gray = (r: number, g: number, b: number) => 0.299 * r + 0.587 * g + 0.114 * b;
const clamp01 = (v: number) => Math.min(1, Math.max(0, v));

function rgbToHsv([r, g, b]: number[]): number[] {
  const maxc = Math.max(r, g, b);
  const minc = Math.min(r, g, b);
  const eq = maxc === minc;
  const cr = maxc - minc;
  const s = cr / (eq ? 1 : maxc);
  const d = eq ? 1 : cr;
  const rc = (maxc - r) / d;
  const gc = (maxc - g) / d;
  const bc = (maxc - b) / d;
  const h = maxc === r ? bc - gc : maxc === g ? 2 + rc - bc : 4 + gc - rc;
  const h1 = h / 6 + 1;
  return [h1 - Math.floor(h1), s, maxc];
}

function hsvToRgb([h, s, v]: number[]): number[] {
  const i = Math.floor(h * 6);
  const f = h * 6 - i;
  const p = clamp01(v * (1 - s));
  const q = clamp01(v * (1 - s * f));
  const t = clamp01(v * (1 - s * (1 - f)));
  return [[v, t, p], [q, v, p], [p, v, t], [p, q, v], [t, p, v], [v, p, q]][i % 6];
}

/** The jitter steps in the sample's order; `upToContrast` stops before contrast. */
function jitter(v: number[], q: SampleParams, c: number, mean: number, upToContrast: boolean): number[] {
  const j = q.jitter!;
  const blend = (a: number[], b: number[], f: number) => a.map((x, k) => clamp01(f * x + (1 - f) * b[k]));
  for (const step of j.order) {
    if (upToContrast && step === 1) break;
    if (step === 0 && j.brightness !== 1) v = v.map((x) => clamp01(j.brightness * x));
    else if (step === 1 && j.contrast !== 1) v = blend(v, [mean, mean, mean], j.contrast);
    else if (step === 2 && j.saturation !== 1 && c === 3) {
      const l = gray(v[0], v[1], v[2]);
      v = blend(v, [l, l, l], j.saturation);
    } else if (step === 3 && j.hue !== 0 && c === 3) {
      const [h, s, val] = rgbToHsv(v);
      const h2 = h + j.hue;
      v = hsvToRgb([h2 - Math.floor(h2), s, val]);
    }
  }
  return v;
}

/** Bilinear sample (half-pixel centers, clamped edges) of output pixel (oy, ox) after rotate and flip. */
function sample(
  x: ArrayLike<number>,
  [c, h, w]: number[],
  n: number,
  q: SampleParams,
  oh: number,
  ow: number,
  oy: number,
  ox: number,
): number[] {
  const last = ow - 1;
  let [y, xx] = [oy, ox];
  if (q.rotate === 1) [y, xx] = [ox, last - oy];
  else if (q.rotate === 2) [y, xx] = [oh - 1 - oy, last - ox];
  else if (q.rotate === 3) [y, xx] = [last - ox, oy];
  if (q.flip) xx = ow - 1 - xx;
  // Clamped to the crop, as torchvision resizes the cropped image.
  const { top, left, height, width } = q.crop;
  const sy = Math.min(top + height - 1, Math.max(top, top + (y + 0.5) * (height / oh) - 0.5));
  const sx = Math.min(left + width - 1, Math.max(left, left + (xx + 0.5) * (width / ow) - 0.5));
  const y0 = Math.floor(sy);
  const x0 = Math.floor(sx);
  const y1 = Math.min(y0 + 1, h - 1);
  const x1 = Math.min(x0 + 1, w - 1);
  const fy = sy - y0;
  const fx = sx - x0;
  const v = [0, 0, 0];
  for (let ch = 0; ch < c; ch++) {
    const base = (n * c + ch) * h * w;
    const top = (1 - fx) * x[base + y0 * w + x0] + fx * x[base + y0 * w + x1];
    const bottom = (1 - fx) * x[base + y1 * w + x0] + fx * x[base + y1 * w + x1];
    v[ch] = (1 - fy) * top + fy * bottom;
  }
  return v;
}

function reflect(i: number, n: number): number {
  if (n === 1) return 0;
  const period = 2 * (n - 1);
  const m = Math.abs(i) % period;
  return m < n ? m : period - m;
}

/** One direction of the Gaussian blur over sample n's planes, in place. */
function blurSample(
  v: Float64Array,
  n: number,
  c: number,
  h: number,
  w: number,
  sigma: number,
  vertical: boolean,
) {
  const r = Math.ceil(3 * sigma);
  const weights = Array.from(
    { length: 2 * r + 1 },
    (_, k) => Math.exp(-((k - r) ** 2) / (2 * sigma * sigma)),
  );
  const total = weights.reduce((a, b) => a + b, 0);
  for (let ch = 0; ch < c; ch++) {
    const base = (n * c + ch) * h * w;
    const plane = v.slice(base, base + h * w);
    for (let y = 0; y < h; y++) {
      for (let x = 0; x < w; x++) {
        let s = 0;
        for (let d = -r; d <= r; d++) {
          s += weights[d + r] *
            (vertical ? plane[reflect(y + d, h) * w + x] : plane[y * w + reflect(x + d, w)]);
        }
        v[base + y * w + x] = s / total;
      }
    }
  }
}

/** The reference of `applyParams`: input [N, C, H, W] → [N, oc, oh, ow]. */
export function refApplyParams(
  x: ArrayLike<number>,
  shape: readonly number[],
  params: SampleParams[],
  o: ApplyOptions = {},
): Float64Array {
  const [n, c, h, w] = shape;
  const [oh, ow] = typeof o.size === "number" ? [o.size, o.size] : o.size ?? [h, w];
  const oc = o.grayOutput ? 1 : c;
  const key = seedKey(o.seed ?? 0);
  const out = new Float64Array(n * oc * oh * ow);
  const pixels = oh * ow;
  for (let s = 0; s < n; s++) {
    const q = params[s];
    const blur = q.blur < MIN_BLUR_SIGMA ? 0 : q.blur; // narrower is the identity (src/augment.ts)
    const at = (oy: number, ox: number) => sample(x, [c, h, w], s, q, oh, ow, oy, ox);
    let mean = 0;
    if (q.jitter && q.jitter.contrast !== 1) {
      for (let i = 0; i < pixels; i++) {
        const v = jitter(at(Math.floor(i / ow), i % ow), q, c, 0, true);
        mean += c === 3 ? gray(v[0], v[1], v[2]) : v[0];
      }
      mean /= pixels;
    }
    for (let oy = 0; oy < oh; oy++) {
      for (let ox = 0; ox < ow; ox++) {
        let v = at(oy, ox);
        if (q.jitter) v = jitter(v, q, c, mean, false);
        if ((q.grayscale && c === 3) || oc < c) v = [0, 1, 2].map(() => gray(v[0], v[1], v[2]));
        const e = q.erase;
        const erased = e && oy >= e.top && oy < e.top + e.height && ox >= e.left && ox < e.left + e.width;
        for (let ch = 0; ch < oc; ch++) {
          let val = v[ch];
          if (q.solarize !== null && blur === 0 && val >= q.solarize) val = 1 - val;
          if (erased) val = e.value;
          if (q.noise !== 0) {
            const r = philox([ch * pixels + oy * ow + ox, s, NOISE_TAG + 256 * (o.stream ?? 0), 0], key);
            const u1 = ((r[0] >>> 8) + 1) / 16777216;
            const z = Math.sqrt(-2 * Math.log(u1)) * Math.cos(2 * Math.PI * uniformFromBits(r[1]));
            val = clamp01(val + q.noise * z);
          }
          if (o.normalize && blur === 0) val = (val - o.normalize.mean[ch]) / o.normalize.std[ch];
          out[((s * oc + ch) * oh + oy) * ow + ox] = val;
        }
      }
    }
    if (blur > 0) {
      blurSample(out, s, oc, oh, ow, blur, false);
      blurSample(out, s, oc, oh, ow, blur, true);
      const base = s * oc * pixels;
      for (let i = base; i < base + oc * pixels; i++) {
        if (q.solarize !== null && out[i] >= q.solarize) out[i] = 1 - out[i];
        const ch = Math.floor((i - base) / pixels);
        if (o.normalize) out[i] = (out[i] - o.normalize.mean[ch]) / o.normalize.std[ch];
      }
    }
  }
  return out;
}

/** [N, 3, H, W] in [0, 1] from RGBA8 bytes, alpha dropped. */
export function refImages(bytes: ArrayLike<number>, n: number, h: number, w: number): Float64Array {
  const out = new Float64Array(n * 3 * h * w);
  for (let s = 0; s < n; s++) {
    for (let i = 0; i < h * w; i++) {
      for (let ch = 0; ch < 3; ch++) out[(s * 3 + ch) * h * w + i] = bytes[(s * h * w + i) * 4 + ch] / 255;
    }
  }
  return out;
}
