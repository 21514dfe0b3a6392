// softmax and logSoftmax along contiguous rows, forward and backward in one dispatch each
// (shaders/softmax.wgsl; CPU reference in src/ref/reduce.ts). reduce.ts sends the rows this takes here.
import { record } from "./autograd.ts";
import { Params } from "./engine.ts";
import type { Tensor } from "./tensor.ts";

/** Most vec4s one invocation walks per pass: both passes stay far below llvmpipe's 65,535-iteration cap. */
const MAX_STEPS = 16_384;

/** Invocations per row: one SIMD group on a CPU adapter, where each barrier costs a coroutine switch. */
const workgroupSize = (x: Tensor) => (x.engine.cpuKernels ? 8 : 256);

/**
 * Whether `rowSoftmax` takes softmax along `axis` (normalised) of x: the last axis, its length a multiple of 4
 * (rows of whole vec4s) and short enough for the loop cap, and x within one storage binding.
 */
export function fusesRows(x: Tensor, axis: number): boolean {
  const len = x.shape[axis];
  return axis === x.shape.length - 1 && len % 4 === 0 && len / 4 / workgroupSize(x) <= MAX_STEPS &&
    x.bytes <= x.engine.maxBinding;
}

/** softmax (or with `log` logSoftmax) along the last axis of x, one workgroup per row; see `fusesRows`. */
export function rowSoftmax(x: Tensor, log: boolean): Tensor {
  const op = log ? "logSoftmax" : "softmax";
  const e = x.engine;
  const len = x.shape.at(-1)!;
  const rows = x.size / len;
  const run = (entry: string, buffers: Tensor[]) =>
    e.run({
      op,
      shader: "softmax",
      entry,
      constants: { WG: workgroupSize(x), LOG: Number(log) },
      params: new Params().u32(rows, len / 4).f32(-Infinity),
      buffers,
      workgroups: rows,
    });
  const y = e.empty(x.shape);
  run("forward", [x, y]);
  return record(y, op, [x], (g) => {
    const dx = e.empty(x.shape);
    run("backward", [y, dx, g]);
    return [dx];
  });
}
