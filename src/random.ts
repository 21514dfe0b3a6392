// Constant fills and counter-based random tensors (shaders/random.wgsl; CPU reference in src/ref/random.ts).
import { type Engine, Params, windows } from "./engine.ts";
import type { DType, Tensor } from "./tensor.ts";

const WG = 256;
const MODES = { uniform: 1, normal: 2 } as const;

function generate(
  engine: Engine,
  op: string,
  shape: readonly number[],
  dtype: DType,
  mode: "fill" | keyof typeof MODES,
  seed: number,
  value: number,
): Tensor {
  if (!Number.isSafeInteger(seed) || seed < 0) {
    throw new RangeError(`${op}: seed must be an integer in [0, 2^53), got ${seed}`);
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
