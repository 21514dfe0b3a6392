// ssim.wgsl: structural similarity of images [N, C, H, W] with a Gaussian window (size WIN ≤ 63), per
// channel, over the positions where the window fits ("valid": Ho = H − WIN + 1, Wo likewise).
// With μ, E[x²], E[y²], E[xy] the window averages at output position o:
//   S = (2μxμy + C1)(2σxy + C2) / ((μx² + μy² + C1)(σx² + σy² + C2)), σx² = E[x²] − μx², σxy = E[xy] − μxμy.
// dS(o)/dx(q) = w(q − o)·(a + 2x(q)·b + y(q)·c) with a = ∂S/∂μx, b = ∂S/∂E[x²], c = ∂S/∂E[xy], so the
// forward keeps (a, b, c) and the backward gathers them over the windows covering each input pixel. S is
// symmetric in x and y: dS/dy is the same with x and y swapped, a' = ∂S/∂μy in place of a (b = ∂S/∂E[y²]).
//
// The window w(u, v) = g[u]·g[v] is separable, so every window sum is a pass along rows then one along
// columns: 2·WIN taps instead of WIN². The normalised 1-D taps g are symmetric: params hold g[0..WIN/2].
// A dispatch covers P planes from plane `first` of x, y, smap and the gradients (bound whole); rows, rows_xy,
// coef and cols hold those P planes only (src/reconstruction.ts splits the planes so that each fits one
// binding), row-major, vec4 where four values go together (one load instead of four: up to 2x faster on
// llvmpipe). Invocation e of a pass computes element e of what it writes and loops WIN times (≤ 63).
//   moments:       1 x, 2 y, 3 rows, 4 rows_xy   along rows: rows[p, r, j] = Σ_v g[v]·(x, y, x², y²) at
//                                                (p, r, j + v), rows_xy[p, r, j] likewise of xy; [P, H, Wo]
//   forward:       1 rows, 2 rows_xy, 3 smap     down columns: smap[o] = S(o) from Σ_u g[u]·rows[p, i + u, j]
//   forward_grad:  1 rows, 2 rows_xy, 3 smap, 4 coef   and coef[o] = (a, a', b, c); [P, Ho, Wo]
//   gather:        1 coef, 2 cols                cols[p, r, j] = Σ_i g[r − i]·coef[p, i, j] over the output
//                                                rows i ≤ r < i + WIN (a "full" correlation); [P, H, Wo]
//   backward:      1 x, 2 y, 3 cols, 4 upstream, 5 grad_x, 6 grad_y   the same along rows gives (A, A', B, C)
//                  at each pixel q: grad_x[q] = scale · upstream[0] · (A + 2x·B + y·C), grad_y with A', x ↔ y
struct Params {
  planes: u32,  // in this dispatch
  first: u32,   // plane of x (and y, smap, the gradients) where this dispatch starts
  h: u32,
  w: u32,
  win: u32,
  c1: f32,
  c2: f32,
  scale: f32,   // backward: d(loss)/dS per output position (±1/M)
  half_taps: array<vec4<f32>, 8>,  // g[k] for k ≤ WIN / 2
}

override WG: u32 = 256;

@group(0) @binding(0) var<uniform> p: Params;

fn tap(u: u32) -> f32 {
  let k = min(u, p.win - 1u - u);
  return p.half_taps[k / 4u][k % 4u];
}

fn invocation(wg: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
  return (wg.y * nwg.x + wg.x) * WG + lid;
}

fn outRows() -> u32 {
  return p.h - p.win + 1u;
}

fn outCols() -> u32 {
  return p.w - p.win + 1u;
}

fn outputs() -> u32 {
  return p.planes * outRows() * outCols();
}

// The outputs along a line of n inputs whose window covers input r, first and last: [max(r + 1, WIN) − WIN,
// min(r, n − WIN)].
fn covering(r: u32, n: u32) -> vec2<u32> {
  return vec2(max(r + 1u, p.win) - p.win, min(r, n - p.win));
}

// ---- forward ---------------------------------------------------------------------------------------------

@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> y: array<f32>;
@group(0) @binding(3) var<storage, read_write> rows: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> rows_xy: array<f32>;

