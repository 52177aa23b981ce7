// nn.Embedding.

import Tensors

/// `nn.Embedding(num_embeddings, embedding_dim)`: a lookup table of rows.
/// Key: `weight` [numEmbeddings, embeddingDim], initialised N(0, 1).
/// SAM reads its embeddings' `weight` directly (`iou_token.weight`, `point_embeddings[i].weight`).
public final class Embedding: Module {
    public let numEmbeddings: Int
    public let embeddingDim: Int
    /// [numEmbeddings, embeddingDim]
    public let weight: Tensor

    public var children: [ModuleChild] { [.parameter("weight", weight)] }

    public init(_ numEmbeddings: Int, _ embeddingDim: Int, rng: inout PhiloxRNG) {
        precondition(numEmbeddings > 0 && embeddingDim > 0,
                     "Embedding: num_embeddings \(numEmbeddings) and embedding_dim \(embeddingDim) must be positive")
        self.numEmbeddings = numEmbeddings
        self.embeddingDim = embeddingDim
        weight = Tensor(repeating: 0, shape: [numEmbeddings, embeddingDim], requiresGrad: true)
        Init.normal(weight, mean: 0, std: 1, rng: &rng)
    }

    /// The rows `indices` of the table: [indices.count, embeddingDim]. The gradient adds into
    /// the selected rows (repeats accumulate).
    public func callAsFunction(_ indices: [Int]) -> Tensor {
        precondition(indices.allSatisfy { (0..<numEmbeddings).contains($0) },
                     "Embedding(\(numEmbeddings), \(embeddingDim)): index out of range in \(indices)")
        return weight.indexSelect(dim: 0, index: indices)
    }
}
