/// A ban decision: the failures of one address (or of one network, with `banprefix4`/`banprefix6`) reached
/// `maxretry` within `findtime`.
public struct BanDecision: Sendable {
    public let jail: String
    /// The address or network to ban.
    public let ip: IPNetwork
    /// Log time of the failure that reached the limit.
    public let time: Double
    public let failures: Int
    /// The log lines that made up the failures (at most `maxmatches`).
    public let matches: [String]
    /// A ban time chosen by hand (manual bans), instead of the jail's.
    public let banTimeOverride: BanTime?
    /// Why, when not failures ("by request").
    public let reason: String?
    /// When the line that reached `maxretry` was read (monotonic clock): the ban's latency is measured from it.
    public var detectedAt: Double?
    /// The node of the fleet that made the ban, for a ban applied from the cluster (never shared again).
    public var origin: String?

    public init(
        jail: String, ip: IPNetwork, time: Double, failures: Int, matches: [String], banTimeOverride: BanTime? = nil,
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

/// Counts failures per address (or per network of the jail's ban prefix) for one jail: an address is due for a ban once `maxRetry` of its failures lie
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
        /// The first failure since the address was last forgotten (it may lie before the window).
        var first = 0.0
        /// User names the filter captured (`<F-USER>`), the latest few, without repeats.
        var users: [String] = []
    }

    /// User names kept per address (the latest ones).
    static let usersKept = 5

    private var entries: [IPNetwork: Entry] = [:]
    /// Addresses in order of their last failure; stale positions (older generations) are skipped lazily.
    private var order: [(ip: IPNetwork, generation: UInt64)] = []
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

    public func failures(of ip: IPNetwork) -> Int { entries[ip]?.times.count ?? 0 }

    /// Records one failure; returns a decision when the address reached `maxRetry`. The address's count then
    /// starts again from zero.
    public mutating func record(_ ip: IPNetwork, time: Double, lines: [String], user: String? = nil, jail: String) -> BanDecision? {
        totalFailures += 1
        generation &+= 1
        var entry = entries.removeValue(forKey: ip) ?? Entry()
        if entry.times.isEmpty {
            if entries.count >= maxTracked { evictOldest() }
            entry.first = time
        }
        if let user, !user.isEmpty {
            entry.users.removeAll { $0 == user }
            entry.users.append(String(user.prefix(256)))
            if entry.users.count > FailureTracker.usersKept { entry.users.removeFirst() }
        }
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
    public mutating func forget(_ ip: IPNetwork) {
        entries[ip] = nil
    }

    /// An address being counted, for `GET /jails/{jail}/failures`.
    public struct Failing: Sendable, Equatable {
        public let ip: IPNetwork
        /// Failures within `findtime` of the last one (what counts towards `maxretry`).
        public let failures: Int
        public let firstFailure: Double
        public let lastFailure: Double
        public let users: [String]
    }

    /// The addresses being counted, the latest failing first, `limit` at most, after the cursor `after` (the
    /// `next` of the previous page; nil starts with the latest). Walks the order index backwards, no sort.
    public func failing(limit: Int, after: UInt64?) -> (list: [Failing], next: UInt64?) {
        // Positions hold ascending generations: start below the cursor.
        var lo = orderHead, hi = order.count
        if let after {
            while lo < hi {
                let mid = (lo + hi) / 2
                if order[mid].generation < after { lo = mid + 1 } else { hi = mid }
            }
        } else {
            lo = order.count
        }
        var list: [Failing] = []
        var i = lo - 1
        var lastGeneration: UInt64 = 0
        while i >= orderHead {
            let (ip, gen) = order[i]
            i -= 1
            guard let e = entries[ip], e.generation == gen, let last = e.times.last else { continue }
            if list.count == limit { return (list, lastGeneration) }
            list.append(Failing(ip: ip, failures: e.times.count, firstFailure: e.first, lastFailure: last, users: e.users))
            lastGeneration = gen
        }
        return (list, nil)
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
