// DINO, SwAV, MSN, Barlow Twins, VICReg, TiCo, KoLeo, alignment, uniformity and hypersphere against the float64
// reference (src/ref/joint_embedding.ts) and finite differences.
import {
  alignment,
  barlowTwins,
  dino,
  dinoCenter,
  type Engine,
  grad,
  hypersphere,
  koleo,
  msn,
  type MSNOptions,
  noGrad,
  ShapeError,
  sinkhorn,
  swav,
  type Tensor,
  tico,
  type TiCoOptions,
  uniformity,
  vicreg,
} from "../src/mod.ts";
import {
  type JointEmbeddingRef,
  refAlignment,
  refBarlowTwins,
  refDino,
  refDinoCenter,
  refHypersphere,
  refKoleo,
  refMsn,
  refSinkhorn,
  refSwav,
  refTiCo,
  refUniformity,
  refVICReg,
} from "../src/ref/joint_embedding.ts";
import { test, twoEngines } from "./harness.ts";
import {
  assert,
  assertClose,
  assertCloseScaled,
  assertEquals,
  assertFiniteDifferences,
  assertNoLeak,
  assertThrows,
  finiteDifference,
  randomArray,
  take,
} from "./util.ts";

// Loss and gradients within 1e-4 relative of the float64 reference. An absolute floor of 1e-4 × the largest
// |expected| covers elements near zero: each is a sum over N or D of terms of the larger size (f32 rounding
// 6e-8 each, growing like √terms through the tree reductions and the matmul's K loop), and the off-diagonal sums
// are formed as Σ_all − Σ_diagonal, which cancels terms of the size of the diagonal.
function close(actual: ArrayLike<number>, expected: ArrayLike<number>, what: string, rtol = 1e-4): void {
  assertCloseScaled(actual, expected, rtol, what);
}

/**
 * Random views [n, d], column j scaled by 0.2 + 3j/d so that some features have a std above 1 (VICReg's hinge
 * off) and some below; the second view is a noisy copy of the first, so C has a strong diagonal.
 */
function views(n: number, d: number, seed: number): [Float32Array, Float32Array] {
  const a = randomArray(n * d, seed);
  const b = randomArray(n * d, seed + 1);
  for (let k = 0; k < n * d; k++) {
    const scale = 0.2 + (3 * (k % d)) / d;
    a[k] *= scale;
    b[k] = a[k] + 0.5 * scale * b[k];
  }
  return [a, b];
}

interface Case {
  name: string;
  gpu: (z1: Tensor, z2: Tensor) => Tensor;
  ref: (a: Float32Array, b: Float32Array, n: number, d: number) => JointEmbeddingRef;
}

const barlow: Case = {
  name: "barlowTwins",
  gpu: (z1, z2) => barlowTwins(z1, z2),
  ref: (a, b, n, d) => refBarlowTwins(a, b, n, d),
};
const vic: Case = {
  name: "vicreg",
  gpu: (z1, z2) => vicreg(z1, z2),
  ref: (a, b, n, d) => refVICReg(a, b, n, d),
};
const options = { sim: 1, variance: 2, covariance: 3, eps: 1e-3 };
const variants: Case[] = [
  {
    name: "barlowTwins λ=0.05",
    gpu: (z1, z2) => barlowTwins(z1, z2, { lambda: 0.05 }),
    ref: (a, b, n, d) => refBarlowTwins(a, b, n, d, 0.05),
  },
  {
    name: "vicreg 1/2/3 eps 1e-3",
    gpu: (z1, z2) => vicreg(z1, z2, options),
    ref: (a, b, n, d) => refVICReg(a, b, n, d, options),
  },
];

/** Loss value and gradients to both views, every tensor disposed after. */
async function evaluate(
  engine: Engine,
  c: Case,
  a: Float32Array,
  b: Float32Array,
  n: number,
  d: number,
): Promise<{ loss: number; dz1: Float32Array; dz2: Float32Array }> {
  const z1 = engine.tensor(a, [n, d]);
  const z2 = engine.tensor(b, [n, d]);
  const loss = c.gpu(z1, z2);
  const [g1, g2] = grad(loss, [z1, z2]);
  const out = { loss: (await take(loss))[0], dz1: await take(g1), dz2: await take(g2) };
  z1.dispose();
  z2.dispose();
  return out;
}

async function matchesReference(engine: Engine, c: Case, n: number, d: number, seed: number): Promise<void> {
  const [a, b] = views(n, d, seed);
  const got = await evaluate(engine, c, a, b, n, d);
  const ref = c.ref(a, b, n, d);
  const what = `${c.name} N=${n} D=${d}`;
  close([got.loss], [ref.loss], `${what} loss`);
  close(got.dz1, ref.dz1, `${what} dz1`);
  close(got.dz2, ref.dz2, `${what} dz2`);
}

test("barlowTwins, vicreg: value and gradients match the float64 reference (N 2, 3, 17, 64; D 1, 5, 33)", async (engine) => {
  const before = engine.memory();
  // D < N takes the D × D path, D > N the N × N Gram path; both occur.
  for (const n of [2, 3, 17, 64]) {
    for (const d of [1, 5, 33]) {
      for (const c of [barlow, vic]) await matchesReference(engine, c, n, d, 7 * n + d);
    }
  }
  for (const [n, d] of [[3, 5], [64, 33]]) {
    for (const c of variants) await matchesReference(engine, c, n, d, n + d);
  }
  assertNoLeak(engine, before, "reference");
});

