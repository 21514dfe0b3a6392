// Contrastive losses against the float64 reference (src/ref/contrastive.ts) and finite differences.
import {
  add,
  dcl,
  enqueue,
  grad,
  infoNCE,
  type InitOptions,
  mean,
  mul,
  negativeCosine,
  noGrad,
  normalize,
  ntXent,
  ShapeError,
  sum,
  supCon,
  type Tensor,
} from "../src/mod.ts";
import {
  refDcl,
  refDclwOneMinusW,
  refInfoNCE,
  refNegativeCosine,
  refNtXent,
  refSupCon,
} from "../src/ref/contrastive.ts";
import { bothKernels, cpuKernels, test, type TestFn } from "./harness.ts";
import {
  assert,
  assertClose,
  assertCloseScaled,
  assertEquals,
  assertNoLeak,
  assertThrows,
  finiteDifference,
  randomArray,
  rng,
  take,
} from "./util.ts";

// The bound: loss and gradients within 1e-4 relative of the float64 reference. An absolute floor of
// 1e-4 × the largest |expected| covers elements near zero, whose f32 error is set by the larger terms they
// cancel (a sum of ~2N terms of that size, each with f32 rounding 6e-8).
function close(actual: ArrayLike<number>, expected: ArrayLike<number>, what: string, rtol = 1e-4): void {
  assertCloseScaled(actual, expected, rtol, what);
}

async function lossAndGrads(
  f: () => Tensor,
  inputs: Tensor[],
): Promise<[number, Float32Array[]]> {
  const loss = f();
  const grads = grad(loss, inputs);
  const value = (await take(loss))[0];
  const out: Float32Array[] = [];
  for (const g of grads) out.push(await take(g));
  return [value, out];
}

function allFinite(xs: ArrayLike<number>[], what: string): void {
  for (const x of xs) {
    for (let i = 0; i < x.length; i++) assert(Number.isFinite(x[i]), `${what}: element ${i} is ${x[i]}`);
  }
}

/**
 * Runs `fn` on both kernel variants, each with the logits cache (the default) and without it: the same engine
 * and pipelines (the cache flag is a uniform), only `logitCacheBytes` set to 0 for the second run.
 */
function bothCaches(fn: TestFn, options: InitOptions = {}): Promise<void> {
  return bothKernels(async (engine) => {
    await fn(engine);
    const bytes = engine.logitCacheBytes;
    engine.logitCacheBytes = 0;
    try {
      await fn(engine);
    } finally {
      engine.logitCacheBytes = bytes;
    }
  }, options);
}

test("ntXent: value and gradients match the float64 reference (random N, D, temperatures 1 .. 0.01)", () =>
  bothCaches(async (engine) => {
    const before = engine.memory();
    // [150, 130]: D past one workgroup's 128 dims of the gradient (two chunks), not a multiple of 4; on CPU
    // adapters one row tile per A window, so five windows. [37, 300]: a row tile past the A window (D > 256),
    // so CPU adapters read A from storage. [70, 128]: three row tiles in windows of two, the last window half
    // full. [230, 128]: eight row tiles in four A windows, so on CPU adapters (which walk each pair of tiles
    // once) windows write the same rows' transposed shares in one dispatch sequence. [1000, 64]: 32 row tiles,
    // 17 bands (32 column tiles with the cache), long enough that CPU adapters split them (MIN_SPLIT_STEPS):
    // two splits side by side in each dispatch, their partials merged.
    const cases: [number, number, number][] = [
      [1, 3, 0.5],
      [2, 2, 1],
      [5, 7, 0.1],
      [33, 16, 0.5],
      [64, 128, 0.07],
      [97, 13, 0.01],
      [200, 33, 0.2],
      [150, 130, 0.1],
      [37, 300, 0.1],
      [70, 128, 0.3],
      [230, 128, 0.2],
      [1000, 64, 0.1],
    ];
    for (const [n, d, t] of cases) {
      const a = randomArray(n * d, n * 31 + d);
      const b = randomArray(n * d, n * 17 + d + 1);
      const z1 = engine.tensor(a, [n, d]);
      const z2 = engine.tensor(b, [n, d]);
      const [loss, [g1, g2]] = await lossAndGrads(() => ntXent(z1, z2, { temperature: t }), [z1, z2]);
      const ref = refNtXent(a, b, n, d, t);
      close([loss], [ref.loss], `loss N=${n} D=${d} t=${t}`);
      close(g1, ref.dz1, `dz1 N=${n} D=${d} t=${t}`);
      close(g2, ref.dz2, `dz2 N=${n} D=${d} t=${t}`);
      z1.dispose();
      z2.dispose();
    }
    assertNoLeak(engine, before, "ntXent");
  }));

