// shape.wgsl: the strided copy behind transpose, slice, slice's backward (pad into zeros) and concat.
// Element i (of `count`) has k, the row-major multi-index of i in `dims`, and is copied as raw 4-byte bits (so
// every dtype, NaN payloads included):
//   dst[dst_offset + Σ k[d]·dst_stride[d]] = src[src_offset + Σ k[d]·src_stride[d]]
// Invocation t (the workgroup index spread over x and y) copies elements RUN·t .. RUN·t + RUN − 1, finding the
// multi-index (a division per dim) for the first only and stepping along the innermost dim from there: CPU
// adapters have no vector integer division (on llvmpipe a [4095, 4097] transpose ran 2.5x faster, slices and
// 3-D permutations 1.3x).
// transpose: dims = output shape, src strides permuted; slice: src_offset = the start corner;
// pad and concat: dst strides of the larger output, dst_offset = where the piece goes.
// Bindings: 0 params (uniform), 1 src (read), 2 dst (read_write); either may be a window of a larger buffer,
// the offsets being relative to the window.
// main4: the same copy a vec4 at a time, every count, dim, stride and offset in vec4s (the innermost dim
// contiguous on both sides).
// transpose4: the last two dims of whole tensors swapped, [batch, R, C] -> [batch, C, R] with R and C multiples
// of 4 (count = 4×4 blocks, dims[0].xy = R / 4, C / 4): one invocation per block, 4 vec4 rows read and written
// as 4 vec4 columns, 8 accesses per 16 elements where `main` makes 32 (each a loop over the SIMD lanes on a CPU
// adapter), and no per-element index arithmetic. Neighbouring invocations read neighbouring vec4s of the 4
// input rows (on llvmpipe 1.3x to 1.7x faster than writing neighbouring vec4s of the output rows).
// tile: `main` where the innermost dim moves, in 4×4 blocks of elements. The host orders the dims as
// [V, U, outer...]: V the dim whose src stride is 1, U the output's innermost (dst stride 1), so that the
// kernel reads both at constant offsets of p; count = blocks, outer index × U blocks × V blocks, V fastest.
// Each invocation copies its block (edge blocks cut short) from 4 runs of 4 source elements to 4 runs of 4
// destination elements: as many accesses as `main`, but a SIMD group reads 4 source runs of 32 elements where
// `main` reads one element of each of 32 rows far apart (llvmpipe: a [4095, 4097] transpose 2.6x to 3.8x
// faster, NCHW → NHWC 4.5x, MAE's patchify 3.6x to 4.3x). At a power-of-two row length it runs 2.5x slower
// than transpose4 ([4096, 4096]), its reads aliasing in the cache: aligned matrix transposes keep transpose4.
// shift4: `main` where the innermost dim is contiguous on both sides but the vec4s do not line up (a slice from
// an odd column, a concat of odd widths): for rows of n elements, count = rows × ⌊n / 4⌋, and invocation t writes
// whole destination vec4 t % ⌊n / 4⌋ of row t / ⌊n / 4⌋ (if the row holds it whole) from the two source vec4s
// its elements straddle, shifted into place: 3 accesses per 4 elements where `main` makes 8 (llvmpipe: a slice
// from column 1 and a concat of widths 1,023 and 1,025 2.5x to 3x faster). shiftEdges (count = rows × 6) then
// copies the up to 3 elements at each end of a row that no whole vec4 holds, one an invocation, so no two
// invocations write one vec4.
struct Params {
  count: u32,
  rank: u32,
  src_offset: u32,
  dst_offset: u32,
  dims: array<vec4<u32>, 2>,
  src_stride: array<vec4<u32>, 2>,
  dst_stride: array<vec4<u32>, 2>,
}

override WG: u32 = 256;
const RUN = 4u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<u32>;
@group(0) @binding(2) var<storage, read_write> dst: array<u32>;

// Where invocation i's element comes from and goes to: (src index, dst index).
fn locate(i: u32) -> vec2<u32> {
  var rest = i;
  var at = vec2<u32>(p.src_offset, p.dst_offset);
  for (var a = i32(p.rank) - 1; a >= 0; a--) {
    let n = p.dims[a / 4][a % 4];
    let k = rest % n;
    rest /= n;
    at += k * vec2<u32>(p.src_stride[a / 4][a % 4], p.dst_stride[a / 4][a % 4]);
  }
  return at;
}

// Length of the innermost dim.
fn innermost() -> u32 {
  let last = p.rank - 1u;
  return p.dims[last / 4u][last % 4u];
}

// The source and destination of the RUN elements from `first` (main4: vec4s), past `count` marked by ~0u.
fn run(first: u32) -> array<vec2<u32>, RUN> {
  let last = p.rank - 1u;
  let n = innermost();
  let step = vec2<u32>(p.src_stride[last / 4u][last % 4u], p.dst_stride[last / 4u][last % 4u]);
  var out: array<vec2<u32>, RUN>;
  var at = locate(first);
  var k = first % n;  // innermost index
  for (var j = 0u; j < RUN; j++) {
    if (k == n) {
      at = locate(first + j);
      k = 0u;
    }
    out[j] = select(vec2<u32>(~0u), at, first + j < p.count);
    at += step;
    k++;
  }
  return out;
}

