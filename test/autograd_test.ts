import {
  add,
  crossEntropy,
  emaUpdate,
  exp,
  grad,
  matmul,
  mul,
  noGrad,
  relu,
  sgd,
  ShapeError,
  sub,
  sum,
} from "../src/mod.ts";
import type { Engine, Tensor } from "../src/mod.ts";
import { test } from "./harness.ts";
import {
  assert,
  assertClose,
  assertEquals,
  assertNoLeak,
  assertThrows,
  finiteDifference,
  randomArray,
  take,
} from "./util.ts";

/** Float64 forward and backward of relu(x·W1 + b1)·W2 + b2 → cross-entropy, written out by hand. */
function refMlp(
  x: Float32Array,
  w1: Float32Array,
  b1: Float32Array,
  w2: Float32Array,
  b2: Float32Array,
  labels: number[],
  d: number,
  h: number,
  c: number,
) {
  const n = labels.length;
  const pre = new Float64Array(n * h);
  const act = new Float64Array(n * h);
  const logits = new Float64Array(n * c);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < h; j++) {
      let s = b1[j];
      for (let k = 0; k < d; k++) s += x[i * d + k] * w1[k * h + j];
      pre[i * h + j] = s;
      act[i * h + j] = Math.max(s, 0);
    }
    for (let j = 0; j < c; j++) {
      let s = b2[j];
      for (let k = 0; k < h; k++) s += act[i * h + k] * w2[k * c + j];
      logits[i * c + j] = s;
    }
  }
  let loss = 0;
  const dLogits = new Float64Array(n * c);
  for (let i = 0; i < n; i++) {
    const row = logits.subarray(i * c, i * c + c);
    const m = Math.max(...row);
    const z = row.reduce((s, v) => s + Math.exp(v - m), 0);
    loss += (Math.log(z) + m - row[labels[i]]) / n;
    for (let j = 0; j < c; j++) {
      dLogits[i * c + j] = (Math.exp(row[j] - m) / z - (j === labels[i] ? 1 : 0)) / n;
    }
  }
  const dw2 = new Float64Array(h * c);
  const db2 = new Float64Array(c);
  const dPre = new Float64Array(n * h);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < c; j++) {
      db2[j] += dLogits[i * c + j];
      for (let k = 0; k < h; k++) dw2[k * c + j] += act[i * h + k] * dLogits[i * c + j];
    }
    for (let k = 0; k < h; k++) {
      let s = 0;
      for (let j = 0; j < c; j++) s += dLogits[i * c + j] * w2[k * c + j];
      dPre[i * h + k] = pre[i * h + k] > 0 ? s : 0;
    }
  }
  const dw1 = new Float64Array(d * h);
  const db1 = new Float64Array(h);
  for (let i = 0; i < n; i++) {
    for (let k = 0; k < h; k++) {
      db1[k] += dPre[i * h + k];
      for (let q = 0; q < d; q++) dw1[q * h + k] += x[i * d + q] * dPre[i * h + k];
    }
  }
  return { loss, grads: [dw1, db1, dw2, db2] };
}

function mlpLoss(x: Tensor, params: Tensor[], labels: Tensor): { loss: Tensor; temps: Tensor[] } {
  const [w1, b1, w2, b2] = params;
  const a = matmul(x, w1);
  const pre = add(a, b1);
  const act = relu(pre);
  const m = matmul(act, w2);
  const logits = add(m, b2);
  return { loss: crossEntropy(logits, labels), temps: [a, pre, act, m, logits] };
}

function mlpParams(engine: Engine, d: number, h: number, c: number, seed: number): Tensor[] {
  return [
    engine.tensor(randomArray(d * h, seed, -0.5, 0.5), [d, h]),
    engine.tensor(randomArray(h, seed + 1, -0.1, 0.1), [h]),
    engine.tensor(randomArray(h * c, seed + 2, -0.5, 0.5), [h, c]),
    engine.tensor(randomArray(c, seed + 3, -0.1, 0.1), [c]),
  ];
}

