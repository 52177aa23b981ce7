import FLMM
import FLMMExperiments
import Formats
import Foundation
import ShapesWorld
import Tensors
import XCTest

/// Figures: the export of Results files to gnuplot data, the results table, the qualitative
/// file, the PNG encoder, panel pictures and the demo's phrase.
final class FiguresTests: XCTestCase {
    func temporaryDirectory() throws -> URL {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("flmm-figures-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(at: dir) }
        return dir
    }

    // MARK: Results export

    /// Two configurations (U-Net only, F-LMM's default) × two seeds, two phrases each, with
    /// hand-chosen overlaps whose statistics are computed by hand below.
    func handMadeResults() -> (ResultsHeader, [RunResult]) {
        var unetOnly = AblationConfig()
        unetOnly.refiner = false
        let full = AblationConfig()
        let kinds: [PhraseGroup] = [.attribute, .plural]
        func evaluation(unet: [(Int, Int)], sam: [(Int, Int)]?) -> EvaluationResult {
            var e = EvaluationResult()
            e.kinds = kinds
            e.overlaps[.unet] = unet.map { MaskOverlap(intersection: $0.0, union: $0.1) }
            if let sam { e.overlaps[.sam] = sam.map { MaskOverlap(intersection: $0.0, union: $0.1) } }
            for (k, o) in e.overlaps { e.ious[k] = o.map(\.iou) }
            return e
        }
        func curve(_ loss: [Float], sam: Bool) -> LossCurve {
            LossCurve(steps: [0, 2], loss: loss, lossMask: [0.25, 0.125], lossDice: [0.5, 0.25],
                      samLossMask: sam ? [0.125, 0.0625] : [.nan, .nan], samLossDice: sam ? [0.125, 0.0625] : [.nan, .nan])
        }
        let runs = [
            RunResult(config: unetOnly, seed: 0, curve: curve([2, 1], sam: false), evaluation: evaluation(unet: [(2, 4), (1, 1)], sam: nil)),
            RunResult(config: unetOnly, seed: 1, curve: curve([2, 3], sam: false), evaluation: evaluation(unet: [(0, 3), (1, 2)], sam: nil)),
            RunResult(config: full, seed: 0, curve: curve([1, 0.5], sam: true),
                      evaluation: evaluation(unet: [(1, 2), (3, 4)], sam: [(2, 2), (3, 5)])),
            RunResult(config: full, seed: 1, curve: curve([3, 0.25], sam: true),
                      evaluation: evaluation(unet: [(1, 4), (2, 2)], sam: [(1, 3), (4, 4)])),
        ]
        let header = ResultsHeader(experiment: "ablate-prompts", title: "prompts test", profile: "smoke", steps: 3,
                                   configs: [unetOnly, full], seeds: [0, 1], logSteps: [0, 2], phraseSamples: [0, 0],
                                   phraseKinds: kinds, inputs: [:], provenance: [:])
        return (header, runs)
    }

    func testBarTableOfAHandMadeResultsFile() throws {
        let dir = try temporaryDirectory()
        let url = dir.appendingPathComponent("ablate-prompts.nc")
        let (h, r) = handMadeResults()
        try ResultsFile.write(url, header: h, runs: r)
        let (header, runs) = try ResultsFile.read(url)
        let files = Dictionary(uniqueKeysWithValues: ResultsExport.files(header: header, runs: runs))
        XCTAssertEqual(Set(files.keys), ["ablate-prompts_bars.dat", "ablate-prompts_loss.dat",
                                         "ablate-prompts_unet_loss.dat", "ablate-prompts_meta.gp"])
        let rows = try XCTUnwrap(files["ablate-prompts_bars.dat"]).split(separator: "\n").filter { !$0.hasPrefix("#") }
        // U-Net only: mIoU seeds (0.5+1)/2 = 0.75 and (0+0.5)/2 = 0.25 → 50, sample std 0.5/√2 = 35.3553;
        // cIoU 3/5 and 1/5 → 40, std 0.4/√2 = 28.2843; no SAM mask → "?".
        // Default: U-Net mIoU 0.625 both seeds → 62.5 ± 0; cIoU 4/6 and 3/6 → 58.3333 ± 11.7851;
        // SAM mIoU (1+0.6)/2 = 0.8 and (1/3+1)/2 → 73.3333 ± 9.4281; cIoU 5/7 both → 71.4286 ± 0.
        XCTAssertEqual(rows, [
            "0 \"U-Net only\" 50.0000 35.3553 40.0000 28.2843 ? ? ? ? 2",
            "1 \"box+mask+text\" 62.5000 0.0000 58.3333 11.7851 73.3333 9.4281 71.4286 0.0000 2",
        ])
        // Curves: mean over the two seeds at steps 0 and 2.
        let loss = try XCTUnwrap(files["ablate-prompts_loss.dat"]).split(separator: "\n").filter { !$0.hasPrefix("#") }
        XCTAssertEqual(loss, ["\"step\" \"U-Net only\" \"box+mask+text\"", "0 2.000000 2.000000", "2 2.000000 0.375000"])
        let unetLoss = try XCTUnwrap(files["ablate-prompts_unet_loss.dat"]).split(separator: "\n").filter { !$0.hasPrefix("#") }
        XCTAssertEqual(unetLoss, ["\"step\" \"U-Net only\" \"box+mask+text\"", "0 0.750000 0.750000", "2 0.375000 0.375000"])
        let meta = try XCTUnwrap(files["ablate-prompts_meta.gp"])
        XCTAssertTrue(meta.contains("nseeds = 2\n") && meta.contains("nconfigs = 2\n") && meta.contains("xlabel = \"SAM prompts\"\n"), meta)
    }

    func testResultsTableRows() throws {
        let (h, r) = handMadeResults()
        let lines = ResultsExport.table(header: h, runs: r).split(separator: "\n").map(String.init)
        XCTAssertEqual(lines.count, 4)
        XCTAssertTrue(lines[0].hasPrefix("ablate-prompts: prompts test (profile smoke, 3 steps, 2 seeds, mean ± sample std; percent)"), lines[0])
        // Columns: config, U-Net mIoU cIoU Prec@0.5 AR, SAM the same.
        let cells = lines[2].components(separatedBy: "  ").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        XCTAssertEqual(Array(cells.prefix(4)), ["U-Net only", "50.0 ± 35.4", "40.0 ± 28.3", "25.0 ± 35.4"])
        XCTAssertEqual(Array(cells.suffix(4)), ["-", "-", "-", "-"])
        let md = ResultsExport.table(header: h, runs: r, markdown: true).split(separator: "\n").map(String.init)
        XCTAssertEqual(md[1], "| config | U-Net mIoU | U-Net cIoU | U-Net Prec@0.5 | U-Net AR | SAM mIoU | SAM cIoU | SAM Prec@0.5 | SAM AR |")
        XCTAssertTrue(md[4].hasPrefix("| box+mask+text | 62.5 ± 0.0 | 58.3 ± 11.8 | 50.0 ± 0.0 |"), md[4])
    }

    /// Long phrase titles are wrapped at spaces; quoting escapes quotes, backslashes and breaks.
    func testPanelTitlesWrapAndQuote() {
        XCTAssertEqual(FigureText.wrapped("the orange shape left of the small orange star", width: 30),
                       "the orange shape left of the\nsmall orange star")
        XCTAssertEqual(FigureText.wrapped("the large triangle", width: 30), "the large triangle")
        XCTAssertEqual(FigureText.wrapped("abcdef gh", width: 3), "abcdef\ngh")
        XCTAssertEqual(FigureText.quoted("a \"b\"\\\nc"), #""a \"b\"\\\nc""#)
    }

    func testFixedDecimalsAndSeedStatistics() {
        XCTAssertEqual(FigureText.fixed(0.5, digits: 4), "0.5000")
        XCTAssertEqual(FigureText.fixed(-1.23456, digits: 2), "-1.23")
        XCTAssertEqual(FigureText.fixed(-0.0001, digits: 2), "0.00")
        XCTAssertEqual(FigureText.fixed(2.5, digits: 0), "2")
        XCTAssertEqual(FigureText.fixed(.nan, digits: 3), "?")
        XCTAssertEqual(FigureText.fixed(123.0000049, digits: 5), "123.00000")
        let s = SeedStatistic([1, 2, 4])!
        XCTAssertEqual(s.mean, 7.0 / 3.0)
        XCTAssertEqual(s.std, ((16.0 / 9 + 1.0 / 9 + 25.0 / 9) / 2).squareRoot(), accuracy: 1e-15)
        XCTAssertEqual(SeedStatistic([0.25])?.std, 0)
        XCTAssertNil(SeedStatistic([1, .nan]))
        XCTAssertNil(SeedStatistic([]))
    }

    // MARK: PNG

    func testCRC32AndAdler32KnownValues() {
        XCTAssertEqual(PNGWriter.crc32(Array("IEND".utf8)), 0xAE42_6082)
        XCTAssertEqual(PNGWriter.crc32(Array("123456789".utf8)), 0xCBF4_3926)
        XCTAssertEqual(PNGWriter.crc32(Array("6789".utf8), continuing: PNGWriter.crc32(Array("12345".utf8))), 0xCBF4_3926)
        XCTAssertEqual(PNGWriter.adler32(Array("Wikipedia".utf8)), 0x11E6_0398)
        // [0, 255, 0, 0]: a = 1 + 255 = 256, b = 1 + 256 + 256 + 256 = 769.
        XCTAssertEqual(PNGWriter.adler32([0, 255, 0, 0]), 769 << 16 | 256)
        // 70 000 bytes of 255 cross the 5552-byte reduction: a = 1 + 255·70000 mod 65521,
        // b = Σ_{k=1..70000} (1 + 255 k) = 70000 + 255 · 70000 · 70001 / 2 mod 65521.
        let n = 70_000
        let a = (1 + 255 * n) % 65521, b = (n + 255 * n * (n + 1) / 2) % 65521
        XCTAssertEqual(PNGWriter.adler32([UInt8](repeating: 255, count: n)), UInt32(b << 16 | a))
    }

    func testOnePixelPNGBytes() {
        let png = PNGWriter.encodeRGB(width: 1, height: 1, pixels: [255, 0, 0])
        // Signature; IHDR (13 bytes: 1, 1, depth 8, colour type 2, 0, 0, 0) and its CRC; IDAT: zlib
        // 78 01, one final stored block (01, LEN 4 = 04 00, NLEN FB FF), the row (filter 0, FF 00 00),
        // Adler-32 03 01 01 00; IEND.
        let expected: [UInt8] = [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A,
                                 0, 0, 0, 13, 0x49, 0x48, 0x44, 0x52, 0, 0, 0, 1, 0, 0, 0, 1, 8, 2, 0, 0, 0, 0x90, 0x77, 0x53, 0xDE,
                                 0, 0, 0, 15, 0x49, 0x44, 0x41, 0x54,
                                 0x78, 0x01, 0x01, 0x04, 0x00, 0xFB, 0xFF, 0x00, 0xFF, 0x00, 0x00, 0x03, 0x01, 0x01, 0x00,
                                 0x8D, 0x1D, 0xE5, 0x82,
                                 0, 0, 0, 0, 0x49, 0x45, 0x4E, 0x44, 0xAE, 0x42, 0x60, 0x82]
        XCTAssertEqual(png, expected)
        // The chunk CRCs agree with the CRC-32 of type + data.
        XCTAssertEqual(PNGWriter.crc32(png[12..<29]), 0x9077_53DE)
        XCTAssertEqual(PNGWriter.crc32(png[37..<56]), 0x8D1D_E582)
    }

    func testStoredBlocksSplitAt65535AndDecode() throws {
        // 200 × 200 RGB: 200 · 601 = 120 200 raw bytes → stored blocks of 65 535 and 54 665.
        let w = 200, h = 200
        let pixels = (0..<(w * h * 3)).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ $0 / 601) }
        let z = PNGWriter.zlibStored([UInt8](repeating: 9, count: 120_200))
        XCTAssertEqual(Array(z[0..<7]), [0x78, 0x01, 0x00, 0xFF, 0xFF, 0x00, 0x00])
        XCTAssertEqual(Array(z[(7 + 65535)..<(7 + 65535 + 5)]), [0x01, 0x89, 0xD5, 0x76, 0x2A])   // 54665 = 0xD589
        XCTAssertEqual(z.count, 2 + 5 + 65535 + 5 + 54665 + 4)
        let dir = try temporaryDirectory()
        let url = dir.appendingPathComponent("big.png")
        try PNGWriter.writeRGB(url, width: w, height: h, pixels: pixels)
        XCTAssertEqual(Array(try Data(contentsOf: url)), PNGWriter.encodeRGB(width: w, height: h, pixels: pixels))
        // An independent decoder, when there is one: Python's zlib inflates the IDAT payload and the
        // rows come back.
        if let python = ["/usr/bin/python3", "/usr/local/bin/python3"].first(where: { FileManager.default.isExecutableFile(atPath: $0) }) {
            let script = """
                import sys, zlib, struct
                b = open(sys.argv[1], 'rb').read(); i = 8; idat = b''
                while i < len(b):
                    n, = struct.unpack('>I', b[i:i+4]); t = b[i+4:i+8]; d = b[i+8:i+8+n]
                    assert zlib.crc32(t + d) == struct.unpack('>I', b[i+8+n:i+12+n])[0]
                    if t == b'IDAT': idat += d
                    i += 12 + n
                raw = zlib.decompress(idat); w, h = struct.unpack('>II', b[16:24])
                sys.stdout.write(''.join('%02x' % x for r in range(h) for x in raw[r*(1+3*w)+1:(r+1)*(1+3*w)]))
                """
            let p = Process()
            p.executableURL = URL(fileURLWithPath: python)
            p.arguments = ["-c", script, url.path]
            let out = Pipe()
            p.standardOutput = out
            try p.run()
            let data = out.fileHandleForReading.readDataToEndOfFile()
            p.waitUntilExit()
            XCTAssertEqual(p.terminationStatus, 0)
            XCTAssertEqual(String(decoding: data, as: UTF8.self), pixels.map { String(format: "%02x", $0) }.joined())
        }
    }

