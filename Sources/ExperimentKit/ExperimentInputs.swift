// What a grid starts from: the train and val GroundingCaches and the refiner's pretrained SAM
// weights (TinySAM's, or an official SAM's with --sam / --sam-model).
//
// Without --cache, the profile's ShapesWorld caches are used:
//   <out>/caches/shapesworld-<profile>-train.nc and -val.nc (world seed 0; the profile's sample
//   counts; phrase rows in float16), built on demand from the committed frozen checkpoints
//   (Checkpoints/tinyvlm.safetensors, Checkpoints/tinysam.safetensors). A cache that exists is
//   reused as it is; its SHA-256 is recorded in every Results file, so results made from
//   different caches never mix (resume and merge check it).

import FLMMExperiments
import Formats
import Foundation
import GroundingCache
import SegmentAnything
import ShapesWorld
import Tensors

extension ExperimentOptions {
    /// The caches (built when missing) and the refiner's prompt encoder + mask decoder weights
    /// (TinySAM's, or an official SAM's with --sam).
    public func loadInputs(profile: Profile, progress: @escaping (String) -> Void) throws -> GridInputs {
        let (trainURL, valURL) = try caches(profile: profile, progress: progress)
        let train = try GroundingDataset(url: trainURL)
        let val = try GroundingDataset(url: valURL)
        guard train.header.layers == val.header.layers, train.header.heads == val.header.heads,
              train.header.hiddenSize == val.header.hiddenSize,
              train.header.layout.modelLayout == val.header.layout.modelLayout else {
            throw ExperimentError("--cache \(trainURL.path) and --val-cache \(valURL.path) come from different models")
        }
        let (samPath, samName) = try refinerCheckpoint()
        let samURL = URL(fileURLWithPath: samPath)
        let sam = try Sam.load(checkpoint: samPath, model: samName, includeImageEncoder: false)
        let weights = Dictionary(uniqueKeysWithValues: sam.stateDict())
        let e = sam.config.promptEncoder
        for (url, s) in [(trainURL, train.header.sam!), (valURL, val.header.sam!)]
        where s.embeddingDim != e.embedDim || s.embeddingHeight != e.imageEmbeddingSize.0 || s.embeddingWidth != e.imageEmbeddingSize.1 {
            throw ExperimentError("\(url.path): SAM embeddings \(s.embeddingDim)×\(s.embeddingHeight)×\(s.embeddingWidth) (\(s.model)) do not fit the \(samName) refiner of \(samPath) (\(e.embedDim)×\(e.imageEmbeddingSize.0)×\(e.imageEmbeddingSize.1)); pass the SAM the embeddings came from with --sam FILE --sam-model vit_b|vit_l|vit_h")
        }
        return GridInputs(train: train, val: val, samConfig: sam.config, samWeights: weights,
                          samDigest: try FileDigest.sha256(samURL))
    }

    /// The refiner's checkpoint and model: --sam with --sam-model, or TinySAM (--tinysam).
    func refinerCheckpoint() throws -> (String, String) {
        switch (sam, samModel) {
        case (nil, nil): return (tinysam, "tinysam")
        case (let path?, let model?):
            guard Sam.checkpointModels.contains(model) else {
                throw ExperimentError("--sam-model '\(model)': expected one of \(Sam.checkpointModels.joined(separator: ", "))")
            }
            return (path, model)
        case (nil, let model?): throw ExperimentError("--sam-model \(model) needs --sam FILE (the checkpoint)")
        case (let path?, nil): throw ExperimentError("--sam \(path) needs --sam-model vit_b|vit_l|vit_h")
        }
    }

    /// The cache files: --cache / --val-cache, or the profile's ShapesWorld caches (built if missing).
    func caches(profile: Profile, progress: @escaping (String) -> Void) throws -> (URL, URL) {
        if let cache {
            guard let valCache else { throw ExperimentError("--cache \(cache) needs --val-cache too (the evaluation split)") }
            return (URL(fileURLWithPath: cache), URL(fileURLWithPath: valCache))
        }
        guard valCache == nil else { throw ExperimentError("--val-cache needs --cache too") }
        let dir = URL(fileURLWithPath: out).appendingPathComponent("caches")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        // A cache built from other checkpoints (e.g. before `make pretrain` changed them) is
        // rebuilt, never silently reused: its provenance digests must be the current ones.
        var current: [String: String] = [:]
        for (key, path) in [("vlm_checkpoint_sha256", tinyvlm), ("sam_checkpoint_sha256", tinysam)]
        where FileManager.default.fileExists(atPath: path) {
            current[key] = try FileDigest.sha256(URL(fileURLWithPath: path))
        }
        var urls: [URL] = []
        for (split, count) in [(Split.train, profile.trainSamples), (Split.val, profile.valSamples)] {
            let url = dir.appendingPathComponent("shapesworld-\(profile.name)-\(split)-v\(GroundingCache.schemaVersion).nc")
            var build = !FileManager.default.fileExists(atPath: url.path)
            if !build {
                let made = try GroundingCacheReader(url: url).header.provenance
                if let stale = current.keys.sorted().first(where: { made[$0] != current[$0] }) {
                    progress("cache \(url.lastPathComponent): \(stale) \(made[stale] ?? "missing") is not the current \(current[stale]!); rebuilding")
                    build = true
                }
            }
            if build {
                try ExperimentOptions.buildCache(split: split, count: count, to: url, vlmPath: tinyvlm, samPath: tinysam,
                                                 progress: progress)
            }
            urls.append(url)
        }
        return (urls[0], urls[1])
    }

    /// Runs the frozen TinyVLM and TinySAM over `count` ShapesWorld samples (world seed 0).
    static func buildCache(split: Split, count: Int, to url: URL, vlmPath: String, samPath: String,
                           progress: @escaping (String) -> Void) throws {
        for (path, what) in [(vlmPath, "--tinyvlm"), (samPath, "--tinysam")] where !FileManager.default.fileExists(atPath: path) {
            throw ExperimentError("\(what) \(path): no such checkpoint (the committed ones are in Checkpoints/; `make pretrain` remakes them)")
        }
        let vlm = try TinyVLM.load(checkpoint: vlmPath)
        let sam = try Sam.loadTinySAM(checkpoint: samPath)
        let builder = GroundingCacheBuilder(world: ShapesWorld(seed: 0), vlm: vlm, sam: sam, form: .rows,
                                            vlmName: "TinyVLM (\(URL(fileURLWithPath: vlmPath).lastPathComponent))",
                                            samName: "TinySAM (\(URL(fileURLWithPath: samPath).lastPathComponent))")
        let provenance = ["vlm_checkpoint_sha256": try FileDigest.sha256(URL(fileURLWithPath: vlmPath)),
                          "sam_checkpoint_sha256": try FileDigest.sha256(URL(fileURLWithPath: samPath)),
                          "world_seed": "0"]
        let start = Date()
        try builder.build(split: split, count: count, to: url, provenance: provenance) { done, total in
            guard done % 25 == 0 || done == total else { return }
            let rate = Double(done) / max(Date().timeIntervalSince(start), 1e-9)
            progress("cache \(url.lastPathComponent): sample \(done)/\(total), \(String(format: "%.1f", rate)) samples/s, ETA \(Int((Double(total - done) / rate).rounded())) s")
        }
    }
}