test("dcl: value and gradients match the float64 reference, DCLW's weights too; N = 1 has no negatives and throws", () =>
  bothCaches(async (engine) => {
    const before = engine.memory();
    const cases: [number, number, number][] = [
      [2, 2, 1],
      [5, 7, 0.1],
      [33, 16, 0.5],
      [97, 13, 0.01],
      [150, 130, 0.1],
      [200, 33, 0.2],
    ];
    for (const [n, d, t] of cases) {
      const a = randomArray(n * d, n * 13 + d);
      const b = randomArray(n * d, n * 7 + d + 1);
      const z1 = engine.tensor(a, [n, d]);
      const z2 = engine.tensor(b, [n, d]);
      // DCLW composes on the same fused kernel: its weights are checked on the smaller batches.
      for (const weightSigma of n <= 97 ? [undefined, 0.5, 0.1] : [undefined]) {
        const what = `dcl N=${n} D=${d} t=${t} weightSigma=${weightSigma}`;
        const [loss, [g1, g2]] = await lossAndGrads(() => dcl(z1, z2, { temperature: t, weightSigma }), [
          z1,
          z2,
        ]);
        const ref = refDcl(a, b, n, d, t, weightSigma);
        close([loss], [ref.loss], `${what} loss`);
        close(g1, ref.dz1, `${what} dz1`);
        close(g2, ref.dz2, `${what} dz2`);
      }
      z1.dispose();
      z2.dispose();
    }
    {
      using one = engine.ones([1, 3]);
      await assertThrows(() => dcl(one, one), ShapeError, ["N ≥ 2", "[1, 3]"]);
      await assertThrows(() => dcl(one, one, { weightSigma: 0 }), RangeError, ["weightSigma", "0"]);
    }
    assertNoLeak(engine, before, "dcl");
  }));

test("infoNCE: with and without a negatives bank, one-way and symmetric, match the reference", () =>
  bothCaches(async (engine) => {
    const before = engine.memory();
    const cases: [number, number, number, number, boolean][] = [
      [1, 4, 1, 0, false],
      [1, 5, 0.5, 3, true],
      [7, 9, 0.1, 0, true],
      [40, 32, 0.07, 101, false],
      [37, 64, 0.01, 29, true],
    ];
    for (const [n, d, t, k, symmetric] of cases) {
      // Normalised-scale inputs as CLIP / MoCo pass them (the loss itself does not normalise).
      const q = randomArray(n * d, n + d, -0.3, 0.3);
      const kk = randomArray(n * d, n + d + 1, -0.3, 0.3);
      const neg = k ? randomArray(k * d, k + d, -0.3, 0.3) : null;
      const query = engine.tensor(q, [n, d]);
      const keys = engine.tensor(kk, [n, d]);
      const negatives = neg ? engine.tensor(neg, [k, d]) : undefined;
      const [loss, [gq, gk]] = await lossAndGrads(
        () => infoNCE(query, keys, { temperature: t, negatives, symmetric }),
        [query, keys],
      );
      const ref = refInfoNCE(q, kk, n, d, t, neg, k, symmetric);
      const what = `N=${n} D=${d} t=${t} K=${k} symmetric=${symmetric}`;
      close([loss], [ref.loss], `loss ${what}`);
      close(gq, ref.dq, `dq ${what}`);
      close(gk, ref.dk, `dk ${what}`);
      for (const x of [query, keys, negatives]) x?.dispose();
    }
    assertNoLeak(engine, before, "infoNCE");
  }));