test("an MLP's gradients match the float64 reference and finite differences", async (engine) => {
  const before = engine.memory();
  const [n, d, h, c] = [13, 7, 17, 5];
  const xData = randomArray(n * d, 1);
  const labelData = Array.from({ length: n }, (_, i) => (i * 3) % c);
  const params = mlpParams(engine, d, h, c, 10);
  const x = engine.tensor(xData, [n, d]);
  const labels = engine.tensor(Int32Array.from(labelData), [n]);
  const host = await Promise.all(params.map((p) => p.toArray())) as Float32Array[];
  const ref = refMlp(xData, host[0], host[1], host[2], host[3], labelData, d, h, c);
  const { loss, temps } = mlpLoss(x, params, labels);
  const grads = grad(loss, params);
  // f32 sums of ≤ 17 products feeding softmax: values ~1, so rtol 1e-5 with atol 1e-6 for tiny gradients.
  assertClose(await loss.toArray(), [ref.loss], { rtol: 1e-5, atol: 1e-6 }, "loss");
  for (let i = 0; i < 4; i++) {
    assertClose(await take(grads[i]), ref.grads[i], { rtol: 1e-4, atol: 1e-6 }, `grad ${i}`);
  }
  // Finite differences of the whole pipeline for a few entries of W1 (h = 1e-2, f32: ~1e-3 agreement).
  const f = async (w: Float32Array) => {
    using w1 = engine.tensor(w, [d, h]);
    const r = mlpLoss(x, [w1, ...params.slice(1)], labels);
    r.temps.forEach((t) => t.dispose());
    return (await take(r.loss))[0];
  };
  const idx = [0, 5, 50, 118];
  assertClose(idx.map((i) => ref.grads[0][i]), await finiteDifference(f, host[0], idx), {
    rtol: 2e-2,
    atol: 2e-3,
  }, "fd");
  [loss, ...temps, ...params, x, labels].forEach((t) => t.dispose());
  assertNoLeak(engine, before);
});

test("1,000 forward+backward steps leave memory where it started", async (engine) => {
  const [n, d, h, c] = [32, 16, 32, 10];
  const params = mlpParams(engine, d, h, c, 20);
  const x = engine.tensor(randomArray(n * d, 2), [n, d]);
  const labels = engine.tensor(Int32Array.from({ length: n }, (_, i) => i % c), [n]);
  const before = engine.memory();
  const first = mlpLoss(x, params, labels);
  const initial = (await first.loss.toArray())[0];
  [first.loss, ...first.temps].forEach((t) => t.dispose());
  for (let step = 0; step < 1000; step++) {
    const { loss, temps } = mlpLoss(x, params, labels);
    const grads = grad(loss, params);
    noGrad(() => {
      for (let i = 0; i < params.length; i++) {
        const scaled = mul(grads[i], 0.1);
        const next = sub(params[i], scaled);
        params[i].dispose();
        scaled.dispose();
        grads[i].dispose();
        params[i] = next;
      }
    });
    [loss, ...temps].forEach((t) => t.dispose());
  }
  assertNoLeak(engine, before, "after 1,000 steps");
  const last = mlpLoss(x, params, labels);
  const final = (await last.loss.toArray())[0];
  [last.loss, ...last.temps, ...params, x, labels].forEach((t) => t.dispose());
  // Training must have done something: the loss falls (a test that cannot fail is a defect).
  if (!(final < initial * 0.5)) throw new Error(`loss went from ${initial} to ${final}`);
});

test("grad makes only the gradients asked for: matmul and mul skip an operand not asked for", async (engine) => {
  using x = engine.randn([8, 16], { seed: 1 });
  using w = engine.randn([16, 4], { seed: 2 });
  using v = engine.randn([8, 4], { seed: 3 });
  // The dispatches each backward records, by op: a gradient not asked for costs its product.
  const dispatched = (wrt: Tensor[]) => {
    const ops: string[] = [];
    const run = engine.run;
    engine.run = (k) => (ops.push(k.op), run.call(engine, k));
    try {
      engine.tidy(() => {
        const loss = sum(mul(matmul(x, w), v));
        ops.length = 0;
        grad(loss, wrt);
      });
    } finally {
      engine.run = run;
    }
    return (op: string) => ops.filter((o) => o === op).length;
  };
  const both = dispatched([x, w]);
  const weightOnly = dispatched([w]);
  assert(weightOnly("matmul") > 0 && weightOnly("matmul") < both("matmul"), "matmul made x's gradient too");
  // mul's operands: the product's gradient is needed (it leads to w), v's is not.
  assert(weightOnly("mul") < dispatched([w, v])("mul"), "mul made v's gradient too");
  const [gw, gwBoth] = engine.tidy(() => {
    const loss = sum(mul(matmul(x, w), v));
    return [grad(loss, [w])[0], grad(loss, [x, w])[1]];
  });
  assertClose(await take(gw), await take(gwBoth), { rtol: 0, atol: 0 }, "w's gradient alone, the same");
});