    // MARK: Panels

    func testColorMapOverlayAndNearestResize() {
        XCTAssertTrue(ColorMap.color(0) == (68, 1, 84))
        XCTAssertTrue(ColorMap.color(1) == (253, 231, 37))
        XCTAssertTrue(ColorMap.color(0.5) == (33, 145, 140))
        // 1/8 is halfway between the first two anchors: (68+59)/2 = 63.5 → 64 (half to even),
        // (1+82)/2 = 41.5 → 42, (84+139)/2 = 111.5 → 112.
        XCTAssertTrue(ColorMap.color(0.125) == (64, 42, 112))
        XCTAssertTrue(ColorMap.color(-3) == (68, 1, 84) && ColorMap.color(.nan) == (68, 1, 84))
        XCTAssertEqual(ColorMap.normalized([2, 4, 3]), [0, 1, 0.5])
        XCTAssertEqual(ColorMap.normalized([5, 5]), [0, 0])

        let img = RGBPicture(height: 1, width: 2, pixels: [100, 200, 50, 10, 20, 30])
        let o = img.overlay(mask: [1, 0], tint: (255, 0, 255))
        // Inside: (100+255)/2 = 177, (200+0)/2 = 100, (50+255)/2 = 152; outside: ·2/5 → 4, 8, 12.
        XCTAssertEqual(o.pixels, [177, 100, 152, 4, 8, 12])
        let big = img.resizedNearest(height: 2, width: 4)
        XCTAssertEqual(big.pixels, [100, 200, 50, 100, 200, 50, 10, 20, 30, 10, 20, 30,
                                    100, 200, 50, 100, 200, 50, 10, 20, 30, 10, 20, 30])
        var canvas = RGBPicture(height: 2, width: 3, fill: (1, 2, 3))
        canvas.place(img, row: 1, col: 2)   // the second pixel falls outside and is clipped
        XCTAssertEqual(canvas.pixels, [1, 2, 3, 1, 2, 3, 1, 2, 3, 1, 2, 3, 1, 2, 3, 100, 200, 50])
    }

