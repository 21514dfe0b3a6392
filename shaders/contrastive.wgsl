// contrastive.wgsl: fused contrastive losses (NT-Xent, DCL, InfoNCE, SupCon) of rows a_i of A [R, D] against
// columns b_j of B [C, D] with logits s_ij = a_i·b_j · inv_temp, never materialising the R×C matrix.
// Loss = mean over valid rows i of lse_i − mean_{j ∈ pos(i)} s_ij, where lse_i is over the row's columns
// (all j, or j ≠ i with p.exclude_self; the positives left out too with p.exclude_pos, as the decoupled loss
// DCL has it), pos(i) = columns j ≠ i (with p.exclude_self) with label(j) == label(i), valid = pos(i) not
// empty; label(x) = labels[x] with p.use_labels, else x % period.
// What a loss is (these pairing flags, the backward's terms, the logits cache) is uniform, not an override: one
// pipeline per tiling serves every loss, which saves dozens of compiles (seconds each on a CPU adapter).
//
// Tiling: a workgroup of WGR × WGC invocations covers TR = 8·WGR rows × TC = 8·WGC columns; each invocation
// owns an 8×8 block (four mat4x4 quadrants; column r of one holds row r's 4 logits). DK4 vec4s of dims at a
// time of both tiles are staged in workgroup memory, or with DIRECT (CPU adapters) read straight from memory:
// B from storage, A (with A_WINDOW, where a row tile fits) from a 64 KiB uniform window of the dispatch's row
// tiles (p.tile0 onwards), else from storage.
// A, B and the gradient partials are packed: rows padded with zeros to dim4 vec4s. A row tile's columns are cut
// into splits of `cols_per_split` (chosen on the host so no invocation loops more than a few ten thousand times:
// llvmpipe stops loops silently at 65,535); `split_par`
// splits run side by side in one dispatch and dispatch number `seq` takes the next `split_par` splits, merging
// into the same partials, so partial memory is split_par·R whatever C is.
//
// Entries and bindings (0 is always Params):
//   normalize:     u = x / max(|x|, eps) (or x without NORMALIZE), rows of x1 then x2, packed: rows padded
//                  with zeros to 4·dim4                            1 x1, 2 x2, 3 u [R, 4·dim4], 4 norms [R]
//                  (normalizeRows: the same, one invocation per row, for CPU adapters where a row's walk
//                  fits the loop budget)
//   stats:         partial (max, Σexp, Σ positive logits, #positives) per (split_par, row); with p.cache the
//                  logits too; with SYM also per (row tile of the window, invocation row ty, row) after them
//                                                                  1 A, 2 B, 3 labels, 4 partial [slots·R],
//                                                                  5 logits cache, 8 A window
//   emptyPartials: partial = "no column yet" (SYM's slots)         4 partial
//   finish:        per row lse, 1/#pos, loss; workgroup sums      1 partial, 2 rowstats [R + 1], 3 sums
//   total:         one workgroup: loss = Σ loss / #valid           1 sums, 2 rowstats, 3 loss [1]
//   grad:          partial dA_i = Σ_j W_ij b_j · inv_temp per (split_par, row, dims), W from the row term
//                  (p.row_term, rowstats of A) and the column term (p.col_term, rowstats of B for
//                  j < col_stats)
//                                                                  1 A, 2 B, 3 labels, 4 rowstats A, 5 rowstats B,
//                                                                  6 dpart [slots·R, 4·dim4], 7 logits cache,
//                                                                  8 A window, 9 weights scratch (DIRECT)
//                  (p.cache: the logits are read from the cache stats wrote, not recomputed; with SYM also
//                  per (row tile of the window, row) after the split_par slots, which start at zero); with
//                  DIRECT the weights of every step go through scratch, not a step at a time through smem
//   rowDot:        loss[i] = −u1_i·u2_i (negative cosine of normalised rows)   1 u1, 2 u2, 3 loss [R]
//                  (rowDotRows: one invocation per row, for CPU adapters, likewise)
//   normalizeGrad: dx = J_normalize(g·scale·Σ dpart) (or without NORMALIZE the sum), rows to dx1 then dx2
//                                                                  1 dpart, 2 u, 3 norms, 4 g, 5 dx1, 6 dx2
//                  (normalizeGradRows: one invocation per row, for CPU adapters, likewise)
// Entries marked for CPU adapters, the DIRECT logits and (where a row tile fits) A_WINDOW are picked by
// src/contrastive.ts when the engine's cpuKernels is set. Every entry with logits binds the A window (8) alike.
// rowstats[i] = (lse_i, 1/#pos_i or 0 when invalid); rowstats[R] = (1/#valid or 0, #valid).
// A NaN logit (a NaN or ∞ in an input row) makes every row whose log-sum-exp holds it NaN: exp and max need
// not carry NaN, so absorb and finish carry it by hand (the backward's sums then meet the NaN row itself).
//! include lib/nan.wgsl

struct Params {
  rows: u32,
  cols: u32,
  dim: u32,
  dim4: u32,      // row stride of the packed tensors in vec4s: ceil(dim / 4), padded with zeros
  inv_temp: f32,
  period: u32,
  cols_per_split: u32,
  split_par: u32,
  seq: u32,
  row_tiles: u32,  // row tiles of this dispatch, from tile0
  col_stats: u32,
  n1: u32,
  eps: f32,
  scale: f32,
  cache: u32,     // stats, grad: 1 to write / read the logits cache
  tile0: u32,     // stats, grad: the dispatch's first row tile, where the A window starts
  exclude_self: u32,  // stats, grad: 1 or 0, the pairing (see the top)
  exclude_pos: u32,
  use_labels: u32,
  row_term: u32,  // grad: 1 or 0, the terms of W
  col_term: u32,
}