test("grad refuses a graph whose input was written in place since, and a gradient used for a double backward", async (engine) => {
  using w = engine.tensor([1, 2, 3]);
  using x = engine.tensor([1, 1, 1]);
  const before = engine.memory();
  // sgd writes w in place: mul's backward would read the new w and give x the wrong gradient, silently.
  const stale = engine.tidy(() => {
    const loss = sum(mul(w, x));
    sgd([w], { lr: 0.5 }).step(grad(loss, [w]));
    return loss;
  });
  await assertThrows(() => grad(stale, [x]), Error, ["'mul'", "written in place", "[3]"]);
  stale.dispose();
  // A graph recorded after the step takes the new w.
  const [gx] = engine.tidy(() => grad(sum(mul(w, x)), [x]));
  assertClose(await take(gx), [0.5, 1.5, 2.5], { rtol: 0, atol: 0 }, "w after the step: w − 0.5·x");
  // d/dx Σ (dL/dx)² with L = Σ x³: the gradient records no graph, so x is unreached; zeros were returned.
  await assertThrows(
    () =>
      engine.tidy(() => {
        const [g] = grad(sum(mul(mul(x, x), x)), [x]);
        return grad(sum(mul(g, g)), [x]);
      }),
    Error,
    ["earlier grad()", "double backward"],
  );
  // exp's backward reads its output: writing that in place after the op is refused as well.
  const h = engine.tidy(() => {
    const h = exp(x);
    emaUpdate([h], [engine.zeros([3])], { momentum: 0.5 });
    return h;
  });
  await assertThrows(() => grad(h, [x]), ShapeError, ["one element"]);
  await assertThrows(() => engine.tidy(() => grad(sum(mul(h, 1)), [x])), Error, ["the output", "'exp'"]);
  h.dispose();
  // A gradient used as a constant beside an input the loss does not use: that input gets zeros, as any.
  const [gw2, gUnused] = engine.tidy(() => {
    const [gw] = grad(sum(mul(w, x)), [w]);
    return grad(sum(mul(w, gw)), [w, engine.ones([2])]);
  });
  assertClose(await take(gw2), [1, 1, 1], { rtol: 0, atol: 0 }, "d/dw Σ w·(dL/dw)");
  assertClose(await take(gUnused), [0, 0], { rtol: 0, atol: 0 }, "an unused input");
  // A parameter an op made (recorded) and a step then changed: its own backward is not needed, so not checked.
  using made = noGrad(() => engine.tensor([1, 2, 3]));
  const param = mul(made, 1);
  const update = noGrad(() => mul(x, 1));
  sgd([param], { lr: 1 }).step([update]);
  update.dispose();
  const [gp] = engine.tidy(() => grad(sum(mul(param, x)), [param]));
  assertClose(await take(gp), [1, 1, 1], { rtol: 0, atol: 0 }, "a stepped parameter made by an op");
  param.dispose();
  assertNoLeak(engine, { tensors: before.tensors + 1, bytes: before.bytes + 12 });
});

test("grad: non-scalar loss, unreachable and repeated inputs, disposed intermediates", async (engine) => {
  const before = engine.memory();
  {
    using a = engine.tensor([1, 2, 3]);
    using b = engine.tensor([4, 5, 6]);
    using y = mul(a, a);
    await assertThrows(() => grad(y, [a]), ShapeError, ["[3]"]);
    using s = sum(y);
    const [ga, gb, ga2] = grad(s, [a, b, a]);
    assertClose(await take(ga), [2, 4, 6], { rtol: 0, atol: 0 }, "2a exactly");
    assertEquals([...(await take(gb))], [0, 0, 0], "b is unreachable: zeros");
    assertClose(await take(ga2), [2, 4, 6], { rtol: 0, atol: 0 }, "a listed twice gets its own copy");
    const [gy] = grad(s, [y]);
    assertEquals([...(await take(gy))], [1, 1, 1], "gradient with respect to an intermediate");
    const e = exp(a);
    using s2 = sum(e);
    e.dispose();
    await assertThrows(() => grad(s2, [a]), Error, ["exp", "disposed"]);
    // mul's backward makes x's gradient before it finds x disposed (w's needs it): that one is freed as well.
    const x = engine.tensor([1, 2, 3]);
    using p = mul(x, b);
    using s3 = sum(p);
    x.dispose();
    await assertThrows(() => grad(s3, [x, b]), Error, ["mul", "disposed before grad()"]);
    using unrecorded = noGrad(() => sum(b));
    await assertThrows(() => grad(unrecorded, [b]), Error, ["no op recorded the loss", "noGrad"]);
  }
  assertNoLeak(engine, before);
});
