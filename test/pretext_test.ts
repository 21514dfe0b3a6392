import {
  colorizationTask,
  concat,
  denoiseTask,
  type Engine,
  gatherRows,
  jigsawPermutations,
  jigsawTask,
  maskedImageTask,
  maskedTokenTask,
  NEIGHBORS,
  relativePositionTask,
  reshape,
  rotationTask,
  ShapeError,
  slice,
  type Tensor,
  transpose,
} from "../src/mod.ts";
import { refApplyParams } from "../src/ref/augment.ts";
import { gridOrigin } from "../src/pretext.ts";
import { refMaskedImage, refMaskedTokens, refTiles } from "../src/ref/pretext.ts";
import { test } from "./harness.ts";
import { assert, assertClose, assertEquals, assertNoLeak, assertThrows, randomArray, take } from "./util.ts";

function batch(engine: Engine, shape: number[], seed: number): { x: Tensor; host: Float32Array } {
  const host = randomArray(shape.reduce((a, b) => a * b), seed, 0, 1);
  return { x: engine.tensor(host, shape), host };
}

async function takeInt(t: Tensor): Promise<number[]> {
  const a = Array.from(await t.toArray());
  t.dispose();
  return a;
}

const EXACT = { rtol: 0, atol: 0 };

test("pretext: rotationTask rotates each image by labels[i]·90° (a permutation of its pixels)", async (engine) => {
  const before = engine.memory();
  const { x, host } = batch(engine, [12, 3, 5, 5], 1);
  const { input, labels } = rotationTask(x, { seed: 3 });
  const out = await take(input);
  const ks = await takeInt(labels);
  assert(ks.every((k) => k >= 0 && k <= 3) && new Set(ks).size === 4, `labels ${ks}`);
  const last = 4;
  const from = [
    (y: number, c: number) => [y, c],
    (y: number, c: number) => [c, last - y],
    (y: number, c: number) => [
      last - y,
      last - c,
    ],
    (y: number, c: number) => [last - c, y],
  ];
  for (let i = 0; i < 12 * 3; i++) {
    const k = ks[Math.floor(i / 3)];
    for (let y = 0; y < 5; y++) {
      for (let c = 0; c < 5; c++) {
        const [sy, sx] = from[k](y, c);
        assertEquals(out[i * 25 + y * 5 + c], host[i * 25 + sy * 5 + sx], `plane ${i} k ${k}`);
      }
    }
  }
  x.dispose();
  assertNoLeak(engine, before);
});

test("pretext: jigsaw permutations are distinct, start at the identity, and stay far apart", async (engine) => {
  const x = engine.zeros([1, 1, 3, 3]);
  const { input, labels, permutationTable } = jigsawTask(x, { seed: 0 });
  for (const t of [x, input, labels]) t.dispose();
  assertEquals(permutationTable.length, 100);
  assertEquals(permutationTable[0], [0, 1, 2, 3, 4, 5, 6, 7, 8]);
  let minDist = 9;
  for (const [i, p] of permutationTable.entries()) {
    assertEquals([...p].sort(), [0, 1, 2, 3, 4, 5, 6, 7, 8], `row ${i} is a permutation`);
    for (const q of permutationTable.slice(0, i)) {
      minDist = Math.min(
        minDist,
        p.filter((v, t) => v !== q[t]).length,
      );
    }
  }
  // Greedy max-min over all 9! permutations keeps every pair of the 100 at least 6 tiles apart (random sets of
  // 100 typically have pairs only 2 apart).
  assertEquals(minDist, 6, "smallest pairwise Hamming distance");
  // The table is the caller's copy: editing it changed the cache, and every later task's permutations.
  const original = permutationTable.map((p) => [...p]);
  permutationTable[1][0] = 99;
  jigsawPermutations(3, 100)[2][0] = 99;
  assertEquals(jigsawPermutations(3, 100), original, "the cache kept its permutations");
  await assertThrows(() => jigsawPermutations(2.5, 4), RangeError, ["jigsawPermutations", "grid", "2.5"]);
  await assertThrows(() => jigsawPermutations(3, 0), RangeError, ["jigsawPermutations", "permutations"]);
  await assertThrows(() => jigsawPermutations(2, 30), RangeError, ["jigsawPermutations", "30", "24"]);
});