    // MARK: Qualitative file

    func handMadePanels() -> [QualitativePanel] {
        let a = QualitativePanel(phrase: "the small red circle", image: (0..<(3 * 4 * 3)).map { UInt8($0 * 5) }, height: 3, width: 4,
                                 attention: [0.1, 0.2, 0.3, 0.4, 0.5, 0.7], gridHeight: 2, gridWidth: 3,
                                 unetMask: [0, 1, 1, 0, 0, 1, 1, 0, 0, 0, 0, 0], samMask: [0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0],
                                 gtMask: [0, 1, 1, 0, 0, 1, 1, 0, 0, 0, 0, 0], iouUNet: 1, iouSAM: 0.75)
        let b = QualitativePanel(phrase: "the two \"green\" shapes", image: [UInt8](repeating: 7, count: 5 * 2 * 3), height: 5, width: 2,
                                 attention: [3, 1, 2, 0], gridHeight: 2, gridWidth: 2,
                                 unetMask: [1, 0, 0, 0, 0, 0, 0, 0, 0, 1], samMask: nil,
                                 gtMask: [1, 0, 0, 0, 0, 0, 0, 0, 1, 1], iouUNet: 0.5, iouSAM: nil)
        return [a, b]
    }

    func testQualitativeRoundTrip() throws {
        let dir = try temporaryDirectory()
        let url = dir.appendingPathComponent("qualitative.nc")
        let panels = handMadePanels()
        try QualitativeFile.write(url, panels: panels, attributes: ["config": "merge=mean"])
        XCTAssertTrue(QualitativeFile.isQualitative(url))
        let back = try QualitativeFile.read(url)
        XCTAssertEqual(back, panels)
        // Padded to the largest image (5 × 4) and grid (2 × 3).
        let f = try NetCDFFile.open(url)
        defer { try? f.close() }
        XCTAssertEqual(try f.variable("image").shape, [2, 5, 4, 3])
        XCTAssertEqual(try f.variable("attention").shape, [2, 2, 3])
        let iouSam: [Float] = try f.read("iou_sam")
        XCTAssertEqual(iouSam[0], 0.75)
        XCTAssertTrue(iouSam[1].isNaN)
        // A Results file is not a qualitative file.
        let results = dir.appendingPathComponent("r.nc")
        let (h, r) = handMadeResults()
        try ResultsFile.write(results, header: h, runs: r)
        XCTAssertFalse(QualitativeFile.isQualitative(results))
        XCTAssertThrowsError(try QualitativeFile.read(results))
    }

