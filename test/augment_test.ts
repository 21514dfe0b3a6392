import {
  applyParams,
  type Augmented,
  byolViews,
  colorJitter,
  dinoViews,
  type Engine,
  gaussianBlur,
  gaussianNoise,
  horizontalFlip,
  identityParams,
  maskedImageTask,
  maskedTokenTask,
  normalizeChannels,
  randomErasing,
  randomGrayscale,
  randomResizedCrop,
  rotate90,
  type SampleParams,
  ShapeError,
  simclrViews,
  solarize,
  swavViews,
  type Tensor,
} from "../src/mod.ts";
import { refApplyParams, refImages } from "../src/ref/augment.ts";
import { bothKernels, test } from "./harness.ts";
import {
  assert,
  assertClose,
  assertEquals,
  assertNoLeak,
  assertThrows,
  randomArray,
  rng,
  take,
} from "./util.ts";

// Same-geometry ops against the float64 reference: a handful of f32 operations on values in [0, 1] (the HSV
// round trip and the f32 contrast mean being the longest chains, WGSL log/cos a few ulp for noise) → 1e-5.
const PIXEL = { rtol: 0, atol: 1e-5 };
// Bilinear resampling: the f32 source coordinate is off by up to ~1e-7·H pixels, times a pixel-to-pixel jump of
// up to 1, then amplified by jitter factors ≤ 1.8 and blur → 1e-4 (the bound).
const BILINEAR = { rtol: 0, atol: 1e-4 };

function batch(engine: Engine, shape: number[], seed: number): { x: Tensor; host: Float32Array } {
  const host = randomArray(shape.reduce((a, b) => a * b), seed, 0, 1);
  return { x: engine.tensor(host, shape), host };
}

async function checkOp(
  name: string,
  host: Float32Array,
  x: Tensor,
  r: Augmented,
  tol: { rtol: number; atol: number },
  opts: { size?: number | [number, number]; seed?: number } = {},
) {
  const got = await take(r.output);
  assertClose(got, refApplyParams(host, x.shape, r.params, opts), tol, `${name} ${JSON.stringify(x.shape)}`);
}

// Shapes: a 1×1 image, primes, both channel counts, sizes unlike the workgroup (256); N = 6 so p < 1 splits.
const SHAPES = [[1, 3, 1, 1], [6, 3, 7, 5], [6, 1, 13, 11], [2, 3, 17, 3]];

test("augment: images() unpacks RGBA8 (bytes, clamped bytes, ImageData, four pixels at a time) and drops alpha", async (engine) => {
  const before = engine.memory();
  const [n, h, w] = [2, 3, 5];
  const bytes = Uint8Array.from({ length: n * h * w * 4 }, (_, i) => (i * 37 + 11) % 256);
  const expected = refImages(bytes, n, h, w);
  // f32 division by 255 on the GPU (≤ 2.5 ulp) against float64: 1e-7.
  const tol = { rtol: 0, atol: 1e-7 };
  assertClose(await take(engine.images(bytes, { n, height: h, width: w })), expected, tol, "Uint8Array");
  // H·W a multiple of 4 (four pixels an invocation): one quad, and 700 quads over three workgroups.
  for (const [qn, qh, qw] of [[1, 1, 4], [3, 4, 6], [5, 20, 28]]) {
    const quads = Uint8Array.from({ length: qn * qh * qw * 4 }, (_, i) => (i * 53 + 7) % 256);
    assertClose(
      await take(engine.images(quads, { n: qn, height: qh, width: qw })),
      refImages(quads, qn, qh, qw),
      tol,
      `[${qn}, ${qh}, ${qw}]`,
    );
  }
  assertClose(
    await take(engine.images(new Uint8ClampedArray(bytes), { n, height: h, width: w })),
    expected,
    tol,
    "clamped",
  );
  const data = [0, 1].map((i) => ({
    width: w,
    height: h,
    data: bytes.slice(i * h * w * 4, (i + 1) * h * w * 4),
  }));
  assertClose(
    await take(engine.images(data as unknown as ImageData[], { n, height: h, width: w })),
    expected,
    tol,
    "ImageData",
  );
  await assertThrows(() => engine.images(bytes, { n, height: h, width: 4 }), ShapeError, [
    "bytes",
    "[2, 3, 4]",
  ]);
  await assertThrows(
    () => engine.images(data as unknown as ImageData[], { n: 2, height: 5, width: 3 }),
    ShapeError,
    ["5×3"],
  );
  assertNoLeak(engine, before, "images");
});

