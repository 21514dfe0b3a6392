// reconstruction.wgsl: reconstruction losses, fused. A pass reads its inputs once, reduces the loss in the
// same pass and, when asked, writes d(loss)/d(pred) in that same pass. The workgroup index is spread over x
// and y: w = wg.y * nwg.x + wg.x. Sums are trees: the elementwise losses sum ITEMS elements per invocation
// into one partial each, then `combine` passes sum ITEMS partials per invocation until one is left (no
// workgroup barriers: on CPU adapters such as llvmpipe each barrier costs a switch per SIMD group, several
// times the memory traffic); the masked loss sums each patch with a workgroup tree.
//
// Elementwise losses, x = pred, y = target, w = weight (1 unless WEIGHTED), per element ℓ(x, y)·w and
// dℓ/dx·w; LOSS 0 mse, 1 l1, 2 huber (param = delta), 3 smoothL1 (param = beta), 4 bceWithLogits; LOSS 5
// gives bceWithLogits' dℓ/dy = −x in place of dℓ/dx, and no ℓ (`grad` only: its target's gradient).
// Workgroup w covers window elements [w·WG·ITEMS, (w + 1)·WG·ITEMS) as vec4s, invocation lid the vec4s ≡ lid
// mod WG (coalesced), or with LANE_RUNS (CPU adapters) ITEMS / 4 of them in a row. Tensors are bound in whole
// vec4s (engine.ts rounds bindings up; the pool's buffers are 256-byte multiples): a lane past the window's end
// adds nothing to the loss, and its gradient lands in padding nobody reads. With BROADCAST (one window only)
// target and weight are read element by element through strides over pred's dims.
//   reduce:       1 pred, 2 target, 3 weight, 4 partials, 5 grad   partials[part_base + w·WG + lid] = scale · Σ ℓ,
//                 and with WITH_GRAD grad[i] = scale · dℓ/dx
//   grad:         1 pred, 2 target, 3 weight, 4 upstream, 5 grad     grad[i] = scale · dℓ/dx · g, where
//                 g = upstream[i] with UPSTREAM_EACH (reduction "none"), else upstream[0]
//   loss:         1 pred, 2 target, 3 weight, 4 out        out[i] = ℓ (reduction "none")
//
// Masked patch MSE (MAE's loss): workgroup q is patch q = n·L + l of images [N, C, H, W] cut into P×P patches,
// K = P·P·C pixels, visited in image order j = (c·P + py)·P + px. pred is [N, C, H, W] too, or MAE's
// patchified [N, L, K] with pixels in (py, px, c) order (PATCHIFIED). mask[q] (dtype by IN_DTYPE) weights the
// patch; msum[0] = Σ mask. With NORM_PIX the target patch is (t − mean) / sqrt(var + eps), var unbiased.
// Patches with mask 0 read nothing. One invocation loops about 3·K / WG times (K ≤ 65,536, WG ≤ 64 in
// src/reconstruction.ts: ~3,000, under llvmpipe's loop cap). d = pred − target:
//   masked:           1 pred, 2 target, 3 mask, 4 msum, 5 partials   partials[q] = mask · Σ d² / (K · msum)
//   masked_grad:      1 pred, 2 target, 3 mask, 4 msum, 5 partials, 6 grad   and grad = 2d · mask / (K · msum)
//   masked_backward:  1 pred, 2 target, 3 mask, 4 msum, 5 upstream, 6 grad   grad = upstream[0] · that
// The same three with `_lanes` (CPU adapters, P a multiple of 4): invocation q (not workgroup) is patch q; see
// laneLoss.
//
// combine: 1 values (f32, or i32/u32 by IN_DTYPE), 2 sums
//   sums[j] = param + scale · Σ_k values[j + k·M], k < ITEMS, for the M = ⌈count / ITEMS⌉ outputs
struct Params {
  count: u32,      // elements in this window (masked: patches; combine: values)
  part_base: u32,  // index of this window's first partial
  rank: u32,
  scale: f32,      // 1/N for reduction "mean", else 1
  param: f32,      // huber's delta, smoothL1's beta, maskedMSE's eps, combine's offset
  shape: array<vec4<u32>, 2>,     // pred's dims (masked: N, C, H, W, P, patches per row), padded with 1
  stride_t: array<vec4<u32>, 2>,  // element strides of target over pred's dims, 0 where broadcast
  stride_w: array<vec4<u32>, 2>,  // element strides of weight likewise
}

