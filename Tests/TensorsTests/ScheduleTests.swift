import XCTest
import NN

final class ScheduleTests: XCTestCase {
    /// base 1e-4, 1000 steps, warm-up ratio 0.03 → W = int(0.03·1000) = 30 warm-up steps,
    /// cosine over K = 970 steps.
    func testHandDerivedValues() {
        let s = WarmupCosineSchedule(baseLR: 1e-4, totalSteps: 1000, warmupRatio: 0.03, startFactor: 1e-5)
        XCTAssertEqual(s.warmupSteps, 30)
        // Step 0: base · start_factor = 1e-4 · 1e-5.
        XCTAssertEqual(s.lr(at: 0), 1e-9, accuracy: 1e-24)
        // Step 15: factor = 1e-5 + (1 − 1e-5)·15/29 = 1e-5 + 0.99999·0.51724138 = 0.51724621.
        XCTAssertEqual(s.lr(at: 15), 1e-4 * 0.5172462068965517, accuracy: 1e-18)
        // Step 29 = W − 1: the warm-up's last factor, end_factor = 1 → base.
        XCTAssertEqual(s.lr(at: 29), 1e-4, accuracy: 1e-18)
        // Step 30 = W: the cosine's first step leaves the lr unchanged (k = 0).
        XCTAssertEqual(s.lr(at: 30), 1e-4, accuracy: 1e-18)
        // Middle of the cosine: k = 485 = K/2, cos(π/2) = 0 → base/2.
        XCTAssertEqual(s.lr(at: 515), 5e-5, accuracy: 1e-18)
        // k = 970/3 is not integral; k = 194 = K/5: (1 + cos(π/5))/2 = (1 + 0.80901699)/2 = 0.90450850.
        XCTAssertEqual(s.lr(at: 224), 1e-4 * 0.9045084971874737, accuracy: 1e-18)
        // Last step 999: k = 969, (1 + cos(969π/970))/2 = (1 − cos(π/970))/2 = sin²(π/1940)
        // = (0.00161938…)² = 2.6223817e-6 → lr = 2.6223817e-10 (never exactly 0).
        XCTAssertEqual(s.lr(at: 999), 2.6223817020392275e-10, accuracy: 1e-20)
        // After the end nothing changes the lr.
        XCTAssertEqual(s.lr(at: 5000), s.lr(at: 999))
        // Monotone: rising during warm-up, falling during the cosine.
        for i in 1..<30 { XCTAssertGreaterThan(s.lr(at: i), s.lr(at: i - 1)) }
        for i in 31..<1000 { XCTAssertLessThan(s.lr(at: i), s.lr(at: i - 1)) }
    }

    /// The closed forms equal mmengine's chained updates, step by step.
    func testClosedFormEqualsChainedForm() {
        let cases = [
            WarmupCosineSchedule(baseLR: 1e-4, totalSteps: 1000, warmupRatio: 0.03, startFactor: 1e-5),
            WarmupCosineSchedule.flmm(baseLR: 1e-4, epochLength: 1234),
            WarmupCosineSchedule(baseLR: 2e-3, warmupSteps: 7, totalSteps: 50, startFactor: 0.25, endFactor: 0.8, etaMin: 1e-5),
            WarmupCosineSchedule(baseLR: 1e-3, warmupSteps: 1, totalSteps: 20),
            WarmupCosineSchedule(baseLR: 1e-3, warmupSteps: 0, totalSteps: 20),
        ]
        for s in cases {
            let chained = s.chainedRates()
            XCTAssertEqual(chained.count, s.totalSteps)
            var worst = 0.0
            for (i, c) in chained.enumerated() {
                worst = max(worst, abs(s.lr(at: i) - c) / abs(c))
            }
            print("ScheduleTests: W=\(s.warmupSteps) N=\(s.totalSteps) worst relative difference closed vs chained \(worst)")
            XCTAssertLessThan(worst, 1e-12, "W=\(s.warmupSteps) N=\(s.totalSteps)")
        }
    }

    func testBoundaries() {
        // F-LMM: epoch length 1234 → W = int(0.24·1234) = int(296.16) = 296, N = 8·1234 = 9872.
        let f = WarmupCosineSchedule.flmm(epochLength: 1234)
        XCTAssertEqual(f.warmupSteps, 296)
        XCTAssertEqual(f.totalSteps, 9872)
        XCTAssertEqual(f.baseLR, 1e-4)
        // W = 1: the warm-up is only step 0 at base·start, and the chained cosine decays from there.
        let one = WarmupCosineSchedule(baseLR: 1, warmupSteps: 1, totalSteps: 5, startFactor: 0.5)
        // K = 4: step 1 (k=0) 0.5, step 3 (k=2) 0.5·(1 + cos(π/2))/2 = 0.25.
        XCTAssertEqual(one.lr(at: 0), 0.5)
        XCTAssertEqual(one.lr(at: 1), 0.5)
        XCTAssertEqual(one.lr(at: 3), 0.25, accuracy: 1e-16)
        // W = 0: cosine from base at step 0; K = 4, step 2: (1 + cos(π/2))/2 = 0.5.
        let none = WarmupCosineSchedule(baseLR: 1, warmupSteps: 0, totalSteps: 4)
        XCTAssertEqual(none.lr(at: 0), 1)
        XCTAssertEqual(none.lr(at: 2), 0.5, accuracy: 1e-16)
        // eta_min: step 2 of 4 → η + (base − η)/2.
        let floor = WarmupCosineSchedule(baseLR: 1, warmupSteps: 0, totalSteps: 4, etaMin: 0.2)
        XCTAssertEqual(floor.lr(at: 2), 0.6, accuracy: 1e-15)
    }
}
