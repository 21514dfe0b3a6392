// shape.wgsl: the strided copy behind transpose, slice, slice's backward (pad into zeros) and concat.
// Invocation i (of `count`; the workgroup index spread over x and y) takes k, the row-major multi-index of i
// in `dims`, and copies one 4-byte element as raw bits (so every dtype, NaN payloads included):
//   dst[dst_offset + Σ k[d]·dst_stride[d]] = src[src_offset + Σ k[d]·src_stride[d]]
// transpose: dims = output shape, src strides permuted; slice: src_offset = the start corner;
// pad and concat: dst strides of the larger output, dst_offset = where the piece goes.
// Bindings: 0 params (uniform), 1 src (read), 2 dst (read_write); either may be a window of a larger buffer,
// the offsets being relative to the window.
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

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<u32>;
@group(0) @binding(2) var<storage, read_write> dst: array<u32>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
  let i = (wg.y * nwg.x + wg.x) * WG + lid;
  if (i >= p.count) { return; }
  var rest = i;
  var s = p.src_offset;
  var d = p.dst_offset;
  for (var a = i32(p.rank) - 1; a >= 0; a--) {
    let n = p.dims[a / 4][a % 4];
    let k = rest % n;
    rest /= n;
    s += k * p.src_stride[a / 4][a % 4];
    d += k * p.dst_stride[a / 4][a % 4];
  }
  dst[d] = src[s];
}