test("augment: every op matches the float64 reference with the same seed", async (engine) => {
  const before = engine.memory();
  for (const [k, shape] of SHAPES.entries()) {
    const { x, host } = batch(engine, shape, 10 + k);
    const seed = 100 + k;
    const square = shape[2] === shape[3];
    await checkOp("flip", host, x, horizontalFlip(x, { seed }), PIXEL);
    await checkOp("grayscale", host, x, randomGrayscale(x, { seed, p: 0.5 }), PIXEL);
    const jitter = { brightness: 0.8, contrast: 0.8, saturation: 0.8, hue: 0.2 };
    await checkOp("jitter", host, x, colorJitter(x, { seed, p: 0.8, ...jitter }), PIXEL);
    await checkOp("blur", host, x, gaussianBlur(x, { seed, p: 0.7, sigma: [0.1, 2] }), PIXEL);
    await checkOp("solarize", host, x, solarize(x, { seed, p: 0.5, threshold: 0.3 }), PIXEL);
    await checkOp("erase", host, x, randomErasing(x, { seed, p: 0.8, value: 0.25 }), PIXEL);
    await checkOp("noise", host, x, gaussianNoise(x, { seed, sigma: 0.1 }), PIXEL, { seed });
    const norm = { mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225] };
    const got = await take(normalizeChannels(x, norm.mean, norm.std));
    const params = Array.from({ length: shape[0] }, () => identityParams(shape[2], shape[3]));
    // Normalizing divides by std ≈ 0.22: the 1e-5 pixel bound scaled by 1/0.22.
    assertClose(
      got,
      refApplyParams(host, shape, params, { normalize: norm }),
      { rtol: 0, atol: 5e-5 },
      "normalize",
    );
    if (square) await checkOp("rotate90", host, x, rotate90(x, { seed }), PIXEL);
    await checkOp("crop", host, x, randomResizedCrop(x, { seed, size: [6, 9] }), BILINEAR, { size: [6, 9] });
    await checkOp("crop up", host, x, randomResizedCrop(x, { seed, size: 19, scale: [0.5, 1] }), BILINEAR, {
      size: 19,
    });
    x.dispose();
  }
  assertNoLeak(engine, before, "ops");
});

test("augment: blur on rows of whole vec4s, radii past the image side, batches past one records window", async (engine) => {
  const before = engine.memory();
  // [shape, sigma range]: widths that are multiples of 4 blur four pixels per invocation (blurW4 alone where every
  // vec4 column is near an edge, blurW4Inner with blurW4's EDGES where some are not: the last three cases); a
  // 4-wide or 2-high image folds a radius of up to 6 more than once (FAR); 690 samples span two 682-sample record
  // windows (two dispatches per pass); 30 rows end in a partial block of blurH4's four; 300 = 75 vec4 columns take
  // two workgroups of 64 across.
  const cases: [number[], [number, number]][] = [
    [[4, 3, 12, 8], [0.1, 2]],
    [[3, 1, 5, 4], [0.1, 2]],
    [[2, 3, 40, 36], [3, 5]],
    [[690, 3, 2, 4], [0.1, 2]],
    [[3, 3, 30, 64], [0.1, 2]],
    [[3, 1, 9, 32], [0.5, 3]],
    [[2, 3, 5, 300], [0.5, 3]],
  ];
  for (const [k, [shape, sigma]] of cases.entries()) {
    const { x, host } = batch(engine, shape, 30 + k);
    const blurred = gaussianBlur(x, { seed: k, p: 0.8, sigma });
    await checkOp(`blur ${shape}`, host, x, blurred, PIXEL);
    if (shape[1] === 3) {
      const gray = await take(applyParams(x, blurred.params, { grayOutput: true }));
      assertClose(
        gray,
        refApplyParams(host, shape, blurred.params, { grayOutput: true }),
        PIXEL,
        `gray blur ${shape}`,
      );
    }
    const jitter = { brightness: 0.8, contrast: 0.8, saturation: 0.8, hue: 0.2 };
    await checkOp(`jitter ${shape}`, host, x, colorJitter(x, { seed: k, ...jitter }), PIXEL);
    x.dispose();
  }
  assertNoLeak(engine, before, "blur");
});

/** Hand-made records for n samples of h×w: crops `cropWidth` wide, and every step some samples take. */
function handMade(
  n: number,
  h: number,
  w: number,
  cropWidth: [number, number],
  seed: number,
): SampleParams[] {
  const r = rng(seed);
  const int = (lo: number, hi: number) => lo + Math.floor(r() * (hi - lo + 1));
  return Array.from({ length: n }, (_, i) => {
    const q = identityParams(h, w);
    const [height, width] = [int(1, h), int(...cropWidth)];
    q.crop = { top: int(0, h - height), left: int(0, w - width), height, width };
    q.flip = i % 2 === 1;
    q.rotate = i % 3 === 2 ? 2 : 0;
    if (i % 4 !== 3) {
      const order = [0, 1, 2, 3].sort(() => r() - 0.5);
      q.jitter = { brightness: 0.5 + r(), contrast: 0.5 + r(), saturation: 0.5 + r(), hue: r() - 0.5, order };
    }
    q.grayscale = i % 5 === 4;
    if (i % 3 === 1) q.erase = { top: 1, left: 2, height: 3, width: 5, value: 0.25 };
    q.noise = i === 1 ? 0.1 : 0;
    q.solarize = i % 2 ? 0.4 : null;
    q.blur = i % 4 === 1 ? 0.8 : 0;
    return q;
  });
}

