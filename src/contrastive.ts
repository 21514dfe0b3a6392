// Contrastive and joint-embedding losses (shaders/contrastive.wgsl; CPU reference in src/ref/contrastive.ts).
// NT-Xent, DCL, InfoNCE and SupCon share one fused kernel family: logits stream tile by tile (staged in workgroup
// memory on GPUs, read straight from memory on CPU adapters) with an online log-sum-exp; the backward
// recomputes them (with the saved per-row log-sum-exp), so live memory is O(N·D + N), never an N×N matrix,
// except that logits up to the engine's logitCacheBytes are kept from the forward instead of recomputed. On CPU
// adapters, where the rows are their own columns (A = B), each pair of row tiles is computed once for both.
import { type Engine, Params } from "./engine.ts";
import { checkOptions, fmtShape, ShapeError } from "./errors.ts";
import { composed, isRecording, noGrad, record } from "./autograd.ts";
import { add, checkF32, mul, sub } from "./elementwise.ts";
import { normalize } from "./nn.ts";
import { mean, softmax, sum } from "./reduce.ts";
import { assertLive, checkEngine, type Tensor } from "./tensor.ts";

/**
 * Tile: WGR × WGC invocations, each an 8 × 8 block of logits. On llvmpipe 8 × 8 blocks read straight from
 * storage (DIRECT) ran ntXent forward+backward at N = 1,024 about 2x faster than 4 × 4 blocks staged in
 * workgroup memory: each access is paid per SIMD lane there, and 8 × 8 makes 4 multiply-adds of every vec4 read.
 */
const TILE = { WGR: 8, WGC: 8 };
const TR = 8 * TILE.WGR;
const TC = 8 * TILE.WGC;
const dim4 = (dim: number) => Math.ceil(dim / 4);
/**
 * vec4s of dims staged in workgroup memory per step (GPUs): as many as the rows have, up to 8 (16 KiB of
 * workgroup memory, WebGPU's guaranteed minimum).
 */
const dk4 = (dim: number) => Math.min(8, 2 ** Math.ceil(Math.log2(dim4(dim))));
/** Dims of the gradient one workgroup accumulates (16 per invocation); more dims take more workgroups. */
const DV = 16 * TILE.WGC;
/** Invocations of the row-wise entries (normalize, finish, total, normalizeGrad). */
const WG = 64;
/** Loop iterations one invocation may run per dispatch: half of llvmpipe's silent cap of 65,535. */
const LOOP_BUDGET = 32768;
/**
 * Fewest steps of the column stream one workgroup takes on a CPU adapter: a split's setup (its window rows, its
 * partial states to merge) outweighs the balance it buys below this (llvmpipe, ntXent forward at N = 256, five
 * bands: three splits ran 1.4x slower than one).
 */
const MIN_SPLIT_STEPS = 8;
/** As torch.nn.functional.normalize. */
const NORM_EPS = 1e-12;
/** Bytes of the uniform window of A's rows (contrastive.wgsl `a_window`): WebGPU's guaranteed uniform binding. */
const WINDOW_BYTES = 65536;
/**
 * Row tiles of an A window in a gradient pass that walks pairs: each adds a slot of N·D gradient rows (the
 * transposed shares), so few, at some more dispatches where D is small.
 */
const SYM_GRAD_TILES = 4;
/**
 * Row tiles of an A window in a forward pass that walks pairs: each adds WGR slots of row states (a vec4 a row
 * per invocation row, contrastive.wgsl stats), so few enough for at most 4·dim4 slots (4x A's packed rows), or
 * one: memory stays O(N·D).
 */
const symStatsTiles = (dim: number) => Math.max(1, Math.floor((4 * dim4(dim)) / TILE.WGR));
/** Bytes of scratch one step of a CPU adapter's backward takes: its weights by column and by row (`scratchAt`). */
const STEP_BYTES = 2 * TR * TC * 4;
/** The backward's weights scratch on CPU adapters: at most twice the packed rows, and at most this. */
const SCRATCH_BYTES = 16 * 2 ** 20;

/** Whether DIRECT logits read A's rows from the uniform window: where a row tile fits it (D ≤ 256). */
const isWindowed = (e: Engine, dim: number) => e.cpuKernels && TR * dim4(dim) * 16 <= WINDOW_BYTES;

/**
 * Whether a pass walks each pair of row tiles once (SYM): A = B, windowed, and no logits cache (which wants
 * every tile).
 */
const walksPairs = (pr: Problem, cached: boolean) =>
  !cached && pr.a === pr.b && isWindowed(pr.a.engine, pr.dim);