override WGR: u32 = 8;       // invocations along rows (tile rows TR = 8·WGR)
override WGC: u32 = 8;       // invocations along columns (tile columns TC = 8·WGC; grad: 16·WGC dims per pass)
override DK4: u32 = 8;       // vec4s of dims staged per step
override SMEM4: u32 = 1024;  // vec4s of workgroup memory: max(8·(WGR + WGC)·DK4, 16·WGR·WGC)
override DIRECT: bool = false;  // logits read straight from memory (CPU adapters), not staged
override A_WINDOW: bool = false;  // DIRECT: A's rows from the uniform window, not from storage
override SYM: bool = false;       // DIRECT, A = B: each unordered pair of tiles once (stats, grad; see Walk)
override WG: u32 = 64;       // row-wise entries: invocations per workgroup (a power of two)
override NORMALIZE: bool = true;

const NEG = -3.0e38;  // "no column yet": finite, so exp(NEG − m) is 0 without inf arithmetic

@group(0) @binding(0) var<uniform> p: Params;

// One workgroup memory serves every phase: the DK4-deep tiles of A and B, then the weight tile or the
// per-invocation row states being combined.
var<workgroup> smem: array<vec4<f32>, SMEM4>;
var<workgroup> red: array<vec2<f32>, WG>;

fn linear(wg: vec3<u32>, nwg: vec3<u32>) -> u32 {
  return wg.y * nwg.x + wg.x;
}

// ---- normalize ---------------------------------------------------------------------------------------------

@group(0) @binding(1) var<storage, read> x1: array<f32>;
@group(0) @binding(2) var<storage, read> x2: array<f32>;
@group(0) @binding(3) var<storage, read_write> u_out: array<f32>;
@group(0) @binding(4) var<storage, read_write> norms_out: array<f32>;

fn xAt(row: u32, d: u32) -> f32 {
  if (row < p.n1) { return x1[row * p.dim + d]; }
  return x2[(row - p.n1) * p.dim + d];
}

// Tree sum of red[].x over the workgroup (call from uniform control flow).
fn workgroupSum(lid: u32, v: f32) -> f32 {
  red[lid] = vec2<f32>(v, 0.0);
  for (var s = WG / 2u; s > 0u; s /= 2u) {
    workgroupBarrier();
    if (lid < s) { red[lid] += red[lid + s]; }
  }
  workgroupBarrier();
  let total = red[0].x;
  workgroupBarrier();
  return total;
}

// Normalisation runs one workgroup per row summing with a tree (`normalize`, GPUs), or one invocation per row
// summing serially in blocks of 8 (`normalizeRows`, CPU adapters: they pay each tree level's barrier as a
// coroutine switch per SIMD group), unless that row's walk would pass the loop cap (wide rows: src/contrastive.ts
// `rowPass`).

// Writes dims first, first + step, ... of packed row `row` of u, given the row's norm.
fn writeRow(row: u32, n: f32, first: u32, step: u32) {
  let inv = select(1.0, 1.0 / max(n, p.eps), NORMALIZE);
  for (var d = first; d < 4u * p.dim4; d += step) {
    u_out[row * 4u * p.dim4 + d] = select(0.0, xAt(row, min(d, p.dim - 1u)) * inv, d < p.dim);
  }
  if (NORMALIZE && first == 0u) { norms_out[row] = n; }
}

@compute @workgroup_size(WG)
fn normalize(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) lid: u32) {
  let row = linear(wg, nwg);
  if (row >= p.rows) { return; }
  var ss = 0.0;
  for (var d = lid; d < p.dim; d += WG) {
    let v = xAt(row, d);
    ss += v * v;
  }
  writeRow(row, sqrt(workgroupSum(lid, ss)), lid, WG);
}

@compute @workgroup_size(WG)
fn normalizeRows(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) lid: u32) {
  let row = linear(wg, nwg) * WG + lid;
  if (row >= p.rows) { return; }
  var ss = 0.0;
  for (var d0 = 0u; d0 < p.dim; d0 += 8u) {
    var block = 0.0;
    for (var d = d0; d < min(d0 + 8u, p.dim); d++) {
      let v = xAt(row, d);
      block += v * v;
    }
    ss += block;
  }
  writeRow(row, sqrt(ss), 0u, 1u);
}

// ---- the logits tile ---------------------------------------------------------------------------------------

@group(0) @binding(1) var<storage, read> xa: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> xb: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> labels: array<i32>;
// A_WINDOW: A's rows from the dispatch's first row tile on. The invocations of a row read the same vec4 at the
// same step; llvmpipe gathers that from a uniform buffer as one vector but from storage lane by lane (the
// forward at N = 4,096, D = 128 ran ~1.4x faster, forward + backward ~1.2x).
@group(0) @binding(8) var<uniform> a_window: array<vec4<f32>, 4096>;

fn label(x: u32, n: u32) -> i32 {
  if (p.use_labels == 1u) { return labels[min(x, n - 1u)]; }
  return i32(x % p.period);
}

// Stages dims [4·k0, 4·(k0 + DK4)) of the tile's rows ([TR][DK4] vec4s) and columns ([TC][DK4] after them).
fn loadTile(row0: u32, col0: u32, k0: u32, lid: u32) {
  let wg = WGR * WGC;
  for (var e = lid; e < 8u * WGR * DK4; e += wg) {
    let i = row0 + e / DK4;
    let k = k0 + e % DK4;
    smem[e] = select(vec4<f32>(0.0), xa[min(i, p.rows - 1u) * p.dim4 + min(k, p.dim4 - 1u)], i < p.rows && k < p.dim4);
  }
  for (var e = lid; e < 8u * WGC * DK4; e += wg) {
    let j = col0 + e / DK4;
    let k = k0 + e % DK4;
    smem[8u * WGR * DK4 + e] =
      select(vec4<f32>(0.0), xb[min(j, p.cols - 1u) * p.dim4 + min(k, p.dim4 - 1u)], j < p.cols && k < p.dim4);
  }
}

