// elementwise.wgsl: every f32 elementwise op, one kernel parameterised by the override constant OP, the
// comparisons of i32 and u32 operands too (OPERANDS), and casts between dtypes.
// Each invocation computes one vec4 of the output (4 consecutive elements), or PER consecutive vec4s (unary,
// scalar, binary), the workgroup index spread over x and y. Tensors are bound as array<vec4<f32>>, the binding
// rounded up to whole vec4s (pool buffers are 256-byte multiples): the padding lanes compute values nobody
// reads, so there is no tail path. Wide accesses are the
// usual 16-byte loads on GPUs and matter more on CPU adapters: llvmpipe loops over the SIMD lanes for every
// storage access, so a vec4 access costs little more than an f32 one.
//   unary:     out[i] = f(a[i])                                     bindings: 1 a, 2 out
//   scalar:    out[i] = f(a[i], s), or f(s, a[i]) when SWAP         bindings: 1 a, 2 out
//   binary:    out[i] = f(a[i], b[i]), same-shape inputs            bindings: 1 a, 2 b, 3 out
//   broadcast: out[i] = f(a[ia], b[ib]) with NumPy broadcasting: ia, ib from the output's multi-index and
//              per-input strides (0 on broadcast dims); a and b are bound whole. With INNER4 (the innermost
//              dim a multiple of 4) the vec4's elements share one row: each input gives a vec4 there
//              (A_ROW / B_ROW: it varies along that dim, with stride 1) or one value for all four; and
//              p.lanes invocations share a run of up to lanes·RUN vec4s of one innermost row, each taking every
//              lanes-th vec4 and finding its offsets (a division per dim) once. With 8 lanes, a CPU adapter's
//              SIMD group reads whole cache lines in order at each step (one invocation per run read 8 lines a
//              step 256 bytes apart and waited on memory: 1.33x slower on llvmpipe), as a GPU's warp coalesces.
//              With B_SPLIT, b is a sum kept as two halves, its first term m and from vec4 p.half4 on its second
//              l (softmax's logsumexp: the row max and log Σ exp(x − m)), and the op (sub or expDiff) takes
//              a − b as (a − m) − l, which carries no rounding of m + l (ulp(m): 2e-3 at |m| = 3e4).
//                                                                  bindings: 1 a, 2 b, 3 out
//   convertDtype: out[i] = a[i] converted from dtype FROM to TO (0 f32, 1 i32, 2 u32), both bound as raw
//              bits (`cast` is a WGSL keyword)                     bindings: 1 a, 2 out
// Op codes: unary 0..19, binary 20..; backward ops 40..44, 47 and 48 take (gradient, saved value), 45 and 46
// compute pow's gradient factors.
//! include lib/nan.wgsl
//! include lib/log1p.wgsl

struct Params {
  count: u32,     // output elements in this window
  rank: u32,
  scalar: f32,
  lanes: u32,     // broadcast with INNER4: invocations that share a run, taking every lanes-th vec4
  half4: u32,     // broadcast with B_SPLIT: the vec4 where b's second half starts
  shape: array<vec4<u32>, 2>,     // output dims, padded with 1
  stride_a: array<vec4<u32>, 2>,  // element strides of a on the output's dims, 0 where a is broadcast
  stride_b: array<vec4<u32>, 2>,
}

override WG: u32 = 256;
const RUN = 16u;
override OP: u32 = 0;
// The operands' dtype, for the comparisons (28, 29): 0 f32, 1 i32, 2 u32. Integers are bound as f32 arrays and
// compared on their bits, so they are exact at any size (as f32 values, 2^24 + 1 would equal 2^24).
override OPERANDS: u32 = 0u;
override SWAP: bool = false;
override INNER4: bool = false;
override A_ROW: bool = false;
override B_ROW: bool = false;
override B_SPLIT: bool = false;
// unary, scalar, binary: consecutive vec4s per invocation. 1 on GPUs, where neighbouring invocations' reads
// coalesce; 4 on CPU adapters, where each SIMD lane then reads its own run in order (16M elements on llvmpipe,
// alternating: add 1.1x, exp 1.0x to 1.15x, a scalar multiply 1.15x to 1.4x faster than one vec4 each).
override PER: u32 = 1u;

