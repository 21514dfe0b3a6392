// elementwise.wgsl: every f32 elementwise op, one kernel parameterised by the override constant OP.
// Entry points (one invocation per output element, the workgroup index spread over x and y):
//   unary:  out[i] = f(a[i])                                          bindings: 1 a, 2 out
//   binary: out[i] = f(a[ia], b[ib]) with NumPy broadcasting           bindings: 1 a, 2 b, 3 out
//           BROADCAST = false: same-shape contiguous inputs, ia = ib = i
//           BROADCAST = true: ia, ib from the output's multi-index and per-input strides (0 on broadcast dims)
//   scalar: out[i] = f(a[i], s), or f(s, a[i]) when SWAP              bindings: 1 a, 2 out
// Op codes: unary 0..19, binary 20..; backward ops take (gradient, saved value).
struct Params {
  count: u32,     // output elements in this window
  rank: u32,
  scalar: f32,
  _pad: u32,
  shape: array<vec4<u32>, 2>,     // output dims, padded with 1
  stride_a: array<vec4<u32>, 2>,  // element strides of a on the output's dims, 0 where a is broadcast
  stride_b: array<vec4<u32>, 2>,
}

override WG: u32 = 256;
override OP: u32 = 0;
override BROADCAST: bool = false;
override SWAP: bool = false;

@group(0) @binding(0) var<uniform> p: Params;

fn index(wg: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
  return (wg.y * nwg.x + wg.x) * WG + lid;
}

// erf by Abramowitz & Stegun 7.1.26 (|error| < 1.5e-7): WGSL has no erf, and GELU is defined with it.
fn erf(x: f32) -> f32 {
  let t = 1.0 / (1.0 + 0.3275911 * abs(x));
  let y = 1.0 - (((((1.061405429 * t - 1.453152027) * t) + 1.421413741) * t - 0.284496736) * t + 0.254829592) * t * exp(-x * x);
  return select(-y, y, x >= 0.0);
}

fn sigmoid(x: f32) -> f32 {
  // Split by sign so exp never overflows.
  let e = exp(-abs(x));
  return select(e / (1.0 + e), 1.0 / (1.0 + e), x >= 0.0);
}

fn unaryOp(x: f32) -> f32 {
  switch OP {
    case 0u: { return -x; }
    case 1u: { return exp(x); }
    case 2u: { return log(x); }
    case 3u: { return sqrt(x); }
    case 4u: { return select(0.0, x, x > 0.0) + select(0.0, x, x != x); }  // relu, NaN passes through
    case 5u: { return 0.5 * x * (1.0 + erf(x * 0.7071067811865476)); }    // gelu (exact, erf form)
    case 6u: { return sigmoid(x); }
    case 7u: { return tanh(x); }
    case 8u: { return abs(x); }
    case 9u: { return x * x; }
    case 10u: { return 1.0 / x; }
    default: { return x; }
  }
}

fn binaryOp(a: f32, b: f32) -> f32 {
  switch OP {
    case 20u: { return a + b; }
    case 21u: { return a - b; }
    case 22u: { return a * b; }
    case 23u: { return a / b; }
    case 24u: { return pow(a, b); }   // defined as exp2(b * log2(a)): a must be ≥ 0 (as documented)
    case 25u: { return max(a, b) + select(0.0, a + b, a != a || b != b); }  // NaN propagates
    case 26u: { return select(0.0, 1.0, a == b); }
    case 27u: { return select(0.0, 1.0, a > b); }
    // backward: a is the incoming gradient, b the saved forward input or output
    case 40u: { return select(0.0, a, b > 0.0); }                                          // relu'(x)
    case 41u: { return a * (0.5 * (1.0 + erf(b * 0.7071067811865476)) + b * 0.3989422804014327 * exp(-0.5 * b * b)); }  // gelu'(x)
    case 42u: { return a * b * (1.0 - b); }                                                // sigmoid'(y)
    case 43u: { return a * (1.0 - b * b); }                                                // tanh'(y)
    case 44u: { return a * select(select(0.0, -1.0, b < 0.0), 1.0, b > 0.0); }             // abs'(x)
    default: { return a; }
  }
}

@group(0) @binding(1) var<storage, read> a: array<f32>;

@group(0) @binding(2) var<storage, read_write> out_unary: array<f32>;

@compute @workgroup_size(WG)
fn unary(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(local_invocation_index) lid: u32) {
  let i = index(wg, nwg, lid);
  if (i >= p.count) { return; }
  out_unary[i] = unaryOp(a[i]);
}

@compute @workgroup_size(WG)
fn scalar(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) lid: u32) {
  let i = index(wg, nwg, lid);
  if (i >= p.count) { return; }
  out_unary[i] = select(binaryOp(a[i], p.scalar), binaryOp(p.scalar, a[i]), SWAP);
}

@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> out_binary: array<f32>;

@compute @workgroup_size(WG)
fn binary(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) lid: u32) {
  let i = index(wg, nwg, lid);
  if (i >= p.count) { return; }
  if (!BROADCAST) {
    out_binary[i] = binaryOp(a[i], b[i]);
    return;
  }
  var rest = i;
  var ia = 0u;
  var ib = 0u;
  for (var d = i32(p.rank) - 1; d >= 0; d--) {
    let dim = p.shape[d / 4][d % 4];
    let k = rest % dim;
    rest /= dim;
    ia += k * p.stride_a[d / 4][d % 4];
    ib += k * p.stride_b[d / 4][d % 4];
  }
  out_binary[i] = binaryOp(a[ia], b[ib]);
}