// Vec4 k of row i of A (A_WINDOW: i is in the dispatch's row tiles) / column j of B (DIRECT), zeros past the
// end as staged.
fn rowA(i: u32, k: u32) -> vec4<f32> {
  if (A_WINDOW) { return select(vec4<f32>(0.0), a_window[(i - p.tile0 * 8u * WGR) * p.dim4 + k], i < p.rows); }
  return select(vec4<f32>(0.0), xa[min(i, p.rows - 1u) * p.dim4 + k], i < p.rows);
}

fn rowB(j: u32, k: u32) -> vec4<f32> {
  return select(vec4<f32>(0.0), xb[min(j, p.cols - 1u) * p.dim4 + k], j < p.cols);
}

fn dots(a: vec4<f32>, b0: vec4<f32>, b1: vec4<f32>, b2: vec4<f32>, b3: vec4<f32>) -> vec4<f32> {
  return vec4<f32>(dot(a, b0), dot(a, b1), dot(a, b2), dot(a, b3));
}

// An invocation's 8×8 block of logits as four 4×4 quadrants; column r of a quadrant holds row r's 4 logits.
struct Block {
  s00: mat4x4<f32>,  // rows 0..3 × columns 0..3
  s01: mat4x4<f32>,  // rows 0..3 × columns 4..7
  s10: mat4x4<f32>,  // rows 4..7 × columns 0..3
  s11: mat4x4<f32>,  // rows 4..7 × columns 4..7
}

// Adds the products of 8 row vec4s a and 8 column vec4s b (the same 4 dims) into the block.
fn addProducts(s: ptr<function, Block>, a: array<vec4<f32>, 8>, b: array<vec4<f32>, 8>) {
  (*s).s00 += mat4x4<f32>(dots(a[0], b[0], b[1], b[2], b[3]), dots(a[1], b[0], b[1], b[2], b[3]),
                          dots(a[2], b[0], b[1], b[2], b[3]), dots(a[3], b[0], b[1], b[2], b[3]));
  (*s).s01 += mat4x4<f32>(dots(a[0], b[4], b[5], b[6], b[7]), dots(a[1], b[4], b[5], b[6], b[7]),
                          dots(a[2], b[4], b[5], b[6], b[7]), dots(a[3], b[4], b[5], b[6], b[7]));
  (*s).s10 += mat4x4<f32>(dots(a[4], b[0], b[1], b[2], b[3]), dots(a[5], b[0], b[1], b[2], b[3]),
                          dots(a[6], b[0], b[1], b[2], b[3]), dots(a[7], b[0], b[1], b[2], b[3]));
  (*s).s11 += mat4x4<f32>(dots(a[4], b[4], b[5], b[6], b[7]), dots(a[5], b[4], b[5], b[6], b[7]),
                          dots(a[6], b[4], b[5], b[6], b[7]), dots(a[7], b[4], b[5], b[6], b[7]));
}

// Logits of rows row0 + 8·ty + r and columns col0 + 8·tx + c. Call from uniform control flow. Staged through
// workgroup memory, or with DIRECT (CPU adapters) read straight from memory: no barriers, which a CPU adapter
// pays as coroutine switches, and its caches do what the staging does on a GPU.
// Hot loops index vectors and matrices by constants only (after unrolling): a dynamic index makes llvmpipe
// keep them in memory.
fn logits(row0: u32, col0: u32, ty: u32, tx: u32, lid: u32) -> Block {
  var s = Block();
  var a: array<vec4<f32>, 8>;
  var b: array<vec4<f32>, 8>;
  if (DIRECT) {
    let i = row0 + 8u * ty;
    let j = col0 + 8u * tx;
    for (var k = 0u; k < p.dim4; k++) {
      for (var r = 0u; r < 8u; r++) {
        a[r] = rowA(i + r, k);
        b[r] = rowB(j + r, k);
      }
      addProducts(&s, a, b);
    }
  } else {
    let ta = 8u * ty * DK4;
    let tb = 8u * WGR * DK4 + 8u * tx * DK4;
    for (var k0 = 0u; k0 < p.dim4; k0 += DK4) {
      workgroupBarrier();
      loadTile(row0, col0, k0, lid);
      workgroupBarrier();
      for (var k = 0u; k < DK4; k++) {
        for (var r = 0u; r < 8u; r++) {
          a[r] = smem[ta + r * DK4 + k];
          b[r] = smem[tb + r * DK4 + k];
        }
        addProducts(&s, a, b);
      }
    }
    workgroupBarrier();
  }
  let t = p.inv_temp;
  return Block(s.s00 * t, s.s01 * t, s.s10 * t, s.s11 * t);
}

// Which of a row's 4 columns are in its log-sum-exp (in range, not itself, not a positive with exclude_pos)
// and which are its positives, from the row's label li and the columns' labels lj.
struct Cols {
  ok: vec4<bool>,
  pos: vec4<bool>,
}

fn cols(i: u32, li: i32, j: vec4<u32>, lj: vec4<i32>) -> Cols {
  var ok = j < vec4<u32>(p.cols);
  if (p.exclude_self == 1u) { ok &= j != vec4<u32>(i); }
  let pos = ok & (lj == vec4<i32>(li));
  if (p.exclude_pos == 1u) { ok &= !pos; }
  return Cols(ok, pos);
}

fn colLabels(j: vec4<u32>) -> vec4<i32> {
  return vec4<i32>(label(j.x, p.cols), label(j.y, p.cols), label(j.z, p.cols), label(j.w, p.cols));
}

// Columns j as seen by a split ending at col_end: those past it are moved past p.cols (they do not count).
fn inSplit(j: vec4<u32>, col_end: u32) -> vec4<u32> {
  return select(vec4<u32>(p.cols), j, j < vec4<u32>(col_end));
}