    func testQualitativeExportText() throws {
        let files = Dictionary(uniqueKeysWithValues: QualitativeExport.files(handMadePanels()))
        XCTAssertEqual(Set(files.keys), ["qualitative_panels.gp", "qualitative_1.dat", "qualitative_1_attention.dat",
                                         "qualitative_2.dat", "qualitative_2_attention.dat"])
        let meta = try XCTUnwrap(files["qualitative_panels.gp"])
        XCTAssertTrue(meta.contains("npanels = 2\n"))
        XCTAssertTrue(meta.contains("phrase_2 = \"the two \\\"green\\\" shapes\"\n"), meta)
        XCTAssertTrue(meta.contains("iou_sam_1 = 0.7500\nhas_sam_1 = 1\n") && meta.contains("iou_sam_2 = NaN\nhas_sam_2 = 0\n"), meta)
        // Panel 1's first data row is x 0, y 0 = the image's last row (row 2), pixel (2, 0) = bytes 24…26
        // = 120 125 130; the U-Net mask is 0 there (dimmed ·2/5: 48 50 52), as are SAM and the truth.
        let rows = try XCTUnwrap(files["qualitative_1.dat"]).split(separator: "\n").filter { !$0.hasPrefix("#") }
        XCTAssertEqual(rows.count, 12)
        XCTAssertEqual(rows[0], "0 0 120 125 130 48 50 52 48 50 52 48 50 52")
        // Pixel (0, 1) = bytes 3…5 = 15 20 25, inside every mask: U-Net (15+255)/2 (20+0)/2 (25+255)/2,
        // SAM with white, the truth with (160, 255, 0).
        XCTAssertEqual(rows[9], "1 2 15 20 25 135 10 140 135 137 140 87 137 12")
        // Without SAM the SAM columns are mid-grey.
        let rows2 = try XCTUnwrap(files["qualitative_2.dat"]).split(separator: "\n").filter { !$0.hasPrefix("#") }
        XCTAssertEqual(rows2[0].split(separator: " ")[8...10].joined(separator: " "), "128 128 128")
        // Attention normalised by min 0.1 and max 0.7, last grid row first.
        XCTAssertEqual(files["qualitative_1_attention.dat"], "0.50000 0.66667 1.00000\n0.00000 0.16667 0.33333\n")
    }

