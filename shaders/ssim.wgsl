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
// llvmpipe). An invocation computes four neighbouring values along its pass and loops WIN + 3 times (≤ 66).
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

// Each invocation computes four neighbouring values of what its pass writes, along the pass's direction, and
// loops WIN + 3 times: every value it reads serves up to four of them (a CPU adapter pays per read, lane by
// lane). slide gives the taps at input offset k from the four values' first window start: lane t holds
// g[k − t], 0 outside the window, from the previous offset's by a shift.
fn slide(prev: vec4<f32>, k: u32) -> vec4<f32> {
  return vec4(select(0.0, tap(min(k, p.win - 1u)), k < p.win), prev.xyz);
}

// Block e of a pass down columns over `lines` rows: rows r0 .. r0 + 3 of column j of plane `plane` (counted
// from the dispatch's first), j fastest so that neighbouring invocations read neighbouring values.
struct ColumnBlock {
  plane: u32,
  r0: u32,
  j: u32,
}

fn columnBlock(e: u32, lines: u32) -> ColumnBlock {
  let wo = outCols();
  let rest = e / wo;
  let blocks = (lines + 3u) / 4u;
  return ColumnBlock(rest / blocks, 4u * (rest % blocks), e % wo);
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
  let blocks = (wo + 3u) / 4u;
  if (e >= p.planes * p.h * blocks) { return; }
  let line = e / blocks;   // plane · H + row, from the dispatch's first plane
  let j0 = 4u * (e % blocks);
  let start = (p.first * p.h + line) * p.w + j0;
  var m: mat4x4<f32>;      // column t: Σ g·(x, y, x², y²) for output column j0 + t
  var mxy = vec4(0.0);     // lane t: Σ g·xy
  var g = vec4(0.0);
  for (var k = 0u; k < p.win + 3u; k++) {
    g = slide(g, k);
    // Inputs past the row's end only feed columns past wo, which are not written.
    let at = start + min(k, p.w - 1u - j0);
    let xv = x[at];
    let yv = y[at];
    let v = vec4(xv, yv, xv * xv, yv * yv);
    m[0] += g.x * v;
    m[1] += g.y * v;
    m[2] += g.z * v;
    m[3] += g.w * v;
    mxy += g * (xv * yv);
  }
  for (var t = 0u; t < 4u; t++) {
    if (j0 + t < wo) {
      rows[line * wo + j0 + t] = m[t];
      rows_xy[line * wo + j0 + t] = mxy[t];
    }
  }
}

@group(0) @binding(1) var<storage, read> rows_in: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> rows_xy_in: array<f32>;
@group(0) @binding(3) var<storage, read_write> smap: array<f32>;
@group(0) @binding(4) var<storage, read_write> coef: array<vec4<f32>>;

// The window sums of output rows b.r0 .. b.r0 + 3 at column b.j: the row sums summed down the window.
struct WindowSums {
  m: mat4x4<f32>,  // column t: μx, μy, E[x²], E[y²] of row r0 + t
  xy: vec4<f32>,   // lane t: E[xy]
}

fn windowSums(b: ColumnBlock) -> WindowSums {
  let wo = outCols();
  let top = b.plane * p.h * wo + b.j;
  var s: WindowSums;
  var g = vec4(0.0);
  for (var k = 0u; k < p.win + 3u; k++) {
    g = slide(g, k);
    // Rows past the plane's end only feed output rows past ho, which are not written.
    let at = top + min(b.r0 + k, p.h - 1u) * wo;
    let v = rows_in[at];
    s.m[0] += g.x * v;
    s.m[1] += g.y * v;
    s.m[2] += g.z * v;
    s.m[3] += g.w * v;
    s.xy += g * rows_xy_in[at];
  }
  return s;
}

struct Ssim {
  s: f32,
  coef: vec4<f32>,  // a, a', b, c
}

// S and its coefficients from the window sums m = (μx, μy, E[x²], E[y²]) and E[xy].
fn ssimOf(m: vec4<f32>, exy: f32) -> Ssim {
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

// Index in the dispatch's smap and coef of output row b.r0 + t, column b.j; and the count of output blocks.
fn outputIndex(b: ColumnBlock, t: u32) -> u32 {
  return (b.plane * outRows() + b.r0 + t) * outCols() + b.j;
}

fn outputBlocks() -> u32 {
  return p.planes * ((outRows() + 3u) / 4u) * outCols();
}

// Two entries, not one with a flag: an entry that references coef needs it in its bind group.
@compute @workgroup_size(WG)
fn forward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) lid: u32) {
  let e = invocation(wg, nwg, lid);
  if (e >= outputBlocks()) { return; }
  let b = columnBlock(e, outRows());
  let sums = windowSums(b);
  for (var t = 0u; t < 4u; t++) {
    if (b.r0 + t < outRows()) {
      smap[p.first * outRows() * outCols() + outputIndex(b, t)] = ssimOf(sums.m[t], sums.xy[t]).s;
    }
  }
}