test("augment: four pixels per invocation where widths are multiples of 4: crops up and down, flips, half turns", async (engine) => {
  const before = engine.memory();
  // [input shape, output size, crop widths]: four neighbouring outputs read NV vec4s of a source row: 2 when
  // upscaling, 3 when shrinking by 4/3 or 2, 4 by 3.5; past that the per-pixel view takes over; one channel; a
  // source one vec4 wide; 75 vec4 columns, two workgroups of 64 across.
  const cases: [number[], [number, number], [number, number]][] = [
    [[7, 3, 12, 16], [20, 24], [1, 16]],
    [[2, 3, 4, 300], [3, 300], [150, 300]],
    [[7, 3, 12, 16], [8, 12], [9, 16]],
    [[6, 3, 20, 24], [8, 8], [13, 16]],
    [[6, 3, 20, 24], [8, 4], [13, 14]],
    [[5, 3, 8, 24], [6, 4], [17, 24]],
    [[7, 1, 9, 20], [9, 12], [1, 20]],
    [[3, 3, 5, 4], [7, 4], [1, 4]],
  ];
  for (const [k, [shape, size, cropWidth]] of cases.entries()) {
    const { x, host } = batch(engine, shape, 40 + k);
    const params = handMade(shape[0], shape[2], shape[3], cropWidth, k);
    const got = await take(applyParams(x, params, { size, seed: k }));
    assertClose(got, refApplyParams(host, shape, params, { size, seed: k }), BILINEAR, `${shape} -> ${size}`);
    if (shape[1] === 3) {
      const gray = await take(applyParams(x, params, { size, seed: k, grayOutput: true }));
      const expected = refApplyParams(host, shape, params, { size, seed: k, grayOutput: true });
      assertClose(gray, expected, BILINEAR, `gray ${shape} -> ${size}`);
    }
    x.dispose();
  }
  assertNoLeak(engine, before, "view4");
});

test("augment: the ops draw per sample (some samples get each op, some do not)", (engine) => {
  const { x } = batch(engine, [8, 3, 6, 6], 3);
  const draws: [string, Augmented, (q: SampleParams) => boolean][] = [
    ["flip", horizontalFlip(x, { seed: 1 }), (q) => q.flip],
    ["jitter", colorJitter(x, { seed: 1, p: 0.5, brightness: 0.5 }), (q) => q.jitter !== null],
    ["grayscale", randomGrayscale(x, { seed: 1, p: 0.5 }), (q) => q.grayscale],
    ["blur", gaussianBlur(x, { seed: 1, p: 0.5 }), (q) => q.blur > 0],
    ["solarize", solarize(x, { seed: 1, p: 0.5 }), (q) => q.solarize !== null],
    ["erase", randomErasing(x, { seed: 1 }), (q) => q.erase !== null],
    ["rotate", rotate90(x, { seed: 1 }), (q) => q.rotate !== 0],
  ];
  for (const [name, r, applied] of draws) {
    r.output.dispose();
    assert(r.params.some(applied) && !r.params.every(applied), `${name}: expected a mix over 8 samples`);
  }
  x.dispose();
});

test("augment: simclrViews and byolViews match the reference; the two views differ", async (engine) => {
  const before = engine.memory();
  const { x, host } = batch(engine, [6, 3, 12, 10], 7);
  for (const [name, make] of [["simclr", simclrViews], ["byol", byolViews]] as const) {
    const { views, params } = make(x, { seed: 42, size: 8 });
    const a = await take(views[0]);
    const b = await take(views[1]);
    assertClose(
      a,
      refApplyParams(host, x.shape, params[0], { size: 8, seed: 42, stream: 0 }),
      BILINEAR,
      `${name} view 0`,
    );
    assertClose(
      b,
      refApplyParams(host, x.shape, params[1], { size: 8, seed: 42, stream: 1 }),
      BILINEAR,
      `${name} view 1`,
    );
    assert(a.some((v, i) => v !== b[i]), `${name}: the views should differ`);
  }
  const byol = byolViews(x, { seed: 5, size: 8 });
  byol.views.forEach((v) => v.dispose());
  assert(
    byol.params[0].every((q) => q.blur > 0 && q.solarize === null),
    "byol view 0: blur always, never solarize",
  );
  x.dispose();
  assertNoLeak(engine, before, "views");
});

