// Reverse-mode autograd. Every op attaches a GradNode to its output naming its inputs and a backward that
// maps the output's gradient to theirs with GPU ops. `grad` walks the graph from a scalar loss.
import { fmtShape, ShapeError } from "./errors.ts";
import { add } from "./elementwise.ts";
import type { Tensor } from "./tensor.ts";

let recording = true;

/** Attaches the backward of `op` to `out` (while recording) and returns `out`. */
export function record(
  out: Tensor,
  op: string,
  inputs: Tensor[],
  backward: (gradOutput: Tensor) => (Tensor | null)[],
): Tensor {
  if (recording) out.node = { op, inputs, backward };
  return out;
}

/** Runs `fn` without recording gradient nodes (backward passes run this way). */
export function noGrad<T>(fn: () => T): T {
  const was = recording;
  recording = false;
  try {
    return fn();
  } finally {
    recording = was;
  }
}

/**
 * Gradients of the scalar `loss` with respect to each of `inputs`, as new tensors the caller owns (zeros for an
 * input the loss does not depend on). Tensors that a backward needs must not be disposed before this call.
 */
export function grad(loss: Tensor, inputs: Tensor[]): Tensor[] {
  if (loss.size !== 1) throw new ShapeError(`grad: loss must have one element, got shape ${fmtShape(loss.shape)}`);
  if (loss.dtype !== "f32") throw new TypeError(`grad: loss must be f32, got ${loss.dtype}`);
  if (loss.disposed) throw new Error(`grad: loss ${fmtShape(loss.shape)} was disposed`);
  const engine = loss.engine;
  // Topological order by iterative depth-first search (graphs can be deeper than the call stack).
  const order: Tensor[] = [];
  const seen = new Set<Tensor>();
  const stack: [Tensor, boolean][] = [[loss, false]];
  const targets = new Set(inputs);
  while (stack.length) {
    const [t, done] = stack.pop()!;
    if (done) {
      order.push(t);
      continue;
    }
    if (seen.has(t)) continue;
    seen.add(t);
    stack.push([t, true]);
    for (const i of t.node?.inputs ?? []) if (!seen.has(i)) stack.push([i, false]);
  }
  return noGrad(() => {
    const grads = new Map<Tensor, Tensor>();
    grads.set(loss, engine.ones(loss.shape));
    for (let k = order.length - 1; k >= 0; k--) {
      const t = order[k];
      const g = grads.get(t);
      if (!g || !t.node) continue;
      const node = t.node;
      let inGrads: (Tensor | null)[];
      try {
        inGrads = node.backward(g);
      } catch (e) {
        for (const v of grads.values()) v.dispose();
        const m = (e as Error).message;
        throw m.includes("used after dispose")
          ? new Error(`grad: the backward of '${node.op}' needs a tensor that was disposed before grad(): ${m}`)
          : e;
      }
      if (!targets.has(t)) {
        g.dispose();
        grads.delete(t);
      }
      node.inputs.forEach((input, i) => {
        const gi = inGrads[i];
        if (!gi) return;
        const prev = grads.get(input);
        if (prev) {
          grads.set(input, accumulate(prev, gi));
        } else {
          grads.set(input, gi);
        }
      });
    }
    const result = inputs.map((x) => {
      const g = grads.get(x);
      grads.delete(x);
      return g ?? engine.zeros(x.shape);
    });
    // An input listed twice gets its own copy.
    for (let i = 0; i < result.length; i++) {
      if (result.indexOf(result[i]) !== i) result[i] = accumulate(engine.zeros(inputs[i].shape), result[i], false);
    }
    for (const v of grads.values()) if (!result.includes(v)) v.dispose();
    return result;
  });
}

function accumulate(a: Tensor, b: Tensor, disposeB = true): Tensor {
  const s = add(a, b);
  a.dispose();
  if (disposeB) b.dispose();
  return s;
}
