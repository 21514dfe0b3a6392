// reduce.wgsl: one pass of a row reduction. The input is viewed as [rows, len]: a row's kept-dims index and an
// element's reduced-dims index each map to an element offset through (shape, stride) lists, so reduced axes
// need not be innermost (strided read, no transposing copy). A row is cut into chunks of seg·ITEMS elements
// and a chunk into `seg` parts: part `lane` folds elements lane, lane + seg, ... (at most ITEMS; neighbouring
// invocations read neighbouring elements) into one partial, numbered (row·chunks + chunk)·seg + lane. The host
// repeats passes over the partials ([rows, chunks·seg], contiguous) until one value per row remains (len ≤
// ITEMS: seg = 1, one part per row). No tree in workgroup memory: barriers cost a CPU adapter a coroutine
// switch per SIMD group (llvmpipe ran sums 3x slower with one), and a GPU hides the extra passes.
// A part folds in blocks of BLOCK, so a value meets ≤ BLOCK + ITEMS / BLOCK roundings per pass, not ITEMS; a
// block is a loop of constant trip count with an early exit, which compilers unroll, so a CPU adapter has the
// block's reads in flight together (sums 1.13x, column sums 1.18x on llvmpipe).
// No invocation loops more than ITEMS·8 times (offsetOf's loop included).
// Every accumulator is a vec2: OP 0 sum (x), OP 1 max (x), OP 2 logsumexp as (running max m, Σ exp(v − m)),
// merged like online softmax; the last pass writes m + log(s), or with SPLIT m and log(s) apart (m at row r,
// log(s) at p.half + r) for softmax and logSoftmax: (x − m) − log(s) is exact to f32 where x − (m + log s)
// carries the rounding of m + log s, ulp(m) (2e-3 at |m| = 3e4); with NAN_AT_INF log(s) is NaN for m = +∞. OP 3 argmax as (value, reduced index as an
// f32, exact below 2^24): the larger value wins, NaN above all, the lower index among equals (PyTorch's first
// occurrence); the last pass writes the index's i32 bits. NEGATE reads −x in the first pass: min and argmin are
// max and argmax of −x (min's last pass scales by −1).
// A tensor over maxStorageBufferBindingSize is read one window at a time: elements [first, first + count) are
// bound at binding 1 and a dispatch folds parts [part0, part0 + nparts), reading only offsets inside the
// window. Windows cut between chunks (contiguous rows, CONTIGUOUS: no offset lists, no window test) write
// partial `part`; windows that each see every part (strided rows) write partial part·nwin + win, and the next
// pass folds those too.
// With VEC4 (a first pass over contiguous rows whose length is a multiple of 4) lengths, offsets and windows
// count vec4s, and a part folds ITEMS vec4s: a quarter of the loads, which is what a CPU adapter pays for.
// With ROWS_FAST (strided rows whose kept dims include the innermost) neighbouring invocations take the same
// part of neighbouring rows, which lie side by side in memory; the partials keep their numbering. With KEPT4
// as well (one window, one reduced dim, the innermost kept dim a multiple of 4) an invocation takes the part
// of 4 neighbouring rows, reading them as one vec4 per step, and writes its partials as the input lies,
// [parts, rows] (partial q of row r at q·rows + r), so neighbouring invocations write neighbouring words and
// the next pass is again one of rows side by side (written [rows, parts], each SIMD group's 32 partials fell
// on 32 cache lines: [4096, 4096] over axis 0 ran 3.5x slower on llvmpipe).
// Bindings: 0 params (uniform), 1 x (storage, read, bound in whole vec4s; pairs when PAIRS_IN), 2 out (storage;
// pairs when PAIRS_OUT, two halves when SPLIT, i32 bits for argmax).
//! include lib/nan.wgsl
//! include lib/logsumexp.wgsl

struct Params {
  len: u32,      // elements per row
  chunks: u32,   // chunks per row
  seg: u32,      // parts per chunk
  first: u32,    // input window: element offset bound at binding 1, and its element count
  count: u32,
  part0: u32,    // parts folded by this dispatch
  nparts: u32,
  nwin: u32,     // partials per part, and the one this dispatch writes
  win: u32,
  krank: u32,    // ranks of the kept and reduced (shape, stride) lists
  rrank: u32,
  scale: f32,    // multiplies the result on the last pass (mean = sum · 1/len)
  ninf: f32,     // −∞ from the host: WGSL has no infinity literal
  half: u32,     // SPLIT: where the log(s) half of the output starts
  lists: array<vec4<u32>, 8>,  // kept shape, kept strides, reduced shape, reduced strides: 8 u32 each
}