test("barlowTwins, vicreg: batches and dims past the loop cap (N 70001 through D × D, D 1500 through Gram)", async (engine) => {
  // N = 70001 rows: the per-feature means and variances reduce over more than 65,535 elements and the D × D
  // matmul runs K = 70001 in 69 slices; D = 1500 with N = 3 takes the Gram path with K = 1500 (2 slices).
  const before = engine.memory();
  for (const [n, d] of [[70001, 3], [3, 1500]]) {
    for (const c of [barlow, vic]) await matchesReference(engine, c, n, d, n);
  }
  assertNoLeak(engine, before, "loop cap");
});

test("barlowTwins, vicreg: near-identical views with N ≫ D keep their small off-diagonal sum (N 4,096, D 4)", async (engine) => {
  // The off-diagonal sum here is ~1e-3 of the diagonal's N² (standardised views agree); taken as Σ all − Σ diagonal
  // in f32 it lost 3e-4 of the loss, over the bound. The mask keeps it to ~1e-7.
  const before = engine.memory();
  const [n, d] = [4096, 4];
  const a = randomArray(n * d, 31);
  const b = Float32Array.from(a, (v, i) => v + 1e-3 * Math.sin(i));
  for (const c of [barlow, vic]) {
    const got = await evaluate(engine, c, a, b, n, d);
    const ref = c.ref(a, b, n, d);
    close([got.loss], [ref.loss], `${c.name} loss`);
    close(got.dz1, ref.dz1, `${c.name} dz1`);
    close(got.dz2, ref.dz2, `${c.name} dz2`);
  }
  assertNoLeak(engine, before, "near-identical views");
});

test("barlowTwins, vicreg: gradients match central finite differences", async (engine) => {
  const before = engine.memory();
  for (const c of [barlow, vic, ...variants]) {
    for (const [n, d] of [[4, 3], [3, 6]]) {
      const [a, b] = views(n, d, 11 * n + d);
      const got = await evaluate(engine, c, a, b, n, d);
      const value = (x: Float32Array, y: Float32Array): Promise<number> =>
        noGrad(() => {
          const z1 = engine.tensor(x, [n, d]);
          const z2 = engine.tensor(y, [n, d]);
          const loss = c.gpu(z1, z2);
          z1.dispose();
          z2.dispose();
          return take(loss);
        }).then((v) => v[0]);
      const idx = [0, n * d - 1, Math.floor(n * d / 2), 1 + d];
      const fd1 = await finiteDifference((x) => value(x, b), a, idx, 1e-2);
      const fd2 = await finiteDifference((y) => value(a, y), b, idx, 1e-2);
      // h = 1e-2: truncation (h²/6)·f''' reaches ~0.7% on the narrowest column (std ~0.1, so h is a tenth of
      // it); f32 rounding of losses up to ~30 adds ~3e-6 / 2h ≈ 2e-4.
      assertClose(idx.map((i) => got.dz1[i]), fd1, { rtol: 1e-2, atol: 2e-3 }, `${c.name} dz1 N=${n} D=${d}`);
      assertClose(idx.map((i) => got.dz2[i]), fd2, { rtol: 1e-2, atol: 2e-3 }, `${c.name} dz2 N=${n} D=${d}`);
    }
  }
  assertNoLeak(engine, before, "finite differences");
});

test("barlowTwins: each view is standardised on its own, so a per-feature affine map of one view changes nothing", async (engine) => {
  // lightly-ai/lightly#1806: normalising both views together broke this. With eps 1e-5 against variances ≥ 1/3
  // (uniform [-1, 1]) each C entry moves by < 3e-5 relative, hence rtol 1e-4; a joint normalisation would move
  // the loss by O(1).
  const before = engine.memory();
  const n = 16;
  const d = 6;
  const a = randomArray(n * d, 5);
  const b = Float32Array.from(a, (x, k) => (2 + (k % d)) * x + 4 - (k % d));
  const x = engine.tensor(a, [n, d]);
  const y = engine.tensor(b, [n, d]);
  const same = (await take(noGrad(() => barlowTwins(x, x))))[0];
  const mapped = (await take(noGrad(() => barlowTwins(x, y))))[0];
  close([mapped], [same], "loss(x, a·x + b) vs loss(x, x)");
  close([same], [refBarlowTwins(a, a, n, d).loss], "loss(x, x)");
  x.dispose();
  y.dispose();
  assertNoLeak(engine, before, "affine");
});

test("barlowTwins, vicreg: with N ≪ D the D × D matrix is never formed (peak memory O(N·D + N²))", async (engine) => {
  const n = 32;
  const d = 2048;
  const [a, b] = views(n, d, 3);
  const z1 = engine.tensor(a, [n, d]);
  const z2 = engine.tensor(b, [n, d]);
  const embedding = n * d * 4;
  for (const c of [barlow, vic]) {
    const before = engine.memory();
    engine.resetPeak();
    const loss = c.gpu(z1, z2);
    const [g1, g2] = grad(loss, [z1, z2]);
    const peak = engine.memory().peakBytes - before.bytes;
    const ref = c.ref(a, b, n, d);
    close([(await take(loss))[0]], [ref.loss], `${c.name} loss`);
    close(await take(g1), ref.dz1, `${c.name} dz1`);
    close(await take(g2), ref.dz2, `${c.name} dz2`);
    // On top of the inputs: the kept intermediates (three or four [N, D] per view), the backward's gradients of
    // them and two N × N Gram matrices (measured: 12.5 × N·D·4), while the D × D matrix alone would be
    // 16 MiB = 64 × N·D·4.
    assert(peak <= 16 * embedding, `${c.name}: peak ${peak} bytes over 16 × N·D·4 = ${16 * embedding}`);
    assertNoLeak(engine, before, c.name);
  }
  z1.dispose();
  z2.dispose();
});