test("augment: dinoViews and swavViews: global and local views match the reference, draw their recipes", async (engine) => {
  const before = engine.memory();
  const { x, host } = batch(engine, [5, 3, 20, 16], 9);
  const o = { seed: 3, globalSize: 12, localSize: [6, 5] as [number, number], localCrops: 3 };
  for (const make of [dinoViews, swavViews]) {
    const { global, local, params } = make(x, o);
    assertEquals(local.length, 3, `${make.name}: local views`);
    const all = [...global, ...local];
    const drawn = [...params.global, ...params.local];
    for (const [k, v] of all.entries()) {
      const size = k < 2 ? o.globalSize : o.localSize;
      assertEquals(v.shape, [5, 3, ...(k < 2 ? [12, 12] : [6, 5])], `${make.name} view ${k} shape`);
      const expected = refApplyParams(host, x.shape, drawn[k], { size, seed: 3, stream: k });
      assertClose(await take(v), expected, BILINEAR, `${make.name} view ${k}`);
    }
  }
  x.dispose();
  // The recipes over 400 images of 32² (views of 4², so they are cheap): crop areas in each view's scale range
  // (sides of ~4 to 32 pixels rounded to integers: 10% slack), and the blur and solarize rates of DINO's views
  // (p 1 exactly; p 0.1, 0.2 and 0.5 within 4 standard deviations over 400 and 1,200 draws).
  using big = engine.zeros([400, 3, 32, 32]);
  const dino = dinoViews(big, { seed: 1, globalSize: 4, localSize: 4, localCrops: 3 });
  const swav = swavViews(big, { seed: 1, globalSize: 4, localSize: 4, localCrops: 1 });
  [...dino.global, ...dino.local, ...swav.global, ...swav.local].forEach((v) => v.dispose());
  const within = (name: string, qs: SampleParams[][], lo: number, hi: number) => {
    const a = qs.flat().map((q) => (q.crop.height * q.crop.width) / 1024);
    const [min, max] = [Math.min(...a), Math.max(...a)];
    assert(
      min >= lo * 0.9 && max <= Math.min(1, hi * 1.1),
      `${name}: areas ${min} to ${max}, not in [${lo}, ${hi}]`,
    );
  };
  within("dino global", dino.params.global, 0.4, 1);
  within("dino local", dino.params.local, 0.05, 0.4);
  within("swav global", swav.params.global, 0.14, 1);
  within("swav local", swav.params.local, 0.05, 0.14);
  const rate = (qs: SampleParams[], f: (q: SampleParams) => boolean) => qs.filter(f).length / qs.length;
  const near = (name: string, r: number, p: number, n: number) =>
    assert(Math.abs(r - p) <= 4 * Math.sqrt((p * (1 - p)) / n), `${name}: rate ${r}, expected ${p}`);
  const [g0, g1] = dino.params.global;
  assertEquals(rate(g0, (q) => q.blur > 0), 1, "dino global 0 always blurs");
  assertEquals(rate(g0, (q) => q.solarize !== null), 0, "dino global 0 never solarizes");
  near("dino global 1 blur", rate(g1, (q) => q.blur > 0), 0.1, 400);
  near("dino global 1 solarize", rate(g1, (q) => q.solarize !== null), 0.2, 400);
  near("dino local blur", rate(dino.params.local.flat(), (q) => q.blur > 0), 0.5, 1200);
  near("swav blur", rate([...swav.params.global, ...swav.params.local].flat(), (q) => q.blur > 0), 0.5, 1200);
  await assertThrows(() => dinoViews(big, { seed: 1, localCrops: 1.5 }), RangeError, ["localCrops", "1.5"]);
  await assertThrows(() => swavViews(big, { seed: 1, localSize: 0 }), RangeError, ["size"]);
  big.dispose();
  assertNoLeak(engine, before, "multi-crop");
});

test("augment: the same seed replays bit for bit, another seed differs, params replay", async (engine) => {
  const { x } = batch(engine, [4, 3, 9, 9], 8);
  const run = async (seed: number) => {
    const { views, params } = simclrViews(x, { seed, size: 7 });
    return { a: await take(views[0]), b: await take(views[1]), params };
  };
  const r1 = await run(9);
  const r2 = await run(9);
  const r3 = await run(10);
  assertEquals(Array.from(r1.a), Array.from(r2.a), "view 0 replays");
  assertEquals(Array.from(r1.b), Array.from(r2.b), "view 1 replays");
  assert(r1.a.some((v, i) => v !== r3.a[i]), "another seed differs");
  const replay = await take(applyParams(x, r1.params[1], { size: 7, seed: 9, stream: 1 }));
  assertEquals(Array.from(replay), Array.from(r1.b), "applyParams replays the drawn params");
  x.dispose();
});