@group(0) @binding(0) var<uniform> p: Params;

// Index of this invocation's vec4.
fn index(wg: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
  return (wg.y * nwg.x + wg.x) * WG + lid;
}

const ZERO = vec4<f32>(0.0);
const ONE = vec4<f32>(1.0);

// Φ(x), the standard normal CDF that GELU is defined with, as 0.5·erfc(−x/√2) (WGSL has no erf). erfc of
// |x|/√2 by Numerical Recipes' Chebyshev fit, t·exp(−z² + P(t)), fractional error < 1.2e-7 everywhere: the
// lower tail keeps its relative precision, where 1 + erf(x/√2) cancels (gelu(−5) off by 1.6e-3, gelu(−10)
// by 100%). z² = x²/2 takes one rounding, which exp turns into a relative error of 6e-8·z².
fn normalCdf(x: vec4<f32>) -> vec4<f32> {
  let t = 1.0 / (1.0 + 0.5 * 0.7071067811865476 * abs(x));
  let poly = -1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 + t * (-0.18628806 +
    t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277))))))));
  let half = 0.5 * t * exp(poly - 0.5 * x * x);  // 0.5·erfc(|x|/√2) = Φ(−|x|)
  return select(1.0 - half, half, x < ZERO);
}

fn sigmoid(x: vec4<f32>) -> vec4<f32> {
  // Split by sign so exp never overflows.
  let e = exp(-abs(x));
  return select(e / (1.0 + e), 1.0 / (1.0 + e), x >= ZERO);
}

// tanh to f32's relative precision near 0, where WGSL asks only an absolute bound of its tanh (llvmpipe's is 1e-2
// off at 1e-6 and gives 3e-8 for 1e-20): Cephes' tanhf, an odd polynomial below 0.625, else 1 − 2/(e^{2|x|} + 1)
// with x's sign (∞ past e^{2|x|}'s range gives ±1). ±0 passes through.
fn tanhC(x: vec4<f32>) -> vec4<f32> {
  let z = x * x;
  let p = (((-5.70498872745e-3 * z + 2.06390887954e-2) * z - 5.37397155531e-2) * z + 1.33314422036e-1) * z -
    3.33332819422e-1;
  let a = abs(x);
  let large = sign(x) * (1.0 - 2.0 / (exp(2.0 * a) + 1.0));
  return select(select(x + x * z * p, large, a >= vec4<f32>(0.625)), x, x == ZERO);
}

// A runtime vec4 of the given bits (NaN or ∞): WGSL rejects NaN and ∞ in constant expressions. Taking x keeps
// the value out of constant folding.
fn bits4(x: vec4<f32>, bits: u32) -> vec4<f32> {
  return bitcast<vec4<f32>>((bitcast<vec4<u32>>(x) & vec4<u32>(0u)) | vec4<u32>(bits));
}

// |a|^n for integers n, |n| < 128, by squaring: x² and x³ exact to a rounding, 10^7 exact, as PyTorch's, where
// exp2(n·log2 |a|) carries log2's error times n (10^7 came out 9999996). (powC takes b = ±0.5 by sqrt.)
fn powInt(a: vec4<f32>, b: vec4<f32>) -> vec4<f32> {
  var r = ONE;
  var s = abs(a);
  var k = vec4<u32>(abs(b));
  for (var i = 0u; i < 7u; i++) {
    r = select(r, r * s, (k & vec4<u32>(1u)) != vec4<u32>(0u));
    s *= s;
    k = k >> vec4<u32>(1u);
  }
  return select(r, 1.0 / r, b < ZERO);
}

