// optim.wgsl: optimiser steps, in place, with PyTorch's update rules (CPU reference in src/ref/optim.ts). w is a
// parameter, g its gradient, the rest per-element state of the same shape. Each invocation updates one vec4 of
// a window of the parameter (`count` elements), the workgroup index spread over x and y. Tensors are bound as
// array<vec4<f32>>, rounded up to whole vec4s (pool buffers are 256-byte multiples): padding lanes update values
// nobody reads, so there is no tail path.
//   axpby:      w = a·w + b·g: SGD without momentum (a = 1 − lr·wd, b = −lr), and the EMA update of BYOL's and
//               MoCo's target network from the online one in g (a = momentum, b = 1 − momentum)
//                                                                         bindings: 1 w, 2 g
//   sgd:        d = g + wd·w; momentum buffer b = d on the first step, else momentum·b + (1 − dampening)·d;
//               w −= lr · (d + momentum·b with NESTEROV, else b). Also LARS for the parameters it leaves out
//               (no decay, no trust ratio: b = momentum·b + g from b = 0)     bindings: 1 w, 2 g, 3 b
//   adam:       g += wd·w (Adam's L2), or w ·= 1 − lr·wd first (DECOUPLED: AdamW); m = β1·m + (1 − β1)·g,
//               v = β2·v + (1 − β2)·g²; w −= step_size · m / (sqrt(v) / sqrt_bc2 + eps), where
//               step_size = lr / (1 − β1^t) and sqrt_bc2 = sqrt(1 − β2^t)      bindings: 1 w, 2 g, 3 m, 4 v
//   lars_norms: LARS's two sums of squares, (Σ w², Σ d²) with d = g + wd·w, over ITEMS vec4s per invocation:
//               partials[part_base + invocation]; src/optim.ts sums them with the reduce op.
//                                                                         bindings: 1 w, 2 g, 5 partials
//   lars:       d = g + wd·w, scaled by eta·|w| / |d| where both norms are positive (norms = (Σ w², Σ d²));
//               b = momentum·b + d; w −= lr·b (the LARS of Barlow Twins and VICReg)
//                                                                         bindings: 1 w, 2 g, 3 b, 4 norms
//   clip:       gradient clipping, w (a gradient) ·= min(1, a / (sqrt(norms[0]) + 1e-6)), NaN where that is,
//               norms[0] the sum of squares of every gradient clipped together (torch.nn.utils.clip_grad_norm_)
//                                                                         bindings: 1 w, 4 norms
//! include lib/nan.wgsl

struct Params {
  count: u32,        // elements in this window
  part_base: u32,    // lars_norms: index of this window's first partial
  first_step: u32,   // sgd: 1 on the first step, where the momentum buffer starts as d
  lr: f32,
  weight_decay: f32,
  momentum: f32,     // sgd, lars; ema: the weight kept of w
  undamped: f32,     // sgd: 1 − dampening
  beta1: f32,
  beta2: f32,
  beta1c: f32,       // adam: 1 − β1, and 1 − β2, from the host in float64 (exact where f32 would round)
  beta2c: f32,
  eps: f32,
  step_size: f32,    // adam: lr / (1 − β1^t), from the host in float64
  sqrt_bc2: f32,     // adam: sqrt(1 − β2^t)
  eta: f32,          // lars: trust coefficient
  a: f32,            // axpby; clip: the largest norm
  b: f32,
}

override WG: u32 = 256;
override NESTEROV: bool = false;
override DECOUPLED: bool = false;
// vec4s per lars_norms invocation, mirrored in src/optim.ts: a constant, so the loop unrolls.
const ITEMS = 16u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> w: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> g: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> s1: array<vec4<f32>>;  // sgd, lars: the momentum buffer; adam: m
@group(0) @binding(4) var<storage, read_write> s2: array<vec4<f32>>;  // adam: v
@group(0) @binding(4) var<storage, read> norms: array<f32>;
@group(0) @binding(5) var<storage, read_write> partials: array<vec2<f32>>;

fn index(wg: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
  return (wg.y * nwg.x + wg.x) * WG + lid;
}

@compute @workgroup_size(WG)
fn sgd(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
       @builtin(local_invocation_index) lid: u32) {
  let i = index(wg, nwg, lid);
  if (4u * i >= p.count) { return; }
  let wi = w[i];
  let d = g[i] + p.weight_decay * wi;
  let b = select(p.momentum * s1[i] + p.undamped * d, d, p.first_step == 1u);
  s1[i] = b;
  w[i] = wi - p.lr * select(b, d + p.momentum * b, NESTEROV);
}

@compute @workgroup_size(WG)
fn adam(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
  let i = index(wg, nwg, lid);
  if (4u * i >= p.count) { return; }
  var wi = w[i];
  var gi = g[i];
  if (DECOUPLED) {
    wi *= 1.0 - p.lr * p.weight_decay;
  } else {
    gi += p.weight_decay * wi;
  }
  let m = p.beta1 * s1[i] + p.beta1c * gi;
  let v = p.beta2 * s2[i] + p.beta2c * gi * gi;
  s1[i] = m;
  s2[i] = v;
  w[i] = wi - p.step_size * m / (sqrt(v) / p.sqrt_bc2 + p.eps);
}

@compute @workgroup_size(WG)
fn lars_norms(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
  let part = index(wg, nwg, lid);
  if (part * ITEMS * 4u >= p.count) { return; }
  var sums = vec2<f32>(0.0);
  for (var k = 0u; k < ITEMS; k++) {
    let q = part * ITEMS + k;
    // Padding past count holds whatever the pool left there: masked out, not summed.
    let keep = vec4<u32>(4u * q) + vec4<u32>(0u, 1u, 2u, 3u) < vec4<u32>(p.count);
    let wi = select(vec4<f32>(0.0), w[q], keep);
    let d = select(vec4<f32>(0.0), g[q], keep) + p.weight_decay * wi;
    sums += vec2<f32>(dot(wi, wi), dot(d, d));
  }
  partials[p.part_base + part] = sums;
}

@compute @workgroup_size(WG)
fn lars(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
  let i = index(wg, nwg, lid);
  if (4u * i >= p.count) { return; }
  let wi = w[i];
  let wn = sqrt(norms[0]);
  let dn = sqrt(norms[1]);
  let d = (g[i] + p.weight_decay * wi) * select(1.0, p.eta * wn / dn, wn > 0.0 && dn > 0.0);
  let b = p.momentum * s1[i] + d;
  s1[i] = b;
  w[i] = wi - p.lr * b;
}

@compute @workgroup_size(WG)
fn axpby(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(local_invocation_index) lid: u32) {
  let i = index(wg, nwg, lid);
  if (4u * i >= p.count) { return; }
  w[i] = p.a * w[i] + p.b * g[i];
}

@compute @workgroup_size(WG)
fn clip(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
  let i = index(wg, nwg, lid);
  if (4u * i >= p.count) { return; }
  // torch's clamp(maxNorm / (norm + 1e-6), max=1) keeps a NaN (a NaN gradient): every gradient turns NaN, where
  // WGSL's min(1, NaN) may be 1.
  let scale = p.a / (sqrt(norms[0]) + 1e-6);
  w[i] *= select(min(1.0, scale), scale, isNan(scale));
}