function tileConstants(e: Engine, dim: number) {
  // DIRECT stages nothing: one DK4 for every dim, so one pipeline per entry serves them all.
  const direct = e.cpuKernels;
  const DK4 = direct ? 1 : dk4(dim);
  const SMEM4 = Math.max(8 * (TILE.WGR + TILE.WGC) * DK4, 16 * TILE.WGR * TILE.WGC);
  return { ...TILE, DK4, SMEM4, DIRECT: direct ? 1 : 0, A_WINDOW: isWindowed(e, dim) ? 1 : 0 };
}

/** How positives are found, whether a row sees itself, and whether its positives are in its log-sum-exp. */
interface Pairing {
  excludeSelf: boolean;
  /** DCL: the log-sum-exp over the negatives alone. */
  excludePositives?: boolean;
  /** label(x) = labels[x]; without it label(x) = x % period. */
  labels?: Tensor;
  period: number;
}

/** Rows, columns and dims of a fused loss over packed tensors (rows padded to a multiple of 4 dims). */
interface Problem {
  a: Tensor;
  b: Tensor;
  rows: number;
  cols: number;
  dim: number;
  invTemp: number;
  pairing: Pairing;
}

/**
 * How the work is cut into dispatches: the row tiles in groups of windowTiles (those the A window holds; all of
 * them when staged), the column stream of each row tile in splits of colsPerSplit, splitPar of them per dispatch.
 * With `sym` (A = B) the stream is of bands of tile pairs instead (contrastive.wgsl `Walk`) and colsPerSplit
 * counts bands. `slots`: partials per row (stats' row states, gradient rows): splitPar, and with sym more per
 * row tile of a window: WGR for stats, one for the gradient.
 */
interface Plan {
  rowTiles: number;
  windowTiles: number;
  chunks: number;
  colsPerSplit: number;
  splitPar: number;
  dispatches: number;
  sym: boolean;
  slots: number;
}

/**
 * Loop iterations of one invocation per column tile (the backward's, which adds the weighted sum over the
 * tile's columns), from the loops in contrastive.wgsl, counting no loop as unrolled: the logits (staged: per
 * step two loads of the tile and DK4 × 9; direct: 9 per vec4 of dims, and 9 to stage the weights and walk the
 * steps again), then the weights and the sum.
 */
function tileIterations(dim: number, direct: boolean, sym = false): number {
  const wg = TILE.WGR * TILE.WGC;
  const DK4 = dk4(dim);
  const staged = Math.ceil(dim4(dim) / DK4) *
    (Math.ceil((TR * DK4) / wg) + Math.ceil((TC * DK4) / wg) + 9 * DK4 + 1);
  // With sym, the transposed weighted sum over the tile's rows too.
  return (direct ? 9 * dim4(dim) + 1 + 9 : staged) + (sym ? 2 : 1) * (5 * TC + 16);
}

/** A RangeError, before anything is allocated, where one column tile of `dim` dims overruns the loop budget. */
function checkTileBudget(op: string, dim: number, e: Engine): void {
  if (tileIterations(dim, e.cpuKernels, isWindowed(e, dim)) > LOOP_BUDGET) {
    throw new RangeError(
      `${op}: embedding dim ${dim} is too large for one tile within the loop budget of ${LOOP_BUDGET}`,
    );
  }
}

/**
 * A ShapeError, before anything is allocated, where `rows` packed rows of `dim` dims pass one binding; a
 * RangeError where the row passes' loops would pass the budget (the backward's with one partial per row:
 * rowPass checks it again with the real count).
 */
function checkPackable(op: string, rows: number, dim: number, e: Engine): void {
  const bytes = rows * 16 * dim4(dim);
  if (bytes > e.maxBinding) {
    throw new ShapeError(
      `${op}: ${rows} rows of ${dim} dims pack into ${bytes} bytes, over maxStorageBufferBindingSize ` +
        `(${e.maxBinding} bytes) for one binding`,
    );
  }
  rowPass(op, e, "normalize", rows, dim, normalizeLoops(dim));
  rowPass(op, e, "normalizeGrad", rows, dim, normalizeGradLoops(dim, 1));
}

