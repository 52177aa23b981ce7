import XCTest
import Tensors
import NN

// Small modules shaped like mmseg's UNet pieces and SAM's image encoder, to check keys.
private final class ConvModule: Module {
    let conv: Conv2d
    let gn: GroupNorm
    init(_ cin: Int, _ cout: Int, rng: inout PhiloxRNG) {
        conv = Conv2d(cin, cout, kernelSize: 3, padding: 1, bias: false, rng: &rng)
        gn = GroupNorm(1, cout)
    }
    var children: [ModuleChild] { [.module("conv", conv), .module("gn", gn)] }
}

private final class BasicConvBlock: Module {
    let convs: [ConvModule]
    init(_ cin: Int, _ cout: Int, rng: inout PhiloxRNG) {
        convs = [ConvModule(cin, cout, rng: &rng), ConvModule(cout, cout, rng: &rng)]
    }
    var children: [ModuleChild] { [.list("convs", convs)] }
}

private final class TinyUNet: Module {
    let encoder: [ModuleList]
    let convSeg: Conv2d
    init(rng: inout PhiloxRNG) {
        encoder = [ModuleList([BasicConvBlock(2, 4, rng: &rng)]),
                   ModuleList([nil, BasicConvBlock(4, 8, rng: &rng)])]  // nil: MaxPool2d
        convSeg = Conv2d(4, 1, kernelSize: 1, rng: &rng)
    }
    var children: [ModuleChild] { [.list("encoder", encoder), .module("conv_seg", convSeg)] }
}

/// Declares a submodule before its own parameter: PyTorch still lists own tensors first.
private final class Encoder: Module {
    let patchEmbed: Conv2d
    let posEmbed: Tensor
    let neck: [(any Module)?]
    init(rng: inout PhiloxRNG) {
        patchEmbed = Conv2d(3, 4, kernelSize: 2, stride: 2, rng: &rng)
        posEmbed = Tensor(repeating: 0, shape: [1, 2, 2, 4], requiresGrad: true)
        neck = [Conv2d(4, 4, kernelSize: 1, bias: false, rng: &rng), LayerNorm2d(4), nil, BatchNorm2d(4)]
    }
    var children: [ModuleChild] {
        [.module("patch_embed", patchEmbed), .parameter("pos_embed", posEmbed), .list("neck", neck)]
    }
}

final class ModuleTests: XCTestCase {
    func testUNetStyleKeysInDeclarationOrder() {
        var rng = PhiloxRNG(seed: 1)
        let m = TinyUNet(rng: &rng)
        let keys = m.stateDict().map(\.0)
        var expected: [String] = []
        for (stage, prefix) in ["encoder.0.0.", "encoder.1.1."].enumerated() {
            _ = stage
            for c in 0..<2 {
                expected += ["\(prefix)convs.\(c).conv.weight", "\(prefix)convs.\(c).gn.weight", "\(prefix)convs.\(c).gn.bias"]
            }
        }
        expected += ["conv_seg.weight", "conv_seg.bias"]
        XCTAssertEqual(keys, expected)
        XCTAssertTrue(keys.contains("encoder.1.1.convs.0.gn.weight"))
        let shapes = Dictionary(uniqueKeysWithValues: m.stateDict().map { ($0.0, $0.1.shape) })
        XCTAssertEqual(shapes["encoder.1.1.convs.0.conv.weight"], [8, 4, 3, 3])
        XCTAssertEqual(shapes["encoder.1.1.convs.1.gn.bias"], [8])
        XCTAssertEqual(shapes["conv_seg.weight"], [1, 4, 1, 1])
        XCTAssertEqual(m.namedBuffers().count, 0)
        XCTAssertEqual(m.namedParameters().map(\.0), expected)
        // namedModules: pre-order, PyTorch names ("" for the root).
        let modules = m.namedModules().map(\.0)
        XCTAssertEqual(Array(modules.prefix(6)),
                       ["", "encoder.0", "encoder.0.0", "encoder.0.0.convs.0", "encoder.0.0.convs.0.conv",
                        "encoder.0.0.convs.0.gn"])
        XCTAssertEqual(modules.last, "conv_seg")
        XCTAssertEqual(m.namedModules().filter { $0.1 is Conv2d }.count, 5)
    }

