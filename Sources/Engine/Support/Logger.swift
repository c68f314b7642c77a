import Glibc
import Synchronization
import Foundation

/// Log lines to stderr with levels, one `write` per line so that threads never interleave within a line.
/// Levels and names follow fail2ban's `loglevel` (CRITICAL, ERROR, WARNING, NOTICE, INFO, DEBUG).
public final class Logger: Sendable {
    public enum Level: Int, Sendable, Comparable {
        case critical = 50, error = 40, warning = 30, notice = 25, info = 20, debug = 10

        public static func < (a: Level, b: Level) -> Bool { a.rawValue < b.rawValue }

        public init?(name: String) {
            switch name.trimmingCharacters(in: .whitespaces).uppercased() {
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
        var t = ts.tv_sec
        var tmv = tm()
        gmtime_r(&t, &tmv)
        let stamp = String(format: "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", Int(tmv.tm_year) + 1900, Int(tmv.tm_mon) + 1,
                           Int(tmv.tm_mday), Int(tmv.tm_hour), Int(tmv.tm_min), Int(tmv.tm_sec), Int(ts.tv_nsec / 1_000_000))
        let line = "\(stamp) \(level.label.padding(toLength: 8, withPad: " ", startingAt: 0)) \(message())\n"
        var bytes = Array(line.utf8)
        bytes.withUnsafeMutableBytes { buf in
            var off = 0
            while off < buf.count {
                let n = write(fd, buf.baseAddress! + off, buf.count - off)
                if n <= 0 { if n < 0 && errno == EINTR { continue }; return }
                off += n
            }
        }
    }

    public func critical(_ m: @autoclosure () -> String) { log(.critical, m()) }
    public func error(_ m: @autoclosure () -> String) { log(.error, m()) }
    public func warning(_ m: @autoclosure () -> String) { log(.warning, m()) }
    public func notice(_ m: @autoclosure () -> String) { log(.notice, m()) }
    public func info(_ m: @autoclosure () -> String) { log(.info, m()) }
    public func debug(_ m: @autoclosure () -> String) { log(.debug, m()) }
}
