// augment.wgsl: per-sample image augmentation. Images are f32 [N, C, H, W] (C = 1 or 3), values in [0, 1].
// Every random choice lives in a per-sample record of REC f32 (src/augment.ts `packRecords`, drawn from Philox
// keyed by the seed); only the Gaussian noise is drawn here, per element. The records of up to RECORDS samples,
// `first` onwards, fill one 64 KiB uniform binding (a dispatch per such chunk): every invocation of a workgroup
// reads the same record, a uniform read a CPU adapter makes once per SIMD group, where a storage read loops over
// the lanes. Record fields:
//   0..3 crop top, left, height, width (source pixels)   4 flip   5 rot90 k
//   6 jitter on   7 brightness   8 contrast   9 saturation   10 hue   11 jitter order (4 base-4 digits, first low)
//   12 grayscale   13 solarize   14 erase on   15..18 erase top, left, height, width   19 erase value
//   20 noise sigma   21 blur sigma   22 solarize threshold
// Entry points:
//   unpack: RGBA8 packed in u32 -> [N, 3, H, W], alpha dropped. One invocation per pixel, the workgroup index
//           spread over x and y.                              bindings: 1 src (u32), 2 out
//   unpack4: the same, four pixels per invocation (one vec4 read, a vec4 written per channel) where H·W is a
//           multiple of 4.
// The others take workgroup z as the sample (first + z) and x, y within it, so no lane divides to find them.
// view and blur run one workgroup per TILE×TILE output tile (x, y), one invocation per pixel.
//   stats:  sums of the grayscale image as contrast sees it (after the jitter steps ordered before contrast),
//           one invocation per TILE pixels of an output row (workgroup x counts WG of them), no workgroup tree
//           (a barrier costs a CPU adapter a coroutine switch per SIMD group): partial (n·oh + y)·tiles_x +
//           x / TILE; src/augment.ts sums each sample's partials with the reduce op.
//                                                              bindings: 1 x, 2 records, 3 partials
//   view:   the fused pass: rotate, flip, crop + bilinear resize, color jitter in the sample's order, grayscale,
//           solarize and normalize (unblurred samples), erase, noise.  bindings: 1 x, 2 records, 3 sums, 4 out
//   view4, stats4: view and stats four pixels of an output row per invocation (of ROWS rows: see
//           sample4Rows2), for input and output widths that are multiples of 4 and no odd quarter turn (see
//           sample4); a view4 workgroup covers WG / QUADS lines of QUADS vec4 columns.
//   blur:   one direction (DIR 0 along W, 1 along H) of the separable Gaussian blur, radius ceil(3 sigma) with
//           reflected borders, for samples with sigma > 0 only (others are left as they are); DIR 1 then
//           solarizes and normalizes those samples.                  bindings: 1 src, 2 records, 3 dst
//   blurW4, blurW4Inner, blurH4: blur for widths that are multiples of 4, four or eight pixels per invocation
//           (see blurW4's comment).
//   turn4:  view for geometry alone (quarter turns of square images, flips; no crop, no color step), sides
//           multiples of 4: one invocation per 4×4 block of output pixels, read as the 4 rows of one 4×4
//           source block (vec4s) and written turned (a transpose for odd turns, then reversals): 4 vec4 reads
//           and 4 writes per channel where view pays 16 scalar reads and 16 writes.
//                                                                     bindings: 1 x, 2 records, 3 out
//! include lib/philox.wgsl

struct Params {
  n: u32,
  h: u32,        // input height, width
  w: u32,
  oh: u32,       // output height, width
  ow: u32,
  tiles_x: u32,  // output tiles per row
  first: u32,    // sample of record 0
  seed_lo: u32,
  seed_hi: u32,
  noise_tag: u32,
  normalize: u32,
  mean0: f32,
  mean1: f32,
  mean2: f32,
  std0: f32,
  std1: f32,
  std2: f32,
}

override WG: u32 = 256;
override TILE: u32 = 16;   // WG = TILE·TILE
override DIR: u32 = 0;
// Whether any sample of the dispatch jitters / adds noise: compiled out otherwise (a CPU adapter runs both
// sides of a branch).
override JITTER: bool = true;
override NOISE: bool = true;
// Some blur radius reaches past the image side: reflections may fold more than once (a modulo per tap).
override FAR: bool = false;
// Channels as constants, so loops over them unroll: a CPU adapter keeps a vector indexed by a variable in memory
// it reads lane by lane.
override C: u32 = 3u;    // channels of the input
override OC: u32 = 3u;   // channels written: C, or 1 for the grayscale of a 3-channel input
// Every sample's crop is the whole image at the output's size: after the turns and the flip, output pixel (y, x)
// reads source pixel (y, x) alone, where bilinear would give it weight 1 and read three more.
override UNSCALED: bool = false;
// vec4 columns per workgroup row (view4, turn4, blurs), a power of two dividing WG: the row's width up to 64
// (src/augment.ts `quadsFor`), so a workgroup reads its source rows in order.
override QUADS: u32 = 64u;
// vec4s of a source row sample4 reads for four neighbouring output pixels: they sample 3·scale + 2 neighbouring
// columns (scale = crop width / output width), starting anywhere in a vec4 (src/augment.ts `sourceQuads`).
override NV: u32 = 2u;
// Output rows per view4 / stats4 invocation: 2 where every crop's height is at most the output's (sample4Rows2).
override ROWS: u32 = 1u;
const REC = 24u;
const RECORDS = 682u;   // samples per dispatch: 65,536 / (REC · 4) bytes

