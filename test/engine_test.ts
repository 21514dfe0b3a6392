import {
  add,
  concat,
  DeviceError,
  DeviceLostError,
  dropout,
  type DType,
  embedding,
  exp,
  grad,
  init,
  KernelError,
  knnScores,
  lars,
  matmul,
  mse,
  mul,
  ntXent,
  Params,
  randomResizedCrop,
  ShapeError,
  slice,
  sum,
  Tensor,
  topk,
  transpose,
} from "../src/mod.ts";
import { refBinary, refUnary } from "../src/ref/elementwise.ts";
import { refMatmul } from "../src/ref/matmul.ts";
import { refLarsStep } from "../src/ref/optim.ts";
import { refKnnScores } from "../src/ref/knn.ts";
import { refTopk } from "../src/ref/topk.ts";
import { philox, refDropout, refRand, refRandn, seedKey, uniformFromBits } from "../src/ref/random.ts";
import { refLoss } from "../src/ref/reconstruction.ts";
import { refSum } from "../src/ref/reduce.ts";
import { refSlice, refTranspose } from "../src/ref/shape.ts";
import { bothKernels, test, twoEngines } from "./harness.ts";
import { assert, assertClose, assertEquals, assertNoLeak, assertThrows, randomArray, take } from "./util.ts";

const EXACT = { rtol: 0, atol: 0 };

test("tensors round-trip every dtype and report shape, dtype, size", async (engine) => {
  const before = engine.memory();
  {
    using f = engine.tensor([1.5, -2, 3], [3, 1]);
    assertEquals([f.shape, f.dtype, f.size], [[3, 1], "f32", 3]);
    assertEquals([...(await f.toArray())], [1.5, -2, 3]);
    using i = engine.tensor(Int32Array.of(-7, 2 ** 31 - 1), [2]);
    assertEquals([i.dtype, ...(await i.toArray())], ["i32", -7, 2 ** 31 - 1]);
    using u = engine.tensor([4294967295, 0], [2], "u32");
    assertEquals([...(await u.toArray())], [4294967295, 0]);
    for (const dtype of ["f32", "i32", "u32"] as const) {
      using z = engine.zeros([2, 3], dtype);
      using o = engine.ones([5], dtype);
      using v = engine.full([1], 7, dtype);
      assertEquals([...(await z.toArray()), ...(await o.toArray()), ...(await v.toArray())], [
        0,
        0,
        0,
        0,
        0,
        0,
        1,
        1,
        1,
        1,
        1,
        7,
      ]);
    }
    assertEquals(engine.memory().tensors - before.tensors, 3);
  }
  assertNoLeak(engine, before);
});

test("nested rows give their shape, as torch.tensor's do", async (engine) => {
  using m = engine.tensor([[1, 2, 3], [4, 5, 6]]);
  assertEquals([m.shape, [...(await m.toArray())]], [[2, 3], [1, 2, 3, 4, 5, 6]]);
  using c = engine.tensor([[[1], [2]], [[3], [4]], [[5], [6]]], undefined, "i32");
  assertEquals([c.shape, c.dtype, [...(await c.toArray())]], [[3, 2, 1], "i32", [1, 2, 3, 4, 5, 6]]);
  // A shape that holds as many values reshapes them, as for flat data; one that does not is refused.
  using r = engine.tensor([[1, 2], [3, 4]], [4]);
  assertEquals([r.shape, [...(await r.toArray())]], [[4], [1, 2, 3, 4]]);
  await assertThrows(() => engine.tensor([[1, 2], [3, 4]], [3]), ShapeError, ["4 values", "[3]"]);
  await assertThrows(() => engine.tensor([[1, -1]], undefined, "u32"), RangeError, ["-1", "u32"]);
  // Typed arrays as rows, as torch.tensor takes a list of numpy arrays; a hole is named (it was skipped).
  using typed = engine.tensor([Float32Array.of(1, 2), Float32Array.of(3, 4)]);
  assertEquals([typed.shape, [...(await typed.toArray())]], [[2, 2], [1, 2, 3, 4]]);
  // deno-lint-ignore no-sparse-arrays
  const holed = [[1, 2], [, 4]] as number[][];
  await assertThrows(() => engine.tensor(holed, [4]), TypeError, ["data[1][0]", "undefined"]);
});

