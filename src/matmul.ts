// Matrix multiply with batch broadcasting and strided transposes (shaders/matmul.wgsl; CPU reference in
// src/ref/matmul.ts).
import { checkRank, Params } from "./engine.ts";
import { checkOptions, fmtShape, ShapeError } from "./errors.ts";
import { record } from "./autograd.ts";
import { sum } from "./reduce.ts";
import { broadcastShapes, checkF32, unbroadcast } from "./elementwise.ts";
import { transposeBlocks } from "./shape.ts";
import { checkEngine, shapeSize, type Tensor } from "./tensor.ts";

/**
 * Tile shape: TX x TY invocations, each an 8 x 16 register block (TM x TN in the shader), staging BK of K. The
 * `direct` entry (CPU adapters) has the same tile, reading 4 of K per step from storage: K_CHUNK / 4 steps of ~150
 * iterations even with no loop unrolled. On llvmpipe its 8 x 16 blocks ran 1024³ at 1.1x the speed of 8 x 8 or
 * 16 x 8, and 1.5x that of 4 x 16.
 */
const TILE = { TX: 8, TY: 8, BK: 8 };
/**
 * The `slab` entry (CPU adapters; one batch item, SLAB_MIN_ROWS rows or more, dims multiples of 4, K ≤ SLAB_K):
 * one dispatch per window of A's rows, which it binds as a 64 KiB uniform window holding SLAB_K / K blocks of
 * SLAB_ROWS rows; SLAB_WG invocations a workgroup, each a 16 x 8 block. On llvmpipe it ran 1024³ 1.4x to 1.6x
 * faster than the direct entry, 512³ 1.24x, 256³ 1.05x; 16 x 8 blocks beat 16 x 16, 16 x 12, 16 x 4 and 8 x 16;
 * workgroups of 8 keep a 256-wide output on several threads. B packed into panels (packB) made 1024³ a further
 * 1.06x to 1.09x faster (none at 512³, where B stays in cache), and packing in 4 x 4 blocks of vec4s, not
 * element by element, 1.05x more (the scalar reads took 8% of a 1024³ product). Several blocks a window (a
 * dispatch costs llvmpipe ~100 µs): 256³ 1.3x, [1024, 256]·[256, 256] 1.45x.
 */
const SLAB_ROWS = 16;
const SLAB_COLS = 8;
const SLAB_WINDOW = 65536;
const SLAB_K = SLAB_WINDOW / 4 / SLAB_ROWS;
const SLAB_WG = 8;
/**
 * Fewest rows of A for the slab: B is packed once per product and serves every row, and below this the packing
 * pass and the extra dispatches cost more than the slab saves (on llvmpipe the direct entry ran 64×256×256
 * 1.7x, 32×512×512 1.5x and 128×784×256 1.2x faster than the slab; the slab ran 256³ 1.05x, 512³ 1.24x and
 * 1024³ 1.57x faster than direct). A transposed A is first transposed into the window's buffer in 4×4 blocks,
 * a pass over A that pays from twice as many rows (transA: 256³ 0.81x, 512³ 1.15x, 1024³ 1.65x against direct).
 */
const SLAB_MIN_ROWS = 256;
/** Columns of B per slab workgroup: B is packed into panels this wide (see the slab entry). */
const SLAB_PANEL = SLAB_COLS * SLAB_WG;
/**
 * K per workgroup: bounds each invocation's loop count (llvmpipe stops loops silently after 65,535): K_CHUNK / BK
 * tile steps of at most ~400 iterations even with no loop unrolled.
 */
const K_CHUNK = 1024;

export interface MatmulOptions {
  /** Use Aᵀ: a is [..., K, M]. */
  transA?: boolean;
  /** Use Bᵀ: b is [..., N, K]. */
  transB?: boolean;
}

/** Element strides of `shape`'s batch dims (all but the last two) laid against `batch`, 0 where broadcast. */
function batchStrides(shape: readonly number[], batch: readonly number[]): number[] {
  const strides = new Array(batch.length).fill(0);
  let s = shape.at(-1)! * shape.at(-2)!;
  for (let i = shape.length - 3; i >= 0; i--) {
    const o = batch.length - (shape.length - 2) + i;
    strides[o] = shape[i] === 1 ? 0 : s;
    s *= shape[i];
  }
  return strides;
}