@group(0) @binding(0) var<uniform> p: Params;

// (sample, y, x) of invocation lid of tile workgroup wg.
fn tilePixel(wg: vec3<u32>, lid: u32) -> vec3<u32> {
  return vec3<u32>(p.first + wg.z, wg.y * TILE + lid / TILE, wg.x * TILE + lid % TILE);
}

// The record of the dispatch's sample z, copied once per invocation: the steps below consult some 25 fields.
var<private> record: array<vec4<f32>, REC / 4u>;

fn loadRecord(z: u32) {
  for (var k = 0u; k < REC / 4u; k++) { record[k] = records[z * (REC / 4u) + k]; }
}

fn rec(field: u32) -> f32 {
  return record[field / 4u][field % 4u];
}

// ---- color (torchvision's definitions) ------------------------------------------------------------------------

fn gray(v: vec3<f32>) -> f32 {
  return 0.299 * v.x + 0.587 * v.y + 0.114 * v.z;   // ITU-R 601
}

fn rgbToHsv(v: vec3<f32>) -> vec3<f32> {
  let maxc = max(v.x, max(v.y, v.z));
  let minc = min(v.x, min(v.y, v.z));
  let eq = maxc == minc;
  let cr = maxc - minc;
  let s = cr / select(maxc, 1.0, eq);
  let d = select(cr, 1.0, eq);
  let rc = (maxc - v.x) / d;
  let gc = (maxc - v.y) / d;
  let bc = (maxc - v.z) / d;
  var h: f32;
  if (maxc == v.x) {
    h = bc - gc;
  } else if (maxc == v.y) {
    h = 2.0 + rc - bc;
  } else {
    h = 4.0 + gc - rc;
  }
  h = h / 6.0 + 1.0;
  return vec3<f32>(h - floor(h), s, maxc);
}

fn hsvToRgb(hsv: vec3<f32>) -> vec3<f32> {
  let h6 = hsv.x * 6.0;
  let fi = floor(h6);
  let f = h6 - fi;
  let s = hsv.y;
  let v = hsv.z;
  let pp = clamp(v * (1.0 - s), 0.0, 1.0);
  let q = clamp(v * (1.0 - s * f), 0.0, 1.0);
  let t = clamp(v * (1.0 - s * (1.0 - f)), 0.0, 1.0);
  switch (u32(fi) % 6u) {
    case 0u: { return vec3<f32>(v, t, pp); }
    case 1u: { return vec3<f32>(q, v, pp); }
    case 2u: { return vec3<f32>(pp, v, t); }
    case 3u: { return vec3<f32>(pp, q, v); }
    case 4u: { return vec3<f32>(t, pp, v); }
    default: { return vec3<f32>(v, pp, q); }
  }
}

// One of the linear jitter steps (0 brightness, 1 contrast, 2 saturation) with the sample's factor f:
// clamp(f·v + (1 − f)·t) toward black, the image mean or the pixel's gray (torchvision's definitions). None at
// f = 1, nor saturation for one channel (as in torchvision).
fn linearStep(v: vec3<f32>, step: u32, mean: f32) -> vec3<f32> {
  let f = select(select(rec(7u), rec(8u), step == 1u), rec(9u), step == 2u);
  let t = select(select(vec3<f32>(0.0), vec3<f32>(mean), step == 1u), vec3<f32>(gray(v)), step == 2u);
  let stepped = clamp(f * v + (1.0 - f) * t, vec3<f32>(0.0), vec3<f32>(1.0));
  return select(stepped, v, f == 1.0 || (step == 2u && C != 3u));
}

// Hue rotation by the sample's f turns, through HSV; none at f = 0 or for one channel.
fn hueStep(v: vec3<f32>) -> vec3<f32> {
  let f = rec(10u);
  let hsv = rgbToHsv(v);
  let h = hsv.x + f;
  return select(hsvToRgb(vec3<f32>(h - floor(h), hsv.y, hsv.z)), v, f == 0.0 || C != 3u);
}

// The jitter steps of the sample in its order; `upToContrast` stops before contrast (what stats measures).
// A CPU adapter runs a masked-off branch as if taken, so no step is chosen by a branch: the loops hold only the
// linear steps, and the costly hue rotation runs once, between the steps before and after its place.
fn jitter(v0: vec3<f32>, mean: f32, upToContrast: bool) -> vec3<f32> {
  let order = u32(rec(11u));
  var hue_at = 0u;
  var contrast_at = 0u;
  for (var k = 0u; k < 4u; k++) {
    let step = (order >> (2u * k)) & 3u;
    hue_at = select(hue_at, k, step == 3u);
    contrast_at = select(contrast_at, k, step == 1u);
  }
  let end = select(4u, contrast_at, upToContrast);
  var v = v0;
  for (var k = 0u; k < min(hue_at, end); k++) { v = linearStep(v, (order >> (2u * k)) & 3u, mean); }
  if (hue_at < end) { v = hueStep(v); }
  for (var k = hue_at + 1u; k < end; k++) { v = linearStep(v, (order >> (2u * k)) & 3u, mean); }
  return v;
}