// a^b as C's pow and PyTorch have it. WGSL's pow is exp2(b·log2 a), undefined for a < 0 and unreliable at 0 and
// ∞ (llvmpipe gives 0^-1 = 0), so only finite positive bases take that path, and only for exponents that are
// not small integers (powInt): a negative base keeps the sign of an odd integer exponent and is NaN for a
// non-integer one; 0 and ∞ bases, ∞ exponents, b = 0 and a = 1 (even with a NaN on the other side: both give 1)
// are set explicitly. A subnormal base is no zero (SwiftShader's a == 0 holds for one) and its log2 comes from
// its bits (log2Pos).
fn powC(a: vec4<f32>, b: vec4<f32>) -> vec4<f32> {
  let inf = bits4(a, 0x7f800000u);
  let nan = bits4(a, 0x7fc00000u);
  let infA = isInf4(a);
  let infB = isInf4(b);
  let integer = (b == trunc(b)) & !infB;
  let odd = integer & (b * 0.5 != trunc(b * 0.5));
  let negative = (bitcast<vec4<u32>>(a) & vec4<u32>(0x80000000u)) != vec4<u32>(0u);  // -0 included
  let zeroA = (bitcast<vec4<u32>>(a) & vec4<u32>(0x7fffffffu)) == vec4<u32>(0u);
  var r = select(exp2(b * log2Pos(abs(a))), powInt(a, b), integer & (abs(b) < vec4<f32>(128.0)));
  r = select(r, sqrtC(abs(a)), b == vec4<f32>(0.5));
  r = select(r, 1.0 / sqrtC(abs(a)), b == vec4<f32>(-0.5));
  r = select(r, select(ZERO, inf, (b > ZERO) == infA), zeroA | infA);
  r = select(r, nan, negative & !zeroA & !infA & !integer & !infB);
  r = select(r, -r, negative & odd);
  let above = abs(a) > ONE;  // for an ∞ exponent: |a| = 1 gives 1, otherwise 0 or ∞
  r = select(r, select(select(ZERO, inf, above == (b > ZERO)), ONE, abs(a) == ONE), infB);
  r = select(r, nan, isNan4(a) | isNan4(b));
  return select(r, ONE, (b == ZERO) | (a == ONE));
}

// Below zero on the sign bit, −0 not included: SwiftShader flushes a subnormal to 0 before comparing (−1e-40 < 0
// is false there).
fn negative4(x: vec4<f32>) -> vec4<bool> {
  return bitcast<vec4<u32>>(x) > vec4<u32>(0x80000000u);
}

// log, set where adapters go wrong. NaN below 0 (SwiftShader gives ln|x|) and −∞ at ±0 (SwiftShader gives −88).
// Near 1 by 2·atanh(t), t = (x − 1)/(x + 1) (x − 1 exact there), to t^9: the built-in need only be within 2^-21
// absolute, and log(1 − 2^-24) came out 39% (SwiftShader) and 73% (llvmpipe) off. Right for subnormals, where
// llvmpipe's gives about −88 for every one (log(1e-40) is −92.1): a subnormal is its bits b times 2^-149, and b
// converts to f32 exactly, so its log is log(f32(b)) − 149·ln 2.
fn logC(x: vec4<f32>) -> vec4<f32> {
  let b = bitcast<vec4<u32>>(x);
  let subnormal = (b > vec4<u32>(0u)) & (b < vec4<u32>(0x800000u));
  var r = select(log(x), log(vec4<f32>(b)) - 103.27892990343185, subnormal);
  let d = x - 1.0;
  let t = d / (x + 1.0);
  let t2 = t * t;
  let near = 2.0 * t * (1.0 + t2 * (1.0 / 3.0 + t2 * (0.2 + t2 * (1.0 / 7.0 + t2 / 9.0))));
  r = select(r, near, abs(d) < vec4<f32>(0.25));
  r = select(r, bits4(x, 0xff800000u), (b & vec4<u32>(0x7fffffffu)) == vec4<u32>(0u));
  return select(r, bits4(x, 0x7fc00000u), negative4(x));
}

// log2 of x ≥ 0, right for subnormals (llvmpipe's is about −127 for every one): log2(f32(bits)) − 149.
fn log2Pos(x: vec4<f32>) -> vec4<f32> {
  let b = bitcast<vec4<u32>>(x);
  return select(log2(x), log2(vec4<f32>(b)) - 149.0, b < vec4<u32>(0x800000u));
}

