// log(1 + e) for e in [0, 1], accurate where 1 + e rounds (log(1 + 2e-9) would be 0; WGSL has no log1p):
// 2·atanh(t) with t = e / (2 + e) ≤ 1/3, by its series to t^15 (the next term is under 2e-9 of the sum).
fn log1p01(e: vec4<f32>) -> vec4<f32> {
  let t = e / (2.0 + e);
  let t2 = t * t;
  let odd = 1.0 / 13.0 + t2 / 15.0;
  return 2.0 * t * (1.0 + t2 * (1.0 / 3.0 + t2 * (0.2 + t2 * (1.0 / 7.0 + t2 * (1.0 / 9.0 + t2 * (1.0 / 11.0 + t2 * odd))))));
}
