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

/// A running jail: its log watcher thread feeds the filter, failures are counted per address, and every address
/// that reaches `maxretry` within `findtime` is handed to `onBan`. Filter and tracker live on the watcher thread;
/// other threads see only `counters`.
public final class JailRuntime: @unchecked Sendable {
    // @unchecked: `filter`, `tracker`, `warnedIDs` and `warnedGateway` are used only on the watcher's thread (inside its callbacks);
    // `counters` is locked; the rest is immutable after init.
    public let definition: JailDefinition
    private let filter: LineFilter
    private var tracker: FailureTracker
    private var watcher: LogWatcher!
    private let log: Logger
    private let onBan: @Sendable (BanDecision) -> Void
    private let state = Locked(JailCounters())
    private let positionSnapshot = Locked<[LogPosition]>([])
    private var warnedIDs = Set<String>()
    private let gateways: Gateways
    private var warnedGateway = false

    public var name: String { definition.name }

    /// Compiles the jail's filter. Throws `LineFilter.CompileError` (with the regex and PCRE2's message) or
    /// `ConfigError` for a bad date pattern.
    public init(
        _ definition: JailDefinition, log: Logger, gateways: Gateways = .shared,
        onBan: @escaping @Sendable (BanDecision) -> Void
    ) throws {
        self.definition = definition
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
        tracker = FailureTracker(
            maxRetry: definition.maxRetry, findTime: definition.findTime,
            maxTracked: definition.maxTracked, maxMatches: definition.maxMatches)
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
        for f in failures where !f.isNoFail {
            guard let id = f.id else { continue }
            guard let ip = IPAddress(id) ?? f.ip.flatMap({ IPAddress($0) }) else {
                if warnedIDs.insert(id).inserted && warnedIDs.count < 1000 {
                    log.warning("[\(name)] failure ID '\(id)' is not an IP address and cannot be banned (Portcullis does not resolve host names)")
                }
                continue
            }
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
            var time = f.time ?? now
            if time > now { time = now }
            failed += 1
            log.info("[\(name)] Found \(ip) - \(LogTime.format(time))")
            let lines = f.data.matches.map(\.text)
            if let decision = tracker.record(ip, time: time, lines: lines, jail: name) { decisions.append(decision) }
        }
        let current = tracker.currentlyFailed
        let evicted = tracker.evicted
        state.withLock {
            $0.linesRead += 1
            $0.totalFailed += failed
            $0.ignored += ignored
            $0.gatewayIgnored += gatewayIgnored
            $0.currentlyFailed = current
            $0.evicted = evicted
            $0.totalBanDecisions += decisions.count
            $0.lastLineAt = now
        }
        for d in decisions { onBan(d) }
    }

    private func housekeeping(_ now: Double) {
        tracker.expire(now: now)
        let current = tracker.currentlyFailed
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