// sqrt, NaN below 0 and right for subnormals, which SwiftShader flushes to 0 (sqrt(1e-40) is 1e-20): as log's,
// from the bits, sqrt(b · 2^-149) = sqrt(f32(b)) · 2^-74.5.
fn sqrtC(x: vec4<f32>) -> vec4<f32> {
  let b = bitcast<vec4<u32>>(x);
  let subnormal = (b > vec4<u32>(0u)) & (b < vec4<u32>(0x800000u));
  let r = select(sqrt(x), sqrt(vec4<f32>(b)) * 3.743392066509216e-23, subnormal);
  return select(r, bits4(x, 0x7fc00000u), negative4(x));
}

// Adapters differ on NaN through exp, tanh or max (SwiftShader: exp(NaN) = Inf, max(NaN, 3) = 3; llvmpipe:
// tanh(NaN) = -1). Every op here returns a NaN input unchanged, as the float64 reference does; pow (which has
// its own NaN rules), comparisons and backward ops (codes ≥ 28) are exempt.

fn unaryNan(x: vec4<f32>) -> vec4<f32> {
  return select(unaryOp(x), x, isNan4(x));
}

fn binaryNan(a: vec4<f32>, b: vec4<f32>) -> vec4<f32> {
  if (OP >= 28u || OP == 24u) { return binaryOp(a, b); }
  return select(select(binaryOp(a, b), b, isNan4(b)), a, isNan4(a));
}

fn unaryOp(x: vec4<f32>) -> vec4<f32> {
  switch OP {
    case 0u: { return -x; }
    case 1u: { return exp(x); }
    case 2u: { return logC(x); }
    case 3u: { return sqrtC(x); }
    case 4u: { return select(ZERO, x, x > ZERO); }                               // relu
    case 5u: { return x * normalCdf(x); }                                        // gelu (exact, erf form)
    case 6u: { return sigmoid(x); }
    case 7u: { return tanhC(x); }
    case 8u: { return abs(x); }
    case 9u: { return x * x; }
    case 10u: { return 1.0 / x; }
    case 11u: { return x * sigmoid(x); }                                         // silu
    case 12u: { return max(x, ZERO) + log1p01(exp(-abs(x))); }                   // softplus, never overflows
    default: { return x; }
  }
}

// x ≠ ±0, NaN included, on the bits: SwiftShader folds NaN ≠ 0 to false.
fn nonzero4(x: vec4<f32>) -> vec4<bool> {
  return (bitcast<vec4<u32>>(x) & vec4<u32>(0x7fffffffu)) != vec4<u32>(0u);
}

fn equal4(a: vec4<f32>, b: vec4<f32>) -> vec4<bool> {
  if (OPERANDS == 0u) { return a == b; }
  return bitcast<vec4<u32>>(a) == bitcast<vec4<u32>>(b);
}

fn greater4(a: vec4<f32>, b: vec4<f32>) -> vec4<bool> {
  if (OPERANDS == 1u) { return bitcast<vec4<i32>>(a) > bitcast<vec4<i32>>(b); }
  if (OPERANDS == 2u) { return bitcast<vec4<u32>>(a) > bitcast<vec4<u32>>(b); }
  return a > b;
}