test("enqueue: MoCo's queue takes the keys in place, wrapping; infoNCE's backward keeps the bank it saw", async (engine) => {
  const before = engine.memory();
  {
    const [k, d] = [5, 3];
    const q0 = randomArray(k * d, 1);
    using queue = engine.tensor(q0, [k, d]);
    const rows = (values: Float32Array, ...at: number[]) =>
      at.flatMap((r) => [...values.slice(r * d, (r + 1) * d)]);
    const k1 = randomArray(2 * d, 2);
    using keys1 = engine.tensor(k1, [2, d]);
    assertEquals(enqueue(queue, keys1, 4), 1, "next position after wrapping");
    // Copies: exact. Rows 4 and 0 take keys 0 and 1; rows 1 to 3 stay.
    const expected = [...rows(k1, 1), ...rows(q0, 1, 2, 3), ...rows(k1, 0)];
    assertClose(await queue.toArray(), expected, { rtol: 0, atol: 0 }, "queue after enqueue at 4");
    const k2 = randomArray(k * d, 3);
    using keys2 = engine.tensor(k2, [k, d]);
    assertEquals(enqueue(queue, keys2, 1), 1, "a whole queue's worth comes round");
    assertClose(
      await queue.toArray(),
      rows(k2, 4, 0, 1, 2, 3),
      { rtol: 0, atol: 0 },
      "queue after a full turn",
    );

    // infoNCE with the queue as negatives, then the queue moves on, then grad: the gradients of the bank seen.
    const [n, t] = [4, 0.1];
    const [qv, kv] = [randomArray(n * d, 4, -0.3, 0.3), randomArray(n * d, 5, -0.3, 0.3)];
    using query = engine.tensor(qv, [n, d]);
    using keys = engine.tensor(kv, [n, d]);
    const bank = (await queue.toArray()) as Float32Array;
    const loss = infoNCE(query, keys, { temperature: t, negatives: queue });
    enqueue(queue, keys, 2);
    const [gq, gk] = grad(loss, [query, keys]);
    const ref = refInfoNCE(qv, kv, n, d, t, bank, k, false);
    close([(await take(loss))[0]], [ref.loss], "infoNCE loss before the queue moved");
    close(await take(gq), ref.dq, "dq of the bank infoNCE saw");
    close(await take(gk), ref.dk, "dk of the bank infoNCE saw");

    using ints = engine.zeros([2, d], "i32");
    using wide = engine.zeros([2, d + 1]);
    using many = engine.zeros([k + 1, d]);
    await assertThrows(() => enqueue(queue, wide, 0), ShapeError, [`[2, ${d + 1}]`, `[${k}, ${d}]`]);
    await assertThrows(() => enqueue(queue, many, 0), ShapeError, [`[${k + 1}, ${d}]`, "at most K rows"]);
    await assertThrows(() => enqueue(queue, keys1, k), RangeError, ["at", `[0, ${k})`]);
    await assertThrows(() => enqueue(queue, keys1, 1.5), RangeError, ["at"]);
    await assertThrows(() => enqueue(queue, ints, 0), TypeError, ["i32", "f32"]);
    await assertThrows(() => enqueue(queue, queue, 0), Error, ["the queue itself"]);
    const gone = engine.zeros([2, d]);
    gone.dispose();
    await assertThrows(() => enqueue(queue, gone, 0), Error, ["used after dispose"]);
  }
  assertNoLeak(engine, before, "enqueue");
});

test("supCon: labels with several positives and anchors without any match the reference", () =>
  bothCaches(async (engine) => {
    const before = engine.memory();
    // [400, 8]: seven row tiles, so on CPU adapters (which walk each pair of tiles once) a workgroup takes two
    // bands of tile pairs, the second's transposed share merging into the first's.
    const cases: [number, number, number, number][] = [
      [1, 3, 0.5, 1],
      [2, 4, 0.1, 1],
      [19, 8, 0.07, 4],
      [70, 33, 0.01, 9],
      [400, 8, 0.1, 20],
    ];
    for (const [n, d, t, classes] of cases) {
      const x = randomArray(n * d, n * 7 + d);
      const r = rng(n);
      // Label n − 1 is unique: that anchor has no positive and is left out of the mean.
      const lab = Int32Array.from({ length: n }, (_, i) => (i === n - 1 ? 1000 : Math.floor(r() * classes)));
      const z = engine.tensor(x, [n, d]);
      const labels = engine.tensor(lab, [n], "i32");
      const [loss, [gz]] = await lossAndGrads(() => supCon(z, labels, { temperature: t }), [z]);
      const ref = refSupCon(x, lab, n, d, t);
      close([loss], [ref.loss], `loss N=${n} D=${d} t=${t}`);
      close(gz, ref.dz, `dz N=${n} D=${d} t=${t}`);
      z.dispose();
      labels.dispose();
    }
    assertNoLeak(engine, before, "supCon");
  }));

test("negativeCosine: value and gradient to p match the reference; z gets none", () =>
  bothKernels(async (engine) => {
    const before = engine.memory();
    for (const [n, d] of [[1, 1], [3, 5], [67, 130]]) {
      const a = randomArray(n * d, n + 3 * d);
      const b = randomArray(n * d, n + 5 * d);
      const p = engine.tensor(a, [n, d]);
      const z = engine.tensor(b, [n, d]);
      const [loss, [gp, gz]] = await lossAndGrads(() => negativeCosine(p, z), [p, z]);
      const ref = refNegativeCosine(a, b, n, d);
      close([loss], [ref.loss], `loss N=${n} D=${d}`);
      // D = 1: the exact gradient is 0 (a 1-D unit vector cannot turn); f32 leaves ~1e-7 of the 1/N terms.
      assertClose(gp, ref.dp, { rtol: 1e-4, atol: 1e-6 }, `dp N=${n} D=${d}`);
      assert(gz.every((v) => v === 0), "z must get no gradient");
      p.dispose();
      z.dispose();
    }
    assertNoLeak(engine, before, "negativeCosine");
  }));

