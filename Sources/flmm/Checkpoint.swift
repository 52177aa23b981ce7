import ArgumentParser
import Foundation
import Formats

/// `flmm checkpoint convert IN OUT` and `flmm checkpoint inspect FILE`.
struct Checkpoint: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "checkpoint",
        abstract: "Convert and list weight files (PyTorch .pth or safetensors).",
        subcommands: [Convert.self, Inspect.self]
    )

    struct Convert: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Convert a checkpoint to safetensors, keeping key names and values bit for bit.",
            discussion: """
                IN is a .pth file written by torch.save(state_dict) (e.g. the official \
                sam_vit_b_01ec64.pth) or a safetensors file. Only float32, float16, bfloat16 and \
                int64 tensors are accepted; the pickle is read by a restricted unpickler that never \
                runs code from the file.
                """
        )

        @Argument(help: "Input checkpoint (.pth or .safetensors).", completion: .file())
        var input: String

        @Argument(help: "Output .safetensors file (written atomically).", completion: .file(extensions: ["safetensors"]))
        var output: String

        func run() throws {
            let n = try WeightFile.convert(URL(fileURLWithPath: input), to: URL(fileURLWithPath: output))
            print("wrote \(n) tensors to \(output)")
        }
    }

    struct Inspect: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "List the keys, dtypes and shapes of a .pth or safetensors file."
        )

        @Argument(help: "Checkpoint (.pth or .safetensors).", completion: .file())
        var file: String

        func run() throws {
            let (format, entries) = try WeightFile.read(URL(fileURLWithPath: file))
            let width = entries.map(\.name.count).max() ?? 0
            for e in entries {
                let pad = String(repeating: " ", count: width - e.name.count)
                print("\(e.name)\(pad)  \(e.dtype.rawValue)  [\(e.shape.map(String.init).joined(separator: ", "))]")
            }
            let elements = entries.reduce(0) { $0 + $1.count }
            print("\(file): \(format.rawValue), \(entries.count) tensors, \(elements) elements")
        }
    }
}