    func testOwnTensorsFirstThenBuffersThenSubmodulesAndSparseIndices() {
        var rng = PhiloxRNG(seed: 2)
        let m = Encoder(rng: &rng)
        XCTAssertEqual(m.stateDict().map(\.0), [
            "pos_embed", "patch_embed.weight", "patch_embed.bias",
            "neck.0.weight", "neck.1.weight", "neck.1.bias",
            "neck.3.weight", "neck.3.bias", "neck.3.running_mean", "neck.3.running_var", "neck.3.num_batches_tracked",
        ])
        XCTAssertEqual(m.namedBuffers().map(\.0), ["neck.3.running_mean", "neck.3.running_var", "neck.3.num_batches_tracked"])
        XCTAssertEqual(m.namedParameters().count, 8)
        let bn = m.neck[3] as! BatchNorm2d
        XCTAssertEqual(bn.runningVar!.data, [1, 1, 1, 1])
        XCTAssertEqual(bn.numBatchesTracked!.shape, [])
        XCTAssertTrue(bn.training)
        m.eval()
        XCTAssertFalse(bn.training)
        m.train()
        XCTAssertTrue(bn.training)
    }

    func testLayerKeysAndShapes() {
        var rng = PhiloxRNG(seed: 3)
        func keyShapes(_ m: any Module) -> [String] { m.stateDict().map { "\($0.0)\($0.1.shape)" } }
        XCTAssertEqual(keyShapes(Linear(3, 5, rng: &rng)), ["weight[5, 3]", "bias[5]"])
        XCTAssertEqual(keyShapes(Linear(3, 5, bias: false, rng: &rng)), ["weight[5, 3]"])
        XCTAssertEqual(keyShapes(Conv2d(3, 6, kernelSize: 3, rng: &rng)), ["weight[6, 3, 3, 3]", "bias[6]"])
        XCTAssertEqual(keyShapes(ConvTranspose2d(6, 3, kernelSize: 2, stride: 2, rng: &rng)),
                       ["weight[6, 3, 2, 2]", "bias[3]"])
        XCTAssertEqual(keyShapes(LayerNorm(7)), ["weight[7]", "bias[7]"])
        XCTAssertEqual(keyShapes(LayerNorm([2, 3], elementwiseAffine: false)), [])
        XCTAssertEqual(keyShapes(GroupNorm(2, 4)), ["weight[4]", "bias[4]"])
        XCTAssertEqual(keyShapes(BatchNorm2d(4, trackRunningStats: false)), ["weight[4]", "bias[4]"])
        XCTAssertEqual(keyShapes(Embedding(4, 8, rng: &rng)), ["weight[4, 8]"])
        XCTAssertEqual(LayerNorm2d(4).eps, 1e-6)
        XCTAssertEqual(GroupNorm(1, 4).weight!.data, [1, 1, 1, 1])
        XCTAssertEqual(GroupNorm(1, 4).bias!.data, [0, 0, 0, 0])
    }

    func testStrictLoadCopiesValues() throws {
        var rng = PhiloxRNG(seed: 4)
        let m = Encoder(rng: &rng)
        var sd: [String: Tensor] = [:]
        for (i, (k, t)) in m.stateDict().enumerated() {
            sd[k] = Tensor(shape: t.shape, data: (0..<t.count).map { Float(i * 100 + $0) })
        }
        try m.load(stateDict: sd)
        XCTAssertEqual(m.posEmbed.data[3], 3)                      // key 0
        XCTAssertEqual(m.patchEmbed.bias!.data, [200, 201, 202, 203])  // key 2
        XCTAssertEqual((m.neck[3] as! BatchNorm2d).numBatchesTracked!.data, [1000])  // key 10
        XCTAssertTrue(m.posEmbed.requiresGrad, "loading keeps the parameter a trainable leaf")
        // Round trip through stateDict.
        let again = Dictionary(uniqueKeysWithValues: m.stateDict())
        XCTAssertEqual(again["neck.1.weight"]!.data, [400, 401, 402, 403])
    }

