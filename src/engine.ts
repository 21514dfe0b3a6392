// The engine: one WebGPU device, a buffer pool, a pipeline cache and the kernel runner that records every op
// into one shared command encoder and submits in batches. A readback (`toArray`) flushes.
import { checkOptions, DeviceError, DeviceLostError, fmtShape, KernelError, ShapeError } from "./errors.ts";
import { SHADERS } from "./shaders.gen.ts";
import { checkDType, type DType, holds, shapeSize, Tensor, type TypedArray } from "./tensor.ts";
import { fill, philoxRandom } from "./random.ts";
import { images as rgbaImages } from "./augment.ts";

export interface InitOptions {
  powerPreference?: GPUPowerPreference;
  /** Dispatches recorded before the encoder is submitted on its own (a readback submits sooner). */
  batchSize?: number;
  /**
   * Ask for a smaller maxStorageBufferBindingSize than the adapter's largest (tests use this to exercise the
   * windowed paths identically on every adapter). Below WebGPU's default of 128 MiB, which a device always
   * has, the engine keeps to it on its own (`engine.maxBinding`).
   */
  maxStorageBufferBindingSize?: number;
  /**
   * Workgroups one dispatch needs to keep the adapter busy; ops whose work can be split (ntXent's column
   * stream) split until a dispatch has this many. Default: 256 on a GPU; 4 per CPU thread on a CPU adapter
   * (llvmpipe, SwiftShader), where each workgroup costs a start-up and splits only add work.
   */
  parallelWorkgroups?: number;
  /**
   * Use the kernel variants made for CPU adapters: matmul with A's rows in a uniform window (or vec4 reads with
   * no workgroup memory), the contrastive logits without workgroup memory, row-wise passes and maskedMSE without
   * workgroup trees. Default: whether the adapter runs on the CPU (a fallback adapter such as llvmpipe or
   * SwiftShader).
   */
  cpuKernels?: boolean;
  /**
   * Largest logits cache (bytes) the fused contrastive losses keep from forward to backward: where a
   * differentiated problem's logits fit, the forward stores them and the backward reads them instead of
   * recomputing them (ntXent forward+backward at N = 256 ran ~1.5x faster on llvmpipe). Bigger problems, and
   * logits over one storage binding, recompute, so memory stays O(N·D) beyond this constant. Default 16 MiB
   * (ntXent to N = 1,024); 0 never caches.
   * `engine.logitCacheBytes` changes it later.
   */
  logitCacheBytes?: number;
  /**
   * Lay a dispatch's workgroups over x and y past this many (default, and at most, the adapter's
   * maxComputeWorkgroupsPerDimension, 65,535 or more). Kernels rebuild their index from that grid; tests lower
   * this to check it at small sizes, where a kernel that takes 4 or 16 elements per invocation could not pass
   * 65,535 workgroups in one 128 MiB binding.
   */
  maxComputeWorkgroupsPerDimension?: number;
}

/** A storage binding: a whole tensor, or a byte window of a buffer (offset aligned to the adapter's limit). */
export type Binding = Tensor | { buffer: GPUBuffer; offset: number; size: number };

/** A buffer a kernel reports bad data in, and how to word what it reports (null: nothing wrong). */
interface DataCheck {
  buffer: GPUBuffer;
  describe: (words: Uint32Array) => string | null;
}

/** A host value as an error message shows it: JSON where it has one, else its kind. */
function describeValue(v: unknown): string {
  if (typeof v === "bigint") return `${v}n (BigInt ids: Int32Array.from(data, Number))`;
  try {
    return JSON.stringify(v) ?? String(v);
  } catch {
    return Object.prototype.toString.call(v);
  }
}

/** Rows of numbers nested as a numpy or torch user writes them: [[1, 2], [3, 4]], typed arrays as rows too. */
export type NestedNumbers = readonly (number | NestedNumbers | TypedArray)[];

/** A row of nested data: a plain array or a typed one (torch.tensor takes a list of numpy arrays). */
function isRow(a: unknown): a is ArrayLike<unknown> {
  return Array.isArray(a) || (ArrayBuffer.isView(a) && !(a instanceof DataView));
}

/**
 * A nested plain array's numbers in row-major order and its shape, read off the first element at each depth
 * (torch.tensor's rule); ragged rows and non-numbers are refused with their place, e.g. data[1][0].
 */
function flattenNested(data: readonly unknown[]): { values: number[]; shape: number[] } {
  const shape: number[] = [];
  const chain = new Set<unknown>();
  for (let a: unknown = data; isRow(a); a = a[0]) {
    if (chain.has(a)) throw new TypeError("tensor: data holds itself (a circular array)");
    chain.add(a);
    shape.push(a.length);
  }
  const values: number[] = [];
  const walk = (a: unknown, depth: number, at: string): void => {
    if (depth < shape.length && isRow(a) && a.length === shape[depth]) {
      // An index loop: forEach would skip a hole ([[1, 2], [, 4]]) and shift the values after it.
      for (let i = 0; i < a.length; i++) walk(a[i], depth + 1, `${at}[${i}]`);
    } else if (depth === shape.length && !isRow(a)) {
      if (typeof a !== "number") throw new TypeError(`tensor: ${at} is ${describeValue(a)}, not a number`);
      values.push(a);
    } else {
      const got = isRow(a) ? `an array of ${a.length}` : describeValue(a);
      const wants = depth < shape.length ? `an array of ${shape[depth]}` : "a number";
      throw new ShapeError(
        `tensor: nested data is ragged: ${at} is ${got} where shape ${fmtShape(shape)} wants ${wants}`,
      );
    }
  };
  walk(data, 0, "data");
  return { values, shape };
}