// The logits cache (p.cache = 1): [rows][cols rounded up to a tile], f32 scaled logits, written by stats, read by
// grad instead of recomputing them; vec4 q of row i holds columns 4q .. 4q + 3.
@group(0) @binding(5) var<storage, read_write> cache_out: array<vec4<f32>>;
@group(0) @binding(7) var<storage, read> cache_in: array<vec4<f32>>;

fn cacheAt(i: u32, j: u32) -> u32 {
  let tc = 8u * WGC;
  return i * ((p.cols + tc - 1u) / tc * tc / 4u) + j / 4u;
}

// Stores the block of rows i .. i + 7 and columns j .. j + 7 (rows past the end are not cached).
fn storeLogits(i: u32, j: u32, s: Block) {
  for (var r = 0u; r < 4u; r++) {
    let top = cacheAt(i + r, j);
    let bottom = cacheAt(i + r + 4u, j);
    if (i + r < p.rows) {
      cache_out[top] = s.s00[r];
      cache_out[top + 1u] = s.s01[r];
    }
    if (i + r + 4u < p.rows) {
      cache_out[bottom] = s.s10[r];
      cache_out[bottom + 1u] = s.s11[r];
    }
  }
}

fn loadLogits(i: u32, j: u32) -> Block {
  var s: Block;
  for (var r = 0u; r < 4u; r++) {
    let top = cacheAt(min(i + r, p.rows - 1u), j);
    let bottom = cacheAt(min(i + r + 4u, p.rows - 1u), j);
    s.s00[r] = cache_in[top];
    s.s01[r] = cache_in[top + 1u];
    s.s10[r] = cache_in[bottom];
    s.s11[r] = cache_in[bottom + 1u];
  }
  return s;
}

// ---- forward -----------------------------------------------------------------------------------------------

@group(0) @binding(4) var<storage, read_write> partial: array<vec4<f32>>;

// Row state (running max m, Σexp(s − m), Σ positive logits, #positives) merged with 4 more logits.
fn absorb(st: vec4<f32>, s: vec4<f32>, c: Cols) -> vec4<f32> {
  let sv = select(vec4<f32>(NEG), s, c.ok);
  let m = max(st.x, max(max(sv.x, sv.y), max(sv.z, sv.w)));
  let e = select(vec4<f32>(0.0), expNaN4(sv - m), c.ok);
  let one = vec4<f32>(1.0);
  return vec4<f32>(m, st.y * exp(st.x - m) + dot(e, one), st.z + dot(select(vec4<f32>(0.0), s, c.pos), one),
                   st.w + dot(select(vec4<f32>(0.0), one, c.pos), one));
}

fn combine(a: vec4<f32>, b: vec4<f32>) -> vec4<f32> {
  let m = max(a.x, b.x);
  return vec4<f32>(m, a.y * exp(a.x - m) + b.y * exp(b.x - m), a.z + b.z, a.w + b.w);
}

struct Place {
  row0: u32,
  split_slot: u32,  // 0 .. split_par − 1
  col_begin: u32,
  col_end: u32,
  chunk: u32,       // grad: which 16·WGC dims
}

fn place(w: u32) -> Place {
  let tile = p.tile0 + w % p.row_tiles;
  let slot = (w / p.row_tiles) % p.split_par;
  let split = p.seq * p.split_par + slot;
  let begin = min(split * p.cols_per_split, p.cols);
  return Place(tile * 8u * WGR, slot, begin, min(begin + p.cols_per_split, p.cols), w / (p.row_tiles * p.split_par));
}

// A workgroup's walk over its split: the column tiles by their first column, steps of a tile; or with SYM (A = B,
// so s_ij = s_ji) bands t, steps of 1: the tile pair (I, J = (I + t) mod T) of T tiles gives row tile I its
// columns J and, for t > 0, row tile J its columns I (the block transposed), so bands 0 .. T/2 cover every pair
// once (with T even, band T/2 meets each pair twice and only I < T/2 takes it). Row tile J's share goes to
// slot split_par + (I − tile0) of the partials (stats: one such slot per invocation row of I, WGR in all): in
// one dispatch no two workgroups share that slot of a row, and any dispatch may reach it first, so these slots
// start empty and every write merges.
struct Walk {
  begin: u32,
  end: u32,
  step: u32,
  col_end: u32,  // columns from here on do not count (inSplit)
}

fn walkOf(at: Place) -> Walk {
  if (!SYM) { return Walk(at.col_begin, at.col_end, 8u * WGC, at.col_end); }
  let tiles = (p.rows + 8u * WGR - 1u) / (8u * WGR);
  let bands = tiles / 2u + 1u;
  let begin = min((p.seq * p.split_par + at.split_slot) * p.cols_per_split, bands);
  var end = min(begin + p.cols_per_split, bands);
  if (tiles % 2u == 0u && at.row0 / (8u * WGR) >= tiles / 2u) { end = min(end, tiles / 2u); }
  return Walk(begin, end, 1u, p.cols);
}

// The first column of the walk's step x.
fn walkCol0(at: Place, x: u32) -> u32 {
  if (!SYM) { return x; }
  let tiles = (p.rows + 8u * WGR - 1u) / (8u * WGR);
  return (at.row0 / (8u * WGR) + x) % tiles * 8u * WGC;
}

// With SYM, row tile J's slot from the workgroup of row tile I (see Walk).
fn transposedSlot(at: Place) -> u32 {
  return p.split_par + at.row0 / (8u * WGR) - p.tile0;
}