test("console.log shows a tensor's shape and dtype and the engine's adapter, not every device limit", (engine) => {
  // Deno's and Node's inspect hooks; Deno.inspect itself where the test runs in Deno (not in Chromium).
  const show = (x: object) => {
    const hook = (x as Record<symbol, () => string>)[Symbol.for("Deno.customInspect")];
    assertEquals(
      hook.call(x),
      (x as Record<symbol, () => string>)[Symbol.for("nodejs.util.inspect.custom")].call(x),
    );
    const deno = (globalThis as { Deno?: { inspect(v: unknown): string } }).Deno;
    if (deno) assertEquals(deno.inspect(x), hook.call(x));
    return hook.call(x);
  };
  const t = engine.tensor([[1, 2, 3], [4, 5, 6]], undefined, "i32");
  assertEquals(show(t), "Tensor([2, 3], i32)");
  assert(show(engine).startsWith(`Engine(${engine.adapterName}; `), show(engine));
  assert(show(engine).includes(`${engine.memory().tensors} tensors`), show(engine));
  t.dispose();
  assertEquals(show(t), "Tensor([2, 3], i32, disposed)");
});

test("memory() counts live tensors and freed buffers are reused", async (engine) => {
  const before = engine.memory();
  const a = engine.zeros([1000]);
  assertEquals(engine.memory().bytes - before.bytes, 4000);
  a.dispose();
  a.dispose(); // idempotent
  const pooled = engine.memory().pooledBytes;
  assert(pooled >= 4000, "the freed buffer went to the pool");
  const b = engine.zeros([999]); // same size class: served from the pool
  assert(engine.memory().pooledBytes < pooled, "a pooled buffer was reused");
  assertEquals([...(await take(b)).slice(0, 3)], [0, 0, 0]);
  assertNoLeak(engine, before);
});

test("ops batch into one submit; a readback flushes", async (engine) => {
  using x = engine.rand([64], { seed: 3 });
  await engine.sync();
  const start = engine.submits;
  let y = mul(x, 1);
  for (let i = 0; i < 100; i++) {
    const z = add(y, 1);
    y.dispose();
    y = z;
  }
  assertEquals(engine.submits, start, "no submit while recording");
  const got = await take(y);
  assertEquals(engine.submits, start + 1, "one submit for the readback");
  assertClose(got, Float64Array.from(await x.toArray(), (v) => v + 100), { rtol: 1e-6, atol: 1e-5 });
});

test("a batch that fills up inside an op keeps its data check: bad ids still throw, good ones still run", () =>
  bothKernels(async (engine) => {
    // batchSize 1: each dispatch after the first submits the batch before it (`first`'s), between an op's
    // dataCheck and its dispatch. Once that submit read the check before the kernel wrote it (no error), then
    // destroyed it under the dispatch still to come (the next batch, valid ids and all, dropped with a
    // KernelError).
    const rows = randomArray(16, 5);
    using table = engine.tensor(rows, [4, 4]);
    using bad = engine.tensor(new Int32Array([0, 7]), [2], "i32");
    using good = engine.tensor(new Int32Array([3, 0]), [2], "i32");
    await engine.sync();
    const before = engine.memory();
    const first = mul(table, 1);
    const wrong = embedding(bad, table);
    await assertThrows(() => take(wrong), RangeError, ["embedding: 1 id outside [0, 4)"]);
    const again = mul(table, 1);
    const right = embedding(good, table);
    const later = mul(table, 2);
    await new Promise((resolve) => setTimeout(resolve, 20)); // the event loop turns before the next submit
    assertEquals(Array.from(await take(right)), [...rows.slice(12, 16), ...rows.slice(0, 4)], "embedding");
    assertEquals(Array.from(await take(later)), Array.from(rows, (v) => v * 2), "the op after it");
    first.dispose();
    again.dispose();
    assertNoLeak(engine, before);
  }, { batchSize: 1 }));

