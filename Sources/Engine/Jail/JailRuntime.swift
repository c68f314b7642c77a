import Platform

/// Counters of one jail, readable from any thread (status, metrics).
public struct JailCounters: Sendable {
    public var linesRead = 0
    public var currentlyFailed = 0
    public var totalFailed = 0
    public var totalBanDecisions = 0
    public var ignored = 0
    /// Failures not counted because they came from a default gateway (`ignoregateway`); also in `ignored`.
    public var gatewayIgnored = 0
    public var evicted = 0
    /// Wall-clock time of the last line read.
    public var lastLineAt: Double? = nil
}

/// A running jail: its log watcher thread feeds the filter, failures are counted per address (or network, with
/// `banprefix4`/`banprefix6`), and every one that reaches `maxretry` within `findtime` is handed to `onBan`. The
/// filter lives on the watcher thread; other threads see `counters` and, under its lock, the tracker.
public final class JailRuntime: @unchecked Sendable {
    // @unchecked: `filter`, `warnedIDs` and `warnedGateway` are used only on the watcher's thread (inside its
    // callbacks); `state` and `tracker` are locked; the rest is immutable after init.
    public let definition: JailDefinition
    private let filter: LineFilter
    /// Written by the watcher thread, read by the API (`failing`): one short lock per line with failures.
    private let tracker: Locked<FailureTracker>
    private var watcher: LogWatcher!
    private let log: Logger
    private let onBan: @Sendable (BanDecision) -> Void
    private let state = Locked(JailCounters())
    private let positionSnapshot = Locked<[LogPosition]>([])
    private var warnedIDs = Set<String>()
    private let gateways: Gateways
    private var warnedGateway = false
    private let allowlist: Allowlist?
    /// Failure events, made only while a subscriber asked for them (`?types=failure`).
    private let events: EventFeed?

    public var name: String { definition.name }

    /// Compiles the jail's filter. Throws `LineFilter.CompileError` (with the regex and PCRE2's message) or
    /// `ConfigError` for a bad date pattern.
    public init(
        _ definition: JailDefinition, log: Logger, gateways: Gateways = .shared, allowlist: Allowlist? = nil, events: EventFeed? = nil,
        onBan: @escaping @Sendable (BanDecision) -> Void
    ) throws {
        self.definition = definition
        self.allowlist = allowlist
        self.events = events
        self.gateways = gateways
        self.log = log
        self.onBan = onBan
        var options = LineFilter.Options()
        options.checkAllRegex = false
        options.checkFindTime = true
        options.findTime = definition.findTime
        options.useDNS = definition.filter.usedns.flatMap(UseDNS.init(setting:)) ?? .warn
        options.returnRawHost = true
        filter = try LineFilter(definition.filter, options: options, logTimeZone: definition.logTimeZone)
        let name = definition.name
        var failures = 0
        let filterName = definition.filter.name
        filter.onRegexError = { [log] failure in
            // Said once, with the filter, then at the 10th, 100th, 1,000th… time with the count (a hostile log
            // must not flood the journal, nor hide how often lines went untested).
            failures += 1
            var p = 1
            while p < failures { p *= 10 }
            if p == failures {
                log.error("[\(name)] filter \(filterName): \(failure)" + (failures > 1 ? " (\(failures) lines so far)" : ""))
            }
        }
        tracker = Locked(
            FailureTracker(
                maxRetry: definition.maxRetry, findTime: definition.findTime,
                maxTracked: definition.maxTracked, maxMatches: definition.maxMatches))
        watcher = LogWatcher(
            name: definition.name, paths: definition.logPaths, polling: definition.backend == .polling,
            log: log, maxLineLength: definition.maxLineLength, onIdle: { [unowned self] now in housekeeping(now) },
            handler: { [unowned self] line, inOperation, _ in process(line, inOperation: inOperation) })
    }

    /// Called before the first read of each file (to restore its position).
    public var prepareFollower: ((LogFollower) -> Void)? {
        get { watcher.prepare }
        set { watcher.prepare = newValue }
    }

    public func start() { watcher.start() }
    public func stop() { watcher.stop() }

    public var counters: JailCounters { state.withLock { $0 } }

    /// The addresses (or networks) being counted now, the latest failing first; see `FailureTracker.failing`.
    public func failing(limit: Int, after: UInt64?) -> (list: [FailureTracker.Failing], next: UInt64?) {
        tracker.withLock { $0.failing(limit: limit, after: after) }
    }
    public var files: [String] { watcher.files }
    public var usesPolling: Bool { watcher.polling || definition.backend == .polling }