test("barlowTwins, vicreg: intermediates live exactly as long as the loss (noGrad frees them at once)", async (engine) => {
  const before = engine.memory();
  const [a, b] = views(9, 4, 9);
  const z1 = engine.tensor(a, [9, 4]);
  const z2 = engine.tensor(b, [9, 4]);
  const inputs = engine.memory();
  for (const c of [barlow, vic]) {
    const plain = noGrad(() => c.gpu(z1, z2));
    assert(engine.memory().tensors === inputs.tensors + 1, `${c.name}: noGrad keeps only the loss`);
    const recorded = c.gpu(z1, z2);
    assert(
      engine.memory().tensors > inputs.tensors + 2,
      `${c.name}: a recorded loss keeps its intermediates`,
    );
    close([(await take(plain))[0]], [(await recorded.toArray())[0]], `${c.name} noGrad value`);
    recorded.dispose();
    assertNoLeak(engine, inputs, `${c.name} loss disposed without grad`);
    const loss = c.gpu(z1, z2);
    loss.dispose();
    const message = (await assertThrows(() => grad(loss, [z1, z2]), Error)).message;
    assert(/disposed/.test(message), `${c.name}: grad after dispose says so: ${message}`);
  }
  z1.dispose();
  z2.dispose();
  assertNoLeak(engine, before, "lifetime");
});

test("barlowTwins, vicreg: bad shapes, dtypes, batch sizes and weights throw and leak nothing", async (engine) => {
  const before = engine.memory();
  const a = engine.zeros([4, 8]);
  const b = engine.zeros([5, 8]);
  const c = engine.zeros([4, 7]);
  const flat = engine.zeros([8]);
  const single = engine.zeros([1, 8]);
  const ints = engine.zeros([4, 8], "i32");
  const gone = engine.zeros([4, 8]);
  gone.dispose();
  for (const f of [barlowTwins, vicreg]) {
    const name = f === barlowTwins ? "barlowTwins" : "vicreg";
    await assertThrows(() => f(a, b), ShapeError, [name, "[4, 8]", "[5, 8]"]);
    await assertThrows(() => f(a, c), ShapeError, ["[4, 8]", "[4, 7]"]);
    await assertThrows(() => f(flat, flat), ShapeError, ["[8]", "2-D"]);
    await assertThrows(() => f(single, single), ShapeError, ["at least 2 rows", "[1, 8]"]);
    await assertThrows(() => f(a, ints), TypeError, ["i32"]);
    await assertThrows(() => f(a, gone), Error, ["used after dispose"]);
  }
  await assertThrows(() => barlowTwins(a, a, { lambda: -1 }), RangeError, ["lambda", "-1"]);
  await assertThrows(() => barlowTwins(a, a, { lambda: NaN }), RangeError, ["lambda", "NaN"]);
  await assertThrows(() => vicreg(a, a, { sim: Infinity }), RangeError, ["sim"]);
  await assertThrows(() => vicreg(a, a, { variance: -2 }), RangeError, ["variance"]);
  await assertThrows(() => vicreg(a, a, { covariance: NaN }), RangeError, ["covariance"]);
  await assertThrows(() => vicreg(a, a, { eps: -1e-4 }), RangeError, ["eps"]);
  for (const t of [a, b, c, flat, single, ints]) t.dispose();
  assertNoLeak(engine, before, "errors");
});

/** DINO's loss and student gradients on the GPU, for views given as arrays of [n, k]. */
async function dinoOnGpu(
  engine: Engine,
  teacher: Float32Array[],
  student: Float32Array[],
  centerValues: Float32Array,
  n: number,
  k: number,
  temps: { teacherTemp: number; studentTemp: number },
): Promise<{ loss: number; dStudent: Float32Array[]; dTeacher: Float32Array }> {
  const t = teacher.map((x) => engine.tensor(x, [n, k]));
  const s = student.map((x) => engine.tensor(x, [n, k]));
  using center = engine.tensor(centerValues, [k]);
  try {
    const loss = dino(t, s, { center, ...temps });
    const [dTeacher, ...dStudent] = grad(loss, [t[0], ...s]);
    return {
      loss: (await take(loss))[0],
      dStudent: await Promise.all(dStudent.map(take)),
      dTeacher: await take(dTeacher),
    };
  } finally {
    for (const x of [...t, ...s]) x.dispose();
  }
}

const DINO_CASES = [
  // [teacher views, student views, batch, K]: K = 1 (every softmax is 1, the loss 0), one teacher view, DINO's
  // 2 global + local crops, a prime batch, K past the 1,024-element workgroup.
  [2, 2, 3, 1],
  [1, 2, 1, 5],
  [2, 6, 4, 7],
  [2, 4, 17, 1031],
];

test("dino: value and student gradients match the float64 reference; the teacher gets none", async (engine) => {
  const before = engine.memory();
  for (const [c, [tv, sv, n, k]] of DINO_CASES.entries()) {
    for (const temps of [{ teacherTemp: 0.04, studentTemp: 0.1 }, { teacherTemp: 0.7, studentTemp: 1 }]) {
      // Logits of order ±3: at teacherTemp 0.04 the teacher's softmax is nearly one-hot.
      const teacher = Array.from({ length: tv }, (_, i) => randomArray(n * k, 100 * c + i, -3, 3));
      const student = Array.from({ length: sv }, (_, i) => randomArray(n * k, 100 * c + 50 + i, -3, 3));
      const center = randomArray(k, 7 * c, -0.5, 0.5);
      const got = await dinoOnGpu(engine, teacher, student, center, n, k, temps);
      const ref = refDino(teacher, student, n, k, center, temps.teacherTemp, temps.studentTemp);
      const what = `T=${tv} S=${sv} B=${n} K=${k} ${JSON.stringify(temps)}`;
      // Sums over pairs, rows and K of products of f32 softmaxes: 1e-5 relative, and the gradient's elements
      // p − q (cancelling terms of size ≤ 1 / (B·pairs·studentTemp)) scaled alike.
      assertClose([got.loss], [ref.loss], { rtol: 1e-5, atol: 1e-6 }, `dino loss ${what}`);
      got.dStudent.forEach((d, v) => close(d, ref.dStudent[v], `dino dStudent[${v}] ${what}`, 1e-5));
      assert(got.dTeacher.every((x) => x === 0), `dino: the teacher gets no gradient (${what})`);
    }
  }
  assertNoLeak(engine, before, "dino");
});

