// Where an ONNX file's network came from, as far as training needs to know: whether its convs may carry
// BatchNorms folded into them (train/batch-norm-training.ts puts those back while a repair trains). A
// framework's export may have folded them (torch.onnx.export does, in eval mode); a file this project wrote from
// a Keras network or one it trained never had any folded. So our own files say so: a network first read from a
// framework's export keeps that mark through every repaired.onnx written from it, and a file without the mark
// and with our producer name is one of ours from Keras or from `train` (the zoo's model.onnx).

/** ModelProto.producer_name of every file this project writes. */
export const ONNX_PRODUCER = "badnet-defense";
/** metadata_props key of the mark, and its one value. */
export const FOLDED_KEY = "badnet-defense.batchnorm";
export const FOLDED_VALUE = "may-be-folded";

/** Whether a network read from an ONNX file with this producer name and metadata may have folded BatchNorms. */
export function mayHaveFoldedBatchNorm(producer: string, metadata: ReadonlyMap<string, string>): boolean {
  return producer !== ONNX_PRODUCER || metadata.get(FOLDED_KEY) === FOLDED_VALUE;
}

/** The metadata a file written from a network should carry (`origin` as in Model.origin). */
export function provenanceMetadata(origin: "onnx" | undefined): Record<string, string> {
  return origin === "onnx" ? { [FOLDED_KEY]: FOLDED_VALUE } : {};
}
