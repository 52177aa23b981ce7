// Where and how a result was made: recorded as attributes of every Results file. These are
// the only parts of a Results file that may differ between two runs of the same command.

import Formats
import Foundation
import Tensors

public enum Provenance {
    /// The toolkit's version.
    public static let toolkitVersion = "0.2.0"

    /// Names of the provenance attributes.
    public static let keys: Set<String> = ["toolkit_version", "git_commit", "backend", "threads", "cpu", "wall_seconds",
                                           "created_by"]

    /// The attributes for a run that took `wallSeconds`.
    public static func attributes(wallSeconds: Double, command: String) -> [String: NetCDFAttribute] {
        ["toolkit_version": .text(toolkitVersion), "git_commit": .text(gitCommit()),
         "backend": .text(Backend.current.rawValue), "threads": .int(Parallel.threads), "cpu": .text(cpuName()),
         "wall_seconds": .doubles([wallSeconds]), "created_by": .text(command)]
    }

    /// `git rev-parse HEAD` of the working directory (+ "-dirty" with uncommitted changes to
    /// tracked files), or "unknown" outside a git checkout.
    public static func gitCommit() -> String {
        guard let head = run("/usr/bin/env", ["git", "rev-parse", "HEAD"]), !head.isEmpty else { return "unknown" }
        let dirty = run("/usr/bin/env", ["git", "status", "--porcelain", "--untracked-files=no"]) ?? ""
        return dirty.isEmpty ? head : head + "-dirty"
    }

    /// The CPU's model name from /proc/cpuinfo.
    public static func cpuName() -> String {
        guard let text = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8) else { return "unknown" }
        for line in text.split(separator: "\n") where line.hasPrefix("model name") {
            if let v = line.split(separator: ":", maxSplits: 1).last { return v.trimmingCharacters(in: .whitespaces) }
        }
        return "unknown"
    }

    static func run(_ tool: String, _ args: [String]) -> String? {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: tool)
        p.arguments = args
        let out = Pipe()
        p.standardOutput = out
        p.standardError = FileHandle.nullDevice
        do { try p.run() } catch { return nil }
        let data = out.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        guard p.terminationStatus == 0 else { return nil }
        return String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
    }
}