test("dino: gradients match central finite differences; no NaN at extreme logits", async (engine) => {
  const before = engine.memory();
  const [n, k] = [3, 4];
  const teacher = [randomArray(n * k, 1, -2, 2), randomArray(n * k, 2, -2, 2)];
  const student = [0, 1, 2].map((i) => randomArray(n * k, 10 + i, -2, 2));
  const center = new Float32Array(k);
  const temps = { teacherTemp: 0.5, studentTemp: 0.5 };
  const got = await dinoOnGpu(engine, teacher, student, center, n, k, temps);
  const value = (s2: Float32Array) =>
    noGrad(() => {
      const t = teacher.map((x) => engine.tensor(x, [n, k]));
      const s = [...student.slice(0, 2), s2].map((x) => engine.tensor(x, [n, k]));
      const c = engine.tensor(center, [k]);
      const loss = dino(t, s, { center: c, ...temps });
      for (const x of [...t, ...s, c]) x.dispose();
      return take(loss);
    }).then((v) => v[0]);
  const idx = [0, 5, n * k - 1];
  // h = 1e-2 against logits / 0.5 of order 4: truncation (h²/6)·f''' ≲ 1e-4 of the gradient; f32 rounding of
  // a loss of order 1 adds ~1e-7 / 2h = 5e-6.
  const fd = await finiteDifference(value, student[2], idx, 1e-2);
  assertClose(idx.map((i) => got.dStudent[2][i]), fd, { rtol: 1e-3, atol: 1e-4 }, "dino d student[2]");
  // Logits of ±1e4 at DINO's temperatures: the softmaxes subtract their maxima, so nothing overflows.
  const big = [teacher, student].map((views) => views.map((x) => x.map((v) => v * 5e3)));
  const extreme = await dinoOnGpu(engine, big[0], big[1], center, n, k, {
    teacherTemp: 0.04,
    studentTemp: 0.1,
  });
  const ref = refDino(big[0], big[1], n, k, center, 0.04, 0.1);
  assertClose([extreme.loss], [ref.loss], { rtol: 1e-5, atol: 0 }, "dino at logits ±1e4");
  assert(extreme.dStudent.every((d) => d.every(Number.isFinite)), "dino: finite gradients at logits ±1e4");
  assertNoLeak(engine, before, "dino finite differences");
});

test("dinoCenter: the EMA of the teacher's mean row, in place; dino and dinoCenter reject bad input", async (engine) => {
  const before = engine.memory();
  {
    const [n, k] = [5, 1031];
    const views = [randomArray(n * k, 1, -4, 4), randomArray(n * k, 2, -4, 4)];
    const c0 = randomArray(k, 3);
    using center = engine.tensor(c0, [k]);
    const t = views.map((x) => engine.tensor(x, [n, k]));
    dinoCenter(center, t, { momentum: 0.9 });
    // A mean of 10 rows and one multiply-add: a few ulp.
    assertClose(
      await center.toArray(),
      refDinoCenter(c0, views, n, k, 0.9),
      { rtol: 1e-5, atol: 1e-6 },
      "center",
    );
    dinoCenter(center, t.slice(0, 1), { momentum: 0 });
    assertClose(await center.toArray(), refDinoCenter(c0, views.slice(0, 1), n, k, 0), {
      rtol: 1e-5,
      atol: 1e-6,
    });
    using wrong = engine.zeros([n, k + 1]);
    using bad = engine.zeros([k + 1]);
    await assertThrows(() => dino([t[0]], [t[0], wrong], { center }), ShapeError, [
      "student[1]",
      `[${n}, ${k + 1}]`,
    ]);
    await assertThrows(() => dino(t, [t[0]], { center }), RangeError, ["2 teacher and 1 student"]);
    await assertThrows(() => dino(t, t, { center: bad }), ShapeError, ["center", `[${k + 1}]`, `[${k}]`]);
    await assertThrows(() => dino(t, t, { center, teacherTemp: 0 }), RangeError, ["teacherTemp"]);
    await assertThrows(() => dino(t, t, { center, studentTemp: -1 }), RangeError, ["studentTemp"]);
    await assertThrows(() => dinoCenter(center, [t[0], wrong]), ShapeError, ["teacher[1]"]);
    await assertThrows(() => dinoCenter(center, t, { momentum: 1.5 }), RangeError, ["momentum"]);
    for (const x of t) x.dispose();
  }
  assertNoLeak(engine, before, "dinoCenter");
});

// Sinkhorn: exp of scores / epsilon (up to 1 / 0.05 = 20: the rounding of the argument, 20 · 6e-8, is the
// relative error of each code), then sums and divisions, each 1e-7 relative: 2e-5 relative leaves headroom.
const SINKHORN_TOL = { rtol: 2e-5, atol: 1e-12 };

