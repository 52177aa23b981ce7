// Weight files of either kind: PyTorch `.pth` (zip) or safetensors, told apart by content.
//
// `WeightFile.read` gives the tensors as `SafeTensorsEntry`s (dtype, shape, raw bytes) so that
// both kinds can be listed and converted without decoding a value: `convert` copies the bytes,
// so the converted file holds the checkpoint's values bit for bit under the same key names.

import Foundation

/// The two weight-file formats the toolkit reads.
public enum WeightFileFormat: String, Sendable {
    case pytorch = "PyTorch .pth (zip)"
    case safetensors = "safetensors"
}

/// Reading, listing and converting weight files.
public enum WeightFile {
    /// `.pytorch` when the file starts with a zip signature (`PK\u{3}\u{4}`), else `.safetensors`.
    public static func format(of url: URL) throws -> WeightFileFormat {
        guard let h = FileHandle(forReadingAtPath: url.path) else {
            throw PyTorchCheckpointError(file: url.path, kind: .unreadable("no such readable file"))
        }
        defer { try? h.close() }
        let magic = [UInt8](h.readData(ofLength: 4))
        return magic == [0x50, 0x4B, 0x03, 0x04] ? .pytorch : .safetensors
    }

    /// The file's tensors: state-dict order for `.pth`, name order for safetensors.
    public static func read(_ url: URL) throws -> (format: WeightFileFormat, entries: [SafeTensorsEntry]) {
        switch try format(of: url) {
        case .pytorch: return (.pytorch, try PyTorchCheckpoint.read(url).entries)
        case .safetensors: return (.safetensors, try SafeTensors.read(url).entries)
        }
    }

    /// Writes the tensors of `input` (a `.pth` or safetensors file) to the safetensors file
    /// `output`, with the same names, dtypes, shapes and bytes. Returns the number of tensors.
    @discardableResult
    public static func convert(_ input: URL, to output: URL) throws -> Int {
        let (format, entries) = try read(input)
        let metadata = ["format": "pt", "converted_from": input.lastPathComponent, "source_format": format.rawValue]
        try SafeTensors.write(entries, metadata: metadata, to: output)
        return entries.count
    }
}
