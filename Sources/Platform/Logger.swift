import Glibc
import Synchronization

/// Log lines to stderr with levels, one `write` per line so that threads never interleave within a line.
/// Levels and names follow fail2ban's `loglevel` (CRITICAL, ERROR, WARNING, NOTICE, INFO, DEBUG).
public final class Logger: Sendable {
    public enum Level: Int, Sendable, Comparable {
        case critical = 50, error = 40, warning = 30, notice = 25, info = 20, debug = 10

        public static func < (a: Level, b: Level) -> Bool { a.rawValue < b.rawValue }

        public init?(name: String) {
            let trimmed = name.utf8.drop(while: { $0 == 0x20 || $0 == 0x09 }).reversed().drop(while: { $0 == 0x20 || $0 == 0x09 }).reversed()
            switch String(decoding: trimmed, as: UTF8.self).uppercased() {
            case "CRITICAL": self = .critical
            case "ERROR": self = .error
            case "WARNING", "WARN": self = .warning
            case "NOTICE", "MSG": self = .notice
            case "INFO": self = .info
            case "DEBUG", "TRACEDEBUG", "HEAVYDEBUG": self = .debug
            default:
                if let n = Int(name), n >= 0 { self = Level(rawValue: n) ?? (n <= 10 ? .debug : .info) } else { return nil }
            }
        }

        var label: String {
            switch self {
            case .critical: "CRITICAL"
            case .error: "ERROR"
            case .warning: "WARNING"
            case .notice: "NOTICE"
            case .info: "INFO"
            case .debug: "DEBUG"
            }
        }
    }

    private let threshold: Atomic<Int>
    private let fd: Int32

    public init(level: Level = .info, fd: Int32 = 2) {
        threshold = Atomic(level.rawValue)
        self.fd = fd
    }

    public var level: Level {
        get { Level(rawValue: threshold.load(ordering: .relaxed)) ?? .info }
        set { threshold.store(newValue.rawValue, ordering: .relaxed) }
    }

    public func setLevel(_ level: Level) { threshold.store(level.rawValue, ordering: .relaxed) }

    public func log(_ level: Level, _ message: @autoclosure () -> String) {
        guard level.rawValue >= threshold.load(ordering: .relaxed) else { return }
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        let stamp = RFC3339.format(seconds: ts.tv_sec, milliseconds: ts.tv_nsec / 1_000_000)
        let label = level.label + String(repeating: " ", count: max(0, 8 - level.label.utf8.count))
        var line = "\(stamp) \(label) \(message())\n"
        // One write per line (threads never interleave within one); a line that cannot be written has nowhere
        // else to go: dropped.
        line.withUTF8 { try? FileDescriptor.writeAll(UnsafeRawBufferPointer($0), to: fd) }
    }

    public func critical(_ m: @autoclosure () -> String) { log(.critical, m()) }
    public func error(_ m: @autoclosure () -> String) { log(.error, m()) }
    public func warning(_ m: @autoclosure () -> String) { log(.warning, m()) }
    public func notice(_ m: @autoclosure () -> String) { log(.notice, m()) }
    public func info(_ m: @autoclosure () -> String) { log(.info, m()) }
    public func debug(_ m: @autoclosure () -> String) { log(.debug, m()) }
}