test("negativeCosine's mean over 4.2M rows counts every row (one loop of n / 64 stopped at llvmpipe's cap)", async (engine) => {
  // D = 1: each cosine is exactly ±1 (the signs), +1 for the first 4,000,000 rows and −1 after; the loss is a
  // mean of ±1 in f32, to ~1e-7.
  const n = 4_200_000;
  using p = engine.tensor(
    Float32Array.from({ length: n }, (_, i) => (i < 4_000_000 ? 1 : -1) * (1 + (i % 7))),
    [n, 1],
  );
  using z = engine.tensor(Float32Array.from({ length: n }, (_, i) => 0.5 + (i % 3)), [n, 1]);
  const expected = -(4_000_000 - (n - 4_000_000)) / n;
  assertClose(await take(noGrad(() => negativeCosine(p, z))), [expected], { rtol: 1e-6, atol: 0 }, "loss");
});

test("ntXent and supCon: no NaN or Inf at temperature 0.01 with near-identical, large-norm and all-zero rows", async (engine) => {
  const before = engine.memory();
  const n = 20;
  const d = 24;
  const base = randomArray(d, 5);
  const a = new Float32Array(n * d);
  const b = new Float32Array(n * d);
  for (let i = 0; i < n; i++) {
    for (let k = 0; k < d; k++) {
      // Rows nearly identical (cosines within ~1e-3 of 1: logits within ~0.1 of 1/τ = 100), some with norms of
      // 1e4, row 3 all zero.
      const wobble = 1e-2 * Math.sin(i * 13 + k);
      const scale = i % 4 === 1 ? 1e4 : 1;
      a[i * d + k] = i === 3 ? 0 : scale * (base[k] + wobble);
      b[i * d + k] = scale * (base[k] - wobble);
    }
  }
  const z1 = engine.tensor(a, [n, d]);
  const z2 = engine.tensor(b, [n, d]);
  const [loss, [g1, g2]] = await lossAndGrads(() => ntXent(z1, z2, { temperature: 0.01 }), [z1, z2]);
  allFinite([[loss], g1, g2], "ntXent τ=0.01");
  const ref = refNtXent(a, b, n, d, 0.01);
  close([loss], [ref.loss], "ntXent loss");
  // Gradients of rows with norm 1e4 are 1e4 times smaller than the rest, and the all-zero row's is 1e12 times
  // larger (du / eps, as torch's normalize), so each row is compared on its own, normwise: ‖got − want‖ ≤
  // 1e-4·‖want‖. Near-identical rows make each component a difference of much larger terms (logits all
  // ≈ 100 ± 0.1), so elementwise bounds would measure that cancellation rather than the kernel.
  for (let i = 0; i < n; i++) {
    for (const [got, want, name] of [[g1, ref.dz1, "dz1"], [g2, ref.dz2, "dz2"]] as const) {
      let err = 0;
      let norm = 0;
      for (let k = i * d; k < (i + 1) * d; k++) {
        err += (got[k] - want[k]) ** 2;
        norm += want[k] ** 2;
      }
      assert(
        Math.sqrt(err) <= 1e-4 * Math.sqrt(norm),
        `${name} row ${i}: relative error ${Math.sqrt(err / norm)}`,
      );
    }
  }
  const labels = engine.tensor(Int32Array.from({ length: n }, (_, i) => i % 3), [n], "i32");
  const [sl, [gz]] = await lossAndGrads(() => supCon(z1, labels, { temperature: 0.01 }), [z1]);
  allFinite([[sl], gz], "supCon τ=0.01");
  const sref = refSupCon(a, Array.from({ length: n }, (_, i) => i % 3), n, d, 0.01);
  close([sl], [sref.loss], "supCon loss");
  for (const t of [z1, z2, labels]) t.dispose();
  assertNoLeak(engine, before, "numerics");
});