// The invocation's index over the dispatch's grid (workgroups laid x first, then y).
fn invocation(wg: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
  return (wg.y * nwg.x + wg.x) * WG + lid;
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
  let first = invocation(wg, nwg, lid) * RUN;
  if (first >= p.count) { return; }
  let at = run(first);
  for (var j = 0u; j < RUN; j++) {
    if (at[j].x != ~0u) { dst[at[j].y] = src[at[j].x]; }
  }
}

@group(0) @binding(1) var<storage, read> src4: array<vec4<u32>>;
@group(0) @binding(2) var<storage, read_write> dst4: array<vec4<u32>>;

@compute @workgroup_size(WG)
fn main4(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(local_invocation_index) lid: u32) {
  let first = invocation(wg, nwg, lid) * RUN;
  if (first >= p.count) { return; }
  let at = run(first);
  for (var j = 0u; j < RUN; j++) {
    if (at[j].x != ~0u) { dst4[at[j].y] = src4[at[j].x]; }
  }
}

@compute @workgroup_size(WG)
fn transpose4(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
  let i = invocation(wg, nwg, lid);
  if (i >= p.count) { return; }
  let rows4 = p.dims[0].x;  // input rows / 4 = output vec4s per row
  let cols4 = p.dims[0].y;  // input vec4s per row = output rows / 4
  let per = rows4 * cols4;  // blocks per matrix
  let block = i % per;
  let ob = block % cols4;   // output rows 4·ob .. + 3 = input vec4 column ob
  let oc = block / cols4;   // output vec4 column oc = input rows 4·oc .. + 3
  let at = i / per * 4u * per;
  let r = at + 4u * oc * cols4 + ob;
  let r0 = src4[r];
  let r1 = src4[r + cols4];
  let r2 = src4[r + 2u * cols4];
  let r3 = src4[r + 3u * cols4];
  let w = at + 4u * ob * rows4 + oc;
  dst4[w] = vec4<u32>(r0.x, r1.x, r2.x, r3.x);
  dst4[w + rows4] = vec4<u32>(r0.y, r1.y, r2.y, r3.y);
  dst4[w + 2u * rows4] = vec4<u32>(r0.z, r1.z, r2.z, r3.z);
  dst4[w + 3u * rows4] = vec4<u32>(r0.w, r1.w, r2.w, r3.w);
}

@compute @workgroup_size(WG)
fn tile(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
  let i = invocation(wg, nwg, lid);
  if (i >= p.count) { return; }
  let nv = p.dims[0].x;
  let nu = p.dims[0].y;
  let v_blocks = (nv + 3u) / 4u;
  let per = v_blocks * ((nu + 3u) / 4u);  // blocks per outer index
  let block = i % per;
  let v0 = 4u * (block % v_blocks);
  let u0 = 4u * (block / v_blocks);
  // The outer multi-index: a division per dim but the outermost (integer division is slow on CPU adapters).
  var rest = i / per;
  var at = vec2<u32>(p.src_offset, p.dst_offset);
  for (var d = p.rank - 1u; d > 2u; d--) {
    let n = p.dims[d / 4u][d % 4u];
    at += (rest % n) * vec2<u32>(p.src_stride[d / 4u][d % 4u], p.dst_stride[d / 4u][d % 4u]);
    rest /= n;
  }
  if (p.rank > 2u) { at += rest * vec2<u32>(p.src_stride[0].z, p.dst_stride[0].z); }
  let src_u = p.src_stride[0].y;
  let dst_v = p.dst_stride[0].x;
  for (var a = 0u; a < 4u; a++) {
    for (var b = 0u; b < 4u; b++) {
      if (u0 + a < nu && v0 + b < nv) {
        dst[at.y + (v0 + b) * dst_v + u0 + a] = src[at.x + v0 + b + (u0 + a) * src_u];
      }
    }
  }
}

@compute @workgroup_size(WG)
fn shift4(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) lid: u32) {
  let i = invocation(wg, nwg, lid);
  if (i >= p.count) { return; }
  let n = innermost();
  let per = n / 4u;
  let row = locate(i / per * n);         // the row's first element
  let slot = (row.y + 3u) / 4u + i % per;  // destination vec4
  if (4u * slot + 4u > row.y + n) { return; }
  let s = row.x + 4u * slot - row.y;       // source element of its first element
  let a = src4[s / 4u];
  let b = src4[select(s / 4u + 1u, s / 4u, s % 4u == 0u)];
  let k = s % 4u;
  dst4[slot] = select(select(select(a, vec4<u32>(a.yzw, b.x), k == 1u), vec4<u32>(a.zw, b.xy), k == 2u),
                      vec4<u32>(a.w, b.xyz), k == 3u);
}

@compute @workgroup_size(WG)
fn shiftEdges(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
  let i = invocation(wg, nwg, lid);
  if (i >= p.count) { return; }
  let n = innermost();
  let row = locate(i / 6u * n);
  let head = min((row.y + 3u) / 4u * 4u - row.y, n);             // elements before the first whole vec4
  let tail = max((row.y + n) / 4u * 4u - row.y, head);           // where the elements after the last start
  let k = i % 6u;
  let t = select(tail + k - 3u, k, k < 3u);
  if (select(t < n, t < head, k < 3u)) { dst[row.y + t] = src[row.x + t]; }
}
