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
