// Construction of SAM: the hyper-parameters of each module and the official presets
// (segment_anything/build_sam.py). Modules are built from these configs; weights are loaded
// afterwards by state-dict key (`Sam.load(stateDict:)` is strict).

import NN
import Tensors

/// `ImageEncoderViT(...)` arguments.
public struct ImageEncoderConfig: Sendable, Equatable {
    /// Side of the square input the encoder was built for (1024 for SAM).
    public var imgSize: Int
    public var patchSize: Int
    public var inChans: Int
    public var embedDim: Int
    public var depth: Int
    public var numHeads: Int
    public var mlpRatio: Double
    public var outChans: Int
    public var qkvBias: Bool
    public var useAbsPos: Bool
    public var useRelPos: Bool
    /// Window size of windowed blocks (0: every block global).
    public var windowSize: Int
    /// Blocks with global attention.
    public var globalAttnIndexes: [Int]
    /// LayerNorm eps in the blocks (SAM: 1e-6).
    public var layerNormEps: Double
    /// LayerNorm2d eps in the neck (SAM: 1e-6).
    public var neckLayerNorm2dEps: Double

    public init(imgSize: Int = 1024, patchSize: Int = 16, inChans: Int = 3, embedDim: Int, depth: Int,
                numHeads: Int, mlpRatio: Double = 4, outChans: Int = 256, qkvBias: Bool = true,
                useAbsPos: Bool = true, useRelPos: Bool = true, windowSize: Int = 14,
                globalAttnIndexes: [Int], layerNormEps: Double = 1e-6, neckLayerNorm2dEps: Double = 1e-6) {
        self.imgSize = imgSize
        self.patchSize = patchSize
        self.inChans = inChans
        self.embedDim = embedDim
        self.depth = depth
        self.numHeads = numHeads
        self.mlpRatio = mlpRatio
        self.outChans = outChans
        self.qkvBias = qkvBias
        self.useAbsPos = useAbsPos
        self.useRelPos = useRelPos
        self.windowSize = windowSize
        self.globalAttnIndexes = globalAttnIndexes
        self.layerNormEps = layerNormEps
        self.neckLayerNorm2dEps = neckLayerNorm2dEps
    }

    /// Token grid side: imgSize / patchSize.
    public var gridSize: Int { imgSize / patchSize }
}

/// `PromptEncoder(...)` arguments.
public struct PromptEncoderConfig: Sendable, Equatable {
    public var embedDim: Int
    /// (H, W) of the image embedding.
    public var imageEmbeddingSize: (Int, Int)
    /// (H, W) of the padded encoder input (box and point coordinates are in this frame).
    public var inputImageSize: (Int, Int)
    public var maskInChans: Int
    /// LayerNorm2d eps in the mask downscaling (SAM: 1e-6).
    public var layerNorm2dEps: Double

    public init(embedDim: Int = 256, imageEmbeddingSize: (Int, Int) = (64, 64),
                inputImageSize: (Int, Int) = (1024, 1024), maskInChans: Int = 16, layerNorm2dEps: Double = 1e-6) {
        self.embedDim = embedDim
        self.imageEmbeddingSize = imageEmbeddingSize
        self.inputImageSize = inputImageSize
        self.maskInChans = maskInChans
        self.layerNorm2dEps = layerNorm2dEps
    }

    /// (H, W) of the low-resolution mask prompt: 4 × the image embedding.
    public var maskInputSize: (Int, Int) { (4 * imageEmbeddingSize.0, 4 * imageEmbeddingSize.1) }

    public static func == (a: Self, b: Self) -> Bool {
        a.embedDim == b.embedDim && a.imageEmbeddingSize == b.imageEmbeddingSize
            && a.inputImageSize == b.inputImageSize && a.maskInChans == b.maskInChans
            && a.layerNorm2dEps == b.layerNorm2dEps
    }
}

/// `MaskDecoder(transformer=TwoWayTransformer(...), ...)` arguments.
public struct MaskDecoderConfig: Sendable, Equatable {
    public var transformerDim: Int
    /// TwoWayTransformer depth, heads, MLP width, cross-attention downsample rate.
    public var depth: Int
    public var numHeads: Int
    public var mlpDim: Int
    public var attentionDownsampleRate: Int
    public var numMultimaskOutputs: Int
    public var iouHeadDepth: Int
    public var iouHeadHiddenDim: Int
    /// LayerNorm eps in the transformer (nn.LayerNorm default 1e-5) and LayerNorm2d eps in
    /// the output upscaling (1e-6).
    public var layerNormEps: Double
    public var layerNorm2dEps: Double

