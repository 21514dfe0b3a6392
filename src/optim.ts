// Optimisers: SGD, Adam, AdamW and LARS (Barlow Twins' and VICReg's form of SimCLR's optimiser), the EMA target
// update of BYOL and MoCo, and gradient clipping by the global norm. Each step updates the parameters in place
// on the GPU, one fused pass per parameter (LARS adds a pass for its two norms), recorded like any op: no
// readback, no submit (shaders/optim.wgsl; CPU reference in src/ref/optim.ts).
import { noGrad } from "./autograd.ts";
import { type Binding, Params, windows } from "./engine.ts";
import { add, checkF32, sqrt, square } from "./elementwise.ts";
import { checkOptions, fmtShape, ShapeError } from "./errors.ts";
import { sum } from "./reduce.ts";
import { sameShape, type Tensor } from "./tensor.ts";

const WG = 256;
/** vec4s per lars_norms invocation (shaders/optim.wgsl ITEMS). */
const ITEMS = 16;

/** What one dispatch's uniform carries (shaders/optim.wgsl Params); unset fields are 0. */
interface StepValues {
  firstStep?: boolean;
  lr?: number;
  weightDecay?: number;
  momentum?: number;
  dampening?: number;
  beta1?: number;
  beta2?: number;
  eps?: number;
  stepSize?: number;
  sqrtBc2?: number;
  eta?: number;
  /** axpby: w = a·w + b·g. */
  a?: number;
  b?: number;
}

// 1 − dampening, 1 − β1 and 1 − β2 go to the kernels worked out here in float64, as torch's Python does: in f32
// on the GPU, 1 − f32(0.999) is 1.3e-5 off (1.7e-4 at 0.9999), which biased Adam's first steps by as much.
function stepParams(count: number, partBase: number, v: StepValues): Params {
  const [beta1, beta2] = [v.beta1 ?? 0, v.beta2 ?? 0];
  return new Params()
    .u32(count, partBase, v.firstStep ? 1 : 0)
    .f32(
      v.lr ?? 0,
      v.weightDecay ?? 0,
      v.momentum ?? 0,
      1 - (v.dampening ?? 0),
      beta1,
      beta2,
      1 - beta1,
      1 - beta2,
    )
    .f32(v.eps ?? 0, v.stepSize ?? 0, v.sqrtBc2 ?? 1, v.eta ?? 0, v.a ?? 0, v.b ?? 0);
}

/**
 * One dispatch of `entry` per window of w. `others` (the gradient, the state) have w's shape, so they split into
 * the same windows; `extra` bindings follow them as they are (null for one the entry does not use).
 */
function dispatchStep(
  op: string,
  entry: string,
  constants: Record<string, number>,
  w: Tensor,
  others: Tensor[],
  values: StepValues,
  extra: (Binding | null)[] = [],
): void {
  w.modified();
  const split = others.map(windows);
  windows(w).forEach((win, k) => {
    w.engine.run({
      op,
      shader: "optim",
      entry,
      constants: { WG, ...constants },
      params: stepParams(win.count, 0, values),
      buffers: [win.binding, ...split.map((s) => s[k].binding), ...extra],
      workgroups: Math.ceil(win.count / 4 / WG),
    });
  });
}

/** (Σ w², Σ d²), d = g + wd·w, as an f32 [2] tensor: partial sums per invocation, then the reduce op. */
function larsNorms(op: string, w: Tensor, g: Tensor, weightDecay: number): Tensor {
  const parts = windows(w).map((win) => Math.ceil(win.count / (4 * ITEMS)));
  const partials = w.engine.empty([parts.reduce((a, b) => a + b, 0), 2]);
  const gw = windows(g);
  let base = 0;
  windows(w).forEach((win, k) => {
    w.engine.run({
      op,
      shader: "optim",
      entry: "lars_norms",
      constants: { WG },
      params: stepParams(win.count, base, { weightDecay }),
      buffers: [win.binding, gw[k].binding, null, null, partials],
      workgroups: Math.ceil(parts[k] / WG),
    });
    base += parts[k];
  });
  const norms = sum(partials, 0);
  partials.dispose();
  return norms;
}

