// k-nearest-neighbour evaluation of learned features: the weighted kNN classifier SSL papers report (Wu et al.,
// 2018), as lightly's knn_predict (shaders/knn.wgsl; CPU reference in src/ref/knn.ts).
import { noGrad } from "./autograd.ts";
import { type Binding, Params } from "./engine.ts";
import { checkF32, exp, mul } from "./elementwise.ts";
import { checkOptions, describeBadIndices, fmtShape, ShapeError } from "./errors.ts";
import { matmul } from "./matmul.ts";
import { normalize } from "./nn.ts";
import { concat, slice } from "./shape.ts";
import { assertLive, checkEngine, type Tensor } from "./tensor.ts";
import { MAX_K, topk } from "./topk.ts";

const WG = 64;

export interface KnnOptions {
  /** Number of classes C: labels lie in [0, C). */
  classes: number;
  /** Neighbours per query (default 200, as lightly's, or the bank's size if smaller). */
  k?: number;
  /** Softness of the vote weights exp(similarity / temperature) (default 0.1, as lightly's). */
  temperature?: number;
}

/**
 * Class scores [B, C] of a weighted kNN classifier: each query's k most cosine-similar rows of the bank vote
 * for their labels with weight exp(similarity / temperature). `features` [B, D] and `bank` [N, D] are
 * L2-normalised here; `bankLabels` are i32 [N]. argmax(scores, 1) is the prediction. Not differentiable.
 * A label outside [0, C) votes for nothing, and the next readback throws a RangeError naming it. A bank over
 * one storage binding runs in parts, and queries in chunks, whose similarities fit one.
 */
export function knnScores(features: Tensor, bank: Tensor, bankLabels: Tensor, options: KnnOptions): Tensor {
  checkOptions("knnScores", options, { classes: true, k: true, temperature: true }, true);
  const op = "knnScores";
  checkF32(op, features);
  checkF32(op, bank);
  assertLive(op, bankLabels);
  checkEngine(op, features, bank, bankLabels);
  const [n, d] = bank.shape;
  const shapes = `features ${fmtShape(features.shape)} and bank ${fmtShape(bank.shape)}`;
  if (features.shape.length !== 2 || bank.shape.length !== 2 || features.shape[1] !== d) {
    throw new ShapeError(`${op}: ${shapes} must be [B, D] and [N, D]`);
  }
  const labels = `${bankLabels.dtype} ${fmtShape(bankLabels.shape)}`;
  if (bankLabels.dtype !== "i32" || bankLabels.shape.length !== 1 || bankLabels.shape[0] !== n) {
    throw new ShapeError(`${op}: bankLabels must be i32 [${n}], one per bank row, got ${labels}`);
  }
  const { classes, temperature = 0.1 } = options;
  const k = options.k ?? Math.min(200, n);
  if (!Number.isInteger(classes) || classes < 1) {
    throw new RangeError(`${op}: classes must be a positive integer, got ${classes}`);
  }
  const maxK = Math.min(n, MAX_K);
  if (!Number.isInteger(k) || k < 1 || k > maxK) {
    throw new RangeError(
      `${op}: k must be an integer in [1, ${maxK}] (the bank's rows, at most ${MAX_K}), got ${k}`,
    );
  }
  if (!(temperature > 0 && temperature < Infinity)) {
    throw new RangeError(`${op}: temperature must be positive and finite, got ${temperature}`);
  }
  const e = features.engine;
  if (bankLabels.bytes > e.maxBinding) {
    throw new ShapeError(
      `${op}: bankLabels ${labels} take ${bankLabels.bytes} bytes, over maxStorageBufferBindingSize ` +
        `(${e.maxBinding} bytes)`,
    );
  }
  const queries = features.shape[0];
  // The bank in parts of rows that fit one binding, even in size (the first n mod parts one row longer) and each
  // of k rows or more (a query's k nearest are then among the parts' k nearest, merged by one more topk); the
  // queries in chunks whose similarities to one part, and whose parts·k candidates, fit one binding too.
  const maxRows = Math.floor(e.maxBinding / (4 * d));
  const parts = Math.ceil(n / maxRows);
  const [shortRows, longParts] = [Math.floor(n / parts), n % parts];
  const partStart = (c: number) => c * shortRows + Math.min(c, longParts);
  if (shortRows < k) {
    throw new ShapeError(
      `${op}: bank ${fmtShape(bank.shape)} splits into ${parts} parts to fit maxStorageBufferBindingSize ` +
        `(${e.maxBinding} bytes), of ${shortRows} rows or more, fewer than k ${k}`,
    );
  }
  const partRows = shortRows + (longParts ? 1 : 0);
  // A chunk's scores bind as a window of the whole [B, C], from an aligned offset up to align − 1 floats before it.
  const align = e.bindingAlignment / 4;
  const perQuery = Math.max(partRows, parts * k, classes);
  const chunk = Math.min(queries, Math.floor((e.maxBinding / 4 - align) / perQuery));
  if (chunk < 1) {
    throw new ShapeError(
      `${op}: one query's ${partRows} similarities per part of the bank, ${
        parts * k
      } candidates or ${classes} ` +
        `scores are over maxStorageBufferBindingSize (${e.maxBinding} bytes)`,
    );
  }
  return noGrad(() => {
    const scores = e.zeros([queries, classes]);
    const unitParts = Array.from(
      { length: parts },
      (_, c) => e.tidy(() => normalize(parts === 1 ? bank : slice(bank, [partStart(c)], [partStart(c + 1)]))),
    );
    const bad = e.dataCheck(describeBadIndices({
      op,
      noun: "neighbour label",
      outside: `[0, ${classes})`,
      place: "bank row",
      effect: "they vote for no class",
    }));
    for (let row0 = 0; row0 < queries; row0 += chunk) {
      const rows = Math.min(chunk, queries - row0);
      const [weight, neighbours, candidates] = e.tidy(() => {
        const f = normalize(rows === queries ? features : slice(features, [row0], [row0 + rows]));
        const tops = unitParts.map((u) => topk(matmul(f, u, { transB: true }), k));
        if (parts === 1) return [exp(mul(tops[0].values, 1 / temperature)), tops[0].indices, null];
        // Positions in the parts' candidates [rows, parts·k]; knn.wgsl maps them back to bank rows.
        const best = topk(concat(tops.map((t) => t.values), 1), k);
        return [exp(mul(best.values, 1 / temperature)), best.indices, concat(tops.map((t) => t.indices), 1)];
      });
      const first = row0 * classes;
      const base = Math.floor(first / align) * align;
      const size = Math.min(
        Math.ceil((first - base + rows * classes) / 4) * 16,
        scores.buffer.size - base * 4,
      );
      const window: Binding = rows === queries ? scores : { buffer: scores.buffer, offset: base * 4, size };
      e.run({
        op,
        shader: "knn",
        entry: candidates ? "voteParts" : "vote",
        constants: { WG },
        params: new Params().u32(rows, k, classes, first - base, shortRows, longParts, parts * k),
        buffers: [weight, neighbours, bankLabels, window, bad, candidates],
        workgroups: Math.ceil(rows / WG),
      });
      for (const t of [weight, neighbours, candidates]) t?.dispose();
    }
    for (const u of unitParts) u.dispose();
    return scores;
  });
}
