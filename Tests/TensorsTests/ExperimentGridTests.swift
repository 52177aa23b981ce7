// The experiment executables as a user runs them (tiny profile): a grid killed with SIGKILL
// midway and rerun finishes with Results bitwise equal to an uninterrupted run's; a grid
// sharded 2 ways and merged (automatically by the last shard, and by `flmm results merge`) is
// bitwise the unsharded run; bad options fail with a message and lose nothing.

import Foundation
import XCTest
import FLMMExperiments
import Formats
import GroundingCache

final class ExperimentGridTests: XCTestCase {
    /// The folder of the package's built products: beside the test runner, else .build/release.
    static let bin: URL = {
        let candidates = [Bundle.main.executableURL?.deletingLastPathComponent(),
                          URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent(),
                          URL(fileURLWithPath: ".build/release")].compactMap { $0 }
        return candidates.first { FileManager.default.fileExists(atPath: $0.appendingPathComponent("ablate-merge").path) }
            ?? candidates[candidates.count - 1]
    }()
    var dir: URL!

    override func setUpWithError() throws {
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("flmm-grid-\(ProcessInfo.processInfo.processIdentifier)-\(name.filter(\.isLetter))")
        try? FileManager.default.removeItem(at: dir)
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws { try? FileManager.default.removeItem(at: dir) }

    /// Launches a product of the package; returns the process (not waited for).
    func launch(_ tool: String, _ args: [String]) throws -> Process {
        let p = Process()
        p.executableURL = Self.bin.appendingPathComponent(tool)
        p.arguments = args
        p.currentDirectoryURL = URL(fileURLWithPath: FileManager.default.currentDirectoryPath)
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        try p.run()
        return p
    }

    /// Runs a product to its end; (exit status, stderr).
    func runCapturing(_ tool: String, _ args: [String]) throws -> (Int32, String) {
        let p = Process()
        p.executableURL = Self.bin.appendingPathComponent(tool)
        p.arguments = args
        p.standardOutput = FileHandle.nullDevice
        let err = Pipe()
        p.standardError = err
        try p.run()
        let data = err.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return (p.terminationStatus, String(decoding: data, as: UTF8.self))
    }

    @discardableResult
    func run(_ tool: String, _ args: [String]) throws -> Int32 {
        let p = try launch(tool, args)
        p.waitUntilExit()
        return p.terminationStatus
    }

    /// The smoke-profile caches, built once for the test (from the committed checkpoints).
    func caches() throws -> [String] {
        let out = dir.appendingPathComponent("cachebuild").path
        XCTAssertEqual(try run("ablate-merge", ["--profile", "smoke", "--steps", "1", "--out", out]), 0)
        let c = dir.appendingPathComponent("cachebuild/caches")
        return ["--cache", c.appendingPathComponent("shapesworld-smoke-train-v1.nc").path,
                "--val-cache", c.appendingPathComponent("shapesworld-smoke-val-v1.nc").path]
    }

    /// The data of a Results file: every run's curves, IoUs and scores as bit patterns.
    func data(_ url: URL) throws -> [String] {
        let (h, runs) = try ResultsFile.read(url)
        var out = ["configs \(h.configs) seeds \(h.seeds) steps \(h.logSteps) phrases \(h.phraseSamples) \(h.phraseKinds)"]
        for r in runs {
            let c = r.curve
            out.append("\(r.config) \(r.seed) " + [c.loss, c.lossMask, c.lossDice, c.samLossMask, c.samLossDice]
                .map { $0.map(\.bitPattern).description }.joined(separator: " "))
            for k in MaskKind.allCases {
                out.append("\(k) " + (r.ious[k]?.map(\.bitPattern).description ?? "none"))
                for g in PhraseGroup.allCases {
                    if let s = r.scores[k]?[g] {
                        out.append("\(k) \(g) \(s.cIoU.bitPattern) \(s.mIoU.bitPattern) \(s.precision50.bitPattern) \(s.averageRecall.bitPattern)")
                    }
                }
            }
        }
        return out
    }

    /// A profile's default cache that was made from other checkpoints is rebuilt from the current
    /// ones, with a message naming the stale digest, never silently reused.
    func testStaleDefaultCacheIsRebuilt() throws {
        let committed = URL(fileURLWithPath: "Checkpoints/tinyvlm.safetensors")
        // The same weights under another digest: one more metadata entry.
        let file = try SafeTensors.read(committed)
        let copy = dir.appendingPathComponent("tinyvlm-copy.safetensors")
        try SafeTensors.write(tensors: file.floatTensors, metadata: file.metadata.merging(["note": "copy"]) { a, _ in a }, to: copy)
        let (oldDigest, newDigest) = (try FileDigest.sha256(committed), try FileDigest.sha256(copy))
        XCTAssertNotEqual(oldDigest, newDigest)
        let out = dir.appendingPathComponent("out")
        let train = out.appendingPathComponent("caches/shapesworld-smoke-train-v1.nc")
        let (s1, e1) = try runCapturing("ablate-merge", ["--profile", "smoke", "--steps", "1", "--out", out.path])
        XCTAssertEqual(s1, 0, e1)
        XCTAssertEqual(try GroundingCacheReader(url: train).header.provenance["vlm_checkpoint_sha256"], oldDigest)
        // The finished Results would not match the new caches: start the grid afresh, keep the caches.
        for name in try FileManager.default.contentsOfDirectory(atPath: out.path) where name != "caches" {
            try FileManager.default.removeItem(at: out.appendingPathComponent(name))
        }
        let (s2, e2) = try runCapturing("ablate-merge", ["--profile", "smoke", "--steps", "1", "--out", out.path,
                                                         "--tinyvlm", copy.path])
        XCTAssertEqual(s2, 0, e2)
        XCTAssertTrue(e2.contains("vlm_checkpoint_sha256 \(oldDigest) is not the current \(newDigest); rebuilding"), e2)
        XCTAssertEqual(try GroundingCacheReader(url: train).header.provenance["vlm_checkpoint_sha256"], newDigest)
    }

    func testKilledGridResumesBitwiseAndShardsMerge() throws {
        let cache = try caches()
        let common = ["--profile", "smoke", "--steps", "12"] + cache
        // Uninterrupted.
        let a = dir.appendingPathComponent("a")
        XCTAssertEqual(try run("ablate-merge", common + ["--out", a.path]), 0)
        let reference = try data(a.appendingPathComponent("ablate-merge.nc"))
        XCTAssertEqual(try ResultsFile.read(a.appendingPathComponent("ablate-merge.nc")).runs.count, 2)

        // Killed with SIGKILL as soon as its first unit is finished, then rerun.
        let b = dir.appendingPathComponent("b")
        let parts = b.appendingPathComponent("parts/smoke")
        let p = try launch("ablate-merge", common + ["--out", b.path])
        var firstPart = false
        for _ in 0..<6000 where !firstPart {
            let names = (try? FileManager.default.contentsOfDirectory(atPath: parts.path)) ?? []
            firstPart = names.contains { $0.hasSuffix("-seed0.nc") }
            if !firstPart { usleep(5_000) }
        }
        kill(p.processIdentifier, SIGKILL)
        p.waitUntilExit()
        XCTAssertTrue(firstPart, "no unit finished before the kill")
        XCTAssertEqual(p.terminationReason, .uncaughtSignal)
        XCTAssertFalse(FileManager.default.fileExists(atPath: b.appendingPathComponent("ablate-merge.nc").path),
                       "the killed grid must not have assembled its Results")
        let finishedBefore = try FileManager.default.contentsOfDirectory(atPath: parts.path).filter { $0.hasSuffix(".nc") }
        XCTAssertEqual(finishedBefore.count, 1)
        XCTAssertEqual(try run("ablate-merge", common + ["--out", b.path]), 0)
        XCTAssertEqual(try data(b.appendingPathComponent("ablate-merge.nc")), reference)

        // Sharded 2 ways: the second shard to finish assembles; `flmm results merge` agrees.
        let c = dir.appendingPathComponent("c")
        XCTAssertEqual(try run("ablate-merge", common + ["--shard", "0/2", "--out", c.path]), 0)
        XCTAssertFalse(FileManager.default.fileExists(atPath: c.appendingPathComponent("ablate-merge.nc").path))
        XCTAssertEqual(try run("ablate-merge", common + ["--shard", "1/2", "--out", c.path]), 0)
        XCTAssertEqual(try data(c.appendingPathComponent("ablate-merge.nc")), reference)
        let cparts = try FileManager.default.contentsOfDirectory(atPath: c.appendingPathComponent("parts/smoke").path)
            .filter { $0.hasSuffix(".nc") }.map { c.appendingPathComponent("parts/smoke/" + $0).path }
        XCTAssertEqual(cparts.count, 2)
        let merged = dir.appendingPathComponent("merged.nc")
        XCTAssertEqual(try run("flmm", ["results", "merge", "--experiment", "ablate-merge", "--out", merged.path] + cparts), 0)
        XCTAssertEqual(try data(merged), reference)
    }

    func testBadOptionsFailClearlyAndKeepFinishedWork() throws {
        let cache = try caches()
        let out = dir.appendingPathComponent("r")
        XCTAssertEqual(try run("ablate-normalize", ["--profile", "smoke"] + cache + ["--out", out.path]), 0)
        let results = out.appendingPathComponent("ablate-normalize.nc")
        let before = try Data(contentsOf: results)
        let bad: [([String], String)] = [
            (["--profile", "huge"] + cache, "unknown profile 'huge'; expected one of smoke, quick, full"),
            (["--profile", "smoke", "--shard", "2/2"] + cache, "--shard '2/2': expected i/n with 0 ≤ i < n"),
            (["--profile", "smoke", "--seeds", "a,b"] + cache, "--seeds 'a,b': expected distinct non-negative integers"),
            (["--profile", "smoke", "--steps", "0"] + cache, "--steps 0: must be positive"),
            (["--profile", "smoke", "--cache", "/nonexistent.nc", "--val-cache", "/nonexistent.nc"], "/nonexistent.nc"),
            (["--profile", "smoke", "--sam-model", "vit_l"] + cache, "--sam-model vit_l needs --sam FILE"),
            (["--profile", "smoke", "--sam", "Checkpoints/tinysam.safetensors"] + cache, "needs --sam-model vit_b|vit_l|vit_h"),
            (["--profile", "smoke", "--sam", "Checkpoints/tinysam.safetensors", "--sam-model", "vit_x"] + cache,
             "--sam-model 'vit_x': expected one of tinysam, vit_b, vit_l, vit_h"),
            // TinySAM's weights are not a ViT-B refiner: the strict load names the file.
            (["--profile", "smoke", "--sam", "Checkpoints/tinysam.safetensors", "--sam-model", "vit_b"] + cache,
             "Checkpoints/tinysam.safetensors"),
        ]
        for (args, message) in bad {
            let (status, stderr) = try runCapturing("ablate-normalize", args + ["--out", out.path])
            XCTAssertEqual(status, 1, "\(args)")
            XCTAssertTrue(stderr.contains(message), "\(args): \(stderr)")
        }
        let (status, stderr) = try runCapturing("ablate-normalize", ["--profile", "smoke", "--out", "/proc/flmm-results"] + cache)
        XCTAssertEqual(status, 1)
        XCTAssertTrue(stderr.contains("--out /proc/flmm-results"), stderr)
        XCTAssertEqual(try Data(contentsOf: results), before, "finished Results must survive failed runs")
    }
}
