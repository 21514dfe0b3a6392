// Philox 4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", 2011): a counter-based
// generator. philox(counter, key) is a pure function, so any invocation draws any stream position directly
// and src/ref/random.ts reproduces every number bit for bit.
// WGSL has no 64-bit integers: the 32x32 -> 64 product is built from 16-bit halves.
fn philoxMulHiLo(a: u32, b: u32) -> vec2<u32> {
  let lolo = (a & 0xffffu) * (b & 0xffffu);
  let hilo = (a >> 16u) * (b & 0xffffu);
  let lohi = (a & 0xffffu) * (b >> 16u);
  let cross = (lolo >> 16u) + (hilo & 0xffffu) + lohi;
  return vec2<u32>((a >> 16u) * (b >> 16u) + (hilo >> 16u) + (cross >> 16u), a * b);
}

fn philox(counter: vec4<u32>, key: vec2<u32>) -> vec4<u32> {
  var c = counter;
  var k = key;
  for (var r = 0u; r < 10u; r++) {
    let p0 = philoxMulHiLo(0xD2511F53u, c.x);
    let p1 = philoxMulHiLo(0xCD9E8D57u, c.z);
    c = vec4<u32>(p1.x ^ c.y ^ k.x, p1.y, p0.x ^ c.w ^ k.y, p0.y);
    k += vec2<u32>(0x9E3779B9u, 0xBB67AE85u);
  }
  return c;
}

// 24 random bits -> [0, 1), exact in f32 and f64.
fn philoxUniform(x: u32) -> f32 {
  return f32(x >> 8u) * (1.0 / 16777216.0);
}

// A standard normal from two words by Box-Muller, z = sqrt(-2 ln u1) cos(2π u2), with u1 in (0, 1] and u2 in
// [0, 1) on the 24-bit grid. WGSL promises cos only to 2^-11 and log only to 2^-21 absolute near 1 (where ln u1
// is ~1e-7, so it could even come out positive), so both are evaluated here by series to a few f32 ulp: the GPU
// and the float64 reference then agree to ~1e-6.
fn philoxNormal(x0: u32, x1: u32) -> f32 {
  let u1 = f32((x0 >> 8u) + 1u) * (1.0 / 16777216.0);
  var minusLog: f32;
  if (u1 > 0.5) {
    // -ln(1 - w) = 2 atanh(t), t = w / (2 - w) ≤ 1/3, w = 1 - u1 exact on the grid.
    let w = 1.0 - u1;
    let t = w / (2.0 - w);
    let t2 = t * t;
    minusLog = 2.0 * t * (1.0 + t2 * (1.0 / 3.0 + t2 * (1.0 / 5.0 + t2 * (1.0 / 7.0 + t2 * (1.0 / 9.0 + t2 *
      (1.0 / 11.0 + t2 * (1.0 / 13.0 + t2 * (1.0 / 15.0 + t2 * (1.0 / 17.0)))))))));
  } else {
    minusLog = -log(u1);  // 3 ulp away from 1
  }
  // cos(2π u2): quadrant k from 4·u2 (exact), then x = angle − π/4 − kπ/2 in [−π/4, π/4) by Taylor series.
  let q = philoxUniform(x1) * 4.0;
  let k = u32(q);
  let x = (q - f32(k) - 0.5) * 1.5707963267948966;
  let x2 = x * x;
  let s = x * (1.0 + x2 * (-1.0 / 6.0 + x2 * (1.0 / 120.0 + x2 * (-1.0 / 5040.0 + x2 * (1.0 / 362880.0)))));
  let c = 1.0 + x2 * (-0.5 + x2 * (1.0 / 24.0 + x2 * (-1.0 / 720.0 + x2 * (1.0 / 40320.0 + x2 * (-1.0 / 3628800.0)))));
  let cosTheta = (c - s) * 0.7071067811865476;  // cos(π/4 + x)
  let sinTheta = (c + s) * 0.7071067811865476;  // sin(π/4 + x)
  let cosAngle = select(select(select(sinTheta, -cosTheta, k == 2u), -sinTheta, k == 1u), cosTheta, k == 0u);
  return sqrt(2.0 * minusLog) * cosAngle;
}