fn luma(v: vec3<f32>) -> f32 {
  return select(v.x, gray(v), C == 3u);
}

// ---- geometry -------------------------------------------------------------------------------------------------

// The input pixel (all channels, unused ones 0) that output pixel (oy, ox) of sample n shows, before color steps.
fn sample(n: u32, oy: u32, ox: u32) -> vec3<f32> {
  var y = oy;
  var x = ox;
  let k = u32(rec(5u));
  let last = p.ow - 1u;   // an odd quarter turn needs a square output
  if (k == 1u) { y = ox; x = last - oy; } else if (k == 2u) { y = p.oh - 1u - oy; x = last - ox; } else if (k == 3u) { y = last - ox; x = oy; }
  if (rec(4u) != 0.0) { x = p.ow - 1u - x; }
  if (UNSCALED) {
    var v = vec3<f32>(0.0);
    for (var c = 0u; c < C; c++) { v[c] = x_in[((n * C + c) * p.h + y) * p.w + x]; }
    return v;
  }
  // Bilinear with half-pixel centers (align_corners = false), clamped to the crop (see sourceRow).
  let sy = clamp(rec(0u) + (f32(y) + 0.5) * (rec(2u) / f32(p.oh)) - 0.5, rec(0u), rec(0u) + rec(2u) - 1.0);
  let sx = clamp(rec(1u) + (f32(x) + 0.5) * (rec(3u) / f32(p.ow)) - 0.5, rec(1u), rec(1u) + rec(3u) - 1.0);
  let y0 = u32(floor(sy));
  let x0 = u32(floor(sx));
  let y1 = min(y0 + 1u, p.h - 1u);
  let x1 = min(x0 + 1u, p.w - 1u);
  let fy = sy - f32(y0);
  let fx = sx - f32(x0);
  var v = vec3<f32>(0.0);
  for (var c = 0u; c < C; c++) {
    let base = (n * C + c) * p.h * p.w;
    let top = (1.0 - fx) * x_in[base + y0 * p.w + x0] + fx * x_in[base + y0 * p.w + x1];
    let bottom = (1.0 - fx) * x_in[base + y1 * p.w + x0] + fx * x_in[base + y1 * p.w + x1];
    v[c] = (1.0 - fy) * top + fy * bottom;
  }
  return v;
}

// Output pixels (oy, 4q .. 4q + 3) of sample n when its quarter turns are even (rows stay rows) and both widths
// are multiples of 4, as `sample` gives them: column j of the result is pixel j. The four read along one source
// row (mirrored by a flip or a half turn), so each of the two bilinear rows is NV whole vec4s of the source, and
// each pixel's two taps are picked from those by selects: 2·NV·C vec4 reads per four pixels instead of 4·C per
// pixel, the reads a CPU adapter makes lane by lane.
fn sample4(n: u32, oy: u32, q: u32) -> mat4x3<f32> {
  let half = u32(rec(5u)) == 2u;
  let w4 = p.w / 4u;
  if (UNSCALED) {
    let mirror = (rec(4u) != 0.0) != half;
    var m: mat3x4<f32>;   // column c: channel c of the four pixels
    for (var c = 0u; c < C; c++) {
      let v = x4[((n * C + c) * p.h + select(oy, p.oh - 1u - oy, half)) * w4 + select(q, w4 - 1u - q, mirror)];
      m[c] = select(v, v.wzyx, mirror);
    }
    return transpose(m);
  }
  let y = sourceRow(select(oy, p.oh - 1u - oy, half));
  let taps = columnTaps(q);
  var m: mat3x4<f32>;
  // The two source rows are blended first (fy is the same for the four pixels), so the taps are picked from
  // one row: half the selects of picking four taps from two.
  for (var c = 0u; c < C; c++) {
    let plane = (n * C + c) * p.h;
    var picked = Picked(vec4<f32>(0.0), vec4<f32>(0.0));
    for (var k = 0u; k < NV; k++) {
      let col = min(taps.first + k, w4 - 1u);   // past the row's end only where no tap looks
      let blended = (1.0 - y.f) * x4[(plane + y.y0) * w4 + col] + y.f * x4[(plane + y.y1) * w4 + col];
      picked = pick(picked, blended, k, taps);
    }
    m[c] = (1.0 - taps.fx) * picked.left + taps.fx * picked.right;
  }
  return transpose(m);
}