/** One compute dispatch, as an op describes it to the runner. */
export interface Kernel {
  /** The op's public name, used in error messages. */
  op: string;
  /** File name in shaders/ without `.wgsl`. */
  shader: string;
  entry?: string;
  /** Values for the shader's `override` constants (workgroup size, op selector, ...). */
  constants?: Record<string, number>;
  /** Bytes of the uniform struct at @binding(0); build with `Params`. */
  params: Params;
  /** Storage buffers at @binding(1), @binding(2), ... in order; null for a binding the entry does not use. */
  buffers: (Binding | null)[];
  /**
   * Workgroup count, laid out over x and y when it exceeds the per-dimension limit (kernels rebuild the index);
   * or an [x, y, z] grid, dispatched as given.
   */
  workgroups: number | readonly [number, number, number];
}

/** Packs a uniform struct of 4-byte scalars; `shape` adds an array<vec4<u32>, 2> of up to 8 dims. */
export class Params {
  readonly view = new DataView(new ArrayBuffer(256));
  length = 0;
  u32(...values: number[]): this {
    for (const v of values) this.view.setUint32(this.advance(), v, true);
    return this;
  }
  i32(...values: number[]): this {
    for (const v of values) this.view.setInt32(this.advance(), v, true);
    return this;
  }
  f32(...values: number[]): this {
    for (const v of values) this.view.setFloat32(this.advance(), v, true);
    return this;
  }
  /** Pads to 16 bytes, then writes `dims` (≤ 8, padded with `pad`) as two vec4<u32>. */
  dims(dims: readonly number[], pad = 1): this {
    if (dims.length > MAX_RANK) throw new ShapeError(`rank ${dims.length} exceeds the supported ${MAX_RANK}`);
    while (this.length % 16) this.u32(0);
    for (let i = 0; i < MAX_RANK; i++) this.u32(i < dims.length ? dims[i] : pad);
    return this;
  }
  private advance(): number {
    const at = this.length;
    this.length += 4;
    if (this.length > 256) throw new Error("kernel params exceed 256 bytes");
    return at;
  }
}

export const MAX_RANK = 8;

/** A ShapeError when a kernel would need more than MAX_RANK dims; called before anything is allocated. */
export function checkRank(op: string, what: string, rank: number): void {
  if (rank > MAX_RANK) throw new ShapeError(`${op}: ${what}: ${rank} dims, over the supported ${MAX_RANK}`);
}
const UNIFORM_SLOT = 256;
/** Compute passes one profile() may time: two timestamps each, and a query set holds at most 4096. */
const MAX_PROFILED_PASSES = 2048;
const ARENA_SLOTS = 1024;

/** Size class of a pooled buffer: multiples of 256 B up to 4 KiB, then four steps per power of two (≤ 25% waste). */
function sizeClass(bytes: number): number {
  if (bytes <= 4096) return Math.max(256, Math.ceil(bytes / 256) * 256);
  const step = 2 ** (Math.floor(Math.log2(bytes)) - 2);
  return Math.ceil(bytes / step) * step;
}

/**
 * Throws, before anything is allocated, where a batch of `shape` (4-byte elements) is over one storage binding,
 * for ops that bind a batch whole (split such a batch into parts of samples).
 */
export function checkFits(op: string, engine: Engine, shape: readonly number[]): void {
  const bytes = 4 * shapeSize(shape);
  if (bytes > engine.maxBinding) {
    throw new ShapeError(
      `${op}: a batch ${fmtShape(shape)} takes ${bytes} bytes, over maxStorageBufferBindingSize ` +
        `(${engine.maxBinding} bytes) for one binding; split the batch`,
    );
  }
}

function checkCacheBytes(where: string, bytes: number): void {
  if (!(Number.isFinite(bytes) && bytes >= 0)) {
    throw new RangeError(`${where}: logitCacheBytes must be a finite number ≥ 0, got ${bytes}`);
  }
}