test("pretext: jigsawTask tiles equal their source tiles (awkward sizes, grids 2 and 3)", async (engine) => {
  const before = engine.memory();
  // Also tile rows of 75 pixels (two invocations' spans of 64) and of 20 in rows of 61 (whole vec4s of the
  // output in every alignment to the source), and 66,000 image planes.
  const cases = [
    [[5, 3, 10, 11], 3, 100],
    [[3, 1, 7, 4], 2, 24],
    [[1, 3, 3, 3], 3, 10],
    [[2, 1, 5, 150], 2, 2],
    [[4, 3, 37, 61], 3, 50],
    [[22_000, 3, 3, 3], 3, 10],
  ] as const;
  for (const [shape, grid, count] of cases) {
    const { x, host } = batch(engine, [...shape], 2);
    const { input, labels, permutationTable } = jigsawTask(x, { seed: 4, grid, permutations: count });
    const ls = await takeInt(labels);
    assert(ls.every((l) => l >= 0 && l < count), `labels ${ls}`);
    const [th, tw] = [Math.floor(shape[2] / grid), Math.floor(shape[3] / grid)];
    assertEquals(input.shape, [shape[0], shape[1], grid * th, grid * tw], "output shape");
    const origins = ls.map((l) => permutationTable[l].map((tile) => gridOrigin(tile, th, tw, grid)));
    const expected = refTiles(host, shape, origins, th, tw, grid);
    assertClose(await take(input), expected, EXACT, `jigsaw ${shape}`);
    x.dispose();
  }
  assertNoLeak(engine, before);
});

test("pretext: relativePositionTask gives a center tile and the neighbor its label names", async (engine) => {
  const before = engine.memory();
  const shape = [16, 3, 9, 10];
  const { x, host } = batch(engine, shape, 5);
  const { center, neighbor, labels } = relativePositionTask(x, { seed: 6 });
  const ls = await takeInt(labels);
  assert(ls.every((l) => l >= 0 && l < 8) && new Set(ls).size >= 6, `labels ${ls}`);
  // Grid 3: the center is the middle tile (3×3 tiles of 3×3 pixels), the neighbor at NEIGHBORS[label].
  assertClose(await take(center), refTiles(host, shape, ls.map(() => [[3, 3]]), 3, 3, 1), EXACT, "center");
  const nb = ls.map((l): [number, number][] => [[3 + 3 * NEIGHBORS[l][0], 3 + 3 * NEIGHBORS[l][1]]]);
  assertClose(await take(neighbor), refTiles(host, shape, nb, 3, 3, 1), EXACT, "neighbor");
  x.dispose();
  assertNoLeak(engine, before);
});

test("pretext: relativePositionTask with gaps and jitter crops each patch near its grid cell", async (engine) => {
  const before = engine.memory();
  // Grid 4 with gap 3: patches of floor((26 − 9) / 4) = 4 pixels at cells 7 apart, each moved by ≤ 2 pixels.
  const shape = [40, 1, 26, 26];
  const [patch, step, jitter] = [4, 7, 2];
  const { x, host } = batch(engine, shape, 7);
  const { center, neighbor, labels } = relativePositionTask(x, { seed: 8, grid: 4, gap: 3, jitter });
  assertEquals(center.shape, [40, 1, patch, patch], "patch shape");
  const [ls, cs, ns] = [await takeInt(labels), await take(center), await take(neighbor)];
  // Where in image s the patch p (values random, so one position matches) was cut from.
  const find = (s: number, p: ArrayLike<number>): [number, number] => {
    const matches: [number, number][] = [];
    for (let top = 0; top + patch <= 26; top++) {
      for (let left = 0; left + patch <= 26; left++) {
        const crop = refTiles(host, shape, Array.from({ length: 40 }, () => [[top, left]]), patch, patch, 1);
        const at = s * patch * patch;
        if (Array.from(p).every((v, k) => v === crop[at + k])) matches.push([top, left]);
      }
    }
    assertEquals(matches.length, 1, `sample ${s}: positions its patch matches`);
    return matches[0];
  };
  const shifts = new Set<number>();
  for (let s = 0; s < 40; s++) {
    const size = patch * patch;
    const [ct, cl] = find(s, cs.slice(s * size, (s + 1) * size));
    const [nt, nl] = find(s, ns.slice(s * size, (s + 1) * size));
    // The center cell is an inner one (1 or 2 of 0..3), the neighbor one cell away in the label's direction.
    const cy = Math.round(ct / step);
    const cx = Math.round(cl / step);
    assert(cy >= 1 && cy <= 2 && cx >= 1 && cx <= 2, `sample ${s}: center cell (${cy}, ${cx})`);
    const [dy, dx] = NEIGHBORS[ls[s]];
    for (const [got, cell] of [[ct, cy], [cl, cx], [nt, cy + dy], [nl, cx + dx]]) {
      const want = cell * step;
      assert(Math.abs(got - want) <= jitter, `sample ${s}: origin ${got} not within ${jitter} of ${want}`);
      shifts.add(got - want);
    }
  }
  assert(shifts.size === 2 * jitter + 1, `every shift in [−${jitter}, ${jitter}] occurs: ${[...shifts]}`);
  x.dispose();
  assertNoLeak(engine, before);
});