function plan(pr: Problem, withGrad: boolean, sym = false): Plan {
  const e = pr.a.engine;
  const maxTiles = Math.floor(LOOP_BUDGET / tileIterations(pr.dim, e.cpuKernels, sym));
  const rowTiles = Math.ceil(pr.rows / TR);
  let windowTiles = isWindowed(e, pr.dim)
    ? Math.min(
      rowTiles,
      Math.floor(WINDOW_BYTES / (16 * TR * dim4(pr.dim))),
      sym ? (withGrad ? SYM_GRAD_TILES : symStatsTiles(pr.dim)) : rowTiles,
    )
    : rowTiles;
  const chunks = withGrad ? Math.ceil(pr.dim / DV) : 1;
  const stream = sym ? Math.floor(rowTiles / 2) + 1 : Math.ceil(pr.cols / TC);
  // A CPU adapter's backward keeps the weights of every step of a dispatch in scratch (contrastive.wgsl grad):
  // fewer row tiles and steps per dispatch where they would outgrow it.
  const scratchSteps = withGrad && e.cpuKernels
    ? Math.max(
      1,
      Math.floor(Math.min(2 * pr.rows * 16 * dim4(pr.dim), SCRATCH_BYTES, e.maxBinding) / STEP_BYTES),
    )
    : Infinity;
  windowTiles = Math.min(windowTiles, Math.max(1, Math.floor(scratchSteps / chunks)));
  // Splits to fill the adapter; a CPU adapter's no shorter than MIN_SPLIT_STEPS steps (tiles or bands) each.
  const fill = Math.min(
    Math.ceil(e.parallelWorkgroups / (windowTiles * chunks)),
    e.cpuKernels ? Math.max(1, Math.floor(stream / MIN_SPLIT_STEPS)) : Infinity,
  );
  const steps = Math.max(1, Math.min(maxTiles, Math.floor(scratchSteps / (windowTiles * chunks * fill))));
  const splits = Math.min(stream, Math.max(Math.ceil(stream / steps), fill));
  const tilesPerSplit = Math.ceil(stream / splits);
  const used = Math.ceil(stream / tilesPerSplit);
  // The gradient's slots in one binding: dispatches in sequence merge into the same slots instead.
  const room = withGrad
    ? Math.floor(e.maxBinding / (pr.rows * 16 * dim4(pr.dim))) - (sym ? windowTiles : 0)
    : used;
  const splitPar = Math.max(1, Math.min(used, fill, room));
  return {
    rowTiles,
    windowTiles,
    chunks,
    colsPerSplit: sym ? tilesPerSplit : tilesPerSplit * TC,
    splitPar,
    dispatches: Math.ceil(used / splitPar),
    sym,
    slots: sym ? splitPar + windowTiles * (withGrad ? 1 : TILE.WGR) : splitPar,
  };
}

/**
 * Params of dispatch `seq` over the row tiles from tile0 (at most windowTiles of them); the pairing and (grad)
 * the terms are flags in them, not pipeline constants, so every loss shares a tiling's pipelines.
 */
function params(pr: Problem, pl: Plan, seq: number, tile0 = 0, colStats = 0, cache = false, terms?: Terms) {
  const tiles = Math.min(pl.windowTiles, pl.rowTiles - tile0);
  const { excludeSelf, excludePositives, labels } = pr.pairing;
  return new Params().u32(pr.rows, pr.cols, pr.dim, dim4(pr.dim)).f32(pr.invTemp)
    .u32(pr.pairing.period, pl.colsPerSplit, pl.splitPar, seq, tiles, colStats, 0).f32(NORM_EPS, 1)
    .u32(cache ? 1 : 0, tile0)
    .u32(...[excludeSelf, excludePositives, labels, terms?.row, terms?.col].map((f) => f ? 1 : 0));
}

/**
 * Each dispatch of a pass: its params, its A window (rows from tile0; A has the window's size of slack after
 * it, see `pack`) and its workgroups.
 */
function* dispatches(pr: Problem, pl: Plan, colStats = 0, cache = false, terms?: Terms) {
  const rowBytes = 16 * dim4(pr.dim);
  const windowed = isWindowed(pr.a.engine, pr.dim);
  for (let tile0 = 0; tile0 < pl.rowTiles; tile0 += pl.windowTiles) {
    const window = { buffer: pr.a.buffer, offset: windowed ? tile0 * TR * rowBytes : 0, size: WINDOW_BYTES };
    const tiles = Math.min(pl.windowTiles, pl.rowTiles - tile0);
    for (let seq = 0; seq < pl.dispatches; seq++) {
      yield {
        params: params(pr, pl, seq, tile0, colStats, cache, terms),
        window,
        workgroups: tiles * pl.splitPar * pl.chunks,
      };
    }
  }
}

/** normalizeRows' loop iterations for a row: the sum of squares in blocks of 8 dims, then the packed writes. */
const normalizeLoops = (dim: number) => Math.ceil((9 * dim) / 8) + 4 * dim4(dim);

/** normalizeGradRows': u·du in blocks of 8 dims, then the writes, each du summing splitPar partials. */
const normalizeGradLoops = (dim: number, splitPar: number) => 2 * dim * (splitPar + 1) + Math.ceil(dim / 8);

/**
 * How a row-wise entry runs: one workgroup per row (GPUs, and rows too long for the next), its WG invocations
 * each taking every WG-th dim; or on CPU adapters the entry's `Rows` variant, one invocation per row, where its
 * `serialLoops` loop iterations (a row's whole walk) fit the loop budget. A row whose share per invocation would
 * not fit either is a RangeError, before anything is allocated (the budget's margin under the cap covers the
 * shares' extra exit tests).
 */