@compute @workgroup_size(WG)
fn forward_grad(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
  let e = invocation(wg, nwg, lid);
  if (e >= outputBlocks()) { return; }
  let b = columnBlock(e, outRows());
  let sums = windowSums(b);
  for (var t = 0u; t < 4u; t++) {
    if (b.r0 + t < outRows()) {
      let r = ssimOf(sums.m[t], sums.xy[t]);
      let o = outputIndex(b, t);
      smap[p.first * outRows() * outCols() + o] = r.s;
      coef[o] = r.coef;
    }
  }
}

// ---- backward --------------------------------------------------------------------------------------------
// Both are "full" correlations: value r gathers g[r − i]·v[i] over the i in [0, n) with 0 ≤ r − i < WIN. For
// four values r0 .. r0 + 3 the loop takes i = r0 + 3 − k, so value t's tap g[k − (3 − t)] is slide's lane 3 − t.

fn gatherInto(s: ptr<function, mat4x4<f32>>, g: vec4<f32>, v: vec4<f32>) {
  (*s)[0] += g.w * v;
  (*s)[1] += g.z * v;
  (*s)[2] += g.y * v;
  (*s)[3] += g.x * v;
}

@group(0) @binding(1) var<storage, read> coef_in: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> cols: array<vec4<f32>>;

@compute @workgroup_size(WG)
fn gather(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) lid: u32) {
  let e = invocation(wg, nwg, lid);
  let ho = outRows();
  let wo = outCols();
  if (e >= p.planes * ((p.h + 3u) / 4u) * wo) { return; }
  let b = columnBlock(e, p.h);
  var s: mat4x4<f32>;   // column t: row r0 + t
  var g = vec4(0.0);
  for (var k = 0u; k < p.win + 3u; k++) {
    g = slide(g, k);
    let i = i32(b.r0 + 3u) - i32(k);
    let v = coef_in[(b.plane * ho + u32(clamp(i, 0, i32(ho) - 1))) * wo + b.j];
    gatherInto(&s, g, select(vec4(0.0), v, i >= 0 && i < i32(ho)));
  }
  for (var t = 0u; t < 4u; t++) {
    if (b.r0 + t < p.h) { cols[(b.plane * p.h + b.r0 + t) * wo + b.j] = s[t]; }
  }
}

@group(0) @binding(3) var<storage, read> cols_in: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read> upstream: array<f32>;
@group(0) @binding(5) var<storage, read_write> grad_x: array<f32>;
@group(0) @binding(6) var<storage, read_write> grad_y: array<f32>;

@compute @workgroup_size(WG)
fn backward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) lid: u32) {
  let e = invocation(wg, nwg, lid);
  let wo = outCols();
  let blocks = (p.w + 3u) / 4u;
  if (e >= p.planes * p.h * blocks) { return; }
  let line = e / blocks;   // plane · H + row, from the dispatch's first plane
  let c0 = 4u * (e % blocks);
  var s: mat4x4<f32>;      // column t: (A, A', B, C) at pixel c0 + t
  var g = vec4(0.0);
  for (var k = 0u; k < p.win + 3u; k++) {
    g = slide(g, k);
    let j = i32(c0 + 3u) - i32(k);
    let v = cols_in[line * wo + u32(clamp(j, 0, i32(wo) - 1))];
    gatherInto(&s, g, select(vec4(0.0), v, j >= 0 && j < i32(wo)));
  }
  let scale = p.scale * upstream[0];
  let base = (p.first * p.h + line) * p.w + c0;
  for (var t = 0u; t < 4u; t++) {
    if (c0 + t < p.w) {
      let i = base + t;
      let a = s[t];
      grad_x[i] = scale * (a.x + 2.0 * x[i] * a.z + y[i] * a.w);
      grad_y[i] = scale * (a.y + 2.0 * y[i] * a.z + x[i] * a.w);
    }
  }
}