// Row states of the 8 columns of an invocation's block over its 8 rows (with SYM: the rows of the column tile,
// whose logits against the row tile are the block transposed), rows i + r labelled li[r].
fn columnStates(s: Block, i: u32, li: array<i32, 8>, j0: vec4<u32>, l0: vec4<i32>, j1: vec4<u32>,
                l1: vec4<i32>) -> array<vec4<f32>, 8> {
  let rows0 = i + vec4<u32>(0u, 1u, 2u, 3u);
  let rows1 = rows0 + vec4<u32>(4u);
  let lr0 = vec4<i32>(li[0], li[1], li[2], li[3]);
  let lr1 = vec4<i32>(li[4], li[5], li[6], li[7]);
  let t00 = transpose(s.s00);
  let t01 = transpose(s.s01);
  let t10 = transpose(s.s10);
  let t11 = transpose(s.s11);
  let empty = vec4<f32>(NEG, 0.0, 0.0, 0.0);
  var cs: array<vec4<f32>, 8>;
  for (var c = 0u; c < 4u; c++) {
    cs[c] = absorb(absorb(empty, t00[c], cols(j0[c], l0[c], rows0, lr0)), t10[c], cols(j0[c], l0[c], rows1, lr1));
    cs[c + 4u] =
      absorb(absorb(empty, t01[c], cols(j1[c], l1[c], rows0, lr0)), t11[c], cols(j1[c], l1[c], rows1, lr1));
  }
  return cs;
}

// Stats of the row tile against its split (see Walk).
@compute @workgroup_size(WGC, WGR)
fn stats(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(local_invocation_id) lid3: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let at = place(linear(wg, nwg));
  let tx = lid3.x;
  let ty = lid3.y;
  let i = at.row0 + 8u * ty;
  let tr = 8u * WGR;
  var st: array<vec4<f32>, 8>;  // the 8 rows' states
  var li: array<i32, 8>;
  for (var r = 0u; r < 8u; r++) {
    st[r] = vec4<f32>(NEG, 0.0, 0.0, 0.0);
    li[r] = label(i + r, p.rows);
  }
  let walk = walkOf(at);
  for (var x = walk.begin; x < walk.end; x += walk.step) {
    let col0 = walkCol0(at, x);
    let s = logits(at.row0, col0, ty, tx, lid);
    if (p.cache == 1u) { storeLogits(i, col0 + 8u * tx, s); }
    let j0 = inSplit(col0 + 8u * tx + vec4<u32>(0u, 1u, 2u, 3u), walk.col_end);
    let j1 = inSplit(col0 + 8u * tx + vec4<u32>(4u, 5u, 6u, 7u), walk.col_end);
    let l0 = colLabels(j0);
    let l1 = colLabels(j1);
    for (var r = 0u; r < 4u; r++) {
      st[r] = absorb(absorb(st[r], s.s00[r], cols(i + r, li[r], j0, l0)), s.s01[r], cols(i + r, li[r], j1, l1));
      let h = r + 4u;
      st[h] = absorb(absorb(st[h], s.s10[r], cols(i + h, li[h], j0, l0)), s.s11[r], cols(i + h, li[h], j1, l1));
    }
    if (SYM && x > 0u) {
      // Each invocation row's states of the column tile's rows go to a slot of its own, past no barrier (a
      // barrier is a coroutine switch per SIMD group on a CPU adapter; see Walk for why no two workgroups share).
      let cs = columnStates(s, i, li, j0, l0, j1, l1);
      let slot = (p.split_par + (at.row0 / tr - p.tile0) * WGR + ty) * p.rows;
      for (var c = 0u; c < 8u; c++) {
        let row = col0 + 8u * tx + c;
        if (row < p.rows) { partial[slot + row] = combine(partial[slot + row], cs[c]); }
      }
    }
  }
  // Combine the WGC invocations that share each row, then merge into the earlier dispatches' partial.
  for (var r = 0u; r < 8u; r++) { smem[tx * tr + 8u * ty + r] = st[r]; }
  workgroupBarrier();
  if (lid >= tr) { return; }
  let row = at.row0 + lid;
  if (row >= p.rows) { return; }
  var total = smem[lid];
  for (var c = 1u; c < WGC; c++) { total = combine(total, smem[c * tr + lid]); }
  let slot = at.split_slot * p.rows + row;
  if (p.seq > 0u) { total = combine(partial[slot], total); }
  partial[slot] = total;
}

// emptyPartials: partial[k] = "no column yet" for k < p.rows (SYM's column slots).   bindings: 4 partial
@compute @workgroup_size(WG)
fn emptyPartials(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) lid: u32) {
  let k = linear(wg, nwg) * WG + lid;
  if (k < p.rows) { partial[k] = vec4<f32>(NEG, 0.0, 0.0, 0.0); }
}

@group(0) @binding(1) var<storage, read> partial_in: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> rowstats: array<vec2<f32>>;
@group(0) @binding(3) var<storage, read_write> sums: array<vec2<f32>>;

@compute @workgroup_size(WG)
fn finish(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) lid: u32) {
  let w = linear(wg, nwg);
  let row = w * WG + lid;
  var rowLoss = vec2<f32>(0.0);
  if (row < p.rows) {
    var st = partial_in[row];
    for (var k = 1u; k < p.split_par; k++) { st = combine(st, partial_in[k * p.rows + row]); }
    let logSum = select(log(max(st.y, 1e-38)), st.y, isNan(st.y));
    let valid = st.w > 0.0;
    rowstats[row] = vec2<f32>(st.x + logSum, select(0.0, 1.0 / st.w, valid));
    // (max − positives' mean) + log Σ, not lse − mean: rounding lse = max + log Σ to f32 first would cost
    // ulp(max), 4e-6 at 1/temperature = 100, where a well-separated row's whole loss may be 1e-2.
    rowLoss = select(vec2<f32>(0.0), vec2<f32>((st.x - st.z / st.w) + logSum, 1.0), valid);
  }
  red[lid] = rowLoss;
  for (var s = WG / 2u; s > 0u; s /= 2u) {
    workgroupBarrier();
    if (lid < s) { red[lid] += red[lid + s]; }
  }
  if (lid == 0u) { sums[w] = red[0]; }
}

