/** No WebGPU adapter or device could be had. */
export class DeviceError extends Error {
  override name = "DeviceError";
}

/** The GPU device was lost (driver reset, `device.destroy()`); call `init()` again for a new engine. */
export class DeviceLostError extends Error {
  override name = "DeviceLostError";
}

/** Shapes that do not fit together; the message names every shape involved. */
export class ShapeError extends Error {
  override name = "ShapeError";
}

/** A WebGPU validation, out-of-memory or WGSL error, reported by the op that caused it. */
export class KernelError extends Error {
  override name = "KernelError";
}

export function fmtShape(shape: readonly number[]): string {
  return `[${shape.join(", ")}]`;
}

/**
 * How a kernel's report of indices out of range (shaders/lib/bad_index.wgsl: the count, the largest and the
 * complemented smallest index as order-preserving keys, the complemented first position) reads, for
 * engine.dataCheck: "OP: 2 NOUNs outside RANGE (from A to B; the first in PLACE P): EFFECT", null if none.
 */
export function describeBadIndices(
  o: { op: string; noun: string; outside: string; place: string; effect: string },
): (words: Uint32Array) => string | null {
  return ([count, largest, notSmallest, notFirst]) => {
    if (count === 0) return null;
    const index = (key: number) => key ^ 0x80000000; // back from the order-preserving key, as an i32
    const what = count === 1 ? `1 ${o.noun}` : `${count} ${o.noun}s`;
    const range = `from ${index(~notSmallest)} to ${index(largest)}; the first in ${o.place} ${
      ~notFirst >>> 0
    }`;
    return `${o.op}: ${what} outside ${o.outside} (${range}): ${o.effect}`;
  };
}

/**
 * Throws a TypeError naming an option the op does not know: a misspelt one (`temprature`) would leave its
 * default in place, silently, since JavaScript checks no keys. `known` lists every option of the op, which
 * the type checker holds to the options type's keys; `required` ops need an options object at all.
 */
export function checkOptions<T extends object>(
  op: string,
  options: T | undefined,
  known: Record<keyof T, true>,
  required = false,
): void {
  const names = Object.keys(known);
  if (options === undefined && !required) return;
  if (options === null || typeof options !== "object") {
    const got = options === null ? "null" : typeof options;
    throw new TypeError(`${op}: needs an options object ({ ${names.join(", ")} }), got ${got}`);
  }
  // for-in: inherited keys are read as options too, so a misspelt inherited one must not pass.
  for (const key in options) {
    if (Object.hasOwn(known, key)) continue;
    // The nearest name, within an edit per three letters (at least one).
    const cap = Math.max(1, Math.floor(key.length / 3));
    const near = names
      .map((name) => ({ name, d: editDistance(name.toLowerCase(), key.toLowerCase()) }))
      .filter(({ d }) => d <= cap)
      .sort((a, b) => a.d - b.d)[0]?.name;
    throw new TypeError(
      `${op}: unknown option '${key}'${near ? ` (did you mean '${near}'?)` : ""}; its options are ` +
        (names.join(", ") || "none"),
    );
  }
}

/** Levenshtein distance, for checkOptions' suggestion. */
function editDistance(a: string, b: string): number {
  let row = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const next = [i];
    for (let j = 1; j <= b.length; j++) {
      next[j] = Math.min(row[j] + 1, next[j - 1] + 1, row[j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
    row = next;
  }
  return row[b.length];
}