function rowPass(
  op: string,
  e: Engine,
  entry: string,
  rows: number,
  dim: number,
  serialLoops: number,
): { entry: string; workgroups: number } {
  if (e.cpuKernels && serialLoops <= LOOP_BUDGET) {
    return { entry: `${entry}Rows`, workgroups: Math.ceil(rows / WG) };
  }
  if (Math.ceil(serialLoops / WG) + Math.log2(WG) > LOOP_BUDGET) {
    throw new RangeError(
      `${op}: rows of ${dim} dims are too long for one workgroup of ${WG} within the loop budget of ` +
        `${LOOP_BUDGET} iterations per invocation`,
    );
  }
  return { entry, workgroups: rows };
}

/**
 * Rows of x1 then x2, packed (each padded with zeros to a multiple of 4 dims) and, when `normalize`, scaled
 * to unit L2 norm: [u, norms]. u has the A window's size of slack after it, so every window of its rows fits.
 */
function pack(op: string, normalize: boolean, x1: Tensor, x2?: Tensor): [Tensor, Tensor] {
  const e = x1.engine;
  const n1 = x1.shape[0];
  const rows = n1 + (x2?.shape[0] ?? 0);
  const dim = x1.shape[1];
  const pass = rowPass(op, e, "normalize", rows, dim, normalizeLoops(dim));
  const u = e.empty([rows, 4 * dim4(dim)], "f32", WINDOW_BYTES);
  const norms = e.empty([rows]);
  e.run({
    op,
    shader: "contrastive",
    ...pass,
    constants: { WG, NORMALIZE: normalize ? 1 : 0 },
    params: new Params().u32(rows, 0, dim, dim4(dim)).f32(0).u32(0, 0, 0, 0, 0, 0, n1).f32(NORM_EPS, 1),
    buffers: [x1, x2 ?? x1, u, norms],
  });
  return [u, norms];
}

/** Floats of the logits cache of a problem: rows × columns rounded up to a tile (contrastive.wgsl `cacheAt`). */
const cacheSize = (pr: Problem) => pr.rows * Math.ceil(pr.cols / TC) * TC;

/**
 * Forward of the fused loss: the scalar loss, per-row stats [rows + 1, 2] (lse, 1/#positives; the last row
 * 1/#valid, #valid) that the backward needs, and the logits cache when the backward may come (recording) and
 * it fits the engine's logitCacheBytes and one binding.
 */
function lossStats(op: string, pr: Problem): { loss: Tensor; rowstats: Tensor; cache: Tensor | null } {
  const e = pr.a.engine;
  const cached = isRecording() && 4 * cacheSize(pr) <= Math.min(e.logitCacheBytes, e.maxBinding);
  const pl = plan(pr, false, walksPairs(pr, cached));
  const partial = e.empty([pl.slots * pr.rows, 4]);
  if (pl.sym) {
    e.run({
      op,
      shader: "contrastive",
      entry: "emptyPartials",
      constants: { WG },
      params: new Params().u32(partial.shape[0]),
      buffers: [null, null, null, partial],
      workgroups: Math.ceil(partial.shape[0] / WG),
    });
  }
  // Without a cache its binding still needs a buffer of its own (two writable bindings of one buffer are invalid).
  const cache = e.empty([cached ? cacheSize(pr) : 4]);
  for (const d of dispatches(pr, pl, 0, cached)) {
    e.run({
      op,
      shader: "contrastive",
      entry: "stats",
      constants: { ...tileConstants(e, pr.dim), SYM: pl.sym ? 1 : 0 },
      params: d.params,
      buffers: [pr.a, pr.b, pr.pairing.labels ?? pr.a, partial, cache, null, null, d.window],
      workgroups: d.workgroups,
    });
  }
  if (!cached) cache.dispose();
  const rowstats = e.empty([pr.rows + 1, 2]);
  const groups = Math.ceil(pr.rows / WG);
  const sums = e.empty([groups, 2]);
  e.run({
    op,
    shader: "contrastive",
    entry: "finish",
    constants: { WG },
    params: params(pr, { ...pl, splitPar: pl.slots }, 0),
    buffers: [partial, rowstats, sums],
    workgroups: groups,
  });
  const loss = total(op, sums, rowstats, pr.rows);
  partial.dispose();
  sums.dispose();
  return { loss, rowstats, cache: cached ? cache : null };
}

/** Σ sums.x / Σ sums.y as a scalar; writes (1/Σy, Σy) to rowstats[at]. */
function total(op: string, sums: Tensor, rowstats: Tensor, at: number): Tensor {
  const loss = sums.engine.empty([]);
  sums.engine.run({
    op,
    shader: "contrastive",
    entry: "total",
    constants: { WG },
    params: new Params().u32(at, sums.shape[0]),
    buffers: [sums, rowstats, loss],
    workgroups: 1,
  });
  return loss;
}