/** A RangeError naming `op`'s option unless `value` is a finite number in [lo, hi] (or [lo, hi) with `open`). */
function checkRange(
  op: string,
  name: string,
  value: number,
  lo: number,
  hi = Infinity,
  open = false,
): number {
  if (!(Number.isFinite(value) && value >= lo && (open ? value < hi : value <= hi))) {
    const range = hi === Infinity ? `≥ ${lo}` : `in [${lo}, ${hi}${open ? ")" : "]"}`;
    throw new RangeError(`${op}: ${name} must be a finite number ${range}, got ${value}`);
  }
  return value;
}

/** Throws unless `params` are distinct live f32 tensors of one engine. */
function checkParams(op: string, params: readonly Tensor[], what = "parameter"): void {
  if (params.length === 0) throw new RangeError(`${op}: no ${what}s given`);
  params.forEach((p, i) => {
    checkF32(`${op}: ${what} ${i}`, p);
    if (p.engine !== params[0].engine) throw new Error(`${op}: ${what}s belong to different engines`);
    if (params.indexOf(p) !== i) throw new Error(`${op}: ${what} ${i} is ${what} ${params.indexOf(p)} again`);
  });
}

/** Throws unless `grads` pair with `params` one to one: live f32 tensors of the same shapes, none a parameter. */
function checkPairs(
  op: string,
  params: readonly Tensor[],
  grads: readonly Tensor[],
  what = "gradient",
  paramWhat = "parameter",
): void {
  if (grads.length !== params.length) {
    throw new RangeError(`${op}: ${grads.length} ${what}s for ${params.length} ${paramWhat}s`);
  }
  grads.forEach((g, i) => {
    checkF32(`${op}: ${what} ${i}`, g);
    if (!sameShape(g.shape, params[i].shape)) {
      throw new ShapeError(
        `${op}: ${what} ${i} has shape ${fmtShape(g.shape)}, ${paramWhat} ${i} ${fmtShape(params[i].shape)}`,
      );
    }
    if (g.engine !== params[i].engine) throw new Error(`${op}: ${what} ${i} belongs to another engine`);
    if (params.includes(g)) throw new Error(`${op}: ${what} ${i} is a ${paramWhat} being updated`);
  });
}

/**
 * Updates parameters in place from their gradients, like a torch.optim optimiser. The state (momentum
 * buffers, moments) is allocated when the optimiser is made, so make it outside `engine.tidy`; `dispose()`
 * frees it. Call `step` after `grad()` has run (a backward still to run would see the updated values).
 */
export abstract class Optimizer {
  /** The learning rate of the next step (change it for a schedule). */
  lr: number;
  readonly params: readonly Tensor[];
  #steps = 0;
  #state: Tensor[][];
  #disposed = false;

  protected constructor(readonly op: string, params: readonly Tensor[], lr: number, stateTensors: number) {
    checkParams(op, params);
    this.lr = checkRange(op, "lr", lr, 0);
    this.params = [...params];
    this.#state = this.params.map((p) => Array.from({ length: stateTensors }, () => p.engine.zeros(p.shape)));
  }

  /** Steps taken so far. */
  get steps(): number {
    return this.#steps;
  }

