import Foundation

/// A scratch directory, removed when the value is released. Shared by every test target.
public final class TempDir: @unchecked Sendable {
    public let path: String
    public var url: URL { URL(fileURLWithPath: path) }

    public init() {
        path = NSTemporaryDirectory() + "portcullis-\(UUID().uuidString.prefix(8))"
        try? FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }

    deinit { try? FileManager.default.removeItem(atPath: path) }

    /// Writes `content` to `name` (directories created as needed); returns the file's path.
    @discardableResult
    public func write(_ name: String, _ content: String) -> String {
        let p = path + "/" + name
        try? FileManager.default.createDirectory(atPath: (p as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        _ = FileManager.default.createFile(atPath: p, contents: Data(content.utf8))
        return p
    }

    public func append(_ name: String, _ content: String) {
        let h = FileHandle(forWritingAtPath: path + "/" + name)!
        h.seekToEndOfFile()
        h.write(Data(content.utf8))
        try? h.close()
    }
}
