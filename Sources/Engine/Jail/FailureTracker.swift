/// A ban decision: the failures of one address reached `maxretry` within `findtime`.
public struct BanDecision: Sendable {
    public let jail: String
    public let ip: IPAddress
    /// Log time of the failure that reached the limit.
    public let time: Double
    public let failures: Int
    /// The log lines that made up the failures (at most `maxmatches`).
    public let matches: [String]
    /// A ban time chosen by hand (manual bans), instead of the jail's.
    public let banTimeOverride: BanTime?
    /// Why, when not failures ("by request").
    public let reason: String?

    public init(
        jail: String, ip: IPAddress, time: Double, failures: Int, matches: [String], banTimeOverride: BanTime? = nil,
        reason: String? = nil
    ) {
        self.jail = jail
        self.ip = ip
        self.time = time
        self.failures = failures
        self.matches = matches
        self.banTimeOverride = banTimeOverride
        self.reason = reason
    }
}

/// Counts failures per address for one jail: an address is due for a ban once `maxRetry` of its failures lie
/// within `findTime` of each other (by log time). Memory is bounded: at most `maxTracked` addresses are followed,
/// the least recently failing one is forgotten first (and counted), and each keeps at most `maxRetry` times and
/// `maxMatches` lines. Not thread-safe: one jail's thread owns it.
public struct FailureTracker {
    public let maxRetry: Int
    public let findTime: Double
    public let maxTracked: Int
    public let maxMatches: Int

    struct Entry {
        /// Failure times within the window, oldest first (at most maxRetry).
        var times: [Double] = []
        var matches: [String] = []
        var generation: UInt64 = 0
    }

    private var entries: [IPAddress: Entry] = [:]
    /// Addresses in order of their last failure; stale positions (older generations) are skipped lazily.
    private var order: [(ip: IPAddress, generation: UInt64)] = []
    private var orderHead = 0
    private var generation: UInt64 = 0

    /// Failures counted since the start.
    public private(set) var totalFailures = 0
    /// Addresses forgotten because `maxTracked` was reached.
    public private(set) var evicted = 0

    public init(maxRetry: Int, findTime: Double, maxTracked: Int = 100_000, maxMatches: Int? = nil) {
        self.maxRetry = max(1, maxRetry)
        self.findTime = findTime
        self.maxTracked = max(1, maxTracked)
        self.maxMatches = max(0, maxMatches ?? maxRetry)
    }

    /// Addresses with failures in the window ("Currently failed").
    public var currentlyFailed: Int { entries.count }

    public func failures(of ip: IPAddress) -> Int { entries[ip]?.times.count ?? 0 }

    /// Records one failure; returns a decision when the address reached `maxRetry`. The address's count then
    /// starts again from zero.
    public mutating func record(_ ip: IPAddress, time: Double, lines: [String], jail: String) -> BanDecision? {
        totalFailures += 1
        generation &+= 1
        var entry = entries.removeValue(forKey: ip) ?? Entry()
        if entry.times.isEmpty && entries.count >= maxTracked { evictOldest() }
        // Keep only failures within findtime of this one.
        let horizon = time - findTime
        entry.times.removeAll { $0 <= horizon }
        entry.times.append(time)
        if entry.times.count > maxRetry { entry.times.removeFirst(entry.times.count - maxRetry) }
        if maxMatches > 0 {
            entry.matches += lines
            if entry.matches.count > maxMatches { entry.matches.removeFirst(entry.matches.count - maxMatches) }
        }
        if entry.times.count >= maxRetry {
            return BanDecision(jail: jail, ip: ip, time: time, failures: entry.times.count, matches: entry.matches)
        }
        entry.generation = generation
        entries[ip] = entry
        order.append((ip, generation))
        compactIfNeeded()
        return nil
    }

    /// Forgets an address (it was banned or unbanned by hand).
    public mutating func forget(_ ip: IPAddress) {
        entries[ip] = nil
    }

    /// Drops addresses whose last failure is older than `findTime` before `now`.
    public mutating func expire(now: Double) {
        let horizon = now - findTime
        while orderHead < order.count {
            let (ip, gen) = order[orderHead]
            if let e = entries[ip], e.generation == gen {
                guard let last = e.times.last, last <= horizon else { break }
                entries[ip] = nil
            }
            orderHead += 1
        }
        compactIfNeeded()
    }

    private mutating func evictOldest() {
        while orderHead < order.count {
            let (ip, gen) = order[orderHead]
            orderHead += 1
            if let e = entries[ip], e.generation == gen {
                entries[ip] = nil
                evicted += 1
                return
            }
        }
    }

    private mutating func compactIfNeeded() {
        guard orderHead > 1024 && orderHead * 2 > order.count else { return }
        order.removeFirst(orderHead)
        orderHead = 0
        if order.count > entries.count * 4 + 1024 {
            order.removeAll { entries[$0.ip]?.generation != $0.generation }
        }
    }
}
