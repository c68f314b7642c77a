/// How long a ban lasts: some seconds, or for ever. fail2ban writes "for ever" as a negative `bantime`, and the
/// store and the API keep it as -1: that convention lives at those edges (`init(fail2banSeconds:)`,
/// `fail2banSeconds`), nowhere else.
public enum BanTime: Sendable, Hashable, CustomStringConvertible {
    case permanent
    /// Positive seconds (or 0, which `bantime = 0` means).
    case seconds(Double)

    /// fail2ban's convention: a negative number is permanent.
    public init(fail2banSeconds value: Double) {
        self = value < 0 ? .permanent : .seconds(value)
    }

    /// -1 for permanent, else the seconds.
    public var fail2banSeconds: Double {
        switch self {
        case .permanent: -1
        case .seconds(let s): s
        }
    }

    public var isPermanent: Bool { self == .permanent }

    /// When a ban that began at `start` ends; nil for a permanent one.
    public func end(from start: Double) -> Double? {
        switch self {
        case .permanent: nil
        case .seconds(let s): start + s
        }
    }

    /// "12w", "1h30m", or "permanent".
    public var description: String {
        switch self {
        case .permanent: "permanent"
        case .seconds(let s): TimeExpression.describe(s)
        }
    }
}

/// A ban with a start and a ban time: where a ban ends is said here once, for every ban record.
public protocol TimedBan {
    var bannedAt: Double { get }
    var banTime: BanTime { get }
}

extension TimedBan {
    /// nil for a permanent ban.
    public var expiresAt: Double? { banTime.end(from: bannedAt) }

    public func isActive(at now: Double) -> Bool { expiresAt.map { $0 > now } ?? true }
}