test("pretext: maskedImageTask masks exactly round(ratio·patches) per image, as the reference", async (engine) => {
  const before = engine.memory();
  // Patches of 4 and 8 take the vec4 pass (two vec4s per patch row for 8); the last case has 4096 patches per
  // image, the most supported (each rank loops 4096 times).
  const cases = [
    [[3, 3, 12, 8], 4, 0.75],
    [[2, 3, 16, 24], 8, 0.5],
    [[2, 1, 5, 5], 1, 0.3],
    [[2, 1, 64, 64], 1, 0.6],
  ] as const;
  for (const [shape, patch, ratio] of cases) {
    const { x, host } = batch(engine, [...shape], 7);
    const { input, mask, target, shuffle, restore } = maskedImageTask(x, { seed: 8, patch, ratio });
    const len = (shape[2] / patch) * (shape[3] / patch);
    const m = await take(mask);
    const ref = refMaskedImage(host, shape, 8, patch, ratio);
    assertEquals(await takeInt(shuffle), [...ref.shuffle], "shuffle");
    assertEquals(await takeInt(restore), [...ref.restore], "restore");
    for (let s = 0; s < shape[0]; s++) {
      assertEquals(
        m.subarray(s * len, (s + 1) * len).reduce((a, b) => a + b),
        Math.round(ratio * len),
        `count ${s}`,
      );
    }
    assertClose(m, ref.mask, EXACT, "mask");
    assertClose(await take(input), ref.input, EXACT, "input");
    assertClose(await take(target), host, EXACT, "target");
    x.dispose();
  }
  assertNoLeak(engine, before);
});

test("pretext: MAE's path through maskedImageTask's order: visible tokens out and every token back in place", async (engine) => {
  // Patchify, keep the visible patches by shuffle's head, append zero tokens for the masked ones, unshuffle by
  // restore: the tokens of the masked input, exactly (a gather moves values; the masked patches are zero).
  const before = engine.memory();
  const [n, c, h, w, patch] = [3, 3, 12, 8, 4];
  const [rows, cols] = [h / patch, w / patch];
  const len = rows * cols;
  const { x } = batch(engine, [n, c, h, w], 9);
  const tokensOf = (images: Tensor) =>
    engine.tidy(() =>
      reshape(
        transpose(reshape(images, [n, c, rows, patch, cols, patch]), [0, 2, 4, 3, 5, 1]),
        [n, len, patch * patch * c],
      )
    );
  const task = maskedImageTask(x, { seed: 3, patch, ratio: 0.75 });
  const masked = Math.round(0.75 * len);
  const back = engine.tidy(() => {
    const tokens = tokensOf(x);
    const visible = gatherRows(tokens, slice(task.shuffle, [0, 0], [n, len - masked]));
    assertEquals(visible.shape, [n, len - masked, patch * patch * c], "visible tokens");
    const full = concat([visible, engine.zeros([n, masked, patch * patch * c])], 1);
    return gatherRows(full, task.restore);
  });
  assertClose(await take(back), await take(tokensOf(task.input)), EXACT, "restored tokens");
  for (const t of [x, task.input, task.mask, task.target, task.shuffle, task.restore]) t.dispose();
  assertNoLeak(engine, before);
});