    // MARK: The demo's phrase

    func testDemoPhraseAndUnknownWord() throws {
        let p = try GroundingPhrase("The small red circle.", imageTokens: 4)
        XCTAssertEqual(p.words, ["the", "small", "red", "circle"])
        let t = Tokenizer.shapesWorld
        XCTAssertEqual(p.sequence.ids, [t.bosId] + [Int](repeating: t.imageId, count: 4)
                       + (try t.encode("describe the image : the small red circle .")) + [t.eosId])
        XCTAssertEqual(p.sequence.maskIds, [Int](repeating: -1, count: 9) + [0, 0, 0, 0, -1, -1])
        XCTAssertThrowsError(try GroundingPhrase("the small pink circle", imageTokens: 4)) { error in
            guard let e = error as? TokenizerError else { return XCTFail("expected TokenizerError, got \(error)") }
            XCTAssertEqual(e.word, "pink")
            let text = "\(e)"
            XCTAssertTrue(text.contains("unknown word 'pink'"), text)
            for w in ["circle", "hexagons", "red", "cyan", "small", "left", "below", "two"] {
                XCTAssertTrue(text.contains(" \(w)"), "vocabulary in the message lacks \(w): \(text)")
            }
        }
        XCTAssertThrowsError(try GroundingPhrase(" . ", imageTokens: 4)) { XCTAssertTrue($0 is GroundingPhraseError) }
        XCTAssertThrowsError(try GroundingPhrase("the circle. the square", imageTokens: 4)) { XCTAssertTrue($0 is GroundingPhraseError) }
    }
}

