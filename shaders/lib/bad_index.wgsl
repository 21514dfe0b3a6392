// Reports an index outside its range in four words of the including shader's `bad: array<atomic<u32>, 4>` (an
// engine.dataCheck binding; src/errors.ts describeBadIndices words them): the count, the largest and the
// (complemented) smallest index as order-preserving u32 keys, and the (complemented) first position, all by
// atomicMax, so any order of the positions gives the same words.
fn reportBadIndex(index: i32, position: u32) {
  let key = bitcast<u32>(index) ^ 0x80000000u;  // i32 order as u32 order
  atomicAdd(&bad[0], 1u);
  atomicMax(&bad[1], key);
  atomicMax(&bad[2], ~key);
  atomicMax(&bad[3], ~position);
}
