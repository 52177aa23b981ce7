// TinyVLM weights as safetensors: F32 tensors under the model's state-dict keys, and the
// config in the header's metadata (image_size, patch_size, dim, layers, heads, mlp_ratio,
// vocab_size, max_positions, stem as "channels:stride,…" (empty: none), grid_convs, vision_layers).
// `sincosImagePositions` only chooses an initialisation, so it is not stored and a loaded
// model's config has it false.
// Loading is strict: a missing, extra or misshaped tensor, a non-F32 tensor or a missing /
// malformed config entry is a `TinyVLMCheckpointError` naming the file.

import Foundation
import Formats
import NN
import Tensors

/// A TinyVLM checkpoint could not be read or written.
public struct TinyVLMCheckpointError: Error, CustomStringConvertible {
    public let file: String
    public let reason: String
    public var description: String { "TinyVLM checkpoint \(file): \(reason)" }
}

extension TinyVLMConfig {
    /// The config as safetensors metadata.
    public var metadata: [String: String] {
        ["format": "tinyvlm", "image_size": "\(imageSize)", "patch_size": "\(patchSize)", "dim": "\(dim)",
         "layers": "\(layers)", "heads": "\(heads)", "mlp_ratio": "\(mlpRatio)", "vocab_size": "\(vocabSize)",
         "max_positions": "\(maxPositions)", "stem": stem.map(\.description).joined(separator: ","),
         "grid_convs": "\(gridConvs)", "vision_layers": "\(visionLayers)"]
    }
}

extension TinyVLM {
    /// The model in `path` (strict load; the config from the file's metadata).
    public static func load(checkpoint path: String) throws -> TinyVLM {
        let file: SafeTensors
        do {
            file = try SafeTensors.read(URL(fileURLWithPath: path))
        } catch {
            throw TinyVLMCheckpointError(file: path, reason: "\(error)")
        }
        func int(_ key: String) throws -> Int {
            guard let s = file.metadata[key], let v = Int(s), v > 0 else {
                throw TinyVLMCheckpointError(file: path, reason: "metadata '\(key)' missing or not a positive integer (found \(file.metadata[key] ?? "nothing"))")
            }
            return v
        }
        func count(_ key: String) throws -> Int {
            guard let s = file.metadata[key], let v = Int(s), v >= 0 else {
                throw TinyVLMCheckpointError(file: path, reason: "metadata '\(key)' missing or not a non-negative integer (found \(file.metadata[key] ?? "nothing"))")
            }
            return v
        }
        func stem() throws -> [TinyVLMStemConv] {
            guard let s = file.metadata["stem"] else {
                throw TinyVLMCheckpointError(file: path, reason: "metadata 'stem' missing (expected 'channels:stride,…' or empty)")
            }
            return try [TinyVLMStemConv](parsing: s) {
                TinyVLMCheckpointError(file: path, reason: "metadata 'stem' entry '\($0)' is not 'channels:stride' with positive integers")
            }
        }
        guard file.metadata["format"] == "tinyvlm" else {
            throw TinyVLMCheckpointError(file: path, reason: "metadata 'format' is \(file.metadata["format"] ?? "missing"), expected 'tinyvlm'")
        }
        let (s, p, d, h) = (try int("image_size"), try int("patch_size"), try int("dim"), try int("heads"))
        let stemConvs = try stem()
        if let problem = TinyVLMConfig.problem(imageSize: s, patchSize: p, dim: d, heads: h, stem: stemConvs,
                                               sincosImagePositions: false) {
            throw TinyVLMCheckpointError(file: path, reason: "inconsistent config: \(problem)")
        }
        let config = TinyVLMConfig(imageSize: s, patchSize: p, dim: d, layers: try int("layers"), heads: h,
                                   mlpRatio: try int("mlp_ratio"), vocabSize: try int("vocab_size"),
                                   maxPositions: try int("max_positions"), stem: stemConvs, gridConvs: try count("grid_convs"), visionLayers: try count("vision_layers"))
        for e in file.entries where e.dtype != .F32 {
            throw TinyVLMCheckpointError(file: path, reason: "tensor '\(e.name)' is \(e.dtype.rawValue), expected F32")
        }
        var rng = PhiloxRNG(seed: 0)
        let model = TinyVLM(config, rng: &rng)
        do {
            try model.load(stateDict: file.floatTensors)
        } catch {
            throw TinyVLMCheckpointError(file: path, reason: "\(error)")
        }
        return model
    }

    /// Writes the weights (F32) and the config to `path` atomically.
    public func save(checkpoint path: String) throws {
        let tensors = Dictionary(uniqueKeysWithValues: stateDict().map { ($0.0, $0.1.detached()) })
        do {
            try SafeTensors.write(tensors: tensors, metadata: config.metadata, to: URL(fileURLWithPath: path))
        } catch {
            throw TinyVLMCheckpointError(file: path, reason: "\(error)")
        }
    }
}