@compute @workgroup_size(WG)
fn moments(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) lid: u32) {
  let e = invocation(wg, nwg, lid);
  let wo = outCols();
  if (e >= p.planes * p.h * wo) { return; }
  let start = (p.first * p.h + e / wo) * p.w + e % wo;
  var m = vec4(0.0);
  var mxy = 0.0;
  for (var v = 0u; v < p.win; v++) {
    let t = tap(v);
    let xv = x[start + v];
    let yv = y[start + v];
    m += t * vec4(xv, yv, xv * xv, yv * yv);
    mxy += t * xv * yv;
  }
  rows[e] = m;
  rows_xy[e] = mxy;
}

@group(0) @binding(1) var<storage, read> rows_in: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> rows_xy_in: array<f32>;
@group(0) @binding(3) var<storage, read_write> smap: array<f32>;
@group(0) @binding(4) var<storage, read_write> coef: array<vec4<f32>>;

struct Ssim {
  s: f32,
  coef: vec4<f32>,  // a, a', b, c
}

// S and its coefficients at output position o, summing the row sums down the window's columns.
fn ssimAt(o: u32) -> Ssim {
  let ho = outRows();
  let wo = outCols();
  let start = (o / (ho * wo) * p.h + (o / wo) % ho) * wo + o % wo;
  var m = vec4(0.0);  // μx, μy, E[x²], E[y²]
  var exy = 0.0;
  for (var u = 0u; u < p.win; u++) {
    let t = tap(u);
    let at = start + u * wo;
    m += t * rows_in[at];
    exy += t * rows_xy_in[at];
  }
  let mx = m.x;
  let my = m.y;
  let a1 = 2.0 * mx * my + p.c1;
  let a2 = 2.0 * (exy - mx * my) + p.c2;
  let b1 = mx * mx + my * my + p.c1;
  let b2 = (m.z - mx * mx) + (m.w - my * my) + p.c2;
  let s = (a1 * a2) / (b1 * b2);
  let dmx = 2.0 * my * (a2 - a1) / (b1 * b2) - 2.0 * mx * s * (1.0 / b1 - 1.0 / b2);
  let dmy = 2.0 * mx * (a2 - a1) / (b1 * b2) - 2.0 * my * s * (1.0 / b1 - 1.0 / b2);
  return Ssim(s, vec4(dmx, dmy, -s / b2, 2.0 * a1 / (b1 * b2)));
}

@compute @workgroup_size(WG)
fn forward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) lid: u32) {
  let o = invocation(wg, nwg, lid);
  if (o >= outputs()) { return; }
  smap[p.first * outRows() * outCols() + o] = ssimAt(o).s;
}

@compute @workgroup_size(WG)
fn forward_grad(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
  let o = invocation(wg, nwg, lid);
  if (o >= outputs()) { return; }
  let r = ssimAt(o);
  smap[p.first * outRows() * outCols() + o] = r.s;
  coef[o] = r.coef;
}

// ---- backward --------------------------------------------------------------------------------------------

@group(0) @binding(1) var<storage, read> coef_in: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> cols: array<vec4<f32>>;

@compute @workgroup_size(WG)
fn gather(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) lid: u32) {
  let e = invocation(wg, nwg, lid);
  let wo = outCols();
  if (e >= p.planes * p.h * wo) { return; }
  let plane = e / (p.h * wo);
  let r = (e / wo) % p.h;
  let j = e % wo;
  let span = covering(r, p.h);
  var s = vec4(0.0);
  for (var i = span.x; i <= span.y; i++) {
    s += tap(r - i) * coef_in[(plane * outRows() + i) * wo + j];
  }
  cols[e] = s;
}

@group(0) @binding(3) var<storage, read> cols_in: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read> upstream: array<f32>;
@group(0) @binding(5) var<storage, read_write> grad_x: array<f32>;
@group(0) @binding(6) var<storage, read_write> grad_y: array<f32>;

@compute @workgroup_size(WG)
fn backward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) lid: u32) {
  let q = invocation(wg, nwg, lid);
  if (q >= p.planes * p.h * p.w) { return; }
  let c = q % p.w;
  let row = (q / p.w) * outCols();
  let span = covering(c, p.w);
  var s = vec4(0.0);  // A, A', B, C
  for (var j = span.x; j <= span.y; j++) {
    s += tap(c - j) * cols_in[row + j];
  }
  let g = p.scale * upstream[0];
  let i = p.first * p.h * p.w + q;
  grad_x[i] = g * (s.x + 2.0 * x[i] * s.z + y[i] * s.w);
  grad_y[i] = g * (s.y + 2.0 * y[i] * s.z + x[i] * s.w);
}