  /** Updates every parameter from its gradient (the same order and shapes as the parameters). */
  step(grads: readonly Tensor[]): void {
    if (this.#disposed) throw new Error(`${this.op}: optimiser used after dispose`);
    checkRange(this.op, "lr", this.lr, 0);
    checkParams(this.op, this.params);
    checkPairs(this.op, this.params, grads);
    if (this.#state.some((s) => s.some((t) => t.disposed))) {
      throw new Error(`${this.op}: the optimiser's state was disposed (was it made inside engine.tidy?)`);
    }
    this.#steps++;
    noGrad(() => this.params.forEach((p, i) => this.update(p, grads[i], this.#state[i], this.#steps)));
  }

  /** Frees the optimiser's state; the parameters stay. */
  dispose(): void {
    if (this.#disposed) return;
    this.#disposed = true;
    for (const s of this.#state) for (const t of s) t.dispose();
  }

  [Symbol.dispose](): void {
    this.dispose();
  }

  /** Records the update of parameter w from gradient g at step t (from 1). */
  protected abstract update(w: Tensor, g: Tensor, state: Tensor[], t: number): void;
}

export interface SgdOptions {
  lr: number;
  /** Default 0: plain SGD, no buffer. */
  momentum?: number;
  /** Default 0. */
  dampening?: number;
  /** L2 penalty added to the gradient (default 0). */
  weightDecay?: number;
  /** Nesterov momentum (needs momentum > 0 and no dampening, as in PyTorch). */
  nesterov?: boolean;
}

class Sgd extends Optimizer {
  readonly momentum: number;
  readonly dampening: number;
  readonly weightDecay: number;
  readonly nesterov: boolean;

  constructor(params: readonly Tensor[], o: SgdOptions) {
    const momentum = checkRange("sgd", "momentum", o.momentum ?? 0, 0);
    const dampening = checkRange("sgd", "dampening", o.dampening ?? 0, 0, 1);
    const weightDecay = checkRange("sgd", "weightDecay", o.weightDecay ?? 0, 0);
    const nesterov = o.nesterov ?? false;
    if (nesterov && !(momentum > 0 && dampening === 0)) {
      throw new RangeError("sgd: nesterov needs momentum > 0 and dampening 0");
    }
    super("sgd", params, o.lr, momentum > 0 ? 1 : 0);
    this.momentum = momentum;
    this.dampening = dampening;
    this.weightDecay = weightDecay;
    this.nesterov = nesterov;
  }

  protected update(w: Tensor, g: Tensor, state: Tensor[], t: number): void {
    if (this.momentum === 0) {
      return dispatchStep(this.op, "axpby", {}, w, [g], { a: 1 - this.lr * this.weightDecay, b: -this.lr });
    }
    dispatchStep(this.op, "sgd", { NESTEROV: this.nesterov ? 1 : 0 }, w, [g, state[0]], {
      firstStep: t === 1,
      lr: this.lr,
      weightDecay: this.weightDecay,
      momentum: this.momentum,
      dampening: this.dampening,
    });
  }
}

/** Stochastic gradient descent with optional momentum, dampening, Nesterov and L2 weight decay (torch.optim.SGD). */
export function sgd(params: readonly Tensor[], options: SgdOptions): Optimizer {
  checkOptions("sgd", options, {
    lr: true,
    momentum: true,
    dampening: true,
    weightDecay: true,
    nesterov: true,
  }, true);
  return new Sgd(params, options);
}

export interface AdamOptions {
  /** Default 1e-3. */
  lr?: number;
  /** Default [0.9, 0.999]. */
  betas?: readonly [number, number];
  /** Default 1e-8. */
  eps?: number;
  /** Adam: an L2 term added to the gradient (default 0). AdamW: decoupled decay of the weights (default 0.01). */
  weightDecay?: number;
}

class Adam extends Optimizer {
  readonly betas: readonly [number, number];
  readonly eps: number;
  readonly weightDecay: number;

  constructor(op: string, params: readonly Tensor[], o: AdamOptions, readonly decoupled: boolean) {
    const [beta1, beta2] = o.betas ?? [0.9, 0.999];
    checkRange(op, "betas[0]", beta1, 0, 1, true);
    checkRange(op, "betas[1]", beta2, 0, 1, true);
    const eps = checkRange(op, "eps", o.eps ?? 1e-8, 0);
    const weightDecay = checkRange(op, "weightDecay", o.weightDecay ?? (decoupled ? 0.01 : 0), 0);
    super(op, params, o.lr ?? 1e-3, 2);
    this.betas = [beta1, beta2];
    this.eps = eps;
    this.weightDecay = weightDecay;
  }

  protected update(w: Tensor, g: Tensor, state: Tensor[], t: number): void {
    const [beta1, beta2] = this.betas;
    dispatchStep(this.op, "adam", { DECOUPLED: this.decoupled ? 1 : 0 }, w, [g, state[0], state[1]], {
      lr: this.lr,
      weightDecay: this.weightDecay,
      beta1,
      beta2,
      eps: this.eps,
      stepSize: this.lr / (1 - beta1 ** t),
      sqrtBc2: Math.sqrt(1 - beta2 ** t),
    });
  }
}

/** Adam (torch.optim.Adam): weightDecay adds an L2 term to the gradient. */
export function adam(params: readonly Tensor[], options: AdamOptions = {}): Optimizer {
  checkOptions("adam", options, { lr: true, betas: true, eps: true, weightDecay: true });
  return new Adam("adam", params, options, false);
}

/** AdamW (torch.optim.AdamW): the weights decay by lr·weightDecay, apart from the gradient. */
export function adamw(params: readonly Tensor[], options: AdamOptions = {}): Optimizer {
  checkOptions("adamw", options, { lr: true, betas: true, eps: true, weightDecay: true });
  return new Adam("adamw", params, options, true);
}

export interface LarsOptions {
  lr: number;
  /** Default 0.9. */
  momentum?: number;
  /** Default 0 (SimCLR used 1e-6, Barlow Twins 1.5e-6). */
  weightDecay?: number;
  /** The trust coefficient η (default 0.001). */
  eta?: number;
  /**
   * Leave parameters of one dim (biases, norm layers' scales) out of weight decay and the trust ratio, as
   * SimCLR, Barlow Twins and VICReg do (default true).
   */
  excludeBiasAndNorm?: boolean;
}

class Lars extends Optimizer {
  readonly momentum: number;
  readonly weightDecay: number;
  readonly eta: number;
  readonly excludeBiasAndNorm: boolean;

  constructor(params: readonly Tensor[], o: LarsOptions) {
    const momentum = checkRange("lars", "momentum", o.momentum ?? 0.9, 0);
    const weightDecay = checkRange("lars", "weightDecay", o.weightDecay ?? 0, 0);
    const eta = checkRange("lars", "eta", o.eta ?? 0.001, 0);
    super("lars", params, o.lr, 1);
    this.momentum = momentum;
    this.weightDecay = weightDecay;
    this.eta = eta;
    this.excludeBiasAndNorm = o.excludeBiasAndNorm ?? true;
  }

  protected update(w: Tensor, g: Tensor, state: Tensor[]): void {
    const values = { lr: this.lr, momentum: this.momentum };
    // Left out: momentum SGD (its first step's b = d is momentum·0 + d here).
    if (this.excludeBiasAndNorm && w.shape.length === 1) {
      return dispatchStep(this.op, "sgd", {}, w, [g, state[0]], values);
    }
    const norms = larsNorms(this.op, w, g, this.weightDecay);
    dispatchStep(
      this.op,
      "lars",
      {},
      w,
      [g, state[0]],
      { ...values, weightDecay: this.weightDecay, eta: this.eta },
      [norms],
    );
    norms.dispose();
  }
}

/**
 * LARS (You et al.) as Barlow Twins and VICReg implement it: d = g + weightDecay·w, scaled per parameter by the
 * trust ratio eta·‖w‖ / ‖d‖ (1 where either norm is 0), then SGD with momentum, without dampening: b = m·b + q·d,
 * w −= lr·b. SimCLR's TensorFlow LARS keeps lr inside the buffer (v = m·v + lr·q·d), the same at a constant lr.
 */
export function lars(params: readonly Tensor[], options: LarsOptions): Optimizer {
  checkOptions("lars", options, {
    lr: true,
    momentum: true,
    weightDecay: true,
    eta: true,
    excludeBiasAndNorm: true,
  }, true);
  return new Lars(params, options);
}

/**
 * The EMA update of a target network from an online one, in place: target = momentum·target +
 * (1 − momentum)·online for each pair (BYOL's τ, MoCo's m).
 */
export function emaUpdate(
  targets: readonly Tensor[],
  online: readonly Tensor[],
  options: { momentum: number },
): void {
  checkOptions("emaUpdate", options, { momentum: true }, true);
  const op = "emaUpdate";
  const momentum = checkRange(op, "momentum", options.momentum, 0, 1);
  checkParams(op, targets, "target");
  checkPairs(op, targets, online, "online parameter", "target");
  noGrad(() =>
    targets.forEach((t, i) => dispatchStep(op, "axpby", {}, t, [online[i]], { a: momentum, b: 1 - momentum }))
  );
}

/**
 * Scales the gradients in place so that their global norm (the norm of all their elements together) is at
 * most maxNorm, as torch.nn.utils.clip_grad_norm_: each is multiplied by min(1, maxNorm / (norm + 1e-6)),
 * computed on the GPU (no readback); a NaN gradient makes them all NaN, as torch's. Returns the norm before
 * clipping, a scalar tensor the caller owns.
 */
export function clipGradNorm(grads: readonly Tensor[], maxNorm: number): Tensor {
  const op = "clipGradNorm";
  checkRange(op, "maxNorm", maxNorm, 0);
  checkParams(op, grads, "gradient");
  return noGrad(() => {
    const squares = grads.map((g) => {
      const g2 = square(g);
      const s = sum(g2);
      g2.dispose();
      return s;
    });
    const total = squares.slice(1).reduce((acc, s) => {
      const next = add(acc, s);
      acc.dispose();
      s.dispose();
      return next;
    }, squares[0]);
    for (const g of grads) dispatchStep(op, "clip", {}, g, [], { a: maxNorm }, [null, null, total]);
    const norm = sqrt(total);
    total.dispose();
    return norm;
  });
}

export interface CosineScheduleOptions {
  /** The value after warm-up, where the cosine starts. */
  base: number;
  /** The value at `total` steps and after (default 0). */
  final?: number;
  /** Steps of the whole schedule, warm-up included. */
  total: number;
  /** Steps of linear warm-up from `warmupStart` to `base` (default 0). */
  warmup?: number;
  /** The value at step 0 of the warm-up (default 0). */
  warmupStart?: number;
}

/**
 * The value of a schedule at `step` (from 0): a linear warm-up from `warmupStart` to `base` over `warmup` steps,
 * then a half cosine from `base` to `final` at step `total`, and `final` after, as the SSL recipes schedule the
 * learning rate and weight decay (SimCLR, BYOL, DINO) and BYOL's and DINO's EMA momentum (0.996 up to 1). Set an
 * optimiser's `lr` with it before each step.
 */
export function cosineSchedule(step: number, o: CosineScheduleOptions): number {
  checkOptions("cosineSchedule", o, {
    base: true,
    final: true,
    total: true,
    warmup: true,
    warmupStart: true,
  }, true);
  const op = "cosineSchedule";
  const total = checkRange(op, "total", o.total, 1);
  const warmup = checkRange(op, "warmup", o.warmup ?? 0, 0, total);
  if (!Number.isInteger(step) || step < 0) {
    throw new RangeError(`${op}: step must be an integer ≥ 0, got ${step}`);
  }
  const [base, final, start] = [o.base, o.final ?? 0, o.warmupStart ?? 0].map((v, i) =>
    checkRange(op, ["base", "final", "warmupStart"][i], v, -Infinity)
  );
  if (step < warmup) return start + ((base - start) * step) / warmup;
  if (step >= total) return final;
  const t = (step - warmup) / (total - warmup);
  return final + 0.5 * (base - final) * (1 + Math.cos(Math.PI * t));
}