fn binaryOp(a: vec4<f32>, b: vec4<f32>) -> vec4<f32> {
  switch OP {
    case 20u: { return a + b; }
    case 21u: { return a - b; }
    case 22u: { return a * b; }
    case 23u: { return a / b; }
    case 24u: { return powC(a, b); }
    case 25u: { return max(a, b); }
    case 26u: { return min(a, b); }
    case 27u: { return expNaN4(a - b); }  // softmax's exp(x − logsumexp) in one pass; ∞ − ∞ stays NaN
    case 28u: { return select(ZERO, ONE, equal4(a, b)); }
    case 29u: { return select(ZERO, ONE, greater4(a, b)); }
    case 30u: { return select(ZERO, a, nonzero4(b)); }  // where: a where b ≠ 0, else 0
    case 31u: { return select(a, ZERO, nonzero4(b)); }  // a where b = ±0, else 0
    case 32u: { return select(ZERO, ONE, equal4(a, b) | (isNan4(a) & isNan4(b))); }  // max's ties, NaN a tie
    // backward: a is the incoming gradient, b the saved forward input or output
    case 40u: { return select(a, ZERO, b <= ZERO); }  // relu'(x); at NaN g passes, as torch's threshold_backward
    case 41u: { return a * (normalCdf(b) + b * 0.3989422804014327 * exp(-0.5 * b * b)); }   // gelu'(x)
    case 42u: { return a * b * (1.0 - b); }                                                // sigmoid'(y)
    case 43u: { return a * (1.0 - b * b); }                                                // tanh'(y)
    case 44u: { return a * select(select(ZERO, -ONE, b < ZERO), ONE, b > ZERO); }          // abs'(x)
    case 45u: { return select(a * b, ZERO, a == ZERO); }  // a·b, 0 where a = 0: pow's b·a^(b−1) at b = 0
    case 47u: {                                                                            // silu'(x)
      let s = sigmoid(b);
      return a * s * (1.0 + b * (1.0 - s));
    }
    case 48u: { return a * sigmoid(b); }                                                   // softplus'(x)
    case 46u: {  // pow's d/db factor y·ln x for (x, y = x^b): 0 where x = 0 and b ≥ 0 (y ≤ 1), as PyTorch
      let r = select(b * logC(a), bits4(a, 0x7fc00000u), negative4(a) | isNan4(a) | isNan4(b));
      return select(r, ZERO, (a == ZERO) & (b <= ONE));
    }
    default: { return a; }
  }
}

@group(0) @binding(1) var<storage, read> a: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> out_unary: array<vec4<f32>>;

@compute @workgroup_size(WG)
fn unary(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(local_invocation_index) lid: u32) {
  for (var k = 0u; k < PER; k++) {
    let i = index(wg, nwg, lid) * PER + k;
    if (i * 4u >= p.count) { return; }
    out_unary[i] = unaryNan(a[i]);
  }
}

@compute @workgroup_size(WG)
fn scalar(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) lid: u32) {
  let s = vec4<f32>(p.scalar);
  for (var k = 0u; k < PER; k++) {
    let i = index(wg, nwg, lid) * PER + k;
    if (i * 4u >= p.count) { return; }
    out_unary[i] = select(binaryNan(a[i], s), binaryNan(s, a[i]), SWAP);
  }
}

@group(0) @binding(2) var<storage, read> b: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> out_binary: array<vec4<f32>>;

@compute @workgroup_size(WG)
fn binary(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) lid: u32) {
  for (var k = 0u; k < PER; k++) {
    let i = index(wg, nwg, lid) * PER + k;
    if (i * 4u >= p.count) { return; }
    out_binary[i] = binaryNan(a[i], b[i]);
  }
}

fn strides(d: u32) -> vec2<u32> {
  return vec2<u32>(p.stride_a[d / 4u][d % 4u], p.stride_b[d / 4u][d % 4u]);
}

// Offsets in a and b of output element e. The outermost coordinate needs no division (integer division is
// slow on CPU adapters, which lack a vector form of it).
fn offsets(e: u32) -> vec2<u32> {
  if (p.rank == 0u) { return vec2<u32>(0u); }
  var rest = e;
  var o = vec2<u32>(0u);
  for (var d = p.rank - 1u; d > 0u; d--) {
    let dim = p.shape[d / 4u][d % 4u];
    o += (rest % dim) * strides(d);
    rest /= dim;
  }
  return o + rest * strides(0u);
}

