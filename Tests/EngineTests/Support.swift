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

/// Test shorthand: a ban time written as fail2ban writes it (seconds, -1 for permanent). Production code names
/// `.seconds(…)` or `.permanent`.
extension BanTime: ExpressibleByIntegerLiteral {
    public init(integerLiteral value: Int) { self.init(fail2banSeconds: Double(value)) }
}
