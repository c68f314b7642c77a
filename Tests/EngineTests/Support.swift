import Foundation
@testable import Engine

/// Every engine test runs with fail2ban's test time zone, set once for the process (TZ is process-wide).
enum TestZone {
    static let name = "CET-01CEST-02,M3.5.0,M10.5.0"
    static let ready: Bool = {
        setenv("TZ", name, 1)
        tzset()
        return true
    }()
}

/// A scratch directory removed when the value is released.
final class TempDir {
    let path: String
    init() {
        path = NSTemporaryDirectory() + "portcullis-\(UUID().uuidString)"
        try? FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }
    deinit { try? FileManager.default.removeItem(atPath: path) }

    @discardableResult
    func write(_ name: String, _ content: String) -> String {
        let p = path + "/" + name
        try? FileManager.default.createDirectory(atPath: (p as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        FileManager.default.createFile(atPath: p, contents: Data(content.utf8))
        return p
    }

    func append(_ name: String, _ content: String) {
        let h = FileHandle(forWritingAtPath: path + "/" + name)!
        h.seekToEndOfFile()
        h.write(Data(content.utf8))
        try? h.close()
    }
}

extension LineFilter {
    /// Processes a Swift string as one log line.
    func process(_ line: String, now: Double) -> [Failure] {
        Array(line.utf8).withUnsafeBufferPointer { process($0, now: $0.isEmpty ? now : now) }
    }
}

/// Waits until `condition` holds or `timeout` seconds pass.
func eventually(timeout: Double = 5, _ condition: () -> Bool) -> Bool {
    let end = Date().addingTimeInterval(timeout)
    while Date() < end {
        if condition() { return true }
        usleep(10_000)
    }
    return condition()
}