    public init(transformerDim: Int = 256, depth: Int = 2, numHeads: Int = 8, mlpDim: Int = 2048,
                attentionDownsampleRate: Int = 2, numMultimaskOutputs: Int = 3, iouHeadDepth: Int = 3,
                iouHeadHiddenDim: Int = 256, layerNormEps: Double = 1e-5, layerNorm2dEps: Double = 1e-6) {
        self.transformerDim = transformerDim
        self.depth = depth
        self.numHeads = numHeads
        self.mlpDim = mlpDim
        self.attentionDownsampleRate = attentionDownsampleRate
        self.numMultimaskOutputs = numMultimaskOutputs
        self.iouHeadDepth = iouHeadDepth
        self.iouHeadHiddenDim = iouHeadHiddenDim
        self.layerNormEps = layerNormEps
        self.layerNorm2dEps = layerNorm2dEps
    }
}

/// A whole SAM: its three modules and the pixel normalisation.
public struct SamConfig: Sendable, Equatable {
    public var imageEncoder: ImageEncoderConfig
    public var promptEncoder: PromptEncoderConfig
    public var maskDecoder: MaskDecoderConfig
    /// Per-channel mean and std on the 0–255 scale (`Sam.preprocess`).
    public var pixelMean: [Float]
    public var pixelStd: [Float]

    public static let defaultPixelMean: [Float] = [123.675, 116.28, 103.53]
    public static let defaultPixelStd: [Float] = [58.395, 57.12, 57.375]

    public init(imageEncoder: ImageEncoderConfig, promptEncoder: PromptEncoderConfig,
                maskDecoder: MaskDecoderConfig, pixelMean: [Float] = SamConfig.defaultPixelMean,
                pixelStd: [Float] = SamConfig.defaultPixelStd) {
        self.imageEncoder = imageEncoder
        self.promptEncoder = promptEncoder
        self.maskDecoder = maskDecoder
        self.pixelMean = pixelMean
        self.pixelStd = pixelStd
    }

    /// `build_sam._build_sam(encoder_embed_dim, encoder_depth, encoder_num_heads,
    /// encoder_global_attn_indexes)`: 1024² input, patch 16, 256-d prompts, window 14.
    public static func official(embedDim: Int, depth: Int, numHeads: Int, globalAttnIndexes: [Int]) -> SamConfig {
        let imageSize = 1024, patch = 16, promptDim = 256
        let grid = imageSize / patch
        return SamConfig(
            imageEncoder: ImageEncoderConfig(imgSize: imageSize, patchSize: patch, embedDim: embedDim, depth: depth,
                                             numHeads: numHeads, outChans: promptDim, windowSize: 14,
                                             globalAttnIndexes: globalAttnIndexes),
            promptEncoder: PromptEncoderConfig(embedDim: promptDim, imageEmbeddingSize: (grid, grid),
                                               inputImageSize: (imageSize, imageSize), maskInChans: 16),
            maskDecoder: MaskDecoderConfig(transformerDim: promptDim, depth: 2, numHeads: 8, mlpDim: 2048,
                                           numMultimaskOutputs: 3, iouHeadDepth: 3, iouHeadHiddenDim: 256))
    }

    /// SAM ViT-B (`sam_vit_b_01ec64.pth`).
    public static let vitB = official(embedDim: 768, depth: 12, numHeads: 12, globalAttnIndexes: [2, 5, 8, 11])
    /// SAM ViT-L (`sam_vit_l_0b3195.pth`), F-LMM's refiner.
    public static let vitL = official(embedDim: 1024, depth: 24, numHeads: 16, globalAttnIndexes: [5, 11, 17, 23])
    /// SAM ViT-H (`sam_vit_h_4b8939.pth`).
    public static let vitH = official(embedDim: 1280, depth: 32, numHeads: 16, globalAttnIndexes: [7, 15, 23, 31])

    /// The presets by `sam_model_registry` name.
    public static func preset(_ name: String) -> SamConfig? {
        switch name {
        case "vit_b": return vitB
        case "vit_l": return vitL
        case "vit_h", "default": return vitH
        default: return nil
        }
    }
}
