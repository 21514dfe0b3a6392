// ssim.wgsl: structural similarity of images [N, C, H, W] with a Gaussian window (size WIN ≤ 63, sigma in
// params), per channel, over the positions where the window fits ("valid": Ho = H − WIN + 1, Wo likewise).
// With μ, E[x²], E[y²], E[xy] the window averages at output position o:
//   S = (2μxμy + C1)(2σxy + C2) / ((μx² + μy² + C1)(σx² + σy² + C2)), σx² = E[x²] − μx², σxy = E[xy] − μxμy.
// dS(o)/dx(q) = w(q − o)·(a + 2x(q)·b + y(q)·c) with a = ∂S/∂μx, b = ∂S/∂E[x²], c = ∂S/∂E[xy], so the
// forward keeps (a, b, c) and the backward gathers them over the windows covering each input pixel.
// Each invocation loops WIN² times, under 4,000 for WIN ≤ 63 (llvmpipe's loop cap).
//   forward:       1 x, 2 y, 3 smap                smap[o] = S(o), one invocation per output position
//   forward_grad:  1 x, 2 y, 3 smap, 4 coef        and coef[o], coef[M + o], coef[2M + o] = a, b, c (M outputs)
//   backward:      1 x, 2 y, 3 coef, 4 upstream, 5 grad   grad[q] = scale · upstream[0] · dS/dx(q) summed over o
struct Params {
  planes: u32,  // N·C
  h: u32,
  w: u32,
  win: u32,
  sigma: f32,
  c1: f32,
  c2: f32,
  scale: f32,   // backward: d(loss)/dS per output position (±1/M)
}

override WG: u32 = 256;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> y: array<f32>;

var<workgroup> taps: array<f32, 64>;  // the normalised 1-D Gaussian window

// Fills `taps`; call from uniform control flow, before any early return.
fn loadTaps(lid: u32) {
  if (lid == 0u) {
    let r = f32(p.win - 1u) * 0.5;
    var total = 0.0;
    for (var u = 0u; u < p.win; u++) {
      let t = exp(-(f32(u) - r) * (f32(u) - r) / (2.0 * p.sigma * p.sigma));
      taps[u] = t;
      total += t;
    }
    for (var u = 0u; u < p.win; u++) { taps[u] /= total; }
  }
  workgroupBarrier();
}

fn invocation(wg: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
  return (wg.y * nwg.x + wg.x) * WG + lid;
}

// (S, a, b, c) at output position o.
fn ssimAt(o: u32) -> vec4<f32> {
  let ho = p.h - p.win + 1u;
  let wo = p.w - p.win + 1u;
  let plane = o / (ho * wo);
  let i = (o / wo) % ho;
  let j = o % wo;
  var mx = 0.0;
  var my = 0.0;
  var exx = 0.0;
  var eyy = 0.0;
  var exy = 0.0;
  for (var u = 0u; u < p.win; u++) {
    let row = (plane * p.h + i + u) * p.w + j;
    for (var v = 0u; v < p.win; v++) {
      let wt = taps[u] * taps[v];
      let xv = x[row + v];
      let yv = y[row + v];
      mx += wt * xv;
      my += wt * yv;
      exx += wt * xv * xv;
      eyy += wt * yv * yv;
      exy += wt * xv * yv;
    }
  }
  let a1 = 2.0 * mx * my + p.c1;
  let a2 = 2.0 * (exy - mx * my) + p.c2;
  let b1 = mx * mx + my * my + p.c1;
  let b2 = (exx - mx * mx) + (eyy - my * my) + p.c2;
  let s = (a1 * a2) / (b1 * b2);
  let da = 2.0 * my * (a2 - a1) / (b1 * b2) - 2.0 * mx * s * (1.0 / b1 - 1.0 / b2);
  return vec4(s, da, -s / b2, 2.0 * a1 / (b1 * b2));
}

fn outputs() -> u32 {
  return p.planes * (p.h - p.win + 1u) * (p.w - p.win + 1u);
}

@group(0) @binding(3) var<storage, read_write> smap: array<f32>;

@compute @workgroup_size(WG)
fn forward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) lid: u32) {
  loadTaps(lid);
  let o = invocation(wg, nwg, lid);
  if (o >= outputs()) { return; }
  smap[o] = ssimAt(o).x;
}

@group(0) @binding(4) var<storage, read_write> coef: array<f32>;

@compute @workgroup_size(WG)
fn forward_grad(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
  loadTaps(lid);
  let o = invocation(wg, nwg, lid);
  let m = outputs();
  if (o >= m) { return; }
  let r = ssimAt(o);
  smap[o] = r.x;
  coef[o] = r.y;
  coef[m + o] = r.z;
  coef[2u * m + o] = r.w;
}

@group(0) @binding(3) var<storage, read> saved: array<f32>;
@group(0) @binding(4) var<storage, read> upstream: array<f32>;
@group(0) @binding(5) var<storage, read_write> grad: array<f32>;

@compute @workgroup_size(WG)
fn backward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) lid: u32) {
  loadTaps(lid);
  let q = invocation(wg, nwg, lid);
  if (q >= p.planes * p.h * p.w) { return; }
  let ho = p.h - p.win + 1u;
  let wo = p.w - p.win + 1u;
  let m = outputs();
  let plane = q / (p.h * p.w);
  let r = (q / p.w) % p.h;
  let c = q % p.w;
  var sa = 0.0;
  var sb = 0.0;
  var sc = 0.0;
  // Output rows i with i ≤ r < i + WIN, i.e. max(r + 1, WIN) − WIN ≤ i ≤ min(r, Ho − 1); columns likewise.
  for (var i = max(r + 1u, p.win) - p.win; i <= min(r, ho - 1u); i++) {
    for (var j = max(c + 1u, p.win) - p.win; j <= min(c, wo - 1u); j++) {
      let wt = taps[r - i] * taps[c - j];
      let o = (plane * ho + i) * wo + j;
      sa += wt * saved[o];
      sb += wt * saved[m + o];
      sc += wt * saved[2u * m + o];
    }
  }
  grad[q] = p.scale * upstream[0] * (sa + 2.0 * x[q] * sb + y[q] * sc);
}
