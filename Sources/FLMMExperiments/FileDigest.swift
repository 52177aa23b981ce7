// SHA-256 of a file, streamed in 1 MiB chunks (identifies caches and checkpoints in Results).

import Crypto
import Foundation

public enum FileDigest {
    /// Lower-case hex SHA-256 of the file at `url`.
    public static func sha256(_ url: URL) throws -> String {
        let handle = try FileHandle(forReadingFrom: url)
        defer { try? handle.close() }
        var hash = SHA256()
        while let chunk = try handle.read(upToCount: 1 << 20), !chunk.isEmpty { hash.update(data: chunk) }
        return hash.finalize().map { String(format: "%02x", $0) }.joined()
    }
}
