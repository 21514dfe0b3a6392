// ceiling.wgsl: the benchmark's peak f32 rate. Each invocation runs eight independent vec4 chains of fused
// multiply-adds x ← x·m + c, held in registers, four per chain and round (`fma4`), for `rounds` rounds (a uniform,
// so nothing folds away; the bench keeps it far below llvmpipe's 65,535-iteration loop cap), and stores their sum
// so none is dead. Eight chains cover the FMA latency on CPUs and GPUs alike. Four to an assignment because
// llvmpipe blends every assignment to a loop-carried variable with the loop's exec mask: with one FMA per
// assignment the blends bound the rate, 1.4x below this (two ran 1.3x, eight 1.1x: the chains serialise). One
// round is 128 FMAs = 256 FLOPs per invocation.
// Bindings: 0 params (uniform), 1 out (storage, one f32 per invocation).
// `copy_peak` is the other reference: dst = src by a kernel, PER consecutive vec4s per invocation (1: the
// coalesced layout GPUs want; 4: each SIMD lane of a CPU adapter on a 64-byte line of its own). The bench runs
// both and keeps the faster, so a row's fraction of copyBufferToBuffer's bandwidth can be read against what any
// kernel that reads and writes storage once per vec4 reaches on the adapter.
// Bindings: 1 src, 2 dst (storage, p.vec4s vec4s, a multiple of PER).
struct Params {
  rounds: u32,
  m: f32,   // m < 1, so every chain converges to c / (1 - m): no overflow, no denormals
  c: f32,
  vec4s: u32,  // copy_peak: vec4s to copy
}

override WG: u32 = 64;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;

fn fma4(x: vec4<f32>, m: vec4<f32>, c: vec4<f32>) -> vec4<f32> {
  return fma(fma(fma(fma(x, m, c), m, c), m, c), m, c);
}

@compute @workgroup_size(WG)
fn fma_peak(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) lid: u32) {
  let i = (wg.y * nwg.x + wg.x) * WG + lid;
  let m = vec4<f32>(p.m);
  let c = vec4<f32>(p.c);
  let seed = vec4<f32>(f32(i & 255u), 1.0, 2.0, 3.0);
  var x0 = seed;
  var x1 = seed + 1.0;
  var x2 = seed + 2.0;
  var x3 = seed + 3.0;
  var x4 = seed + 4.0;
  var x5 = seed + 5.0;
  var x6 = seed + 6.0;
  var x7 = seed + 7.0;
  for (var r = 0u; r < p.rounds; r++) {
    x0 = fma4(x0, m, c);
    x1 = fma4(x1, m, c);
    x2 = fma4(x2, m, c);
    x3 = fma4(x3, m, c);
    x4 = fma4(x4, m, c);
    x5 = fma4(x5, m, c);
    x6 = fma4(x6, m, c);
    x7 = fma4(x7, m, c);
  }
  let s = (x0 + x1) + (x2 + x3) + (x4 + x5) + (x6 + x7);
  out[i] = s.x + s.y + s.z + s.w;
}

override PER: u32 = 1;

@group(0) @binding(1) var<storage, read> src: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> dst: array<vec4<f32>>;

@compute @workgroup_size(WG)
fn copy_peak(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) lid: u32) {
  let first = ((wg.y * nwg.x + wg.x) * WG + lid) * PER;
  if (first >= p.vec4s) { return; }
  for (var k = 0u; k < PER; k++) { dst[first + k] = src[first + k]; }
}