    /// Processes one log line: the watcher thread's callback, and only ever called on that thread (the filter and
    /// the tracker are its alone), hence not public; tests call it the same way, one thread at a time.
    func process(_ line: UnsafeBufferPointer<UInt8>, inOperation: Bool, now: Double = Clock.now()) {
        filter.inOperation = inOperation
        let failures = filter.process(line, now: now)
        var failed = 0
        var decisions: [BanDecision] = []
        var ignored = 0
        var gatewayIgnored = 0
        var counted: [(target: IPNetwork, time: Double, lines: [String], user: String?)] = []
        for f in failures where !f.isNoFail {
            guard let id = f.id else { continue }
            // An address, or a network (fail2ban's <SUBNET>, <ADDR>/<CIDR>); else the address the filter found.
            let fromID = id.utf8.contains(UInt8(ascii: "/")) ? IPNetwork(id) : IPAddress(id).map { IPNetwork($0) }
            guard let network = fromID ?? f.ip.flatMap({ IPAddress($0) }).map({ IPNetwork($0) }) else {
                if warnedIDs.insert(id).inserted && warnedIDs.count < 1000 {
                    log.warning("[\(name)] failure ID '\(id)' is not an IP address and cannot be banned (Portcullis does not resolve host names)")
                }
                continue
            }
            let ip = network.address
            if let reason = definition.ignoreList.reason(for: ip) {
                ignored += 1
                log.info("[\(name)] Ignore \(ip) by \(reason)")
                continue
            }
            if definition.ignoreGateway && gateways.contains(ip, now: now) {
                ignored += 1
                gatewayIgnored += 1
                if warnedGateway {
                    log.info("[\(name)] Ignore \(ip) by ignoregateway (the default gateway of this network namespace)")
                } else {
                    warnedGateway = true
                    log.warning(Gateways.explanation(jail: name, address: ip))
                }
                continue
            }
            if let entry = allowlist?.entry(protecting: network, jail: name, now: now) {
                ignored += 1
                log.info("[\(name)] Ignore \(network) by \(entry)")
                continue
            }
            var time = f.time ?? now
            if time > now { time = now }
            failed += 1
            var target = definition.banTarget(network)
            // A network that would reach an ignored or allowlisted address, or the default gateway (every client
            // behind a proxy): its addresses are counted one by one.
            if target != network
                && (definition.ignoreList.reason(covering: target) != nil || allowlist?.entry(protecting: target, jail: name, now: now) != nil
                    || definition.ignoreGateway && gateways.current(now: now).contains(where: { target.contains($0) }))
            {
                target = network
            }
            log.info("[\(name)] Found \(network)\(target == network ? "" : " (counted in \(target))") - \(LogTime.format(time))")
            counted.append((target, time, f.data.matches.map(\.text), f.data.value("user") ?? f.data.users.last))
        }
        // Most lines fail nothing: the tracker's lock only for those that do.
        var failureEvents: [EventFeed.Publishable] = []
        let tracked: (current: Int, evicted: Int)? =
            counted.isEmpty
            ? nil
            : tracker.withLock { t in
                let told = events?.wantsFailures == true
                for c in counted {
                    var decision = t.record(c.target, time: c.time, lines: c.lines, user: c.user, jail: name)
                    if decision != nil {
                        decision!.detectedAt = Clock.monotonic()
                        decisions.append(decision!)
                    }
                    if told {
                        failureEvents.append(.failure(jail: name, ip: c.target, failures: decision?.failures ?? t.failures(of: c.target), user: c.user))
                    }
                }
                return (t.currentlyFailed, t.evicted)
            }
        state.withLock {
            $0.linesRead += 1
            $0.totalFailed += failed
            $0.ignored += ignored
            $0.gatewayIgnored += gatewayIgnored
            if let tracked {
                $0.currentlyFailed = tracked.current
                $0.evicted = tracked.evicted
            }
            $0.totalBanDecisions += decisions.count
            $0.lastLineAt = now
        }
        if !failureEvents.isEmpty { events?.publish(failureEvents, now: now) }
        for d in decisions { onBan(d) }
    }

    private func housekeeping(_ now: Double) {
        let current = tracker.withLock { t in
            t.expire(now: now)
            return t.currentlyFailed
        }
        state.withLock { $0.currentlyFailed = current }
        let name = definition.name
        let positions = watcher.positions().map { LogPosition(jail: name, path: $0.path, firstLine: $0.firstLine, offset: $0.offset) }
        positionSnapshot.withLock { $0 = positions }
    }

    /// Where each log was read up to (refreshed every second, and exact after `stop()`).
    public var positions: [LogPosition] {
        positionSnapshot.withLock { $0 }
    }

    /// Stops the watcher and records the final positions.
    public func stopAndCollectPositions() -> [LogPosition] {
        watcher.stop()
        let name = definition.name
        let positions = watcher.positions().map { LogPosition(jail: name, path: $0.path, firstLine: $0.firstLine, offset: $0.offset) }
        positionSnapshot.withLock { $0 = positions }
        return positions
    }
}

/// Timestamps in log messages: local time, as fail2ban prints them.
public enum LogTime {
    public static func format(_ t: Double) -> String {
        let f = CivilTime.fields(ofNaive: CivilTime.localNaive(t))
        func two(_ v: Int) -> String { v < 10 ? "0\(v)" : "\(v)" }
        return "\(f.year)-\(two(f.month))-\(two(f.day)) \(two(f.hour)):\(two(f.minute)):\(two(f.second))"
    }
}