test("tidy disposes everything but the result", async (engine) => {
  const before = engine.memory();
  using x = engine.ones([4]);
  const kept = engine.tidy(() => {
    const a = add(x, 1);
    const b = mul(a, a);
    return { out: add(b, 1) };
  });
  assertEquals(engine.memory().tensors - before.tensors, 2);
  assertEquals([...(await take(kept.out))], [5, 5, 5, 5]);
  // A throw inside frees what the function had made, and the nested scope's too.
  const made = engine.memory();
  await assertThrows(
    () =>
      engine.tidy(() => {
        add(x, 1);
        engine.tidy(() => {
          mul(x, 2);
          throw new RangeError("stop here");
        });
      }),
    RangeError,
    ["stop here"],
  );
  assertNoLeak(engine, made, "after a throw inside tidy");
  // An async fn would leave what it makes after its first await outside the scope: refused, its tensors freed.
  // The abandoned continuation then fails on y, freed here: that rejection must not end the process.
  const continued = async () => {
    const y = add(x, 1);
    await null;
    return mul(y, 2);
  };
  await assertThrows(() => engine.tidy(continued), TypeError, ["Promise", "synchronous"]);
  await new Promise((resolve) => setTimeout(resolve, 0));
  assertNoLeak(engine, made, "after an async fn");
  // A loss kept by tidy keeps what its backward saved (ntXent's packed rows): grad outside the tidy works.
  using z1 = engine.randn([6, 4], { seed: 1 });
  using z2 = engine.randn([6, 4], { seed: 2 });
  const withZ = engine.memory();
  const loss = engine.tidy(() => ntXent(z1, z2));
  const [g] = grad(loss, [z1]);
  const [inside] = engine.tidy(() => grad(ntXent(z1, z2), [z1]));
  assertClose(await take(g), await take(inside), EXACT, "grad outside the tidy, as inside");
  loss.dispose();
  assertNoLeak(engine, withZ, "the loss and what it saved");
  // What a chain's backward needs of its intermediates is not kept: the error says where to call grad.
  const chained = engine.tidy(() => sum(exp(mul(z1, 2))));
  await assertThrows(() => grad(chained, [z1]), Error, ["exp", "inside the engine.tidy"]);
  chained.dispose();
});

test("invalid shapes and sizes are clear errors", async (engine) => {
  const before = engine.memory();
  await assertThrows(() => engine.tensor([1, 2, 3], [2, 2]), ShapeError, ["3 values", "[2, 2]"]);
  await assertThrows(() => engine.zeros([0, 3]), ShapeError, ["empty", "[0, 3]"]);
  await assertThrows(() => engine.zeros([2, -1]), ShapeError, ["[2, -1]"]);
  await assertThrows(() => engine.zeros([65536, 65536]), ShapeError, ["maxBufferSize", "17179869184"]);
  await assertThrows(() => engine.rand([2], { seed: -1 }), RangeError, ["seed"]);
  // JavaScript callers have no type check: a forgotten await names itself, in an op, in tensor() and in grad.
  using x = engine.ones([2]);
  const pending = x.toArray() as unknown as Tensor;
  await assertThrows(() => add(pending, 1), TypeError, ["add", "Promise", "missing await"]);
  await assertThrows(() => matmul(x, pending), TypeError, ["matmul", "Promise"]);
  await assertThrows(() => engine.tensor(pending as unknown as number[], [2]), TypeError, [
    "tensor",
    "Promise",
  ]);
  await assertThrows(() => grad(pending, [x]), TypeError, ["grad", "Promise"]);
  await assertThrows(() => grad(x, [x]), ShapeError, ["one element", "mean(loss)"]);
  await assertThrows(() => grad(x, x as unknown as Tensor[]), TypeError, ["grad", "array", "[w]"]);
  await pending;
  assertNoLeak(engine, { tensors: before.tensors + 1, bytes: before.bytes + 8 });
});

