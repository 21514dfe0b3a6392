// CPU reference of src/optim.ts in float64: one step of each update rule, in place on the arrays, written from
// PyTorch's torch.optim.SGD / Adam / AdamW and the LARS of Barlow Twins and VICReg.

export interface RefSgdOptions {
  lr: number;
  momentum: number;
  dampening: number;
  weightDecay: number;
  nesterov: boolean;
}

/** SGD; `buf` is the momentum buffer (null without momentum), `first` the optimiser's first step. */
export function refSgdStep(
  w: Float64Array,
  g: ArrayLike<number>,
  buf: Float64Array | null,
  o: RefSgdOptions,
  first: boolean,
): void {
  for (let i = 0; i < w.length; i++) {
    let d = g[i] + o.weightDecay * w[i];
    if (buf) {
      buf[i] = first ? d : o.momentum * buf[i] + (1 - o.dampening) * d;
      d = o.nesterov ? d + o.momentum * buf[i] : buf[i];
    }
    w[i] -= o.lr * d;
  }
}

export interface RefAdamOptions {
  lr: number;
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
  /** AdamW's decoupled weight decay, else Adam's L2 term in the gradient. */
  decoupled: boolean;
}

/** Adam / AdamW step number `t` (from 1) with moments m and v. */
export function refAdamStep(
  w: Float64Array,
  g: ArrayLike<number>,
  m: Float64Array,
  v: Float64Array,
  t: number,
  o: RefAdamOptions,
): void {
  const bc1 = 1 - o.beta1 ** t;
  const bc2 = 1 - o.beta2 ** t;
  for (let i = 0; i < w.length; i++) {
    let gi = g[i];
    if (o.decoupled) w[i] *= 1 - o.lr * o.weightDecay;
    else gi += o.weightDecay * w[i];
    m[i] = o.beta1 * m[i] + (1 - o.beta1) * gi;
    v[i] = o.beta2 * v[i] + (1 - o.beta2) * gi * gi;
    w[i] -= (o.lr / bc1) * m[i] / (Math.sqrt(v[i]) / Math.sqrt(bc2) + o.eps);
  }
}

export interface RefLarsOptions {
  lr: number;
  momentum: number;
  weightDecay: number;
  eta: number;
  /** false for excluded parameters (biases, norms): no weight decay, no trust ratio. */
  adapt: boolean;
}

/** LARS with momentum buffer `buf`. */
export function refLarsStep(
  w: Float64Array,
  g: ArrayLike<number>,
  buf: Float64Array,
  o: RefLarsOptions,
): void {
  const wd = o.adapt ? o.weightDecay : 0;
  // Plain loops: Float64Array.from(w, f) and reduce ran V8's slow paths, ~20x the arithmetic.
  const d = new Float64Array(w.length);
  let [ww, dd] = [0, 0];
  for (let i = 0; i < w.length; i++) {
    d[i] = g[i] + wd * w[i];
    ww += w[i] * w[i];
    dd += d[i] * d[i];
  }
  let q = 1;
  if (o.adapt) {
    const [wn, dn] = [Math.sqrt(ww), Math.sqrt(dd)];
    if (wn > 0 && dn > 0) q = o.eta * wn / dn;
  }
  for (let i = 0; i < w.length; i++) {
    buf[i] = o.momentum * buf[i] + q * d[i];
    w[i] -= o.lr * buf[i];
  }
}

/** The EMA target update: target = momentum·target + (1 − momentum)·online. */
export function refEma(target: Float64Array, online: ArrayLike<number>, momentum: number): void {
  for (let i = 0; i < target.length; i++) target[i] = momentum * target[i] + (1 - momentum) * online[i];
}

/** clip_grad_norm_: every gradient times min(1, maxNorm / (global norm + 1e-6)); returns the global norm. */
export function refClipGradNorm(grads: Float64Array[], maxNorm: number): number {
  const norm = Math.sqrt(grads.reduce((s, g) => s + g.reduce((t, x) => t + x * x, 0), 0));
  const scale = Math.min(1, maxNorm / (norm + 1e-6));
  for (const g of grads) for (let i = 0; i < g.length; i++) g[i] *= scale;
  return norm;
}
