// TinySAM evaluation on ShapesWorld val scenes.
//
// Every object of the first `count` val scenes is segmented alone, with its exact visible
// mask as the ground truth at the original size:
//   box mIoU:   prompt = the mask's exact bounding box [x0, y0, x1 + 1, y1 + 1] (no jitter),
//               single-mask output (token 0);
//   point mIoU: prompt = one positive point, the mask pixel nearest its centroid
//               (`TinySAM.centralPoint`), multimask output, the candidate with the highest
//               predicted IoU (SamPredictor's choice);
// the low-res logits go through `postprocess_masks` to (H, W) and are thresholded at logit 0;
// IoU = |P ∩ G| / |P ∪ G|; the figure is the mean over all objects (not over scenes).

import NN
import SegmentAnything
import Tensors

/// IoUs of TinySAM's box- and point-prompted masks on val objects.
public struct TinySAMEvaluationResult: Sendable {
    /// One entry per object, scene by scene, objects in depth order.
    public let boxIoUs: [Double]
    public let pointIoUs: [Double]
    public var boxMIoU: Double { boxIoUs.reduce(0, +) / Double(max(1, boxIoUs.count)) }
    public var pointMIoU: Double { pointIoUs.reduce(0, +) / Double(max(1, pointIoUs.count)) }
}

public enum TinySAMEvaluation {
    /// Box- and point-prompted IoUs of every object of val scenes 0..<count of `world`.
    public static func evaluate(model: Sam, world: ShapesWorld, count: Int? = nil) -> TinySAMEvaluationResult {
        let n = count ?? world.count(.val)
        precondition(n >= 1 && n <= world.count(.val), "TinySAMEvaluation: count \(n) outside 1…\(world.count(.val))")
        guard let encoder = model.imageEncoder else {
            preconditionFailure("TinySAMEvaluation: the model has no image encoder")
        }
        let imgSize = model.imgSize
        let resize = ResizeLongestSide(imgSize)
        var boxIoUs: [Double] = [], pointIoUs: [Double] = []
        Autograd.noGrad {
            let densePE = model.promptEncoder.getDensePE()
            for i in 0..<n {
                var rng = world.rng(.val, i)
                let scene = ShapesWorld.makeScene(rng: &rng)
                let original = (scene.height, scene.width)
                let inSize = resize.preprocessShape(original)
                let emb = encoder(model.preprocess(TinySAM.encoderInput(scene.image, imgSize: imgSize)))
                let masks = scene.objects.indices.map { scene.mask($0) }
                let k = masks.count
                let boxes = resize.applyBoxes(masks.map { TinySAM.boundingBox($0)! }, originalSize: original)
                let (bs, bd) = model.promptEncoder(boxes: Tensor(shape: [k, 4], data: boxes.flatMap { $0.map { Float($0) } }))
                let (boxLow, _) = model.maskDecoder(imageEmbeddings: emb, imagePE: densePE, sparsePromptEmbeddings: bs,
                                                    densePromptEmbeddings: bd, multimaskOutput: false)
                let boxMasks = model.postprocessMasks(boxLow, inputSize: inSize, originalSize: original)
                let hw = scene.height * scene.width
                for (o, m) in masks.enumerated() {
                    boxIoUs.append(TinySAM.iou(logits: boxMasks.data, offset: o * hw, threshold: model.maskThreshold, mask: m))
                }

                let pts = resize.applyCoords(masks.map { TinySAM.centralPoint($0)! }, originalSize: original)
                let coords = Tensor(shape: [k, 1, 2], data: pts.flatMap { [Float($0.x), Float($0.y)] })
                let (ps, pd) = model.promptEncoder(points: (coords, [[Int]](repeating: [1], count: k)))
                let (ptLow, ptIoU) = model.maskDecoder(imageEmbeddings: emb, imagePE: densePE, sparsePromptEmbeddings: ps,
                                                       densePromptEmbeddings: pd, multimaskOutput: true)
                let ptMasks = model.postprocessMasks(ptLow, inputSize: inSize, originalSize: original)
                let c = ptIoU.shape[1]
                for (o, m) in masks.enumerated() {
                    var best = 0
                    for j in 1..<c where ptIoU.data[o * c + j] > ptIoU.data[o * c + best] { best = j }
                    pointIoUs.append(TinySAM.iou(logits: ptMasks.data, offset: (o * c + best) * hw,
                                                 threshold: model.maskThreshold, mask: m))
                }
            }
        }
        return TinySAMEvaluationResult(boxIoUs: boxIoUs, pointIoUs: pointIoUs)
    }

    /// Mean IoU over all objects of val scenes 0..<count (all val scenes when nil) with their
    /// exact bounding box as the prompt.
    public static func boxMIoU(model: Sam, world: ShapesWorld, count: Int? = nil) -> Double {
        evaluate(model: model, world: world, count: count).boxMIoU
    }

    /// Mean IoU over the same objects with one central positive point as the prompt.
    public static func pointMIoU(model: Sam, world: ShapesWorld, count: Int? = nil) -> Double {
        evaluate(model: model, world: world, count: count).pointMIoU
    }
}