@group(0) @binding(3) var<storage, read_write> loss: array<f32>;

@compute @workgroup_size(WG)
fn rowDot(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) lid: u32) {
  let row = linear(wg, nwg);
  if (row >= p.rows) { return; }
  var acc = 0.0;
  for (var q = lid; q < p.dim4; q += WG) { acc += dot(xa[row * p.dim4 + q], xb[row * p.dim4 + q]); }
  let v = workgroupSum(lid, acc);
  if (lid == 0u) { loss[row] = -v; }
}

@compute @workgroup_size(WG)
fn rowDotRows(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
  let row = linear(wg, nwg) * WG + lid;
  if (row >= p.rows) { return; }
  var acc = 0.0;
  for (var q = 0u; q < p.dim4; q++) { acc += dot(xa[row * p.dim4 + q], xb[row * p.dim4 + q]); }
  loss[row] = -acc;
}

@group(0) @binding(1) var<storage, read> sums_in: array<vec2<f32>>;

// p.cols: how many sums (each a workgroup's rows: a loop of p.cols / WG); p.rows: where (1/#valid, #valid) goes.
@compute @workgroup_size(WG)
fn total(@builtin(local_invocation_index) lid: u32) {
  var acc = vec2<f32>(0.0);
  for (var k = lid; k < p.cols; k += WG) { acc += sums_in[k]; }
  red[lid] = acc;
  for (var s = WG / 2u; s > 0u; s /= 2u) {
    workgroupBarrier();
    if (lid < s) { red[lid] += red[lid + s]; }
  }
  if (lid == 0u) {
    let t = red[0];
    let scale = select(0.0, 1.0 / t.y, t.y > 0.0);
    loss[0] = t.x * scale;
    rowstats[p.rows] = vec2<f32>(scale, t.y);
  }
}

// ---- backward ----------------------------------------------------------------------------------------------

@group(0) @binding(4) var<storage, read> rowstats_a: array<vec2<f32>>;
@group(0) @binding(5) var<storage, read> rowstats_b: array<vec2<f32>>;
@group(0) @binding(6) var<storage, read_write> dpart: array<vec4<f32>>;

// What the backward knows of 4 columns' own rows (p.col_term): lse, 1/#positives, whether they have stats.
struct ColStats {
  lse: vec4<f32>,
  inv: vec4<f32>,
  ok: vec4<bool>,
}

fn colStats(j: vec4<u32>) -> ColStats {
  if (p.col_term == 0u) { return ColStats(); }
  let k = min(j, vec4<u32>(p.col_stats - 1u));
  let s0 = rowstats_b[k.x];
  let s1 = rowstats_b[k.y];
  let s2 = rowstats_b[k.z];
  let s3 = rowstats_b[k.w];
  let inv = vec4<f32>(s0.y, s1.y, s2.y, s3.y);
  return ColStats(vec4<f32>(s0.x, s1.x, s2.x, s3.x), inv, (j < vec4<u32>(p.col_stats)) & (inv > vec4<f32>(0.0)));
}

// dL/ds_ij for row i (its label li, its rowstats st) against 4 columns j (labels lj): for each loss row that
// holds s_ij (row i: p.row_term; row j, as s_ji: p.col_term), (softmax − [positive]/#positives) / #valid;
// 0 for rows without positives.
fn weights(i: u32, li: i32, st: vec2<f32>, s: vec4<f32>, j: vec4<u32>, lj: vec4<i32>, cb: ColStats,
           scale_a: f32, scale_b: f32) -> vec4<f32> {
  let c = cols(i, li, j, lj);
  var w = vec4<f32>(0.0);
  // The softmax where s_ij is in the log-sum-exp, the positives' share where it is a positive (both, unless
  // exclude_pos keeps the positives out of the log-sum-exp).
  let zero = vec4<f32>(0.0);
  if (p.row_term == 1u) {
    let wa = (select(zero, exp(s - st.x), c.ok) - select(zero, vec4<f32>(st.y), c.pos)) * scale_a;
    w += select(zero, wa, vec4<bool>(st.y > 0.0));
  }
  if (p.col_term == 1u) {
    let wb = (select(zero, exp(s - cb.lse), c.ok) - select(zero, cb.inv, c.pos)) * scale_b;
    w += select(zero, wb, cb.ok);
  }
  return w;
}

// Row r's 4 values times b: the outer product added into a 4-row × 4-dim block (column r = row r).
fn outer(w: vec4<f32>, b: vec4<f32>) -> mat4x4<f32> {
  return mat4x4<f32>(b * w.x, b * w.y, b * w.z, b * w.w);
}

// Adds block o (column r = row i + r, dims of vec4 q) into the partial gradient.
fn storeGrad(i: u32, q: u32, slot: u32, o: mat4x4<f32>) {
  if (q >= p.dim4) { return; }
  for (var r = 0u; r < 4u; r++) {
    if (i + r < p.rows) {
      let k = (slot * p.rows + i + r) * p.dim4 + q;
      let v = o[r] * p.inv_temp;
      dpart[k] = select(v, dpart[k] + v, p.seq > 0u || SYM);  // SYM's slots start at zero (see Walk)
    }
  }
}

// The weights of 4 rows (a quadrant's columns r) against 4 columns, transposed: column c over the 4 rows.
fn quadWeights(i: u32, li: array<i32, 8>, st: array<vec2<f32>, 8>, h: u32, s: mat4x4<f32>, j: vec4<u32>,
               lj: vec4<i32>, cb: ColStats, scale_a: f32, scale_b: f32) -> mat4x4<f32> {
  return transpose(mat4x4<f32>(
    weights(i + h, li[h], st[h], s[0], j, lj, cb, scale_a, scale_b),
    weights(i + h + 1u, li[h + 1u], st[h + 1u], s[1], j, lj, cb, scale_a, scale_b),
    weights(i + h + 2u, li[h + 2u], st[h + 2u], s[2], j, lj, cb, scale_a, scale_b),
    weights(i + h + 3u, li[h + 3u], st[h + 3u], s[3], j, lj, cb, scale_a, scale_b)));
}

