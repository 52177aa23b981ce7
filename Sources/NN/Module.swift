// Modules: trainable tensors named by their PyTorch state-dict keys.
//
// A module declares, in one computed property, what PyTorch would register on it:
//
//     public final class MLP: Module {
//         public let layers: [Linear]
//         public var children: [ModuleChild] { [.list("layers", layers)] }
//     }
//
//     public final class Linear: Module {
//         public let weight: Tensor, bias: Tensor?
//         public var children: [ModuleChild] { [.parameter("weight", weight), .parameter("bias", bias)] }
//     }
//
// and gets, from the protocol extension, `namedParameters()`, `namedBuffers()`, `stateDict()`,
// strict `load(stateDict:)`, `freeze()` / `trainableParameters()` and `train(_:)` / `eval()`.
//
// Key order is PyTorch's `state_dict()` order: for each module (pre-order), its own parameters
// in declaration order, then its own buffers, then each submodule or list in declaration
// order. This holds however parameters and submodules are interleaved in `children`, so
// SAM's `image_encoder.pos_embed` comes before `image_encoder.patch_embed.proj.weight` as in
// the official checkpoints.
//
// Freezing is PyTorch's `requires_grad_(False)`: it clears `requiresGrad` on the parameter
// tensors themselves, so autograd builds no graph through them and optimisers built from
// `trainableParameters()` never see them.

import Tensors

/// One member of a module, under its PyTorch attribute name.
public enum ModuleChild {
    /// A trainable tensor (`nn.Parameter`). `nil` when the layer was built without it
    /// (`bias=False`); it then has no key, as in PyTorch.
    case parameter(String, Tensor?)
    /// A tensor saved in the state dict but not trained (`register_buffer`): running
    /// statistics, SAM's positional-encoding matrix.
    case buffer(String, Tensor?)
    /// A submodule: its keys get the prefix `name.`. `nil`: absent (no keys).
    case module(String, (any Module)?)
    /// An `nn.ModuleList` / `nn.Sequential`: element i gets the prefix `name.i.`.
    /// `nil` entries are parameterless layers (activations, pooling) that still take an index,
    /// e.g. `.list("mask_downscaling", [conv0, norm1, nil, conv3, norm4, nil, conv6])`.
    case list(String, [(any Module)?])
}

/// A layer or model whose tensors are addressed by PyTorch state-dict keys.
public protocol Module: AnyObject {
    /// Parameters, buffers and submodules under their PyTorch names, in declaration order.
    var children: [ModuleChild] { get }

    /// Switches this module alone (not its submodules) between training and evaluation
    /// behaviour. Only modules whose forward depends on the mode (BatchNorm) implement it;
    /// call `train(_:)` / `eval()` on the root instead.
    func setTraining(_ training: Bool)
}

/// Why a strict `load(stateDict:)` refused a state dict. Nothing is loaded when it throws.
public enum LoadError: Error, Equatable, CustomStringConvertible {
    /// The state dict has a key the module does not declare.
    case unknownKey(String)
    /// The module declares a key the state dict lacks.
    case missingKey(String)
    /// Same key, different shapes: (key, expected = the module's, actual = the state dict's).
    case shapeMismatch(String, expected: [Int], actual: [Int])

    public var description: String {
        switch self {
        case .unknownKey(let k):
            return "load(stateDict:): unknown key '\(k)': the module has no parameter or buffer of that name"
        case .missingKey(let k):
            return "load(stateDict:): missing key '\(k)': the state dict has no tensor for it"
        case .shapeMismatch(let k, let e, let a):
            return "load(stateDict:): shape mismatch for key '\(k)': module expects \(e), state dict has \(a)"
        }
    }
}

/// What a state-dict entry is.
public enum StateKind: Sendable { case parameter, buffer }

extension Module {
    public func setTraining(_ training: Bool) {}

    /// Every parameter and buffer with its key and kind, in PyTorch `state_dict()` order.
    public func namedState() -> [(key: String, tensor: Tensor, kind: StateKind)] {
        var out: [(key: String, tensor: Tensor, kind: StateKind)] = []
        collectState(prefix: "", into: &out)
        return out
    }

    private func collectState(prefix: String, into out: inout [(key: String, tensor: Tensor, kind: StateKind)]) {
        let members = children
        for case .parameter(let name, let t?) in members { out.append((prefix + name, t, .parameter)) }
        for case .buffer(let name, let t?) in members { out.append((prefix + name, t, .buffer)) }
        for member in members {
            switch member {
            case .module(let name, let m?):
                m.collectState(prefix: prefix + name + ".", into: &out)
            case .list(let name, let ms):
                for (i, m) in ms.enumerated() {
                    m?.collectState(prefix: prefix + name + ".\(i).", into: &out)
                }
            default:
                break
            }
        }
    }

