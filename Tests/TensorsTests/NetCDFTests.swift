import Foundation
import XCTest
import Formats

final class NetCDFTests: XCTestCase {
    private func tempDir() throws -> URL {
        let d = FileManager.default.temporaryDirectory.appendingPathComponent("nc-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: d, withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(at: d) }
        return d
    }

    private func listing(_ dir: URL) throws -> [String] {
        try FileManager.default.contentsOfDirectory(atPath: dir.path).sorted()
    }

    /// Writes a file shaped like the toolkit's: a grounding cache (16-bit data stored as ushort
    /// with an `encoding` attribute, compressed and chunked), results with coordinate variables
    /// and string labels, and scalars of every type.
    private func writeSample(_ url: URL) throws -> (cache: [UInt16], attn: [Float]) {
        let f = try NetCDFFile.create(url)
        try f.defineDimension("sample", length: nil)
        try f.defineDimension("y", length: 6)
        try f.defineDimension("x", length: 8)
        try f.defineDimension("config", length: 3)
        try f.defineDimension("step", length: 5)
        try f.setAttribute("title", "NetCDF round trip")
        try f.setAttribute("schema_version", 2)
        try f.setAttribute("threads", .int(1 << 40))
        try f.setAttribute("lr", 1e-4)
        try f.setAttribute("normalize_input", true)
        try f.setAttribute("sources", .strings(["TinyVLM", "TinySAM"]))

        let cacheVar = try f.defineVariable("cache", type: .ushort, dimensions: ["sample", "y", "x"],
                                            compression: 4, chunks: [1, 6, 8])
        XCTAssertEqual(cacheVar.shape, [0, 6, 8])
        try f.setAttribute("encoding", "float16", variable: "cache")
        try f.defineVariable("attn", type: .float, dimensions: ["y", "x"], compression: 1, shuffle: false)
        try f.defineVariable("loss", type: .double, dimensions: ["config", "step"])
        try f.setAttribute("units", "nats", variable: "loss")
        try f.setAttribute("valid_range", .doubles([0, 100]), variable: "loss")
        try f.defineVariable("config", type: .int, dimensions: ["config"])
        try f.defineVariable("config_name", type: .string, dimensions: ["config"])
        try f.defineVariable("token_ids", type: .int64, dimensions: ["config"])
        try f.defineVariable("mask", type: .ubyte, dimensions: ["y", "x"])
        try f.defineVariable("offset", type: .byte, dimensions: ["config"])
        try f.defineVariable("wall_time", type: .double, dimensions: [])

        // Two samples written one hyperslab at a time along the unlimited dimension.
        let values: [Float] = (0..<96).map { Float($0) * 0.25 - 7 }
        let cache = values.map(Float16Bits.encode)
        try f.write("cache", Array(cache[0..<48]), start: [0, 0, 0], count: [1, 6, 8])
        try f.write("cache", Array(cache[48..<96]), start: [1, 0, 0], count: [1, 6, 8])
        let attn: [Float] = (0..<48).map { Float($0).squareRoot() }
        try f.write("attn", attn)
        try f.write("loss", (0..<15).map { Double($0) / 3 })
        try f.write("config", [Int32(10), 20, 30])
        try f.writeStrings("config_name", ["mean/norm", "max", "µ-label ✓"])
        try f.write("token_ids", [Int64.min, 0, Int64.max])
        try f.write("mask", (0..<48).map { UInt8($0 % 2) })
        try f.write("offset", [Int8(-128), 0, 127])
        try f.write("wall_time", [12.5])

        // Nothing appears under the final name before close.
        XCTAssertFalse(FileManager.default.fileExists(atPath: url.path))
        try f.close()
        XCTAssertTrue(FileManager.default.fileExists(atPath: url.path))
        return (cache, attn)
    }

    func testRoundTrip() throws {
        let dir = try tempDir()
        let url = dir.appendingPathComponent("sample.nc")
        let (cache, attn) = try writeSample(url)
        XCTAssertEqual(try listing(dir), ["sample.nc"])  // no temporary left

        let f = try NetCDFFile.open(url)
        defer { try? f.close() }
        XCTAssertEqual(try f.dimensions(), [
            NetCDFDimension(name: "sample", length: 2, isUnlimited: true),
            NetCDFDimension(name: "y", length: 6, isUnlimited: false),
            NetCDFDimension(name: "x", length: 8, isUnlimited: false),
            NetCDFDimension(name: "config", length: 3, isUnlimited: false),
            NetCDFDimension(name: "step", length: 5, isUnlimited: false),
        ])
        XCTAssertEqual(try f.variables().map(\.name),
                       ["cache", "attn", "loss", "config", "config_name", "token_ids", "mask", "offset", "wall_time"])
        XCTAssertEqual(try f.variable("cache"), NetCDFVariable(name: "cache", type: .ushort, dimensions: ["sample", "y", "x"], shape: [2, 6, 8]))
        XCTAssertEqual(try f.variable("wall_time").shape, [])

        // Global and variable attributes.
        let g = try f.attributes()
        XCTAssertEqual(g["title"], .text("NetCDF round trip"))
        XCTAssertEqual(g["schema_version"], .int32s([2]))
        XCTAssertEqual(g["threads"], .int64s([1 << 40]))
        XCTAssertEqual(g["threads"]?.int, 1 << 40)
        XCTAssertEqual(g["lr"]?.double, 1e-4)
        XCTAssertEqual(g["normalize_input"], .int8s([1]))
        XCTAssertEqual(g["sources"], .strings(["TinyVLM", "TinySAM"]))
        XCTAssertEqual(g.count, 6)
        XCTAssertEqual(try f.attribute("encoding", variable: "cache")?.text, "float16")
        XCTAssertEqual(try f.attributes(variable: "loss"), ["units": .text("nats"), "valid_range": .doubles([0, 100])])
        XCTAssertNil(try f.attribute("absent"))

        // Data, whole and by hyperslab.
        let back: [UInt16] = try f.read("cache")
        XCTAssertEqual(back, cache)
        XCTAssertEqual(back.map(Float16Bits.decode), (0..<96).map { Float($0) * 0.25 - 7 })
        XCTAssertEqual(try f.read("cache", as: UInt16.self, start: [1, 2, 3], count: [1, 2, 2]),
                       [cache[48 + 2 * 8 + 3], cache[48 + 2 * 8 + 4], cache[48 + 3 * 8 + 3], cache[48 + 3 * 8 + 4]])
        XCTAssertEqual(try f.read("attn", as: Float.self), attn)
        XCTAssertEqual(try f.read("loss", as: Double.self, start: [2, 1], count: [1, 3]), [11.0 / 3, 12.0 / 3, 13.0 / 3])
        XCTAssertEqual(try f.read("config", as: Int32.self), [10, 20, 30])
        XCTAssertEqual(try f.readStrings("config_name"), ["mean/norm", "max", "µ-label ✓"])
        XCTAssertEqual(try f.readStrings("config_name", start: [1], count: [2]), ["max", "µ-label ✓"])
        XCTAssertEqual(try f.read("token_ids", as: Int64.self), [Int64.min, 0, Int64.max])
        XCTAssertEqual(try f.read("mask", as: UInt8.self), (0..<48).map { UInt8($0 % 2) })
        XCTAssertEqual(try f.read("offset", as: Int8.self), [-128, 0, 127])
        XCTAssertEqual(try f.read("wall_time", as: Double.self), [12.5])
    }

    func testErrorsNameFileAndVariable() throws {
        let dir = try tempDir()
        let url = dir.appendingPathComponent("e.nc")
        _ = try writeSample(url)
        let f = try NetCDFFile.open(url)

        func kind(_ body: () throws -> Any, line: UInt = #line) -> NetCDFError? {
            do {
                _ = try body()
                XCTFail("no error", line: line)
                return nil
            } catch let e as NetCDFError {
                XCTAssertEqual(e.file, url.path, line: line)
                XCTAssertTrue(e.description.hasPrefix(url.path + ": "), e.description, line: line)
                return e
            } catch {
                XCTFail("\(error)", line: line)
                return nil
            }
        }
        XCTAssertEqual(kind { try f.read("nope", as: Float.self) }?.kind, .missingVariable("nope"))
        let mismatch = kind { try f.read("cache", as: Float.self) }
        XCTAssertEqual(mismatch?.kind, .typeMismatch(expected: "Float (float)", actual: "ushort"))
        XCTAssertEqual(mismatch?.variable, "cache")
        XCTAssertEqual(kind { try f.readStrings("attn") }?.kind, .typeMismatch(expected: "string", actual: "float"))
        XCTAssertEqual(kind { try f.read("attn", as: Float.self, start: [0], count: [1]) }?.variable, "attn")

        // Out-of-range hyperslab: netCDF's own status and message, naming the variable.
        let edge = kind { try f.read("attn", as: Float.self, start: [5, 0], count: [2, 8]) }
        guard case .library(let call, let status, let message)? = edge?.kind else { return XCTFail("\(String(describing: edge))") }
        XCTAssertEqual(call, "nc_get_vara_float")
        XCTAssertLessThan(status, 0)
        XCTAssertFalse(message.isEmpty)
        XCTAssertEqual(edge?.variable, "attn")
        try f.close()
        XCTAssertEqual(kind { try f.variables() }?.kind, .closed)

        // Opening a missing file or a non-NetCDF file: nc_strerror's text.
        let missing = dir.appendingPathComponent("missing.nc")
        do {
            _ = try NetCDFFile.open(missing)
            XCTFail("opened a missing file")
        } catch let e as NetCDFError {
            XCTAssertEqual(e.file, missing.path)
            guard case .library("nc_open", _, let m) = e.kind else { return XCTFail("\(e)") }
            XCTAssertTrue(m.contains("No such file"), m)
        }

        // Writing: wrong count, undefined dimension; an abandoned file never appears.
        let out = dir.appendingPathComponent("w.nc")
        let w = try NetCDFFile.create(out)
        try w.defineDimension("n", length: 4)
        try w.defineVariable("v", type: .float, dimensions: ["n"])
        do {
            try w.write("v", [Float(1), 2, 3])
            XCTFail("wrote 3 values into 4")
        } catch let e as NetCDFError {
            XCTAssertEqual(e.kind, .countMismatch(expected: 4, actual: 3))
            XCTAssertEqual(e.variable, "v")
            XCTAssertEqual(e.file, out.path)
        }
        do {
            try w.defineVariable("u", type: .float, dimensions: ["n", "m"])
            XCTFail("defined a variable over an undefined dimension")
        } catch let e as NetCDFError {
            XCTAssertEqual(e.kind, .missingDimension("m"))
        }
        do {
            try w.write("v", [Int32(1), 2, 3, 4])
            XCTFail("wrote Int32 into a float variable")
        } catch let e as NetCDFError {
            XCTAssertEqual(e.kind, .typeMismatch(expected: "float", actual: "Int32 (int)"))
        }
        w.discard()
        XCTAssertFalse(FileManager.default.fileExists(atPath: out.path))

        // A created file that is dropped without close is abandoned too.
        do {
            let dropped = try NetCDFFile.create(out)
            try dropped.defineDimension("n", length: 1)
        }
        XCTAssertEqual(try listing(dir), ["e.nc"])
    }

    func testCompressionAndNcdump() throws {
        let dir = try tempDir()
        let url = dir.appendingPathComponent("big.nc")
        let f = try NetCDFFile.create(url)
        try f.defineDimension("y", length: 256)
        try f.defineDimension("x", length: 256)
        try f.defineVariable("smooth", type: .ushort, dimensions: ["y", "x"], compression: 5, chunks: [64, 256])
        try f.setAttribute("encoding", "bfloat16", variable: "smooth")
        let values = (0..<65536).map { BFloat16Bits.encode(Float($0 / 256) * 0.01) }
        try f.write("smooth", values)
        try f.close()
        let size = try XCTUnwrap(FileManager.default.attributesOfItem(atPath: url.path)[.size] as? Int)
        XCTAssertLessThan(size, 65536 * 2 / 4, "deflate should shrink 128 KiB of smooth data")
        let back = try NetCDFFile.open(url)
        XCTAssertEqual(try back.read("smooth", as: UInt16.self), values)
        try back.close()

        // ncdump (netCDF's own reader) understands both files.
        let ncdump = "/usr/bin/ncdump"
        guard FileManager.default.isExecutableFile(atPath: ncdump) else { throw XCTSkip("ncdump not installed") }
        func dump(_ args: [String]) throws -> String {
            let p = Process()
            p.executableURL = URL(fileURLWithPath: ncdump)
            p.arguments = args
            let pipe = Pipe()
            p.standardOutput = pipe
            try p.run()
            let data = pipe.fileHandleForReading.readDataToEndOfFile()
            p.waitUntilExit()
            XCTAssertEqual(p.terminationStatus, 0)
            return String(decoding: data, as: UTF8.self)
        }
        let big = try dump(["-hs", url.path])
        XCTAssertTrue(big.contains("ushort smooth(y, x)"), big)
        XCTAssertTrue(big.contains("smooth:encoding = \"bfloat16\""), big)
        XCTAssertTrue(big.contains("smooth:_DeflateLevel = 5"), big)
        XCTAssertTrue(big.contains("smooth:_ChunkSizes = 64, 256"), big)
        XCTAssertTrue(big.contains("smooth:_Shuffle = \"true\""), big)

        let sample = dir.appendingPathComponent("sample.nc")
        _ = try writeSample(sample)
        let h = try dump(["-h", sample.path])
        for line in ["sample = UNLIMITED ; // (2 currently)", "ushort cache(sample, y, x) ;", "cache:encoding = \"float16\" ;",
                     "string config_name(config) ;", "int64 token_ids(config) ;", "double wall_time ;",
                     ":title = \"NetCDF round trip\" ;", ":threads = 1099511627776LL ;", "string :sources = \"TinyVLM\", \"TinySAM\" ;"] {
            XCTAssertTrue(h.contains(line), "ncdump -h lacks '\(line)':\n\(h)")
        }
        let data = try dump(["-v", "config_name,config", sample.path])
        XCTAssertTrue(data.contains("config = 10, 20, 30 ;"), data)
        XCTAssertTrue(data.contains("config_name = \"mean/norm\", \"max\", \"µ-label ✓\" ;"), data)
    }
}