// sample4 for output rows oy and oy + 1 (clamped to the last row), where every crop's height is at most the
// output's (ROWS = 2): the two rows' taps then lie on three neighbouring source rows, read once for both,
// 3·NV·C vec4 reads per eight pixels instead of 4·NV·C.
struct Rows2 {
  a: mat4x3<f32>,
  b: mat4x3<f32>,
}

fn sample4Rows2(n: u32, oy: u32, q: u32) -> Rows2 {
  let half = u32(rec(5u)) == 2u;
  let w4 = p.w / 4u;
  let ob = min(oy + 1u, p.oh - 1u);
  let ya = sourceRow(select(oy, p.oh - 1u - oy, half));
  let yb = sourceRow(select(ob, p.oh - 1u - ob, half));
  let lo = min(ya.y0, yb.y0);   // the rows lo, r1, r2; a row's taps are (lo, r1), or (r1, r2) where y0 > lo
  let r1 = min(lo + 1u, p.h - 1u);
  let r2 = min(lo + 2u, p.h - 1u);
  let upA = ya.y0 > lo;
  let upB = yb.y0 > lo;
  let taps = columnTaps(q);
  var ma: mat3x4<f32>;
  var mb: mat3x4<f32>;
  for (var c = 0u; c < C; c++) {
    let plane = (n * C + c) * p.h;
    var pa = Picked(vec4<f32>(0.0), vec4<f32>(0.0));
    var pb = pa;
    for (var k = 0u; k < NV; k++) {
      let col = min(taps.first + k, w4 - 1u);
      let v0 = x4[(plane + lo) * w4 + col];
      let v1 = x4[(plane + r1) * w4 + col];
      let v2 = x4[(plane + r2) * w4 + col];
      pa = pick(pa, (1.0 - ya.f) * select(v0, v1, upA) + ya.f * select(v1, v2, upA), k, taps);
      pb = pick(pb, (1.0 - yb.f) * select(v0, v1, upB) + yb.f * select(v1, v2, upB), k, taps);
    }
    ma[c] = (1.0 - taps.fx) * pa.left + taps.fx * pa.right;
    mb[c] = (1.0 - taps.fx) * pb.left + taps.fx * pb.right;
  }
  return Rows2(transpose(ma), transpose(mb));
}

// Bilinear rows of source-space output row y (after the half turn): y0, y1 = min(y0 + 1, h − 1) and the weight
// f of y1, with half-pixel centers (align_corners = false). The position is clamped to the crop, as torchvision
// resizes the cropped image: at the crop's edge f is 0, so no pixel outside it counts.
struct SourceRow {
  y0: u32,
  y1: u32,
  f: f32,
}

fn sourceRow(y: u32) -> SourceRow {
  let sy = clamp(rec(0u) + (f32(y) + 0.5) * (rec(2u) / f32(p.oh)) - 0.5, rec(0u), rec(0u) + rec(2u) - 1.0);
  let y0 = u32(floor(sy));
  return SourceRow(y0, min(y0 + 1u, p.h - 1u), sy - f32(y0));
}

// Bilinear columns of output pixels 4q .. 4q + 3 (mirrored by a flip or a half turn): the vec4 column `first` of
// the leftmost tap, each pixel's two taps at0, at1 within the NV vec4s from there, and the weight fx of at1.
struct ColumnTaps {
  first: u32,
  at0: vec4<u32>,
  at1: vec4<u32>,
  fx: vec4<f32>,
}

fn columnTaps(q: u32) -> ColumnTaps {
  let mirror = (rec(4u) != 0.0) != (u32(rec(5u)) == 2u);
  let ox = f32(4u * q) + vec4<f32>(0.0, 1.0, 2.0, 3.0);
  let x = select(ox, f32(p.ow - 1u) - ox, vec4<bool>(mirror));
  let sx = clamp(rec(1u) + (x + 0.5) * (rec(3u) / f32(p.ow)) - 0.5, vec4<f32>(rec(1u)),
                 vec4<f32>(rec(1u) + rec(3u) - 1.0));
  let x0 = floor(sx);
  let x1 = min(x0 + 1.0, vec4<f32>(f32(p.w - 1u)));
  let first = u32(min(x0.x, x0.w)) / 4u;
  return ColumnTaps(first, vec4<u32>(x0) - 4u * first, vec4<u32>(x1) - 4u * first, sx - x0);
}

// Each pixel's left and right taps, picked by selects from the source vec4s as they come.
struct Picked {
  left: vec4<f32>,
  right: vec4<f32>,
}

fn pick(before: Picked, blended: vec4<f32>, k: u32, taps: ColumnTaps) -> Picked {
  var r = before;
  for (var e = 0u; e < 4u; e++) {
    let here = vec4<u32>(4u * k + e);
    r.left = select(r.left, vec4<f32>(blended[e]), taps.at0 == here);
    r.right = select(r.right, vec4<f32>(blended[e]), taps.at1 == here);
  }
  return r;
}

fn solarize(v: f32) -> f32 {
  return select(v, 1.0 - v, v >= rec(22u));
}

