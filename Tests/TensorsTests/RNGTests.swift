import XCTest
import Tensors

final class RNGTests: XCTestCase {
    /// Known-answer vectors of Philox4x32-10 from Random123's kat_vectors file.
    func testPhiloxKnownAnswers() {
        func check(_ c: (UInt32, UInt32, UInt32, UInt32), _ k: (UInt32, UInt32),
                   _ e: (UInt32, UInt32, UInt32, UInt32), line: UInt = #line) {
            let r = PhiloxRNG.block(counter: c, key: k)
            XCTAssertEqual([r.0, r.1, r.2, r.3], [e.0, e.1, e.2, e.3], line: line)
        }
        check((0, 0, 0, 0), (0, 0), (0x6627_e8d5, 0xe169_c58d, 0xbc57_ac4c, 0x9b00_dbd8))
        check((0xffff_ffff, 0xffff_ffff, 0xffff_ffff, 0xffff_ffff), (0xffff_ffff, 0xffff_ffff),
              (0x408f_276d, 0x41c8_3b0e, 0xa20b_c7c6, 0x6d54_51fd))
        check((0x243f_6a88, 0x85a3_08d3, 0x1319_8a2e, 0x0370_7344), (0xa409_3822, 0x299f_31d0),
              (0xd16c_fe09, 0x94fd_cceb, 0x5001_e420, 0x2412_6ea1))
    }

    /// The documented bits-to-float rule: Float(u >> 8) · 2⁻²⁴.
    func testBitsToFloatRule() {
        var a = PhiloxRNG(seed: 42)
        var b = PhiloxRNG(seed: 42)
        for _ in 0..<100 {
            let u = a.nextUInt32()
            XCTAssertEqual(b.nextFloat(), Float(u >> 8) * 0x1p-24)
        }
        var c = PhiloxRNG(seed: 7)
        for _ in 0..<10_000 {
            let f = c.nextFloat()
            XCTAssert(f >= 0 && f < 1)
        }
    }

    /// Streams: same seed → same values; different seed or stream → different values.
    func testStreamsAreReproducibleAndIndependent() {
        var a = PhiloxRNG(seed: 1), b = PhiloxRNG(seed: 1), c = PhiloxRNG(seed: 2), d = PhiloxRNG(seed: 1, stream: 1)
        let va = (0..<16).map { _ in a.nextUInt32() }
        XCTAssertEqual(va, (0..<16).map { _ in b.nextUInt32() })
        XCTAssertNotEqual(va, (0..<16).map { _ in c.nextUInt32() })
        XCTAssertNotEqual(va, (0..<16).map { _ in d.nextUInt32() })
        // The first block of seed 0, stream 0 is the known-answer block for counter 0, key 0.
        var z = PhiloxRNG(seed: 0)
        XCTAssertEqual(z.nextUInt32(), 0x6627_e8d5)
    }

    /// Normal draws: mean ≈ 0 and variance ≈ 1 within 5 standard errors over 200k samples.
    func testNormalMoments() {
        var r = PhiloxRNG(seed: 3)
        let n = 200_000
        var s = 0.0, s2 = 0.0
        for _ in 0..<n { let z = Double(r.nextNormal()); s += z; s2 += z * z }
        let mean = s / Double(n), variance = s2 / Double(n) - mean * mean
        XCTAssertEqual(mean, 0, accuracy: 5 / Double(n).squareRoot())
        XCTAssertEqual(variance, 1, accuracy: 5 * (2 / Double(n)).squareRoot())
    }

    /// `nextInt(below:)` stays in range and `permutation` is a permutation.
    func testIntegersAndPermutation() {
        var r = PhiloxRNG(seed: 9)
        var seen = [Int](repeating: 0, count: 7)
        for _ in 0..<7000 { seen[r.nextInt(below: 7)] += 1 }
        XCTAssert(seen.allSatisfy { $0 > 850 && $0 < 1150 }, "\(seen)")
        let p = r.permutation(100)
        XCTAssertEqual(p.sorted(), Array(0..<100))
    }
}
