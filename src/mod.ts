// pretext: a WebGPU compute engine for self-supervised learning. Ops are functions on tensors; the engine is
// taken from their inputs.
export { type Binding, Engine, init, type InitOptions, type Kernel, Params } from "./engine.ts";
export { type DType, type GradNode, Tensor, type TypedArray } from "./tensor.ts";
export { DeviceError, DeviceLostError, KernelError, ShapeError } from "./errors.ts";
export { grad, noGrad } from "./autograd.ts";
export * from "./elementwise.ts";
export * from "./reduce.ts";
export * from "./shape.ts";
export * from "./matmul.ts";
export * from "./nn.ts";
export * from "./contrastive.ts";
export * from "./augment.ts";
export * from "./pretext.ts";
export * from "./reconstruction.ts";
export * from "./joint_embedding.ts";