/**
 * op(a) · op(b) over the last two dims, op being a transpose where asked; leading (batch) dims broadcast
 * NumPy-style. a: [..., M, K] (or [..., K, M] with transA), b: [..., K, N] (or [..., N, K] with transB).
 */
export function matmul(a: Tensor, b: Tensor, options: MatmulOptions = {}): Tensor {
  checkOptions("matmul", options, { transA: true, transB: true });
  const transA = options.transA ?? false;
  const transB = options.transB ?? false;
  checkF32("matmul", a);
  checkF32("matmul", b);
  checkEngine("matmul", a, b);
  if (a.shape.length < 2 || b.shape.length < 2) {
    throw new ShapeError(
      `matmul: operands need at least 2 dims, got ${fmtShape(a.shape)} and ${fmtShape(b.shape)}`,
    );
  }
  const out = product(a, a.shape, b, b.shape, transA, transB);
  return record(out, "matmul", [a, b], (g, [needA, needB]) => {
    // With A' = op(A), B' = op(B): dA' = g·B'ᵀ and dB' = A'ᵀ·g, transposed back where the operand was. Only
    // the products asked for are made (a layer's input often needs none: the images, the first layer's x).
    const da = () =>
      transA ? matmul(b, g, { transA: transB, transB: true }) : matmul(g, b, { transB: !transB });
    // One B shared by A's rows in batches (a layer's weight): dB' is one product over all of them, not a
    // product per batch item summed after.
    const rows = shapeSize(a.shape) / a.shape.at(-1)!;
    const db = () =>
      sharedB(a.shape, b.shape, transA)
        ? transB
          ? product(g, [rows, g.shape.at(-1)!], a, [rows, a.shape.at(-1)!], true, false)
          : product(a, [rows, a.shape.at(-1)!], g, [rows, g.shape.at(-1)!], true, false)
        : transB
        ? matmul(g, a, { transA: true, transB: transA })
        : matmul(a, g, { transA: !transA });
    return [needA ? unbroadcast(da(), a.shape) : null, needB ? unbroadcast(db(), b.shape) : null];
  });
}

/**
 * Whether B (batch dims all 1, or none) serves every batch item of an untransposed A, whose items are then the
 * row blocks of one [items·M, K] matrix: one product, not one per item, and the slab's where it has the rows
 * (examples/mae.ts's step, its tokens [64, 16, 64] through [64, 64] weights, ran 2.9x faster on llvmpipe).
 */
function sharedB(aShape: readonly number[], bShape: readonly number[], transA: boolean): boolean {
  return !transA && aShape.length > 2 && bShape.slice(0, -2).every((d) => d === 1);
}

/**
 * Records op(a) · op(b) with a and b read as `aShape` and `bShape` (their elements in order: a transpose or a
 * flattening of batch dims is only a change of strides), no autograd. Returns [...batch, M, N], or `outShape`
 * (the same elements in order).
 */