export async function init(options: InitOptions = {}): Promise<Engine> {
  checkOptions("init", options, {
    powerPreference: true,
    batchSize: true,
    maxStorageBufferBindingSize: true,
    parallelWorkgroups: true,
    cpuKernels: true,
    logitCacheBytes: true,
    maxComputeWorkgroupsPerDimension: true,
  });
  const pw = options.parallelWorkgroups;
  if (pw !== undefined && !(Number.isInteger(pw) && pw >= 1)) {
    throw new RangeError(`init: parallelWorkgroups must be a positive integer, got ${pw}`);
  }
  if (options.logitCacheBytes !== undefined) checkCacheBytes("init", options.logitCacheBytes);
  const binding = options.maxStorageBufferBindingSize;
  // Windows of a tensor over one binding start on 256-byte boundaries: a binding below a few of them has none.
  if (binding !== undefined && !(Number.isInteger(binding) && binding >= 4096 && binding % 256 === 0)) {
    throw new RangeError(
      `init: maxStorageBufferBindingSize must be a multiple of 256 bytes, at least 4096, got ${binding}`,
    );
  }
  const wpd = options.maxComputeWorkgroupsPerDimension;
  if (wpd !== undefined && !(Number.isInteger(wpd) && wpd >= 1)) {
    throw new RangeError(`init: maxComputeWorkgroupsPerDimension must be a positive integer, got ${wpd}`);
  }
  const gpu = (globalThis.navigator as Navigator | undefined)?.gpu;
  if (!gpu) {
    throw new DeviceError(
      "WebGPU is not available (navigator.gpu is undefined). In Deno use version ≥ 2 (WebGPU is on by default). " +
        "In a browser serve the page from https or 127.0.0.1 and use Chrome/Edge ≥ 113, or Chromium with " +
        "--enable-unsafe-webgpu.",
    );
  }
  const adapter = await gpu.requestAdapter({ powerPreference: options.powerPreference });
  if (!adapter) {
    throw new DeviceError(
      "navigator.gpu.requestAdapter() found no adapter. On Linux without a GPU, Deno finds Mesa's llvmpipe " +
        "through EGL (apt-get install libegl1 libegl-mesa0 libgl1-mesa-dri) or Vulkan (apt-get install " +
        "mesa-vulkan-drivers); Chromium needs --enable-unsafe-webgpu.",
    );
  }
  const l = adapter.limits;
  const requiredLimits: Record<string, number> = {
    maxStorageBufferBindingSize: Math.min(
      l.maxStorageBufferBindingSize,
      options.maxStorageBufferBindingSize ?? Infinity,
    ),
    maxBufferSize: l.maxBufferSize,
    maxComputeWorkgroupStorageSize: l.maxComputeWorkgroupStorageSize,
    maxComputeInvocationsPerWorkgroup: l.maxComputeInvocationsPerWorkgroup,
    maxComputeWorkgroupSizeX: l.maxComputeWorkgroupSizeX,
    maxComputeWorkgroupSizeY: l.maxComputeWorkgroupSizeY,
    maxComputeWorkgroupSizeZ: l.maxComputeWorkgroupSizeZ,
    maxComputeWorkgroupsPerDimension: l.maxComputeWorkgroupsPerDimension,
    maxStorageBuffersPerShaderStage: l.maxStorageBuffersPerShaderStage,
  };
  const requiredFeatures: GPUFeatureName[] = adapter.features.has("timestamp-query")
    ? ["timestamp-query"]
    : [];
  let device: GPUDevice;
  try {
    device = await adapter.requestDevice({ requiredLimits, requiredFeatures });
  } catch (e) {
    throw new DeviceError(`adapter.requestDevice() failed: ${(e as Error).message}`);
  }
  return new Engine(adapter, device, options);
}

export class Engine {
  readonly limits: GPUSupportedLimits;
  /** The adapter's name, e.g. "llvmpipe (LLVM 15.0.6, 256 bits)". */
  readonly adapterName: string;
  readonly batchSize: number;
  /** Workgroups one dispatch needs to keep the adapter busy (`InitOptions.parallelWorkgroups`). */
  readonly parallelWorkgroups: number;
  #logitCacheBytes: number;
  #maxBinding: number;
  /** Whether ops pick the kernel variants made for CPU adapters (`InitOptions.cpuKernels`). */
  readonly cpuKernels: boolean;
  /** Workgroups along x before a dispatch is laid over x and y (`InitOptions.maxComputeWorkgroupsPerDimension`). */
  readonly workgroupsPerDimension: number;
  /** Command buffers submitted so far (ops batch into one; readbacks and full batches submit). */
  submits = 0;
  #pipelines = new Map<string, GPUComputePipeline>();
  /** One module per shader file, shared by its entries and override variants (each parsed once). */
  #modules = new Map<string, GPUShaderModule>();
  #pool = new Map<number, GPUBuffer[]>();
  /** Buffers released since the last submit: the unsubmitted encoder may still read them. */
  #freedThisBatch = new Set<GPUBuffer>();
  #pooledBytes = 0;
  #live = new Set<Tensor>();
  #liveBytes = 0;
  #peakBytes = 0;
  #encoder: GPUCommandEncoder | null = null;
  #pass: GPUComputePassEncoder | null = null;
  #dispatches = 0;
  #arena: GPUBuffer;
  #arenaData = new Uint8Array(UNIFORM_SLOT * ARENA_SLOTS);
  #arenaUsed = 0;
  #errors: Promise<void>[] = [];
  #checks: DataCheck[] = [];
  #lost: string | null = null;
  #lostPromise: Promise<never>;
  #scopes: Set<Tensor>[] = [];
  #profile: { querySet: GPUQuerySet; next: number; capacity: number } | null = null;

