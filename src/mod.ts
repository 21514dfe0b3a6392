// pretext: a WebGPU compute engine for self-supervised learning. Ops are functions on tensors; the engine is
// taken from their inputs. This file is the public surface: helpers the op modules share stay internal.
export { type Binding, Engine, init, type InitOptions, type Kernel, Params } from "./engine.ts";
export { type DType, type GradNode, Tensor, type TypedArray } from "./tensor.ts";
export { DeviceError, DeviceLostError, KernelError, ShapeError } from "./errors.ts";
export { grad, noGrad } from "./autograd.ts";
export {
  abs,
  add,
  cast,
  clamp,
  div,
  equal,
  exp,
  gelu,
  greater,
  log,
  maximum,
  minimum,
  mul,
  neg,
  type Operand,
  pow,
  relu,
  sigmoid,
  sqrt,
  square,
  sub,
  tanh,
  where,
} from "./elementwise.ts";
export {
  argmax,
  argmin,
  logSoftmax,
  logsumexp,
  max,
  mean,
  min,
  type ReduceOptions,
  type Reduction,
  softmax,
  sum,
} from "./reduce.ts";
export { concat, reshape, slice, transpose } from "./shape.ts";
export { matmul, type MatmulOptions } from "./matmul.ts";
export { attention, type AttentionOptions, crossEntropy, type CrossEntropyOptions, normalize } from "./nn.ts";
export { embedding, gatherRows } from "./gather.ts";
export { dropout, type DropoutOptions } from "./random.ts";
export { sort, type SortOptions, topk, type TopkOptions } from "./topk.ts";
export { type KnnOptions, knnScores } from "./knn.ts";
export {
  avgPool2d,
  conv2d,
  type Conv2dOptions,
  fold,
  maxPool2d,
  type PoolOptions,
  unfold,
  type WindowOptions,
} from "./conv.ts";
export { type AffineOptions, batchNorm, type BatchNormOptions, layerNorm } from "./norm.ts";
export {
  dcl,
  type DCLOptions,
  enqueue,
  infoNCE,
  type InfoNCEOptions,
  negativeCosine,
  ntXent,
  type NTXentOptions,
  supCon,
  type SupConOptions,
} from "./contrastive.ts";
export {
  alignment,
  barlowTwins,
  type BarlowTwinsOptions,
  dino,
  dinoCenter,
  type DinoOptions,
  hypersphere,
  type HypersphereOptions,
  koleo,
  type KoLeoOptions,
  msn,
  type MSNOptions,
  sinkhorn,
  type SinkhornOptions,
  swav,
  type SwavOptions,
  tico,
  type TiCoOptions,
  uniformity,
  vicreg,
  type VICRegOptions,
} from "./joint_embedding.ts";
export {
  bceWithLogits,
  huber,
  l1,
  type LossOptions,
  maskedMSE,
  mse,
  smoothL1,
  ssim,
  ssimLoss,
  type SSIMOptions,
} from "./reconstruction.ts";
export {
  type ApplyOptions,
  applyParams,
  type Augmented,
  type Box,
  byolViews,
  colorJitter,
  dinoViews,
  type FactorRange,
  gaussianBlur,
  gaussianNoise,
  horizontalFlip,
  identityParams,
  type Jitter,
  type JitterOptions,
  type MultiCropOptions,
  type MultiCropViews,
  normalizeChannels,
  randomErasing,
  randomGrayscale,
  type RandomOptions,
  randomResizedCrop,
  rotate90,
  type SampleParams,
  simclrViews,
  solarize,
  swavViews,
  type Views,
} from "./augment.ts";
export {
  colorizationTask,
  denoiseTask,
  jigsawPermutations,
  jigsawTask,
  maskedImageTask,
  maskedTokenTask,
  NEIGHBORS,
  relativePositionTask,
  rotationTask,
} from "./pretext.ts";
export {
  adam,
  type AdamOptions,
  adamw,
  clipGradNorm,
  cosineSchedule,
  type CosineScheduleOptions,
  emaUpdate,
  lars,
  type LarsOptions,
  Optimizer,
  sgd,
  type SgdOptions,
} from "./optim.ts";