override WG: u32 = 256;
override ITEMS: u32 = 64;
override OP: u32 = 0;
override PAIRS_IN: bool = false;
override PAIRS_OUT: bool = false;
override CONTIGUOUS: bool = false;
override VEC4: bool = false;  // contiguous rows of a multiple of 4: every index above counts vec4s
override ROWS_FAST: bool = false;
override KEPT4: bool = false;
// KEPT4 over one kept dim whose length is not a multiple of 4: each step reads the 4 rows' elements one by one
// (they do not start on a vec4), and the last group holds fewer than 4 rows.
override UNALIGNED: bool = false;
override SPLIT: bool = false;
override NAN_AT_INF: bool = false;  // SPLIT: log(s) is NaN where m = +∞ (logSBeside)
override NEGATE: bool = false;
const BLOCK = 8u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<vec4<f32>>;  // vec4s: llvmpipe pays per access, not per byte
@group(0) @binding(2) var<storage, read_write> out: array<f32>;

// Entry d of list `list` of p.lists (0 kept shape, 1 kept stride, 2 reduced shape, 3 reduced stride).
fn dimOf(list: u32, d: u32) -> u32 {
  return p.lists[2u * list + d / 4u][d % 4u];
}

// Element offset of index i over the kept (KEPT) or reduced (REDUCED) dims; the outermost dim needs no
// division (i < size), so a rank-1 list (contiguous rows, or one strided axis) costs a multiply.
const KEPT = 0u;
const REDUCED = 2u;
fn offsetOf(i: u32, rank: u32, dims: u32) -> u32 {
  var rest = i;
  var off = 0u;
  for (var d = rank - 1u; d > 0u && d < 8u; d--) {
    let n = dimOf(dims, d);
    off += (rest % n) * dimOf(dims + 1u, d);
    rest /= n;
  }
  return off + rest * dimOf(dims + 1u, 0u);
}

fn identity() -> vec2<f32> {
  if (OP == 3u) { return vec2<f32>(p.ninf, -p.ninf); }  // any element's index is lower
  return select(vec2<f32>(p.ninf, 0.0), vec2<f32>(0.0), OP == 0u);
}

// argmax's merge: whether (value, index) b beats a.
fn beats(b: vec2<f32>, a: vec2<f32>) -> bool {
  if (isNan(b.x) || isNan(a.x)) { return isNan(b.x) && (!isNan(a.x) || b.y < a.y); }
  return b.x > a.x || (b.x == a.x && b.y < a.y);
}

fn combine(a: vec2<f32>, b: vec2<f32>) -> vec2<f32> {
  switch OP {
    case 0u: { return vec2<f32>(a.x + b.x, 0.0); }
    case 1u: { return vec2<f32>(maxNaN(a.x, b.x), 0.0); }
    case 3u: { return select(a, b, beats(b, a)); }
    default: { return mergeLse(a, b); }
  }
}

// Value v of the input at reduced index j as an accumulator: logsumexp's m = v, s = 1; argmax's (v, j); sum and
// max ignore y.
fn item(v: f32, j: u32) -> vec2<f32> {
  return vec2<f32>(select(v, -v, NEGATE), select(1.0, f32(j), OP == 3u));
}

// Input i, at reduced index j, as an accumulator: one value, a pair (PAIRS_IN), or with VEC4 the 4 values of
// vec4 i (reduced indices 4j .. 4j + 3) folded pairwise.
fn load(i: u32, j: u32) -> vec2<f32> {
  if (VEC4) {
    let v = x[i];
    let k = 4u * j;
    return combine(combine(item(v.x, k), item(v.y, k + 1u)), combine(item(v.z, k + 2u), item(v.w, k + 3u)));
  }
  if (PAIRS_IN) {
    let v = x[i / 2u];
    return select(v.xy, v.zw, i % 2u == 1u);
  }
  return item(x[i / 4u][i % 4u], j);
}