test("pretext: maskedTokenTask follows BERT's 15% / 80-10-10 recipe, as the reference", async (engine) => {
  const before = engine.memory();
  const [n, len, vocab, maskId] = [50, 2003, 1000, 1000];
  const ids = Int32Array.from({ length: n * len }, (_, i) => (i * 7919) % vocab);
  const tokens = engine.tensor(ids, [n, len], "i32");
  const { input, labels } = maskedTokenTask(tokens, { seed: 9, maskId, vocabSize: vocab });
  const got = await takeInt(input);
  const lab = await takeInt(labels);
  const ref = refMaskedTokens(ids, len, 9, 0.15, maskId, vocab);
  assertEquals(got, Array.from(ref.input), "input");
  assertEquals(lab, Array.from(ref.labels), "labels");
  let chosen = 0;
  let masked = 0;
  let kept = 0;
  for (let i = 0; i < ids.length; i++) {
    if (lab[i] === -100) {
      assertEquals(got[i], ids[i], `unchosen ${i} unchanged`);
      continue;
    }
    assertEquals(lab[i], ids[i], `label ${i}`);
    chosen++;
    if (got[i] === maskId) masked++;
    else if (got[i] === ids[i]) kept++;
  }
  // 100,150 positions: chosen ~ Binomial(p 0.15), sd 113; of ~15,000 chosen, masked sd 49, kept sd 37 (kept also
  // counts random draws that hit the original id, 0.1%): each within ~5 sd.
  assert(Math.abs(chosen / ids.length - 0.15) < 0.006, `chosen ${chosen / ids.length}`);
  assert(Math.abs(masked / chosen - 0.8) < 0.02, `masked ${masked / chosen}`);
  assert(Math.abs(kept / chosen - 0.1) < 0.015, `kept ${kept / chosen}`);
  tokens.dispose();
  assertNoLeak(engine, before);
});

test("pretext: denoiseTask and colorizationTask match the reference", async (engine) => {
  const before = engine.memory();
  const shape = [3, 3, 7, 6];
  const { x, host } = batch(engine, shape, 10);
  const d = denoiseTask(x, { seed: 11, sigma: 0.2 });
  const noisy = await take(d.input);
  const params = Array.from({ length: 3 }, () => ({
    crop: { top: 0, left: 0, height: 7, width: 6 },
    flip: false,
    rotate: 0,
    jitter: null,
    grayscale: false,
    erase: null,
    noise: 0.2,
    blur: 0,
    solarize: null,
  }));
  // Box-Muller in f32 with WGSL's log/cos (a few ulp) times sigma 0.2, plus one rounding: 1e-5.
  assertClose(
    noisy,
    refApplyParams(host, shape, params, { seed: 11 }),
    { rtol: 0, atol: 1e-5 },
    "denoise input",
  );
  assert(noisy.some((v, i) => Math.abs(v - host[i]) > 0.05), "noise was added");
  assertClose(await take(d.target), host, EXACT, "denoise target");
  const c = colorizationTask(x);
  assertEquals(c.input.shape, [3, 1, 7, 6]);
  const gray = Float64Array.from({ length: 3 * 42 }, (_, i) => {
    const [s, at] = [Math.floor(i / 42), i % 42];
    return 0.299 * host[s * 126 + at] + 0.587 * host[s * 126 + 42 + at] + 0.114 * host[s * 126 + 84 + at];
  });
  // Three f32 products and sums of values ≤ 1: 1e-6.
  assertClose(await take(c.input), gray, { rtol: 0, atol: 1e-6 }, "grayscale input");
  assertClose(await take(c.target), host, EXACT, "color target");
  x.dispose();
  assertNoLeak(engine, before);
});

test("pretext: the same seed replays bit for bit, another seed differs", async (engine) => {
  const { x } = batch(engine, [6, 3, 8, 8], 12);
  const tokens = engine.tensor(Int32Array.from({ length: 200 }, (_, i) => i % 50), [4, 50], "i32");
  const runs = {
    rotation: (seed: number) => rotationTask(x, { seed }).input,
    jigsaw: (seed: number) => jigsawTask(x, { seed, grid: 2, permutations: 24 }).input,
    masked: (seed: number) => maskedImageTask(x, { seed, patch: 2 }).input,
    tokens: (seed: number) => maskedTokenTask(tokens, { seed, maskId: 99, vocabSize: 100 }).input,
    denoise: (seed: number) => denoiseTask(x, { seed, sigma: 0.1 }).input,
    relative: (seed: number) => relativePositionTask(x, { seed }).neighbor,
  };
  for (const [name, run] of Object.entries(runs)) {
    const outs = await Promise.all(engine.tidy(() => [run(1), run(1), run(2)]).map(takeInt));
    assertEquals(outs[0], outs[1], `${name}: same seed`);
    assert(outs[0].some((v, i) => v !== outs[2][i]), `${name}: another seed differs`);
  }
  x.dispose();
  tokens.dispose();
});

