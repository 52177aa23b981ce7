// `flmm cache add-sam-embeddings IN --sam CHECKPOINT`: computes the frozen SAM image
// embedding of every sample of a GroundingCache with this toolkit's own SAM image encoder, for
// users who exported the LMM features without a GPU-side SAM (the Python exporter without
// --sam-checkpoint). The result is a copy of IN with `sam_embedding` and the sam_* global
// attributes added, written atomically to --out (default: IN itself, replaced on success).

import ArgumentParser
import FLMMExperiments
import Formats
import Foundation
import GroundingCache
import SegmentAnything
import ShapesWorld
import Tensors

extension Cache {
    struct AddSamEmbeddings: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "add-sam-embeddings",
            abstract: "Compute SAM image embeddings for every sample of a GroundingCache (Swift SAM image encoder, on the CPU).",
            discussion: """
                Each image is resized so that its longest side is img_size (bilinear, align_corners=False, \
                as segment_anything's ResizeLongestSide.apply_image_torch for images up to img_size), \
                normalised, padded and encoded: sam.image_encoder(sam.preprocess(x)) → [C, e, e]. \
                --sam-model tinysam takes the ShapesWorld TinySAM (safetensors); vit_b / vit_l / vit_h take \
                an official checkpoint (sam_vit_*.pth, or its safetensors conversion). Nothing is written \
                unless every sample succeeds.
                """
        )

        @Argument(help: "GroundingCache NetCDF file (with or without SAM embeddings).", completion: .file()) var file: String
        @Option(help: "SAM checkpoint: sam_vit_{b,l,h}_*.pth / .safetensors, or TinySAM's safetensors.") var sam: String
        @Option(name: .customLong("sam-model"), help: "tinysam, vit_b, vit_l (F-LMM's) or vit_h.") var samModel: String = "vit_l"
        @Option(name: .customLong("sam-encoding"), help: "float16 or bfloat16 for sam_embedding.") var samEncoding = "float16"
        @Option(help: "Output file (default: replace the input once every sample is done).") var out: String?
        @Flag(help: "Replace embeddings the cache already has.") var replace = false

        func run() throws {
            guard let encoding = HalfEncoding(rawValue: samEncoding) else {
                throw ValidationError("--sam-encoding must be float16 or bfloat16, not '\(samEncoding)'")
            }
            let inURL = URL(fileURLWithPath: file)
            let reader = try GroundingCacheReader(url: inURL)
            if let s = reader.header.sam, !replace {
                throw ValidationError("\(file) already has SAM embeddings (\(s.model), \(s.embeddingDim)×\(s.embeddingHeight)×\(s.embeddingWidth)); pass --replace to recompute them")
            }
            let samURL = URL(fileURLWithPath: sam)
            let model = try Sam.load(checkpoint: sam, model: samModel)
            let c = model.config
            let outURL = URL(fileURLWithPath: out ?? file)
            let start = Date()
            let n = try GroundingCacheBuilder.addSamEmbeddings(
                from: reader, output: outURL, sam: model, samName: "\(samModel) (\(samURL.lastPathComponent))", encoding: encoding,
                provenance: ["sam_checkpoint_sha256": try FileDigest.sha256(samURL),
                             "sam_embeddings_by": "flmm cache add-sam-embeddings (Swift image encoder, \(samModel))"]
            ) { done, total in
                let rate = Double(done) / max(Date().timeIntervalSince(start), 1e-9)
                FileHandle.standardError.write(Data(String(format: "\rsample %d/%d  %.3f samples/s", done, total, rate).utf8))
            }
            FileHandle.standardError.write(Data("\n".utf8))
            let t = Date().timeIntervalSince(start)
            print("added \(samModel) embeddings \(c.promptEncoder.embedDim)×\(c.promptEncoder.imageEmbeddingSize.0)×\(c.promptEncoder.imageEmbeddingSize.1) to \(n) samples in \(String(format: "%.1f", t)) s (\(String(format: "%.3f", Double(n) / max(t, 1e-9))) samples/s): \(outURL.path)")
        }
    }
}