test("sinkhorn: codes match the float64 reference in lightly's layout; rows sum to 1; no NaN at extreme scores", async (engine) => {
  const before = engine.memory();
  for (const [n, k] of [[1, 1], [3, 5], [17, 1031], [64, 3000]]) {
    for (const [iterations, epsilon] of [[3, 0.05], [0, 0.5], [1, 0.05]]) {
      const scores = randomArray(n * k, n + k + iterations, -1, 1);
      using s = engine.tensor(scores, [n, k]);
      const got = await take(sinkhorn(s, { iterations, epsilon }));
      const what = `B=${n} K=${k} iterations=${iterations} epsilon=${epsilon}`;
      assertClose(got, refSinkhorn(scores, n, k, iterations, epsilon), SINKHORN_TOL, `sinkhorn ${what}`);
      if (iterations > 0) {
        const rowSums = Array.from(
          { length: n },
          (_, i) => got.slice(i * k, (i + 1) * k).reduce((a, b) => a + b),
        );
        assertClose(rowSums, rowSums.map(() => 1), { rtol: 1e-5, atol: 0 }, `rows sum to 1: ${what}`);
      }
    }
  }
  // Scores of ±1e3 at epsilon 0.05: exp(2e4) would overflow, and in f32 most of exp(s − max) would be 0.
  {
    using big = engine.tensor(randomArray(8 * 16, 3, -1e3, 1e3), [8, 16]);
    const codes = await take(sinkhorn(big));
    assert(codes.every(Number.isFinite), "sinkhorn: finite codes at scores of ±1e3");
  }
  // A prototype scored 30 below the rest: exp(−600) is 0 in f32 but not in float64, and balancing gives its
  // column its 1/K all the same (in log space the GPU does too).
  {
    const scores = randomArray(6 * 5, 4, -1, 1).map((v, i) => (i % 5 === 2 ? v - 30 : v));
    using s = engine.tensor(scores, [6, 5]);
    const got = await take(sinkhorn(s));
    assertClose(got, refSinkhorn(scores, 6, 5, 3, 0.05), SINKHORN_TOL, "sinkhorn with a far-down prototype");
  }
  assertNoLeak(engine, before, "sinkhorn");
});

test("sinkhorn's memory stays a few score matrices however many iterations (it kept every step's)", (engine) => {
  using s = engine.randn([16, 64], { seed: 1 }); // 4 KiB of scores
  const peaks = [];
  for (const iterations of [3, 60]) {
    engine.resetPeak();
    const base = engine.memory().bytes;
    sinkhorn(s, { iterations }).dispose();
    peaks.push(engine.memory().peakBytes - base);
  }
  // 60 iterations kept 120 log-Q steps (480 KiB); one step at a time is the same few [B, K] as 3 iterations.
  assertEquals(peaks[1], peaks[0], `peak bytes at 3 and 60 iterations: ${peaks}`);
  assert(peaks[0] <= 8 * s.bytes, `peak ${peaks[0]} bytes for scores of ${s.bytes}`);
});

const SWAV_CASES: { high: number; low: number; n: number; k: number; queueRows: number }[] = [
  { high: 2, low: 0, n: 3, k: 5, queueRows: 0 },
  { high: 1, low: 1, n: 1, k: 3, queueRows: 0 },
  { high: 2, low: 4, n: 4, k: 7, queueRows: 0 },
  { high: 2, low: 2, n: 5, k: 6, queueRows: 7 },
  { high: 2, low: 1, n: 17, k: 1031, queueRows: 11 },
];

test("swav: value and gradients match the float64 reference, with and without a queue; the codes get none", async (engine) => {
  const before = engine.memory();
  for (const [c, { high, low, n, k, queueRows }] of SWAV_CASES.entries()) {
    for (const temperature of [0.1, 1]) {
      const views = Array.from({ length: high + low }, (_, i) => randomArray(n * k, 300 * c + i, -1, 1));
      const queued = Array.from(
        { length: high },
        (_, i) => randomArray(queueRows * k, 300 * c + 50 + i, -1, 1),
      );
      const t = views.map((x) => engine.tensor(x, [n, k]));
      const queue = queueRows ? queued.map((x) => engine.tensor(x, [queueRows, k])) : undefined;
      const loss = swav(t.slice(0, high), t.slice(high), { temperature, queue });
      const grads = grad(loss, t);
      const got = (await take(loss))[0];
      const ref = refSwav(
        views.slice(0, high),
        views.slice(high),
        n,
        k,
        temperature,
        3,
        0.05,
        queueRows ? { rows: queueRows, values: queued } : null,
      );
      const what = `H=${high} L=${low} B=${n} K=${k} Q=${queueRows} t=${temperature}`;
      // As dino's bound, with the codes' own 2e-5 (SINKHORN_TOL) carried into the products.
      assertClose([got], [ref.loss], { rtol: 2e-5, atol: 1e-6 }, `swav loss ${what}`);
      for (const [v, g] of grads.entries()) {
        close(await take(g), ref.dStudent[v], `swav d view ${v} ${what}`, 2e-5);
      }
      for (const x of [...t, ...(queue ?? [])]) x.dispose();
    }
  }
  assertNoLeak(engine, before, "swav");
});