test("augment: rotate90 permutes pixels as numpy's rot90 does", async (engine) => {
  const { x, host } = batch(engine, [8, 3, 6, 6], 12);
  const rot = rotate90(x, { seed: 0 });
  const out = await take(rot.output);
  const plane = 36;
  for (let i = 0; i < 8 * 3; i++) {
    const a = Array.from(host.subarray(i * plane, (i + 1) * plane)).sort();
    const b = Array.from(out.subarray(i * plane, (i + 1) * plane)).sort();
    assertEquals(b, a, `plane ${i} is a permutation`);
  }
  // numpy's rot90 k times: k = 1 reads in[x][S-1-y], k = 2 in[S-1-y][S-1-x], k = 3 in[S-1-x][y].
  const from = [
    (y: number, xx: number) => [y, xx],
    (y: number, xx: number) => [xx, 5 - y],
    (y: number, xx: number) => [5 - y, 5 - xx],
    (y: number, xx: number) => [5 - xx, y],
  ];
  assertEquals(new Set(rot.params.map((q) => q.rotate)).size, 4, "every k occurs over 8 samples");
  rot.params.forEach((q, s) => {
    for (let y = 0; y < 6; y++) {
      for (let xx = 0; xx < 6; xx++) {
        const [sy, sx] = from[q.rotate](y, xx);
        assertEquals(
          out[s * 3 * plane + y * 6 + xx],
          host[s * 3 * plane + sy * 6 + sx],
          `sample ${s} k ${q.rotate}`,
        );
      }
    }
  });
  x.dispose();
});

test("augment: turns and flips alone on sides that are multiples of 4 move whole 4×4 blocks, exactly", async (engine) => {
  const before = engine.memory();
  // All 8 (quarter turns, flip) pairs on square images of both channel counts, and flips and half turns of a
  // non-square one; 260 = 65 blocks a side, past one workgroup's 64 block columns. Moving pixels is exact.
  for (const shape of [[8, 3, 36, 36], [8, 1, 12, 12], [4, 3, 8, 20], [4, 1, 260, 260]]) {
    const { x, host } = batch(engine, shape, shape[2]);
    const square = shape[2] === shape[3];
    const params = Array.from({ length: shape[0] }, (_, i) => ({
      ...identityParams(shape[2], shape[3]),
      rotate: square ? i % 4 : 2 * (i % 2),
      flip: i >= shape[0] / 2,
    }));
    const got = await take(applyParams(x, params));
    assertEquals(Array.from(got), Array.from(refApplyParams(host, shape, params)), `${shape}`);
    x.dispose();
  }
  assertNoLeak(engine, before, "turns");
});

test("augment: parameter distributions follow their specification", async (engine) => {
  const n = 2000;
  const [h, w] = [48, 64];
  const x = engine.zeros([n, 1, h, w]);
  const crop = randomResizedCrop(x, { seed: 1, size: 2 });
  crop.output.dispose();
  x.dispose();
  const area = crop.params.map((q) => (q.crop.height * q.crop.width) / (h * w));
  const aspect = crop.params.map((q) => q.crop.width / q.crop.height);
  for (const q of crop.params) {
    const c = q.crop;
    assert(
      c.top >= 0 && c.left >= 0 && c.top + c.height <= h && c.left + c.width <= w,
      `crop inside: ${JSON.stringify(c)}`,
    );
  }
  // Sides are rounded to integers: at the smallest area (0.08 of 48×64, sides ~12–16) that moves area and aspect
  // by up to ~10%.
  assert(
    Math.min(...area) >= 0.08 * 0.9 && Math.max(...area) <= 1,
    `area in [0.08, 1]: ${Math.min(...area)}`,
  );
  assert(Math.min(...aspect) >= 0.75 * 0.9 && Math.max(...aspect) <= (4 / 3) * 1.1, "aspect in [3/4, 4/3]");
  assert(Math.min(...area) < 0.12 && Math.max(...area) > 0.9, "area spans its range");
  assert(Math.min(...aspect) < 0.8 && Math.max(...aspect) > 1.25, "aspect spans its range");
  const mean = area.reduce((a, b) => a + b) / n;
  // torchvision's algorithm on a 48×64 image has mean area fraction 0.440 (Monte Carlo over 200,000 draws: large
  // areas at an unfitting aspect are retried); the standard error over 2000 samples is 0.005: 5 SE.
  assert(Math.abs(mean - 0.44) < 0.025, `mean area ${mean}`);

  // A two-pixel ramp per sample: a flipped sample reads [1, 0].
  const ramp = engine.tensor(Float32Array.from({ length: 2 * 4000 }, (_, i) => i % 2), [4000, 1, 1, 2]);
  const flip = horizontalFlip(ramp, { seed: 2, p: 0.3 });
  ramp.dispose();
  const out = await take(flip.output);
  flip.params.forEach((q, i) =>
    assertEquals([out[2 * i], out[2 * i + 1]], q.flip ? [1, 0] : [0, 1], `sample ${i}`)
  );
  const flips = flip.params.filter((q) => q.flip).length;
  // Binomial(4000, 0.3): mean 1200, sd 29; 4.5 sd.
  assert(Math.abs(flips - 1200) < 130, `flip rate ${flips / 4000}`);

  const small = engine.zeros([2000, 3, 1, 1]);
  const jit = colorJitter(small, { seed: 3, brightness: 0.8, contrast: [0.5, 0.6], saturation: 0, hue: 0.2 });
  const gray = randomGrayscale(small, { seed: 3, p: 0.2 });
  const blur = gaussianBlur(small, { seed: 3, p: 1, sigma: [0.1, 2] });
  for (const t of [jit.output, gray.output, blur.output, small]) t.dispose();
  const orders = new Set<string>();
  for (const q of jit.params) {
    const j = q.jitter!;
    assert(
      j.brightness >= 0.2 && j.brightness <= 1.8 && j.contrast >= 0.5 && j.contrast <= 0.6,
      JSON.stringify(j),
    );
    assert(j.saturation === 1 && Math.abs(j.hue) <= 0.2, JSON.stringify(j));
    assertEquals([...j.order].sort(), [0, 1, 2, 3], "order is a permutation");
    orders.add(j.order.join());
  }
  assertEquals(orders.size, 24, "all 24 orders occur");
  const grays = gray.params.filter((q) => q.grayscale).length;
  // Binomial(2000, 0.2): sd 18; 4.5 sd.
  assert(Math.abs(grays - 400) < 80, `grayscale rate ${grays / 2000}`);
  assert(blur.params.every((q) => q.blur >= 0.1 && q.blur <= 2), "blur sigma in [0.1, 2]");
});