// Channel c's mean and std of p.normalize: applied last, in the fused pass, or for a blurred sample at the end of
// its blur, after the solarize that compares [0, 1] values with its threshold.
fn channelMean(c: u32) -> f32 {
  return select(select(p.mean2, p.mean1, c == 1u), p.mean0, c == 0u);
}

fn channelStd(c: u32) -> f32 {
  return select(select(p.std2, p.std1, c == 1u), p.std0, c == 0u);
}

// ---- entry points ---------------------------------------------------------------------------------------------

@group(0) @binding(1) var<storage, read> packed: array<u32>;
@group(0) @binding(2) var<storage, read_write> unpacked: array<f32>;

@compute @workgroup_size(WG)
fn unpack(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) lid: u32) {
  let i = (wg.y * nwg.x + wg.x) * WG + lid;
  let hw = p.h * p.w;
  if (i >= p.n * hw) { return; }
  let px = packed[i];
  let n = i / hw;
  let at = i % hw;
  for (var c = 0u; c < 3u; c++) {
    unpacked[(n * 3u + c) * hw + at] = f32((px >> (8u * c)) & 255u) / 255.0;
  }
}

@group(0) @binding(1) var<storage, read> packed4: array<vec4<u32>>;
@group(0) @binding(2) var<storage, read_write> unpacked4: array<vec4<f32>>;

@compute @workgroup_size(WG)
fn unpack4(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) lid: u32) {
  let i = (wg.y * nwg.x + wg.x) * WG + lid;
  let hw4 = p.h * p.w / 4u;
  if (i >= p.n * hw4) { return; }
  let px = packed4[i];
  let n = i / hw4;
  let at = i % hw4;
  for (var c = 0u; c < 3u; c++) {
    unpacked4[(n * 3u + c) * hw4 + at] = vec4<f32>((px >> vec4<u32>(8u * c)) & vec4<u32>(255u)) / 255.0;
  }
}

@group(0) @binding(1) var<storage, read> x_in: array<f32>;
@group(0) @binding(2) var<uniform> records: array<vec4<f32>, RECORDS * REC / 4u>;
@group(0) @binding(3) var<storage, read_write> partials: array<f32>;

@compute @workgroup_size(WG)
fn stats(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let i = wg.x * WG + lid;
  if (i >= p.oh * p.tiles_x) { return; }
  let n = p.first + wg.z;
  let y = i / p.tiles_x;
  let x0 = (i % p.tiles_x) * TILE;
  loadRecord(wg.z);
  var s = 0.0;
  if (rec(6u) != 0.0 && rec(8u) != 1.0) {
    for (var x = x0; x < min(x0 + TILE, p.ow); x++) { s += luma(jitter(sample(n, y, x), 0.0, true)); }
  }
  partials[n * p.oh * p.tiles_x + i] = s;
}

fn lumaSum4(px: mat4x3<f32>) -> f32 {
  return luma(jitter(px[0], 0.0, true)) + luma(jitter(px[1], 0.0, true)) + luma(jitter(px[2], 0.0, true)) +
    luma(jitter(px[3], 0.0, true));
}

@compute @workgroup_size(WG)
fn stats4(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let lines = (p.oh + ROWS - 1u) / ROWS;
  let i = wg.x * WG + lid;
  if (i >= lines * p.tiles_x) { return; }
  let n = p.first + wg.z;
  let y = ROWS * (i / p.tiles_x);
  let q0 = (i % p.tiles_x) * (TILE / 4u);
  loadRecord(wg.z);
  var s = 0.0;
  if (rec(6u) != 0.0 && rec(8u) != 1.0) {
    for (var q = q0; q < min(q0 + TILE / 4u, p.ow / 4u); q++) {
      if (ROWS == 2u) {
        let rows = sample4Rows2(n, y, q);
        s += lumaSum4(rows.a) + select(0.0, lumaSum4(rows.b), y + 1u < p.oh);
      } else {
        s += lumaSum4(sample4(n, y, q));
      }
    }
  }
  partials[n * lines * p.tiles_x + i] = s;
}

@group(0) @binding(3) var<storage, read> sums_in: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;

// Output pixel (oy, ox) of sample n from the input pixel it shows: the color steps after the geometry, each
// channel as written (the first oc).
fn finish(v0: vec3<f32>, n: u32, oy: u32, ox: u32, mean: f32) -> vec3<f32> {
  var v = v0;
  if (JITTER && rec(6u) != 0.0) { v = jitter(v, mean, false); }
  if ((rec(12u) != 0.0 && C == 3u) || OC < C) { v = vec3<f32>(gray(v)); }
  if (rec(13u) != 0.0 && rec(21u) == 0.0) { v = select(v, 1.0 - v, v >= vec3<f32>(rec(22u))); }
  if (rec(14u) != 0.0 && f32(oy) >= rec(15u) && f32(oy) < rec(15u) + rec(17u) && f32(ox) >= rec(16u) &&
      f32(ox) < rec(16u) + rec(18u)) {
    v = vec3<f32>(rec(19u));
  }
  if (NOISE && rec(20u) != 0.0) {
    let at = oy * p.ow + ox;
    let pixels = p.oh * p.ow;
    var z = vec3<f32>(noise(at, n), 0.0, 0.0);
    if (OC == 3u) { z = vec3<f32>(z.x, noise(pixels + at, n), noise(2u * pixels + at, n)); }
    v = clamp(v + rec(20u) * z, vec3<f32>(0.0), vec3<f32>(1.0));
  }
  if (p.normalize != 0u && rec(21u) == 0.0) {
    v = (v - vec3<f32>(p.mean0, p.mean1, p.mean2)) / vec3<f32>(p.std0, p.std1, p.std2);
  }
  return v;
}

