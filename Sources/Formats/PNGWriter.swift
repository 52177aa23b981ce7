// A minimal PNG encoder: 8-bit RGB (colour type 2), no interlace, filter type 0 on every row,
// the zlib stream made of stored (uncompressed) deflate blocks. Checksums are computed here:
// CRC-32 (ISO 3309 / ITU-T V.42, reflected polynomial 0xEDB88320, as PNG chunks use it) and
// Adler-32 (RFC 1950, the zlib trailer).
//
//   file  = signature 89 50 4E 47 0D 0A 1A 0A, IHDR, IDAT, IEND
//   chunk = length (4, big-endian) | type (4 ASCII) | data | CRC-32 of type + data (big-endian)
//   IHDR  = width, height (4 each), bit depth 8, colour type 2, compression 0, filter 0, interlace 0
//   IDAT  = zlib: CMF 0x78, FLG 0x01 (no dictionary, (0x78·256 + 0x01) % 31 == 0),
//           stored blocks of ≤ 65535 bytes: [BFINAL | BTYPE=00 << 1] LEN NLEN (little-endian) bytes,
//           then the Adler-32 of the uncompressed data (big-endian)
//   the uncompressed data = for each row: filter byte 0, then width·3 bytes R G B.
// The output depends only on the pixels, so the same image gives the same bytes.

import Foundation

/// PNG encoding of 8-bit RGB images.
public enum PNGWriter {
    /// The PNG file signature.
    public static let signature: [UInt8] = [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]

    /// The CRC-32 table of the reflected polynomial 0xEDB88320.
    static let crcTable: [UInt32] = (0..<256).map { n -> UInt32 in
        var c = UInt32(n)
        for _ in 0..<8 { c = (c & 1) != 0 ? 0xEDB8_8320 ^ (c >> 1) : c >> 1 }
        return c
    }

    /// CRC-32 of `bytes`, continuing from `crc` (the CRC of the bytes before; 0 to start).
    public static func crc32<S: Sequence>(_ bytes: S, continuing crc: UInt32 = 0) -> UInt32 where S.Element == UInt8 {
        var c = ~crc
        for b in bytes { c = crcTable[Int((c ^ UInt32(b)) & 0xFF)] ^ (c >> 8) }
        return ~c
    }

    /// Adler-32 of `bytes` (RFC 1950): a = 1 + Σ bytes, b = Σ a after each byte, both mod 65521.
    public static func adler32<S: Sequence>(_ bytes: S) -> UInt32 where S.Element == UInt8 {
        let mod: UInt32 = 65521
        var a: UInt32 = 1, b: UInt32 = 0
        var pending = 0
        for x in bytes {
            a += UInt32(x)
            b += a
            pending += 1
            // 5552 bytes keep b below 2³² before reducing (zlib's NMAX bound).
            if pending == 5552 {
                a %= mod
                b %= mod
                pending = 0
            }
        }
        return (b % mod) << 16 | (a % mod)
    }

    /// A zlib stream of stored deflate blocks holding `data`.
    public static func zlibStored(_ data: [UInt8]) -> [UInt8] {
        var out: [UInt8] = [0x78, 0x01]
        out.reserveCapacity(data.count + data.count / 65535 * 5 + 16)
        var start = 0
        repeat {
            let n = min(65535, data.count - start)
            let final = start + n == data.count
            out.append(final ? 1 : 0)
            out += [UInt8(n & 0xFF), UInt8(n >> 8), UInt8(~n & 0xFF), UInt8((~n >> 8) & 0xFF)]
            out += data[start..<(start + n)]
            start += n
        } while start < data.count
        appendBigEndian(&out, adler32(data))
        return out
    }

    /// PNG bytes of an RGB image: `pixels` [height · width · 3], row-major, R G B per pixel.
    public static func encodeRGB(width: Int, height: Int, pixels: [UInt8]) -> [UInt8] {
        precondition(width > 0 && height > 0 && width <= 0x7FFF_FFFF && height <= 0x7FFF_FFFF,
                     "PNGWriter.encodeRGB: size \(width)×\(height) must be positive")
        precondition(pixels.count == width * height * 3,
                     "PNGWriter.encodeRGB: \(pixels.count) bytes for \(width)×\(height)×3")
        var raw: [UInt8] = []
        raw.reserveCapacity(height * (1 + width * 3))
        for i in 0..<height {
            raw.append(0)
            raw += pixels[(i * width * 3)..<((i + 1) * width * 3)]
        }
        var ihdr: [UInt8] = []
        appendBigEndian(&ihdr, UInt32(width))
        appendBigEndian(&ihdr, UInt32(height))
        ihdr += [8, 2, 0, 0, 0]
        var out = signature
        appendChunk(&out, "IHDR", ihdr)
        appendChunk(&out, "IDAT", zlibStored(raw))
        appendChunk(&out, "IEND", [])
        return out
    }

    /// Writes an RGB image as PNG to `url`, atomically.
    public static func writeRGB(_ url: URL, width: Int, height: Int, pixels: [UInt8]) throws {
        try AtomicFile.write(encodeRGB(width: width, height: height, pixels: pixels), to: url)
    }

    static func appendChunk(_ out: inout [UInt8], _ type: String, _ data: [UInt8]) {
        let t = Array(type.utf8)
        precondition(t.count == 4, "PNGWriter: chunk type '\(type)' must be 4 ASCII letters")
        appendBigEndian(&out, UInt32(data.count))
        out += t
        out += data
        appendBigEndian(&out, crc32(data, continuing: crc32(t)))
    }

    static func appendBigEndian(_ out: inout [UInt8], _ v: UInt32) {
        out += [UInt8(v >> 24), UInt8((v >> 16) & 0xFF), UInt8((v >> 8) & 0xFF), UInt8(v & 0xFF)]
    }
}
