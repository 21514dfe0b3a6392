import type { Engine } from "./engine.ts";
import { fmtShape, ShapeError } from "./errors.ts";

export type DType = "f32" | "i32" | "u32";
export type TypedArray = Float32Array | Int32Array | Uint32Array;

/** The values an i32 or u32 tensor holds. */
export const INTEGER_RANGE = { i32: [-(2 ** 31), 2 ** 31 - 1], u32: [0, 2 ** 32 - 1] } as const;

/** Whether a tensor of `dtype` holds `v` as it is: any number for f32, an integer of its range otherwise. */
export function holds(dtype: DType, v: number): boolean {
  return dtype === "f32" ||
    (Number.isInteger(v) && v >= INTEGER_RANGE[dtype][0] && v <= INTEGER_RANGE[dtype][1]);
}

/**
 * Throws unless `t` is a tensor: a TypeError naming what came instead (JavaScript callers have no type check; a
 * Promise is most often a missing await).
 */
export function assertTensor(op: string, t: unknown): asserts t is Tensor {
  if (!(t instanceof Tensor)) {
    const got = t instanceof Promise ? "a Promise (a missing await?)" : t === null ? "null" : typeof t;
    throw new TypeError(`${op}: expected a Tensor, got ${got}`);
  }
}

/** Throws unless `t` is a tensor (`assertTensor`) not yet disposed. */
export function assertLive(op: string, t: unknown): asserts t is Tensor {
  assertTensor(op, t);
  if (t.disposed) throw new Error(`${op}: tensor ${fmtShape(t.shape)} ${t.dtype} used after dispose`);
}

/** Throws unless every tensor given belongs to the first's engine: another engine's buffer is not this device's. */
export function checkEngine(op: string, a: Tensor, ...rest: (Tensor | null | undefined)[]): void {
  if (rest.some((t) => t && t.engine !== a.engine)) {
    throw new Error(`${op}: tensors belong to different engines`);
  }
}

/** Throws unless `dtype` is one of DType's (JavaScript callers have no type check). */
export function checkDType(op: string, dtype: string): void {
  if (dtype !== "f32" && dtype !== "i32" && dtype !== "u32") {
    throw new TypeError(`${op}: dtype must be "f32", "i32" or "u32", got ${JSON.stringify(dtype)}`);
  }
}

/** How the gradient flows back through the op that made a tensor. */
export interface GradNode {
  op: string;
  inputs: Tensor[];
  /**
   * Gradients for each input given the output's gradient; null where an input gets none. `needs[i]` says
   * whether input i leads to a requested gradient: a backward may return null for the others and skip the work.
   */
  backward: (gradOutput: Tensor, needs: boolean[]) => (Tensor | null)[];
  /** Tensors kept for the backward alone; disposed with the output. */
  saved: Tensor[];
  /** The inputs' and the output's versions when the op ran: one written in place since fails the backward. */
  versions: number[];
  outVersion: number;
}

/** An n-dimensional array in a GPU buffer. Row-major and contiguous; every element is 4 bytes. */
export class Tensor {
  #buffer: GPUBuffer | null;
  #version = 0;
  readonly size: number;

  constructor(
    readonly engine: Engine,
    buffer: GPUBuffer,
    readonly shape: readonly number[],
    readonly dtype: DType,
    public node?: GradNode,
  ) {
    this.#buffer = buffer;
    this.size = shapeSize(shape);
  }

  get bytes(): number {
    return this.size * 4;
  }

  get disposed(): boolean {
    return this.#buffer === null;
  }

  /** The backing buffer; throws once the tensor is disposed. It may be larger than `bytes` (pool size class). */
  get buffer(): GPUBuffer {
    if (!this.#buffer) throw new Error(`tensor ${fmtShape(this.shape)} ${this.dtype} used after dispose`);
    return this.#buffer;
  }

  /** Writes in place so far (optimiser steps, enqueue, running statistics): a backward checks its inputs' own. */
  get version(): number {
    return this.#version;
  }

  /** Called by the ops that write this tensor in place. */
  modified(): void {
    this.#version++;
  }

  /** A typed-array copy of the contents (flushes pending work). */
  toArray(): Promise<TypedArray> {
    return this.engine.read(this);
  }

  /**
   * Frees the buffer (to the pool) and the tensors saved for this tensor's backward. The grad node stays, so a
   * backward that needs neither still runs.
   */
  dispose(): void {
    if (!this.#buffer) return;
    this.engine.release(this, this.#buffer);
    this.#buffer = null;
    for (const t of this.node?.saved ?? []) t.dispose();
  }

  [Symbol.dispose](): void {
    this.dispose();
  }

  toString(): string {
    return `Tensor(${fmtShape(this.shape)}, ${this.dtype}${this.disposed ? ", disposed" : ""})`;
  }

  /** console.log in Deno: the shape and dtype, not the engine's adapter (the values need `await t.toArray()`). */
  [Symbol.for("Deno.customInspect")](): string {
    return this.toString();
  }

  /** console.log in Node, likewise. */
  [Symbol.for("nodejs.util.inspect.custom")](): string {
    return this.toString();
  }
}

export function shapeSize(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) {
    if (!Number.isInteger(d) || d < 0) {
      throw new ShapeError(`invalid shape ${fmtShape(shape)}: dims must be integers ≥ 0`);
    }
    n *= d;
  }
  return n;
}

export function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}
