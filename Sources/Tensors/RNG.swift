// Our own counter-based random numbers (Philox4x32-10, Salmon et al., SC'11).
//
// A stream is (key = seed, counter). Each call to `nextBlock()` encrypts the counter and
// advances it by one, giving four 32-bit words. Nothing depends on the platform, the
// thread count or Swift's standard-library generators.
//
// Bits-to-float rule (documented, and pinned by tests):
//   uniform Float in [0, 1):  Float(u >> 8) * 2^-24           (24 random bits, exact)
//   uniform Double in [0, 1): Double(u64 >> 11) * 2^-53        (u64 = hi << 32 | lo)
//   normal (mean 0, std 1):   Box–Muller in Double on two uniform Doubles,
//                             z = sqrt(-2 ln(1 - u1)) * cos(2π u2), rounded to Float.

import RealModule

/// Philox4x32-10 generator. Value type: copying it forks an identical stream.
public struct PhiloxRNG: Sendable {
    public private(set) var key: (UInt32, UInt32)
    public private(set) var counter: (UInt32, UInt32, UInt32, UInt32)
    private var buffer: (UInt32, UInt32, UInt32, UInt32) = (0, 0, 0, 0)
    private var used = 4

    /// A stream for `seed`; `stream` separates independent streams of the same seed.
    public init(seed: UInt64, stream: UInt64 = 0) {
        key = (UInt32(truncatingIfNeeded: seed), UInt32(truncatingIfNeeded: seed >> 32))
        counter = (0, 0, UInt32(truncatingIfNeeded: stream), UInt32(truncatingIfNeeded: stream >> 32))
    }

    /// Philox4x32 with 10 rounds on (counter, key).
    public static func block(counter c: (UInt32, UInt32, UInt32, UInt32),
                             key k: (UInt32, UInt32)) -> (UInt32, UInt32, UInt32, UInt32) {
        let m0: UInt64 = 0xD251_1F53, m1: UInt64 = 0xCD9E_8D57
        let w0: UInt32 = 0x9E37_79B9, w1: UInt32 = 0xBB67_AE85
        var (x0, x1, x2, x3) = c
        var (k0, k1) = k
        for _ in 0..<10 {
            let p0 = m0 &* UInt64(x0), p1 = m1 &* UInt64(x2)
            let hi0 = UInt32(truncatingIfNeeded: p0 >> 32), lo0 = UInt32(truncatingIfNeeded: p0)
            let hi1 = UInt32(truncatingIfNeeded: p1 >> 32), lo1 = UInt32(truncatingIfNeeded: p1)
            (x0, x1, x2, x3) = (hi1 ^ x1 ^ k0, lo1, hi0 ^ x3 ^ k1, lo0)
            k0 = k0 &+ w0
            k1 = k1 &+ w1
        }
        return (x0, x1, x2, x3)
    }

    /// The next 32 random bits.
    public mutating func nextUInt32() -> UInt32 {
        if used == 4 {
            buffer = Self.block(counter: counter, key: key)
            used = 0
            counter.0 &+= 1
            if counter.0 == 0 { counter.1 &+= 1 }
        }
        defer { used += 1 }
        switch used {
        case 0: return buffer.0
        case 1: return buffer.1
        case 2: return buffer.2
        default: return buffer.3
        }
    }

    /// The next 64 random bits (high word first).
    public mutating func nextUInt64() -> UInt64 {
        let hi = UInt64(nextUInt32()), lo = UInt64(nextUInt32())
        return hi << 32 | lo
    }

    /// Uniform in [0, 1) with 24 random bits.
    public mutating func nextFloat() -> Float { Float(nextUInt32() >> 8) * 0x1p-24 }

    /// Uniform in [0, 1) with 53 random bits.
    public mutating func nextDouble() -> Double { Double(nextUInt64() >> 11) * 0x1p-53 }

    /// Uniform in [lo, hi).
    public mutating func uniform(_ lo: Float, _ hi: Float) -> Float { lo + (hi - lo) * nextFloat() }

    /// Standard normal by Box–Muller (one value per two uniforms; no caching, so the stream
    /// position depends only on how many values were drawn).
    public mutating func nextNormal() -> Float {
        let u1 = nextDouble(), u2 = nextDouble()
        return Float(Double.sqrt(-2 * Double.log(1 - u1)) * Double.cos(2 * Double.pi * u2))
    }

    /// Uniform integer in `0..<n` by rejection (unbiased).
    public mutating func nextInt(below n: Int) -> Int {
        precondition(n > 0, "nextInt(below:): n = \(n) must be positive")
        let bound = UInt64(n)
        let limit = UInt64.max - UInt64.max % bound
        while true {
            let r = nextUInt64()
            if r < limit { return Int(r % bound) }
        }
    }

    /// Fisher–Yates shuffle of `0..<n`.
    public mutating func permutation(_ n: Int) -> [Int] {
        var p = Array(0..<n)
        if n > 1 {
            for i in stride(from: n - 1, to: 0, by: -1) { p.swapAt(i, nextInt(below: i + 1)) }
        }
        return p
    }
}

extension Tensor {
    /// Uniform values in [lo, hi) from `rng`.
    public static func uniform(_ shape: [Int], _ lo: Float = 0, _ hi: Float = 1,
                               rng: inout PhiloxRNG, requiresGrad: Bool = false) -> Tensor {
        var d = [Float](repeating: 0, count: shape.product)
        for i in d.indices { d[i] = rng.uniform(lo, hi) }
        return Tensor(shape: shape, data: d, requiresGrad: requiresGrad)
    }

    /// Normal values with mean `mean` and standard deviation `std` from `rng`.
    public static func normal(_ shape: [Int], mean: Float = 0, std: Float = 1,
                              rng: inout PhiloxRNG, requiresGrad: Bool = false) -> Tensor {
        var d = [Float](repeating: 0, count: shape.product)
        for i in d.indices { d[i] = mean + std * rng.nextNormal() }
        return Tensor(shape: shape, data: d, requiresGrad: requiresGrad)
    }
}
