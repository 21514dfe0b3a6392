// pretext.wgsl: the kernels of the pretext-task generators (src/pretext.ts). Images are f32 [N, C, H, W].
// Randomness drawn here is Philox keyed by the seed with counter (position, sample, tag, 0), as src/ref/pretext.ts.
// Entry points (the workgroup index spread over x and y, one invocation per output element unless noted):
//   tiles:      out [N, C, OH, OW] made of th×tw tiles; output tile t of sample n shows the th×tw source rect
//               whose top-left pixel is origins[n·T + t] = (row, column). One invocation per run of up to SPAN
//               pixels of a tile's row: a few divisions per run, not per pixel (a CPU adapter divides lane by
//               lane).                                  bindings: 1 x, 2 origins (i32 [N, T, 2]), 3 out
//   mask_keys:  a random u32 key per patch.                      bindings: 1 keys (u32 [N, L])
//   mask_rank:  a patch is masked (1) when its key ranks among the k smallest of its image (ties by index), so
//               exactly k per image; loops L times. MAE's order too: shuffle lists the visible patches, then the
//               masked ones, each in key order, and restore[l] is patch l's place in shuffle (its inverse).
//               bindings: 1 keys, 2 mask (f32 [N, L]), 3 shuffle, 4 restore (i32 [N, L])
//   mask_apply: zero the pixels of masked patches.               bindings: 1 x, 2 mask, 3 out
//               (mask_apply4: a vec4 per invocation where W and the patch are multiples of 4, so a vec4 lies in
//               one patch row: a quarter of the divisions and lane-by-lane accesses)
//   tokens_mask: BERT masking of i32 ids [N, L]: a position is chosen when its 24-bit draw is below `chosen`; of the
//               chosen, 80% become mask_id, 10% a random id, 10% stay; labels hold the id where chosen, else -100.
//               bindings: 1 tokens, 2 input, 3 labels
//! include lib/philox.wgsl

struct Params {
  n: u32,
  c: u32,
  h: u32,       // source height, width
  w: u32,
  oh: u32,      // output height, width (tiles); patch (mask_apply)
  ow: u32,
  th: u32,      // tile height, width
  tw: u32,
  cols: u32,    // patches per row (mask_apply)
  len: u32,     // patches (masks) or tokens per sample
  k: u32,       // patches masked per image
  seed_lo: u32,
  seed_hi: u32,
  tag: u32,
  chosen: u32,  // tokens: 24-bit threshold of the chosen positions
  mask_id: i32,
  vocab: u32,
}

override WG: u32 = 256;
override SPAN: u32 = 64;   // tiles: most pixels one invocation copies

@group(0) @binding(0) var<uniform> p: Params;

fn index(wg: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
  return (wg.y * nwg.x + wg.x) * WG + lid;
}

@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> origins: array<vec2<i32>>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(WG)
fn tiles(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(local_invocation_index) lid: u32) {
  let per_row = p.ow / p.tw;                 // tiles across
  let parts = (p.tw + SPAN - 1u) / SPAN;     // runs per tile row
  let runs = p.oh * per_row * parts;         // runs per image plane
  let i = index(wg, nwg, lid);
  if (i >= p.n * p.c * runs) { return; }
  let plane = i / runs;
  let run = i % runs;
  let part = run % parts;
  let column = (run / parts) % per_row;      // which tile across
  let oy = run / (parts * per_row);
  let tile = (oy / p.th) * per_row + column;
  let origin = vec2<u32>(origins[(plane / p.c) * (p.oh / p.th) * per_row + tile]);
  let src = (plane * p.h + origin.x + oy % p.th) * p.w + origin.y;
  let dst = (plane * p.oh + oy) * p.ow + column * p.tw;
  for (var j = part * SPAN; j < min(p.tw, (part + 1u) * SPAN); j++) { out[dst + j] = x[src + j]; }
}

@group(0) @binding(1) var<storage, read_write> keys_out: array<u32>;

@compute @workgroup_size(WG)
fn mask_keys(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) lid: u32) {
  let i = index(wg, nwg, lid);
  if (i >= p.n * p.len) { return; }
  keys_out[i] = philox(vec4<u32>(i % p.len, i / p.len, p.tag, 0u), vec2<u32>(p.seed_lo, p.seed_hi)).x;
}

@group(0) @binding(1) var<storage, read> keys: array<u32>;
@group(0) @binding(2) var<storage, read_write> mask_out: array<f32>;
@group(0) @binding(3) var<storage, read_write> shuffle_out: array<i32>;
@group(0) @binding(4) var<storage, read_write> restore_out: array<i32>;

@compute @workgroup_size(WG)
fn mask_rank(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) lid: u32) {
  let i = index(wg, nwg, lid);
  if (i >= p.n * p.len) { return; }
  let l = i % p.len;
  let base = i - l;
  let key = keys[i];
  var rank = 0u;
  for (var j = 0u; j < p.len; j++) {
    let other = keys[base + j];
    rank += select(0u, 1u, other < key || (other == key && j < l));
  }
  mask_out[i] = select(0.0, 1.0, rank < p.k);
  let place = select(p.len - p.k + rank, rank - p.k, rank >= p.k);
  shuffle_out[base + place] = i32(l);
  restore_out[i] = i32(place);
}

@group(0) @binding(2) var<storage, read> mask: array<f32>;

// Whether element e of x (element e + 1 .. e + 3 too, for mask_apply4) lies in a masked patch.
fn inMaskedPatch(e: u32) -> bool {
  let plane = p.h * p.w;
  let at = e % plane;
  let side = p.oh;   // patch side
  return mask[e / (p.c * plane) * p.len + (at / p.w / side) * p.cols + at % p.w / side] != 0.0;
}

@compute @workgroup_size(WG)
fn mask_apply(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
  let i = index(wg, nwg, lid);
  if (i >= p.n * p.c * p.h * p.w) { return; }
  out[i] = select(x[i], 0.0, inMaskedPatch(i));
}

@group(0) @binding(1) var<storage, read> x4: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> out4: array<vec4<f32>>;

@compute @workgroup_size(WG)
fn mask_apply4(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
  let i = index(wg, nwg, lid);
  if (4u * i >= p.n * p.c * p.h * p.w) { return; }
  out4[i] = select(x4[i], vec4<f32>(0.0), inMaskedPatch(4u * i));
}

@group(0) @binding(1) var<storage, read> tokens: array<i32>;
@group(0) @binding(2) var<storage, read_write> masked_ids: array<i32>;
@group(0) @binding(3) var<storage, read_write> labels: array<i32>;

@compute @workgroup_size(WG)
fn tokens_mask(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
  let i = index(wg, nwg, lid);
  if (i >= p.n * p.len) { return; }
  let r = philox(vec4<u32>(i % p.len, i / p.len, p.tag, 0u), vec2<u32>(p.seed_lo, p.seed_hi));
  let id = tokens[i];
  let chosen = (r.x >> 8u) < p.chosen;
  let action = r.y >> 8u;
  var v = id;
  if (chosen && action < 13421773u) {          // round(0.8 · 2^24)
    v = p.mask_id;
  } else if (chosen && action < 15099494u) {   // round(0.9 · 2^24)
    v = i32(r.z % p.vocab);
  }
  masked_ids[i] = v;
  labels[i] = select(-100, id, chosen);
}
