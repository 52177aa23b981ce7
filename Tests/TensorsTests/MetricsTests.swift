import XCTest
import Tensors
import FLMM

final class MetricsTests: XCTestCase {
    func testIoUAndSummaries() {
        // Object 0: pred {0,1}, gt {1,2} → I 1, U 3. Object 1: both empty → U 0 → IoU 0.
        // Object 2: identical {0..3} → 1. Object 3: pred {0}, gt {0, 1} → 0.5 (not > 0.5).
        let pred = Tensor(shape: [4, 2, 2], data: [1, 1, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 0, 0, 0])
        let gt = Tensor(shape: [4, 2, 2], data: [0, 1, 1, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 0, 0])
        let s = SegmentationScores(pred: pred, gt: gt)
        XCTAssertEqual(s.objects, [MaskOverlap(intersection: 1, union: 3), MaskOverlap(intersection: 0, union: 0),
                                   MaskOverlap(intersection: 4, union: 4), MaskOverlap(intersection: 1, union: 2)])
        XCTAssertEqual(s.ious, [Float(1) / 3, 0, 1, 0.5])
        XCTAssertEqual(s.mIoU, Float((1.0 / 3 + 1 + 0.5) / 4), accuracy: 1e-7)
        XCTAssertEqual(s.cIoU, 6.0 / 9, accuracy: 1e-7)
        XCTAssertEqual(s.precision(above: 0.5), 0.25)   // strict: 0.5 does not count
        XCTAssertEqual(s.precision(above: 0.3), 0.75)
        XCTAssertEqual(s.precision(above: 0.9), 0.25)
        XCTAssertEqual(pixelAccuracy(pred: pred, gt: gt), [0.5, 1, 1, 0.75])
    }

    func testPNGAverageRecallHandValues() {
        // One IoU of 0.5: acc_k = 1 for t_k = k·1e-5 ≤ 0.5, i.e. k = 0…50000 (50001 steps of
        // 1e-5), then 0 → AR = 0.50001 (up to the rounding of the steps).
        XCTAssertEqual(pngAverageRecall([0.5]), 0.50001, accuracy: 1e-9)
        // IoU 1 counts for every threshold but the area stops at t_{K-1} = 0.99999.
        XCTAssertEqual(pngAverageRecall([1]), 0.99999, accuracy: 1e-9)
        XCTAssertEqual(pngAverageRecall([0]), 1e-5, accuracy: 1e-12)   // only t_0 = 0 ≤ 0
        // Halves: [0, 1] → (1e-5 · 1 + 0.99998 · 0.5) ...: mean of the two singles.
        XCTAssertEqual(pngAverageRecall([0, 1]), (1e-5 + 0.99999) / 2, accuracy: 1e-9)
    }

    func testPNGAverageRecallMatchesTheDirectLoop() {
        // The sorted sweep must give the same bits as F-LMM's direct loop over thresholds.
        let ious: [Float] = [0.12345, 0.5, 0.5, 0.99999, 0.00001, 0.7071, 1, 0]
        var direct = 0.0
        let t = (0..<100_000).map { Double($0) * 1e-5 }
        for k in 0..<(t.count - 1) {
            let acc = Double(ious.filter { Double($0) >= t[k] }.count) / Double(ious.count)
            direct += abs(t[k + 1] - t[k]) * acc
        }
        XCTAssertEqual(pngAverageRecall(ious), direct)
    }

    func testGoldenMetrics() throws { try assertGoldenPasses("metrics_iou") }
}
