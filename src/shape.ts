// Shape ops: reshape, transpose, slice, concat (shaders/shape.wgsl; CPU reference in src/ref/shape.ts).
import { record } from "./autograd.ts";
import { fmtShape, ShapeError } from "./errors.ts";
import { shapeSize, type Tensor } from "./tensor.ts";

/** Same elements, new shape (one dim may be -1). A copy: tensors never share buffers, so dispose stays simple. */
export function reshape(x: Tensor, shape: readonly number[]): Tensor {
  const known = shape.filter((d) => d !== -1);
  const free = shape.length - known.length;
  const rest = shapeSize(known);
  const resolved = free === 1 && rest > 0 && x.size % rest === 0 ? shape.map((d) => (d === -1 ? x.size / rest : d)) : shape;
  if (free > 1 || shapeSize(resolved.map((d) => Math.max(d, 0))) !== x.size || resolved.includes(-1)) {
    throw new ShapeError(`reshape: cannot reshape ${fmtShape(x.shape)} (${x.size} elements) to ${fmtShape(shape)}`);
  }
  const out = x.engine.empty(resolved, x.dtype);
  x.engine.copy(x.buffer, 0, out.buffer, 0, x.bytes);
  return record(out, "reshape", [x], (g) => [reshape(g, x.shape)]);
}