override WG: u32 = 256;  // a power of two (the masked loss's tree)
// Elements (or partials) per invocation, mirrored in src/reconstruction.ts. A constant, not an override:
// llvmpipe unrolls only loops whose trip count is known when the WGSL is compiled (2x faster here).
// Serial sums of 32 f32 terms then a tree over passes: accurate to ~1e-7 relative in practice.
const ITEMS: u32 = 32u;
const ITEMS4: u32 = ITEMS / 4u;  // the elementwise losses read vec4s: llvmpipe pays per access, not per byte
override LOSS: u32 = 0;
override BROADCAST: bool = false;
override WEIGHTED: bool = false;
override UPSTREAM_EACH: bool = false;
override WITH_GRAD: bool = false;  // reduce: the gradient in the same pass
override LANE_RUNS: bool = false;  // elementwise losses: see elementIndex
override NORM_PIX: bool = false;
override PATCHIFIED: bool = false;
override IN_DTYPE: u32 = 0;  // 0 f32, 1 i32, 2 u32
override PRED_STRIDE: u32 = 1u;  // masked lanes: pred elements between neighbouring pixels of a patch row

@group(0) @binding(0) var<uniform> p: Params;

var<workgroup> tree: array<f32, WG>;

// Sum of v over the workgroup, returned to every invocation; call from uniform control flow.
fn treeSum(lid: u32, v: f32) -> f32 {
  tree[lid] = v;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s >>= 1u) {
    if (lid < s) { tree[lid] += tree[lid + s]; }
    workgroupBarrier();
  }
  let total = tree[0];
  workgroupBarrier();  // the next treeSum may overwrite tree[0]
  return total;
}

fn workgroupIndex(wg: vec3<u32>, nwg: vec3<u32>) -> u32 {
  return wg.y * nwg.x + wg.x;
}

fn dim(d: u32) -> u32 {
  return p.shape[d / 4u][d % 4u];
}

fn asF32(bits: u32) -> f32 {
  switch IN_DTYPE {
    case 1u: { return f32(bitcast<i32>(bits)); }
    case 2u: { return f32(bits); }
    default: { return bitcast<f32>(bits); }
  }
}

// ---- elementwise losses ----------------------------------------------------------------------------------

@group(0) @binding(1) var<storage, read> pred: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> tgt: array<vec4<f32>>;  // `target` is a WGSL reserved word
@group(0) @binding(3) var<storage, read> weight: array<vec4<f32>>;

struct LossGrad {
  l: vec4<f32>,  // ℓ
  g: vec4<f32>,  // dℓ/dx
}

//! include lib/log1p.wgsl
//! include lib/nan.wgsl

// ℓ and dℓ/dx of 4 elements, prediction x and target y, with PyTorch's definitions (LOSS 5: 0 and dℓ/dy of
// bce).
fn lossGrad(x: vec4<f32>, y: vec4<f32>) -> LossGrad {
  let d = x - y;
  let a = abs(d);
  let zero = vec4<f32>(0.0);
  let t = vec4<f32>(p.param);
  switch LOSS {
    case 0u: { return LossGrad(d * d, 2.0 * d); }
    // A NaN difference keeps its NaN in the gradient too (sign(NaN) is 0, and NaN fails both comparisons).
    case 1u: { return LossGrad(a, select(sign(d), d, isNan4(d))); }
    case 2u: {
      let g = select(t * sign(d), d, a <= t);
      return LossGrad(select(t * (a - 0.5 * t), 0.5 * d * d, a <= t), select(g, d, isNan4(d)));
    }
    case 3u: {
      let g = select(sign(d), d / t, a < t);
      return LossGrad(select(a - 0.5 * t, 0.5 * d * d / t, a < t), select(g, d, isNan4(d)));
    }
    case 4u: {
      // max(x, 0) − x·y + log1p(e^−|x|) never overflows. σ(x) − y is σ(−|x|) − y for x < 0 and
      // (1 − y) − σ(−|x|) for x ≥ 0, so a confident match (x = 20, y = 1) keeps its gradient −2e-9 where
      // σ(x) − 1 rounds to 0.
      let e = exp(-abs(x));
      let s = e / (1.0 + e);
      return LossGrad(max(x, zero) - x * y + log1p01(e), select(s - y, (1.0 - y) - s, x >= zero));
    }
    default: { return LossGrad(zero, -x); }  // 5: bce's dℓ/dy alone, for the `grad` pass
  }
}

