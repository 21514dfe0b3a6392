// random.wgsl: fill a buffer with a constant, or with counter-based random numbers.
// Element i (counted from the tensor's first element, `first` being the offset of this window) of a
// tensor drawn with a 64-bit seed is philox(counter = (i, STREAM, 0, 0), key = (seed_lo, seed_hi)):
//   main, MODE 1: uniform [0, 1) from word 0; one invocation per element
//   main, MODE 2: standard normal by Box-Muller from words 0 and 1
//   fill: the constant `value` (raw 32 bits, so any dtype), PER vec4s an invocation (a window holds whole
//         vec4s, so the last may run past `count`; a CPU adapter pays per access, not per byte)
//   dropout: out = x · keep · scale, element i kept where philoxUniform(word i % 4 of
//         philox((i / 4, DROPOUT_STREAM, 0, 0), key)) ≥ `value` (p as f32 bits): one draw per vec4 (`first` is
//         a multiple of 4). Its own stream, so a dropout and a rand of one seed are independent. The same
//         call on the upstream gradient is its backward: the mask is drawn again, never stored.
// Bindings: 0 params (uniform), 1 out (storage, the window being written), 2 x (dropout's input window).
//! include lib/philox.wgsl

struct Params {
  count: u32,   // elements in this window
  first: u32,   // index of the window's first element in the tensor
  seed_lo: u32,
  seed_hi: u32,
  value: u32,
  scale: f32,   // dropout: 1 / (1 − p), 0 for p = 1
}

override WG: u32 = 256;
override MODE: u32 = 1;
override PER: u32 = 1;
const STREAM = 0u;
const DROPOUT_STREAM = 1u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> out: array<u32>;
@group(0) @binding(1) var<storage, read_write> out4: array<vec4<u32>>;
@group(0) @binding(1) var<storage, read_write> outf4: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> x4: array<vec4<f32>>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
  let i = (wg.y * nwg.x + wg.x) * WG + lid;
  if (i >= p.count) { return; }
  let r = philox(vec4<u32>(p.first + i, STREAM, 0u, 0u), vec2<u32>(p.seed_lo, p.seed_hi));
  if (MODE == 1u) {
    out[i] = bitcast<u32>(philoxUniform(r.x));
  } else {
    out[i] = bitcast<u32>(philoxNormal(r.x, r.y));
  }
}

@compute @workgroup_size(WG)
fn fill(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
  let first = ((wg.y * nwg.x + wg.x) * WG + lid) * PER;
  let vec4s = (p.count + 3u) / 4u;
  for (var k = 0u; k < PER; k++) {
    if (first + k < vec4s) { out4[first + k] = vec4<u32>(p.value); }
  }
}

@compute @workgroup_size(WG)
fn dropout(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) lid: u32) {
  let q = (wg.y * nwg.x + wg.x) * WG + lid;
  if (q >= (p.count + 3u) / 4u) { return; }
  let r = philox(vec4<u32>(p.first / 4u + q, DROPOUT_STREAM, 0u, 0u), vec2<u32>(p.seed_lo, p.seed_hi));
  let u = vec4<f32>(philoxUniform(r.x), philoxUniform(r.y), philoxUniform(r.z), philoxUniform(r.w));
  // A multiply, not a select, so a dropped NaN stays NaN as in PyTorch.
  outf4[q] = x4[q] * select(vec4<f32>(0.0), vec4<f32>(p.scale), u >= vec4<f32>(bitcast<f32>(p.value)));
}
