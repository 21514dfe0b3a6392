// softmax.wgsl: softmax and logSoftmax along contiguous rows, forward and backward, one workgroup per row.
// Rows [rows, len] row-major, bound as vec4s; the workgroup index, spread over x and y, is the row. Each
// invocation folds the row's quads (elements 4q .. 4q + 3) q = lid, lid + WG, ... (a SIMD group reads
// neighbouring quads together), the workgroup merges its WG partials in a tree in workgroup memory, and a
// second walk over the same quads writes the row. A quad is one vec4 where len is a multiple of 4; else
// (ELEMENTS) its elements are read and written one by one, the row's last quad short. So each element is read
// twice and written once, in one dispatch, where logsumexp then a broadcast difference took two dispatches
// and a partials pass.
//   forward:  LOG: y = (x − m) − log s, else y = exp((x − m) − log s); m the row max and s = Σ exp(x − m),
//             folded online as reduce.wgsl's logsumexp (NaN wins; m = ±∞ gives no ∞ − ∞). (x − m) − log s
//             is exact to f32 where x − (m + log s) would carry the rounding of m + log s. A row holding +∞
//             is NaN throughout (logSBeside), as torch's.
//                                                                     bindings: 1 x, 2 y
//   backward: g the gradient of y. LOG: dx = g − exp(y)·Σ g, else dx = y·(g − Σ g·y).
//                                                                     bindings: 1 y, 2 dx, 3 g
// No invocation loops more than 2·⌈len / 4WG⌉ + log2(WG) times: the host sends longer rows elsewhere.
//! include lib/nan.wgsl
//! include lib/logsumexp.wgsl

struct Params {
  rows: u32,
  len: u32,    // elements per row
  ninf: f32,   // −∞ from the host: WGSL has no infinity literal
}

override WG: u32 = 256;  // a power of two
override LOG: bool = false;
override ELEMENTS: bool = false;  // len is not a multiple of 4

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> out: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> g: array<vec4<f32>>;

var<workgroup> partial: array<vec2<f32>, WG>;

fn rowOf(wg: vec3<u32>, nwg: vec3<u32>) -> u32 {
  return wg.y * nwg.x + wg.x;
}

// Quad q of the row that starts at element `base` (a multiple of 4 unless ELEMENTS), `fill` past its end.
fn loadA(base: u32, q: u32, fill: f32) -> vec4<f32> {
  if (!ELEMENTS) { return a[base / 4u + q]; }
  let e = base + 4u * q;
  let end = base + p.len;
  return vec4<f32>(select(fill, a[e / 4u][e % 4u], e < end),
                   select(fill, a[(e + 1u) / 4u][(e + 1u) % 4u], e + 1u < end),
                   select(fill, a[(e + 2u) / 4u][(e + 2u) % 4u], e + 2u < end),
                   select(fill, a[(e + 3u) / 4u][(e + 3u) % 4u], e + 3u < end));
}

fn loadG(base: u32, q: u32) -> vec4<f32> {
  if (!ELEMENTS) { return g[base / 4u + q]; }
  let e = base + 4u * q;
  let end = base + p.len;
  return vec4<f32>(select(0.0, g[e / 4u][e % 4u], e < end),
                   select(0.0, g[(e + 1u) / 4u][(e + 1u) % 4u], e + 1u < end),
                   select(0.0, g[(e + 2u) / 4u][(e + 2u) % 4u], e + 2u < end),
                   select(0.0, g[(e + 3u) / 4u][(e + 3u) % 4u], e + 3u < end));
}

fn store(base: u32, q: u32, v: vec4<f32>) {
  if (!ELEMENTS) {
    out[base / 4u + q] = v;
    return;
  }
  let e = base + 4u * q;
  let end = base + p.len;
  if (e < end) { out[e / 4u][e % 4u] = v.x; }
  if (e + 1u < end) { out[(e + 1u) / 4u][(e + 1u) % 4u] = v.y; }
  if (e + 2u < end) { out[(e + 2u) / 4u][(e + 2u) % 4u] = v.z; }
  if (e + 3u < end) { out[(e + 3u) / 4u][(e + 3u) % 4u] = v.w; }
}

// The workgroup's partials combined, in every invocation: a tree, so WG = 256 takes 8 steps. With sumX it adds
// (the backward's sums), else merges log-sum-exp states.
fn combineAll(mine: vec2<f32>, lid: u32, sumX: bool) -> vec2<f32> {
  partial[lid] = mine;
  for (var stride = WG / 2u; stride > 0u; stride /= 2u) {
    workgroupBarrier();
    if (lid < stride) {
      let other = partial[lid + stride];
      partial[lid] = select(mergeLse(partial[lid], other), partial[lid] + other, sumX);
    }
  }
  workgroupBarrier();
  return partial[0];
}

@compute @workgroup_size(WG)
fn forward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) lid: u32) {
  let row = rowOf(wg, nwg);
  if (row >= p.rows) { return; }
  let base = row * p.len;
  let quads = (p.len + 3u) / 4u;
  var state = vec2<f32>(p.ninf, 0.0);
  for (var q = lid; q < quads; q += WG) {
    let v = loadA(base, q, p.ninf);
    // Past the row's end (ELEMENTS) v is −∞: a term of 0 once any element is finite (a row of −∞ is NaN).
    let m = maxNaN(state.x, maxNaN(maxNaN(v.x, v.y), maxNaN(v.z, v.w)));
    let terms = select(exp(v - m), vec4<f32>(1.0), v == vec4<f32>(m));
    state = vec2<f32>(m, state.y * rescale(state.x, m) + dot(terms, vec4<f32>(1.0)));
  }
  let total = combineAll(state, lid, false);
  let m = vec4<f32>(total.x);
  let logS = vec4<f32>(logSBeside(total.x, total.y));
  for (var q = lid; q < quads; q += WG) {
    let d = (loadA(base, q, 0.0) - m) - logS;
    store(base, q, select(expNaN4(d), d, LOG));
  }
}

@compute @workgroup_size(WG)
fn backward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) lid: u32) {
  let row = rowOf(wg, nwg);
  if (row >= p.rows) { return; }
  let base = row * p.len;
  let quads = (p.len + 3u) / 4u;
  var s = 0.0;
  for (var q = lid; q < quads; q += WG) {
    let gq = loadG(base, q);
    s += select(dot(gq, loadA(base, q, 0.0)), dot(gq, vec4<f32>(1.0)), LOG);
  }
  let total = vec4<f32>(combineAll(vec2<f32>(s, 0.0), lid, true).x);
  for (var q = lid; q < quads; q += WG) {
    let y = loadA(base, q, 0.0);
    let gq = loadG(base, q);
    store(base, q, select(y * (gq - total), gq - exp(y) * total, LOG));
  }
}