@compute @workgroup_size(WG)
fn broadcast(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) lid: u32) {
  if (INNER4) {
    let inner4 = p.shape[(p.rank - 1u) / 4u][(p.rank - 1u) % 4u] / 4u;
    let g = p.lanes;
    let runs = (inner4 + g * RUN - 1u) / (g * RUN);  // per innermost row
    let t = index(wg, nwg, lid);
    let row = t / (g * runs);
    let first = row * inner4 + (t / g % runs) * g * RUN + t % g;  // the run's first vec4
    if (first >= (row + 1u) * inner4 || 4u * first >= p.count) { return; }
    var o = offsets(4u * first);
    let step = vec2<u32>(select(0u, 4u * g, A_ROW), select(0u, 4u * g, B_ROW));
    // An input broadcast along the row has one value for the whole run: read once, not per vec4.
    let a1 = vec4<f32>(a[o.x / 4u][o.x % 4u]);
    let b1 = vec4<f32>(b[o.y / 4u][o.y % 4u]);
    var b2 = ZERO;
    if (B_SPLIT) { b2 = vec4<f32>(b[o.y / 4u + p.half4][o.y % 4u]); }
    for (var i = first; i < min(first + g * RUN, (row + 1u) * inner4); i += g) {
      var x = a1;
      var y = b1;
      if (A_ROW) { x = a[o.x / 4u]; }
      if (B_ROW) { y = b[o.y / 4u]; }
      if (B_SPLIT) {
        x -= y;
        y = b2;
        if (B_ROW) { y = b[o.y / 4u + p.half4]; }
      }
      out_binary[i] = binaryNan(x, y);
      o += step;
    }
    return;
  }
  let i = index(wg, nwg, lid);
  if (i * 4u >= p.count) { return; }
  // Offsets found (a division per dim) for the first element only, then stepped along the innermost dim.
  let last = max(p.rank, 1u) - 1u;
  let n = select(1u, p.shape[last / 4u][last % 4u], p.rank > 0u);
  let step = select(vec2<u32>(0u), strides(last), p.rank > 0u);
  var o = offsets(4u * i);
  var k = 4u * i % n;  // innermost index
  var x = ZERO;
  var y = ZERO;
  for (var j = 0u; j < 4u; j++) {
    let e = i * 4u + j;
    if (k == n) {
      o = offsets(e);
      k = 0u;
    }
    if (e < p.count) {
      x[j] = a[o.x / 4u][o.x % 4u];
      y[j] = b[o.y / 4u][o.y % 4u];
      if (B_SPLIT) {
        x[j] -= y[j];
        y[j] = b[o.y / 4u + p.half4][o.y % 4u];
      }
    }
    o += step;
    k++;
  }
  out_binary[i] = binaryNan(x, y);
}

// ---- convertDtype ------------------------------------------------------------------------------------------

override FROM: u32 = 0u;
override TO: u32 = 0u;

@group(0) @binding(1) var<storage, read> a_bits: array<vec4<u32>>;
@group(0) @binding(2) var<storage, read_write> out_bits: array<vec4<u32>>;

// f32 to an integer truncates toward zero and saturates, NaN to 0 (Rust's `as`): WGSL leaves conversions out of
// range to the implementation, so the bounds are explicit. 2147483520 and 4294967040 are the largest f32 below
// 2^31 and 2^32.
fn toI32(x: vec4<f32>) -> vec4<u32> {
  var v = vec4<i32>(clamp(x, vec4<f32>(-2147483648.0), vec4<f32>(2147483520.0)));
  v = select(v, vec4<i32>(2147483647), x >= vec4<f32>(2147483648.0));
  return bitcast<vec4<u32>>(select(v, vec4<i32>(0), isNan4(x)));
}

fn toU32(x: vec4<f32>) -> vec4<u32> {
  var v = vec4<u32>(clamp(x, ZERO, vec4<f32>(4294967040.0)));
  v = select(v, vec4<u32>(4294967295u), x >= vec4<f32>(4294967296.0));
  return select(v, vec4<u32>(0u), isNan4(x));
}

// Between i32 and u32 the bits stay (two's complement wraps, as NumPy's astype).
fn convert(bits: vec4<u32>) -> vec4<u32> {
  if (FROM == TO || (FROM != 0u && TO != 0u)) { return bits; }
  if (FROM == 1u) { return bitcast<vec4<u32>>(vec4<f32>(bitcast<vec4<i32>>(bits))); }
  if (FROM == 2u) { return bitcast<vec4<u32>>(vec4<f32>(bits)); }
  if (TO == 1u) { return toI32(bitcast<vec4<f32>>(bits)); }
  return toU32(bitcast<vec4<f32>>(bits));
}

@compute @workgroup_size(WG)
fn convertDtype(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
  for (var k = 0u; k < PER; k++) {
    let i = index(wg, nwg, lid) * PER + k;
    if (i * 4u >= p.count) { return; }
    out_bits[i] = convert(a_bits[i]);
  }
}