test("pretext: bad input throws a clear error and leaks nothing", async (engine) => {
  const x = engine.zeros([2, 3, 8, 6]);
  const gray = engine.zeros([2, 1, 8, 8]);
  const flat = engine.zeros([2, 48]);
  const before = engine.memory();
  await assertThrows(() => rotationTask(x, { seed: 0 }), ShapeError, [
    "rotationTask",
    "square",
    "[2, 3, 8, 6]",
  ]);
  await assertThrows(() => maskedImageTask(x, { seed: 0, patch: 4 }), ShapeError, [
    "patch 4 does not divide",
    "[2, 3, 8, 6]",
  ]);
  await assertThrows(() => maskedImageTask(x, { seed: 0, patch: 16 }), ShapeError, ["patch 16"]);
  await assertThrows(() => maskedImageTask(x, { seed: 0, patch: 2, ratio: 2 }), RangeError, ["ratio"]);
  await assertThrows(() => maskedImageTask(flat, { seed: 0 }), ShapeError, ["rank 2"]);
  const big = engine.zeros([1, 1, 65, 64]);
  const bigBefore = engine.memory();
  await assertThrows(() => maskedImageTask(big, { seed: 0, patch: 1 }), RangeError, ["4160 patches", "4096"]);
  assertNoLeak(engine, bigBefore);
  big.dispose();
  await assertThrows(() => jigsawTask(x, { seed: 0, grid: 9 }), ShapeError, ["9×9", "[2, 3, 8, 6]"]);
  // Grids above 16 once gave tile indices past 255 as bytes: not permutations.
  {
    using wide = engine.zeros([1, 1, 17, 17]);
    await assertThrows(() => jigsawTask(wide, { seed: 0, grid: 17 }), RangeError, ["grid", "[2, 16]", "17"]);
  }
  {
    const gone = engine.zeros([1, 3, 8, 8]);
    const goneIds = engine.zeros([2, 4], "i32");
    gone.dispose();
    goneIds.dispose();
    await assertThrows(() => jigsawTask(gone, { seed: 0 }), Error, ["jigsawTask", "after dispose"]);
    await assertThrows(() => maskedImageTask(gone, { seed: 0, patch: 4 }), Error, [
      "maskedImageTask",
      "after dispose",
    ]);
    await assertThrows(() => colorizationTask(gone), Error, ["colorizationTask", "after dispose"]);
    await assertThrows(() => maskedTokenTask(goneIds, { seed: 0, maskId: 1, vocabSize: 5 }), Error, [
      "maskedTokenTask",
      "after dispose",
    ]);
  }
  await assertThrows(() => jigsawTask(x, { seed: 0, grid: 2, permutations: 25 }), RangeError, [
    "25 permutations",
    "24",
  ]);
  await assertThrows(() => relativePositionTask(x, { seed: 0, grid: 2 }), RangeError, ["grid"]);
  await assertThrows(() => relativePositionTask(x, { seed: 0, jitter: -1 }), RangeError, ["jitter"]);
  await assertThrows(
    () => relativePositionTask(x, { seed: 0, gap: 100 }),
    ShapeError,
    ["gap 100", "[2, 3, 8, 6]"],
  );
  await assertThrows(() => colorizationTask(gray), ShapeError, ["C = 3", "[2, 1, 8, 8]"]);
  await assertThrows(() => maskedTokenTask(flat, { seed: 0, maskId: 1, vocabSize: 5 }), TypeError, ["i32"]);
  const ids = engine.zeros([2, 3, 4], "i32");
  const idsBefore = engine.memory();
  await assertThrows(() => maskedTokenTask(ids, { seed: 0, maskId: 1, vocabSize: 5 }), ShapeError, [
    "[N, L]",
    "[2, 3, 4]",
  ]);
  assertNoLeak(engine, idsBefore);
  ids.dispose();
  assertNoLeak(engine, before, "bad input");
  for (const t of [x, gray, flat]) t.dispose();
});