test("host data that a dtype does not hold is refused, not wrapped, before anything is allocated", async (engine) => {
  const before = engine.memory();
  // Int32Array.from would wrap 3e9 to -1294967296 and turn NaN into 0: a wrong label or id, silently.
  await assertThrows(() => engine.tensor([1, 3e9], [2], "i32"), RangeError, ["3000000000", "at 1", "i32"]);
  await assertThrows(() => engine.tensor([0, NaN], [2], "i32"), RangeError, ["NaN", "i32"]);
  await assertThrows(() => engine.tensor([2, 1.5], [2], "i32"), RangeError, ["1.5", "i32"]);
  await assertThrows(() => engine.tensor(new Uint32Array([2 ** 31]), [1], "i32"), RangeError, ["2147483648"]);
  await assertThrows(() => engine.tensor([-1], [1], "u32"), RangeError, ["-1", "u32"]);
  await assertThrows(() => engine.full([2], 2 ** 31, "i32"), RangeError, ["2147483648", "i32"]);
  // A fill value left out, or a string, became NaN.
  await assertThrows(() => engine.full([2], undefined as never), TypeError, ["full", "number", "undefined"]);
  await assertThrows(() => engine.full([2], "1" as never), TypeError, ["full", "number", "string"]);
  await assertThrows(() => engine.full([2], -1, "u32"), RangeError, ["-1", "u32"]);
  // A tokenizer's int64 ids: Float32Array.from threw after the tensor was allocated.
  const ids = new BigInt64Array([1n, 2n]) as unknown as Int32Array;
  await assertThrows(() => engine.tensor(ids, [2], "i32"), TypeError, ["tensor", "numbers"]);
  // A plain array's other values became NaN or 0: strings from a CSV, ragged rows, a stray array.
  const parsed = [1, "2.5", null] as unknown as number[];
  await assertThrows(() => engine.tensor(parsed), TypeError, ["element 1", '"2.5"', "not a number"]);
  await assertThrows(() => engine.tensor([0, undefined] as unknown as number[]), TypeError, ["undefined"]);
  const bigIds = [1n, 2n] as unknown as number[];
  await assertThrows(() => engine.tensor(bigIds, [2], "i32"), TypeError, [
    "element 0",
    "1n",
    "Int32Array.from",
  ]);
  await assertThrows(() => engine.tensor([[1, 2], [3]]), ShapeError, [
    "ragged",
    "data[1] is an array of 1",
    "[2, 2]",
    "an array of 2",
  ]);
  await assertThrows(() => engine.tensor([[1, 2], 3]), ShapeError, ["ragged", "data[1] is 3"]);
  await assertThrows(() => engine.tensor([[[1], [2]], [[3], [4, 5]]]), ShapeError, ["data[1][1]"]);
  await assertThrows(() => engine.tensor([[1, "2"]] as unknown as number[][]), TypeError, [
    "data[0][1]",
    '"2"',
  ]);
  await assertThrows(() => engine.tensor([1, [2]] as unknown as number[]), TypeError, ["element 1", "[2]"]);
  const circular: unknown[] = [];
  circular.push(circular);
  await assertThrows(() => engine.tensor(circular as number[]), TypeError, ["circular"]);
  const inner: unknown[] = [1];
  const looped = [inner, [inner]];
  await assertThrows(() => engine.tensor(looped as number[][]), ShapeError, ["data[1][0]", "wants a number"]);
  await assertThrows(() => engine.tensor([Symbol("id")] as unknown as number[]), TypeError, ["Symbol(id)"]);
  const dtype = "float32" as DType;
  await assertThrows(() => engine.tensor([1.5], [1], dtype), TypeError, ["tensor", "float32"]);
  await assertThrows(() => engine.zeros([1], dtype), TypeError, ["full", "float32"]);
  await assertThrows(() => engine.empty([1], dtype), TypeError, ["empty", "float32"]);
  // Bytes are what images() unpacks: floats in [0, 1] were truncated to a black batch.
  const floats = new Float32Array(16) as unknown as Uint8Array;
  await assertThrows(() => engine.images(floats, { n: 1, height: 2, width: 2 }), TypeError, [
    "images",
    "Uint8Array",
  ]);
  // Integers that fit pass through exactly, the extremes included.
  assertEquals([...(await take(engine.tensor([-(2 ** 31), 2 ** 31 - 1, -0], [3], "i32")))], [
    -(2 ** 31),
    2 ** 31 - 1,
    0,
  ]);
  assertNoLeak(engine, before);
});

test("a tensor over maxStorageBufferBindingSize works where windowed, else names the limit", async (engine) => {
  const before = engine.memory();
  {
    // 40M f32 = 160 MB > 128 MiB binding limit on llvmpipe; smaller limits only make this stronger.
    const n = Math.floor(engine.maxBinding / 4) + 12_345_678;
    using x = engine.rand([n], { seed: 9 });
    using y = add(x, x); // same-shape elementwise ops split into windows
    const got = await y.toArray();
    for (const i of [0, n - 1, Math.floor(engine.maxBinding / 4), Math.floor(engine.maxBinding / 4) - 1]) {
      const ref = uniformFromBits(philox([i, 0, 0, 0], seedKey(9))[0]);
      assertClose([got[i]], [2 * ref], { rtol: 0, atol: 0 }, `element ${i} (doubling is exact)`);
    }
    // An optimiser step windows its parameter, gradient and state alike; LARS's norms sum partials over both
    // windows: w = 1 − 0.5·eta·(|w| / |g|)·g with |w|² = n and |g|² from the reduce op. g is x with its second
    // window scaled by 10, so that no mix-up of the windows' partial sums keeps |g| (uniform values would).
    const k = Math.floor(engine.maxBinding / 4);
    using head = slice(x, [0], [k]);
    using tail = slice(x, [k], [n]);
    using tail10 = mul(tail, 10);
    using g = concat([head, tail10]);
    using w = engine.ones([n]);
    using opt = lars([w], { lr: 0.5, momentum: 0, excludeBiasAndNorm: false });
    opt.step([g]);
    using squares = mul(g, g);
    const gNorm = Math.sqrt((await take(sum(squares)))[0]);
    const stepped = await w.toArray();
    for (const i of [0, n - 1, k, k - 1]) {
      const gi = (got[i] / 2) * (i < k ? 1 : 10);
      const expected = 1 - 0.5 * 1e-3 * (Math.sqrt(n) / gNorm) * gi;
      // f32 sums of 4e7 squares on two paths (~1e-6 relative each), then a few roundings.
      assertClose([stepped[i]], [expected], { rtol: 1e-5, atol: 0 }, `lars, windowed: element ${i}`);
    }
    using row = engine.ones([1, n]);
    using col = engine.ones([2, 1]);
    await assertThrows(() => add(row, col), ShapeError, [
      "maxStorageBufferBindingSize",
      `[1, ${n}]`,
      "[2, 1]",
    ]);
  }
  assertNoLeak(engine, before);
});

