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
