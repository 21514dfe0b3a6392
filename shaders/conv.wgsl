// conv.wgsl: im2col and its adjoint, the two data movements of a 2-D convolution (src/conv.ts builds conv2d from
// them and matmul). Images are f32 [N, C, H, W]; columns are f32 [N, ROWS, L], L = OH·OW output positions in
// row-major order, row (c·KH + i)·KW + j holding kernel tap (i, j) of channel c, and rows from C·KH·KW up to ROWS
// zero (conv2d pads them to a multiple of 4, so matmul takes its vec4 path). Tap (i, j) of output position
// (oy, ox) reads image pixel (oy·SH − PH + i·DH, ox·SW − PW + j·DW), zero outside the image (PyTorch's unfold).
// With BATCH_INSIDE the columns are [ROWS, N, L] instead: one matrix [ROWS, N·L] for the whole batch.
// Entry points (one invocation per output element; the workgroup index spread over x and y):
//   unfold:  columns from an image.                    bindings: 1 image, 2 columns
//   unfold4: the same, four neighbouring positions per invocation written as one vec4, where L is a multiple of
//            4: one index decomposition and one write serve four elements.   bindings: 1 image, 2 columns (vec4)
//   fold:   an image from columns, each pixel the sum of every column element that reads it (PyTorch's fold, the
//           adjoint of unfold): a loop over the KH·KW taps, which src/conv.ts bounds (MAX_TAPS) far below
//           llvmpipe's silent stop at 65,535 loop iterations.       bindings: 1 columns, 2 image
struct Params {
  count: u32,   // output elements (unfold4: vec4s)
  c: u32,       // image channels, height, width
  h: u32,
  w: u32,
  kh: u32,      // kernel height, width
  kw: u32,
  sh: u32,      // stride
  sw: u32,
  ph: u32,      // zero padding on each side
  pw: u32,
  dh: u32,      // dilation
  dw: u32,
  oh: u32,      // output positions down and across
  ow: u32,
  rows: u32,    // rows of one sample's columns: C·KH·KW or more (zero rows)
  n: u32,       // samples
  pad: f32,     // unfold: the value of taps in the padding (0; maxPool2d's −∞)
}

override WG: u32 = 256;
// fold: both strides 1, so every tap lines up with an output position and no division finds it (a CPU adapter
// divides lane by lane).
override UNIT_STRIDE: bool = false;
// Columns [ROWS, N, L], not [N, ROWS, L]: conv2d over few positions makes one product for the whole batch of
// them rather than N small ones.
override BATCH_INSIDE: bool = false;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;

fn index(wg: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
  return (wg.y * nwg.x + wg.x) * WG + lid;
}

// Line (a run of L positions) of row r of sample n's columns.
fn lineAt(n: u32, r: u32) -> u32 {
  return select(n * p.rows + r, r * p.n + n, BATCH_INSIDE);
}

// (sample, row) of line l: lineAt's inverse.
fn lineOf(l: u32) -> vec2<u32> {
  return select(vec2<u32>(l / p.rows, l % p.rows), vec2<u32>(l % p.n, l / p.n), BATCH_INSIDE);
}

// Where row r of a sample's columns reads from: channel c and tap offsets i·DH − PH, j·DW − PW (signed: padding
// puts taps before the image's first row and column); `used` is false for the zero rows.
struct Tap {
  c: u32,
  dy: i32,
  dx: i32,
  used: bool,
}

fn tapOf(r: u32) -> Tap {
  let taps = p.kh * p.kw;
  let tap = r % taps;
  return Tap(r / taps, i32((tap / p.kw) * p.dh) - i32(p.ph), i32((tap % p.kw) * p.dw) - i32(p.pw), r < p.c * taps);
}

// The pixel that tap t of output position (oy, ox) in sample n reads: p.pad in the padding, 0 in the zero rows.
fn tapValue(n: u32, t: Tap, oy: u32, ox: u32) -> f32 {
  let y = i32(oy * p.sh) + t.dy;
  let x = i32(ox * p.sw) + t.dx;
  if (!t.used) { return 0.0; }
  if (y < 0 || y >= i32(p.h) || x < 0 || x >= i32(p.w)) { return p.pad; }
  return src[((n * p.c + t.c) * p.h + u32(y)) * p.w + u32(x)];
}

@compute @workgroup_size(WG)
fn unfold(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) lid: u32) {
  let e = index(wg, nwg, lid);
  if (e >= p.count) { return; }
  let positions = p.oh * p.ow;
  let at = e % positions;
  let line = lineOf(e / positions);
  dst[e] = tapValue(line.x, tapOf(line.y), at / p.ow, at % p.ow);
}

@group(0) @binding(2) var<storage, read_write> dst4: array<vec4<f32>>;

@compute @workgroup_size(WG)
fn unfold4(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) lid: u32) {
  let e = index(wg, nwg, lid);
  if (e >= p.count) { return; }
  let quads = p.oh * p.ow / 4u;
  let line = lineOf(e / quads);
  let n = line.x;
  let t = tapOf(line.y);   // the same for the four
  let first = 4u * (e % quads);
  let p0 = vec2<u32>(first % p.ow, first / p.ow);   // (ox, oy)
  let p1 = nextPosition(p0);
  let p2 = nextPosition(p1);
  let p3 = nextPosition(p2);
  dst4[e] = vec4<f32>(tapValue(n, t, p0.y, p0.x), tapValue(n, t, p1.y, p1.x), tapValue(n, t, p2.y, p2.x),
                      tapValue(n, t, p3.y, p3.x));
}

// The position after (ox, oy), wrapping to the next output row.
fn nextPosition(at: vec2<u32>) -> vec2<u32> {
  return select(vec2<u32>(at.x + 1u, at.y), vec2<u32>(0u, at.y + 1u), at.x + 1u == p.ow);
}

@compute @workgroup_size(WG)
fn fold(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
  let e = index(wg, nwg, lid);
  if (e >= p.count) { return; }
  let x = e % p.w;
  let y = (e / p.w) % p.h;
  let plane = e / (p.w * p.h);   // n·C + c
  let positions = p.oh * p.ow;
  let n = plane / p.c;
  let first = (plane % p.c) * p.kh * p.kw;   // row of this channel's tap (0, 0)
  var acc = 0.0;
  for (var i = 0u; i < p.kh; i++) {
    // Output row oy with oy·SH + i·DH = y + PH, if any.
    let ty = i32(y + p.ph) - i32(i * p.dh);
    var oy = u32(ty);
    var hit = ty >= 0;
    if (!UNIT_STRIDE) {
      hit = hit && oy % p.sh == 0u;
      oy /= p.sh;
    }
    if (!hit || oy >= p.oh) { continue; }
    for (var j = 0u; j < p.kw; j++) {
      let tx = i32(x + p.pw) - i32(j * p.dw);
      var ox = u32(tx);
      var hitx = tx >= 0;
      if (!UNIT_STRIDE) {
        hitx = hitx && ox % p.sw == 0u;
        ox /= p.sw;
      }
      if (!hitx || ox >= p.ow) { continue; }
      acc += src[lineAt(n, first + i * p.kw + j) * positions + oy * p.ow + ox];
    }
  }
  dst[e] = acc;
}
