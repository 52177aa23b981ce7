import ArgumentParser
import Crypto
import FLMMExperiments
import Foundation
import ShapesWorld
import Tensors

/// `flmm world …`: the embedded ShapesWorld and its frozen models.
struct World: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "world",
        abstract: "ShapesWorld: pretrain and evaluate the frozen models (TinyVLM, TinySAM).",
        subcommands: [PretrainVLM.self, EvaluateVLM.self, PretrainSAM.self, EvaluateSAM.self, Evaluate.self]
    )

    static func stderr(_ s: String) {
        FileHandle.standardError.write(Data((s + "\n").utf8))
    }

    struct PretrainVLM: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "pretrain-vlm",
            abstract: "Pretrain TinyVLM from scratch (TinyVLMPretrainConfig.standard) and write its weights.",
            discussion: """
                Deterministic: the same config gives bitwise the same file on any thread count \
                (FLMM_THREADS). Progress goes to stderr; the file is written atomically and its \
                SHA-256 printed as `sha256sum` does.
                """
        )

        @Option(help: "Output safetensors file.")
        var out: String = "Checkpoints/tinyvlm.safetensors"

        @Option(help: "Optimiser steps (default: the standard config's).")
        var steps: Int?

        @Option(help: "Print a progress line every N steps.")
        var every: Int = 25

        @Option(help: .hidden) var lr: Double?
        @Option(help: .hidden) var batch: Int?
        @Option(help: .hidden) var descriptionFraction: Double?
        /// Model variants for experiments: image size, patch size, stem ("channels:stride,…"),
        /// vision layers, dim, LM layers.
        @Option(help: .hidden) var imageSize: Int?
        @Option(help: .hidden) var patch: Int?
        @Option(help: .hidden) var stem: String?
        @Option(help: .hidden) var visionLayers: Int?
        @Option(help: .hidden) var gridConvs: Int?
        @Option(help: .hidden) var dim: Int?
        @Option(help: .hidden) var layers: Int?
        @Option(help: .hidden) var attributeWeight: Double?
        @Option(help: .hidden) var trainScenes: Int?
        /// Runs only the first N steps and prints the SHA-256 of the losses' and the weights' Float
        /// bits (what TinyVLMPretrainTests pins) instead of writing a checkpoint.
        @Option(help: .hidden) var prefixDigests: Int?

        func run() throws {
            var cfg = TinyVLMPretrainConfig.standard
            if let steps { cfg = cfg.with(steps: steps) }
            if let lr { cfg.lr = lr }
            if let batch { cfg.batchSize = batch }
            if let descriptionFraction { cfg.descriptionFraction = descriptionFraction }
            if let attributeWeight { cfg.attributeWeight = attributeWeight }
            if let trainScenes { cfg.trainScenes = trainScenes }
            let m = cfg.model
            let stemConvs = try stem.map {
                try [TinyVLMStemConv](parsing: $0) { ValidationError("--stem entry '\($0)': expected channels:stride with positive integers") }
            } ?? m.stem
            let (size, p, d) = (imageSize ?? m.imageSize, patch ?? m.patchSize, dim ?? m.dim)
            if let problem = TinyVLMConfig.problem(imageSize: size, patchSize: p, dim: d, heads: m.heads, stem: stemConvs,
                                                   sincosImagePositions: m.sincosImagePositions) {
                throw ValidationError("--image-size \(size), --patch \(p), --stem, --dim \(d): \(problem)")
            }
            cfg.model = TinyVLMConfig(
                imageSize: size, patchSize: p, dim: d, layers: layers ?? m.layers, heads: m.heads, mlpRatio: m.mlpRatio,
                vocabSize: m.vocabSize, stem: stemConvs, gridConvs: gridConvs ?? m.gridConvs,
                visionLayers: visionLayers ?? m.visionLayers, sincosImagePositions: m.sincosImagePositions)
            if cfg != .standard.with(steps: cfg.steps) {
                World.stderr("pretrain-vlm: NOT the standard config (lr \(cfg.lr), batch \(cfg.batchSize), descriptions \(cfg.descriptionFraction), model \(cfg.model))")
            }
            World.stderr("pretrain-vlm: \(cfg.steps) steps × \(cfg.batchSize) samples, grid \(cfg.model.grid)×\(cfg.model.grid), D \(cfg.model.dim), L \(cfg.model.layers), NH \(cfg.model.heads), threads \(Parallel.threads)")
            if let n = prefixDigests {
                let (model, losses) = TinyVLMPretraining.run(cfg, stopAfter: n)
                func digest(_ v: [Float]) -> String {
                    v.withUnsafeBytes { SHA256.hash(data: $0) }.map { String(format: "%02x", $0) }.joined()
                }
                print("losses \(losses)")
                print("losses_sha256 \(digest(losses))")
                print("weights_sha256 \(digest(model.stateDict().flatMap { $0.1.data }))")
                return
            }
            let start = Date()
            let every = max(1, self.every)
            let (model, losses) = TinyVLMPretraining.run(cfg) { p in
                if p.step % every == 0 || p.step == p.steps {
                    World.stderr(String(format: "step %d/%d  loss %.4f  %.1f samples/s  ETA %.0f s",
                                        p.step, p.steps, p.loss, p.samplesPerSecond, p.secondsLeft))
                }
            }
            let dir = URL(fileURLWithPath: out).deletingLastPathComponent()
            try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
            try model.save(checkpoint: out)
            World.stderr(String(format: "pretrain-vlm: %.1f s, final loss %.4f", Date().timeIntervalSince(start),
                                losses.last ?? .nan))
            print("\(try FileDigest.sha256(URL(fileURLWithPath: out)))  \(out)")
        }
    }

    struct EvaluateVLM: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "evaluate-vlm",
            abstract: "Pointing and token accuracy of a TinyVLM checkpoint on ShapesWorld val.",
            discussion: "Prints `metric <name> <value>` lines (see TinyVLMEvaluation.swift for the definitions)."
        )

        @Option(help: "TinyVLM checkpoint.")
        var checkpoint: String = "Checkpoints/tinyvlm.safetensors"

        @Option(help: "Number of val samples (default: all).")
        var count: Int?

        func run() throws {
            let model = try TinyVLM.load(checkpoint: checkpoint)
            let cfg = TinyVLMPretrainConfig.standard
            let r = TinyVLMEvaluation.evaluate(model, world: ShapesWorld(seed: cfg.worldSeed), count: count)
            print("metric pointing_accuracy \(r.pointingAccuracy)")
            print("metric pointing_chance \(r.pointingChance)")
            print("metric pointing_best_layer \(r.bestLayer)")
            for (l, a) in r.pointingPerLayer.enumerated() { print("metric pointing_accuracy_layer\(l) \(a)") }
            for kind in ExpressionKind.allCases {
                guard let k = r.perKind[kind] else { continue }
                print("metric pointing_accuracy_\(kind.rawValue) \(k.perLayer[r.bestLayer])")
                print("metric pointing_phrases_\(kind.rawValue) \(k.count)")
            }
            print("metric pointing_phrases \(r.phrases)")
            print("metric token_accuracy \(r.tokenAccuracy)")
            print("metric token_count \(r.attributeTokens)")
            for cls in ["size", "colour", "shape"] {
                if let a = r.tokenAccuracyByClass[cls] { print("metric token_accuracy_\(cls) \(a)") }
            }
            for cls in VisionTower.attributeGroups {
                if let a = r.cellAttributeAccuracy[cls] { print("metric cell_attribute_accuracy_\(cls) \(a)") }
            }
        }
    }

    struct Evaluate: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Every ShapesWorld target on val with the committed checkpoints: TinyVLM's pointing and token accuracy, TinySAM's box mIoU.",
            discussion: "Prints `metric <name> <value>` lines: those of evaluate-vlm, then those of evaluate-sam."
        )

        @Option(help: "TinyVLM checkpoint.")
        var vlm: String = "Checkpoints/tinyvlm.safetensors"

        @Option(help: "TinySAM checkpoint.")
        var sam: String = "Checkpoints/tinysam.safetensors"

        func run() throws {
            try EvaluateVLM.parse(["--checkpoint", vlm]).run()
            try EvaluateSAM.parse(["--checkpoint", sam]).run()
        }
    }
}