// Writes partial (or result) o.
fn store(o: u32, acc: vec2<f32>) {
  if (PAIRS_OUT) {
    out[2u * o] = acc.x;
    out[2u * o + 1u] = acc.y;
  } else if (SPLIT) {
    out[o] = acc.x;
    out[p.half + o] = select(log(acc.y), logSBeside(acc.x, acc.y), NAN_AT_INF);
  } else if (OP == 2u) {
    out[o] = acc.x + log(acc.y);
  } else if (OP == 3u) {
    out[o] = bitcast<f32>(i32(acc.y));
  } else {
    out[o] = acc.x * p.scale;
  }
}

// Part q (of p.chunks·p.seg per row) of rows row .. row + 3 of `rows` (KEPT4): the 4 rows are neighbours in
// memory, so each step reads one vec4 for all of them (UNALIGNED: four elements), at the reduced dim's stride.
fn fold4(row: u32, q: u32, rows: u32) {
  let start = (q / p.seg) * p.seg * ITEMS + q % p.seg;
  let n = select(0u, min(ITEMS, (p.len - start + p.seg - 1u) / p.seg), start < p.len);
  let base = offsetOf(row, p.krank, KEPT);
  let stride = dimOf(REDUCED + 1u, 0u);
  // Four states as named values, not an array indexed by a loop variable, which llvmpipe would keep in memory.
  var a0 = identity();
  var a1 = identity();
  var a2 = identity();
  var a3 = identity();
  for (var b = 0u; b < n; b += BLOCK) {
    var b0 = identity();
    var b1 = identity();
    var b2 = identity();
    var b3 = identity();
    for (var kk = 0u; kk < BLOCK; kk++) {
      if (b + kk >= n) { break; }
      let j = start + (b + kk) * p.seg;
      let o = base + j * stride;
      var v = x[o / 4u];
      if (UNALIGNED) {  // past the last row a read is clamped or 0, and never stored
        v = vec4<f32>(x[o / 4u][o % 4u], x[(o + 1u) / 4u][(o + 1u) % 4u], x[(o + 2u) / 4u][(o + 2u) % 4u],
                      x[(o + 3u) / 4u][(o + 3u) % 4u]);
      }
      b0 = combine(b0, item(v.x, j));
      b1 = combine(b1, item(v.y, j));
      b2 = combine(b2, item(v.z, j));
      b3 = combine(b3, item(v.w, j));
    }
    a0 = combine(a0, b0);
    a1 = combine(a1, b1);
    a2 = combine(a2, b2);
    a3 = combine(a3, b3);
  }
  let o = q * rows + row;
  store(o, a0);
  if (row + 1u < rows) { store(o + 1u, a1); }
  if (row + 2u < rows) { store(o + 2u, a2); }
  if (row + 3u < rows) { store(o + 3u, a3); }
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
  let i = (wg.y * nwg.x + wg.x) * WG + lid;
  let per_row = p.chunks * p.seg;
  let rows = p.nparts / per_row;
  if (KEPT4) {
    let groups = (rows + 3u) / 4u;
    if (i < groups * per_row) { fold4(4u * (i % groups), i / groups, rows); }
    return;
  }
  if (i >= p.nparts) { return; }
  let part = select(p.part0 + i, (i % rows) * per_row + i / rows, ROWS_FAST);
  let row = part / per_row;
  let start = (part % per_row / p.seg) * p.seg * ITEMS + part % p.seg;  // reduced index
  let n = select(0u, min(ITEMS, (p.len - start + p.seg - 1u) / p.seg), start < p.len);
  let base = offsetOf(row, p.krank, KEPT);
  var acc = identity();
  for (var b = 0u; b < n; b += BLOCK) {
    var block = identity();
    for (var kk = 0u; kk < BLOCK; kk++) {
      if (b + kk >= n) { break; }
      let j = start + (b + kk) * p.seg;
      if (CONTIGUOUS) {
        block = combine(block, load(base + j - p.first, j));
      } else {
        let off = base + offsetOf(j, p.rrank, REDUCED);
        if (off >= p.first && off - p.first < p.count) { block = combine(block, load(off - p.first, j)); }
      }
    }
    acc = combine(acc, block);
  }
  store(part * p.nwin + p.win, acc);
}
