// Rows picked by i32 indices: embedding (a table's rows by token id) and gatherRows (each sample's rows by its
// own indices, MAE's visible patches), with the scatter-add backward (shaders/gather.wgsl; CPU reference in
// src/ref/gather.ts).
import { record } from "./autograd.ts";
import { type Binding, Params } from "./engine.ts";
import { checkF32 } from "./elementwise.ts";
import { describeBadIndices, fmtShape, ShapeError } from "./errors.ts";
import { assertLive, checkEngine, type Tensor } from "./tensor.ts";

const WG = 256;
const NAN_BITS = 0x7fc00000;

/** The gather kernels' dispatch over ids [B, K] of rows [B, L, D]: `entry` with the given buffers. */
function runner(op: string, ids: Tensor, [batches, len, dim]: [number, number, number]) {
  const vec4 = dim % 4 === 0;
  const count = (ids.size * dim) / (vec4 ? 4 : 1);
  const params = new Params().u32(count, ids.size / batches, len, vec4 ? dim / 4 : dim, NAN_BITS);
  return (entry: string, buffers: Binding[]) =>
    ids.engine.run({
      op,
      shader: "gather",
      entry: vec4 ? `${entry}4` : entry,
      constants: { WG },
      params,
      buffers,
      workgroups: Math.ceil(count / WG),
    });
}

/**
 * out [B, K, D] = x [B, L, D] at rows ids [B, K] of each batch item, recorded with its scatter-add backward
 * into x. The caller has checked the shapes; `outShape` is out's shape as the op presents it. With `ownIds`,
 * ids are the op's own, disposed with out (or at once when nothing is recorded). `source` names x in errors.
 */
export function gatherOp(
  op: string,
  x: Tensor,
  ids: Tensor,
  dims: [number, number, number],
  outShape: number[],
  ownIds = false,
  source = "x",
): Tensor {
  const e = x.engine;
  for (const [what, bytes] of [[source, x.bytes], ["the output", 4 * ids.size * dims[2]]] as const) {
    if (bytes > e.maxBinding) {
      throw new ShapeError(
        `${op}: ${what} of ${fmtShape(x.shape)} by ids ${fmtShape(ids.shape)} is ${bytes} bytes, over ` +
          `maxStorageBufferBindingSize (${e.maxBinding} bytes)`,
      );
    }
  }
  const out = e.empty(outShape);
  const bad = e.dataCheck(describeBadIndices({
    op,
    noun: "id",
    outside: `[0, ${dims[1]})`,
    place: "position",
    effect: "their rows are NaN",
  }));
  runner(op, ids, dims)("gather", [x, ids, out, bad]);
  return record(out, op, [x], (g) => [scatterAdd(op, g, ids, dims, x.shape)], ownIds ? [ids] : []);
}

/** gatherOp's adjoint: g [B, K, D] added into zeros of `shape` ([B, L, D] in memory) at rows ids [B, K]. */
export function scatterAdd(
  op: string,
  g: Tensor,
  ids: Tensor,
  dims: [number, number, number],
  shape: readonly number[],
): Tensor {
  assertLive(op, ids);
  const dx = g.engine.zeros(shape);
  runner(op, ids, dims)("scatterAdd", [g, ids, dx]);
  return dx;
}

function checkIds(op: string, ids: Tensor, x: Tensor): void {
  assertLive(op, x);
  assertLive(op, ids);
  checkF32(op, x);
  if (ids.dtype !== "i32") {
    throw new TypeError(`${op}: ids must be i32 indices, got ${ids.dtype} ${fmtShape(ids.shape)}`);
  }
  checkEngine(op, x, ids);
}

/**
 * The rows of `weight` [V, D] at token ids of any shape: [...ids.shape, D], like torch.nn.functional.embedding.
 * The gradient reaches `weight` (rows of repeated ids sum theirs, in the order the adds land). An id outside
 * [0, V) gives a NaN row, and the next readback or sync throws a RangeError naming the ids and the first
 * position. The ids must stay alive until grad() has run.
 */
export function embedding(ids: Tensor, weight: Tensor): Tensor {
  const op = "embedding";
  checkIds(op, ids, weight);
  if (weight.shape.length !== 2) {
    throw new ShapeError(
      `${op}: weight ${fmtShape(weight.shape)} must be [V, D] (ids ${fmtShape(ids.shape)})`,
    );
  }
  const [v, d] = weight.shape;
  return gatherOp(op, weight, ids, [1, v, d], [...ids.shape, d], false, "weight");
}

/**
 * Each batch item's rows at its own indices: x [B, L, ...rest] and ids i32 [B, K] give [B, K, ...rest], out[b,
 * k] = x[b, ids[b, k]], as torch.gather(x, 1, ids expanded over rest) (MAE's visible patches, and its
 * unshuffle by the inverse order). Ids may repeat (their gradients sum). An id outside [0, L) gives a NaN row
 * and the next readback or sync throws, as embedding's. The ids must stay alive until grad() has run.
 */
export function gatherRows(x: Tensor, ids: Tensor): Tensor {
  const op = "gatherRows";
  checkIds(op, ids, x);
  if (x.shape.length < 2 || ids.shape.length !== 2 || ids.shape[0] !== x.shape[0]) {
    throw new ShapeError(
      `${op}: x ${fmtShape(x.shape)} and ids ${fmtShape(ids.shape)} must be [B, L, ...] and [B, K]`,
    );
  }
  const [b, len, ...rest] = x.shape;
  const dim = rest.reduce((p, q) => p * q, 1);
  return gatherOp(op, x, ids, [b, len, dim], [b, ids.shape[1], ...rest]);
}