// Element offsets in target and weight of element i of pred (BROADCAST).
fn offsets(i: u32) -> vec2<u32> {
  var o = vec2<u32>(0u);
  var rest = i;
  for (var d = i32(p.rank) - 1; d >= 0; d--) {
    let k = rest % dim(u32(d));
    rest /= dim(u32(d));
    o += k * vec2<u32>(p.stride_t[d / 4][d % 4], p.stride_w[d / 4][d % 4]);
  }
  return o;
}

// (ℓ·w, dℓ/dx·w) of window elements 4v .. 4v + 3; a lane past the window's end has ℓ = 0.
fn element(v: u32) -> LossGrad {
  var y: vec4<f32>;
  var w = vec4<f32>(1.0);
  if (BROADCAST) {
    for (var j = 0u; j < 4u; j++) {
      let o = offsets(min(4u * v + j, p.count - 1u));
      y[j] = tgt[o.x / 4u][o.x % 4u];
      if (WEIGHTED) { w[j] = weight[o.y / 4u][o.y % 4u]; }
    }
  } else {
    y = tgt[v];
    if (WEIGHTED) { w = weight[v]; }
  }
  let r = lossGrad(pred[v], y);
  let live = 4u * v + vec4<u32>(0u, 1u, 2u, 3u) < vec4<u32>(p.count);
  return LossGrad(select(vec4<f32>(0.0), r.l * w, live), r.g * w);
}

// Index of the k-th vec4 of invocation lid in workgroup w: neighbouring invocations read neighbouring vec4s
// (coalesced, as GPUs want), or with LANE_RUNS (CPU adapters) each its own ITEMS4 in a row.
fn elementIndex(w: u32, k: u32, lid: u32) -> u32 {
  if (LANE_RUNS) { return (w * WG + lid) * ITEMS4 + k; }
  return (w * ITEMS4 + k) * WG + lid;
}

@group(0) @binding(4) var<storage, read_write> partials: array<f32>;
@group(0) @binding(5) var<storage, read_write> grad_out: array<vec4<f32>>;

@compute @workgroup_size(WG)
fn reduce(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) lid: u32) {
  let w = workgroupIndex(wg, nwg);
  if (w * ITEMS * WG >= p.count) { return; }
  var s = vec4<f32>(0.0);
  for (var k = 0u; k < ITEMS4; k++) {
    let v = elementIndex(w, k, lid);
    if (4u * v < p.count) {
      let r = element(v);
      s += r.l;
      if (WITH_GRAD) { grad_out[v] = p.scale * r.g; }
    }
  }
  partials[p.part_base + w * WG + lid] = p.scale * dot(s, vec4<f32>(1.0));
}

@group(0) @binding(4) var<storage, read> upstream: array<vec4<f32>>;

@compute @workgroup_size(WG)
fn grad(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
  let w = workgroupIndex(wg, nwg);
  for (var k = 0u; k < ITEMS4; k++) {
    let v = elementIndex(w, k, lid);
    if (4u * v < p.count) {
      grad_out[v] = p.scale * element(v).g * select(vec4<f32>(upstream[0].x), upstream[v], UPSTREAM_EACH);
    }
  }
}

@group(0) @binding(4) var<storage, read_write> loss_out: array<vec4<f32>>;

@compute @workgroup_size(WG)
fn loss(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
  let w = workgroupIndex(wg, nwg);
  for (var k = 0u; k < ITEMS4; k++) {
    let v = elementIndex(w, k, lid);
    if (4u * v < p.count) { loss_out[v] = element(v).l; }
  }
}