test("contrastive losses: a NaN in any row makes the loss and every gradient it reaches NaN, as the reference", () =>
  bothCaches(async (engine) => {
    const before = engine.memory();
    // A NaN reached the result only through a positive: one among the negatives (a MoCo bank, or the row of an
    // anchor without positives) gave a finite loss where the reference's is NaN, since max drops NaN and
    // llvmpipe's exp returns a finite number for it. 70 rows: several row tiles, so on CPU adapters the NaN
    // also travels through the transposed share of a tile pair.
    const n = 70;
    const d = 12;
    const withNaN = (seed: number, rows: number, row: number) => {
      const x = randomArray(rows * d, seed, -0.3, 0.3);
      x[row * d + 5] = NaN;
      return x;
    };
    // The reference's gradients are NaN exactly where the GPU's must be; the finite entries (none here, every
    // row's log-sum-exp reaches the NaN) would keep the 1e-4 bound.
    const same = (got: ArrayLike<number>, want: ArrayLike<number>, what: string) =>
      assertClose(got, want, { rtol: 1e-4, atol: 1e-4 }, what);
    const q = randomArray(n * d, 1, -0.3, 0.3);
    const k = randomArray(n * d, 2, -0.3, 0.3);
    const bank = withNaN(3, 30, 17);
    const query = engine.tensor(q, [n, d]);
    const keys = engine.tensor(k, [n, d]);
    const negatives = engine.tensor(bank, [30, d]);
    for (const symmetric of [false, true]) {
      const [loss, [gq, gk]] = await lossAndGrads(
        () => infoNCE(query, keys, { temperature: 0.1, negatives, symmetric }),
        [query, keys],
      );
      const ref = refInfoNCE(q, k, n, d, 0.1, bank, 30, symmetric);
      same(
        [loss, ...gq, ...gk],
        [ref.loss, ...ref.dq, ...ref.dk],
        `infoNCE, NaN in the bank, symmetric ${symmetric}`,
      );
    }
    const x = withNaN(4, n, n - 1);
    const lab = Int32Array.from({ length: n }, (_, i) => (i === n - 1 ? 1000 : i % 5));
    const z = engine.tensor(x, [n, d]);
    const labels = engine.tensor(lab, [n], "i32");
    const [sl, [gz]] = await lossAndGrads(() => supCon(z, labels, { temperature: 0.1 }), [z]);
    const sref = refSupCon(x, lab, n, d, 0.1);
    same([sl, ...gz], [sref.loss, ...sref.dz], "supCon, NaN in the anchor without positives");
    const z2 = engine.tensor(randomArray(n * d, 5), [n, d]);
    const [dl, [g1, g2]] = await lossAndGrads(() => dcl(z, z2, { temperature: 0.1 }), [z, z2]);
    const dref = refDcl(x, await z2.toArray(), n, d, 0.1);
    same([dl, ...g1, ...g2], [dref.loss, ...dref.dz1, ...dref.dz2], "dcl, NaN in one view");
    assert(Number.isNaN(sl) && Number.isNaN(dl), "the losses are NaN");
    for (const t of [query, keys, negatives, z, labels, z2]) t.dispose();
    assertNoLeak(engine, before, "NaN rows");
  }));

test("ntXent and infoNCE keep f32 precision of a small loss at temperature 0.01", () =>
  bothCaches(async (engine) => {
    const before = engine.memory();
    // Row i is e_D + 0.295·e_i in both views: positives have cosine 1 (logit 100), negatives 1 / (1 + 0.295²)
    // ≈ 0.92 (logit ≈ 92), so the losses are small: ntXent's log(1 + 2(n − 1)·e^-8) ≈ 1e-2, infoNCE's 2.5e-3.
    // Rounded to f32, lse ≈ 100 would be off by up to ulp(100) / 2 = 3.8e-6, 1.5e-3 of infoNCE's loss; taken
    // as (max − positive) + log Σ (the max is the positive logit itself here), the losses keep the 1e-4.
    const [n, d] = [16, 17];
    const z = new Float32Array(n * d);
    for (let i = 0; i < n; i++) {
      z[i * d + d - 1] = 1;
      z[i * d + i] = 0.295;
    }
    const z1 = engine.tensor(z, [n, d]);
    const z2 = engine.tensor(z, [n, d]);
    const nt = ntXent(z1, z2, { temperature: 0.01 });
    close(await take(nt), [refNtXent(z, z, n, d, 0.01).loss], "ntXent loss");
    const nce = infoNCE(z1, z2, { temperature: 0.01 });
    close(await take(nce), [refInfoNCE(z, z, n, d, 0.01).loss], "infoNCE loss");
    z1.dispose();
    z2.dispose();
    assertNoLeak(engine, before, "small loss");
  }));