extension FiguresTests {
    func testPanelRowAndLayerMeans() {
        let a = RGBPicture(height: 2, width: 1, fill: (9, 9, 9)), b = RGBPicture(height: 1, width: 2, fill: (5, 6, 7))
        let row = PanelLayout.row([a, b], gap: 1, background: (0, 0, 0))
        // 2 + 2·1 rows; 1 + 1 + 1 + 2 + 1 = 6 columns; a at (1, 1), b at (1, 3).
        XCTAssertEqual(row.height, 4)
        XCTAssertEqual(row.width, 6)
        let px = { (r: Int, c: Int) in Array(row.pixels[((r * 6 + c) * 3)..<((r * 6 + c) * 3 + 3)]) }
        XCTAssertEqual(px(1, 1), [9, 9, 9])
        XCTAssertEqual(px(2, 1), [9, 9, 9])
        XCTAssertEqual(px(1, 3), [5, 6, 7])
        XCTAssertEqual(px(1, 4), [5, 6, 7])
        XCTAssertEqual(px(2, 3), [0, 0, 0])
        XCTAssertEqual(px(0, 0), [0, 0, 0])
        // Maps [M = 2, L·NH = 2·2, 1, 2]: phrase 1, layer 1 = heads 2 and 3.
        let values: [Float] = (0..<16).map(Float.init)
        let means = PanelLayout.layerMeans(values, shape: [2, 4, 1, 2], phrase: 1, layers: 2)
        // phrase 1 starts at 8: layer 0 heads (8, 9), (10, 11) → 9, 10; layer 1 (12, 13), (14, 15) → 13, 14.
        XCTAssertEqual(means, [[9, 10], [13, 14]])
        XCTAssertEqual(PanelLayout.overallMean(values, shape: [2, 4, 1, 2], phrase: 0), [3, 4])
    }
}

extension FiguresTests {
    func testQualitativePanelFromModelOutput() {
        // Two phrases; phrase 1's U-Net logits [[1, -1], [-1, -1]] resized to 4×4 (bilinear, align_corners
        // false): value 2·a_r·a_c − 1 with the weight a of source row/col 0 = 1, 0.75, 0.25, 0 for
        // output 0…3, so > 0 exactly on the top-left 2×2 block (1, 0.5, 0.5, 0.125).
        let unet = Tensor(shape: [2, 2, 2], data: [-5, -5, -5, -5, 1, -1, -1, -1])
        let sam = Tensor(shape: [2, 4, 4], data: [Float](repeating: -1, count: 16) + [1, 1, -1, -1] + [Float](repeating: -1, count: 12))
        let att = Tensor(shape: [2, 2, 1, 2], data: [0, 0, 0, 0, 0.2, 0.4, 0.6, 0.8])
        var gt = [UInt8](repeating: 0, count: 16)
        gt[0] = 1; gt[1] = 1; gt[4] = 1; gt[5] = 1; gt[2] = 1
        let p = QualitativePanel.fromModelOutput(phrase: "the circle", phraseIndex: 1, image: [UInt8](repeating: 50, count: 48), height: 4,
                                                 width: 4, maskAttentions: att, unetLogits: unet, samLogits: sam, gtMask: gt)
        XCTAssertEqual(p.unetMask, [1, 1, 0, 0, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0])
        XCTAssertEqual(p.samMask, [1, 1, 0, 0] + [UInt8](repeating: 0, count: 12))
        XCTAssertEqual(p.attention, [0.4, 0.6])            // mean of (0.2, 0.6) and (0.4, 0.8)
        XCTAssertEqual(p.gridHeight, 1)
        XCTAssertEqual(p.gridWidth, 2)
        XCTAssertEqual(p.iouUNet, 0.8)                      // 4 of 5 truth pixels, no extra
        XCTAssertEqual(p.iouSAM, 0.4)                       // 2 of 5
    }
}
