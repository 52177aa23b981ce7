// Writing a file so that it appears complete or not at all.
//
// Every writer in the toolkit writes to a temporary file in the destination's folder (same
// file system, so `rename` is atomic) and renames it into place when done. An interrupted
// run leaves at most a hidden `.<name>.XXXXXX.tmp` file, never a half-written file under the
// final name.

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation

/// A file could not be written (or renamed into place): which file, and why.
public struct FileWriteError: Error, Equatable, Sendable, CustomStringConvertible {
    public let file: String
    public let message: String
    public init(file: String, message: String) {
        self.file = file
        self.message = message
    }
    public var description: String { "\(file): \(message)" }
}

/// Temporary-file-and-rename writing.
public enum AtomicFile {
    static func sysWrite(_ fd: Int32, _ p: UnsafeRawPointer, _ n: Int) -> Int {
        #if canImport(Glibc)
        return Glibc.write(fd, p, n)
        #else
        return Darwin.write(fd, p, n)
        #endif
    }

    /// The text of the current `errno`.
    static func errnoText() -> String { String(cString: strerror(errno)) }

    /// Creates an empty temporary file `.<name>.XXXXXX.tmp` next to `url` (mode 0644) and
    /// returns its path. The caller writes it and then calls `commit` (or `discard`).
    public static func makeTemporary(for url: URL) throws -> URL {
        let dir = url.deletingLastPathComponent().path
        var template = Array("\(dir.isEmpty ? "." : dir)/.\(url.lastPathComponent).XXXXXX.tmp".utf8CString)
        let fd = template.withUnsafeMutableBufferPointer { p -> Int32 in
            guard let base = p.baseAddress else { return -1 }
            return mkstemps(base, 4)
        }
        guard fd >= 0 else {
            throw FileWriteError(file: url.path, message: "cannot create a temporary file in \(dir): \(errnoText())")
        }
        _ = fchmod(fd, 0o644)
        close(fd)
        let path = String(decoding: template.prefix(while: { $0 != 0 }).map { UInt8(bitPattern: $0) }, as: UTF8.self)
        return URL(fileURLWithPath: path)
    }

    /// Renames the finished temporary file over `url` (atomic on one file system).
    public static func commit(temporary: URL, to url: URL) throws {
        guard rename(temporary.path, url.path) == 0 else {
            let why = errnoText()
            discard(temporary)
            throw FileWriteError(file: url.path, message: "cannot rename \(temporary.lastPathComponent) into place: \(why)")
        }
    }

    /// Removes a temporary file that will not be committed (errors ignored).
    public static func discard(_ temporary: URL) {
        _ = unlink(temporary.path)
    }

    /// Writes `bytes` to `url` atomically: temporary file, flushed to disk, renamed into place.
    public static func write(_ bytes: [UInt8], to url: URL) throws {
        let tmp = try makeTemporary(for: url)
        let fd = open(tmp.path, O_WRONLY | O_TRUNC)
        guard fd >= 0 else {
            let why = errnoText()
            discard(tmp)
            throw FileWriteError(file: url.path, message: "cannot open \(tmp.lastPathComponent): \(why)")
        }
        var written = 0
        var failure: String?
        bytes.withUnsafeBytes { raw in
            while written < raw.count {
                guard let base = raw.baseAddress else { break }
                let n = sysWrite(fd, base + written, raw.count - written)
                if n < 0 {
                    if errno == EINTR { continue }
                    failure = "write failed: \(errnoText())"
                    return
                }
                written += n
            }
        }
        if failure == nil, fsync(fd) != 0 { failure = "fsync failed: \(errnoText())" }
        if close(fd) != 0, failure == nil { failure = "close failed: \(errnoText())" }
        if let failure {
            discard(tmp)
            throw FileWriteError(file: url.path, message: failure)
        }
        try commit(temporary: tmp, to: url)
    }
}
