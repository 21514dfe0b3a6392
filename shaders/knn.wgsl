// knn.wgsl: the weighted vote of a k-nearest-neighbour classifier (Wu et al., 2018; lightly's knn_predict,
// solo-learn's WeightedKNNClassifier): scores[b, c] += weight[b, j] for each neighbour j of query b, c being the
// label of the bank row it is. One invocation per query adds its K votes into its own row of the zeroed scores
// [B, C], so no two invocations write one score (no atomics); K ≤ 16,384 (topk's cap) bounds the loop. A label
// outside [0, C) adds nothing and is reported with its bank row (lib/bad_index.wgsl; the next readback throws).
// A dispatch takes one chunk of queries (src/knn.ts) and a window of the scores, its rows from element p.first.
//   vote:       neighbours are bank rows.
//   voteParts:  a bank over one binding ran in parts (part c from row c·short_rows + min(c, long_parts), the
//               first long_parts one row longer), each giving its K nearest: neighbours are positions in those
//               candidates [B, parts·K], whose entry is a row of the part pos / K.
// Bindings: 0 params, 1 weight [B, K] f32, 2 neighbours [B, K] i32, 3 labels [N] i32, 4 scores (a window of
// [all queries, C]) f32, 5 bad, 6 candidates [B, parts·K] i32 (voteParts)
struct Params {
  queries: u32,  // B in this chunk of queries
  k: u32,
  classes: u32,  // C
  first: u32,    // the chunk's first score in the window
  short_rows: u32,  // voteParts: rows of the shorter parts of the bank
  long_parts: u32,  // voteParts: parts of short_rows + 1 rows, first
  per_query: u32,  // voteParts: candidates per query, parts·K
}

override WG: u32 = 64;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> weight: array<f32>;
@group(0) @binding(2) var<storage, read> neighbours: array<i32>;
@group(0) @binding(3) var<storage, read> labels: array<i32>;
@group(0) @binding(4) var<storage, read_write> scores: array<f32>;
@group(0) @binding(5) var<storage, read_write> bad: array<atomic<u32>, 4>;
@group(0) @binding(6) var<storage, read> candidates: array<i32>;
//! include lib/bad_index.wgsl

// Query b's vote for bank row `row` with weight j.
fn addVote(b: u32, j: u32, row: u32) {
  let c = labels[row];
  if (c >= 0 && u32(c) < p.classes) {
    scores[p.first + b * p.classes + u32(c)] += weight[j];
  } else {
    reportBadIndex(c, row);
  }
}

@compute @workgroup_size(WG)
fn vote(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
  let b = (wg.y * nwg.x + wg.x) * WG + lid;
  if (b >= p.queries) { return; }
  for (var j = b * p.k; j < (b + 1u) * p.k; j++) { addVote(b, j, u32(neighbours[j])); }
}

@compute @workgroup_size(WG)
fn voteParts(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) lid: u32) {
  let b = (wg.y * nwg.x + wg.x) * WG + lid;
  if (b >= p.queries) { return; }
  for (var j = b * p.k; j < (b + 1u) * p.k; j++) {
    let position = u32(neighbours[j]);
    let part = position / p.k;
    let start = part * p.short_rows + min(part, p.long_parts);
    addVote(b, j, start + u32(candidates[b * p.per_query + position]));
  }
}