// Where the weights go between computing and summing them: workgroup memory, one step at a time, or on CPU
// adapters (DIRECT) the workgroup's region of scratch, every step of its walk (see grad).
@group(0) @binding(9) var<storage, read_write> wscratch: array<vec4<f32>>;

fn putWeight(k: u32, v: vec4<f32>) {
  if (DIRECT) {
    wscratch[k] = v;
  } else {
    smem[k] = v;
  }
}

fn weightAt(k: u32) -> vec4<f32> {
  if (DIRECT) { return wscratch[k]; }
  return smem[k];
}

// Vec4s of one layout of a step's weights: TR × TC floats.
fn step4() -> u32 {
  return 16u * WGR * WGC;
}

// Stages an invocation's weights from `base` on: column c of lo0 | hi0 (two vec4s) at slot
// (8·lead + c)·stride + lane, of lo1 | hi1 at (8·lead + 4 + c)·stride + lane. By column of the block (lead tx,
// over its rows) for Σ_j W_ij b_j; transposed, by row (lead ty) for Σ_i W_ij a_i.
fn stageWeights(lo0: mat4x4<f32>, hi0: mat4x4<f32>, lo1: mat4x4<f32>, hi1: mat4x4<f32>, lead: u32, lane: u32,
                stride: u32, base: u32) {
  for (var c = 0u; c < 4u; c++) {
    let at0 = base + 2u * ((8u * lead + c) * stride + lane);
    let at1 = base + 2u * ((8u * lead + 4u + c) * stride + lane);
    putWeight(at0, lo0[c]);
    putWeight(at0 + 1u, hi0[c]);
    putWeight(at1, lo1[c]);
    putWeight(at1 + 1u, hi1[c]);
  }
}

// o += W · B over the step's TC columns from col0: the invocation's 8 rows (ty) × 4 vec4s of dims from q0.
fn rowSum(o: ptr<function, array<mat4x4<f32>, 8>>, base: u32, col0: u32, ty: u32, q0: u32) {
  let last = p.dim4 - 1u;
  for (var c = 0u; c < 8u * WGC; c++) {
    let top = weightAt(base + 2u * (c * WGR + ty));
    let bottom = weightAt(base + 2u * (c * WGR + ty) + 1u);
    let b = min(col0 + c, p.cols - 1u) * p.dim4;
    for (var q = 0u; q < 4u; q++) {
      let bq = xb[b + min(q0 + q, last)];
      (*o)[q] += outer(top, bq);
      (*o)[q + 4u] += outer(bottom, bq);
    }
  }
}

// With SYM, the column tile's rows from col0: dU_J += Wᵀ · U_I, the weights by row of I (two vec4s over 8
// columns), the invocation taking columns 8·ty .. 8·ty + 7 (TR = TC) over the same dims, added to its slot.
fn transposedSum(at: Place, base: u32, col0: u32, ty: u32, q0: u32) {
  let last = p.dim4 - 1u;
  var ot = array<mat4x4<f32>, 8>();  // explicitly zeroed: naga once zeroed a loop's local var only once
  for (var r = 0u; r < 8u * WGR; r++) {
    let left = weightAt(base + 2u * (r * WGC + ty));
    let right = weightAt(base + 2u * (r * WGC + ty) + 1u);
    for (var q = 0u; q < 4u; q++) {
      let aq = rowA(at.row0 + r, min(q0 + q, last));
      ot[q] += outer(left, aq);
      ot[q + 4u] += outer(right, aq);
    }
  }
  for (var q = 0u; q < 4u; q++) {
    storeGrad(col0 + 8u * ty, q0 + q, transposedSlot(at), ot[q]);
    storeGrad(col0 + 8u * ty + 4u, q0 + q, transposedSlot(at), ot[q + 4u]);
  }
}

// DIRECT: the scratch of workgroup w's step x, both layouts (by column, then by row): [workgroup][step][2·step4].
fn scratchAt(w: u32, walk: Walk, x: u32) -> u32 {
  let steps = select(p.cols_per_split / (8u * WGC), p.cols_per_split, SYM);
  return (w * steps + (x - walk.begin) / walk.step) * 2u * step4();
}

struct RowsOf {
  labels: array<i32, 8>,
  stats: array<vec2<f32>, 8>,
}

// Labels and rowstats of rows i .. i + 7.
fn rowsOf(i: u32) -> RowsOf {
  var rows: RowsOf;
  for (var r = 0u; r < 8u; r++) {
    rows.labels[r] = label(i + r, p.rows);
    rows.stats[r] = rowstats_a[min(i + r, p.rows - 1u)];
  }
  return rows;
}

// The invocation's weights at step x of the walk, against the step's columns from col0: a Block whose quadrants
// are transposed (column c holds column c's weights over the 4 rows, as quadWeights gives them).
fn stepWeights(at: Place, walk: Walk, col0: u32, tx: u32, ty: u32, lid: u32, rows: RowsOf) -> Block {
  let i = at.row0 + 8u * ty;
  var s: Block;
  if (p.cache == 1u) {
    s = loadLogits(i, col0 + 8u * tx);
  } else {
    s = logits(at.row0, col0, ty, tx, lid);
  }
  let j0 = inSplit(col0 + 8u * tx + vec4<u32>(0u, 1u, 2u, 3u), walk.col_end);
  let j1 = inSplit(col0 + 8u * tx + vec4<u32>(4u, 5u, 6u, 7u), walk.col_end);
  let l0 = colLabels(j0);
  let l1 = colLabels(j1);
  let c0 = colStats(j0);
  let c1 = colStats(j1);
  let sa = rowstats_a[p.rows].x;
  let sb = rowstats_b[p.col_stats].x;
  return Block(quadWeights(i, rows.labels, rows.stats, 0u, s.s00, j0, l0, c0, sa, sb),
               quadWeights(i, rows.labels, rows.stats, 0u, s.s01, j1, l1, c1, sa, sb),
               quadWeights(i, rows.labels, rows.stats, 4u, s.s10, j0, l0, c0, sa, sb),
               quadWeights(i, rows.labels, rows.stats, 4u, s.s11, j1, l1, c1, sa, sb));
}