test("rand and randn draw the Philox reference's numbers and replay exactly", async (engine) => {
  const n = 4099;
  const u = await take(engine.rand([n], { seed: 2 ** 40 + 5 }));
  assertClose(u, refRand(n, 2 ** 40 + 5), { rtol: 0, atol: 0 }, "uniform is bit-exact (24-bit grid)");
  // Box-Muller in f32 with series log and cos (shaders/lib/philox.wgsl): ~1e-6 absolute against float64.
  const z = await take(engine.randn([n], { seed: 11 }));
  assertClose(z, refRandn(n, 11), { rtol: 1e-5, atol: 2e-6 });
  assertEquals([...(await take(engine.randn([n], { seed: 11 })))], [...z], "same seed, same bits");
  const other = await take(engine.randn([n], { seed: 12 }));
  assert(other.some((v, i) => v !== z[i]), "another seed differs");
  const mean = z.reduce((s, v) => s + v, 0) / n;
  const variance = z.reduce((s, v) => s + (v - mean) ** 2, 0) / n;
  // 4099 samples: the standard error of the mean is 0.016 and of the variance 0.022; 5 sigma bounds.
  assert(Math.abs(mean) < 0.08 && Math.abs(variance - 1) < 0.11, `randn mean ${mean}, variance ${variance}`);
  assert(u.every((v) => v >= 0 && v < 1), "uniform in [0, 1)");
});

test("WebGPU validation errors surface as KernelError naming the op", async (engine) => {
  using out = engine.zeros([4]);
  // A pipeline with an override constant the shader does not declare: a validation error.
  const invalid = (op: string) =>
    engine.run({
      op,
      shader: "random",
      constants: { NO_SUCH_CONSTANT: 1 },
      params: new Params().u32(4),
      buffers: [out],
      workgroups: 1,
    });
  invalid("badOp");
  await assertThrows(() => out.toArray(), KernelError, ["badOp"]);
  assertEquals([...(await take(add(out, 1)))].length, 4, "the engine keeps working");
  using fresh = engine.full([3], 2);
  assertEquals([...(await take(mul(fresh, 3)))], [6, 6, 6]);
  // An error that arrives while the caller awaits something else waits for the next sync (it is not an
  // unhandled rejection, which would end a Deno process).
  invalid("laterOp");
  engine.flush();
  await new Promise((resolve) => setTimeout(resolve, 200));
  await assertThrows(() => engine.sync(), KernelError, ["laterOp"]);
  await assertThrows(() => engine.profile(() => {}, 4000), RangeError, ["maxPasses", "4096", "4000"]);
});

test("a kernel binding another engine's tensor throws at the op, and the batch's other work survives", async () => {
  // The device's own validation error would drop the whole batch: an earlier op's result read back as zeros.
  const [mine, other] = await twoEngines();
  using x = mine.full([4], 2);
  using y = mul(x, 10);
  using foreign = other.zeros([4]);
  const kernel = { op: "foreignOp", shader: "random", params: new Params().u32(4), workgroups: 1 };
  await assertThrows(() => mine.run({ ...kernel, buffers: [foreign] }), Error, [
    "foreignOp",
    "[4]",
    "another engine",
  ]);
  assertEquals([...(await take(y))], [20, 20, 20, 20]);
});

test("a dispatch past the workgroup limits throws a ShapeError naming the limit, before any work", async (engine) => {
  using out = engine.zeros([4]);
  const max = engine.limits.maxComputeWorkgroupsPerDimension;
  const kernel = { op: "bigOp", shader: "random", params: new Params().u32(4), buffers: [out] };
  await assertThrows(
    () => engine.run({ ...kernel, workgroups: [max + 1, 1, 1] }),
    ShapeError,
    ["bigOp", `${max} per dimension`],
  );
  await assertThrows(() => engine.run({ ...kernel, workgroups: (max + 1) * max }), ShapeError, [
    "bigOp",
    `${max} × ${max}`,
  ]);
  assertEquals([...(await take(add(out, 1)))], [1, 1, 1, 1], "the engine keeps working");
});

