// The benchmark's context: timing (GPU time from timestamp queries, else wall time over many dispatches per
// readback), the adapter's measured ceilings, and the results table that bench/main.ts prints and saves.
import type { Engine } from "../src/mod.ts";

export interface Row {
  kernel: string;
  size: string;
  /** pretext on WebGPU, its float64 CPU reference, or a peer library on WebGPU (bench/peers.ts). */
  backend: "webgpu" | "cpu" | "tfjs-webgpu";
  /** Median milliseconds of one run. */
  ms: number;
  /** Bytes read plus written once by one run. */
  bytes?: number;
  /** Floating-point operations of one run (a fused multiply-add counts two). */
  flops?: number;
  /** Peak memory a run needs, in bytes. */
  peakBytes?: number;
  /** Peer rows: pretext's median wall ms of the same run, timed as the peer was. */
  pretextMs?: number;
  note?: string;
}

export interface BenchContext {
  engine: Engine;
  quick: boolean;
  ceilings: { copyGBps: number; fmaGFLOPs: number };
  /** GPU ms of the work one call of `fn` records: the median of the runs, or what `pick` makes of them. */
  gpu(fn: () => void, reps?: number, pick?: (samples: number[]) => number): Promise<number>;
  /** Median CPU ms of one call of `fn`. */
  cpu(fn: () => void, reps?: number): number;
  /** Prints a table row and records it for --json. */
  add(row: Row): void;
}

/** A recorded row with its rates: GB/s and GFLOP/s, their fractions of the ceilings, and the webgpu speedup. */
export interface Result extends Row {
  gbps?: number;
  gflops?: number;
  ofCopy?: number;
  ofFma?: number;
  /** On a webgpu row: the matching cpu row's ms over this row's ms. */
  speedup?: number;
}

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/** The fastest of the runs: a ceiling is the best the adapter does, and a busy host only slows a run down. */
export function fastest(xs: number[]): number {
  return Math.min(...xs);
}

/** Most compute passes one timed call may record (2 timestamps each; a query set holds at most 4096). */
const MAX_PASSES = 2048;
/** Wall-time fallback: repeat the work until one readback covers at least this long, so polling is noise. */
const MIN_WALL_MS = 200;
/** GPU time one kernel's samples may take, past the first, in a full and a --quick run. */
const BUDGET_MS = 5000;
const QUICK_BUDGET_MS = 1000;
/** A CPU call at least this long is past JIT warm-up noise. */
const LONG_CPU_MS = 250;

const COLUMNS: [string, number][] = [
  ["kernel", 22],
  ["size", 20],
  ["backend", 11],
  ["ms", 10],
  ["rate", 15],
  ["ceiling", 8],
  ["speedup", 8],
];

function cells(values: string[]): string {
  return values.map((v, i) => i < 3 ? v.padEnd(COLUMNS[i][1]) : v.padStart(COLUMNS[i][1])).join(" ");
}

const pct = (x: number) => `${(100 * x).toFixed(1)}%`;

/** A full garbage collection, where the runtime exposes one (`deno task bench` passes `--expose-gc`). */
function collectGarbage(): void {
  (globalThis as { gc?: () => void }).gc?.();
}

export function fmtMs(ms: number): string {
  return ms >= 100 ? ms.toFixed(1) : ms >= 1 ? ms.toFixed(3) : ms.toPrecision(3);
}

export class Bench implements BenchContext {
  ceilings = { copyGBps: 0, fmaGFLOPs: 0 };
  readonly results: Result[] = [];
  /** Whether GPU times come from timestamp queries (else wall time of many dispatches per readback). */
  readonly timestamps: boolean;

  constructor(readonly engine: Engine, readonly quick: boolean, private readonly print = console.log) {
    this.timestamps = engine.device.features.has("timestamp-query");
  }

  header(): void {
    this.print(cells(COLUMNS.map(([name]) => name)));
  }

