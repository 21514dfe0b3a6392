// topk.wgsl: indices of the k largest (or, with SMALLEST, smallest) elements of each row of x [rows, len], in
// order, by radix select (as PyTorch's CUDA topk). Element i of a row has a 64-bit key (value key, ~i): the
// value's f32 bits made order-preserving (−0 as +0, NaN above +∞ as PyTorch orders it; all bits inverted for
// SMALLEST), then the inverted index, so among equal values the lower index ranks higher. Keys are distinct,
// so the k-th largest key of a row is a threshold that exactly k elements reach. Eight rounds find it a byte
// at a time, top byte first:
//   histogram: each element whose key matches its row's prefix (the bytes fixed so far) counts in bin
//              bins[row, its next byte]; ITEMS elements an invocation
//   pick:      one invocation per row walks its 256 bins from the top to the bin holding the k-th key, fixes
//              that byte into the prefix and the count still wanted inside it, and zeroes the bins for the
//              next round (round 0 starts from an empty prefix and k); a bin of exactly the elements still
//              wanted settles the row, whose later rounds then read nothing (random floats: after 2 or 3)
//   collect:   each element whose key reaches the threshold takes a slot of its row's k (an atomic counter)
//              and writes its key there
//   rank:      candidate j's place in the result is the number of its row's candidates with a larger key;
//              one invocation per candidate loops k times (src/topk.ts caps k)
// A dispatch takes rows row0 .. row0 + rows (src/topk.ts runs the rows in batches whose bins fit a binding);
// their elements are numbered e = row·len + i from row0's first, and neighbouring invocations take neighbouring
// ones. Bindings: 0 params; 1 x (f32, the whole tensor), 2 prefix [rows] vec4<u32> (key hi, key lo, wanted,
// unused), 3 bins [rows, 256], 4 candidates [rows, k] vec2<u32> keys, 5 slots [rows] (zeros), 6 out (i32
// indices, the whole result [all rows, k]).
//! include lib/nan.wgsl

struct Params {
  rows: u32,   // rows in this batch
  len: u32,
  k: u32,
  round: u32,  // histogram and pick: the byte being fixed, 0 (top) to 7
  row0: u32,   // the batch's first row in x and out
}

override WG: u32 = 256;
override SMALLEST: bool = false;
const ITEMS = 16u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> prefix: array<vec4<u32>>;
@group(0) @binding(3) var<storage, read_write> bins: array<atomic<u32>>;
@group(0) @binding(4) var<storage, read_write> candidates: array<vec2<u32>>;
@group(0) @binding(5) var<storage, read_write> slots: array<atomic<u32>>;
@group(0) @binding(6) var<storage, read_write> out: array<i32>;

// Element i's key: larger is ranked higher. Tests on the bits, as lib/nan.wgsl's.
fn keyOf(v: f32, i: u32) -> vec2<u32> {
  let raw = bitcast<u32>(v);
  let bits = select(raw, 0u, (raw & 0x7fffffffu) == 0u);  // −0 as +0
  var value = select(bits | 0x80000000u, ~bits, (bits >> 31u) == 1u);
  value = select(value, 0xffffffffu, isNan(v));  // NaN, whatever its sign bit
  return vec2<u32>(select(value, ~value, SMALLEST), ~i);
}

// Byte `round` of a key, counted from the top.
fn byteOf(key: vec2<u32>, round: u32) -> u32 {
  let word = select(key.x, key.y, round >= 4u);
  return (word >> (24u - 8u * (round % 4u))) & 0xffu;
}

// Whether a key's top `round` bytes equal the prefix's.
fn matches(key: vec2<u32>, fixed: vec2<u32>, round: u32) -> bool {
  let hi = select(select(0xffffffffu << (32u - 8u * round), 0u, round == 0u), 0xffffffffu, round >= 4u);
  let lo = select(0u, 0xffffffffu << (64u - 8u * round), round > 4u);
  return ((key.x ^ fixed.x) & hi) == 0u && ((key.y ^ fixed.y) & lo) == 0u;
}

