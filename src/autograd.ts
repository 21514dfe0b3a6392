// Reverse-mode autograd. Every op attaches a GradNode to its output naming its inputs and a backward that
// maps the output's gradient to theirs with GPU ops. `grad` walks the graph from a scalar loss.
import { fmtShape, ShapeError } from "./errors.ts";
import { add, mul } from "./elementwise.ts";
import { assertTensor, type Tensor } from "./tensor.ts";

let recording = true;
const seeds = new WeakSet<Tensor>();

/** True for the gradient `grad` starts from (exactly 1): a fused backward may hand over a gradient it saved. */
export function isSeed(g: Tensor): boolean {
  return seeds.has(g);
}

/** Whether ops record gradient nodes now (false inside `noGrad`); a fused op writes its gradient only then. */
export function isRecording(): boolean {
  return recording;
}

/**
 * Attaches the backward of `op` to `out` (while recording) and returns `out`. `saved` are tensors the op made
 * for its backward alone: they live as long as `out` (disposed with it, or at once when nothing is recorded).
 */
export function record(
  out: Tensor,
  op: string,
  inputs: Tensor[],
  backward: (gradOutput: Tensor, needs: boolean[]) => (Tensor | null)[],
  saved: Tensor[] = [],
): Tensor {
  if (recording) {
    out.node = {
      op,
      inputs,
      backward,
      saved,
      versions: inputs.map((t) => t.version),
      outVersion: out.version,
    };
  } else for (const t of saved) t.dispose();
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
 * Builds an op from other ops (a loss, attention); `keep` marks each intermediate, which the result then owns:
 * its backward reads them, so disposing the result disposes them (at once when no graph was recorded, inside
 * noGrad).
 */
export function composed(build: (keep: (t: Tensor) => Tensor) => Tensor): Tensor {
  const saved: Tensor[] = [];
  let out: Tensor;
  try {
    out = build((t) => {
      saved.push(t);
      return t;
    });
  } catch (e) {
    for (const t of saved) t.dispose();
    throw e;
  }
  if (!out.node) {
    for (const t of saved) t.dispose();
    return out;
  }
  const dispose = out.dispose.bind(out);
  out.dispose = () => {
    for (const t of saved) t.dispose();
    dispose();
  };
  return out;
}

/**
 * Gradients of the scalar `loss` with respect to each of `inputs`, as new tensors the caller owns (zeros for an
 * input the loss does not depend on). Tensors that a backward needs must not be disposed before this call, nor
 * written in place (an optimiser step): that throws, as torch's does. Update parameters under `noGrad` (as
 * torch.no_grad), or each step's graph chains onto the last. A loss no op recorded (made under noGrad) throws,
 * as torch's does, rather than give zeros. The gradients record no graph: no double backward.
 */
export function grad(loss: Tensor, inputs: Tensor[]): Tensor[] {
  if (!Array.isArray(inputs)) {
    throw new TypeError("grad: inputs must be an array of tensors, e.g. grad(loss, [w])");
  }
  for (const t of [loss, ...inputs]) assertTensor("grad", t);
  if (loss.size !== 1) {
    throw new ShapeError(
      `grad: loss must have one element, got shape ${
        fmtShape(loss.shape)
      } (reduce it first, e.g. mean(loss))`,
    );
  }
  if (loss.dtype !== "f32") throw new TypeError(`grad: loss must be f32, got ${loss.dtype}`);
  if (loss.disposed) throw new Error(`grad: loss ${fmtShape(loss.shape)} was disposed`);
  if (!loss.node && !inputs.includes(loss)) {
    throw new Error("grad: no op recorded the loss (was it made under noGrad?), so no input reaches it");
  }
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
  // Only nodes with a path to a requested input need a backward.
  const leads = new Set<Tensor>();
  for (const t of order) if (targets.has(t) || t.node?.inputs.some((i) => leads.has(i))) leads.add(t);
  // A gradient from an earlier grad() records no graph: an input reached only through one would get zeros.
  const unreached = inputs.find((x) => !leads.has(x));
  if (unreached && order.some((t) => gradients.get(t)?.has(unreached))) {
    throw new Error(
      `grad: the loss reaches input ${fmtShape(unreached.shape)} only through a gradient from an earlier ` +
        `grad(), which records no graph: there is no double backward (torch's create_graph)`,
    );
  }
  // tidy: every gradient but the results is disposed, and all of them where a backward throws.
  const results = noGrad(() =>
    engine.tidy(() => {
      const grads = new Map<Tensor, Tensor>();
      const seed = engine.ones(loss.shape);
      seeds.add(seed);
      grads.set(loss, seed);
      for (let k = order.length - 1; k >= 0; k--) {
        const t = order[k];
        const g = grads.get(t);
        const node = t.node;
        const needs = node?.inputs.map((i) => leads.has(i)) ?? [];
        if (!g || !node || !needs.includes(true)) continue;
        // The backward reads its inputs and may read its output (exp, softmax): neither may have changed.
        const versions = [...node.versions, node.outVersion];
        const changed = [...node.inputs, t].find((x, i) => x.version !== versions[i]);
        if (changed) {
          throw new Error(
            `grad: ${changed === t ? "the output" : "an input"} ${
              fmtShape(changed.shape)
            } of '${node.op}' was ` +
              `written in place (an optimiser step, enqueue, a running statistic) after the op ran; take grad ` +
              `before the update`,
          );
        }
        let inGrads: (Tensor | null)[];
        try {
          inGrads = node.backward(g, needs);
        } catch (e) {
          const m = (e as Error).message;
          throw m.includes("used after dispose")
            ? new Error(
              `grad: the backward of '${node.op}' needs a tensor that was disposed before grad() (call grad ` +
                `inside the engine.tidy that made the loss): ${m}`,
            )
            : e;
        }
        for (const gi of inGrads) if (gi) engine.adopt(gi);
        if (!targets.has(t)) {
          g.dispose();
          grads.delete(t);
        }
        node.inputs.forEach((input, i) => {
          const gi = inGrads[i];
          if (!gi) return;
          if (!leads.has(input)) return gi.dispose();
          const prev = grads.get(input);
          grads.set(input, prev ? accumulate(prev, gi) : gi);
        });
      }
      // An input listed twice gets its own copy, so every returned tensor is the caller's to dispose.
      return inputs.map((x, i) => {
        const g = grads.get(x);
        if (!g) return engine.zeros(x.shape);
        return inputs.indexOf(x) === i ? g : mul(g, 1);
      });
    })
  );
  results.forEach((g) => gradients.set(g, seen));
  return results;
}

/** The tensors grad() returned, each with the graph it came from: computed under noGrad, they record none. */
const gradients = new WeakMap<Tensor, Set<Tensor>>();

function accumulate(a: Tensor, b: Tensor): Tensor {
  const s = add(a, b);
  a.dispose();
  b.dispose();
  return s;
}