/** Where the weights of the backward come from: this side's rows, the other side's (transposed), or both. */
interface Terms {
  row?: Tensor;
  col?: Tensor;
  /** Columns below this have a row in `col`. */
  colStats?: number;
}

/**
 * Split partials of dL/da_i = Σ_j W_ij b_j / τ, packed: [splitPar·rows, 4·dim4], and splitPar. The logits come
 * from `cache` (lossStats of the same problem) when there is one.
 */
function lossGrad(op: string, pr: Problem, terms: Terms, cache: Tensor | null = null): [Tensor, number] {
  const e = pr.a.engine;
  const rowBytes = 16 * dim4(pr.dim);
  // Pairs once where both terms are of one rowstats and the slots fit one binding.
  const symPlan = walksPairs(pr, cache !== null) && terms.row === terms.col ? plan(pr, true, true) : null;
  const pl = symPlan && symPlan.slots * pr.rows * rowBytes <= e.maxBinding ? symPlan : plan(pr, true);
  const shape = [pl.slots * pr.rows, 4 * dim4(pr.dim)];
  const dpart = pl.sym ? e.zeros(shape) : e.empty(shape);
  // CPU adapters: every step's weights of a dispatch's workgroups (contrastive.wgsl `scratchAt`); elsewhere the
  // binding still needs a buffer of its own.
  const steps = pl.sym ? pl.colsPerSplit : pl.colsPerSplit / TC;
  const scratch = e.empty([
    e.cpuKernels ? pl.windowTiles * pl.splitPar * pl.chunks * steps * STEP_BYTES / 4 : 4,
  ]);
  const statsA = terms.row ?? terms.col!;
  const statsB = terms.col ?? terms.row!;
  const colStats = terms.col ? terms.colStats ?? pr.cols : pr.rows;
  for (const d of dispatches(pr, pl, colStats, cache !== null, terms)) {
    e.run({
      op,
      shader: "contrastive",
      entry: "grad",
      constants: { ...tileConstants(e, pr.dim), SYM: pl.sym ? 1 : 0 },
      params: d.params,
      buffers: [
        pr.a,
        pr.b,
        pr.pairing.labels ?? pr.a,
        statsA,
        statsB,
        dpart,
        cache ?? pr.a,
        d.window,
        scratch,
      ],
      workgroups: d.workgroups,
    });
  }
  scratch.dispose();
  return [dpart, pl.slots];
}

/**
 * dx = g·scale·Σ dpart, through the row normalisation when `saved` = [u, norms] is given; rows go to dx1
 * (the first dx1.shape[0]) then dx2.
 */
function finishGrad(
  op: string,
  dpart: Tensor,
  splitPar: number,
  g: Tensor,
  scale: number,
  saved: [Tensor, Tensor] | null,
  dx1: Tensor,
  dx2?: Tensor,
): void {
  const rows = dpart.shape[0] / splitPar;
  const dim = dx1.shape[1];
  const pass = rowPass(op, dpart.engine, "normalizeGrad", rows, dim, normalizeGradLoops(dim, splitPar));
  // Without a second view every row goes to dx1; dx2's binding still needs a buffer of its own (two writable
  // bindings of one buffer are invalid).
  const second = dx2 ?? dpart.engine.empty([1]);
  dpart.engine.run({
    op,
    shader: "contrastive",
    ...pass,
    constants: { WG, NORMALIZE: saved ? 1 : 0 },
    params: new Params().u32(rows, 0, dim, dim4(dim)).f32(0).u32(0, 0, splitPar, 0, 0, 0, dx1.shape[0])
      .f32(NORM_EPS, scale),
    buffers: [dpart, saved?.[0] ?? dpart, saved?.[1] ?? dpart, g, dx1, second],
  });
  if (!dx2) second.dispose();
}

function checkEmbeddings(op: string, names: string[], ...xs: Tensor[]): void {
  xs.forEach((x, i) => {
    checkF32(op, x);
    if (x.shape.length !== 2) {
      throw new ShapeError(`${op}: ${names[i]} must be 2-D [N, D], got ${fmtShape(x.shape)}`);
    }
  });
  checkEngine(op, xs[0], ...xs);
}

function checkSameShape(op: string, names: [string, string], a: Tensor, b: Tensor): void {
  if (a.shape[0] !== b.shape[0] || a.shape[1] !== b.shape[1]) {
    throw new ShapeError(
      `${op}: ${names[0]} ${fmtShape(a.shape)} and ${names[1]} ${fmtShape(b.shape)} differ in shape`,
    );
  }
}

function checkTemperature(op: string, temperature: number): number {
  if (!(temperature > 0) || !Number.isFinite(temperature)) {
    throw new RangeError(`${op}: temperature must be a positive finite number, got ${temperature}`);
  }
  return 1 / temperature;
}