test("swav: gradients match central finite differences; bad views and queues throw", async (engine) => {
  const before = engine.memory();
  {
    const [n, k] = [3, 4];
    const views = [0, 1, 2].map((i) => randomArray(n * k, 20 + i, -1, 1));
    const t = views.map((x) => engine.tensor(x, [n, k]));
    const loss = swav(t.slice(0, 2), t.slice(2), { temperature: 0.5 });
    const d = await take(grad(loss, [t[2]])[0]);
    loss.dispose();
    const value = (x: Float32Array) =>
      noGrad(() => {
        const v = [...views.slice(0, 2), x].map((y) => engine.tensor(y, [n, k]));
        const l = swav(v.slice(0, 2), v.slice(2), { temperature: 0.5 });
        for (const y of v) y.dispose();
        return take(l);
      }).then((r) => r[0]);
    const idx = [0, 5, n * k - 1];
    // A low-resolution view only predicts, so the codes do not move with it: h = 1e-2 against logits / 0.5 of
    // order 2 leaves truncation ≲ 1e-4 of the gradient; f32 rounding of the loss adds ~1e-7 / 2h = 5e-6.
    const fd = await finiteDifference(value, views[2], idx, 1e-2);
    assertClose(idx.map((i) => d[i]), fd, { rtol: 1e-3, atol: 1e-4 }, "swav d low[0]");
    using wrong = engine.zeros([n, k + 1]);
    using queueWrong = engine.zeros([5, k + 1]);
    await assertThrows(() => swav([t[0]], [wrong]), ShapeError, ["low[0]", `[${n}, ${k + 1}]`]);
    await assertThrows(() => swav([t[0]], []), RangeError, ["1 high-resolution and 1 student"]);
    await assertThrows(() => swav(t.slice(0, 2), [], { queue: [queueWrong] }), RangeError, [
      "1 queues for 2",
    ]);
    await assertThrows(() => swav(t.slice(0, 1), t.slice(1), { queue: [queueWrong] }), ShapeError, [
      "queue[0]",
      `[5, ${k + 1}]`,
    ]);
    await assertThrows(() => swav(t, [], { temperature: 0 }), RangeError, ["temperature"]);
    await assertThrows(() => sinkhorn(t[0], { iterations: 1.5 }), RangeError, ["iterations"]);
    await assertThrows(() => sinkhorn(t[0], { epsilon: 0 }), RangeError, ["epsilon"]);
    for (const x of t) x.dispose();
  }
  assertNoLeak(engine, before, "swav finite differences");
});

/** koleo of x [n, d] on the GPU: the loss and its gradient to x. */
async function koleoOnGpu(engine: Engine, x: Float32Array, n: number, d: number, eps?: number) {
  using t = engine.tensor(x, [n, d]);
  const [loss, g] = engine.tidy(() => {
    const loss = koleo(t, { eps });
    return [loss, grad(loss, [t])[0]];
  });
  return { loss: (await take(loss))[0], dx: await take(g) };
}

test("koleo: value and gradient match the float64 reference (N 2 to 65, D 2 to 33), a zero row and twins too", async (engine) => {
  const before = engine.memory();
  for (const [n, d] of [[2, 2], [7, 3], [17, 33], [65, 16]]) {
    const x = randomArray(n * d, n + d);
    const ref = refKoleo(x, n, d);
    const got = await koleoOnGpu(engine, x, n, d);
    close([got.loss], [ref.loss], `koleo N=${n} D=${d} loss`);
    close(got.dx, ref.dx, `koleo N=${n} D=${d} gradient`);
  }
  // A zero row (normalised to 0; its gradient scaled by 1/eps) and two equal rows (distance eps·√D): finite.
  const x = randomArray(5 * 4, 3);
  x.fill(0, 0, 4);
  x.set(x.subarray(8, 12), 12);
  const ref = refKoleo(x, 5, 4, 1e-3);
  const got = await koleoOnGpu(engine, x, 5, 4, 1e-3);
  close([got.loss], [ref.loss], "koleo zero row and twins: loss");
  close(got.dx, ref.dx, "koleo zero row and twins: gradient");
  assertNoLeak(engine, before);
});

test("koleo: gradient matches central finite differences; bad input throws", async (engine) => {
  const before = engine.memory();
  const [n, d] = [6, 5];
  const x = randomArray(n * d, 9);
  const { dx } = await koleoOnGpu(engine, x, n, d);
  const lossOf = async (v: Float32Array) => (await koleoOnGpu(engine, v, n, d)).loss;
  const probe = [0, 7, 13, 22, 29];
  // h = 1e-2 keeps every nearest neighbour; truncation ~h²·|f'''| and f32 rounding ~6e-8·|f|/h: ~2e-3.
  await assertFiniteDifferences(dx, lossOf, x, probe, 1e-2, { rtol: 2e-2, atol: 2e-3 }, "koleo");
  {
    using one = engine.zeros([1, 4]);
    await assertThrows(() => koleo(one), RangeError, ["koleo", "2 rows", "[1, 4]"]);
    using flat = engine.zeros([8]);
    await assertThrows(() => koleo(flat), ShapeError, ["koleo", "[8]"]);
    using t = engine.zeros([3, 2]);
    await assertThrows(() => koleo(t, { eps: -1 }), RangeError, ["eps", "-1"]);
  }
  assertNoLeak(engine, before);
});

