// gather.wgsl: rows of a table picked by i32 indices (embedding, gatherRows) and the adjoint, a scatter-add.
// x f32 [B, L, D] row-major (embedding: the table [L, D] itself, B = 1), ids i32 [B, K], out f32 [B, K, D].
// One invocation per element of out, or per vec4 in the entries ending in 4 (D a multiple of 4; p.dim counts
// vec4s then); the workgroup index spread over x and y.
//   gather:     out[b, k, :] = x[b, ids[b, k], :]. An id outside [0, L) gives a NaN row and is reported with its
//               position b·K + k in `bad` (lib/bad_index.wgsl; the next readback throws).
//                                                               bindings: 1 x, 2 ids, 3 out, 4 bad
//   scatterAdd: dx[b, ids[b, k], :] += g[b, k, :] into a zeroed dx [B, L, D]. WGSL has no f32 atomics: each add
//               is a compare-and-swap of the word's bits, tried again while another add changed the word in
//               between, so an add retries at most once per add to its word that lands meanwhile. The sums come
//               in whatever order the adds land. Ids outside [0, L) add nothing.
//                                                               bindings: 1 g, 2 ids, 3 dx (atomic u32 words)
struct Params {
  count: u32,  // invocations
  k: u32,      // ids per batch item
  len: u32,    // rows of x per batch item
  dim: u32,    // elements (or vec4s) per row
  nan: f32,    // a quiet NaN from the host: WGSL has no NaN constant
}

override WG: u32 = 256;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> x4: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> ids: array<i32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var<storage, read_write> out4: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> dx: array<atomic<u32>>;
@group(0) @binding(4) var<storage, read_write> bad: array<atomic<u32>, 4>;
//! include lib/bad_index.wgsl

// Invocation i's id position b·K + k, the element (or vec4) d of its row, and the source row's offset in x
// (in p.dim units; valid only where the id is in range).
struct At {
  position: u32,
  d: u32,
  id: i32,
  valid: bool,
  row: u32,
}

fn at(i: u32) -> At {
  let position = i / p.dim;
  let id = ids[position];
  let valid = id >= 0 && u32(id) < p.len;
  let b = position / p.k;
  return At(position, i % p.dim, id, valid, (b * p.len + u32(max(id, 0))) * p.dim);
}

fn index(wg: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
  return (wg.y * nwg.x + wg.x) * WG + lid;
}

@compute @workgroup_size(WG)
fn gather(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) lid: u32) {
  let i = index(wg, nwg, lid);
  if (i >= p.count) { return; }
  let a = at(i);
  out[i] = select(p.nan, x[select(0u, a.row + a.d, a.valid)], a.valid);
  if (!a.valid && a.d == 0u) { reportBadIndex(a.id, a.position); }
}

@compute @workgroup_size(WG)
fn gather4(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) lid: u32) {
  let i = index(wg, nwg, lid);
  if (i >= p.count) { return; }
  let a = at(i);
  out4[i] = select(vec4<f32>(p.nan), x4[select(0u, a.row + a.d, a.valid)], a.valid);
  if (!a.valid && a.d == 0u) { reportBadIndex(a.id, a.position); }
}

fn addTo(word: u32, v: f32) {
  var old = atomicLoad(&dx[word]);
  loop {
    let r = atomicCompareExchangeWeak(&dx[word], old, bitcast<u32>(bitcast<f32>(old) + v));
    if (r.exchanged) { break; }
    old = r.old_value;
  }
}

@compute @workgroup_size(WG)
fn scatterAdd(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
  let i = index(wg, nwg, lid);
  if (i >= p.count) { return; }
  let a = at(i);
  if (a.valid) { addTo(a.row + a.d, x[i]); }
}

@compute @workgroup_size(WG)
fn scatterAdd4(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
  let i = index(wg, nwg, lid);
  if (i >= p.count) { return; }
  let a = at(i);
  if (!a.valid) { return; }
  let g = x4[i];
  for (var c = 0u; c < 4u; c++) { addTo(4u * (a.row + a.d) + c, g[c]); }
}