test("ntXent, dcl, DCLW, infoNCE, supCon: gradients match central finite differences", async (engine) => {
  const before = engine.memory();
  const n = 3;
  const d = 4;
  const t = 0.5;
  const a = randomArray(n * d, 101);
  const b = randomArray(n * d, 102);
  const lab = Int32Array.of(0, 1, 0);
  const losses: Record<string, (x: Tensor, other: Tensor) => Tensor> = {
    ntXent: (x, other) => ntXent(x, other, { temperature: t }),
    dcl: (x, other) => dcl(x, other, { temperature: t }),
    dclw: (x, other) => dcl(x, other, { temperature: t, weightSigma: 0.5 }),
    infoNCE: (x, other) => infoNCE(x, other, { temperature: t, symmetric: true }),
    supCon: (x, other) => supCon(x, other, { temperature: t }),
  };
  // DCLW's weights take no gradient (lightly detaches them), so its differences hold them at a's values: DCL
  // plus mean_i (1 − w_i)·cos_i / t with w fixed.
  const oneMinusW = Float32Array.from(refDclwOneMinusW(a, b, n, d, 0.5));
  const dclwFixed = (x: Tensor, other: Tensor) =>
    engine.tidy(() => {
      using w = engine.tensor(oneMinusW, [n]);
      const cos = sum(mul(normalize(x), normalize(other)), 1);
      return add(dcl(x, other, { temperature: t }), mul(mean(mul(w, cos)), 1 / t));
    });
  for (const [name, lossOf] of Object.entries(losses)) {
    const evaluate = async (v: Float32Array, withGrad: boolean) => {
      const x = engine.tensor(v, [n, d]);
      const other = name === "supCon" ? engine.tensor(lab, [n], "i32") : engine.tensor(b, [n, d]);
      const loss = withGrad
        ? lossOf(x, other)
        : noGrad(() => (name === "dclw" ? dclwFixed : lossOf)(x, other));
      const g = withGrad ? await take(grad(loss, [x])[0]) : null;
      const value = (await take(loss))[0];
      x.dispose();
      other.dispose();
      return { value, g };
    };
    const { g } = await evaluate(a, true);
    const idx = [0, 5, 11];
    const fd = await finiteDifference(async (v) => (await evaluate(v, false)).value, a, idx);
    // h = 1e-2 on f32 losses of size ~1: truncation (h²/6)·f''' stays below 1e-3 here, rounding 6e-8/h ≈ 1e-5.
    assertClose(idx.map((i) => g![i]), fd, { rtol: 1e-2, atol: 1e-3 }, `${name} vs finite differences`);
  }
  assertNoLeak(engine, before, "finite differences");
});

test("infoNCE: a 200,000-column negatives bank is split across workgroups and dispatches (loop cap)", () =>
  bothCaches(async (engine) => {
    // One row tile against 200,000 columns: the backward's column loop alone would run ~2e5 times in one
    // invocation (llvmpipe stops loops at 65,535). The loop budget, not the 8 parallel workgroups of the test
    // engines, sets the splits: ~34 of ≤ 94 column tiles, 8 side by side per dispatch in 5 dispatches, so both
    // the side-by-side partials and the merge across dispatches run.
    const before = engine.memory();
    const n = 5;
    const d = 4;
    const k = 200_000;
    const q = randomArray(n * d, 1, -0.3, 0.3);
    const kk = randomArray(n * d, 2, -0.3, 0.3);
    const neg = randomArray(k * d, 3, -0.3, 0.3);
    const query = engine.tensor(q, [n, d]);
    const keys = engine.tensor(kk, [n, d]);
    const negatives = engine.tensor(neg, [k, d]);
    const [loss, [gq, gk]] = await lossAndGrads(
      () => infoNCE(query, keys, { temperature: 0.05, negatives }),
      [
        query,
        keys,
      ],
    );
    const ref = refInfoNCE(q, kk, n, d, 0.05, neg, k);
    close([loss], [ref.loss], "loss");
    close(gq, ref.dq, "dq");
    close(gk, ref.dk, "dk");
    for (const x of [query, keys, negatives]) x.dispose();
    assertNoLeak(engine, before, "big bank");
  }));

test("ntXent: on CPU adapters each pair of tiles once, over several A windows and dispatches", () =>
  cpuKernels(async (engine) => {
    // 2N = 6,200 rows at D = 4: 97 row tiles (the last of 56 rows), 49 bands of tile pairs. The stats take one row
    // tile to an A window (each adds 8 slots of row states, at most 4·dim4 of them), so 97 windows, and the loop
    // budget lets a workgroup walk ≤ 48 bands, so two splits, one per dispatch on the 8-workgroup test engines:
    // row states merge across dispatches, the transposed shares across windows. The gradient takes 4 row tiles to a window (each adds a slot of transposed
    // shares), so 25 windows write into the same slots. The GPU variant streams columns as the other tests
    // check. The logits cache would be 147 MiB: none.
    const before = engine.memory();
    const n = 3100;
    const d = 4;
    const a = randomArray(n * d, 11);
    const b = randomArray(n * d, 12);
    const z1 = engine.tensor(a, [n, d]);
    const z2 = engine.tensor(b, [n, d]);
    const [loss, [g1, g2]] = await lossAndGrads(() => ntXent(z1, z2, { temperature: 0.2 }), [z1, z2]);
    const ref = refNtXent(a, b, n, d, 0.2);
    close([loss], [ref.loss], "loss");
    close(g1, ref.dz1, "dz1");
    close(g2, ref.dz2, "dz2");
    z1.dispose();
    z2.dispose();
    assertNoLeak(engine, before, "pair walk");
  }));