// A standard normal for element i of sample n: Box-Muller over Philox, counter (element index in the sample,
// sample, tag), as src/ref/augment.ts draws it.
fn noise(i: u32, n: u32) -> f32 {
  let r = philox(vec4<u32>(i, n, p.noise_tag, 0u), vec2<u32>(p.seed_lo, p.seed_hi));
  return philoxNormal(r.x, r.y);
}

@compute @workgroup_size(WG)
fn view(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let px = tilePixel(wg, lid);
  let n = px.x;
  let oy = px.y;
  let ox = px.z;
  if (oy >= p.oh || ox >= p.ow) { return; }
  loadRecord(wg.z);
  let pixels = p.oh * p.ow;
  let v = finish(sample(n, oy, ox), n, oy, ox, sums_in[n] / f32(pixels));
  for (var c = 0u; c < OC; c++) { out[(n * OC + c) * pixels + oy * p.ow + ox] = v[c]; }
}

@group(0) @binding(1) var<storage, read> x4: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> out4: array<vec4<f32>>;

// Output pixels (oy, 4q .. 4q + 3) of sample n from the input pixels they show.
fn write4(px: mat4x3<f32>, n: u32, oy: u32, q: u32, mean: f32) {
  let x = 4u * q;
  let v = transpose(mat4x3<f32>(finish(px[0], n, oy, x, mean), finish(px[1], n, oy, x + 1u, mean),
                                finish(px[2], n, oy, x + 2u, mean), finish(px[3], n, oy, x + 3u, mean)));
  for (var c = 0u; c < OC; c++) { out4[((n * OC + c) * p.oh + oy) * (p.ow / 4u) + q] = v[c]; }
}

@compute @workgroup_size(WG)
fn view4(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let n = p.first + wg.z;
  let oy = ROWS * (wg.y * (WG / QUADS) + lid / QUADS);   // rows oy .. oy + ROWS - 1
  let q = wg.x * QUADS + lid % QUADS;   // pixels 4q .. 4q + 3
  if (oy >= p.oh || q >= p.ow / 4u) { return; }
  loadRecord(wg.z);
  let mean = sums_in[n] / f32(p.oh * p.ow);
  if (ROWS == 2u) {
    let rows = sample4Rows2(n, oy, q);
    write4(rows.a, n, oy, q, mean);
    if (oy + 1u < p.oh) { write4(rows.b, n, oy + 1u, q, mean); }
  } else {
    write4(sample4(n, oy, q), n, oy, q, mean);
  }
}

@group(0) @binding(1) var<storage, read> blur_src: array<f32>;
@group(0) @binding(3) var<storage, read_write> blur_dst: array<f32>;

// Index i reflected into [0, n) without repeating the edge (torchvision's "reflect" padding). One bounce covers
// -(n - 1) ≤ i ≤ 2(n - 1), every tap when the radius is under n; FAR folds any distance by the period first (a
// modulo, which a CPU adapter runs lane by lane). Reflection is symmetric about 0, so |i| needs no signed modulo.
fn reflect(i: i32, n: u32) -> u32 {
  var m = u32(abs(i));
  if (FAR) {
    if (n == 1u) { return 0u; }
    m %= 2u * (n - 1u);
  }
  return select(2u * (n - 1u) - m, m, m < n);
}

@compute @workgroup_size(WG)
fn blur(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let px = tilePixel(wg, lid);
  let n = px.x;
  let y = i32(px.y);
  let x = i32(px.z);
  if (px.y >= p.oh || px.z >= p.ow) { return; }
  loadRecord(wg.z);
  let sigma = rec(21u);
  if (sigma == 0.0) { return; }
  let radius = i32(ceil(3.0 * sigma));
  let plane = p.oh * p.ow;
  let base = n * OC * plane;
  let at = px.y * p.ow + px.z;
  var acc = vec3<f32>(0.0);
  for (var c = 0u; c < OC; c++) { acc[c] = blur_src[base + c * plane + at]; }
  var total = 1.0;
  // Taps in mirrored pairs share a weight: one exp per pair, for all channels.
  for (var d = 1; d <= radius; d++) {
    let wgt = exp(-f32(d * d) / (2.0 * sigma * sigma));
    var lo: u32;
    var hi: u32;
    if (DIR == 0u) {
      lo = at - px.z + reflect(x - d, p.ow);
      hi = at - px.z + reflect(x + d, p.ow);
    } else {
      lo = reflect(y - d, p.oh) * p.ow + px.z;
      hi = reflect(y + d, p.oh) * p.ow + px.z;
    }
    for (var c = 0u; c < OC; c++) {
      acc[c] += wgt * (blur_src[base + c * plane + lo] + blur_src[base + c * plane + hi]);
    }
    total += 2.0 * wgt;
  }
  for (var c = 0u; c < OC; c++) {
    var v = acc[c] / total;
    if (DIR == 1u && rec(13u) != 0.0) { v = solarize(v); }
    if (DIR == 1u && p.normalize != 0u) { v = (v - channelMean(c)) / channelStd(c); }
    blur_dst[base + c * plane + px.y * p.ow + px.z] = v;
  }
}

