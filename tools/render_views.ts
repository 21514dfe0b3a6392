// Renders docs/simclr-views.png with the engine itself: two synthetic images (made here in code) and four
// SimCLR view pairs of each, one image per row. `deno run -A tools/render_views.ts [out.png]`
import { deflateSync } from "node:zlib";
import { init, simclrViews } from "../src/mod.ts";

const SIZE = 128;
const PAIRS = 4;
const PAD = 4;

/** A landscape: sky gradient, sun, hills, a red house with a window, striped field (RGBA8). */
function landscape(variant: number): Uint8Array {
  const px = new Uint8Array(SIZE * SIZE * 4);
  for (let y = 0; y < SIZE; y++) {
    for (let x = 0; x < SIZE; x++) {
      const u = x / SIZE;
      const v = y / SIZE;
      let rgb = [0.35 + 0.4 * v, 0.55 + 0.35 * v, 0.95];
      const sun = Math.hypot(u - (variant ? 0.2 : 0.78), v - 0.2);
      if (sun < 0.11) rgb = [1, 0.85 - 2 * sun, 0.2];
      const hill = 0.55 + 0.08 * Math.sin(u * 9 + variant * 2);
      if (v > hill) rgb = [0.15 + 0.2 * v, 0.55 - 0.2 * (v - hill), 0.2];
      if (v > 0.8) rgb = Math.floor(x / 8 + y / 8) % 2 ? [0.85, 0.75, 0.25] : [0.6, 0.45, 0.15];
      const hx = variant ? 0.55 : 0.2;
      if (u > hx && u < hx + 0.25 && v > 0.5 && v < 0.78) rgb = [0.75, 0.12, 0.1];
      if (u > hx + 0.16 && u < hx + 0.22 && v > 0.56 && v < 0.64) rgb = [0.95, 0.95, 0.6];
      if (v > 0.38 && v <= 0.5 && Math.abs(u - hx - 0.125) < (v - 0.38) * 1.1) rgb = [0.35, 0.2, 0.15];
      px.set([...rgb.map((c) => Math.round(255 * Math.min(1, Math.max(0, c)))), 255], (y * SIZE + x) * 4);
    }
  }
  return px;
}

function crc32(bytes: Uint8Array): number {
  let c = ~0;
  for (const b of bytes) {
    c ^= b;
    for (let k = 0; k < 8; k++) c = (c >>> 1) ^ (0xEDB88320 & -(c & 1));
  }
  return ~c >>> 0;
}

/** An 8-bit RGB PNG. */
function png(rgb: Uint8Array, width: number, height: number): Uint8Array {
  const raw = new Uint8Array(height * (1 + width * 3));
  for (let y = 0; y < height; y++) {
    raw.set(rgb.subarray(y * width * 3, (y + 1) * width * 3), y * (1 + width * 3) + 1);
  }
  const chunk = (type: string, data: Uint8Array) => {
    const out = new Uint8Array(12 + data.length);
    const view = new DataView(out.buffer);
    view.setUint32(0, data.length);
    out.set(new TextEncoder().encode(type), 4);
    out.set(data, 8);
    view.setUint32(8 + data.length, crc32(out.subarray(4, 8 + data.length)));
    return out;
  };
  const header = new Uint8Array(13);
  new DataView(header.buffer).setUint32(0, width);
  new DataView(header.buffer).setUint32(4, height);
  header.set([8, 2, 0, 0, 0], 8);
  const parts = [
    Uint8Array.of(137, 80, 78, 71, 13, 10, 26, 10),
    chunk("IHDR", header),
    chunk("IDAT", new Uint8Array(deflateSync(raw))),
    chunk("IEND", new Uint8Array()),
  ];
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

const engine = await init();
const sources = [landscape(0), landscape(1)];
const pixels = new Uint8Array(sources.length * SIZE * SIZE * 4);
sources.forEach((s, i) => pixels.set(s, i * SIZE * SIZE * 4));
const x = engine.images(pixels, { n: sources.length, height: SIZE, width: SIZE });
// Columns: the original, then PAIRS view pairs; each pair from its own seed.
const columns: Float32Array[] = [(await x.toArray()) as Float32Array];
for (let s = 0; s < PAIRS; s++) {
  const { views } = simclrViews(x, { seed: 17 + s, size: SIZE });
  for (const v of views) {
    columns.push((await v.toArray()) as Float32Array);
    v.dispose();
  }
}
x.dispose();
const cols = columns.length;
const width = cols * SIZE + (cols + 1) * PAD + PAD;
const height = sources.length * SIZE + (sources.length + 1) * PAD;
const rgb = new Uint8Array(width * height * 3).fill(255);
const plane = SIZE * SIZE;
for (let row = 0; row < sources.length; row++) {
  columns.forEach((img, col) => {
    // An extra gap separates the original from its views.
    const left = PAD + col * (SIZE + PAD) + (col > 0 ? PAD : 0);
    const top = PAD + row * (SIZE + PAD);
    for (let y = 0; y < SIZE; y++) {
      for (let xx = 0; xx < SIZE; xx++) {
        for (let c = 0; c < 3; c++) {
          const v = img[(row * 3 + c) * plane + y * SIZE + xx];
          rgb[((top + y) * width + left + xx) * 3 + c] = Math.round(255 * Math.min(1, Math.max(0, v)));
        }
      }
    }
  });
}
const path = Deno.args[0] ?? new URL("../docs/simclr-views.png", import.meta.url).pathname;
Deno.writeFileSync(path, png(rgb, width, height));
console.log(`wrote ${path} (${width}×${height})`);
engine.destroy();
