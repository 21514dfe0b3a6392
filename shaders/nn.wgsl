// nn.wgsl: crossEntropy's per-row losses, its mean and its backward. logits / softmax are f32 [rows, classes]
// row-major, labels i32 [rows]. A row whose label is p.ignore is left out: loss 0, gradient 0. Any other label
// outside [0, classes) turns its row to NaN, and nll reports it and its row in `bad` (lib/bad_index.wgsl; the
// next readback throws).
// Logits over one binding run in parts of rows from p.row0 on: logits / softmax and backward's out are bound as
// the part's window (indices part-relative), labels, lse, nll's out and upstream whole (indices row0 + n).
// Entry points (one invocation each; the workgroup index spread over x and y):
//   nll:      out[n] = lse[n] − logits[n, labels[n]], 0 where ignored, or NaN; with COUNT also out[rows + n] = 1
//             where row n is kept (not ignored), else 0, so one sum over [2, rows] gives (Σ loss, kept rows).
//             lse comes as two halves (src/reduce.ts splitLogsumexp): the row max m at n, log Σ exp(x − m) at
//             p.half + n, taken as (m − logit) + log Σ, which keeps the rounding of m + log Σ (ulp(m)) out.
//                               bindings: 1 logits, 2 labels, 3 out [rows] ([2, rows] with COUNT), 4 lse, 5 bad
//   mean:     out[0] = num[0] / sums[1] (sums from nll with COUNT), NaN when no row is kept (PyTorch's 0/0).
//                                                                  bindings: 1 num, 2 sums [2], 3 out [1]
//   backward: out[n, c] = (softmax[n, c] − [c == labels[n]]) · g, g = upstream[n] with UPSTREAM_EACH (reduction
//             none) else upstream[0] (mean's upstream already over the kept rows); 0 where ignored, NaN rows for
//             other labels outside [0, classes).
//                                        bindings: 1 softmax, 2 labels, 3 out [rows, classes], 4 upstream
struct Params {
  count: u32,    // invocations: the part's rows for nll, 1 for mean, its rows · classes for backward
  rows: u32,
  classes: u32,
  nan: f32,      // a quiet NaN from the host: WGSL has no NaN constant (a constant expression may not be NaN)
  ignore: i32,   // ignoreIndex
  half: u32,     // nll: where lse's second half starts
  row0: u32,     // the part's first row
}

override WG: u32 = 256;
override COUNT: bool = false;
override UPSTREAM_EACH: bool = false;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> labels: array<i32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
@group(0) @binding(4) var<storage, read> row_in: array<f32>;  // nll's lse, backward's upstream
@group(0) @binding(2) var<storage, read> sums: array<f32>;
@group(0) @binding(5) var<storage, read_write> bad: array<atomic<u32>, 4>;
//! include lib/bad_index.wgsl

fn index(wg: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
  return (wg.y * nwg.x + wg.x) * WG + lid;
}

fn valid(label: i32) -> bool {
  return label >= 0 && label < i32(p.classes);
}

// v for a row of label `label`: 0 where ignored, NaN where the label is outside [0, classes).
fn rowValue(v: f32, label: i32) -> f32 {
  return select(select(p.nan, v, valid(label)), 0.0, label == p.ignore);
}

@compute @workgroup_size(WG)
fn nll(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
       @builtin(local_invocation_index) lid: u32) {
  let n = index(wg, nwg, lid);
  if (n >= p.count) { return; }
  let row = p.row0 + n;
  let label = labels[row];
  let picked = x[n * p.classes + min(u32(max(label, 0)), p.classes - 1u)];
  out[row] = rowValue((row_in[row] - picked) + row_in[p.half + row], label);
  if (!valid(label) && label != p.ignore) { reportBadIndex(label, row); }
  if (COUNT) { out[p.rows + row] = select(1.0, 0.0, label == p.ignore); }
}

@compute @workgroup_size(1)
fn mean() {
  let kept = sums[1];
  out[0] = select(p.nan, x[0] / kept, kept > 0.0);
}

@compute @workgroup_size(WG)
fn backward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) lid: u32) {
  let i = index(wg, nwg, lid);
  if (i >= p.count) { return; }
  let row = p.row0 + i / p.classes;
  let label = labels[row];
  let onehot = select(0.0, 1.0, i32(i % p.classes) == label);
  out[i] = rowValue((x[i] - onehot) * row_in[select(0u, row, UPSTREAM_EACH)], label);
}