// ---- masked patch MSE ------------------------------------------------------------------------------------

@group(0) @binding(1) var<storage, read> patch_pred: array<f32>;
@group(0) @binding(2) var<storage, read> patch_tgt: array<f32>;
@group(0) @binding(3) var<storage, read> mask: array<u32>;
@group(0) @binding(4) var<storage, read> msum: array<f32>;
@group(0) @binding(5) var<storage, read_write> patch_loss: array<f32>;
@group(0) @binding(5) var<storage, read> patch_upstream: array<f32>;
@group(0) @binding(6) var<storage, read_write> patch_grad: array<f32>;

fn patchSize() -> u32 {
  return dim(4u) * dim(4u) * dim(1u);
}

// Indices of patch q's first pixel in target (image layout) and in a patchified pred.
fn patchOrigin(q: u32) -> vec2<u32> {
  let ps = dim(4u);
  let per_row = dim(5u);
  let per_image = (dim(2u) / ps) * per_row;
  let l = q % per_image;
  let img = ((q / per_image) * dim(1u) * dim(2u) + (l / per_row) * ps) * dim(3u) + (l % per_row) * ps;
  return vec2(img, q * patchSize());
}

// (target index, pred index) of pixel j of the patch at `origin` (two divisions: llvmpipe scalarises them).
fn pixel(origin: vec2<u32>, j: u32) -> vec2<u32> {
  let ps = dim(4u);
  let row = j / ps;
  let px = j - row * ps;
  let ch = row / ps;
  let py = row - ch * ps;
  let img = origin.x + (ch * dim(2u) + py) * dim(3u) + px;
  return vec2(img, select(img, origin.y + (py * ps + px) * dim(1u) + ch, PATCHIFIED));
}

// (mean, 1 / sqrt(var + eps)) of target patch q with NORM_PIX, else (0, 1). The patch is a few KiB, so the
// second and third reads of it hit cache.
fn patchNorm(origin: vec2<u32>, lid: u32, live: bool) -> vec2<f32> {
  if (!NORM_PIX) { return vec2(0.0, 1.0); }
  let k = patchSize();
  var s = 0.0;
  if (live) {
    for (var j = lid; j < k; j += WG) { s += patch_tgt[pixel(origin, j).x]; }
  }
  let mean = treeSum(lid, s) / f32(k);
  var v = 0.0;
  if (live) {
    for (var j = lid; j < k; j += WG) {
      let t = patch_tgt[pixel(origin, j).x] - mean;
      v += t * t;
    }
  }
  return vec2(mean, inverseSqrt(treeSum(lid, v) / f32(k - 1u) + p.param));
}

fn patchDiff(at: vec2<u32>, norm: vec2<f32>) -> f32 {
  return patch_pred[at.y] - (patch_tgt[at.x] - norm.x) * norm.y;
}

// Writes grad = g · 2d · mask / (K · msum) over patch q (zeros where masked out); returns this invocation's Σ d².
fn patchGrad(q: u32, lid: u32, g: f32) -> f32 {
  let m = asF32(mask[q]);
  let origin = patchOrigin(q);
  let norm = patchNorm(origin, lid, m != 0.0);
  let k = patchSize();
  let coef = 2.0 * g * m / (f32(k) * msum[0]);
  var s = 0.0;
  for (var j = lid; j < k; j += WG) {
    let at = pixel(origin, j);
    var d = 0.0;
    if (m != 0.0) { d = patchDiff(at, norm); }
    s += d * d;
    patch_grad[at.y] = coef * d;
  }
  return s;
}

@compute @workgroup_size(WG)
fn masked(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) lid: u32) {
  let q = workgroupIndex(wg, nwg);
  if (q >= p.count) { return; }
  let m = asF32(mask[q]);
  let origin = patchOrigin(q);
  let norm = patchNorm(origin, lid, m != 0.0);
  let k = patchSize();
  var s = 0.0;
  if (m != 0.0) {
    for (var j = lid; j < k; j += WG) {
      let d = patchDiff(pixel(origin, j), norm);
      s += d * d;
    }
  }
  let total = treeSum(lid, s);
  if (lid == 0u) { patch_loss[q] = m * total / (f32(k) * msum[0]); }
}