test("augment: over 65,535 workgroups in one dispatch (17.2M pixels)", async (engine) => {
  const [n, h, w] = [8, 1024, 2100];
  const x = engine.rand([n, 1, h, w], { seed: 4 });
  const r = horizontalFlip(x, { seed: 0, p: 1 });
  const src = await take(x);
  const out = await take(r.output);
  let bad = -1;
  for (let row = 0; row < n * h && bad < 0; row++) {
    for (let c = 0; c < w; c++) {
      if (out[row * w + c] !== src[row * w + w - 1 - c]) {
        bad = row * w + c;
        break;
      }
    }
  }
  assertEquals(bad, -1, "first mismatching element");
});

/** torchvision's resize of one h×w plane (bilinear, align_corners false, no antialias), in float64. */
function torchResize(src: ArrayLike<number>, h: number, w: number, oh: number, ow: number): number[] {
  const taps = (o: number, size: number, out: number) => {
    const real = Math.max(0, (size / out) * (o + 0.5) - 0.5);
    const i0 = Math.floor(real);
    return [i0, i0 < size - 1 ? i0 + 1 : i0, real - i0];
  };
  const out: number[] = [];
  for (let y = 0; y < oh; y++) {
    const [y0, y1, fy] = taps(y, h, oh);
    for (let x = 0; x < ow; x++) {
      const [x0, x1, fx] = taps(x, w, ow);
      const row = (r: number) => (1 - fx) * src[r * w + x0] + fx * src[r * w + x1];
      out.push((1 - fy) * row(y0) + fy * row(y1));
    }
  }
  return out;
}

test("augment: a crop resizes as torchvision's crop-then-resize: its edges read no pixel outside the crop", async (engine) => {
  // Enlarged 4×4 → 8×8 (edge taps would reach one pixel past the crop) and shrunk 6×7 → 3×4, widths with and
  // without whole vec4s (the vec4 and the scalar path).
  for (
    const [h, w, crop, size] of [
      [8, 8, { top: 2, left: 2, height: 4, width: 4 }, [8, 8]],
      [9, 7, { top: 1, left: 3, height: 5, width: 3 }, [7, 5]],
      [10, 12, { top: 3, left: 4, height: 6, width: 7 }, [3, 4]],
    ] as const
  ) {
    const pixels = randomArray(h * w, h + w, 0, 1);
    using x = engine.tensor(pixels, [1, 1, h, w]);
    const params = [{ ...identityParams(h, w), crop: { ...crop } }];
    const got = await take(applyParams(x, params, { size: [size[0], size[1]] }));
    const cropped = Array.from(
      { length: crop.height * crop.width },
      (_, i) => pixels[(crop.top + Math.floor(i / crop.width)) * w + crop.left + (i % crop.width)],
    );
    const expected = torchResize(cropped, crop.height, crop.width, size[0], size[1]);
    // f32 positions and blends against float64: a few ulps of values in [0, 1].
    assertClose(
      got,
      expected,
      { rtol: 0, atol: 1e-6 },
      `crop ${JSON.stringify(crop)} of ${h}×${w} to ${size}`,
    );
  }
});

test("augment: a blurred sample is solarized on [0, 1] values, then normalized", async (engine) => {
  // A constant 0.6 solarizes to 0.4 at threshold 0.5 and normalizes to (0.4 − 0.5) / 0.25 = −0.4, blurred or
  // not; solarizing after normalizing (as once for blurred samples) gave +0.4.
  const normalize = { mean: [0.5, 0.5, 0.5], std: [0.25, 0.25, 0.25] };
  for (const w of [8, 7]) {
    using x = engine.tensor(new Float32Array(2 * 3 * 6 * w).fill(0.6), [2, 3, 6, w]);
    const params = [0, 1.5].map((blur) => ({ ...identityParams(6, w), blur, solarize: 0.5 }));
    const got = await take(applyParams(x, params, { normalize }));
    assertClose(got, new Float64Array(got.length).fill(-0.4), { rtol: 0, atol: 1e-6 }, `width ${w}`);
  }
});

