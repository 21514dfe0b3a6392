// random.wgsl: fill a buffer with a constant, or with counter-based random numbers.
// Element i (counted from the tensor's first element, `first` being the offset of this window) of a
// tensor drawn with a 64-bit seed is philox(counter = (i, STREAM, 0, 0), key = (seed_lo, seed_hi)):
//   main, MODE 1: uniform [0, 1) from word 0; one invocation per element
//   main, MODE 2: standard normal by Box-Muller from words 0 and 1
//   fill: the constant `value` (raw 32 bits, so any dtype), PER vec4s an invocation (a window holds whole
//         vec4s, so the last may run past `count`; a CPU adapter pays per access, not per byte)
// Bindings: 0 params (uniform), 1 out (storage, the window being written).
//! include lib/philox.wgsl

struct Params {
  count: u32,   // elements in this window
  first: u32,   // index of the window's first element in the tensor
  seed_lo: u32,
  seed_hi: u32,
  value: u32,
}

override WG: u32 = 256;
override MODE: u32 = 1;
override PER: u32 = 1;
const STREAM = 0u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> out: array<u32>;
@group(0) @binding(1) var<storage, read_write> out4: array<vec4<u32>>;

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
