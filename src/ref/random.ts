// CPU reference of shaders/lib/philox.wgsl and shaders/random.wgsl: the same bits, so the same uniforms; normals
// agree to ~1e-6 (the GPU's log and cos are f32).

/** High 32 bits of the 64-bit product of two u32, built from 16-bit halves exactly as the WGSL does. */
function mulHi(a: number, b: number): number {
  const lolo = (a & 0xffff) * (b & 0xffff);
  const hilo = (a >>> 16) * (b & 0xffff);
  const lohi = (a & 0xffff) * (b >>> 16);
  const cross = (lolo >>> 16) + (hilo & 0xffff) + lohi;
  return ((a >>> 16) * (b >>> 16) + (hilo >>> 16) + Math.floor(cross / 65536)) >>> 0;
}

/**
 * Philox 4x32-10: four 32-bit words from a 128-bit counter and a 64-bit key. Scalars only, no array per round:
 * the augmentations draw their per-sample parameters with it on the host.
 */
export function philox(counter: readonly number[], key: readonly number[]): Uint32Array {
  let c0 = counter[0] >>> 0;
  let c1 = counter[1] >>> 0;
  let c2 = counter[2] >>> 0;
  let c3 = counter[3] >>> 0;
  let k0 = key[0] >>> 0;
  let k1 = key[1] >>> 0;
  for (let r = 0; r < 10; r++) {
    const h0 = mulHi(0xD2511F53, c0);
    const l0 = Math.imul(0xD2511F53, c0) >>> 0;
    const h1 = mulHi(0xCD9E8D57, c2);
    const l1 = Math.imul(0xCD9E8D57, c2) >>> 0;
    c0 = (h1 ^ c1 ^ k0) >>> 0;
    c2 = (h0 ^ c3 ^ k1) >>> 0;
    c1 = l1;
    c3 = l0;
    k0 = (k0 + 0x9E3779B9) >>> 0;
    k1 = (k1 + 0xBB67AE85) >>> 0;
  }
  return Uint32Array.of(c0, c1, c2, c3);
}

export function seedKey(seed: number): [number, number] {
  return [seed >>> 0, Math.floor(seed / 2 ** 32) >>> 0];
}

export function uniformFromBits(x: number): number {
  return (x >>> 8) / 16777216;
}

export function refRand(size: number, seed: number): Float64Array {
  const key = seedKey(seed);
  return Float64Array.from({ length: size }, (_, i) => uniformFromBits(philox([i, 0, 0, 0], key)[0]));
}

export function refRandn(size: number, seed: number): Float64Array {
  const key = seedKey(seed);
  return Float64Array.from({ length: size }, (_, i) => {
    const r = philox([i, 0, 0, 0], key);
    const u1 = ((r[0] >>> 8) + 1) / 16777216;
    return Math.sqrt(-2 * Math.log(u1)) * Math.cos(2 * Math.PI * uniformFromBits(r[1]));
  });
}

/** random.wgsl's dropout: element i kept where word i % 4 of philox((i / 4, 1, 0, 0), seed) gives u ≥ p. */
export function refDropout(x: ArrayLike<number>, p: number, seed: number): Float64Array {
  const key = seedKey(seed);
  const threshold = Math.fround(p);
  const scale = p < 1 ? Math.fround(1 / (1 - p)) : 0;
  const out = new Float64Array(x.length);
  let r: Uint32Array = new Uint32Array(4);
  for (let i = 0; i < x.length; i++) {
    if (i % 4 === 0) r = philox([i / 4, 1, 0, 0], key);
    out[i] = x[i] * (uniformFromBits(r[i % 4]) >= threshold ? scale : 0);
  }
  return out;
}
