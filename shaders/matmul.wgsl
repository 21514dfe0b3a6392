// matmul.wgsl: C[b] = op(A)[b] · op(B)[b], f32, with batch broadcasting and transposes read through strides.
// One workgroup per (BM x BN output tile, batch item, K slice). The slice's tiles of op(A) [BM x BK] and
// op(B) [BK x BN] are staged in workgroup memory; each invocation accumulates a TM x TN register block.
// It writes C [batch, M, N], or with several K slices its partial product into P [slices, batch, M, N]
// (matmul.ts sums P over slices).   bindings: 1 A, 2 B, 3 C or P
// Four entries: `main` (above; any shape), and for CPU adapters with dims multiples of 4 `direct` (no workgroup
// memory) and `slab` (A in a uniform window, B packed into column panels by `packB`); see their comments below.
// Element (r, c) of op(A) in batch item b is A[a_batch + r * a_rs + c * a_cs] (B likewise), so a transpose
// only swaps the two strides. Loop cap: an invocation runs k_chunk / BK tile steps of BM*BK/WG + BK*BN/WG
// loads plus the BK-deep product (unrolled by the compiler; ~400 iterations per step even if not).
struct Params {
  m: u32,
  n: u32,
  k: u32,
  batch: u32,       // output batch items (product of the broadcast batch dims)
  k_chunk: u32,     // K per slice, a multiple of BK
  slices: u32,
  batch_rank: u32,
  row0: u32,        // slab: the first row of A in this dispatch's window
  a_rs: u32,        // element strides of op(A) along its rows (M) and columns (K)
  a_cs: u32,
  b_rs: u32,        // element strides of op(B) along its rows (K) and columns (N)
  b_cs: u32,
  batch_shape: array<vec4<u32>, 2>,  // output batch dims, padded with 1
  a_batch: array<vec4<u32>, 2>,      // element strides of A over the batch dims, 0 where broadcast
  b_batch: array<vec4<u32>, 2>,
}

const TM = 8u;   // register block: TM rows x TN columns per invocation (function arrays need constant sizes)
const TN = 16u;  // a multiple of 4: columns are held as vec4
override TX: u32 = 8u;   // invocations across a tile's columns
override TY: u32 = 8u;   // invocations down a tile's rows
override BK: u32 = 8u;   // K depth of a staged tile
override WG = TX * TY;
override BM = TY * TM;
override BN = TX * TN;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> c: array<f32>;

var<workgroup> tile_a: array<vec4<f32>, BK * BM / 4>;  // [BK][BM]: a vec4 holds TM consecutive rows
var<workgroup> tile_b: array<vec4<f32>, BK * BN / 4>;  // [BK][BN]: a vec4 holds TN consecutive columns

// Which output tile, batch item and K slice workgroup w computes (tiles of BM × BN), and the element offsets of
// that batch item in A and B.
struct Place {
  tm: u32,
  tn: u32,
  item: u32,
  slice: u32,
  a_off: u32,
  b_off: u32,
}

fn place(w: u32) -> Place {
  let tiles_n = (p.n + BN - 1u) / BN;
  let tiles_m = (p.m + BM - 1u) / BM;
  var rest = w;
  let tn = rest % tiles_n;
  rest /= tiles_n;
  let tm = rest % tiles_m;
  rest /= tiles_m;
  let item = rest % p.batch;
  var a_off = 0u;
  var b_off = 0u;
  var digits = item;
  for (var d = i32(p.batch_rank) - 1; d >= 0; d--) {
    let dim = p.batch_shape[d / 4][d % 4];
    a_off += (digits % dim) * p.a_batch[d / 4][d % 4];
    b_off += (digits % dim) * p.b_batch[d / 4][d % 4];
    digits /= dim;
  }
  return Place(tm, tn, item, rest / p.batch, a_off, b_off);
}

