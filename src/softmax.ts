// softmax and logSoftmax along contiguous rows, forward and backward in one dispatch each
// (shaders/softmax.wgsl; CPU reference in src/ref/reduce.ts). reduce.ts sends the rows this takes here.
import { record } from "./autograd.ts";
import { Params } from "./engine.ts";
import type { Tensor } from "./tensor.ts";

/** Most quads (4 elements) one invocation walks per pass: both passes stay far below llvmpipe's loop cap. */
const MAX_STEPS = 16_384;
/**
 * Fewest quads per invocation worth a workgroup and its tree of barriers: on llvmpipe rows of 8 to 128
 * elements (under 5 quads for each of 8 invocations) ran 1.4x to 5x slower this way than through logsumexp,
 * rows of 160 and more at par or faster (197: 1.2x, 1,023: 1.5x to 2.3x, 1,024: 1.1x to 1.4x).
 */
const MIN_STEPS = 5;

/** Invocations per row: one SIMD group on a CPU adapter, where each barrier costs a coroutine switch. */
const workgroupSize = (x: Tensor) => (x.engine.cpuKernels ? 8 : 256);

/**
 * Whether `rowSoftmax` takes softmax along `axis` (normalised) of x: the last axis, its rows giving each
 * invocation MIN_STEPS to MAX_STEPS quads (157 to 524,288 elements on a CPU adapter, from 5,117 on a GPU), and x
 * within one storage binding.
 */
export function fusesRows(x: Tensor, axis: number): boolean {
  const steps = Math.ceil(x.shape[axis] / 4) / workgroupSize(x);
  return axis === x.shape.length - 1 && steps >= MIN_STEPS && steps <= MAX_STEPS &&
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
      constants: { WG: workgroupSize(x), LOG: Number(log), ELEMENTS: Number(len % 4 !== 0) },
      params: new Params().u32(rows, len).f32(-Infinity),
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
