// TEMPORARY stub so the tree type-checks until the reductions land.
import type { Tensor } from "./tensor.ts";
export function sum(_x: Tensor, _axes?: number | number[], _opts?: { keepDims?: boolean }): Tensor {
  throw new Error("sum: not implemented yet");
}
