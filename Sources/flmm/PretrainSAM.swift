import ArgumentParser
import FLMMExperiments
import Foundation
import SegmentAnything
import ShapesWorld
import Tensors

/// `flmm world pretrain-sam`: TinySAM pretraining from scratch (`TinySAMPretrainConfig.standard`),
/// deterministic for any FLMM_THREADS; writes the checkpoint atomically and prints its SHA-256.
struct PretrainSAM: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pretrain-sam",
        abstract: "Pretrain TinySAM on ShapesWorld (box and point prompts) and write its checkpoint.",
        discussion: """
            Trains SamConfig.tinySAM from scratch with TinySAMPretrainConfig.standard (or its first \
            --steps steps, with the cosine schedule then ending at that step). Progress goes to \
            stderr; the checkpoint (F32 safetensors, SAM state-dict keys) is written atomically, \
            then its line in `sha256sum` format is printed, with the box and point mIoU on val.
            """
    )

    @Option(help: "Output checkpoint.", completion: .file(extensions: ["safetensors"]))
    var out: String = TinySAM.checkpointPath

    @Option(help: "Number of steps (default: the standard configuration's).")
    var steps: Int?

    @Option(help: "Val scenes to evaluate after training (0: none).")
    var evalScenes: Int = 200

    // Search knobs (not part of the standard configuration).
    @Option(help: .hidden) var lr: Double?
    @Option(help: .hidden) var batch: Int?
    @Option(help: .hidden) var trainScenes: Int?
    @Option(help: .hidden) var patch: Int?
    @Option(help: .hidden) var focalWeight: Float?

    func run() throws {
        var config = TinySAMPretrainConfig.standard
        if let steps {
            guard steps >= 2 else { throw ValidationError("--steps must be at least 2") }
            config = config.with(steps: steps)
        }
        if let lr { config.baseLR = lr }
        if let batch { config.scenesPerStep = batch }
        if let trainScenes { config.trainScenes = trainScenes }
        if let focalWeight { config.focalWeight = focalWeight }
        if let patch {
            guard patch >= 1, config.sam.imageEncoder.imgSize % patch == 0 else {
                throw ValidationError("--patch must divide the image size \(config.sam.imageEncoder.imgSize)")
            }
            config.sam = SamConfig.tinySAM(patch: patch)
        }
        let start = Date()
        var last = start
        let (model, losses) = TinySAMPretraining.run(config) { r in
            let now = Date()
            let done = r.step + 1
            if done % 10 == 0 || done == config.steps || now.timeIntervalSince(last) > 15 {
                last = now
                let elapsed = now.timeIntervalSince(start)
                let rate = Double(done * config.scenesPerStep) / elapsed
                let eta = elapsed / Double(done) * Double(config.steps - done)
                let line = String(format: "step %d/%d  loss %.4f  box %.4f  point %.4f  iou %.4f  lr %.2e  %.2f scenes/s  elapsed %.0fs  ETA %.0fs\n",
                                  done, config.steps, r.loss, r.boxMaskLoss, r.pointMaskLoss, r.iouLoss, r.lr, rate,
                                  elapsed, eta)
                FileHandle.standardError.write(Data(line.utf8))
            }
        }
        let wall = Date().timeIntervalSince(start)
        try TinySAM.save(model, to: out)
        let bytes = try Data(contentsOf: URL(fileURLWithPath: out))
        let digest = try FileDigest.sha256(URL(fileURLWithPath: out))
        print(String(format: "trained %d steps (%d scenes) in %.1f s, %.2f scenes/s, threads %d, final loss %.4f",
                     config.steps, config.steps * config.scenesPerStep, wall,
                     Double(config.steps * config.scenesPerStep) / wall, Parallel.threads, losses.last ?? .nan))
        print("wrote \(out) (\(bytes.count) bytes)")
        print("\(digest)  \(out)")
        if evalScenes > 0 {
            let r = TinySAMEvaluation.evaluate(model: model, world: ShapesWorld(seed: config.worldSeed),
                                               count: evalScenes)
            print("metric tinysam_box_miou \(r.boxMIoU)")
            print("metric tinysam_point_miou \(r.pointMIoU)")
        }
    }
}

/// `flmm world evaluate-sam`: box- and point-prompted mIoU of a TinySAM checkpoint on val.
struct EvaluateSAM: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "evaluate-sam",
        abstract: "Box- and point-prompted mIoU of TinySAM on ShapesWorld val objects."
    )

    @Option(help: "TinySAM checkpoint.", completion: .file(extensions: ["safetensors"]))
    var checkpoint: String = TinySAM.checkpointPath

    @Option(help: "Number of val scenes (all objects of each are evaluated).")
    var scenes: Int = 200

    func run() throws {
        let model = try Sam.loadTinySAM(checkpoint: checkpoint)
        let world = ShapesWorld(seed: TinySAMPretrainConfig.standard.worldSeed)
        let r = TinySAMEvaluation.evaluate(model: model, world: world, count: scenes)
        print("objects \(r.boxIoUs.count) in \(scenes) val scenes")
        print("metric tinysam_box_miou \(r.boxMIoU)")
        print("metric tinysam_point_miou \(r.pointMIoU)")
    }
}
