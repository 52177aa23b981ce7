import ArgumentParser
import Formats
import FLMMExperiments
import Foundation
import GroundingCache
import NN
import SegmentAnything
import ShapesWorld
import Tensors

#if canImport(Glibc)
import Glibc
#endif

/// `flmm cache build …` and `flmm cache inspect FILE`.
struct Cache: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cache",
        abstract: "Build, summarise and complete GroundingCache files (frozen LMM / SAM features: ShapesWorld's, or a real LMM's from the Python exporter).",
        subcommands: [Build.self, Inspect.self, AddSamEmbeddings.self]
    )

    static func fileSize(_ url: URL) throws -> Int {
        (try FileManager.default.attributesOfItem(atPath: url.path)[.size] as? NSNumber)?.intValue ?? 0
    }

    struct Build: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Run the frozen TinyVLM and SAM image encoder over ShapesWorld samples and write a GroundingCache.",
            discussion: """
                Samples 0..<COUNT of the split are written to OUT (atomically: a temporary file renamed on \
                success). --vlm / --sam load safetensors checkpoints (strict: every key, every shape); \
                --random-init builds randomly initialised models instead (seeded, for tests and timing).
                """
        )

        @Option(help: "train, val or test.") var split: String
        @Option(help: "Number of samples (0..<COUNT of the split).") var count: Int
        @Option(name: .customLong("world-seed"), help: "ShapesWorld generator seed.") var worldSeed: UInt64 = 0
        @Flag(help: "Store per-phrase mean and max maps instead of per-token rows.") var merged = false
        @Option(help: "TinyVLM checkpoint (safetensors).") var vlm: String = "Checkpoints/tinyvlm.safetensors"
        @Option(help: "TinySAM checkpoint (safetensors).") var sam: String = TinySAM.checkpointPath
        @Flag(name: .customLong("random-init"), help: "Use randomly initialised TinyVLM and SAM (no checkpoints).")
        var randomInit = false
        @Option(help: "Deflate level 0…9 (0: no compression).") var deflate: Int = 1
        @Flag(name: .customLong("no-shuffle"), help: "Deflate without the shuffle filter.") var noShuffle = false
        @Option(name: .customLong("hidden-encoding"), help: "float16 or bfloat16 for hidden_states.") var hiddenEncoding = "float16"
        @Option(name: .customLong("sam-encoding"), help: "float16 or bfloat16 for sam_embedding.") var samEncoding = "float16"
        @Option(help: "Output NetCDF file.") var out: String

        func run() throws {
            guard let s = Split.allCases.first(where: { "\($0)" == split }) else {
                throw ValidationError("--split must be train, val or test, not '\(split)'")
            }
            guard let he = HalfEncoding(rawValue: hiddenEncoding), let se = HalfEncoding(rawValue: samEncoding) else {
                throw ValidationError("--hidden-encoding / --sam-encoding must be float16 or bfloat16")
            }
            guard (0...9).contains(deflate) else { throw ValidationError("--deflate must be 0…9") }
            let world = ShapesWorld(seed: worldSeed, train: max(4000, split == "train" ? count : 0),
                                    val: max(200, split == "val" ? count : 0), test: max(200, split == "test" ? count : 0))
            let (vlmModel, samModel, names, provenance) = try models()
            var builder = GroundingCacheBuilder(world: world, vlm: vlmModel, sam: samModel, form: merged ? .merged : .rows,
                                                vlmName: names.0, samName: names.1)
            builder.hiddenEncoding = he
            builder.samEncoding = se
            let url = URL(fileURLWithPath: out)
            let start = Date()
            let storage = GroundingCacheStorage(deflateLevel: deflate == 0 ? nil : deflate, shuffle: !noShuffle)
            try builder.build(split: s, count: count, to: url, storage: storage, provenance: provenance) { done, total in
                let t = Date().timeIntervalSince(start)
                let rate = Double(done) / max(t, 1e-9)
                let eta = Int((Double(total - done) / max(rate, 1e-9)).rounded())
                let line = String(format: "\rsample %d/%d  %.2f samples/s  ETA %d:%02d", done, total, rate, eta / 60, eta % 60)
                FileHandle.standardError.write(Data(line.utf8))
            }
            FileHandle.standardError.write(Data("\n".utf8))
            let elapsed = Date().timeIntervalSince(start)
            let size = try Cache.fileSize(url)
            print("wrote \(count) \(split) samples to \(out) in \(String(format: "%.1f", elapsed)) s (\(String(format: "%.2f", Double(count) / elapsed)) samples/s)")
            print("bytes/sample \(count > 0 ? size / count : 0) (file \(size) bytes)")
            print("sha256 \(try FileDigest.sha256(url))")
        }

        /// The frozen models, their names and the checkpoints' digests.
        func models() throws -> (TinyVLM, Sam, (String, String), [String: String]) {
            if randomInit {
                var r1 = PhiloxRNG(seed: 1), r2 = PhiloxRNG(seed: 2)
                return (TinyVLM(.shapesWorld, rng: &r1), Sam(.tinySAM, rng: &r2),
                        ("TinyVLM (random init, seed 1)", "SAM (random init, seed 2)"), ["models": "random init"])
            }
            let vlmURL = URL(fileURLWithPath: vlm), samURL = URL(fileURLWithPath: sam)
            for (u, what) in [(vlmURL, "--vlm"), (samURL, "--sam")] where !FileManager.default.fileExists(atPath: u.path) {
                throw ValidationError("\(what): no checkpoint at \(u.path) (pass a file, or --random-init for random models)")
            }
            let v = try TinyVLM.load(checkpoint: vlmURL.path)
            let sm = try Sam.loadTinySAM(checkpoint: samURL.path)
            return (v, sm, ("TinyVLM (\(vlmURL.lastPathComponent))", "TinySAM (\(samURL.lastPathComponent))"),
                    ["vlm_checkpoint_sha256": try FileDigest.sha256(vlmURL), "sam_checkpoint_sha256": try FileDigest.sha256(samURL)])
        }

        static func stateDict(_ url: URL) throws -> [String: Tensor] {
            let st = try SafeTensors.read(url)
            var d: [String: Tensor] = [:]
            for n in st.names { d[n] = try st.tensor(n) }
            return d
        }
    }

    struct Inspect: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Summarise a GroundingCache: header, counts, variables (shape, encoding, bytes), bytes per sample."
        )

        @Argument(help: "GroundingCache NetCDF file.", completion: .file()) var file: String
        @Flag(help: "Also read and decode every record (checks them all; reports records/s).") var check = false

        func run() throws {
            let url = URL(fileURLWithPath: file)
            let r = try GroundingCacheReader(url: url)
            let h = r.header
            print("\(file): GroundingCache schema version \(h.schemaVersion), split \(h.split), \(r.count) samples")
            print("source model      \(h.sourceModel)")
            print("attention layout  \(h.layout.kind): \(h.layout.layout().name), image token id \(h.layout.imageTokenID), K = \(h.imageTokenCount)")
            print("LMM               \(h.layers) layers × \(h.heads) heads, hidden \(h.hiddenSize)")
            if let s = h.sam {
                print("SAM               \(s.model): embedding \(s.embeddingDim)×\(s.embeddingHeight)×\(s.embeddingWidth), img_size \(s.imgSize)")
            } else {
                print("SAM               none (add the embeddings with `flmm cache add-sam-embeddings`)")
            }
            print("attention form    \(h.attentionForm.rawValue)")
            print("encodings         attention \(h.attentionEncoding.rawValue), hidden \(h.hiddenEncoding.rawValue)\(h.sam == nil ? "" : ", sam " + h.samEncoding.rawValue)")
            for k in h.provenance.keys.sorted() { print("provenance        \(k) = \(h.provenance[k]!)") }
            let vars = try r.variables()
            var counts: [String: Int] = [:]
            var total = 0
            print("variables (uncompressed bytes):")
            for (v, enc) in vars {
                for (d, n) in zip(v.dimensions, v.shape) { counts[d] = n }
                let size: Int
                switch v.type {
                case .byte, .ubyte, .char: size = 1
                case .short, .ushort: size = 2
                case .int, .uint, .float: size = 4
                default: size = 8
                }
                let bytes = v.type == .string ? 0 : v.count * size
                total += bytes
                let dims = zip(v.dimensions, v.shape).map { "\($0)=\($1)" }.joined(separator: ", ")
                print("  \(v.name.padding(toLength: 22, withPad: " ", startingAt: 0)) \(v.type.description.padding(toLength: 7, withPad: " ", startingAt: 0)) (\(dims))\(enc.map { " encoding \($0)" } ?? "")  \(bytes)")
            }
            print("counts            " + ["sample", "phrase", "token", "row", "pixel", "mask_pixel"].map { "\($0) \(counts[$0] ?? 0)" }.joined(separator: ", "))
            let size = try Cache.fileSize(url)
            let n = max(r.count, 1)
            print("bytes/sample      \(size / n) in the file (\(size) bytes), \(total / n) uncompressed")
            if check {
                let start = Date()
                var rows = 0
                for i in 0..<r.count { rows += try r.record(i).numRows }
                let t = Date().timeIntervalSince(start)
                print("check             read and decoded \(r.count) records (\(rows) phrase tokens) in \(String(format: "%.2f", t)) s (\(String(format: "%.1f", Double(r.count) / max(t, 1e-9))) records/s)")
            }
        }
    }
}
