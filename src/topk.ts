// The k largest or smallest elements along an axis and their indices, by radix select, and sort as topk of a
// whole axis (shaders/topk.wgsl; CPU reference in src/ref/topk.ts). The values are a gather of x at the indices
// (gather.ts), whose scatter-add is their gradient.
import { isRecording, noGrad, record } from "./autograd.ts";
import { Params } from "./engine.ts";
import { checkF32 } from "./elementwise.ts";
import { checkOptions, fmtShape, ShapeError } from "./errors.ts";
import { gatherOp, scatterAdd } from "./gather.ts";
import { transpose } from "./shape.ts";
import { assertLive, type Tensor } from "./tensor.ts";

const WG = 256;
const ITEMS = 16; // elements an invocation of histogram and collect takes, as in topk.wgsl
/** The most candidates one invocation of `rank` compares itself with (its loop's trip count). */
export const MAX_K = 16_384;

export interface TopkOptions {
  /** The axis to select along (default -1, the last). */
  axis?: number;
  /** The k largest (default) or the k smallest. */
  largest?: boolean;
}

/** x's axis `axis` (negative counts from the end) as a dim index, for an f32 x of rank 1 or more. */
function axisOf(op: string, x: Tensor, axis: number): number {
  checkF32(op, x);
  const rank = x.shape.length;
  if (rank === 0) throw new ShapeError(`${op}: x must have at least one dim, got []`);
  if (!Number.isInteger(axis) || axis < -rank || axis >= rank) {
    throw new RangeError(`${op}: axis ${axis} is out of range for shape ${fmtShape(x.shape)}`);
  }
  return axis < 0 ? axis + rank : axis;
}

/**
 * The k largest (or smallest) elements of `x` along `axis` and their i32 indices, as torch.topk with
 * sorted=True: values in order, from the largest (or smallest); among equal values the lower index first; NaN
 * above every number. `values` is differentiable: the gradient reaches x at the indices.
 */
export function topk(x: Tensor, k: number, options: TopkOptions = {}): { values: Tensor; indices: Tensor } {
  checkOptions("topk", options, { axis: true, largest: true });
  const a = axisOf("topk", x, options.axis ?? -1);
  const rank = x.shape.length;
  const len = x.shape[a];
  if (!Number.isInteger(k) || k < 1 || k > len) {
    throw new RangeError(
      `topk: k must be an integer in [1, ${len}] (axis ${a} of ${fmtShape(x.shape)}), got ${k}`,
    );
  }
  if (k > MAX_K) throw new RangeError(`topk: k ${k} is over ${MAX_K}, the most one selection ranks`);
  const e = x.engine;
  const rows = x.size / len;
  // Checked here, on the caller's shape, also for an axis that is moved last (its copy is as big).
  const sizes = [["x", x.bytes], ["the indices", 4 * rows * k], ["one row's candidates", 8 * k]] as const;
  for (const [what, bytes] of sizes) {
    if (bytes > e.maxBinding) {
      const limit = `maxStorageBufferBindingSize (${e.maxBinding} bytes)`;
      throw new ShapeError(
        `topk: ${what} of ${fmtShape(x.shape)} (k ${k}) take ${bytes} bytes, over ${limit}`,
      );
    }
  }
  if (a !== rank - 1) return topkMoved(x, k, a, options.largest !== false);
  const indices = e.empty([...x.shape.slice(0, -1), k], "i32");
  // Rows in batches whose bins (1 KiB a row) and candidates (8 bytes each) fit one binding.
  const batch = Math.min(rows, Math.floor(e.maxBinding / Math.max(1024, 8 * k)));
  const prefix = e.empty([batch, 4], "u32");
  const bins = e.zeros([batch, 256], "u32");
  const candidates = e.empty([batch, k, 2], "u32");
  for (let row0 = 0; row0 < rows; row0 += batch) {
    const n = Math.min(batch, rows - row0);
    const slots = e.zeros([n], "u32");
    const run = (entry: string, round: number, workgroups: number, buffers: (Tensor | null)[]) =>
      e.run({
        op: "topk",
        shader: "topk",
        entry,
        constants: { WG, SMALLEST: options.largest === false ? 1 : 0 },
        params: new Params().u32(n, len, k, round, row0),
        buffers,
        workgroups,
      });
    const elementGroups = Math.ceil((n * len) / (WG * ITEMS));
    for (let round = 0; round < 8; round++) {
      run("histogram", round, elementGroups, [x, prefix, bins]);
      run("pick", round, Math.ceil(n / WG), [null, prefix, bins]);
    }
    run("collect", 0, elementGroups, [x, prefix, null, candidates, slots]);
    run("rank", 0, Math.ceil((n * k) / WG), [null, null, null, candidates, null, indices]);
    slots.dispose();
  }
  for (const t of [prefix, bins, candidates]) t.dispose();
  // The values' backward reads a copy of the indices of its own, so the caller may dispose theirs.
  const own = isRecording();
  const ids = own ? e.empty(indices.shape, "i32") : indices;
  if (own) e.copy(indices.buffer, 0, ids.buffer, 0, indices.bytes);
  const values = gatherOp("topk", x, ids, [rows, len, 1], indices.shape.slice(), own);
  return { values, indices };
}

export interface SortOptions {
  /** The axis to sort along (default -1, the last). */
  axis?: number;
  /** Largest first (default false: smallest first). */
  descending?: boolean;
}

/**
 * torch.sort: the elements of `x` along `axis` in order and their i32 indices, stable (equal values keep their
 * order), NaN last ascending and first descending. topk of the whole axis, so the axis is at most 16,384 long.
 */
export function sort(x: Tensor, options: SortOptions = {}): { values: Tensor; indices: Tensor } {
  checkOptions("sort", options, { axis: true, descending: true });
  assertLive("sort", x);
  const axis = options.axis ?? -1;
  const len = x.shape[axisOf("sort", x, axis)];
  if (len > MAX_K) {
    throw new RangeError(`sort: axis ${axis} of ${fmtShape(x.shape)} has ${len} elements, over ${MAX_K}`);
  }
  return topk(x, len, { axis, largest: options.descending === true });
}

/**
 * topk along an axis other than the last: selected along the last axis of a transposed copy and moved back,
 * one autograd node whose backward scatters the gradient in the transposed layout.
 */
function topkMoved(
  x: Tensor,
  k: number,
  axis: number,
  largest: boolean,
): { values: Tensor; indices: Tensor } {
  const perm = [...x.shape.keys()].filter((d) => d !== axis).concat(axis);
  const back = perm.map((_, d) => perm.indexOf(d));
  const movedShape = perm.map((d) => x.shape[d]);
  const len = x.shape[axis];
  const r = noGrad(() => {
    const moved = transpose(x, perm);
    const r = topk(moved, k, { largest });
    moved.dispose();
    return r;
  });
  const moved = noGrad(() => transpose(r.values, back));
  const indices = transpose(r.indices, back);
  r.values.dispose();
  const dims: [number, number, number] = [x.size / len, len, 1];
  const values = record(moved, "topk", [x], (g) => {
    const moved = transpose(g, perm);
    const dx = scatterAdd("topk", moved, r.indices, dims, movedShape);
    moved.dispose();
    const out = transpose(dx, back);
    dx.dispose();
    return [out];
  }, [r.indices]);
  return { values, indices };
}