test("device loss rejects pending work; init() again gives a working engine", async () => {
  const engine = await init();
  const x = engine.rand([1 << 16], { seed: 1 });
  const pending = x.toArray();
  engine.device.destroy();
  await assertThrows(() => pending, DeviceLostError, ["init()"]);
  await assertThrows(() => add(x, 1), DeviceLostError);
  const fresh = await init();
  const y = await take(add(fresh.ones([2]), 1));
  assertEquals([...y], [2, 2]);
  fresh.destroy();
  assert(x instanceof Tensor);
});

test("init without WebGPU, or without an adapter, throws a DeviceError saying how to get one", async () => {
  // navigator.gpu shadowed by an own property for the test, then restored.
  const withGpu = async (gpu: unknown, expected: string[]) => {
    Object.defineProperty(navigator, "gpu", { value: gpu, configurable: true });
    try {
      await assertThrows(() => init(), DeviceError, expected);
    } finally {
      delete (navigator as unknown as Record<string, unknown>).gpu;
    }
  };
  await withGpu(undefined, ["navigator.gpu is undefined", "--enable-unsafe-webgpu"]);
  await withGpu({ requestAdapter: () => Promise.resolve(null) }, ["found no adapter", "apt-get install"]);
  const engine = await init();
  assert(engine.adapterName.length > 0, "navigator.gpu is back");
  engine.destroy();
});

test("parallelWorkgroups, cpuKernels, logitCacheBytes: CPU adapters get 4 workgroups per thread and the CPU kernels", async () => {
  await assertThrows(() => init({ parallelWorkgroups: 0 }), RangeError, ["parallelWorkgroups", "0"]);
  await assertThrows(() => init({ parallelWorkgroups: 2.5 }), RangeError, ["parallelWorkgroups", "2.5"]);
  // 100 bytes passed, and the first op over it looped forever cutting windows of 0 elements (out of memory).
  for (const bytes of [100, 5000, NaN, -1]) {
    await assertThrows(() => init({ maxStorageBufferBindingSize: bytes }), RangeError, [
      "maxStorageBufferBindingSize",
      `${bytes}`,
    ]);
  }
  await assertThrows(() => init({ maxComputeWorkgroupsPerDimension: 0 }), RangeError, [
    "maxComputeWorkgroupsPerDimension",
    "0",
  ]);
  await assertThrows(() => init({ logitCacheBytes: -1 }), RangeError, ["logitCacheBytes", "-1"]);
  await assertThrows(() => init({ logitCacheBytes: NaN }), RangeError, ["logitCacheBytes", "NaN"]);
  const engine = await init();
  // Both runtimes here have CPU adapters (llvmpipe, SwiftShader); a GPU gets the other defaults.
  const cpu = /llvmpipe|lavapipe|swiftshader/i.test(engine.adapterName);
  assertEquals(engine.cpuKernels, cpu);
  assertEquals(engine.parallelWorkgroups, cpu ? 4 * (navigator.hardwareConcurrency || 1) : 256);
  assertEquals(engine.logitCacheBytes, 16 * 2 ** 20);
  await assertThrows(() => (engine.logitCacheBytes = -1), RangeError, ["logitCacheBytes", "-1"]);
  engine.logitCacheBytes = 0;
  assertEquals(engine.logitCacheBytes, 0);
  engine.destroy();
  const chosen = await init({ parallelWorkgroups: 3, cpuKernels: !cpu });
  assertEquals(chosen.parallelWorkgroups, 3);
  assertEquals(chosen.cpuKernels, !cpu);
  chosen.destroy();
});

test("zeros, ones and full write every element: awkward sizes, every dtype, tensors over one binding", () =>
  // Fills write whole vec4s, four an invocation on CPU adapters: sizes around a vec4, a run of four and a
  // workgroup's 4,096 elements, and 300,001 elements over a 1 MiB binding (two windows). Each fill goes into a
  // pooled buffer that held other values, so an element left unwritten shows.
  bothKernels(async (engine) => {
    const before = engine.memory();
    for (const n of [1, 3, 4, 5, 17, 4095, 4097, 300_001]) {
      for (const [dtype, value] of [["f32", -2.5], ["i32", -7], ["u32", 4e9]] as const) {
        engine.tensor(new Float32Array(n).fill(123), [n]).dispose();
        using t = engine.full([n], value, dtype);
        const got = await t.toArray();
        const wrong = got.findIndex((v) => v !== value);
        assert(wrong < 0, `full ${n} ${dtype}: element ${wrong} is ${got[wrong]}, not ${value}`);
      }
    }
    assertEquals([...await take(engine.zeros([5])), ...await take(engine.ones([3]))], [
      0,
      0,
      0,
      0,
      0,
      1,
      1,
      1,
    ]);
    assertNoLeak(engine, before);
  }, { maxStorageBufferBindingSize: 2 ** 20 }));