@compute @workgroup_size(TX, TY)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32, @builtin(local_invocation_id) loc: vec3<u32>) {
  let at = place(wg.y * nwg.x + wg.x);
  if (at.slice >= p.slices) { return; }

  let row0 = at.tm * BM;
  let col0 = at.tn * BN;
  let k_begin = at.slice * p.k_chunk;
  let k_end = min(p.k, k_begin + p.k_chunk);
  var acc: array<array<vec4<f32>, TN / 4>, TM>;
  for (var k0 = k_begin; k0 < k_end; k0 += BK) {
    for (var i = lid; i < BM * BK; i += WG) {
      let r = i / BK;
      let kk = i % BK;
      var v = 0.0;
      if (row0 + r < p.m && k0 + kk < k_end) { v = a[at.a_off + (row0 + r) * p.a_rs + (k0 + kk) * p.a_cs]; }
      tile_a[(kk * BM + r) / 4u][r % 4u] = v;
    }
    for (var i = lid; i < BK * BN; i += WG) {
      let kk = i / BN;
      let col = i % BN;
      var v = 0.0;
      if (col0 + col < p.n && k0 + kk < k_end) { v = b[at.b_off + (k0 + kk) * p.b_rs + (col0 + col) * p.b_cs]; }
      tile_b[i / 4u][i % 4u] = v;
    }
    workgroupBarrier();
    for (var kk = 0u; kk < BK; kk++) {
      var av: array<vec4<f32>, TM / 4>;
      var bv: array<vec4<f32>, TN / 4>;
      for (var i = 0u; i < TM / 4; i++) { av[i] = tile_a[(kk * BM + loc.y * TM) / 4u + i]; }
      for (var j = 0u; j < TN / 4; j++) { bv[j] = tile_b[(kk * BN + loc.x * TN) / 4u + j]; }
      for (var r = 0u; r < TM; r++) {
        for (var j = 0u; j < TN / 4; j++) { acc[r][j] = fma(vec4<f32>(av[r / 4][r % 4]), bv[j], acc[r][j]); }
      }
    }
    workgroupBarrier();
  }

  let out_base = (at.slice * p.batch + at.item) * p.m * p.n;
  for (var r = 0u; r < TM; r++) {
    let row = row0 + loc.y * TM + r;
    for (var j = 0u; j < TN; j++) {
      let col = col0 + loc.x * TN + j;
      if (row < p.m && col < p.n) { c[out_base + row * p.n + col] = acc[r][j / 4][j % 4]; }
    }
  }
}

// ---- direct: for CPU adapters ------------------------------------------------------------------------------
// Each invocation (the same TM × TN register block as `main`) reads the TM × 4 block of op(A) and the 4 × TN
// block of op(B) of every 4-deep K step straight from storage as vec4s: no workgroup memory, no barriers. A CPU adapter pays per access, not per byte (llvmpipe
// loops over the SIMD lanes for each one) and pays each barrier as a coroutine switch; its caches do what the
// staging does on a GPU. Needs M, N and K multiples of 4, so a vec4 is wholly inside or outside the matrix and
// every offset is a multiple of 4. TRANS_A / TRANS_B say which way the vec4s run: along K, or along M (N).
override TRANS_A: bool = false;
override TRANS_B: bool = false;

@group(0) @binding(1) var<storage, read> a4: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> b4: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> c4: array<vec4<f32>>;

// op(B)[k + kk, col .. col + 3] for kk = 0 .. 3, B's batch item at element b_off: four vec4s along N, or with
// TRANS_B four along K regrouped. Zeros past N.
fn bBlock(b_off: u32, k: u32, col: u32) -> array<vec4<f32>, 4> {
  var v: array<vec4<f32>, 4>;
  if (TRANS_B) {
    for (var c = 0u; c < 4u; c++) {
      let ok = col + c < p.n;
      let t = select(vec4<f32>(0.0), b4[select(0u, (b_off + (col + c) * p.b_cs + k) / 4u, ok)], ok);
      v[0][c] = t.x;
      v[1][c] = t.y;
      v[2][c] = t.z;
      v[3][c] = t.w;
    }
  } else {
    let ok = col < p.n;
    for (var kk = 0u; kk < 4u; kk++) {
      v[kk] = select(vec4<f32>(0.0), b4[select(0u, (b_off + (k + kk) * p.b_rs + col) / 4u, ok)], ok);
    }
  }
  return v;
}

@compute @workgroup_size(TX, TY)
fn direct(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_id) loc: vec3<u32>) {
  let at = place(wg.y * nwg.x + wg.x);
  if (at.slice >= p.slices) { return; }
  let row0 = at.tm * BM + loc.y * TM;
  let col0 = at.tn * BN + loc.x * TN;
  let k_begin = at.slice * p.k_chunk;
  let k_end = min(p.k, k_begin + p.k_chunk);
  var acc: array<array<vec4<f32>, TN / 4>, TM>;  // acc[r][j]: row r, columns 4j .. 4j + 3
  for (var k = k_begin; k < k_end; k += 4u) {
    var av: array<vec4<f32>, TM>;  // av[r][kk] = op(A)[row0 + r, k + kk]
    if (TRANS_A) {
      for (var kk = 0u; kk < 4u; kk++) {
        for (var i = 0u; i < TM; i += 4u) {
          let ok = row0 + i < p.m;
          let v = select(vec4<f32>(0.0), a4[select(0u, (at.a_off + (k + kk) * p.a_cs + row0 + i) / 4u, ok)], ok);
          av[i][kk] = v.x;
          av[i + 1u][kk] = v.y;
          av[i + 2u][kk] = v.z;
          av[i + 3u][kk] = v.w;
        }
      }
    } else {
      for (var r = 0u; r < TM; r++) {
        let ok = row0 + r < p.m;
        av[r] = select(vec4<f32>(0.0), a4[select(0u, (at.a_off + (row0 + r) * p.a_rs + k) / 4u, ok)], ok);
      }
    }
    var bv: array<array<vec4<f32>, TN / 4>, 4>;  // bv[kk][j] = op(B)[k + kk, col0 + 4j .. + 3]
    for (var j = 0u; j < TN / 4u; j++) {
      let block = bBlock(at.b_off, k, col0 + 4u * j);
      for (var kk = 0u; kk < 4u; kk++) { bv[kk][j] = block[kk]; }
    }
    for (var kk = 0u; kk < 4u; kk++) {
      for (var r = 0u; r < TM; r++) {
        for (var j = 0u; j < TN / 4u; j++) { acc[r][j] = fma(vec4<f32>(av[r][kk]), bv[kk][j], acc[r][j]); }
      }
    }
  }
  let out_base = (at.slice * p.batch + at.item) * p.m * p.n;
  for (var r = 0u; r < TM; r++) {
    for (var j = 0u; j < TN / 4u; j++) {
      let row = row0 + r;
      let col = col0 + 4u * j;
      if (row < p.m && col < p.n) { c4[(out_base + row * p.n + col) / 4u] = acc[r][j]; }
    }
  }
}