export interface NTXentOptions {
  /** Divides the cosine similarities (default 0.5); must be positive. */
  temperature?: number;
}

/**
 * SimCLR's NT-Xent as lightly's NTXentLoss: rows of both views L2-normalised, each of the 2N rows scored by
 * cosine similarity / temperature against the other 2N − 1 rows, its positive being the same sample's other
 * view; cross-entropy averaged over the 2N rows. z1, z2: [N, D].
 */
export function ntXent(z1: Tensor, z2: Tensor, options: NTXentOptions = {}): Tensor {
  checkOptions("ntXent", options, { temperature: true });
  return twoViewLoss("ntXent", z1, z2, options.temperature ?? 0.5, false);
}

export interface DCLOptions {
  /** Divides the cosine similarities (default 0.1); must be positive. */
  temperature?: number;
  /**
   * DCLW (lightly's DCLWLoss): each positive term weighted by w_i = 2 − N·softmax_i(cos(z1_i, z2_i) / sigma),
   * the negative von Mises-Fisher weights (no gradient through w). Lightly's default sigma is 0.5.
   */
  weightSigma?: number;
}

/**
 * The decoupled contrastive loss of Yeh et al. 2022 (their Eq. 6, as solo-learn's dcl_loss_func): NT-Xent with
 * each row's positive left out of its log-sum-exp, so loss_i = log Σ_{negatives} exp(s_ij) − w_i·s_i,positive
 * over the row's 2N − 2 negatives of both views, averaged over the 2N rows; w_i = 1 (DCL) or the weights of
 * `weightSigma` (DCLW, lightly's). lightly's DCLLoss adds a log-sum-exp over each view's N − 1 negatives
 * instead of one over all 2N − 2, which is not the paper's loss. z1, z2: [N, D] with N ≥ 2 (with N = 1 a row
 * has no negatives).
 */
export function dcl(z1: Tensor, z2: Tensor, options: DCLOptions = {}): Tensor {
  checkOptions("dcl", options, { temperature: true, weightSigma: true });
  const temperature = options.temperature ?? 0.1;
  const sigma = options.weightSigma;
  if (sigma === undefined) return twoViewLoss("dcl", z1, z2, temperature, true);
  if (!(sigma > 0 && sigma < Infinity)) {
    throw new RangeError(`dcl: weightSigma must be positive and finite, got ${sigma}`);
  }
  // DCLW = DCL + mean_i (1 − w_i)·cos_i / temperature: the same positive term, reweighted.
  return composed((keep) => {
    const unweighted = keep(twoViewLoss("dcl", z1, z2, temperature, true));
    const cos = keep(sum(keep(mul(keep(normalize(z1)), keep(normalize(z2)))), 1));
    const oneMinusW = keep(
      noGrad(() => z1.engine.tidy(() => sub(mul(softmax(mul(cos, 1 / sigma), 0), z1.shape[0]), 1))),
    );
    return add(unweighted, keep(mul(keep(mean(keep(mul(oneMinusW, cos)))), 1 / temperature)));
  });
}

/** NT-Xent, or with `excludePositives` DCL: the 2N rows of both views against each other. */
function twoViewLoss(
  op: string,
  z1: Tensor,
  z2: Tensor,
  temperature: number,
  excludePositives: boolean,
): Tensor {
  checkEmbeddings(op, ["z1", "z2"], z1, z2);
  checkSameShape(op, ["z1", "z2"], z1, z2);
  const invTemp = checkTemperature(op, temperature);
  const [n, dim] = z1.shape;
  if (excludePositives && n < 2) {
    throw new ShapeError(
      `${op}: needs N ≥ 2 (with one sample a row has no negatives), got z1 ${fmtShape(z1.shape)}`,
    );
  }
  checkTileBudget(op, dim, z1.engine);
  checkPackable(op, 2 * n, dim, z1.engine);
  const saved = pack(op, true, z1, z2);
  const [u] = saved;
  const pr: Problem = {
    a: u,
    b: u,
    rows: 2 * n,
    cols: 2 * n,
    dim,
    invTemp,
    pairing: { excludeSelf: true, period: n, excludePositives },
  };
  const { loss, rowstats, cache } = lossStats(op, pr);
  return record(loss, op, [z1, z2], (g) => {
    // s_ij = s_ji sits in row i's loss and in row j's: both terms go to u_i.
    const [dpart, splitPar] = lossGrad(op, pr, { row: rowstats, col: rowstats }, cache);
    const dz1 = z1.engine.empty(z1.shape);
    const dz2 = z1.engine.empty(z2.shape);
    finishGrad(op, dpart, splitPar, g, 1, saved, dz1, dz2);
    dpart.dispose();
    return [dz1, dz2];
  }, [...saved, rowstats, ...(cache ? [cache] : [])]);
}

