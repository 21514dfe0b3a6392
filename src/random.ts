// Constant fills, counter-based random tensors and dropout (shaders/random.wgsl; CPU reference in
// src/ref/random.ts).
import { record } from "./autograd.ts";
import { type Engine, Params, windowBindings, windows } from "./engine.ts";
import { checkOptions } from "./errors.ts";
import { assertLive, checkDType, type DType, holds, type Tensor } from "./tensor.ts";

const WG = 256;
const MODES = { uniform: 1, normal: 2 } as const;

function checkSeed(op: string, seed: number): void {
  if (!Number.isSafeInteger(seed) || seed < 0) {
    throw new RangeError(`${op}: seed must be an integer in [0, 2^53), got ${seed}`);
  }
}

function generate(
  engine: Engine,
  op: string,
  shape: readonly number[],
  dtype: DType,
  mode: "fill" | keyof typeof MODES,
  seed: number,
  value: number,
): Tensor {
  checkSeed(op, seed);
  checkDType(op, dtype);
  if (!holds(dtype, value)) {
    throw new RangeError(`${op}: value ${value} is not an integer of ${dtype}'s range`);
  }
  const out = engine.empty(shape, dtype);
  const bits = new DataView(new ArrayBuffer(4));
  if (dtype === "f32") bits.setFloat32(0, value, true);
  else if (dtype === "i32") bits.setInt32(0, value, true);
  else bits.setUint32(0, value, true);
  // A constant: PER vec4s an invocation (four on CPU adapters, as the elementwise ops).
  const per = engine.cpuKernels ? 4 : 1;
  for (const w of windows(out)) {
    engine.run({
      op,
      shader: "random",
      entry: mode === "fill" ? "fill" : "main",
      constants: mode === "fill" ? { WG, PER: per } : { WG, MODE: MODES[mode] },
      params: new Params().u32(
        w.count,
        w.first,
        seed >>> 0,
        Math.floor(seed / 2 ** 32) >>> 0,
        bits.getUint32(0, true),
      ),
      buffers: [w.binding],
      workgroups: Math.ceil(w.count / (mode === "fill" ? 4 * per : 1) / WG),
    });
  }
  return out;
}

export function fill(engine: Engine, shape: readonly number[], value: number, dtype: DType): Tensor {
  // A number (NaN and ±∞ too, as torch.full): full([3]) or full([3], "1") became NaN.
  if (typeof value !== "number") throw new TypeError(`full: value must be a number, got ${typeof value}`);
  return generate(engine, "full", shape, dtype, "fill", 0, value);
}

export function philoxRandom(
  engine: Engine,
  shape: readonly number[],
  seed: number,
  dist: "uniform" | "normal",
): Tensor {
  return generate(engine, dist === "uniform" ? "rand" : "randn", shape, "f32", dist, seed, 0);
}

export interface DropoutOptions {
  /** Probability of zeroing an element, in [0, 1]; default 0.5. */
  p?: number;
  /** Keys the mask: the same seed drops the same elements. Required, so no two steps share a mask by chance. */
  seed: number;
}

/**
 * Dropout as PyTorch's in training: each element zeroed with probability `p`, the others scaled by 1 / (1 − p).
 * The mask is a Philox draw per element keyed by `seed` (src/ref/random.ts's refDropout draws the same), so the
 * backward draws it again instead of keeping it. For evaluation, leave the call out.
 */
export function dropout(x: Tensor, options: DropoutOptions): Tensor {
  checkOptions("dropout", options, { p: true, seed: true }, true);
  assertLive("dropout", x);
  if (x.dtype !== "f32") throw new TypeError(`dropout: x must be f32, got ${x.dtype}`);
  const p = options.p ?? 0.5;
  if (!(p >= 0 && p <= 1)) throw new RangeError(`dropout: p must be in [0, 1], got ${p}`);
  checkSeed("dropout", options.seed);
  const out = x.engine.empty(x.shape);
  const inputs = windowBindings(x);
  windows(out).forEach((w, i) => {
    x.engine.run({
      op: "dropout",
      shader: "random",
      entry: "dropout",
      constants: { WG },
      params: new Params()
        .u32(w.count, w.first, options.seed >>> 0, Math.floor(options.seed / 2 ** 32) >>> 0)
        .f32(p, p < 1 ? 1 / (1 - p) : 0),
      buffers: [w.binding, inputs[i]],
      workgroups: Math.ceil(w.count / 4 / WG),
    });
  });
  return record(out, "dropout", [x], (g) => [dropout(g, { p, seed: options.seed })]);
}
