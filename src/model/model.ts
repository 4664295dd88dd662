// A model ready to run: the forward graph in the IR plus what defenses need to know about it.
import type { Graph } from "../graph/ir.js";
import type { ModelSpec } from "./spec.js";

export interface ParamRef {
  /** IR initializer name holding this parameter (ONNX layout, e.g. Conv weight [cout, cin, kh, kw]). */
  value: string;
  /** Keras layer and weight name it maps to ("conv_3", "kernel:0"); empty for ONNX-imported models. */
  layer: string;
  weight: string;
}

/** Per-channel input normalisation baked into the graph: (x − mean) / std (see normalize.ts). */
export interface Normalization {
  mean: number[];
  std: number[];
}

export interface Model {
  name: string;
  /** Forward graph: input `input` [N, C, H, W] float32 already scaled; outputs `logits` [N, K] (pre-softmax). */
  graph: Graph;
  input: string;
  logits: string;
  /** [C, H, W] */
  inputShape: [number, number, number];
  numClasses: number;
  /** Layer name → IR value holding its output (NCHW for 4-D), in layer order. */
  layerOutputs: Map<string, string>;
  /** Trainable parameters. */
  params: ParamRef[];
  /** Present when (x − mean) / std nodes were prepended to the graph (--mean/--std). */
  normalization?: Normalization;
  /** Present when the model came from Keras: needed to write a Keras HDF5 file back. */
  spec?: ModelSpec;
  /**
   * "onnx": read from a framework's ONNX export (or a file this project wrote from one), whose BatchNorms may
   * have been folded into the convs (train/batch-norm-training.ts puts them back for training). Absent for Keras
   * networks, networks trained here, and the ONNX files written from those (onnx/provenance.ts).
   */
  origin?: "onnx";
}
