// nn.wgsl: the label gather and the backward of crossEntropy. logits / softmax are f32 [rows, classes] row-major,
// labels i32 [rows]. A label outside [0, classes) cannot be reported synchronously, so it turns its row to NaN.
// Entry points (one invocation each; the workgroup index spread over x and y):
//   pick:     out[n] = logits[n, labels[n]], or NaN.                      bindings: 1 logits, 2 labels, 3 out [rows]
//   backward: out[n, c] = (softmax[n, c] − [c == labels[n]]) · g[0] / rows, or NaN for the whole row.
//                                                bindings: 1 softmax, 2 labels, 3 out [rows, classes], 4 g [1]
struct Params {
  count: u32,    // invocations: rows for pick, rows · classes for backward
  rows: u32,
  classes: u32,
  nan: f32,      // a quiet NaN from the host: WGSL has no NaN constant (a constant expression may not be NaN)
}

override WG: u32 = 256;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> labels: array<i32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
@group(0) @binding(4) var<storage, read> g: array<f32>;

fn index(wg: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
  return (wg.y * nwg.x + wg.x) * WG + lid;
}

fn valid(label: i32) -> bool {
  return label >= 0 && label < i32(p.classes);
}

@compute @workgroup_size(WG)
fn pick(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
  let n = index(wg, nwg, lid);
  if (n >= p.count) { return; }
  let label = labels[n];
  out[n] = select(p.nan, x[n * p.classes + min(u32(max(label, 0)), p.classes - 1u)], valid(label));
}

@compute @workgroup_size(WG)
fn backward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) lid: u32) {
  let i = index(wg, nwg, lid);
  if (i >= p.count) { return; }
  let label = labels[i / p.classes];
  let onehot = select(0.0, 1.0, i32(i % p.classes) == label);
  out[i] = select(p.nan, (x[i] - onehot) * g[0] / f32(p.rows), valid(label));
}