  constructor(readonly adapter: GPUAdapter, readonly device: GPUDevice, options: InitOptions = {}) {
    this.limits = device.limits;
    // A device keeps at least WebGPU's default (128 MiB): a smaller request is kept here, as the engine's own.
    this.#maxBinding = Math.min(
      this.limits.maxStorageBufferBindingSize,
      options.maxStorageBufferBindingSize ?? Infinity,
    );
    const info = adapter.info;
    this.adapterName = [info?.description || info?.device, info?.vendor, info?.architecture]
      .filter((s) => s).join(" / ") || "unknown adapter";
    this.batchSize = options.batchSize ?? 256;
    const cpu = (info as { isFallbackAdapter?: boolean } | undefined)?.isFallbackAdapter === true ||
      /llvmpipe|lavapipe|swiftshader/i.test(this.adapterName);
    this.cpuKernels = options.cpuKernels ?? cpu;
    this.parallelWorkgroups = options.parallelWorkgroups ??
      (cpu ? 4 * (globalThis.navigator?.hardwareConcurrency || 1) : 256);
    this.#logitCacheBytes = options.logitCacheBytes ?? 16 * 2 ** 20;
    this.workgroupsPerDimension = Math.min(
      this.limits.maxComputeWorkgroupsPerDimension,
      options.maxComputeWorkgroupsPerDimension ?? Infinity,
    );
    this.#arena = device.createBuffer({
      size: this.#arenaData.byteLength,
      usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST,
    });
    this.#lostPromise = device.lost.then((info) => {
      this.#lost = info.message || info.reason || "unknown reason";
      throw new DeviceLostError(`GPU device lost (${this.#lost}); call init() again for a new engine`);
    });
    this.#lostPromise.catch(() => {});
    device.addEventListener("uncapturederror", (e) => {
      this.#defer(Promise.reject(new KernelError((e as GPUUncapturedErrorEvent).error.message)));
    });
  }

  /**
   * Keeps `work` for the next sync or readback to await and rethrow from. Marked handled here, so that an error
   * that comes before anyone awaits it is not an unhandled rejection (which ends a Deno process).
   */
  #defer(work: Promise<void>): void {
    work.catch(() => {});
    this.#errors.push(work);
  }

  // ---- tensors ---------------------------------------------------------------------------------------------

  /**
   * A tensor from host data; `data` may be a typed array, a plain array of numbers, or rows of them nested as
   * in torch.tensor (`[[1, 2], [3, 4]]`: shape [2, 2] unless `shape` is given; dtype f32 unless given).
   * Values for an i32 or u32 tensor must be integers of its range: they are ids and labels, which wrapping
   * (JavaScript's Int32Array.from) or saturating (`cast`) would silently change.
   */
  tensor(
    data: ArrayLike<number> | TypedArray | NestedNumbers,
    shape?: readonly number[],
    dtype?: DType,
  ): Tensor {
    const dt: DType = dtype ??
      (data instanceof Int32Array ? "i32" : data instanceof Uint32Array ? "u32" : "f32");
    checkDType("tensor", dt);
    if (typeof data?.length !== "number") {
      const got = data instanceof Promise ? "a Promise (a missing await?)" : String(data);
      throw new TypeError(`tensor: data must be an array or a typed array of numbers, got ${got}`);
    }
    let inferred = [data.length];
    let values = data as ArrayLike<unknown>;
    if (Array.isArray(data) && isRow(data[0])) ({ values, shape: inferred } = flattenNested(data));
    // A plain array's strings, nulls and stray arrays would become NaN or 0 in Float32Array.from, silently.
    for (let i = 0; !ArrayBuffer.isView(values) && i < values.length; i++) {
      const v = values[i];
      if (typeof v !== "number") {
        throw new TypeError(`tensor: element ${i} is ${describeValue(v)}, not a number`);
      }
    }
    const numbers = values as ArrayLike<number>;
    const sh = shape ?? inferred;
    if (shapeSize(sh) !== numbers.length) {
      throw new ShapeError(`tensor: ${numbers.length} values do not fill shape ${fmtShape(sh)}`);
    }
    let host: Float32Array | Int32Array | Uint32Array;
    try {
      host = dt === "f32"
        ? Float32Array.from(numbers)
        : dt === "i32"
        ? Int32Array.from(numbers)
        : Uint32Array.from(numbers);
    } catch (e) {
      throw new TypeError(`tensor: data must hold numbers (BigInt ids: Int32Array.from(data, Number)); ${e}`);
    }
    const converted = dt !== "f32" && !(numbers instanceof host.constructor);
    for (let i = 0; converted && i < numbers.length; i++) {
      if (!holds(dt, numbers[i])) {
        throw new RangeError(`tensor: value ${numbers[i]} at ${i} is not an integer of ${dt}'s range`);
      }
    }
    const t = this.empty(sh, dt);
    // queue.writeBuffer runs before the unsubmitted encoder: if that encoder still reads this buffer's old
    // contents (it was freed during this batch), submit the encoder first.
    if (this.#freedThisBatch.has(t.buffer)) this.#submit(false);
    this.device.queue.writeBuffer(t.buffer, 0, host.buffer, host.byteOffset, host.byteLength);
    return t;
  }

  zeros(shape: readonly number[], dtype: DType = "f32"): Tensor {
    return this.full(shape, 0, dtype);
  }

  ones(shape: readonly number[], dtype: DType = "f32"): Tensor {
    return this.full(shape, 1, dtype);
  }

  full(shape: readonly number[], value: number, dtype: DType = "f32"): Tensor {
    return fill(this, shape, value, dtype);
  }

  /**
   * Uniform [0, 1) from a counter-based generator (Philox 4x32-10) keyed by seed: replays exactly. An element's
   * value depends on the seed and its index alone (seed 0 unless given), so two draws of one seed are equal:
   * give each weight its own seed.
   */
  rand(shape: readonly number[], options: { seed?: number } = {}): Tensor {
    checkOptions("rand", options, { seed: true });
    return philoxRandom(this, shape, options.seed ?? 0, "uniform");
  }

  /** Standard normal (Box-Muller over Philox 4x32-10) keyed by seed, as `rand`. */
  randn(shape: readonly number[], options: { seed?: number } = {}): Tensor {
    checkOptions("randn", options, { seed: true });
    return philoxRandom(this, shape, options.seed ?? 0, "normal");
  }

  /** A batch [N, 3, H, W] in [0, 1] from RGBA8 pixels (alpha dropped), converted on the GPU (src/augment.ts). */
  images(
    pixels: Uint8Array | Uint8ClampedArray | ImageData[],
    options: { n: number; height: number; width: number },
  ): Tensor {
    return rgbaImages(this, pixels, options);
  }

  /** console.log in Deno and Node: the adapter and live memory, not the device's every limit. */
  [Symbol.for("Deno.customInspect")](): string {
    return this.toString();
  }

  [Symbol.for("nodejs.util.inspect.custom")](): string {
    return this.toString();
  }

  toString(): string {
    const { tensors, bytes } = this.memory();
    return `Engine(${this.adapterName}${
      this.#lost ? ", device lost" : ""
    }; ${tensors} tensors, ${bytes} bytes)`;
  }

  /** Live tensors and their bytes; `pooledBytes` are freed buffers kept for reuse. */
  memory(): { tensors: number; bytes: number; pooledBytes: number; peakBytes: number } {
    return {
      tensors: this.#live.size,
      bytes: this.#liveBytes,
      pooledBytes: this.#pooledBytes,
      peakBytes: this.#peakBytes,
    };
  }

  /** Starts a new peak: memory().peakBytes is the most live bytes since the last call. */
  resetPeak(): void {
    this.#peakBytes = this.#liveBytes;
  }

  /** Destroys the pooled (freed) buffers. */
  trim(): void {
    this.flush();
    for (const list of this.#pool.values()) for (const b of list) b.destroy();
    this.#pool.clear();
    this.#pooledBytes = 0;
  }

  /**
   * Runs `fn`, then disposes every tensor it created except those it returns (in an array or object) and what
   * their backward keeps (an op's saved tensors live as long as its output); if `fn` throws, every tensor it
   * created. `fn` must be synchronous: tensors made after an await would escape the scope.
   */
  tidy<T>(fn: () => T): T {
    const scope = new Set<Tensor>();
    this.#scopes.push(scope);
    let result: T;
    try {
      result = fn();
      if (result instanceof Promise) {
        result.catch(() => {}); // abandoned: its rejection (a tensor freed below) must not end the process
        throw new TypeError("tidy: fn returned a Promise; tidy is synchronous (await outside it)");
      }
    } catch (e) {
      for (const t of scope) t.dispose();
      throw e;
    } finally {
      this.#scopes.pop();
    }
    const keep = new Set<Tensor>();
    const collect = (v: unknown) => {
      if (v instanceof Tensor) {
        keep.add(v);
        v.node?.saved.forEach(collect);
      } else if (Array.isArray(v)) v.forEach(collect);
      else if (v && typeof v === "object") Object.values(v).forEach(collect);
    };
    collect(result);
    for (const t of scope) {
      if (keep.has(t)) this.#scopes.at(-1)?.add(t);
      else t.dispose();
    }
    return result;
  }

  /**
   * Puts `t`, made earlier, in the innermost tidy scope as if made now: grad() owns the gradients backwards
   * return, a fused loss's gradient kept from its forward among them, and frees them all if a later one throws.
   */
  adopt(t: Tensor): void {
    this.#scopes.at(-1)?.add(t);
  }

  /**
   * An uninitialised tensor from the pool; ops write their outputs into these. `slackBytes` more of its buffer
   * lie past its end, for a fixed-size window binding that may run past the tensor.
   */
  empty(shape: readonly number[], dtype: DType = "f32", slackBytes = 0): Tensor {
    this.#checkAlive();
    checkDType("empty", dtype);
    const size = shapeSize(shape);
    if (size === 0) throw new ShapeError(`empty tensors are not supported (shape ${fmtShape(shape)})`);
    const bytes = size * 4;
    if (bytes + slackBytes > this.limits.maxBufferSize) {
      throw new ShapeError(
        `tensor ${fmtShape(shape)} needs ${
          bytes + slackBytes
        } bytes, over the adapter's maxBufferSize of ${this.limits.maxBufferSize}`,
      );
    }
    const t = new Tensor(this, this.#acquire(bytes + slackBytes), [...shape], dtype);
    this.#live.add(t);
    this.#liveBytes += bytes;
    this.#peakBytes = Math.max(this.#peakBytes, this.#liveBytes);
    this.#scopes.at(-1)?.add(t);
    return t;
  }

  /** Called by Tensor.dispose: the buffer returns to the pool. */
  release(t: Tensor, buffer: GPUBuffer): void {
    if (!this.#live.delete(t)) return;
    this.#liveBytes -= t.bytes;
    this.#pooledBytes += buffer.size;
    const list = this.#pool.get(buffer.size) ?? [];
    list.push(buffer);
    this.#pool.set(buffer.size, list);
    this.#freedThisBatch.add(buffer);
  }

  #acquire(bytes: number): GPUBuffer {
    const size = sizeClass(bytes);
    const pooled = this.#pool.get(size)?.pop();
    if (pooled) {
      this.#pooledBytes -= size;
      return pooled;
    }
    // UNIFORM too: what every invocation reads alike (augmentation records, a slab of matmul's A) binds as a
    // uniform window, whose reads a CPU adapter vectorises where it loops over the lanes for a storage read.
    return this.device.createBuffer({
      size,
      usage: GPUBufferUsage.STORAGE | GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_SRC |
        GPUBufferUsage.COPY_DST,
    });
  }

  // ---- kernels ---------------------------------------------------------------------------------------------

  /** Records one dispatch into the shared encoder. */
  run(k: Kernel): void {
    this.#checkAlive();
    const maxDim = this.limits.maxComputeWorkgroupsPerDimension;
    const across = this.workgroupsPerDimension;
    const grid = typeof k.workgroups === "number"
      ? [Math.min(k.workgroups, across), Math.ceil(k.workgroups / across), 1]
      : k.workgroups;
    if (grid.some((d) => d > maxDim)) {
      const limit = typeof k.workgroups === "number" ? `${across} × ${maxDim}` : `${maxDim} per dimension`;
      throw new ShapeError(
        `${k.op}: ${JSON.stringify(k.workgroups)} workgroups exceed ${limit} per dispatch`,
      );
    }
    if (grid.includes(0)) return;
    const pipeline = this.pipeline(k.op, k.shader, k.entry ?? "main", k.constants ?? {});
    if (this.#arenaUsed === ARENA_SLOTS || this.#dispatches >= this.batchSize) this.#submit(false);
    const slot = this.#arenaUsed++;
    this.#arenaData.set(new Uint8Array(k.params.view.buffer, 0, k.params.length), slot * UNIFORM_SLOT);
    const entries: GPUBindGroupEntry[] = [{
      binding: 0,
      resource: { buffer: this.#arena, offset: slot * UNIFORM_SLOT, size: UNIFORM_SLOT },
    }];
    k.buffers.forEach((b, i) =>
      b && entries.push({ binding: i + 1, resource: this.#bindingResource(k.op, b) })
    );
    this.device.pushErrorScope("validation");
    const bindGroup = this.device.createBindGroup({ layout: pipeline.getBindGroupLayout(0), entries });
    this.#watch(k.op);
    const pass = this.#computePass();
    pass.setPipeline(pipeline);
    pass.setBindGroup(0, bindGroup);
    pass.dispatchWorkgroups(grid[0], grid[1], grid[2]);
    this.#dispatches++;
  }

  /** Records a buffer copy (ends the open compute pass). */
  copy(src: GPUBuffer, srcOffset: number, dst: GPUBuffer, dstOffset: number, bytes: number): void {
    this.#checkAlive();
    this.#endPass();
    this.#encoder ??= this.device.createCommandEncoder();
    this.#encoder.copyBufferToBuffer(src, srcOffset, dst, dstOffset, bytes);
  }

  /** The cached pipeline for a shader, entry point and override constants; compiled on first use. */
  pipeline(op: string, shader: string, entry: string, constants: Record<string, number>): GPUComputePipeline {
    const key = `${shader}:${entry}:${JSON.stringify(constants)}`;
    let p = this.#pipelines.get(key);
    if (!p) {
      const code = SHADERS[shader];
      if (code === undefined) throw new Error(`${op}: no shader named '${shader}' (run deno task build)`);
      this.device.pushErrorScope("validation");
      let module = this.#modules.get(shader);
      if (!module) {
        module = this.device.createShaderModule({ code, label: shader });
        this.#modules.set(shader, module);
      }
      p = this.device.createComputePipeline({
        layout: "auto",
        compute: { module, entryPoint: entry, constants },
      });
      this.#watch(`${op} (shader ${shader}.wgsl, entry ${entry})`);
      this.#pipelines.set(key, p);
    }
    return p;
  }

  /**
   * Largest logits cache of the fused contrastive losses (`InitOptions.logitCacheBytes`); a new value applies to
   * the forwards that follow (the cache flag is a uniform, so no pipeline is rebuilt).
   */
  get logitCacheBytes(): number {
    return this.#logitCacheBytes;
  }

  set logitCacheBytes(bytes: number) {
    checkCacheBytes("Engine", bytes);
    this.#logitCacheBytes = bytes;
  }

  /** Largest byte window a kernel may bind, and the alignment of a window's offset. */
  get maxBinding(): number {
    return this.#maxBinding;
  }

  get bindingAlignment(): number {
    return this.limits.minStorageBufferOffsetAlignment;
  }

  #bindingResource(op: string, b: Binding): GPUBufferBinding {
    if (b instanceof Tensor) {
      // Caught here, not by the device: its validation error would drop the whole batch, others' work with it.
      if (b.engine !== this) {
        throw new Error(`${op}: tensor ${fmtShape(b.shape)} belongs to another engine than the op's`);
      }
      if (b.bytes > this.maxBinding) {
        throw new ShapeError(
          `${op}: tensor ${fmtShape(b.shape)} is ${b.bytes} bytes, over maxStorageBufferBindingSize ` +
            `(${this.maxBinding} bytes) for one binding; this op does not split such tensors`,
        );
      }
      // 16-byte multiples: Dawn rejects bindings below a shader's minimum size (16 for vec4 arrays).
      return { buffer: b.buffer, offset: 0, size: Math.min(b.buffer.size, Math.ceil(b.bytes / 16) * 16) };
    }
    return b;
  }

  #watch(op: string): void {
    this.#defer(
      this.device.popErrorScope().then((e) => {
        if (e) throw new KernelError(`${op}: ${e.message} (the batch of work recorded with it was dropped)`);
      }),
    );
  }

  #computePass(): GPUComputePassEncoder {
    if (this.#pass) return this.#pass;
    this.#encoder ??= this.device.createCommandEncoder();
    const prof = this.#profile;
    let timestampWrites: GPUComputePassTimestampWrites | undefined;
    if (prof) {
      if (prof.next + 2 > prof.capacity) throw new Error("profile: more compute passes than timestamp slots");
      timestampWrites = {
        querySet: prof.querySet,
        beginningOfPassWriteIndex: prof.next,
        endOfPassWriteIndex: prof.next + 1,
      };
      prof.next += 2;
    }
    this.#pass = this.#encoder.beginComputePass({ timestampWrites });
    return this.#pass;
  }

  #endPass(): void {
    this.#pass?.end();
    this.#pass = null;
  }

  /**
   * A zeroed buffer of 4 u32 in which a kernel reports bad data that only the GPU sees (a label outside the
   * classes), read back once the batch has run: where `describe` makes a message of the words, the next sync or
   * readback throws it as a RangeError, as a CUDA device-side assert surfaces at the next synchronisation.
   */
  dataCheck(describe: (words: Uint32Array) => string | null): Binding {
    this.#checkAlive();
    const buffer = this.device.createBuffer({
      size: 16,
      usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC,
    });
    this.#checks.push({ buffer, describe });
    return { buffer, offset: 0, size: 16 };
  }

  /** Submits the recorded work, and reads the data checks of the ops recorded so far after it. */
  flush(): void {
    this.#submit(true);
  }

  /**
   * Submits the recorded work. Where a batch fills up in the middle of an op (`readChecks` false), that op's data
   * check may not be written yet and its next dispatch still binds it: the checks wait for the next flush.
   */
  #submit(readChecks: boolean): void {
    this.#endPass();
    if (!this.#encoder && !(readChecks && this.#checks.length)) return;
    this.#encoder ??= this.device.createCommandEncoder();
    if (this.#arenaUsed) {
      this.device.queue.writeBuffer(this.#arena, 0, this.#arenaData, 0, this.#arenaUsed * UNIFORM_SLOT);
    }
    const checks = readChecks ? this.#checks.splice(0) : [];
    const staging = checks.length
      ? this.device.createBuffer({
        size: 16 * checks.length,
        usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
      })
      : null;
    checks.forEach((c, i) => this.#encoder!.copyBufferToBuffer(c.buffer, 0, staging!, 16 * i, 16));
    this.device.pushErrorScope("validation");
    this.device.queue.submit([this.#encoder.finish()]);
    this.submits++;
    this.#watch("submit");
    if (staging) this.#readChecks(staging, checks);
    this.#encoder = null;
    this.#arenaUsed = 0;
    this.#dispatches = 0;
    this.#freedThisBatch.clear();
  }

  /** Maps the words a batch's data checks wrote; a problem they report rejects the next settle. */
  #readChecks(staging: GPUBuffer, checks: DataCheck[]): void {
    const read = staging.mapAsync(GPUMapMode.READ).then(() => {
      const words = new Uint32Array(staging.getMappedRange().slice(0));
      const problems = checks.map((c, i) => c.describe(words.subarray(4 * i, 4 * i + 4))).filter((m) => m);
      if (problems.length) throw new RangeError(problems.join("; "));
    }).finally(() => {
      staging.destroy();
      for (const c of checks) c.buffer.destroy();
    });
    this.#defer(read);
  }

  /** Waits for all submitted work; throws the first error any op raised since the last sync. */
  async sync(): Promise<void> {
    this.flush();
    await this.#settle(this.device.queue.onSubmittedWorkDone());
  }

  async #settle<T>(work: Promise<T>): Promise<T> {
    const errors = this.#errors;
    this.#errors = [];
    try {
      const result = await Promise.race([Promise.all([work, ...errors]), this.#lostPromise]);
      return result[0] as T;
    } catch (e) {
      // Browsers reject a pending mapAsync with AbortError when the device goes: report the loss instead.
      const lost = await Promise.race([
        this.#lostPromise.catch((l) => l as Error),
        new Promise<null>((r) => setTimeout(() => r(null), 200)),
      ]);
      throw lost ?? e;
    }
  }

  /** Copies a tensor back to the host. */
  async read(t: Tensor): Promise<TypedArray> {
    this.#checkAlive();
    const bytes = t.bytes;
    const staging = this.device.createBuffer({
      size: bytes,
      usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
    });
    try {
      this.copy(t.buffer, 0, staging, 0, bytes);
      this.flush();
      await this.#settle(staging.mapAsync(GPUMapMode.READ));
      const copy = staging.getMappedRange().slice(0);
      staging.unmap();
      return t.dtype === "f32"
        ? new Float32Array(copy)
        : t.dtype === "i32"
        ? new Int32Array(copy)
        : new Uint32Array(copy);
    } finally {
      staging.destroy();
    }
  }

  /**
   * GPU time in milliseconds of the work `fn` records, from timestamp queries around each compute pass.
   * Returns null when the adapter has no timestamp queries.
   */
  async profile(fn: () => void, maxPasses = 64): Promise<number | null> {
    if (!Number.isInteger(maxPasses) || maxPasses < 1 || maxPasses > MAX_PROFILED_PASSES) {
      throw new RangeError(
        `profile: maxPasses must be an integer in [1, ${MAX_PROFILED_PASSES}] (two timestamps a pass, a query ` +
          `set holds at most 4096), got ${maxPasses}`,
      );
    }
    if (!this.device.features.has("timestamp-query")) return null;
    await this.sync();
    const capacity = 2 * maxPasses;
    const querySet = this.device.createQuerySet({ type: "timestamp", count: capacity });
    this.#profile = { querySet, next: 0, capacity };
    const resolve = this.device.createBuffer({
      size: capacity * 8,
      usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC,
    });
    const staging = this.device.createBuffer({
      size: capacity * 8,
      usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
    });
    try {
      fn();
      this.#endPass();
      const used = this.#profile.next;
      this.#profile = null;
      if (used === 0) return 0;
      this.#encoder ??= this.device.createCommandEncoder();
      this.#encoder.resolveQuerySet(querySet, 0, used, resolve, 0);
      this.#encoder.copyBufferToBuffer(resolve, 0, staging, 0, used * 8);
      this.flush();
      await this.#settle(staging.mapAsync(GPUMapMode.READ));
      const ts = new BigUint64Array(staging.getMappedRange().slice(0));
      staging.unmap();
      let ns = 0;
      for (let i = 0; i < used; i += 2) ns += Number(ts[i + 1] - ts[i]);
      return ns / 1e6;
    } finally {
      this.#profile = null;
      querySet.destroy();
      resolve.destroy();
      staging.destroy();
    }
  }

  #checkAlive(): void {
    if (this.#lost !== null) {
      throw new DeviceLostError(`GPU device lost (${this.#lost}); call init() again for a new engine`);
    }
  }

  /** Destroys the device and every buffer; the engine cannot be used afterwards. */
  destroy(): void {
    this.trim();
    for (const t of [...this.#live]) t.dispose();
    this.trim();
    this.device.destroy();
  }
}

/** A bindable slice of a tensor: elements [first, first + count), as a storage binding. */
export interface Window {
  first: number;
  count: number;
  binding: Binding;
}

/** A tensor's windows as bindings, one per window. */
export function windowBindings(t: Tensor): Binding[] {
  return windows(t).map((w) => w.binding);
}

/**
 * Splits a tensor into windows that each fit one storage binding (maxStorageBufferBindingSize), with offsets
 * on the adapter's alignment. Small tensors give one window: the whole tensor.
 */
export function windows(t: Tensor): Window[] {
  const e = t.engine;
  if (t.bytes <= e.maxBinding) return [{ first: 0, count: t.size, binding: t }];
  const align = e.bindingAlignment / 4;
  const per = Math.floor(e.maxBinding / 4 / align) * align;
  const out: Window[] = [];
  for (let first = 0; first < t.size; first += per) {
    const count = Math.min(per, t.size - first);
    // Whole vec4s, as a Tensor binding (kernels that read vec4s need them; the pool's buffers are 256-byte
    // multiples, so the rounding stays inside the buffer).
    out.push({
      first,
      count,
      binding: { buffer: t.buffer, offset: first * 4, size: Math.ceil(count / 4) * 16 },
    });
  }
  return out;
}