@compute @workgroup_size(WGC, WGR)
fn grad(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_id) lid3: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let w = linear(wg, nwg);
  let at = place(w);
  let tx = lid3.x;
  let ty = lid3.y;
  let i = at.row0 + 8u * ty;
  let q0 = (at.chunk * WGC + tx) * 4u;  // the invocation's 4 vec4s of dims: q0 .. q0 + 3
  var o: array<mat4x4<f32>, 8>;  // o[4h + q]: rows 4h .. 4h + 3 × dims of vec4 q0 + q
  let walk = walkOf(at);
  let rows = rowsOf(i);
  if (DIRECT) {
    // Every step's weights to scratch, then one barrier and every step's sums: llvmpipe keeps what a kernel
    // with a barrier in a loop loads in memory instead of registers (forward + backward ~1.08x slower with a
    // step at a time through workgroup memory; the same two loops as two dispatches lost it to cache misses).
    for (var x = walk.begin; x < walk.end; x += walk.step) {
      let q = stepWeights(at, walk, walkCol0(at, x), tx, ty, lid, rows);
      let base = scratchAt(w, walk, x);
      stageWeights(q.s00, q.s10, q.s01, q.s11, tx, ty, WGR, base);
      if (SYM && x > 0u) {
        let by_row = base + step4();
        stageWeights(transpose(q.s00), transpose(q.s01), transpose(q.s10), transpose(q.s11), ty, tx, WGC, by_row);
      }
    }
    workgroupBarrier();
    for (var x = walk.begin; x < walk.end; x += walk.step) {
      let col0 = walkCol0(at, x);
      let base = scratchAt(w, walk, x);
      rowSum(&o, base, col0, ty, q0);
      if (SYM && x > 0u) { transposedSum(at, base + step4(), col0, ty, q0); }
    }
  } else {
    for (var x = walk.begin; x < walk.end; x += walk.step) {
      let col0 = walkCol0(at, x);
      let q = stepWeights(at, walk, col0, tx, ty, lid, rows);
      stageWeights(q.s00, q.s10, q.s01, q.s11, tx, ty, WGR, 0u);
      workgroupBarrier();
      rowSum(&o, 0u, col0, ty, q0);
      workgroupBarrier();  // the next weights overwrite these
    }
  }
  for (var q = 0u; q < 4u; q++) {
    storeGrad(i, q0 + q, at.split_slot, o[q]);
    storeGrad(i + 4u, q0 + q, at.split_slot, o[q + 4u]);
  }
}

@group(0) @binding(1) var<storage, read> dpart_in: array<f32>;
@group(0) @binding(2) var<storage, read> u_in: array<f32>;
@group(0) @binding(3) var<storage, read> norms_in: array<f32>;
@group(0) @binding(4) var<storage, read> g: array<f32>;
@group(0) @binding(5) var<storage, read_write> dx1: array<f32>;
@group(0) @binding(6) var<storage, read_write> dx2: array<f32>;

fn du(row: u32, d: u32) -> f32 {
  var v = 0.0;
  for (var k = 0u; k < p.split_par; k++) { v += dpart_in[(k * p.rows + row) * 4u * p.dim4 + d]; }
  return v * g[0] * p.scale;
}

// The gradient through u = x / max(|x|, eps): (du − u (u·du)) / |x|, or du / eps where |x| ≤ eps. Rows as in
// normalize (`normalizeGrad`) and normalizeRows (`normalizeGradRows`).

// Writes dims first, first + step, ... of row `row`'s gradient, given u·du.
fn writeGrad(row: u32, dot_: f32, first: u32, step: u32) {
  let n = norms_in[row];
  for (var d = first; d < p.dim; d += step) {
    var v = du(row, d);
    if (NORMALIZE) {
      v = select(v / p.eps, (v - u_in[row * 4u * p.dim4 + d] * dot_) / n, n > p.eps);
    }
    if (row < p.n1) {
      dx1[row * p.dim + d] = v;
    } else {
      dx2[(row - p.n1) * p.dim + d] = v;
    }
  }
}

@compute @workgroup_size(WG)
fn normalizeGrad(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) lid: u32) {
  let row = linear(wg, nwg);
  if (row >= p.rows) { return; }
  var dot_ = 0.0;
  if (NORMALIZE) {
    for (var d = lid; d < p.dim; d += WG) { dot_ += u_in[row * 4u * p.dim4 + d] * du(row, d); }
  }
  writeGrad(row, workgroupSum(lid, dot_), lid, WG);
}

@compute @workgroup_size(WG)
fn normalizeGradRows(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                     @builtin(local_invocation_index) lid: u32) {
  let row = linear(wg, nwg) * WG + lid;
  if (row >= p.rows) { return; }
  var dot_ = 0.0;
  if (NORMALIZE) {
    for (var d0 = 0u; d0 < p.dim; d0 += 8u) {
      var block = 0.0;
      for (var d = d0; d < min(d0 + 8u, p.dim); d++) { block += u_in[row * 4u * p.dim4 + d] * du(row, d); }
      dot_ += block;
    }
  }
  writeGrad(row, dot_, 0u, 1u);
}