test("ntXent and negativeCosine: wide rows on CPU adapters normalise by workgroup past the loop budget", () =>
  cpuKernels(async (engine) => {
    // One invocation per row would walk 2·D·(splits + 1) iterations in the backward's normalisation (D = 12,000:
    // ~48,000; llvmpipe silently stops at 65,535, which once zeroed the gradient past dim ~8,300) and ~2.2·D in
    // the forward's (D = 40,000: ~88,000): these rows take a workgroup each instead.
    const before = engine.memory();
    const [n, d] = [2, 12_000];
    const a = randomArray(n * d, 21);
    const b = randomArray(n * d, 22);
    const z1 = engine.tensor(a, [n, d]);
    const z2 = engine.tensor(b, [n, d]);
    const [loss, [g1, g2]] = await lossAndGrads(() => ntXent(z1, z2, { temperature: 0.5 }), [z1, z2]);
    const ref = refNtXent(a, b, n, d, 0.5);
    close([loss], [ref.loss], "ntXent loss");
    close(g1, ref.dz1, "ntXent dz1");
    close(g2, ref.dz2, "ntXent dz2");
    z1.dispose();
    z2.dispose();
    const wide = 40_000;
    const pa = randomArray(n * wide, 23);
    const za = randomArray(n * wide, 24);
    const p = engine.tensor(pa, [n, wide]);
    const z = engine.tensor(za, [n, wide]);
    const [value, [gp]] = await lossAndGrads(() => negativeCosine(p, z), [p]);
    const refCos = refNegativeCosine(pa, za, n, wide);
    close([value], [refCos.loss], "negativeCosine loss");
    close(gp, refCos.dp, "negativeCosine dp");
    p.dispose();
    z.dispose();
    assertNoLeak(engine, before, "wide rows");
  }));

test("negativeCosine refuses rows too long for a workgroup's loops, before allocating (past 700k dims: zeros)", () =>
  bothKernels(async (engine) => {
    // A workgroup of 64 walks 2·(D / 64)·(splits + 2) iterations per invocation in the backward's normalisation:
    // from D ≈ 700,000 llvmpipe stopped it and the gradient came out 0 past that dim, silently.
    using p = engine.zeros([2, 600_000]);
    const before = engine.memory();
    await assertThrows(() => negativeCosine(p, p), RangeError, [
      "negativeCosine",
      "600000 dims",
      "loop budget",
    ]);
    assertNoLeak(engine, before);
  }));

test("ntXent: peak memory of forward + backward is O(N·D) without the logits cache, that plus the cache with it", async (engine) => {
  const n = 1024;
  const d = 16;
  // (2N)² logits of 4 bytes: 16 MiB, what the default logitCacheBytes holds.
  const matrix = (2 * n) ** 2 * 4;
  const bytes = engine.logitCacheBytes;
  try {
    for (const logitCacheBytes of [0, matrix]) {
      engine.logitCacheBytes = logitCacheBytes;
      const z1 = engine.randn([n, d], { seed: 1 });
      const z2 = engine.randn([n, d], { seed: 2 });
      const before = engine.memory();
      engine.resetPeak();
      const loss = ntXent(z1, z2, { temperature: 0.1 });
      const [g1, g2] = grad(loss, [z1, z2]);
      await g1.toArray();
      const peak = engine.memory().peakBytes - before.bytes;
      const ref = refNtXent(await z1.toArray(), await z2.toArray(), n, d, 0.1);
      close([(await take(loss))[0]], [ref.loss], "loss");
      close(await take(g1), ref.dz1, "dz1");
      close(await take(g2), ref.dz2, "dz2");
      // Live on top of the inputs: packed u, two gradients, split partials of the gradient (≤ 8 workgroups'
      // worth, and on CPU adapters walking pairs of tiles one more per row tile of an A window, ≤ 4), on CPU
      // adapters the backward's weights scratch (≤ 2 packed u) and O(N) stats: a small multiple of N·D·4 bytes;
      // with the cache the logits on top.
      const embedding = 2 * n * d * 4;
      const bound = 10 * embedding + logitCacheBytes;
      assert(peak <= bound, `cache ${logitCacheBytes}: peak ${peak} bytes over ${bound}`);
      if (logitCacheBytes === 0) assert(peak < matrix / 8, `peak ${peak} bytes not far below the N² matrix`);
      else assert(peak >= matrix, `peak ${peak} bytes: the logits were not cached`);
      z1.dispose();
      z2.dispose();
      assertNoLeak(engine, { tensors: before.tensors - 2, bytes: before.bytes - 2 * n * d * 4 }, "memory");
    }
  } finally {
    engine.logitCacheBytes = bytes;
  }
});

test("ntXent: logits that fit logitCacheBytes but not one storage binding are recomputed, not cached", () =>
  bothKernels(async (engine) => {
    // A 1 MiB binding stands in for the adapter's; (2 · 300)² logits are 1.44 MB, under the default 16 MiB cache.
    const [n, d] = [300, 8];
    const z1 = engine.randn([n, d], { seed: 3 });
    const z2 = engine.randn([n, d], { seed: 4 });
    const before = engine.memory();
    const loss = ntXent(z1, z2, { temperature: 0.2 });
    const [g1, g2] = grad(loss, [z1, z2]);
    const ref = refNtXent(await z1.toArray(), await z2.toArray(), n, d, 0.2);
    close([(await take(loss))[0]], [ref.loss], "loss");
    close(await take(g1), ref.dz1, "dz1");
    close(await take(g2), ref.dz2, "dz2");
    assertNoLeak(engine, before, "memory");
    z1.dispose();
    z2.dispose();
  }, { maxStorageBufferBindingSize: 2 ** 20 }));