test("alignment, uniformity: value and gradients match the float64 reference and finite differences", async (engine) => {
  const before = engine.memory();
  for (const [n, d] of [[2, 3], [9, 5], [40, 16]]) {
    const [a, b] = views(n, d, n);
    for (const alpha of [2, 1, 3]) {
      const ref = refAlignment(a, b, n, d, alpha);
      using ta = engine.tensor(a, [n, d]);
      using tb = engine.tensor(b, [n, d]);
      const [loss, ga, gb] = engine.tidy(() => {
        const loss = alignment(ta, tb, { alpha });
        return [loss, ...grad(loss, [ta, tb])];
      });
      const what = `alignment N=${n} D=${d} alpha=${alpha}`;
      close(await take(loss), [ref.loss], what);
      close(await take(ga), ref.dz1, `${what} dx`);
      close(await take(gb), ref.dz2, `${what} dy`);
    }
    for (const t of [2, 0.5]) {
      const ref = refUniformity(a, n, d, t);
      using ta = engine.tensor(a, [n, d]);
      const [loss, g] = engine.tidy(() => {
        const loss = uniformity(ta, { t });
        return [loss, grad(loss, [ta])[0]];
      });
      close(await take(loss), [ref.loss], `uniformity N=${n} D=${d} t=${t}`);
      close(await take(g), ref.dx, `uniformity N=${n} D=${d} t=${t} dx`);
    }
  }
  // Equal rows: alignment 0 with gradient 0 (no NaN at alpha 1), finite differences of uniformity.
  {
    const a = randomArray(12, 4);
    using ta = engine.tensor(a, [3, 4]);
    const [loss, g] = engine.tidy(() => {
      const loss = alignment(ta, ta, { alpha: 1 });
      return [loss, grad(loss, [ta])[0]];
    });
    assertClose(await take(loss), [0], { rtol: 0, atol: 1e-14 }, "alignment of equal rows");
    assertClose(await take(g), new Float64Array(12), { rtol: 0, atol: 0 }, "its gradient");
    const lossOf = async (v: Float32Array) => {
      using t = engine.tensor(v, [3, 4]);
      return (await take(engine.tidy(() => uniformity(t))))[0];
    };
    const [gu] = engine.tidy(() => grad(uniformity(ta), [ta]));
    const probe = [0, 5, 11];
    const got = await take(gu);
    // h = 1e-2: truncation ~h²·|f'''| and f32 rounding ~6e-8·|f|/h, under 2e-3.
    await assertFiniteDifferences(got, lossOf, a, probe, 1e-2, { rtol: 1e-2, atol: 2e-3 }, "uniformity");
  }
  {
    using one = engine.zeros([1, 4]);
    await assertThrows(() => uniformity(one), RangeError, ["uniformity", "2 rows", "[1, 4]"]);
    using two = engine.zeros([2, 4]);
    using three = engine.zeros([3, 4]);
    await assertThrows(() => alignment(two, three), ShapeError, ["alignment", "[3, 4]", "[2, 4]"]);
    await assertThrows(() => alignment(two, two, { alpha: 0 }), RangeError, ["alpha", "0"]);
  }
  assertNoLeak(engine, before);
});

/** msn on the GPU: the loss and its gradients to anchors and prototypes. */
async function msnOnGpu(
  engine: Engine,
  [a, t, p]: Float32Array[],
  [rows, b, k, d]: number[],
  options: MSNOptions,
) {
  using ta = engine.tensor(a, [rows, d]);
  using tt = engine.tensor(t, [b, d]);
  using tp = engine.tensor(p, [k, d]);
  const [loss, ga, gp] = engine.tidy(() => {
    const loss = msn(ta, tt, tp, options);
    return [loss, ...grad(loss, [ta, tp])];
  });
  return { loss: (await take(loss))[0], dAnchors: await take(ga), dPrototypes: await take(gp) };
}

test("msn: value and gradients match the float64 reference (views, Sinkhorn on and off, no regulariser, PMSN)", async (engine) => {
  const before = engine.memory();
  // Temperatures down to 0.01: the targets' sharpened logits reach 2 / (0.01 · 0.25) = 800, whose probabilities
  // f32's exp cannot hold; Sinkhorn balances them in log space, so they still match the float64 reference.
  const cases: [number[], MSNOptions][] = [
    [[4, 4, 3, 5], {}],
    [[12, 4, 7, 8], {}],
    [[12, 4, 7, 8], { sinkhornIterations: 0, temperature: 0.5 }],
    [[30, 10, 16, 6], { regularizationWeight: 0, targetSharpenTemperature: 0.5 }],
    [[9, 3, 5, 4], { temperature: 0.02, regularizationWeight: 2.5 }],
    [[9, 3, 5, 4], { temperature: 0.01 }],
    [[12, 4, 7, 8], { powerLawExponent: 0.25 }],
    [[9, 3, 5, 4], { powerLawExponent: 1, regularizationWeight: 3, temperature: 0.05 }],
  ];
  for (const [dims, options] of cases) {
    const [rows, b, k, d] = dims;
    const inputs = [rows * d, b * d, k * d].map((n, i) => randomArray(n, rows + 10 * i));
    const got = await msnOnGpu(engine, inputs, dims, options);
    const ref = refMsn(inputs[0], inputs[1], inputs[2], [rows, b, k, d], options);
    const what = `msn ${dims} ${JSON.stringify(options)}`;
    close([got.loss], [ref.loss], what);
    close(got.dAnchors, ref.dAnchors, `${what} anchors`);
    close(got.dPrototypes, ref.dPrototypes, `${what} prototypes`);
  }
  assertNoLeak(engine, before);
});

test("msn: gradients match finite differences; bad shapes and options throw", async (engine) => {
  const before = engine.memory();
  const dims = [6, 3, 4, 5];
  const [rows, b, k, d] = dims;
  const inputs = [rows * d, b * d, k * d].map((n, i) => randomArray(n, 50 + i));
  const { dAnchors } = await msnOnGpu(engine, inputs, dims, {});
  const lossOf = async (v: Float32Array) =>
    (await msnOnGpu(engine, [v, inputs[1], inputs[2]], dims, {})).loss;
  const probe = [0, 9, 17, 29];
  // h = 1e-2: truncation ~h²·|f'''| (the softmax at temperature 0.1 curves fast: ~1e-3) and f32 rounding.
  await assertFiniteDifferences(dAnchors, lossOf, inputs[0], probe, 1e-2, { rtol: 2e-2, atol: 3e-3 }, "msn");
  {
    using a = engine.zeros([7, 4]);
    using t = engine.zeros([3, 4]);
    using p = engine.zeros([5, 4]);
    await assertThrows(() => msn(a, t, p), ShapeError, ["msn", "[7, 4]", "[3, 4]", "[5, 4]"]);
    using a6 = engine.zeros([6, 4]);
    await assertThrows(() => msn(a6, t, p, { sinkhornIterations: -1 }), RangeError, ["sinkhornIterations"]);
    await assertThrows(() => msn(a6, t, p, { temperature: 0 }), RangeError, ["temperature"]);
  }
  {
    // Every intermediate belongs to the loss, so disposing it frees them all (normalize(anchors) once stayed).
    using a = engine.tensor(inputs[0], [rows, d]);
    using t = engine.tensor(inputs[1], [b, d]);
    using p = engine.tensor(inputs[2], [k, d]);
    const mark = engine.memory();
    msn(a, t, p).dispose();
    noGrad(() => msn(a, t, p)).dispose();
    assertNoLeak(engine, mark, "msn's intermediates");
  }
  assertNoLeak(engine, before);
});