export interface InfoNCEOptions {
  /** Divides the logits; must be positive. */
  temperature: number;
  /**
   * Extra keys [K, D] (a MoCo queue): K more negative columns for every query, beside the batch's other keys
   * (MoCo itself scores a query against its own key and the queue alone); they get no gradient.
   */
  negatives?: Tensor;
  /** Average the query→key and key→query cross-entropies (CLIP). */
  symmetric?: boolean;
}

/**
 * CLIP's InfoNCE: logits query·keysᵀ / temperature (no normalisation: pass normalised embeddings for cosine
 * similarity), the diagonal being the positives, cross-entropy averaged over the queries; with `negatives`, a
 * MoCo-style bank of more negative columns. query, keys: [N, D].
 */
export function infoNCE(query: Tensor, keys: Tensor, options: InfoNCEOptions): Tensor {
  checkOptions("infoNCE", options, { temperature: true, negatives: true, symmetric: true });
  const op = "infoNCE";
  // JavaScript callers may leave the options out: the temperature check then names what is missing.
  const { negatives, temperature, symmetric }: Partial<InfoNCEOptions> = options ?? {};
  checkEmbeddings(op, ["query", "keys", "negatives"], query, keys, ...(negatives ? [negatives] : []));
  checkSameShape(op, ["query", "keys"], query, keys);
  if (negatives && negatives.shape[1] !== query.shape[1]) {
    throw new ShapeError(
      `${op}: negatives ${fmtShape(negatives.shape)} and query ${
        fmtShape(query.shape)
      } differ in embedding dim`,
    );
  }
  const invTemp = checkTemperature(op, temperature);
  const e = query.engine;
  const [n, dim] = query.shape;
  const pairing: Pairing = { excludeSelf: false, period: 0xffffffff };
  checkTileBudget(op, dim, e);
  checkPackable(op, n + (negatives?.shape[0] ?? 0), dim, e);
  const [q, qNorms] = pack(op, false, query);
  // Keys then the negatives: the keys alone are its first n rows.
  const [kn, knNorms] = pack(op, false, keys, negatives);
  qNorms.dispose();
  knNorms.dispose();
  const qk: Problem = { a: q, b: kn, rows: n, cols: kn.shape[0], dim, invTemp, pairing };
  const kq: Problem = { a: kn, b: q, rows: n, cols: n, dim, invTemp, pairing };
  const { loss: lossQ, rowstats: statsQ, cache: cacheQ } = lossStats(op, qk);
  const saved = [q, kn, statsQ, ...(cacheQ ? [cacheQ] : [])];
  let loss = lossQ;
  let statsK: Tensor | undefined;
  let cacheK: Tensor | null = null;
  if (symmetric) {
    const { loss: lossK, rowstats, cache } = lossStats(op, kq);
    statsK = rowstats;
    cacheK = cache;
    saved.push(statsK, ...(cacheK ? [cacheK] : []));
    loss = noGrad(() => {
      const both = add(lossQ, lossK);
      const mean = mul(both, 0.5);
      both.dispose();
      return mean;
    });
    lossQ.dispose();
    lossK.dispose();
  }
  return record(loss, op, [query, keys], (g) => {
    const half = symmetric ? mul(g, 0.5) : g;
    const dq = e.empty(query.shape);
    const dk = e.empty(keys.shape);
    // dq: the query's own row (qk) and, when symmetric, its column in every key's row (kq, keys only).
    const [dpq, spq] = lossGrad(op, qk, { row: statsQ, col: statsK, colStats: n }, cacheQ);
    finishGrad(op, dpq, spq, half, 1, null, dq);
    dpq.dispose();
    // dk: the key's column in every query's row (qk) and, when symmetric, its own row (kq).
    const [dpk, spk] = lossGrad(op, kq, { row: statsK, col: statsQ, colStats: n }, cacheK);
    finishGrad(op, dpk, spk, half, 1, null, dk);
    dpk.dispose();
    if (half !== g) half.dispose();
    return [dq, dk];
  }, saved);
}

/**
 * MoCo's queue update, in place: rows at, at + 1, ... of queue [K, D] (wrapping past K) become the rows of keys
 * [B, D], B ≤ K, by buffer copies; returns the next position, (at + B) % K. infoNCE copies its negatives when it
 * is called, so the queue may move on before grad() runs.
 */
