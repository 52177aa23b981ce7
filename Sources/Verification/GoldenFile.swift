// Loading a golden .safetensors file into a `GoldenCase`, and the helpers case runners use
// to read its tensors and to form its backward scalar.

import Foundation
import Formats
import Tensors

extension JSON {
    /// Converts a parsed JSON text (numbers become Double).
    public init(_ raw: RawJSON) {
        switch raw {
        case .null: self = .null
        case .bool(let b): self = .bool(b)
        case .number(let s): self = .number(Double(s) ?? .nan)
        case .string(let s): self = .string(s)
        case .array(let a): self = .array(a.map(JSON.init))
        case .object(let m): self = .object(m.mapValues(JSON.init))
        }
    }

    /// Parses a JSON text (strict RFC 8259).
    public static func parse(_ text: String) throws(RawJSON.ParseError) -> JSON {
        JSON(try RawJSON.parse(text))
    }
}

extension GoldenCase {
    /// Loads a golden file. Throws `SafeTensorsError` for a malformed safetensors file and
    /// `GoldenError.badFile` when the `case` / `config` / `tolerance` metadata is missing or
    /// not JSON.
    public static func load(_ url: URL) throws -> GoldenCase {
        try GoldenCase(SafeTensors.read(url))
    }

    /// Builds a case from a safetensors file's contents.
    public init(_ file: SafeTensors) throws {
        func bad(_ p: String) -> GoldenError { GoldenError.badFile(file: file.file, problem: p) }
        guard let name = file.metadata["case"], !name.isEmpty else {
            throw bad("no 'case' in __metadata__")
        }
        guard let configText = file.metadata["config"] else { throw bad("no 'config' in __metadata__") }
        let config: JSON
        do { config = try JSON.parse(configText) } catch { throw bad("metadata 'config' is not JSON: \(error)") }
        guard case .object = config else { throw bad("metadata 'config' is not a JSON object") }
        var tolerance = JSON.object([:])
        if let t = file.metadata["tolerance"] {
            do { tolerance = try JSON.parse(t) } catch { throw bad("metadata 'tolerance' is not JSON: \(error)") }
            guard case .object = tolerance else { throw bad("metadata 'tolerance' is not a JSON object") }
        }
        self.init(name: name, config: config, tensors: file.floatTensors, int64s: file.integerTensors,
                  names: file.names)
        self.tolerance = tolerance
        self.metadata = file.metadata
        self.file = file.file
    }

    /// A config field that names this case in its errors: `try golden.setting("eps").double`.
    /// (`golden.config["eps"]` works too; the verifier adds the case name to its errors.)
    public func setting(_ key: String) -> JSONField {
        JSONField(path: "", value: config, caseName: name)[key]
    }

    /// The float tensor `name` (e.g. `in.x`, `param.weight`, `upstream.y`), or `missingTensor`.
    public func tensor(_ name: String) throws -> Tensor {
        guard let t = tensors[name] else { throw GoldenError.missingTensor(case: self.name, name: name) }
        return t
    }

    /// A fresh leaf copy of float tensor `name` with `requiresGrad` set (for `in.*` / `param.*`
    /// that need gradients; the case's own tensor is never mutated).
    public func leaf(_ name: String, requiresGrad: Bool = true) throws -> Tensor {
        let t = try tensor(name)
        return Tensor(shape: t.shape, data: t.data, requiresGrad: requiresGrad)
    }

    /// The integer tensor `name`, or `missingTensor`.
    public func int64(_ name: String) throws -> (shape: [Int], values: [Int64]) {
        guard let t = int64s[name] else { throw GoldenError.missingTensor(case: self.name, name: name) }
        return t
    }

    /// Whether a float or integer tensor `name` is in the file.
    public func has(_ name: String) -> Bool { tensors[name] != nil || int64s[name] != nil }

    /// Float tensors whose names start with `prefix`, keyed by the rest of the name, as fresh
    /// leaves with `requiresGrad` (e.g. `stateDict(prefix: "param.")` → PyTorch state-dict keys).
    public func stateDict(prefix: String = "param.", requiresGrad: Bool = true) -> [String: Tensor] {
        var out: [String: Tensor] = [:]
        for (k, t) in tensors where k.hasPrefix(prefix) {
            out[String(k.dropFirst(prefix.count))] = Tensor(shape: t.shape, data: t.data, requiresGrad: requiresGrad)
        }
        return out
    }

    /// Runs the backward pass `config.backward` describes, given the computed outputs by their
    /// short names (`"y"` for `out.y`):
    /// - `upstream`: scalar = Σ over `backward.outputs` (in listed order) of
    ///   `(out * upstream.<name>).sum()`, then `backward()`;
    /// - `loss`: `outputs[backward.output]` is the scalar; `backward()`;
    /// - `none`: nothing.
    /// Gradients land in the `.grad` of the leaves that asked for them.
    public func runBackward(outputs: [String: Tensor]) throws {
        let b = setting("backward")
        let mode = try b["mode"].string(oneOf: ["upstream", "loss", "none"])
        switch mode {
        case "upstream":
            var total: Tensor?
            for o in try b["outputs"].strings {
                guard let y = outputs[o] else { throw GoldenError.missingTensor(case: name, name: "out.\(o) (computed)") }
                let u = try tensor("upstream.\(o)")
                precondition(y.shape == u.shape,
                             "runBackward: case \(name): out.\(o) has shape \(y.shape), upstream.\(o) has \(u.shape)")
                let term = (y * u).sum()
                total = total.map { $0 + term } ?? term
            }
            total?.backward()
        case "loss":
            let o = try b["output"].string
            guard let loss = outputs[o] else { throw GoldenError.missingTensor(case: name, name: "out.\(o) (computed)") }
            loss.backward()
        default:
            break
        }
    }
}