@group(0) @binding(1) var<storage, read> blur_src4: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> blur_dst4: array<vec4<f32>>;

// The blur for widths that are multiples of 4, in vec4s: along W (DIR 0) blurW4Inner blurs two neighbouring
// vec4 columns (eight pixels) from the 2·CB + 2 whole vec4s around them, where no tap reflects, and blurW4 four
// pixels, every tap on its own, reflected, for the CB vec4 columns at each end of a row (EDGES) or for all of
// them (where CB would be too many); along H (DIR 1) blurH4 blurs four rows at once, each tap one vec4 per
// channel. A workgroup covers WG / QUADS lines of QUADS invocations. Fewer lane-by-lane reads than a pixel per
// invocation: a tap's vec4 serves four pixels (eight along W: on llvmpipe the W pass ran 1.2x to 1.35x faster
// than with four, and no faster with sixteen), and along H each source row serves four output rows (eight ran
// 1.15x slower).
override CB: u32 = 2u;   // vec4 columns on each side that blurW4Inner reads: ceil(radius / 4) for every sample
override EDGES: bool = false;

// Sample z's blur, its record loaded: sigma (0: not blurred), the radius ceil(3σ), and k = −1/(2σ²) of the
// weights exp(k·d²).
struct Blur {
  sigma: f32,
  radius: f32,
  k: f32,
}

fn loadBlur(z: u32) -> Blur {
  loadRecord(z);
  let sigma = rec(21u);
  return Blur(sigma, ceil(3.0 * sigma), -0.5 / (sigma * sigma));
}

// The Gaussian weights exp(k·d²) (0 past the radius) of one source pixel in four neighbouring outputs, at tap
// offsets d, d - 1, d - 2, d - 3, from those of the previous pixel (offsets one less): one exp per source pixel.
fn nextWeights(prev: vec4<f32>, d: f32, k: f32, radius: f32) -> vec4<f32> {
  return vec4<f32>(select(0.0, exp(k * d * d), abs(d) <= radius), prev.xyz);
}

@compute @workgroup_size(WG)
fn blurW4(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let w4 = p.ow / 4u;
  let y = wg.y * (WG / QUADS) + lid / QUADS;
  let i = wg.x * QUADS + lid % QUADS;
  let q = select(i, select(i, w4 - 2u * CB + i, i >= CB), EDGES);   // vec4 column: pixels 4q .. 4q + 3
  if (y >= p.oh || i >= select(w4, 2u * CB, EDGES)) { return; }
  let b = loadBlur(wg.z);
  if (b.sigma == 0.0) { return; }
  let plane4 = p.oh * w4;
  let row = (p.first + wg.z) * OC * plane4 + y * w4;
  var acc: array<vec4<f32>, 3>;
  var total = vec4<f32>(0.0);
  var wgt = vec4<f32>(0.0);
  // Source pixel 4q + e, e in [-R, R + 3], weighs w(e - j) in output pixel j = 0..3 where |e - j| ≤ R.
  for (var e = -i32(b.radius); e <= i32(b.radius) + 3; e++) {
    wgt = nextWeights(wgt, f32(e), b.k, b.radius);
    let s = reflect(i32(4u * q) + e, p.ow);
    for (var c = 0u; c < OC; c++) { acc[c] += wgt * blur_src4[row + c * plane4 + s / 4u][s % 4u]; }
    total += wgt;
  }
  for (var c = 0u; c < OC; c++) { blur_dst4[row + c * plane4 + q] = acc[c] / total; }
}

