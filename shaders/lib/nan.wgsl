// NaN and ∞ tests on the bits: shader compilers may assume no NaN and fold `x != x` to false (SwiftShader does).
fn isNan(x: f32) -> bool {
  return (bitcast<u32>(x) & 0x7fffffffu) > 0x7f800000u;
}

fn isNan4(x: vec4<f32>) -> vec4<bool> {
  return (bitcast<vec4<u32>>(x) & vec4<u32>(0x7fffffffu)) > vec4<u32>(0x7f800000u);
}

// exp that keeps a NaN argument NaN: llvmpipe clamps exp's argument (NaN comes out finite), SwiftShader gives ∞.
fn expNaN4(x: vec4<f32>) -> vec4<f32> {
  return select(exp(x), x, isNan4(x));
}

fn isInf4(x: vec4<f32>) -> vec4<bool> {
  return (bitcast<vec4<u32>>(x) & vec4<u32>(0x7fffffffu)) == vec4<u32>(0x7f800000u);
}
