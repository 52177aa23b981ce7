// A GroundingCache read into memory: F-LMM's per-step inputs (`GroundingRecord.flmmSample`:
// the cached attention rows, the phrase tokens' hidden states, the frozen SAM embedding, the
// ground truth at the LMM's resized size, the unpadding rule) with each record's attention
// layout, and, for evaluation, the exact masks at the original size and each phrase's kind.

import FLMM
import Foundation
import GroundingCache
import Tensors

/// The records of one cache file.
public final class GroundingDataset {
    public let url: URL
    public let header: GroundingCacheHeader
    public let records: [GroundingRecord]
    let layouts: [any AttentionLayout]
    /// SHA-256 of the file (identifies the cache in Results files).
    public let digest: String

    /// Reads every record of the cache at `url`, or its first `limit`.
    public init(url: URL, limit: Int? = nil) throws {
        let reader = try GroundingCacheReader(url: url)
        guard reader.header.sam != nil else {
            throw GroundingCacheError(file: url.path, variable: "sam_embedding", kind: .badAttribute(
                expected: "SAM image embeddings, which F-LMM's refiner needs (add them with `flmm cache add-sam-embeddings`)",
                found: "none"))
        }
        let n = min(limit ?? reader.count, reader.count)
        self.url = url
        header = reader.header
        records = try (0..<n).map { try reader.record($0) }
        layouts = (0..<n).map { reader.layout($0) }
        digest = try FileDigest.sha256(url)
    }

    public var count: Int { records.count }

    /// F-LMM's input for record `i` (`GroundingRecord.flmmSample`) and its attention layout.
    public func sample(_ i: Int) -> (FLMMSample, any AttentionLayout) {
        (records[i].flmmSample(), layouts[i])
    }

    /// Record `i` for evaluation: the input, the exact masks and the phrase kinds.
    public func evalSample(_ i: Int) -> EvalSample {
        let (input, layout) = sample(i)
        return EvalSample(input: input, layout: layout, masks: records[i].maskTensor(), kinds: kinds(i))
    }

    /// The kind of each phrase of record `i`.
    public func kinds(_ i: Int) -> [PhraseGroup] {
        records[i].phraseKinds.map {
            switch $0 {
            case .attribute: return .attribute
            case .relational: return .relational
            case .plural: return .plural
            }
        }
    }

    /// (sample index, kind) of every phrase, in record then phrase order.
    public var phrases: [(sample: Int, kind: PhraseGroup)] {
        (0..<count).flatMap { i in kinds(i).map { (records[i].sampleIndex, $0) } }
    }
}