test("kernels rebuild their index from a grid laid over x and y (64 workgroups across)", async () => {
  // A kernel that takes 4 or 16 elements an invocation cannot pass 65,535 workgroups within a 128 MiB binding,
  // so the second grid row is reached here by laying dispatches over x and y past 64 workgroups. Each dispatch
  // below has 65 to 274 workgroups; a kernel that dropped wg.y would leave everything past the first 64 unwritten.
  const engine = await init({ maxComputeWorkgroupsPerDimension: 64 });
  try {
    const tol = { rtol: 2e-6, atol: 1e-6 }; // one f32 rounding (elementwise), exact for copies
    const n = 70_001; // 69 workgroups of 1,024 elements
    const x = randomArray(n, 1, -2, 2);
    using t = engine.tensor(x, [n]);
    assertClose(await take(exp(t)), refUnary("exp", x), tol, "exp (unary)");
    assertClose(await take(add(t, t)), refBinary("add", x, [n], x, [n]).data, tol, "add (binary)");
    using col = engine.tensor([0.5], [1]);
    assertClose(await take(mul(t, col)), refBinary("mul", x, [n], [0.5], [1]).data, tol, "mul (broadcast)");
    using rows = engine.tensor(x.slice(0, 70_000), [70_000 / 4, 4]);
    // 17,500 rows of 4: one part per row, 69 workgroups. Sums of 4 values in f32: one rounding each.
    const sums = refSum(x.slice(0, 70_000), [17_500, 4], [1]).data;
    assertClose(await take(sum(rows, 1)), sums, tol, "sum (reduce)");
    const m = randomArray(300 * 263, 2);
    using tm = engine.tensor(m, [300, 263]); // 74 workgroups of 4 elements an invocation
    const sliced = refSlice(m, [300, 263], [0, 0], [300, 250]);
    assertClose(await take(slice(tm, [0, 0], [300, 250])), sliced, EXACT, "strided copy");
    const o = randomArray(515 * 515, 7);
    using to = engine.tensor(o, [515, 515]); // 65 workgroups of 4×4 element blocks
    assertClose(await take(transpose(to)), refTranspose(o, [515, 515], [1, 0]), EXACT, "4×4 element blocks");
    const w = randomArray(1100 * 512, 3);
    using tw = engine.tensor(w, [1100, 512]); // 69 workgroups of 4 vec4s an invocation
    assertClose(
      await take(slice(tw, [0, 0], [1100, 256])),
      refSlice(w, [1100, 512], [0, 0], [1100, 256]),
      EXACT,
      "vec4 copy",
    );
    const v = randomArray(512 * 516, 4);
    using tv = engine.tensor(v, [512, 516]); // 65 workgroups of 4×4 blocks
    assertClose(await take(transpose(tv)), refTranspose(v, [512, 516], [1, 0]), EXACT, "4×4 block transpose");
    const a = randomArray(4160 * 4, 5);
    const b = randomArray(16, 6);
    using ta = engine.tensor(a, [4160, 4]);
    using tb = engine.tensor(b, [4, 4]);
    const product = refMatmul({ data: a, shape: [4160, 4] }, { data: b, shape: [4, 4] }).data;
    assertClose(await take(matmul(ta, tb)), product, tol, "matmul (65 to 260 tiles)");
    assertClose(await take(engine.rand([n], { seed: 3 })), refRand(n, 3), EXACT, "rand (69 workgroups)");
    // 74 workgroups of histogram and collect (4,096 elements each), 75 of rank (256 candidates each).
    const tall = randomArray(300 * 1001, 11);
    using tr = engine.tensor(tall, [300, 1001]);
    const top = topk(tr, 64);
    const want = refTopk(tall, [300, 1001], 64);
    assertClose(await take(top.indices), want.indices, EXACT, "topk indices");
    assertClose(await take(top.values), want.values, EXACT, "topk values");
    // 66 workgroups of knnScores' vote (64 queries each): 4,200 queries of 10 bank rows, 3 neighbours each.
    const queries = randomArray(4200 * 4, 12);
    const bank = randomArray(10 * 4, 13);
    const labels = Int32Array.from({ length: 10 }, (_, i) => i % 3);
    using tq = engine.tensor(queries, [4200, 4]);
    using tbank = engine.tensor(bank, [10, 4]);
    using tlabels = engine.tensor(labels, [10], "i32");
    const votes = refKnnScores(queries, bank, labels, [4200, 10, 4], 3, 3, 0.5);
    // As in knn_test.ts at t = 0.5 (random data: a near tie at the third neighbour would show as one vote).
    const scores = await take(knnScores(tq, tbank, tlabels, { classes: 3, k: 3, temperature: 0.5 }));
    assertClose(scores, votes, { rtol: 3e-5, atol: 0 }, "knnScores");
    // One f32 rounding of x · 2.
    assertClose(await take(dropout(t, { seed: 3 })), refDropout(x, 0.5, 3), tol, "dropout (69 workgroups)");
    // 74 workgroups of 4,096 elements (16 an invocation on a CPU adapter) or of 1,024.
    const filled = await take(engine.full([300_001], -2.5));
    assert(filled.every((v) => v === -2.5), "full (74 or 293 workgroups)");
    const big = 600_001; // 74 workgroups of 8,192 elements
    const [px, py] = [randomArray(big, 7), randomArray(big, 8)];
    using tp = engine.tensor(px, [big]);
    using tt = engine.tensor(py, [big]);
    const loss = mse(tp, tt);
    const [g] = grad(loss, [tp]);
    const ref = refLoss("mse", px, [big], py, [big]);
    // The mean: an f32 tree sum of 6e5 squares (1e-5 relative, as in reconstruction_test.ts).
    assertClose(await take(loss), ref.loss, { rtol: 1e-5, atol: 0 }, "mse (loss pass)");
    assertClose(await take(g), ref.grad, { rtol: 1e-5, atol: 1e-12 }, "mse (gradient)");
    const w0 = randomArray(n, 9);
    using param = engine.tensor(w0, [n]);
    using opt = lars([param], { lr: 0.5, momentum: 0, excludeBiasAndNorm: false }); // 69 workgroups of 256 vec4s
    opt.step([t]);
    const wRef = Float64Array.from(w0);
    refLarsStep(wRef, x, new Float64Array(n), {
      lr: 0.5,
      momentum: 0,
      weightDecay: 0,
      eta: 1e-3,
      adapt: true,
    });
    assertClose(await param.toArray(), wRef, { rtol: 1e-5, atol: 1e-6 }, "lars (optim_test.ts's bound)");
  } finally {
    engine.destroy();
  }
});