// ---- slab: for CPU adapters, one batch item, A not transposed (matmul.ts transposes it first), K ≤ 1,024 -
// One dispatch per window of A's rows, bound as a 64 KiB uniform window (rows row0 onwards, K apart; 16,384
// floats hold 16,384 / K rows, blocks of SM of them). Every invocation reads the same element of A at the same
// step: llvmpipe gathers a uniform buffer read without the per-lane exec-mask and bounds tests of a storage read,
// about a quarter of its cost. Each vec4 of B feeds 4·SM multiply-adds. Each invocation computes an SM × SN
// block, WG invocations side by side along N: workgroup w covers the PW = WG·SN columns of panel w % panels in
// row block w / panels. B comes packed by `packB` as panels [ceil(N / PW)][K][PW] (zeros past N), so a
// workgroup's reads run through memory in order: read in place, each K step of B is N floats on, a new page every
// few steps, where a CPU's prefetcher stops and every read waits on memory.
// Rows past M read the window's slack and are not stored.   bindings: 1 A window, 2 packed B, 3 C
const SM = 16u;
const SN = 8u;

@group(0) @binding(1) var<uniform> a_slab: array<vec4<f32>, 4096>;

@compute @workgroup_size(WG)
fn slab(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
  let w = wg.y * nwg.x + wg.x;
  let panels = (p.n + WG * SN - 1u) / (WG * SN);
  let panel = w % panels;
  let row0 = w / panels * SM;  // the block's first row in the window
  let col0 = (panel * WG + lid) * SN;
  if (col0 >= p.n || p.row0 + row0 >= p.m) { return; }
  let b_at = panel * p.k * (WG * SN / 4u) + lid * (SN / 4u);  // vec4 of packed B at K step 0
  var acc: array<array<vec4<f32>, SN / 4>, SM>;  // acc[r][j]: row row0 + r, columns col0 + 4j .. + 3
  for (var k = 0u; k < p.k; k += 4u) {
    var bv: array<array<vec4<f32>, SN / 4>, 4>;  // bv[kk][j] = op(B)[k + kk, col0 + 4j .. + 3]
    for (var kk = 0u; kk < 4u; kk++) {
      for (var j = 0u; j < SN / 4u; j++) { bv[kk][j] = b4[b_at + (k + kk) * (WG * SN / 4u) + j]; }
    }
    for (var r = 0u; r < SM; r++) {
      let av = a_slab[((row0 + r) * p.k + k) / 4u];  // A[p.row0 + row0 + r, k .. k + 3]
      for (var kk = 0u; kk < 4u; kk++) {
        for (var j = 0u; j < SN / 4u; j++) { acc[r][j] = fma(vec4<f32>(av[kk]), bv[kk][j], acc[r][j]); }
      }
    }
  }
  for (var r = 0u; r < SM; r++) {
    for (var j = 0u; j < SN / 4u; j++) {
      let row = p.row0 + row0 + r;
      let col = col0 + 4u * j;
      if (row < p.m && col < p.n) { c4[(row * p.n + col) / 4u] = acc[r][j]; }
    }
  }
}

// packB: one invocation per 4 × 4 block of op(B) (bBlock: 4 K steps by 4 columns, zeros past N), stored as 4
// vec4s of the panels [ceil(N / PW)][K][PW], PW = WG·SN (run with slab's WG and direct's TRANS_B).
// bindings: 2 B, 3 packed B (1 unused)
@compute @workgroup_size(WG)
fn packB(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(local_invocation_index) lid: u32) {
  let i = (wg.y * nwg.x + wg.x) * WG + lid;
  let pw4 = WG * SN / 4u;
  let steps = p.k / 4u;
  if (i >= (p.n + 4u * pw4 - 1u) / (4u * pw4) * steps * pw4) { return; }
  let q = i % pw4;
  let k = i / pw4 % steps * 4u;
  let panel = i / (pw4 * steps);
  let block = bBlock(0u, k, (panel * pw4 + q) * 4u);
  for (var kk = 0u; kk < 4u; kk++) { c4[(panel * p.k + k + kk) * pw4 + q] = block[kk]; }
}