test("augment: a blur sigma too small to weigh a neighbour leaves the image as it is, not NaN", async (engine) => {
  // At 1e-20 the kernels' −1 / (2σ²) overflows f32 (NaN once, on widths that are multiples of 4); at 0.04 the
  // nearest tap weighs exp(−312), 0 in f32 and ~1e-136 in the reference's f64.
  for (const shape of [[1, 1, 4, 8], [2, 3, 5, 7]]) {
    const pixels = randomArray(shape.reduce((a, b) => a * b), 9);
    using x = engine.tensor(pixels, shape);
    for (const blur of [1e-20, 0.04]) {
      const params = Array.from(
        { length: shape[0] },
        () => ({ ...identityParams(shape[2], shape[3]), blur }),
      );
      assertEquals(await take(applyParams(x, params)), pixels, `sigma ${blur} on ${shape}`);
    }
  }
});

test("augment: a batch over one storage binding is refused before anything is allocated", () =>
  bothKernels(async (engine) => {
    // A 1 MiB binding stands in for the adapter's (128 MiB here, which 256 images of 224² pass).
    const [h, w] = [300, 300]; // [1, 3, 300, 300] in f32: 1.08 MB
    using small = engine.zeros([1, 3, 100, 100]);
    using big = engine.zeros([1, 3, h, w]); // a buffer of that size is fine; binding it whole is not
    const before = engine.memory();
    const over = ["[1, 3, 300, 300]", "maxStorageBufferBindingSize"];
    const rgba = new Uint8Array(h * w * 4);
    await assertThrows(() => engine.images(rgba, { n: 1, height: h, width: w }), ShapeError, [
      "images",
      ...over,
    ]);
    // The output: the views' renderer, applyParams, finds it too big.
    await assertThrows(() => randomResizedCrop(small, { size: h }), ShapeError, ["applyParams", ...over]);
    await assertThrows(() => horizontalFlip(big, { p: 1 }), ShapeError, ["horizontalFlip", ...over]);
    await assertThrows(() => maskedImageTask(big, { seed: 1, patch: 20 }), ShapeError, [
      "maskedImageTask",
      ...over,
    ]);
    {
      // Token ids [4, 70000] in i32: 1.12 MB (the masked ids and labels leaked).
      using tokens = engine.zeros([4, 70_000], "i32");
      const withTokens = engine.memory();
      await assertThrows(() => maskedTokenTask(tokens, { seed: 1, maskId: 3, vocabSize: 10 }), ShapeError, [
        "maskedTokenTask",
        "[4, 70000]",
      ]);
      assertNoLeak(engine, withTokens, "maskedTokenTask");
    }
    // Multi-crop checks every view's size first: the global views leaked when the local batch was refused.
    for (const [name, views] of [["dinoViews", dinoViews], ["swavViews", swavViews]] as const) {
      const options = { seed: 1, globalSize: 32, localSize: h, localCrops: 2 };
      await assertThrows(() => views(small, options), ShapeError, [name, ...over]);
    }
    assertNoLeak(engine, before);
  }, { maxStorageBufferBindingSize: 2 ** 20 }));

test("augment: a view whose grid passes the workgroup limits throws and leaks nothing", () =>
  bothKernels(async (engine) => {
    using row = engine.zeros([1, 1, 1, 2 ** 20 + 1]); // more tiles along a row than one dispatch may have
    const before = engine.memory();
    await assertThrows(() => horizontalFlip(row, { p: 1 }), ShapeError, ["workgroups", "65535"]);
    assertNoLeak(engine, before);
  }));

test("augment: without contrast the records stay windowed, however many samples", () =>
  bothKernels(async (engine) => {
    // The records bound whole as the (unread) sums passed one 32 KiB binding at 1,500 samples; a window of them
    // stands in now, and the view renders.
    using x = engine.rand([1500, 1, 2, 2], { seed: 2 });
    using y = solarize(x, { seed: 3, p: 1 }).output;
    const [got, want] = [await take(y), await take(x)];
    assert(got.every((v, i) => v === (want[i] >= 0.5 ? 1 - want[i] : want[i])), "solarized at threshold 0.5");
  }, { maxStorageBufferBindingSize: 2 ** 15 }));