    func testStrictLoadErrorsNameTheKey() {
        var rng = PhiloxRNG(seed: 5)
        let m = TinyUNet(rng: &rng)
        let good = Dictionary(uniqueKeysWithValues: m.stateDict().map { ($0.0, Tensor(repeating: 7, shape: $0.1.shape)) })
        let before = m.convSeg.weight.data

        var missing = good
        missing["encoder.1.1.convs.0.gn.weight"] = nil
        XCTAssertThrowsError(try m.load(stateDict: missing)) { e in
            XCTAssertEqual(e as? LoadError, .missingKey("encoder.1.1.convs.0.gn.weight"))
            XCTAssertTrue("\(e)".contains("missing key 'encoder.1.1.convs.0.gn.weight'"), "\(e)")
        }

        var unknown = good
        unknown["encoder.1.1.convs.0.gn.running_mean"] = Tensor.zeros([8])
        unknown["zzz"] = Tensor.zeros([1])
        XCTAssertThrowsError(try m.load(stateDict: unknown)) { e in
            XCTAssertEqual(e as? LoadError, .unknownKey("encoder.1.1.convs.0.gn.running_mean"))  // first in sorted order
            XCTAssertTrue("\(e)".contains("unknown key 'encoder.1.1.convs.0.gn.running_mean'"), "\(e)")
        }

        var wrongShape = good
        wrongShape["encoder.0.0.convs.1.conv.weight"] = Tensor.zeros([4, 4, 1, 3])
        XCTAssertThrowsError(try m.load(stateDict: wrongShape)) { e in
            XCTAssertEqual(e as? LoadError, .shapeMismatch("encoder.0.0.convs.1.conv.weight",
                                                           expected: [4, 4, 3, 3], actual: [4, 4, 1, 3]))
            let text = "\(e)"
            XCTAssertTrue(text.contains("'encoder.0.0.convs.1.conv.weight'") && text.contains("[4, 4, 3, 3]")
                          && text.contains("[4, 4, 1, 3]"), text)
        }
        // A failed load changes nothing.
        XCTAssertEqual(m.convSeg.weight.data, before)
        XCTAssertNoThrow(try m.load(stateDict: good))
        XCTAssertEqual(m.convSeg.weight.data, [7, 7, 7, 7])
    }

    func testFreezeAndTrainableParameters() {
        var rng = PhiloxRNG(seed: 6)
        let m = TinyUNet(rng: &rng)
        m.encoder[0].freeze()
        let trainable = m.trainableParameters().map(\.0)
        XCTAssertEqual(trainable.first, "encoder.1.1.convs.0.conv.weight")
        XCTAssertEqual(trainable.count, m.namedParameters().count - 6)
        XCTAssertFalse(m.encoder[0].namedParameters().contains { $0.1.requiresGrad })
        m.unfreeze()
        XCTAssertEqual(m.trainableParameters().count, 14)
    }

    func testSharedParameterListedOnceAndPrefixStripping() {
        final class Tied: Module {
            let a: Linear, w: Tensor
            init(rng: inout PhiloxRNG) { a = Linear(2, 2, bias: false, rng: &rng); w = a.weight }
            var children: [ModuleChild] { [.module("a", a), .parameter("tied", w)] }
        }
        var rng = PhiloxRNG(seed: 7)
        let t = Tied(rng: &rng)
        XCTAssertEqual(t.stateDict().map(\.0), ["tied", "a.weight"])
        XCTAssertEqual(t.namedParameters().map(\.0), ["tied"])

        let sd = ["image_encoder.x": Tensor.zeros([1]), "image_encoder.y.z": Tensor.ones([2]), "mask_decoder.x": Tensor.zeros([3])]
        let sub = sd.stripping(prefix: "image_encoder.")
        XCTAssertEqual(sub.keys.sorted(), ["x", "y.z"])
        XCTAssertEqual(sub["y.z"]!.data, [1, 1])
    }
}