    /// This module and every submodule, pre-order, with its key prefix ("" for the root),
    /// as PyTorch's `named_modules()`.
    public func namedModules() -> [(String, any Module)] {
        var out: [(String, any Module)] = []
        collectModules(name: "", into: &out)
        return out
    }

    private func collectModules(name: String, into out: inout [(String, any Module)]) {
        out.append((name, self))
        let prefix = name.isEmpty ? "" : name + "."
        for member in children {
            switch member {
            case .module(let n, let m?):
                m.collectModules(name: prefix + n, into: &out)
            case .list(let n, let ms):
                for (i, m) in ms.enumerated() { m?.collectModules(name: prefix + n + ".\(i)", into: &out) }
            default:
                break
            }
        }
    }

    /// Parameters with their keys, in PyTorch order. A tensor shared by two members is listed
    /// once, under its first key (as PyTorch's `named_parameters()`).
    public func namedParameters() -> [(String, Tensor)] {
        var seen = Set<ObjectIdentifier>()
        return namedState().compactMap { e in
            e.kind == .parameter && seen.insert(ObjectIdentifier(e.tensor)).inserted ? (e.key, e.tensor) : nil
        }
    }

    /// Buffers with their keys, in PyTorch order.
    public func namedBuffers() -> [(String, Tensor)] {
        namedState().compactMap { e in e.kind == .buffer ? (e.key, e.tensor) : nil }
    }

    /// Parameters and buffers with their keys, in PyTorch `state_dict()` order. The tensors
    /// are the module's own (not copies).
    public func stateDict() -> [(String, Tensor)] {
        namedState().map { ($0.key, $0.tensor) }
    }

    /// The parameters that are not frozen (`requiresGrad`), with their keys: what an optimiser
    /// should update.
    public func trainableParameters() -> [(String, Tensor)] {
        namedParameters().filter { $0.1.requiresGrad }
    }

    /// Stops gradients for every parameter of this module and its submodules
    /// (PyTorch's `requires_grad_(False)`).
    public func freeze() { for (_, p) in namedParameters() { p.requiresGrad = false } }

    /// Restores gradients for every parameter (PyTorch's `requires_grad_(True)`).
    public func unfreeze() { for (_, p) in namedParameters() { p.requiresGrad = true } }

    /// Training (`true`) or evaluation behaviour for this module and all submodules.
    public func train(_ training: Bool = true) {
        for (_, m) in namedModules() { m.setTraining(training) }
    }

    /// Evaluation behaviour (`train(false)`).
    public func eval() { train(false) }

    /// Copies `stateDict` into the module's parameters and buffers, strictly: every declared
    /// key must be present with the same shape, and no other key may be present. Checks
    /// everything before changing anything, so on error the module is unchanged.
    /// Errors, in this order: the first declared key (PyTorch order) that is missing or has
    /// another shape; then the first unknown key in sorted order.
    public func load(stateDict: [String: Tensor]) throws {
        let own = namedState()
        var sources: [Tensor] = []
        sources.reserveCapacity(own.count)
        for e in own {
            guard let src = stateDict[e.key] else { throw LoadError.missingKey(e.key) }
            guard src.shape == e.tensor.shape else {
                throw LoadError.shapeMismatch(e.key, expected: e.tensor.shape, actual: src.shape)
            }
            sources.append(src)
        }
        let known = Set(own.map(\.key))
        if let k = stateDict.keys.filter({ !known.contains($0) }).sorted().first {
            throw LoadError.unknownKey(k)
        }
        for (e, src) in zip(own, sources) { e.tensor.assign(src.data) }
    }
}

extension Dictionary where Key == String, Value == Tensor {
    /// The entries whose key starts with `prefix`, with the prefix removed: the state dict of
    /// one submodule inside a whole model's (`sam.stripping(prefix: "image_encoder.")`).
    public func stripping(prefix: String) -> [String: Tensor] {
        var out: [String: Tensor] = [:]
        for (k, v) in self where k.hasPrefix(prefix) { out[String(k.dropFirst(prefix.count))] = v }
        return out
    }
}

/// PyTorch's `nn.ModuleList` used as a container: element i has the key prefix `i.`; `nil`
/// elements are parameterless layers that still take an index (mmseg's encoder stage
/// `Sequential(MaxPool2d, BasicConvBlock)` is `ModuleList([nil, block])`, keys `1.…`).
public final class ModuleList: Module {
    public let modules: [(any Module)?]
    public init(_ modules: [(any Module)?]) { self.modules = modules }
    public var children: [ModuleChild] {
        modules.enumerated().map { .module(String($0.offset), $0.element) }
    }
}
