// 16-bit float encodings (IEEE binary16 "F16" and bfloat16 "BF16") as raw UInt16 bits.
//
// Decoding to Float32 is exact (every half and bfloat16 value is a Float32). Encoding rounds
// to nearest, ties to even, as PyTorch's `.half()` / `.bfloat16()` do; overflow gives ±inf and
// NaN stays NaN. Used by safetensors (F16/BF16) and by NetCDF files that store 16-bit data
// as UInt16 with an `encoding` attribute.

/// IEEE 754 binary16 bit patterns.
public enum Float16Bits {
    /// The Float32 value of a binary16 bit pattern (exact).
    @inlinable public static func decode(_ h: UInt16) -> Float {
        let sign = UInt32(h & 0x8000) << 16
        let exp = UInt32(h >> 10) & 0x1F
        let mant = UInt32(h) & 0x3FF
        if exp == 0 {
            // Zero or subnormal: mant · 2⁻²⁴, exact in Float32.
            let magnitude = Float(mant) * 0x1p-24
            return sign != 0 ? -magnitude : magnitude
        }
        if exp == 0x1F {
            return Float(bitPattern: sign | 0x7F80_0000 | (mant << 13))
        }
        return Float(bitPattern: sign | ((exp + 112) << 23) | (mant << 13))
    }

    /// The binary16 bit pattern nearest to `x` (ties to even; overflow → ±inf).
    @inlinable public static func encode(_ x: Float) -> UInt16 {
        let b = x.bitPattern
        let sign = UInt16((b >> 16) & 0x8000)
        let a = b & 0x7FFF_FFFF
        if a >= 0x7F80_0000 {  // inf or NaN
            return a == 0x7F80_0000 ? sign | 0x7C00 : sign | 0x7E00 | UInt16((a >> 13) & 0x3FF)
        }
        if a >= 0x477F_F000 { return sign | 0x7C00 }  // ≥ 65520 rounds to inf
        if a < 0x3880_0000 {
            // Below 2⁻¹⁴: a subnormal half. Scaling by 2²⁴ is exact; round to an integer count
            // of 2⁻²⁴ units (1024 becomes the smallest normal, whose bit pattern is 0x0400).
            let units = (Float(bitPattern: a) * 0x1p24).rounded(.toNearestOrEven)
            return sign | UInt16(units)
        }
        let exp = (a >> 23) - 112
        var h = (exp << 10) | ((a >> 13) & 0x3FF)
        let rest = a & 0x1FFF
        if rest > 0x1000 || (rest == 0x1000 && (h & 1) == 1) { h += 1 }  // a carry moves into the exponent
        return sign | UInt16(h)
    }
}

/// bfloat16 bit patterns (the upper half of a Float32).
public enum BFloat16Bits {
    /// The Float32 value of a bfloat16 bit pattern (exact).
    @inlinable public static func decode(_ h: UInt16) -> Float {
        Float(bitPattern: UInt32(h) << 16)
    }

    /// The bfloat16 bit pattern nearest to `x` (ties to even; NaN stays a quiet NaN).
    @inlinable public static func encode(_ x: Float) -> UInt16 {
        let b = x.bitPattern
        if x.isNaN { return UInt16(b >> 16) | 0x0040 }
        let rounded = b &+ 0x7FFF &+ ((b >> 16) & 1)
        return UInt16(rounded >> 16)
    }
}