@compute @workgroup_size(WG)
fn masked_grad(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
  let q = workgroupIndex(wg, nwg);
  if (q >= p.count) { return; }
  let total = treeSum(lid, patchGrad(q, lid, 1.0));
  let m = asF32(mask[q]);
  if (lid == 0u) { patch_loss[q] = m * total / (f32(patchSize()) * msum[0]); }
}

@compute @workgroup_size(WG)
fn masked_backward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_index) lid: u32) {
  let q = workgroupIndex(wg, nwg);
  if (q >= p.count) { return; }
  patchGrad(q, lid, patch_upstream[0]);
}

// ---- masked patch MSE, one patch per invocation (CPU adapters) ----------------------------------------------
// Invocation q walks patch q in nested (c, py, px) loops reading vec4s along px (P a multiple of 4): no divisions
// per pixel and no workgroup tree, which a CPU adapter pays per lane and per SIMD group. Rows are summed apart,
// then the rows (≤ 4·C·P terms). Loops: about C·(P²/4 + 2P + 2) + 1 passes a walk with exit tests counted
// (llvmpipe's cap stopped ~7% above that estimate), twice with NORM_PIX (its moments take a walk of their own);
// src/reconstruction.ts takes this path only where lanePasses is under half the cap. pred runs along px with
// stride PRED_STRIDE: 1 in image layout or patchified with C = 1, else C (read element by element).

@group(0) @binding(1) var<storage, read> lane_pred: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> lane_tgt: array<vec4<f32>>;
@group(0) @binding(6) var<storage, read_write> lane_grad: array<vec4<f32>>;

// pred (and grad) elements i, i + s, i + 2s, i + 3s for s = PRED_STRIDE.
fn lanePred(i: u32) -> vec4<f32> {
  if (PRED_STRIDE == 1u) { return lane_pred[i / 4u]; }
  var v: vec4<f32>;
  for (var e = 0u; e < 4u; e++) {
    let j = i + e * PRED_STRIDE;
    v[e] = lane_pred[j / 4u][j % 4u];
  }
  return v;
}

fn laneGrad(i: u32, v: vec4<f32>) {
  if (PRED_STRIDE == 1u) {
    lane_grad[i / 4u] = v;
    return;
  }
  for (var e = 0u; e < 4u; e++) {
    let j = i + e * PRED_STRIDE;
    lane_grad[j / 4u][j % 4u] = v[e];
  }
}

fn hsum(v: vec4<f32>) -> f32 {
  return (v.x + v.y) + (v.z + v.w);
}

// (mean, Σ (t − mean)²) of patch q's target pixels in one walk: each vec4's own mean and squared deviations,
// merged into the running pair as Chan et al. merge partial variances (stable where Σ t² − (Σ t)²/K cancels).
fn laneTargetMoments(origin: vec2<u32>) -> vec2<f32> {
  var mean = 0.0;
  var m2 = 0.0;
  var count = 0.0;
  for (var c = 0u; c < dim(1u); c++) {
    for (var py = 0u; py < dim(4u); py++) {
      let row = (origin.x + (c * dim(2u) + py) * dim(3u)) / 4u;
      for (var px4 = 0u; px4 < dim(4u) / 4u; px4++) {
        let t = lane_tgt[row + px4];
        let tm = hsum(t) * 0.25;
        let dt = t - tm;
        let delta = tm - mean;
        count += 4.0;
        mean += delta * 4.0 / count;
        m2 += dot(dt, dt) + delta * delta * 4.0 * (count - 4.0) / count;
      }
    }
  }
  return vec2(mean, m2);
}

// Patch q's mask value, origin (patchOrigin) and target normalisation (mean, 1 / sqrt(var + eps)).
struct LanePatch {
  m: f32,
  origin: vec2<u32>,
  norm: vec2<f32>,
}

fn lanePatch(q: u32) -> LanePatch {
  let m = asF32(mask[q]);
  let origin = patchOrigin(q);
  var norm = vec2(0.0, 1.0);
  if (NORM_PIX && m != 0.0) {
    let k = f32(patchSize());
    let moments = laneTargetMoments(origin);
    norm = vec2(moments.x, inverseSqrt(moments.y / (k - 1.0) + p.param));
  }
  return LanePatch(m, origin, norm);
}

