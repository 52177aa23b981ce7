// F-LMM's text side (frozen_*.py `_forward`): the LMM's last L hidden states are mixed with
// softmax(text_layer_weights) (a trained vector that starts at ones, i.e. uniform 1/L), and
// each phrase's tokens are projected by `text_proj` (Linear d → SAM's prompt dim, 256), giving
// the text prompts of the SAM refiner.

import NN
import Tensors

/// `text_layer_weights` and `text_proj`, under F-LMM's state-dict keys.
public final class TextEmbedding: Module {
    /// [L], trained; softmax gives the layer mix.
    public let textLayerWeights: Tensor
    /// Linear(hidden size d → prompt dim), PyTorch's default init.
    public let textProj: Linear

    public var children: [ModuleChild] {
        [.parameter("text_layer_weights", textLayerWeights), .module("text_proj", textProj)]
    }

    /// For an LMM with `layers` layers and hidden size `hiddenSize`, projecting to `embedDim`
    /// (SAM's prompt_embed_dim, 256 for the real SAM). Weights start at ones.
    public init(layers: Int, hiddenSize: Int, embedDim: Int = 256, rng: inout PhiloxRNG) {
        precondition(layers > 0, "TextEmbedding: \(layers) layers")
        textLayerWeights = Tensor(repeating: 1, shape: [layers], requiresGrad: true)
        textProj = Linear(hiddenSize, embedDim, rng: &rng)
    }

    /// softmax(text_layer_weights) [L] (`get_text_layer_weights`).
    public func layerWeights() -> Tensor { textLayerWeights.softmax(dim: 0) }

    /// Σ_l softmax(w)_l · hiddenStates[l]: [L, T, d] → [T, d].
    public func weightedHiddenStates(_ hiddenStates: Tensor) -> Tensor {
        let l = textLayerWeights.shape[0]
        precondition(hiddenStates.rank == 3 && hiddenStates.shape[0] == l,
                     "TextEmbedding: hidden states \(hiddenStates.shape) must be [\(l), T, d]")
        return (hiddenStates * layerWeights().reshape([l, 1, 1])).sum([0])
    }

    /// Per phrase k < numMasks: text_proj of the weighted hidden states of the tokens with mask
    /// id k, in sequence order → [n_k, embedDim]. Hidden states [L, T, d], `maskIDs` [T]
    /// (−1 = no phrase). Throws for a mask id out of range or a phrase without tokens.
    public func callAsFunction(hiddenStates: Tensor, maskIDs: [Int], numMasks: Int) throws
        -> (weighted: Tensor, embeddings: [Tensor]) {
        let l = textLayerWeights.shape[0], d = textProj.inFeatures
        guard hiddenStates.rank == 3 && hiddenStates.shape[0] == l && hiddenStates.shape[2] == d else {
            throw AttentionMapError.shape(what: "hidden states", expected: "[\(l), T, \(d)]", actual: hiddenStates.shape)
        }
        guard hiddenStates.shape[1] == maskIDs.count else {
            throw AttentionMapError.tokenCount(what: "mask ids", expected: hiddenStates.shape[1], actual: maskIDs.count)
        }
        let rows = try AttentionMaps.phraseRows(maskIDs: maskIDs, numMasks: numMasks)
        let hs = weightedHiddenStates(hiddenStates)
        return (hs, rows.map { textProj(hs.indexSelect(dim: 0, index: $0)) })
    }
}
