// matmul.wgsl: C[b] = op(A)[b] · op(B)[b], f32, with batch broadcasting and transposes read through strides.
// One workgroup per (BM x BN output tile, batch item, K slice). The slice's tiles of op(A) [BM x BK] and
// op(B) [BK x BN] are staged in workgroup memory; each invocation accumulates a TM x TN register block.
// It writes C [batch, M, N], or with several K slices its partial product into P [slices, batch, M, N]
// (matmul.ts sums P over slices).   bindings: 1 A, 2 B, 3 C or P
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
  _pad: u32,
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

@compute @workgroup_size(TX, TY)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32, @builtin(local_invocation_id) loc: vec3<u32>) {
  let tiles_n = (p.n + BN - 1u) / BN;
  let tiles_m = (p.m + BM - 1u) / BM;
  var rest = wg.y * nwg.x + wg.x;
  let tn = rest % tiles_n;
  rest /= tiles_n;
  let tm = rest % tiles_m;
  rest /= tiles_m;
  let item = rest % p.batch;
  let slice = rest / p.batch;
  if (slice >= p.slices) { return; }

  var a_off = 0u;
  var b_off = 0u;
  var digits = item;
  for (var d = i32(p.batch_rank) - 1; d >= 0; d--) {
    let dim = p.batch_shape[d / 4][d % 4];
    a_off += (digits % dim) * p.a_batch[d / 4][d % 4];
    b_off += (digits % dim) * p.b_batch[d / 4][d % 4];
    digits /= dim;
  }

  let row0 = tm * BM;
  let col0 = tn * BN;
  let k_begin = slice * p.k_chunk;
  let k_end = min(p.k, k_begin + p.k_chunk);
  var acc: array<array<vec4<f32>, TN / 4>, TM>;
  for (var k0 = k_begin; k0 < k_end; k0 += BK) {
    for (var i = lid; i < BM * BK; i += WG) {
      let r = i / BK;
      let kk = i % BK;
      var v = 0.0;
      if (row0 + r < p.m && k0 + kk < k_end) { v = a[a_off + (row0 + r) * p.a_rs + (k0 + kk) * p.a_cs]; }
      tile_a[(kk * BM + r) / 4u][r % 4u] = v;
    }
    for (var i = lid; i < BK * BN; i += WG) {
      let kk = i / BN;
      let col = i % BN;
      var v = 0.0;
      if (col0 + col < p.n && k0 + kk < k_end) { v = b[b_off + (k0 + kk) * p.b_rs + (col0 + col) * p.b_cs]; }
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

  let out_base = (slice * p.batch + item) * p.m * p.n;
  for (var r = 0u; r < TM; r++) {
    let row = row0 + loc.y * TM + r;
    for (var j = 0u; j < TN; j++) {
      let col = col0 + loc.x * TN + j;
      if (row < p.m && col < p.n) { c[out_base + row * p.n + col] = acc[r][j / 4][j % 4]; }
    }
  }
}