test("a misspelt or unknown option is a TypeError naming the option meant, where it silently kept the default", async (engine) => {
  using z = engine.randn([4, 8], { seed: 1 });
  using img = engine.rand([2, 3, 8, 8], { seed: 2 });
  const before = engine.memory();
  await assertThrows(() => ntXent(z, z, { temprature: 0.1 } as never), TypeError, [
    "ntXent",
    "'temprature'",
    "did you mean 'temperature'",
  ]);
  await assertThrows(() => lars([z], { lr: 0.1, weight_decay: 1e-6 } as never), TypeError, ["'weightDecay'"]);
  await assertThrows(() => sum(z, 0, { keepdims: true } as never), TypeError, ["sum", "'keepDims'"]);
  await assertThrows(() => randomResizedCrop(img, { size: 4, seeds: 3 } as never), TypeError, ["'seed'"]);
  await assertThrows(() => dropout(z, { p: 0.1, seed: 1, training: false } as never), TypeError, [
    "dropout",
    "'training'",
    "its options are p, seed",
  ]);
  await assertThrows(() => engine.rand([2], { sed: 1 } as never), TypeError, ["rand", "'seed'"]);
  await assertThrows(() => mse(z, z, null as never), TypeError, ["mse", "needs an options object", "null"]);
  await assertThrows(() => init({ cpuKernel: true } as never), TypeError, ["init", "'cpuKernels'"]);
  // The nearest name, not the first near one ('tranB' suggested transA); an inherited key is read, so checked.
  await assertThrows(() => matmul(z, z, { tranB: true } as never), TypeError, ["did you mean 'transB'"]);
  const inherited = Object.create({ temprature: 0.1 });
  await assertThrows(() => ntXent(z, z, inherited), TypeError, ["'temprature'", "'temperature'"]);
  // Options an op needs, left out: named, where it read a property of undefined.
  await assertThrows(() => lars([z], undefined as never), TypeError, [
    "lars",
    "needs an options object",
    "lr",
  ]);
  assertNoLeak(engine, before);
});
