// F-LMM's grounding head: attention maps per LMM layout, text embeddings, the U-Net mask
// head, the SAM refiner, losses and metrics. Models never touch files: weights arrive as
// `[String: Tensor]` with F-LMM's state-dict keys.