fn workgroup(wg: vec3<u32>, nwg: vec3<u32>) -> u32 {
  return wg.y * nwg.x + wg.x;
}

// Invocation lid of workgroup w visits elements e = w·WG·ITEMS + lid + k·WG (k < ITEMS) of the batch, keeping
// their row and column by adding WG: a division only where a step crosses a row's end (rare in long rows; a
// CPU adapter divides lane by lane), and the row's prefix state loaded again there.
struct Walk {
  row: u32,
  i: u32,
  state: vec4<u32>,
}

fn prefixOf(row: u32) -> vec4<u32> {
  return prefix[min(row, p.rows - 1u)];
}

fn walkStart(w: u32, lid: u32) -> Walk {
  let e = w * WG * ITEMS + lid;
  let row = e / p.len;
  return Walk(row, e - row * p.len, prefixOf(row));
}

fn walkNext(walk: ptr<function, Walk>) {
  (*walk).i += WG;
  if ((*walk).i >= p.len) {
    (*walk).row += (*walk).i / p.len;
    (*walk).i %= p.len;
    (*walk).state = prefixOf((*walk).row);
  }
}

fn keyAt(walk: Walk) -> vec2<u32> {
  return keyOf(x[(p.row0 + walk.row) * p.len + walk.i], walk.i);
}

@compute @workgroup_size(WG)
fn histogram(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) lid: u32) {
  var walk = walkStart(workgroup(wg, nwg), lid);
  for (var k = 0u; k < ITEMS; k++) {
    if (walk.row >= p.rows) { return; }
    // A row already settled (state.w, from pick) reads nothing more; round 0's state is last call's.
    if (p.round == 0u || walk.state.w == 0u) {
      let key = keyAt(walk);
      if (matches(key, walk.state.xy, p.round)) { atomicAdd(&bins[walk.row * 256u + byteOf(key, p.round)], 1u); }
    }
    walkNext(&walk);
  }
}

@compute @workgroup_size(WG)
fn pick(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
  let row = workgroup(wg, nwg) * WG + lid;
  if (row >= p.rows) { return; }
  var state = select(prefix[row], vec4<u32>(0u, 0u, p.k, 0u), p.round == 0u);
  if (state.w != 0u) { return; }  // settled: no histogram counted into its bins
  var above = 0u;  // elements in the bins above b
  for (var b = 255i; b >= 0; b--) {
    let count = atomicLoad(&bins[row * 256u + u32(b)]);
    if (above + count >= state.z) {
      let shift = 24u - 8u * (p.round % 4u);
      if (p.round < 4u) { state.x |= u32(b) << shift; } else { state.y |= u32(b) << shift; }
      // When the bin holds exactly the elements still wanted, every key with this prefix is taken: the
      // prefix, its later bytes 0, is the threshold, and the row is settled.
      state.w = select(0u, 1u, above + count == state.z);
      state.z -= above;
      break;
    }
    above += count;
  }
  prefix[row] = state;
  for (var b = 0u; b < 256u; b++) { atomicStore(&bins[row * 256u + b], 0u); }
}

@compute @workgroup_size(WG)
fn collect(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) lid: u32) {
  var walk = walkStart(workgroup(wg, nwg), lid);
  for (var k = 0u; k < ITEMS; k++) {
    if (walk.row >= p.rows) { return; }
    let key = keyAt(walk);
    let threshold = walk.state.xy;
    if (key.x > threshold.x || (key.x == threshold.x && key.y >= threshold.y)) {
      candidates[walk.row * p.k + atomicAdd(&slots[walk.row], 1u)] = key;
    }
    walkNext(&walk);
  }
}

@compute @workgroup_size(WG)
fn rank(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
  let c = workgroup(wg, nwg) * WG + lid;
  if (c >= p.rows * p.k) { return; }
  let row = c / p.k;
  let mine = candidates[c];
  var place = 0u;
  for (var j = row * p.k; j < (row + 1u) * p.k; j++) {
    let other = candidates[j];
    place += select(0u, 1u, other.x > mine.x || (other.x == mine.x && other.y > mine.y));
  }
  out[(p.row0 + row) * p.k + place] = i32(~mine.y);
}