export function enqueue(queue: Tensor, keys: Tensor, at: number): number {
  const op = "enqueue";
  for (const [name, t] of [["queue", queue], ["keys", keys]] as const) {
    assertLive(op, t);
    if (t.shape.length !== 2) {
      throw new ShapeError(`${op}: ${name} must be 2-D [rows, D], got ${fmtShape(t.shape)}`);
    }
  }
  checkEngine(op, queue, keys);
  if (queue === keys) throw new Error(`${op}: keys is the queue itself`);
  if (queue.dtype !== keys.dtype) {
    throw new TypeError(`${op}: keys ${keys.dtype} and queue ${queue.dtype} differ in dtype`);
  }
  const [k, dim] = queue.shape;
  const [b] = keys.shape;
  if (keys.shape[1] !== dim || b > k) {
    throw new ShapeError(
      `${op}: keys ${fmtShape(keys.shape)} do not fit queue ${
        fmtShape(queue.shape)
      } (the same D, at most K rows)`,
    );
  }
  if (!(Number.isInteger(at) && at >= 0 && at < k)) {
    throw new RangeError(`${op}: at must be an integer in [0, ${k}), got ${at}`);
  }
  const rowBytes = 4 * dim;
  const first = Math.min(b, k - at);
  queue.modified();
  queue.engine.copy(keys.buffer, 0, queue.buffer, at * rowBytes, first * rowBytes);
  if (first < b) queue.engine.copy(keys.buffer, first * rowBytes, queue.buffer, 0, (b - first) * rowBytes);
  return (at + b) % k;
}

export interface SupConOptions {
  /** Divides the cosine similarities; must be positive. */
  temperature: number;
}

/**
 * Supervised contrastive loss (Khosla et al. 2020, L_out): rows L2-normalised, every other sample with the
 * same label is a positive; per anchor −mean over its positives of log softmax (over all other samples),
 * averaged over the anchors that have a positive (0 when none has). z: [N, D]; labels: i32 [N]. The paper's
 * loss, where HobbitLong/SupContrast's code scales it by temperature / 0.07 and counts anchors without a
 * positive as 0 in its mean (lightly's SupConLoss scales by the temperature).
 */
export function supCon(z: Tensor, labels: Tensor, options: SupConOptions): Tensor {
  checkOptions("supCon", options, { temperature: true }, true);
  const op = "supCon";
  checkEmbeddings(op, ["z"], z);
  assertLive(op, labels);
  if (labels.dtype !== "i32" || labels.shape.length !== 1 || labels.shape[0] !== z.shape[0]) {
    throw new ShapeError(
      `${op}: labels must be i32 [${z.shape[0]}] to match z ${fmtShape(z.shape)}, got ${labels.dtype} ${
        fmtShape(labels.shape)
      }`,
    );
  }
  assertLive(op, labels);
  checkEngine(op, z, labels);
  const invTemp = checkTemperature(op, options.temperature);
  const [n, dim] = z.shape;
  checkTileBudget(op, dim, z.engine);
  checkPackable(op, n, dim, z.engine);
  const saved = pack(op, true, z);
  const [u] = saved;
  const pairing: Pairing = { excludeSelf: true, period: 0xffffffff, labels };
  const pr: Problem = { a: u, b: u, rows: n, cols: n, dim, invTemp, pairing };
  const { loss, rowstats, cache } = lossStats(op, pr);
  return record(loss, op, [z], (g) => {
    const [dpart, splitPar] = lossGrad(op, pr, { row: rowstats, col: rowstats }, cache);
    const dz = z.engine.empty(z.shape);
    finishGrad(op, dpart, splitPar, g, 1, saved, dz);
    dpart.dispose();
    return [dz];
  }, [...saved, rowstats, ...(cache ? [cache] : [])]);
}

/**
 * BYOL / SimSiam negative cosine similarity: −mean_i cos(p_i, z_i). `z` (the target branch) gets no
 * gradient. p, z: [N, D].
 */
export function negativeCosine(p: Tensor, z: Tensor): Tensor {
  const op = "negativeCosine";
  checkEmbeddings(op, ["p", "z"], p, z);
  checkSameShape(op, ["p", "z"], p, z);
  const e = p.engine;
  const [n, dim] = p.shape;
  checkPackable(op, n, dim, e);
  const saved = pack(op, true, p);
  const [uz, normsZ] = pack(op, true, z);
  normsZ.dispose();
  const negCos = e.empty([n]);
  e.run({
    op,
    shader: "contrastive",
    ...rowPass(op, e, "rowDot", n, dim, dim4(dim)),
    constants: { WG },
    params: new Params().u32(n, 0, dim, dim4(dim)),
    buffers: [saved[0], uz, negCos],
  });
  // The reduce kernels' mean: a sum split over workgroups and passes (one loop over n / 64 ran past
  // llvmpipe's loop cap from 4.2M rows).
  const loss = noGrad(() => mean(negCos));
  negCos.dispose();
  return record(loss, op, [p], (g) => {
    const dp = e.empty(p.shape);
    finishGrad(op, uz, 1, g, -1 / n, saved, dp);
    return [dp];
  }, [...saved, uz]);
}