test("augment: p left undefined is the op's default, not 1", (engine) => {
  // { p: 0.5, ...o } let an explicit undefined through, which then meant p = 1: every sample flipped.
  using x = engine.rand([64, 1, 2, 2], { seed: 1 });
  for (
    const [name, op, p] of [["horizontalFlip", horizontalFlip, 0.5], [
      "randomGrayscale",
      randomGrayscale,
      0.1,
    ]] as const
  ) {
    const { output, params } = op(x, { seed: 3, p: undefined });
    output.dispose();
    const applied = params.filter((q) => (name === "horizontalFlip" ? q.flip : q.grayscale)).length;
    assert(applied > 0 && applied < 64, `${name}: ${applied} of 64 at p ${p}`);
  }
});

test("augment: bad input throws a clear error and leaks nothing", async (engine) => {
  const x = engine.zeros([2, 3, 4, 5]);
  const before = engine.memory();
  const rank3 = engine.zeros([3, 4, 5]);
  const c2 = engine.zeros([1, 2, 4, 4]);
  const ids = engine.zeros([1, 3, 4, 4], "i32");
  const after = engine.memory();
  await assertThrows(() => horizontalFlip(rank3), ShapeError, ["rank 3", "[3, 4, 5]"]);
  await assertThrows(() => colorJitter(c2), ShapeError, ["C must be 1 or 3", "[1, 2, 4, 4]"]);
  await assertThrows(() => randomGrayscale(ids), TypeError, ["f32", "i32"]);
  await assertThrows(() => rotate90(x), ShapeError, ["square", "[2, 3, 4, 5]"]);
  await assertThrows(() => randomResizedCrop(x, { size: 0 }), RangeError, ["size"]);
  await assertThrows(() => randomResizedCrop(x, { size: 3, scale: [0.5, 0.1] }), RangeError, ["scale"]);
  await assertThrows(() => horizontalFlip(x, { p: 1.5 }), RangeError, ["p must be in [0, 1]"]);
  await assertThrows(() => horizontalFlip(x, { seed: -1 }), RangeError, ["seed"]);
  await assertThrows(() => colorJitter(x, { hue: 0.7 }), RangeError, ["hue"]);
  // torchvision's ranges: checked whether or not a sample draws the op, a pair taken as given (never clipped).
  await assertThrows(() => colorJitter(x, { hue: 0.7, p: 0 }), RangeError, ["hue"]);
  const brightness: [number, number] = [-1, 2];
  await assertThrows(() => colorJitter(x, { brightness }), RangeError, [
    "brightness",
    "[-1,2]",
    "[0, Infinity]",
  ]);
  assertEquals(brightness, [-1, 2], "the caller's range");
  const unordered = [identityParams(4, 5), identityParams(4, 5)];
  unordered[1].jitter = { brightness: 1, contrast: 1, saturation: 1, hue: 0.1, order: [0, 2] };
  await assertThrows(() => applyParams(x, unordered), RangeError, ["jitter order [0,2]"]);
  {
    const gone = engine.zeros([1, 3, 4, 4]);
    gone.dispose();
    await assertThrows(() => horizontalFlip(gone, { p: 1 }), Error, ["horizontalFlip", "after dispose"]);
    await assertThrows(() => gaussianBlur(gone), Error, ["gaussianBlur", "after dispose"]);
  }
  await assertThrows(() => gaussianBlur(x, { sigma: [1, 1000] }), RangeError, ["sigma"]);
  await assertThrows(() => normalizeChannels(x, [0, 0, 0], [1, 0, 1]), RangeError, ["std"]);
  await assertThrows(() => applyParams(x, [], {}), ShapeError, ["0 parameter records", "[2, 3, 4, 5]"]);
  for (const rotate of [7, 1.5, -1]) {
    const turned = [identityParams(4, 5), { ...identityParams(4, 5), rotate }];
    await assertThrows(() => applyParams(x, turned, { size: 4 }), RangeError, [`rotate ${rotate}`]);
  }
  // Ranges of strings compared as text and concatenated ("0.2" + …: a central crop, black jitter); an infinite
  // range gave black views; a stream past 2^24 or NaN drew another stream's numbers; a NaN threshold none.
  const text = ["0.2", "0.9"] as unknown as [number, number];
  await assertThrows(() => randomResizedCrop(x, { size: 4, scale: text }), RangeError, ["scale", "0.2,0.9"]);
  await assertThrows(() => colorJitter(x, { brightness: text }), RangeError, ["brightness"]);
  await assertThrows(() => colorJitter(x, { contrast: Infinity }), RangeError, ["contrast", "Infinity"]);
  await assertThrows(() => simclrViews(x, { seed: 1, size: 4, strength: Infinity }), RangeError, [
    "strength",
  ]);
  for (const stream of [2 ** 24, NaN, 1.5]) {
    await assertThrows(() => horizontalFlip(x, { stream }), RangeError, ["horizontalFlip", "stream"]);
  }
  await assertThrows(() => solarize(x, { threshold: NaN }), RangeError, ["solarize", "threshold"]);
  assertNoLeak(engine, after, "bad input");
  for (const t of [rank3, c2, ids]) t.dispose();
  assertNoLeak(engine, before);
  x.dispose();
});
