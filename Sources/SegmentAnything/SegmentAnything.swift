// Segment Anything (Kirillov et al., 2023) in Swift, one file per component of
// segment-anything's `modeling/`: ImageEncoderViT, PromptEncoder, TwoWayTransformer,
// MaskDecoder, Sam. Parameter names are the official checkpoints' state-dict keys.