@compute @workgroup_size(WG)
fn blurW4Inner(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let w4 = p.ow / 4u;
  let y = wg.y * (WG / QUADS) + lid / QUADS;
  let q = CB + 2u * (wg.x * QUADS + lid % QUADS);   // vec4 columns q and q + 1 (if inner too)
  if (y >= p.oh || q + CB >= w4) { return; }
  let b = loadBlur(wg.z);
  if (b.sigma == 0.0) { return; }
  let plane4 = p.oh * w4;
  let row = (p.first + wg.z) * OC * plane4 + y * w4;
  var acc: array<vec4<f32>, 6>;   // column q + k, channel c at 3k + c
  var total = vec4<f32>(0.0);     // the same for both columns: no tap reflects
  var wgt = vec4<f32>(0.0);
  var before: array<vec4<f32>, 4>;   // wgt of the previous vec4's lanes: column q + 1's weights now
  for (var m = 0u; m <= 2u * CB + 1u; m++) {
    var src: array<vec4<f32>, 3>;
    let col = min(q + m - CB, w4 - 1u);   // past the row's end only for a column q + 1 that is not written
    for (var c = 0u; c < OC; c++) { src[c] = blur_src4[row + c * plane4 + col]; }
    // Lane e of vec4 column q + m - CB is tap offset 4(m - CB) + e - j from output pixel 4q + j, and offset
    // 4(m - 1 - CB) + e - j from output pixel 4(q + 1) + j.
    for (var e = 0u; e < 4u; e++) {
      wgt = nextWeights(wgt, f32(4u * m + e) - f32(4u * CB), b.k, b.radius);
      for (var c = 0u; c < OC; c++) {
        acc[c] += wgt * src[c][e];
        acc[3u + c] += before[e] * src[c][e];
      }
      before[e] = wgt;
      total += wgt;
    }
  }
  for (var c = 0u; c < OC; c++) { blur_dst4[row + c * plane4 + q] = acc[c] / total; }
  if (q + 1u + CB < w4) {
    for (var c = 0u; c < OC; c++) { blur_dst4[row + c * plane4 + q + 1u] = acc[3u + c] / total; }
  }
}

@compute @workgroup_size(WG)
fn blurH4(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let w4 = p.ow / 4u;
  let y0 = 4u * (wg.y * (WG / QUADS) + lid / QUADS);   // rows y0 .. y0 + 3
  let q = wg.x * QUADS + lid % QUADS;
  if (y0 >= p.oh || q >= w4) { return; }
  let b = loadBlur(wg.z);
  if (b.sigma == 0.0) { return; }
  let plane4 = p.oh * w4;
  let base4 = (p.first + wg.z) * OC * plane4 + q;
  var acc: array<vec4<f32>, 12>;   // row j, channel c at 3j + c
  var total = vec4<f32>(0.0);      // lane j: row j
  var wgt = vec4<f32>(0.0);
  for (var e = -i32(b.radius); e <= i32(b.radius) + 3; e++) {
    wgt = nextWeights(wgt, f32(e), b.k, b.radius);
    // Rows past the image's end only feed rows that are not written; the min keeps their reads inside it.
    let s = min(reflect(i32(y0) + e, p.oh), p.oh - 1u) * w4;
    for (var c = 0u; c < OC; c++) {
      let v = blur_src4[base4 + c * plane4 + s];
      acc[c] += wgt.x * v;
      acc[3u + c] += wgt.y * v;
      acc[6u + c] += wgt.z * v;
      acc[9u + c] += wgt.w * v;
    }
    total += wgt;
  }
  for (var j = 0u; j < 4u; j++) {
    for (var c = 0u; c < OC && y0 + j < p.oh; c++) {
      var v = acc[3u * j + c] / total[j];
      if (rec(13u) != 0.0) { v = select(v, 1.0 - v, v >= vec4<f32>(rec(22u))); }
      if (p.normalize != 0u) { v = (v - channelMean(c)) / channelStd(c); }
      blur_dst4[base4 + c * plane4 + (y0 + j) * w4] = v;
    }
  }
}

// Output block (by, bx) of 4×4 pixels of sample n from source block (sr, sc), whose 4 rows are the columns of
// m. Even turns keep rows as rows: output row i is source row i or 3 − i, reversed or not. Odd turns make
// columns rows: after the transpose, m's column c is source column c, output row i is column i or 3 − i.
@compute @workgroup_size(WG)
fn turn4(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let w4 = p.ow / 4u;
  let h4 = p.oh / 4u;
  let by = wg.y * (WG / QUADS) + lid / QUADS;   // output rows 4by .. 4by + 3
  let bx = wg.x * QUADS + lid % QUADS;          // output vec4 column
  if (by >= h4 || bx >= w4) { return; }
  loadRecord(wg.z);
  let n = p.first + wg.z;
  let k = u32(rec(5u));
  let flip = rec(4u) != 0.0;
  let odd = (k & 1u) == 1u;
  let sr = select(select(by, h4 - 1u - by, k == 2u), select(w4 - 1u - bx, bx, k == 1u), odd);
  let sc = select(select(bx, w4 - 1u - bx, (k == 2u) != flip), select(by, h4 - 1u - by, (k == 1u) != flip), odd);
  let rev_i = select(k == 2u, (k == 1u) != flip, odd);
  let rev_j = select((k == 2u) != flip, k == 3u, odd);
  for (var c = 0u; c < C; c++) {
    let src = ((n * C + c) * p.h + 4u * sr) * w4 + sc;
    var m = mat4x4<f32>(x4[src], x4[src + w4], x4[src + 2u * w4], x4[src + 3u * w4]);
    if (odd) { m = transpose(m); }
    let dst = ((n * C + c) * p.oh + 4u * by) * w4 + bx;
    for (var i = 0u; i < 4u; i++) {
      let v = select(m[i], m[3u - i], rev_i);
      blur_dst4[dst + i * w4] = select(v, v.wzyx, rev_j);
    }
  }
}