/** A symmetric d × d matrix M·Mᵀ / d, as a covariance estimate. */
function symmetric(d: number, seed: number): Float32Array {
  const m = randomArray(d * d, seed);
  return Float32Array.from({ length: d * d }, (_, e) => {
    let s = 0;
    for (let k = 0; k < d; k++) s += m[Math.floor(e / d) * d + k] * m[(e % d) * d + k];
    return s / d;
  });
}

test("tico: value, gradients and the covariance update match the float64 reference", async (engine) => {
  const before = engine.memory();
  for (const [n, d, beta, rho] of [[1, 3, 0.9, 20], [5, 4, 0.5, 1], [33, 16, 0.9, 20], [8, 7, 0, 3]]) {
    const [a, b] = views(n, d, n + d);
    const c = symmetric(d, d);
    using za = engine.tensor(a, [n, d]);
    using zb = engine.tensor(b, [n, d]);
    using covariance = engine.tensor(c, [d, d]);
    const [loss, ga, gb] = engine.tidy(() => {
      const loss = tico(za, zb, { covariance, beta, rho });
      return [loss, ...grad(loss, [za, zb])];
    });
    const ref = refTiCo(a, b, c, n, d, beta, rho);
    const what = `tico N=${n} D=${d} beta=${beta} rho=${rho}`;
    close(await take(loss), [ref.loss], what);
    close(await take(ga), ref.dza, `${what} dza`);
    close(await take(gb), ref.dzb, `${what} dzb`);
    close(await covariance.toArray(), ref.next, `${what} covariance update`);
  }
  assertNoLeak(engine, before);
});

test("tico: update false leaves the covariance; gradients match finite differences; bad input throws", async (engine) => {
  const before = engine.memory();
  const [n, d] = [6, 4];
  const [a, b] = views(n, d, 77);
  const c = symmetric(d, 78);
  {
    using zb = engine.tensor(b, [n, d]);
    using covariance = engine.tensor(c, [d, d]);
    const evaluate = async (v: Float32Array) => {
      using za = engine.tensor(v, [n, d]);
      return (await take(engine.tidy(() => tico(za, zb, { covariance, update: false }))))[0];
    };
    using za = engine.tensor(a, [n, d]);
    const [g] = engine.tidy(() => grad(tico(za, zb, { covariance, update: false }), [za]));
    assertClose(await covariance.toArray(), c, { rtol: 0, atol: 0 }, "tico with update false");
    const probe = [0, 7, 13, 23];
    const got = await take(g);
    // h = 1e-2: truncation ~h²·|f'''| with rho 20 (~1e-3) and f32 rounding ~6e-8·|f|/h.
    await assertFiniteDifferences(got, evaluate, a, probe, 1e-2, { rtol: 2e-2, atol: 3e-3 }, "tico");
    using wrong = engine.zeros([d, d + 1]);
    await assertThrows(() => tico(za, zb, { covariance: wrong }), ShapeError, [
      "covariance [4, 5]",
      "[4, 4]",
    ]);
    await assertThrows(() => tico(za, zb, { covariance, beta: 1.5 }), RangeError, ["beta", "1.5"]);
    // JavaScript callers may leave out the options (its running covariance): named, not a property read of undefined.
    await assertThrows(() => tico(za, zb, undefined as unknown as TiCoOptions), TypeError, [
      "tico",
      "options.covariance",
    ]);
  }
  assertNoLeak(engine, before);
});

test("hypersphere: value and gradients match the float64 reference", async (engine) => {
  const before = engine.memory();
  for (const [n, d, o] of [[2, 3, {}], [9, 5, { t: 2, lam: 0.5, alpha: 1 }], [40, 16, {}]] as const) {
    const [a, b] = views(n, d, 90 + n);
    using ta = engine.tensor(a, [n, d]);
    using tb = engine.tensor(b, [n, d]);
    const [loss, ga, gb] = engine.tidy(() => {
      const loss = hypersphere(ta, tb, o);
      return [loss, ...grad(loss, [ta, tb])];
    });
    const ref = refHypersphere(a, b, n, d, o.t, o.lam, o.alpha);
    const what = `hypersphere N=${n} D=${d} ${JSON.stringify(o)}`;
    close(await take(loss), [ref.loss], what);
    close(await take(ga), ref.dz1, `${what} dza`);
    close(await take(gb), ref.dz2, `${what} dzb`);
  }
  assertNoLeak(engine, before);
});

test("dino, dinoCenter, swav and tico name a center, queue or covariance from another engine", async () => {
  // The two kernel variants' engines are two engines: each state tensor is made on the other one.
  const [mine, other] = await twoEngines();
  const before = mine.memory();
  {
    using v = mine.randn([4, 6], { seed: 1 });
    using center = other.zeros([6]);
    using queue = other.zeros([3, 6]);
    using covariance = other.zeros([6, 6]);
    const elsewhere = "belong to different engines";
    await assertThrows(() => dino([v], [v, v], { center }), Error, ["dino: center", elsewhere]);
    await assertThrows(() => dinoCenter(center, [v]), Error, ["dinoCenter: center", elsewhere]);
    await assertThrows(() => swav([v, v], [], { queue: [queue, queue] }), Error, [
      "swav: queue[0]",
      elsewhere,
    ]);
    await assertThrows(() => tico(v, v, { covariance }), Error, ["tico: covariance", elsewhere]);
  }
  assertNoLeak(mine, before);
});