function product(
  a: Tensor,
  aShape: readonly number[],
  b: Tensor,
  bShape: readonly number[],
  transA: boolean,
  transB: boolean,
  outShape?: readonly number[],
): Tensor {
  const [ar, ac] = aShape.slice(-2);
  const [br, bc] = bShape.slice(-2);
  const [m, k] = transA ? [ac, ar] : [ar, ac];
  const [kb, n] = transB ? [bc, br] : [br, bc];
  const shapes = `${fmtShape(aShape)} · ${fmtShape(bShape)}`;
  if (k !== kb) {
    throw new ShapeError(
      `matmul: inner dims differ: ${shapes} (transA ${transA}, transB ${transB}) gives K ${k} vs ${kb}`,
    );
  }
  const outBatch = broadcastShapes("matmul (batch dims)", aShape.slice(0, -2), bShape.slice(0, -2));
  checkRank("matmul", `batch dims of ${shapes}`, outBatch.length);
  if (sharedB(aShape, bShape, transA) && shapeSize(aShape.slice(0, -2)) === shapeSize(outBatch)) {
    return product(a, [shapeSize(aShape) / ac, ac], b, bShape.slice(-2), false, transB, [...outBatch, m, n]);
  }
  const batch = outBatch;
  const items = shapeSize(batch);
  const engine = a.engine;
  const slices = Math.ceil(k / K_CHUNK);
  const biggest = Math.max(a.bytes, b.bytes, 4 * items * m * n * slices);
  if (biggest > engine.maxBinding) {
    throw new ShapeError(
      `matmul: ${shapes} needs a ${biggest}-byte buffer, over ` +
        `maxStorageBufferBindingSize (${engine.maxBinding} bytes)`,
    );
  }
  const params = (row0: number) =>
    new Params()
      .u32(m, n, k, items, K_CHUNK, slices, batch.length, row0)
      .u32(transA ? 1 : ac, transA ? ac : 1, transB ? 1 : bc, transB ? bc : 1)
      .dims(batch).dims(batchStrides(aShape, batch), 0).dims(batchStrides(bShape, batch), 0);
  // Several K slices write partial products [slices, ...batch, M, N], summed over slices by a tree reduction.
  const shape = outShape ?? [...batch, m, n];
  const partial = engine.empty(slices === 1 ? shape : [slices, ...shape]);
  // CPU adapters read vec4s straight from storage (no workgroup memory) where every dim is a multiple of 4.
  const direct = engine.cpuKernels && m % 4 === 0 && n % 4 === 0 && k % 4 === 0;
  const panelBytes = 4 * k * Math.ceil(n / SLAB_PANEL) * SLAB_PANEL;
  const minRows = transA ? 2 * SLAB_MIN_ROWS : SLAB_MIN_ROWS;
  const slab = direct && items === 1 && m >= minRows && k <= SLAB_K && panelBytes <= engine.maxBinding;
  if (slab) {
    // op(A) copied (transposed in 4×4 blocks where asked) with a window's slack after it, so the last rows'
    // 64 KiB binding fits; B packed into panels.
    const padded = engine.empty([m * k + SLAB_WINDOW / 4]);
    // Bound as a window of A's size: the slack after it may take padded past one binding.
    if (transA) transposeBlocks("matmul", a, { buffer: padded.buffer, offset: 0, size: a.bytes });
    else engine.copy(a.buffer, 0, padded.buffer, 0, a.bytes);
    const panels = engine.empty([panelBytes / 4]);
    const kernel = { op: "matmul", shader: "matmul", constants: { TX: SLAB_WG, TY: 1 } };
    engine.run({
      ...kernel,
      entry: "packB",
      constants: { ...kernel.constants, TRANS_B: +transB },
      params: params(0),
      buffers: [null, b, panels],
      workgroups: Math.ceil(panels.size / 16 / SLAB_WG),
    });
    const blocks = Math.min(Math.floor(SLAB_K / k), Math.ceil(m / SLAB_ROWS));
    for (let row0 = 0; row0 < m; row0 += blocks * SLAB_ROWS) {
      engine.run({
        ...kernel,
        entry: "slab",
        params: params(row0),
        buffers: [{ buffer: padded.buffer, offset: row0 * k * 4, size: SLAB_WINDOW }, panels, partial],
        workgroups: Math.ceil(n / SLAB_PANEL) * blocks,
      });
    }
    padded.dispose();
    panels.dispose();
  } else {
    // A narrow or short product (N under a tile's 128 columns, M under its 64 rows) on the direct entry: only as
    // many invocations across and down as N and M need, not lanes that compute zeros (on llvmpipe [64, 64,
    // 1024]·[64, 1024, 28] ran 2x faster, attention scores [64, 16, 64]·[64, 16, 64]ᵀ 3.5x, [64, 4, 64]·[64, 4,
    // 64]ᵀ 7x).
    const fit = (size: number, perInvocation: number, most: number) =>
      direct ? Math.min(most, 2 ** Math.ceil(Math.log2(Math.ceil(size / perInvocation)))) : most;
    const tx = fit(n, 16, TILE.TX);
    const ty = fit(m, 8, TILE.TY);
    engine.run({
      op: "matmul",
      shader: "matmul",
      entry: direct ? "direct" : "main",
      constants: direct ? { ...TILE, TX: tx, TY: ty, TRANS_A: +transA, TRANS_B: +transB } : TILE,
      params: params(0),
      buffers: [a, b, partial],
      workgroups: Math.ceil(m / (ty * 8)) * Math.ceil(n / (tx * 16)) * items * slices,
    });
  }
  if (slices === 1) return partial;
  const out = sum(partial, [0]);
  partial.dispose();
  return out;
}
