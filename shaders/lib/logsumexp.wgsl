// The online log-sum-exp state (m, s): the running max m and s = Σ exp(v − m). Needs lib/nan.wgsl.

// max that returns NaN when either side is NaN (WGSL's max may drop it).
fn maxNaN(x: f32, y: f32) -> f32 {
  return select(select(max(x, y), y, isNan(y)), x, isNan(x));
}

// exp(v − m) for a term v merged under the new max m; 1 when v == m, so m = ±∞ gives no ∞ − ∞.
fn rescale(v: f32, m: f32) -> f32 {
  return select(exp(v - m), 1.0, v == m);
}

// Two states as one.
fn mergeLse(x: vec2<f32>, y: vec2<f32>) -> vec2<f32> {
  let m = maxNaN(x.x, y.x);
  return vec2<f32>(m, x.y * rescale(x.x, m) + y.y * rescale(y.x, m));
}

// log s for a caller that takes (x − m) − log s: NaN where m = +∞, so a row holding +∞ comes out NaN throughout,
// as torch's softmax and log_softmax have it (their x − ∞ beside ∞ − ∞), not 0 or −∞ beside one NaN.
fn logSBeside(m: f32, s: f32) -> f32 {
  let bits = bitcast<u32>(m);
  return select(log(s), bitcast<f32>(bits | 0x400000u), bits == 0x7f800000u);
}