// (target, pred) indices of pixel (c, py, 0) of the patch.
fn laneRow(lp: LanePatch, c: u32, py: u32) -> vec2<u32> {
  let img = lp.origin.x + (c * dim(2u) + py) * dim(3u);
  return vec2(img, select(img, lp.origin.y + py * dim(4u) * dim(1u) + c, PATCHIFIED));
}

// d = pred − normalised target for pixels px .. px + 3 of the row at `at`; 0 where the patch is unmasked.
fn laneDiff(lp: LanePatch, at: vec2<u32>, px: u32) -> vec4<f32> {
  if (lp.m == 0.0) { return vec4<f32>(0.0); }
  return lanePred(at.y + px * PRED_STRIDE) - (lane_tgt[(at.x + px) / 4u] - lp.norm.x) * lp.norm.y;
}

// Σ d² over patch q.
fn laneLoss(q: u32) -> f32 {
  let lp = lanePatch(q);
  var total = 0.0;
  for (var c = 0u; c < dim(1u); c++) {
    for (var py = 0u; py < dim(4u); py++) {
      let at = laneRow(lp, c, py);
      var s = vec4<f32>(0.0);
      for (var px = 0u; px < dim(4u); px += 4u) {
        let d = laneDiff(lp, at, px);
        s += d * d;
      }
      total += hsum(s);
    }
  }
  return total;
}

// laneLoss, writing grad = g · 2d · mask / (K · msum) on the way (zeros where masked out). A walk of its own: an
// entry that only reads (masked_lanes) must not reference lane_grad, or its bind group would need one.
fn laneLossGrad(q: u32, g: f32) -> f32 {
  let lp = lanePatch(q);
  let coef = 2.0 * g * lp.m / (f32(patchSize()) * msum[0]);
  var total = 0.0;
  for (var c = 0u; c < dim(1u); c++) {
    for (var py = 0u; py < dim(4u); py++) {
      let at = laneRow(lp, c, py);
      var s = vec4<f32>(0.0);
      for (var px = 0u; px < dim(4u); px += 4u) {
        let d = laneDiff(lp, at, px);
        s += d * d;
        laneGrad(at.y + px * PRED_STRIDE, coef * d);
      }
      total += hsum(s);
    }
  }
  return total;
}

@compute @workgroup_size(WG)
fn masked_lanes(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
  let q = workgroupIndex(wg, nwg) * WG + lid;
  if (q >= p.count) { return; }
  patch_loss[q] = asF32(mask[q]) * laneLoss(q) / (f32(patchSize()) * msum[0]);
}

@compute @workgroup_size(WG)
fn masked_grad_lanes(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                     @builtin(local_invocation_index) lid: u32) {
  let q = workgroupIndex(wg, nwg) * WG + lid;
  if (q >= p.count) { return; }
  patch_loss[q] = asF32(mask[q]) * laneLossGrad(q, 1.0) / (f32(patchSize()) * msum[0]);
}

@compute @workgroup_size(WG)
fn masked_backward_lanes(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                         @builtin(local_invocation_index) lid: u32) {
  let q = workgroupIndex(wg, nwg) * WG + lid;
  if (q >= p.count) { return; }
  laneLossGrad(q, patch_upstream[0]);
}

// ---- combine ---------------------------------------------------------------------------------------------

@group(0) @binding(1) var<storage, read> values: array<u32>;
@group(0) @binding(2) var<storage, read_write> sums: array<f32>;

@compute @workgroup_size(WG)
fn combine(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) lid: u32) {
  let j = workgroupIndex(wg, nwg) * WG + lid;
  let outputs = (p.count + ITEMS - 1u) / ITEMS;
  if (j >= outputs) { return; }
  var s = 0.0;
  for (var k = 0u; k < ITEMS; k++) {
    let i = j + k * outputs;
    if (i < p.count) { s += asF32(values[i]); }
  }
  sums[j] = p.param + p.scale * s;
}