test("contrastive losses: rows that pack past one storage binding are refused before anything is allocated", () =>
  bothKernels(async (engine) => {
    // A 1 MiB binding stands in for the adapter's: 2 × 1,100 rows of 128 dims pack into 1.13 MB.
    using z = engine.zeros([1100, 128]);
    using tall = engine.zeros([2100, 128]);
    using labels = engine.zeros([2100], "i32");
    const before = engine.memory();
    const over = ["maxStorageBufferBindingSize"];
    await assertThrows(() => ntXent(z, z), ShapeError, ["ntXent: 2200 rows of 128 dims", ...over]);
    await assertThrows(() => infoNCE(z, z, { temperature: 0.1, negatives: z }), ShapeError, [
      "2200 rows",
      ...over,
    ]);
    await assertThrows(() => supCon(tall, labels, { temperature: 0.1 }), ShapeError, [
      "supCon: 2100 rows",
      ...over,
    ]);
    await assertThrows(() => negativeCosine(tall, tall), ShapeError, ["negativeCosine: 2100 rows", ...over]);
    assertNoLeak(engine, before);
  }, { maxStorageBufferBindingSize: 2 ** 20 }));

test("contrastive losses: bad shapes, labels and temperatures throw and leak nothing", async (engine) => {
  const before = engine.memory();
  const a = engine.zeros([4, 8]);
  const b = engine.zeros([5, 8]);
  const c = engine.zeros([4, 7]);
  const flat = engine.zeros([8]);
  const labels = engine.zeros([4], "i32");
  const shortLabels = engine.zeros([3], "i32");
  const floatLabels = engine.zeros([4]);
  await assertThrows(() => ntXent(a, b), ShapeError, ["[4, 8]", "[5, 8]"]);
  await assertThrows(() => ntXent(a, c), ShapeError, ["[4, 8]", "[4, 7]"]);
  await assertThrows(() => ntXent(flat, flat), ShapeError, ["[8]", "2-D"]);
  await assertThrows(() => ntXent(a, a, { temperature: 0 }), RangeError, ["temperature"]);
  await assertThrows(() => ntXent(a, a, { temperature: -1 }), RangeError, ["temperature"]);
  await assertThrows(() => infoNCE(a, b, { temperature: 0.1 }), ShapeError, ["[4, 8]", "[5, 8]"]);
  await assertThrows(() => infoNCE(a, a, { temperature: 0.1, negatives: c }), ShapeError, [
    "[4, 7]",
    "[4, 8]",
  ]);
  await assertThrows(() => supCon(a, shortLabels, { temperature: 0.1 }), ShapeError, ["[3]", "[4, 8]"]);
  await assertThrows(() => supCon(a, floatLabels, { temperature: 0.1 }), ShapeError, ["f32", "[4, 8]"]);
  await assertThrows(() => supCon(flat, labels, { temperature: 0.1 }), ShapeError, ["[8]"]);
  const noLabels = null as unknown as Tensor;
  await assertThrows(() => supCon(a, noLabels, { temperature: 0.1 }), TypeError, [
    "supCon",
    "Tensor",
    "null",
  ]);
  await assertThrows(() => negativeCosine(a, b), ShapeError, ["[4, 8]", "[5, 8]"]);
  // One column tile of 40,000 dims overruns the per-invocation loop budget: thrown before packing the rows.
  {
    using wide = engine.zeros([2, 40_000]);
    using wideLabels = engine.zeros([2], "i32");
    const budget = ["embedding dim 40000", "loop budget"];
    await assertThrows(() => ntXent(wide, wide), RangeError, budget);
    await assertThrows(() => infoNCE(wide, wide, { temperature: 0.1 }), RangeError, budget);
    await assertThrows(() => supCon(wide, wideLabels, { temperature: 0.1 }), RangeError, budget);
  }
  {
    const gone = engine.zeros([4], "i32");
    gone.dispose();
    await assertThrows(() => supCon(a, gone, { temperature: 0.1 }), Error, [
      "supCon",
      "[4] i32",
      "after dispose",
    ]);
  }
  const loss = ntXent(a, a);
  loss.dispose();
  assert(/disposed/.test((await assertThrows(() => grad(loss, [a]), Error)).message), "grad after dispose");
  for (const t of [a, b, c, flat, labels, shortLabels, floatLabels]) t.dispose();
  assertNoLeak(engine, before, "errors");
});
