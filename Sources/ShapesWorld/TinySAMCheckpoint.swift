// TinySAM's checkpoint: a safetensors file of F32 tensors under SAM's state-dict keys
// (image_encoder.*, prompt_encoder.*, mask_decoder.*, including the prompt encoder's
// positional-encoding buffer), as `Sam.stateDict()` names them.

import Foundation
import Formats
import NN
import SegmentAnything
import Tensors

/// A TinySAM checkpoint that cannot be read or does not fit `SamConfig.tinySAM`: the file and why.
public struct TinySAMCheckpointError: Error, Equatable, CustomStringConvertible {
    public let file: String
    public let reason: String

    public init(file: String, reason: String) {
        self.file = file
        self.reason = reason
    }

    public var description: String { "\(file): not a TinySAM checkpoint: \(reason)" }
}

extension TinySAM {
    /// The default place of the committed checkpoint, relative to the repository root.
    public static let checkpointPath = "Checkpoints/tinysam.safetensors"

    /// The safetensors bytes of `model`'s state dict (every entry F32), metadata `model: tinysam`.
    public static func checkpointBytes(_ model: Sam) -> [UInt8] {
        let entries = model.stateDict().map { SafeTensorsEntry(name: $0.0, tensor: $0.1) }
        return SafeTensors(entries: entries, metadata: ["model": "tinysam"]).serialized()
    }

    /// Writes `model`'s state dict to `path` atomically (temporary file, then rename).
    public static func save(_ model: Sam, to path: String) throws {
        let entries = model.stateDict().map { SafeTensorsEntry(name: $0.0, tensor: $0.1) }
        try SafeTensors.write(entries, metadata: ["model": "tinysam"], to: URL(fileURLWithPath: path))
    }
}

extension Sam {
    /// A `SamConfig.tinySAM` model with the weights of the checkpoint at `path`, loaded strictly
    /// (every key present with its shape, no other key, every tensor F32). Without the image
    /// encoder, the checkpoint's `image_encoder.*` keys are skipped.
    public static func loadTinySAM(checkpoint path: String,
                                   includeImageEncoder: Bool = true) throws(TinySAMCheckpointError) -> Sam {
        let file: SafeTensors
        do {
            file = try SafeTensors.read(URL(fileURLWithPath: path))
        } catch {
            throw TinySAMCheckpointError(file: path, reason: String(describing: error))
        }
        let (dict, refused) = stateDict(file.entries, includeImageEncoder: includeImageEncoder) { $0.dtype == .F32 }
        if let e = refused {
            throw TinySAMCheckpointError(file: path, reason: "tensor '\(e.name)' is \(e.dtype.rawValue), expected F32")
        }
        var rng = PhiloxRNG(seed: 0)
        let model = Sam(.tinySAM, includeImageEncoder: includeImageEncoder, rng: &rng)
        do {
            try model.load(stateDict: dict, file: path)
        } catch {
            throw TinySAMCheckpointError(file: path, reason: error.cause.description)
        }
        return model
    }

    /// The float tensors of a weight file by name, without `image_encoder.*` unless
    /// `includeImageEncoder`; `refused` is the first entry that is not a float tensor or that
    /// `accept` refuses (then `dict` is incomplete).
    static func stateDict(_ entries: [SafeTensorsEntry], includeImageEncoder: Bool,
                          accept: (SafeTensorsEntry) -> Bool) -> (dict: [String: Tensor], refused: SafeTensorsEntry?) {
        var dict: [String: Tensor] = [:]
        for e in entries where includeImageEncoder || !e.name.hasPrefix("image_encoder.") {
            guard accept(e), let values = e.floats() else { return (dict, e) }
            dict[e.name] = Tensor(shape: e.shape, data: values)
        }
        return (dict, nil)
    }
}

/// A SAM checkpoint file that cannot be loaded as the model asked for: the file and why.
public struct SamFileError: Error, Equatable, CustomStringConvertible {
    public let file: String
    public let reason: String
    public var description: String { "\(file): cannot load SAM: \(reason)" }
}

extension Sam {
    /// The SAM names `load(checkpoint:model:)` takes.
    public static let checkpointModels = ["tinysam", "vit_b", "vit_l", "vit_h"]

    /// TinySAM (`model` "tinysam": `loadTinySAM`, a safetensors file of F32 tensors) or an
    /// official preset ("vit_b", "vit_l", "vit_h": `sam_vit_*.pth` or its safetensors conversion),
    /// loaded strictly. Without the image encoder, the checkpoint's `image_encoder.*` keys are
    /// skipped (the refiner needs only the prompt encoder and the mask decoder).
    public static func load(checkpoint path: String, model: String, includeImageEncoder: Bool = true) throws -> Sam {
        guard FileManager.default.fileExists(atPath: path) else {
            throw SamFileError(file: path, reason: "no such file")
        }
        if model == "tinysam" { return try loadTinySAM(checkpoint: path, includeImageEncoder: includeImageEncoder) }
        guard let config = SamConfig.preset(model), model != "default" else {
            throw SamFileError(file: path, reason: "unknown SAM model '\(model)' (expected one of \(checkpointModels.joined(separator: ", ")))")
        }
        let entries: [SafeTensorsEntry]
        do {
            entries = try WeightFile.read(URL(fileURLWithPath: path)).entries
        } catch {
            throw SamFileError(file: path, reason: String(describing: error))
        }
        let (dict, refused) = stateDict(entries, includeImageEncoder: includeImageEncoder) { _ in true }
        if let e = refused {
            throw SamFileError(file: path, reason: "tensor '\(e.name)' is \(e.dtype.rawValue), expected a float type")
        }
        var rng = PhiloxRNG(seed: 0)
        let sam = Sam(config, includeImageEncoder: includeImageEncoder, rng: &rng)
        try sam.load(stateDict: dict, file: path)
        return sam
    }
}