  async gpu(fn: () => void, reps = this.quick ? 3 : 7, pick = median): Promise<number> {
    // Collect the CPU references' garbage first: on a CPU adapter the collector's threads would share the cores
    // with the GPU work (the reconstruction rows ran 1.5x to 2x slower after their references' 77 MB arrays).
    collectGarbage();
    // The first call compiles pipelines and fills the buffer pool.
    fn();
    await this.engine.sync();
    const samples: number[] = [];
    if (this.timestamps) {
      // Slow kernels stop early: `reps` is at most what fits the time budget.
      const budget = this.quick ? QUICK_BUDGET_MS : BUDGET_MS;
      let spent = 0;
      while (samples.length < reps && (samples.length === 0 || spent < budget)) {
        samples.push((await this.engine.profile(fn, MAX_PASSES))!);
        spent += samples.at(-1)!;
      }
      return pick(samples);
    }
    let t = performance.now();
    fn();
    await this.engine.sync();
    const calls = Math.min(1000, Math.max(1, Math.ceil(MIN_WALL_MS / (performance.now() - t))));
    for (let r = 0; r < reps; r++) {
      t = performance.now();
      for (let i = 0; i < calls; i++) fn();
      await this.engine.sync();
      samples.push((performance.now() - t) / calls);
    }
    return pick(samples);
  }

  cpu(fn: () => void, reps = this.quick ? 3 : 5): number {
    const time = () => {
      const t = performance.now();
      fn();
      return performance.now() - t;
    };
    // The first call warms the JIT up; one this long makes that noise, so it counts as a sample.
    const first = time();
    const samples = first >= LONG_CPU_MS ? [first] : [];
    while (samples.length < reps) samples.push(time());
    return median(samples);
  }

  add(row: Row): void {
    const r: Result = { ...row };
    const { copyGBps, fmaGFLOPs } = this.ceilings;
    if (row.bytes !== undefined) {
      r.gbps = row.bytes / row.ms / 1e6;
      if (row.backend !== "cpu" && copyGBps > 0) r.ofCopy = r.gbps / copyGBps;
    }
    if (row.flops !== undefined) {
      r.gflops = row.flops / row.ms / 1e6;
      if (row.backend !== "cpu" && fmaGFLOPs > 0) r.ofFma = r.gflops / fmaGFLOPs;
    }
    // Speedups pair pretext's webgpu and cpu rows only; a peer's row says its ratio in its note.
    const other = row.backend === "webgpu" ? "cpu" : row.backend === "cpu" ? "webgpu" : null;
    const match = this.results.find((m) =>
      m.kernel === row.kernel && m.size === row.size && m.backend === other
    );
    const gpuRow = row.backend === "webgpu" ? r : match;
    const cpuRow = row.backend === "cpu" ? r : match;
    if (match && gpuRow && cpuRow) gpuRow.speedup = cpuRow.ms / gpuRow.ms;
    this.results.push(r);
    // Show the rate nearer its ceiling: that is the bound the kernel runs into.
    const byFlops = r.gflops !== undefined && (r.gbps === undefined || (r.ofFma ?? 0) >= (r.ofCopy ?? 0));
    const rate = byFlops
      ? `${r.gflops!.toFixed(1)} GFLOP/s`
      : r.gbps !== undefined
      ? `${r.gbps.toFixed(2)} GB/s`
      : "";
    const of = byFlops ? r.ofFma : r.ofCopy;
    const notes = [
      row.peakBytes !== undefined ? `peak ${(row.peakBytes / 2 ** 20).toFixed(1)} MiB` : "",
      row.note ?? "",
    ].filter(Boolean).join("; ");
    this.print(
      cells([
        row.kernel,
        row.size,
        row.backend,
        fmtMs(row.ms),
        rate,
        of !== undefined ? pct(of) : "",
        match && gpuRow?.speedup !== undefined ? `${gpuRow.speedup.toFixed(1)}x` : "",
      ]) + (notes ? `  ${notes}` : ""),
    );
  }

  /** The --json document. */
  json(): { adapter: string; ceilings: { copyGBps: number; fmaGFLOPs: number }; results: Result[] } {
    return { adapter: this.engine.adapterName, ceilings: this.ceilings, results: this.results };
  }
}
