import FoundationEssentials
import Glibc
import Platform

/// Applies ban decisions and keeps bans until they end: every ban is committed to the store before it reaches the
/// packet filter and before it is reported; expiry runs on a timer (the earliest end, from a heap), not by
/// scanning. One worker thread does all of this, so that a storm of decisions becomes one database transaction and
/// one netlink transaction.
public final class BanManager: @unchecked Sendable {
    // @unchecked, the invariant: every mutable property is guarded by `lock`, `worker` included (`stop` takes it
    // out under the lock and joins it outside); the packet filter and the store are changed only with `changing`
    // held (taken before `lock`, never while holding it).

    /// What one jail needs from the ban manager (a class: it is handed around per decision).
    public final class JailSetup: Sendable {
        public let definition: JailDefinition
        public let policy: BanTimePolicy
        public let firewall: any Firewall
        public let rules: JailRules

        public init(definition: JailDefinition, policy: BanTimePolicy, firewall: any Firewall, rules: JailRules) {
            self.definition = definition
            self.policy = policy
            self.firewall = firewall
            self.rules = rules
        }
    }

    /// A ban in force, compact (100,000 of them must fit in a few MB); the matched lines stay in the store.
    public struct ActiveBan: TimedBan, Sendable, Equatable {
        public let jail: String
        /// The address, or the network (`banprefix6`, a CIDR ban).
        public let ip: IPNetwork
        public let bannedAt: Double
        public let banTime: BanTime
        public let banCount: Int
        public let failures: Int
    }

    typealias Key = BanTable.Key

    enum StoreChange {
        case record(StoredBan)
        case remove(jail: String, ip: IPNetwork)
    }

    /// The store failed and bans are waiting to be written: `/health` says "degraded" meanwhile.
    public struct StoreProblem: Sendable {
        public let since: Double
        public let error: String
        public let waiting: Int
    }

    public struct Stats: Sendable {
        public var bansTotal: [String: Int] = [:]
        public var unbansTotal: [String: Int] = [:]
        public var failedBans = 0
        /// Bans made with the base ban time because the ban history (bantime.increment) could not be read.
        public var historyUnread = 0
        /// From reading the line that reached maxretry to the ban in force (stored, in the packet filter).
        public var latency = Histogram(bounds: BanManager.latencyBounds)
    }

    /// Seconds: a ban normally takes milliseconds; a storm or a slow disk seconds.
    public static let latencyBounds = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]

    /// PORTCULLIS_TRACE_BANS=1 logs how long each batch's steps took.
    static let trace = getenv("PORTCULLIS_TRACE_BANS") != nil
    private let store: BanStore?
    private let log: Logger
    /// Guards the state below; waited on by callers for the worker's progress (`drain`, `unban`).
    private let lock = Condition()
    /// Held while the bans change in the packet filter (a batch, an expiry, a lift) and while a layout is installed
    /// with the bans in force: an install cannot miss a ban added between its snapshot and its transaction.
    /// Taken before `lock`, never while holding it.
    private let changing = Lock()
    private var jails: [String: JailSetup] = [:]
    private var active = BanTable()
    private var expiries = ExpiryHeap()
    private var pending: [BanDecision] = []
    /// Bans lifted by request, waiting for the worker: the worker alone changes bans, so that a lift cannot
    /// interleave with an expiry or a new ban of the same address.
    private var pendingLifts: [(id: UInt64, jail: String, ip: IPNetwork, reason: String, kind: FeedEvent.UnbanReason)] = []
    private var liftResults: [UInt64: Result<Bool, any Error>] = [:]
    private var nextLiftID: UInt64 = 0
    private var stopping = false
    private var running = false
    /// The worker: woken (its eventfd) when decisions or lifts are queued and when it is to stop.
    private var worker: StoppableThread?
    private var finished = false
    private var stats = Stats()
    /// A failing history read is said once per 10 minutes, not at every ban of a storm (guarded by `lock`).
    private var historyWarnings = RepeatedWarnings(interval: 600)
    /// Store writes that failed (a full disk, an I/O error), latest per ban: the bans are in force anyway (the
    /// packet filter does not depend on the disk), and the worker writes these when the store works again.
    private var unstored: [Key: StoreChange] = [:]
    private var storeProblem: StoreProblem?
    private var nextStoreRetry = 0.0
    /// Why the packet filter refused a ban, for the manual ban that waits for it.
    private var refusals: [Key: String] = [:]
    /// Decisions handed in that are done (committed and applied, or refused): lets callers wait for theirs.
    private var processedCount = 0
    private var submittedCount = 0

    /// Decisions waiting beyond which `submit` waits for the worker; decisions per batch at most. See
    /// `defaultMaxPending` and `defaultMaxBatch`.
    let maxPending: Int
    let maxBatch: Int

    /// Runtime trusted addresses: a ban that would reach one is not made.
    public let allowlist: Allowlist?
    /// Where bans and unbans are told as they happen (`GET /events`), after they are in force or lifted.
    public let events: EventFeed?

    public init(
        store: BanStore?, log: Logger, allowlist: Allowlist? = nil, events: EventFeed? = nil, maxPending: Int = BanManager.defaultMaxPending,
        maxBatch: Int = BanManager.defaultMaxBatch
    ) {
        self.store = store
        self.log = log
        self.allowlist = allowlist
        self.events = events
        self.maxPending = max(1, maxPending)
        self.maxBatch = max(1, maxBatch)
    }

    // MARK: start, reload, stop

    /// Loads the bans in force from the store and installs every backend's layout with them, atomically.
    /// `install` puts the layout in place (the daemon's, which leaves out jails the packet filter refuses); by
    /// default, `install(setups)`.
    public func start(_ setups: [JailSetup], now: Double = Clock.now(), install: (([JailSetup]) throws -> Void)? = nil) throws {
        let restored = try store?.activeBanSummaries(now: now) ?? []
        // Rows written by older versions (or by hand) may hold times no ban can have: cut them to what the packet
        // filter holds, and skip a row whose start is not a time at all, rather than trap on them at every start.
        var cut = 0, skipped = 0
        lock.lock()
        active.reserveCapacity(restored.count)
        for b in restored {
            guard b.bannedAt.isFinite, abs(b.bannedAt) <= TimeExpression.longest, !b.banTime.fail2banSeconds.isNaN else { skipped += 1; continue }
            let banTime = BanTimePolicy.capped(b.banTime.fail2banSeconds, fallback: .permanent)
            if banTime != b.banTime && !b.banTime.isPermanent { cut += 1 }
            let key = active.key(b.jail, b.ip)
            let v = BanTable.Value(bannedAt: b.bannedAt, banTime: banTime, banCount: b.banCount, failures: b.failures)
            active[key] = v
            if let end = v.expiresAt { expiries.push(end, key) }
        }
        let overlapping = dropCovered(restored)
        lock.unlock()
        if !overlapping.isEmpty {
            log.warning(
                "\(overlapping.count) stored ban(s) lie inside a stored network ban of the same jail (\(overlapping.prefix(3).map { "\($0.ip) in \($0.jail)" }.joined(separator: ", "))\(overlapping.count > 3 ? ", …" : "")): the network stands for them"
            )
            do { try store?.remove(overlapping) } catch { log.error("removing them from \(store?.path ?? "the store") failed: \(error)") }
        }
        if cut > 0 {
            log.warning(
                "\(cut) ban(s) in \(store?.path ?? "the store") were longer than the packet filter holds: they last \(TimeExpression.describe(BanTimePolicy.longest))"
            )
        }
        if skipped > 0 { log.error("\(skipped) ban(s) in \(store?.path ?? "the store") have no valid start time and were not restored") }
        if let install { try install(setups) } else { try self.install(setups, now: now) }
        if !restored.isEmpty { log.notice("Restored \(restored.count) ban(s) from \(store?.path ?? "the store")") }
        let t = try StoppableThread(name: "portcullis-bans")
        lock.withLock {
            running = true
            worker = t
        }
        do {
            try t.start { [self] in run(t) }
        } catch {
            lock.withLock {
                running = false
                worker = nil
            }
            throw error
        }
    }

    /// Takes out of the table the restored bans that lie inside another restored ban of their jail, and returns
    /// them (called with `lock` held). The store can hold both when the daemon stopped between writing a network
    /// ban and removing the bans it replaced; the kernel's interval set would refuse the overlap, and the whole
    /// layout with it.
    private func dropCovered(_ restored: [StoredBan]) -> [(jail: String, ip: IPNetwork)] {
        guard active.prefixesInUse(ipv6: false).contains(where: { $0 < 32 }) || active.prefixesInUse(ipv6: true).contains(where: { $0 < 128 })
        else { return [] }
        var dropped: [(jail: String, ip: IPNetwork)] = []
        for b in restored {
            guard let key = active.existingKey(b.jail, b.ip), active[key] != nil else { continue }
            if active.covering(b.ip, jailID: key.jailID).contains(where: { $0 != key }) {
                active[key] = nil
                dropped.append((b.jail, b.ip))
            }
        }
        return dropped
    }

    /// (Re)installs the packet-filter layout for `setups` with the bans in force. Used at start and on reload.
    /// When the packet filter refuses the layout, nothing changes (the kernel keeps the previous one, and so does
    /// this manager).
    public func install(_ setups: [JailSetup], now: Double = Clock.now()) throws {
        changing.lock(); defer { changing.unlock() }
        let current = lock.withLock { active.all() }
        // One install per backend object (the nftables backend is shared by every nftables jail).
        var backends: [ObjectIdentifier: (any Firewall, [JailRules])] = [:]
        for s in setups {
            let id = ObjectIdentifier(s.firewall)
            backends[id, default: (s.firewall, [])].1.append(s.rules)
        }
        for (_, (firewall, rules)) in backends {
            let names = Set(rules.map(\.jail))
            let entries = current.filter { names.contains($0.jail) }.map { BanEntry(jail: $0.jail, ip: $0.ip, expiresAt: $0.expiresAt) }
            try firewall.install(rules, bans: entries, now: now)
        }
        lock.withLock { jails = Dictionary(uniqueKeysWithValues: setups.map { ($0.definition.name, $0) }) }
    }

    /// Stops the worker (pending decisions are applied first) and, with `removeLayout`, removes the packet
    /// filter layout (the bans come back from the store at the next start).
    public func stop(removeLayout: Bool) {
        lock.lock()
        stopping = true
        // A reader waiting for room in `submit` goes on (its decisions are applied before the worker ends).
        lock.broadcast()
        let worker = self.worker
        self.worker = nil
        let wasRunning = running
        let backends = Dictionary(jails.values.map { (ObjectIdentifier($0.firewall), $0.firewall) }, uniquingKeysWith: { a, _ in a })
        lock.unlock()
        // The worker applies what is pending, then ends; joined, it has let go of this manager (its body holds it).
        worker?.stop()
        // Nothing was installed when the start failed.
        guard removeLayout && wasRunning else { return }
        for (_, fw) in backends {
            do { try fw.uninstall() } catch { log.error("removing the packet filter layout failed: \(error)") }
        }
    }

    // MARK: input

    /// Decisions waiting beyond which `submit` waits for the worker: a storm is read no faster than it is banned
    /// (its lines wait in the log file meanwhile, and nothing is lost), so that 100,000 failure lines written at
    /// once do not become 100,000 decisions with their matched lines in memory. Never while stopping.
    public static let defaultMaxPending = 10_000

    /// Hands in a decision (any thread). It is applied by the worker shortly after; with `maxPending` decisions
    /// waiting, this waits for room.
    public func submit(_ decision: BanDecision) {
        lock.lock()
        while pending.count >= maxPending && worker != nil && running && !finished && !stopping { lock.wait() }
        pending.append(decision)
        submittedCount += 1
        worker?.wake()
        lock.unlock()
    }

    /// Waits until every decision submitted so far is done (for tests and manual bans).
    public func drain(timeout: Double = 10) -> Bool {
        lock.lock(); defer { lock.unlock() }
        let target = submittedCount
        let deadline = Clock.monotonic() + timeout
        while processedCount < target {
            if !lock.wait(until: deadline) { return false }
        }
        return true
    }

    // MARK: queries

    public var bans: [ActiveBan] { lock.withLock { active.all() } }
    public var activeCount: Int { lock.withLock { active.count } }
    /// Every ban that covers `ip` (the address or network itself, or a wider network around it), in every jail.
    public func bans(of ip: IPNetwork) -> [ActiveBan] {
        lock.withLock { active.covering(ip).compactMap { k in active[k].map { active.ban(k, $0) } } }
    }
    public func bans(of ip: IPAddress) -> [ActiveBan] { bans(of: IPNetwork(ip)) }
    /// Whether exactly this address or network is banned in `jail`.
    public func isBanned(jail: String, ip: IPNetwork) -> Bool {
        lock.withLock { active.existingKey(jail, ip).map { active[$0] != nil } ?? false }
    }
    public func isBanned(jail: String, ip: IPAddress) -> Bool { isBanned(jail: jail, ip: IPNetwork(ip)) }
    /// The bans that share an address with `network` (wider ones around it, narrower ones inside it), in `jail` or
    /// in every jail.
    public func bans(overlapping network: IPNetwork, jail: String?) -> [ActiveBan] {
        lock.withLock {
            let names = jail.map { [$0] } ?? active.jailNames
            return names.flatMap { j in
                (active.covering(network, jail: j) + active.inside(network, jail: j)).compactMap { k in active[k].map { active.ban(k, $0) } }
            }
        }
    }

    /// What a lift of `ip` in `jail` means: the ban of exactly that address or network or, for a bare address in a
    /// jail with a ban prefix (`widen`: written without a prefix length), the ban of its network there (as `banip`
    /// widened it). nil when neither is banned.
    public func liftTarget(jail: String, ip: IPNetwork, widen: Bool = true) -> IPNetwork? {
        lock.withLock {
            if let k = active.existingKey(jail, ip), active[k] != nil { return ip }
            guard widen, ip.isSingleAddress, let widened = jails[jail]?.definition.banTarget(ip.address), widened != ip,
                let k = active.existingKey(jail, widened), active[k] != nil
            else { return nil }
            return widened
        }
    }
    public var statistics: Stats { lock.withLock { stats } }
    /// Decisions handed in and not yet taken by the worker.
    public var waitingDecisions: Int { lock.withLock { pending.count } }
    /// nil while every ban is in the store.
    public var storeTrouble: StoreProblem? {
        lock.withLock { storeProblem.map { StoreProblem(since: $0.since, error: $0.error, waiting: unstored.count) } }
    }
    public func activeCount(jail: String) -> Int {
        lock.withLock { active.count(jail: jail) }
    }

    /// One page of the bans in force, in the order they were made (stable across pages: bans made meanwhile
    /// come at the end). `cursor` is what the previous page returned as `next`; nil starts at the beginning.
    public struct Page: Sendable {
        public let bans: [ActiveBan]
        public let next: String?
    }

    public struct BadCursor: Error {}

    /// The addresses banned in one jail, in ban order.
    public func bannedAddresses(jail: String) -> [IPNetwork] {
        lock.withLock { active.addresses(jail: jail) }
    }

    public func page(cursor: String?, limit: Int, jail: String? = nil) throws(BadCursor) -> Page {
        var after: UInt64 = 0
        if let cursor {
            guard let s = BanTable.seq(cursor: cursor) else { throw BadCursor() }
            after = s
        }
        let (bans, next) = lock.withLock { active.page(after: after, limit: limit, jail: jail) }
        return Page(bans: bans, next: next.map(BanTable.cursor))
    }

    // MARK: manual changes

    public enum ManualError: Error, CustomStringConvertible {
        case unknownJail(String)
        case failed(String)
        /// A wider ban of the jail covers it already.
        case coveredBy(ActiveBan, asked: IPNetwork)
        /// An allowlist entry protects an address it would reach.
        case allowlisted(AllowlistEntry, asked: IPNetwork)
        public var description: String {
            switch self {
            case .unknownJail(let j): "no jail named '\(j)'"
            case .failed(let m): m
            case .coveredBy(let b, let asked): "\(asked) is already banned in \(b.jail) by \(b.ip)"
            case .allowlisted(let e, let asked): "\(asked) is not banned: it is protected by \(e.description)\(e.comment.isEmpty ? "" : " (\(e.comment))")"
            }
        }
    }

    /// Lifts a ban: store first, then the packet filter. Returns false when there was none. The worker does it
    /// (this waits for it), between its other changes; without a running worker, the caller does.
    /// `reason` is what the log and the event feed say; `kind`, what the feed's unban event names.
    @discardableResult
    public func unban(jail: String, ip: IPNetwork, reason: String = "by request", kind: FeedEvent.UnbanReason = .request) throws -> Bool {
        lock.lock()
        guard running && !finished else {
            lock.unlock()
            return try lift(jail: jail, ip: ip, reason: reason, kind: kind)
        }
        let id = nextLiftID
        nextLiftID += 1
        pendingLifts.append((id, jail, ip, reason, kind))
        worker?.wake()
        while liftResults[id] == nil { lock.wait() }
        let result = liftResults.removeValue(forKey: id)!
        lock.unlock()
        return try result.get()
    }

    /// Lifts one ban (on the worker, or with no worker running).
    private func lift(jail: String, ip: IPNetwork, reason: String, kind: FeedEvent.UnbanReason) throws -> Bool {
        changing.lock(); defer { changing.unlock() }
        let (key, firewall): (Key?, (any Firewall)?) = lock.withLock {
            guard let key = active.existingKey(jail, ip), active[key] != nil else { return (nil, nil) }
            return (key, jails[jail]?.firewall)
        }
        guard let key else { return false }
        try firewall?.remove([(jail, ip)])
        storeRemove(key, jail: jail, ip: ip, now: Clock.now())
        lock.withLock {
            active[key] = nil
            stats.unbansTotal[jail, default: 0] += 1
        }
        log.notice("[\(jail)] Unban \(ip) (\(reason))")
        events?.publish([.unban(jail: jail, ip: ip, reason: kind, text: reason)])
        return true
    }

    /// Lifts the bans of `ip` in every jail (see `liftTarget`); returns the jails and what was lifted there.
    public func unbanEverywhere(_ ip: IPNetwork, widen: Bool = true) throws -> [(jail: String, ip: IPNetwork)] {
        let names = lock.withLock { jails.keys.sorted() }
        var lifted: [(jail: String, ip: IPNetwork)] = []
        for j in names {
            guard let target = liftTarget(jail: j, ip: ip, widen: widen) else { continue }
            if try unban(jail: j, ip: target) { lifted.append((j, target)) }
        }
        return lifted
    }

    /// Bans by hand (`set JAIL banip`): the same path as a detected failure, waited for. A ban already covered by
    /// a wider one of the jail is refused (`coveredBy`); one that covers narrower ones takes their place.
    public func banManually(jail: String, ip: IPNetwork, banTime: BanTime? = nil, now: Double = Clock.now()) throws -> ActiveBan {
        lock.lock()
        guard jails[jail] != nil else { lock.unlock(); throw ManualError.unknownJail(jail) }
        if let entry = allowlist?.entry(protecting: ip, jail: jail, now: now) {
            lock.unlock()
            throw ManualError.allowlisted(entry, asked: ip)
        }
        let cover = active.covering(ip, jail: jail).first { active.ip(of: $0) != ip }.flatMap { k in active[k].map { active.ban(k, $0) } }
        lock.unlock()
        if let cover { throw ManualError.coveredBy(cover, asked: ip) }
        let decision = BanDecision(jail: jail, ip: ip, time: now, failures: 0, matches: [], banTimeOverride: banTime, reason: "by request")
        submit(decision)
        _ = drain()
        let (ban, refusal): (ActiveBan?, String?) = lock.withLock {
            guard let k = active.existingKey(jail, ip) else { return (nil, nil) }
            return (active[k].map { active.ban(k, $0) }, refusals.removeValue(forKey: k))
        }
        guard let ban else {
            throw ManualError.failed("the ban of \(ip) in \(jail) was not applied: \(refusal ?? "see the log")")
        }
        return ban
    }

    // MARK: the worker

    private func run(_ thread: StoppableThread) {
        lock.lock()
        while true {
            if pending.isEmpty && pendingLifts.isEmpty && !stopping {
                var next = expiries.earliest
                if !unstored.isEmpty { next = min(next ?? nextStoreRetry, nextStoreRetry) }
                let timeout = next.map { min(max(0, $0 - Clock.now()), 3600) }
                if timeout != 0 {
                    // Work queued meanwhile has signalled the eventfd: the wait returns at once.
                    lock.unlock()
                    thread.waitForWake(timeout: timeout)
                    lock.lock()
                }
            }
            let batch = takeBatch()
            // Room in the queue: a reader waiting in `submit` goes on while this batch is applied.
            if !batch.isEmpty { lock.broadcast() }
            let lifts = pendingLifts
            pendingLifts = []
            let now = Clock.now()
            var due: [(Key, String, IPNetwork)] = []
            while let (end, key) = expiries.popIfDue(now) {
                // Stale heap entries (re-banned or lifted since) are skipped.
                if let a = active[key], let e = a.expiresAt, e <= now, e == end { due.append((key, active.jail(of: key), active.ip(of: key))) }
            }
            let done = stopping && pending.isEmpty
            let retryStore = !unstored.isEmpty && (now >= nextStoreRetry || done)
            lock.unlock()
            if retryStore { writeUnstored(now: now) }
            if !batch.isEmpty { apply(batch, now: now) }
            if !due.isEmpty { expire(due, now: now) }
            var lifted: [(UInt64, Result<Bool, any Error>)] = []
            for l in lifts { lifted.append((l.id, Result { try lift(jail: l.jail, ip: l.ip, reason: l.reason, kind: l.kind) })) }
            lock.lock()
            if batch.count >= 1000 && pending.isEmpty {
                // A storm leaves its decisions' memory (log lines) in malloc's free lists: give it back.
                // `pending` is read under the lock (TSan caught the unlocked read); the trim runs outside it.
                lock.unlock()
                Allocator.returnFreeMemory()
                lock.lock()
            }
            processedCount += batch.count
            for (id, result) in lifted { liftResults[id] = result }
            lock.broadcast()
            if done && pending.isEmpty && pendingLifts.isEmpty { break }
        }
        finished = true
        lock.broadcast()
        lock.unlock()
    }

    /// Decisions per batch at most: a storm is applied in slices, so that what a batch holds while it passes
    /// through the store and netlink (the bans, their matched lines, the messages) stays bounded.
    public static let defaultMaxBatch = 5_000

    /// The oldest `maxBatch` pending decisions (called with `lock` held).
    private func takeBatch() -> [BanDecision] {
        guard pending.count > maxBatch else {
            defer { pending = [] }
            return pending
        }
        let batch = Array(pending.prefix(maxBatch))
        pending.removeFirst(maxBatch)
        return batch
    }

    /// A decision ready to be made a ban: the ban as it will be stored, its jail, the reason the log gives, and the
    /// narrower bans of the jail it takes the place of.
    private struct PreparedBan {
        var ban: StoredBan
        let setup: JailSetup
        var reason: String
        var absorbs: [(key: Key, ip: IPNetwork)] = []
        var detectedAt: Double?
        var origin: String?
    }

    /// Makes a batch of decisions bans: store first, then the packet filters, then in force and reported.
    private func apply(_ decisions: [BanDecision], now: Double) {
        changing.lock(); defer { changing.unlock() }
        let tStart = Clock.monotonic()
        defer {
            if BanManager.trace { log.notice("trace: batch of \(decisions.count) decisions in \(TextFormat.fixed(Clock.monotonic() - tStart, digits: 3)) s") }
        }
        var fresh = prepare(decisions, now: now)
        guard !fresh.isEmpty else { return }
        let tPrepared = Clock.monotonic()
        record(&fresh, now: now)
        let tStored = Clock.monotonic()
        let refused = addToPacketFilters(fresh, now: now)
        if !refused.isEmpty { forget(refused, fresh.map(\.ban), now: now) }
        let tApplied = Clock.monotonic()
        let made = putInForce(fresh, refused: refused)
        let inForce = Clock.monotonic()
        lock.withLock {
            for p in made { if let t = p.detectedAt { stats.latency.observe(max(0, inForce - t)) } }
        }
        for p in made {
            for a in p.absorbs { storeRemove(a.key, jail: p.ban.jail, ip: a.ip, now: now) }
        }
        if BanManager.trace {
            let end = Clock.monotonic()
            log.notice(
                "trace: \(fresh.count) bans: store \(TextFormat.fixed(tStored - tPrepared, digits: 3)) s, "
                    + "packet filter \(TextFormat.fixed(tApplied - tStored, digits: 3)) s, table \(TextFormat.fixed(end - tApplied, digits: 3)) s")
        }
        for p in made {
            let dry = p.setup.firewall is DryRunFirewall ? " (dry-run: packet filter untouched)" : ""
            for a in p.absorbs { log.notice("[\(p.ban.jail)] Unban \(a.ip) (inside the new ban of \(p.ban.ip))") }
            log.notice("[\(p.ban.jail)] Ban \(p.ban.ip) for \(p.ban.banTime.isPermanent ? "ever" : p.ban.banTime.description): \(p.reason)\(dry)")
        }
        if let events {
            var told: [EventFeed.Publishable] = []
            for p in made {
                for a in p.absorbs { told.append(.unban(jail: p.ban.jail, ip: a.ip, reason: .network, text: "inside the new ban of \(p.ban.ip)")) }
                let b = p.ban
                told.append(
                    .ban(
                        jail: b.jail, ip: b.ip, bannedAt: b.bannedAt, banTime: b.banTime, banCount: b.banCount, failures: b.failures, reason: p.reason,
                        matches: b.matches, origin: p.origin))
            }
            events.publish(told, now: now)
        }
    }

    /// The decisions that become bans (not for a jail that stopped, an address that is never a source, or one
    /// banned already, by itself or by a wider network), with their ban times and reasons, and the narrower bans
    /// each takes the place of (a jail's interval set holds no overlaps).
    private func prepare(_ decisions: [BanDecision], now: Double) -> [PreparedBan] {
        // Wider networks first: a /128 of the batch inside one of its /64s is then "already banned" by it.
        let ordered = decisions.enumerated().sorted { ($0.element.ip.prefix, $0.offset) < ($1.element.ip.prefix, $1.offset) }.map(\.element)
        // One look at the shared state for the whole batch.
        let (setups, keys, covers): ([String: JailSetup], [Key], [Key: IPNetwork]) = lock.withLock {
            var covers: [Key: IPNetwork] = [:]
            var keys: [Key] = []
            keys.reserveCapacity(ordered.count)
            for d in ordered {
                let k = active.key(d.jail, d.ip)
                keys.append(k)
                if let c = active.covering(d.ip, jailID: k.jailID).first { covers[k] = active.ip(of: c) }
            }
            active.reserveCapacity(active.count + ordered.count)
            return (jails, keys, covers)
        }
        var fresh: [PreparedBan] = []
        // What this batch bans already, and its prefix lengths by family (IPv6 true).
        var seen = Set<JailNetwork>()
        var widths: [Bool: Set<Int>] = [false: [], true: []]
        for (d, key) in zip(ordered, keys) {
            guard let setup = setups[d.jail] else { log.warning("[\(d.jail)] ban of \(d.ip) dropped: the jail is not running"); continue }
            if let why = d.ip.neverASource {
                log.warning("[\(d.jail)] \(d.ip) is not banned: \(why) (a filter that matched the wrong field?)")
                continue
            }
            if let entry = allowlist?.entry(protecting: d.ip, jail: d.jail, now: now) {
                log.notice("[\(d.jail)] \(d.ip) is not banned: protected by \(entry)")
                continue
            }
            let ipv6 = !d.ip.isIPv4
            let inBatch = widths[ipv6]!.filter { $0 <= d.ip.prefix }.sorted(by: >).lazy
                .map { IPNetwork(address: d.ip.address, prefix: $0) }.first { seen.contains(JailNetwork(jail: d.jail, ip: $0)) }
            if let cover = covers[key] ?? inBatch {
                log.notice("[\(d.jail)] \(d.ip) already banned" + (cover == d.ip ? "" : " by \(cover)"))
                continue
            }
            seen.insert(JailNetwork(jail: d.jail, ip: d.ip))
            widths[ipv6]!.insert(d.ip.prefix)
            fresh.append(prepare(d, setup, now: now))
        }
        absorb(&fresh, now: now)
        return fresh
    }

    private struct JailNetwork: Hashable {
        let jail: String
        let ip: IPNetwork
    }

    /// Finds the bans in force that each new network ban covers: they leave with it, and the network ban lasts
    /// at least as long as the longest of them (nothing banned is let in earlier).
    private func absorb(_ fresh: inout [PreparedBan], now: Double) {
        lock.withLock {
            let networks = fresh.indices.filter { !fresh[$0].ban.ip.isSingleAddress }
            guard !networks.isEmpty else { return }
            let found = active.inside(networks.map { (fresh[$0].ban.jail, fresh[$0].ban.ip) })
            for (i, inside) in zip(networks, found) {
                guard !inside.isEmpty else { continue }
                var end = fresh[i].ban.expiresAt
                for k in inside {
                    guard let v = active[k] else { continue }
                    fresh[i].absorbs.append((k, active.ip(of: k)))
                    switch (end, v.expiresAt) {
                    case (nil, _): break
                    case (_, nil): end = nil
                    case (let a?, let b?): end = max(a, b)
                    }
                }
                if end != fresh[i].ban.expiresAt {
                    fresh[i].ban.banTime = end.map { .seconds(($0 - fresh[i].ban.bannedAt).rounded(.up)) } ?? .permanent
                    fresh[i].reason += " (extended to the end of a ban it covers)"
                }
            }
        }
    }

    private func prepare(_ d: BanDecision, _ setup: JailSetup, now: Double) -> PreparedBan {
        let increment = setup.definition.increment
        // Only bantime.increment needs the history before the ban (the store counts bans as it records them).
        let previous = increment.enabled ? previousBans(d, overallJails: increment.overallJails, now: now) : 0
        let wanted = d.banTimeOverride ?? setup.policy.uncappedBanTime(previousBans: previous)
        let banTime = BanTimePolicy.capped(wanted.fail2banSeconds, fallback: setup.policy.base)
        let ban = StoredBan(
            jail: d.jail, ip: d.ip, bannedAt: now, banTime: banTime, banCount: 1,
            failures: d.failures, matches: d.matches)
        var reason = d.reason ?? "\(d.failures) failure\(d.failures == 1 ? "" : "s") within \(TimeExpression.describe(setup.definition.findTime))"
        if previous > 0 && increment.enabled && d.banTimeOverride == nil {
            reason += ", banned \(previous) time\(previous == 1 ? "" : "s") before"
        }
        if case .seconds(let granted) = banTime, case .seconds(let asked) = wanted, asked > granted {
            reason += " (cut from \(TimeExpression.describe(asked)): the packet filter holds at most \(TimeExpression.describe(BanTimePolicy.longest)))"
        }
        return PreparedBan(ban: ban, setup: setup, reason: reason, detectedAt: d.detectedAt, origin: d.origin)
    }

    /// How often the address was banned before (in its jail, or in any with `overalljails`). A history that
    /// cannot be read counts as none: the ban still happens, with the base time, and that is said and counted,
    /// never silent.
    private func previousBans(_ d: BanDecision, overallJails: Bool, now: Double) -> Int {
        guard let store else { return 0 }
        do {
            return try store.previousBanCount(ip: d.ip, jail: overallJails ? nil : d.jail, since: 0)
        } catch {
            let log = self.log
            lock.withLock {
                stats.historyUnread += 1
                historyWarnings.report(
                    "bantime.increment: the ban history cannot be read (\(error)); bans get the base ban time until it can",
                    key: "history", now: now
                ) { log.error($0) }
            }
            return 0
        }
    }

    /// 1. The store. When it fails (a full disk), the bans are made anyway and written when it works again: the
    /// packet filter must not depend on the disk, and the kernel's timeouts end them even if we stop.
    private func record(_ fresh: inout [PreparedBan], now: Double) {
        guard let store else { return }
        do {
            let recorded = try store.record(fresh.map(\.ban))
            for i in fresh.indices { fresh[i].ban = recorded[i] }
        } catch {
            storeFailed(error, now: now, what: "recording \(fresh.count) ban(s)")
            lock.withLock { for p in fresh { unstored[active.key(p.ban.jail, p.ban.ip)] = .record(p.ban) } }
        }
    }

    /// 2. The packet filters, one transaction per backend (a network ban replaces the narrower ones it covers in
    /// the same transaction: no moment without either). Returns the bans the kernel refused, with its reason: a
    /// refused ban is not a ban (not listed, counted or kept in the store).
    private func addToPacketFilters(_ fresh: [PreparedBan], now: Double) -> [Key: String] {
        var byBackend: [ObjectIdentifier: (any Firewall, [PreparedBan])] = [:]
        for p in fresh { byBackend[ObjectIdentifier(p.setup.firewall), default: (p.setup.firewall, [])].1.append(p) }
        func entry(_ p: PreparedBan) -> BanEntry { BanEntry(jail: p.ban.jail, ip: p.ban.ip, expiresAt: p.ban.expiresAt) }
        func replaced(_ p: PreparedBan) -> [(jail: String, ip: IPNetwork)] { p.absorbs.map { (p.ban.jail, $0.ip) } }
        var refused: [Key: String] = [:]
        for (_, (firewall, list)) in byBackend {
            do { try firewall.add(list.map(entry), replacing: list.flatMap(replaced), now: now) } catch {
                // One refused element fails its whole transaction: find out which, one at a time.
                let keys = lock.withLock { list.map { active.key($0.ban.jail, $0.ban.ip) } }
                if list.count == 1 && list[0].absorbs.isEmpty { refused[keys[0]] = "\(error)"; continue }
                for (p, key) in zip(list, keys) {
                    do { try firewall.add([entry(p)], replacing: replaced(p), now: now) } catch { refused[key] = "\(error)" }
                }
            }
        }
        return refused
    }

    /// 3. In force: in the table, on the expiry heap, counted. Returns the bans made.
    private func putInForce(_ fresh: [PreparedBan], refused: [Key: String]) -> [PreparedBan] {
        lock.withLock {
            var made: [PreparedBan] = []
            made.reserveCapacity(fresh.count)
            for p in fresh {
                let key = active.key(p.ban.jail, p.ban.ip)
                if let why = refused[key] {
                    // Kept for a manual ban waiting for its answer; bounded, since detected bans never ask.
                    if refusals.count >= 1000 { refusals.removeAll() }
                    refusals[key] = why
                    continue
                }
                for a in p.absorbs where active[a.key] != nil {
                    active[a.key] = nil
                    stats.unbansTotal[p.ban.jail, default: 0] += 1
                }
                active[key] = BanTable.Value(bannedAt: p.ban.bannedAt, banTime: p.ban.banTime, banCount: p.ban.banCount, failures: p.ban.failures)
                if let end = p.ban.expiresAt { expiries.push(end, key) }
                stats.bansTotal[p.ban.jail, default: 0] += 1
                made.append(p)
            }
            return made
        }
    }

    // MARK: the store's troubles

    /// Notes a failed store write (logged once per outage; the caller queues the change).
    private func storeFailed(_ error: any Error, now: Double, what: String) {
        let first: Bool = lock.withLock {
            nextStoreRetry = now + BanManager.storeRetryInterval
            if storeProblem == nil { storeProblem = StoreProblem(since: now, error: "\(error)", waiting: 0); return true }
            return false
        }
        if first {
            log.error(
                "\(what) in \(store?.path ?? "the store") failed: \(error). Bans go on in the packet filter and are kept in memory until the store works again (retried every \(Int(BanManager.storeRetryInterval)) s; /health says degraded)"
            )
        }
    }

    static let storeRetryInterval = 5.0

    /// A lifted ban leaves the store, or waits for it.
    private func storeRemove(_ key: Key, jail: String, ip: IPNetwork, now: Double) {
        // A ban never written needs no removal.
        if lock.withLock({ () -> Bool in
            if case .record = unstored[key] { unstored[key] = nil; return true }
            return false
        }) {
            return
        }
        do { try store?.remove([(jail, ip)]) } catch {
            storeFailed(error, now: now, what: "removing the ban of \(ip) in \(jail)")
            lock.withLock { unstored[key] = .remove(jail: jail, ip: ip) }
        }
    }

    /// Writes what the store missed: removals first (a key holds only its latest change), then bans still in force.
    private func writeUnstored(now: Double) {
        guard let store else { return }
        let changes = lock.withLock { unstored }
        var removals: [(jail: String, ip: IPNetwork)] = []
        var records: [StoredBan] = []
        for (_, change) in changes {
            switch change {
            case .remove(let jail, let ip): removals.append((jail, ip))
            case .record(let ban): if ban.isActive(at: now) { records.append(ban) }
            }
        }
        do {
            try store.remove(removals)
            try store.record(records)
        } catch {
            lock.withLock { nextStoreRetry = now + BanManager.storeRetryInterval }
            return
        }
        let since: Double? = lock.withLock {
            for k in changes.keys { unstored[k] = nil }
            guard unstored.isEmpty else { return nil }
            defer { storeProblem = nil }
            return storeProblem?.since
        }
        log.notice(
            "The store works again: \(records.count) ban(s) and \(removals.count) removal(s) made meanwhile are written"
                + (since.map { " (it failed for \(TimeExpression.describe(now - $0)))" } ?? ""))
    }

    /// Bans the packet filter refused: out of the store again, counted, logged.
    private func forget(_ refused: [Key: String], _ bans: [StoredBan], now: Double) {
        var removals: [(jail: String, ip: IPNetwork)] = []
        let keyed: [(Key, StoredBan)] = lock.withLock { bans.map { (active.key($0.jail, $0.ip), $0) } }
        for (key, ban) in keyed where refused[key] != nil {
            removals.append((ban.jail, ban.ip))
            // A backend that refuses everything (its table deleted under it) must not flood the log.
            if removals.count <= 10 {
                log.error("[\(ban.jail)] the packet filter refused the ban of \(ban.ip): \(refused[key]!); it is not in force")
            }
        }
        if removals.count > 10 { log.error("the packet filter refused \(removals.count - 10) more ban(s) of this batch") }
        lock.withLock {
            stats.failedBans += removals.count
            for (key, _) in keyed where refused[key] != nil { unstored[key] = nil }
        }
        do { try store?.remove(removals) } catch {
            // The store is down too: nothing of these was written.
            lock.withLock { for (key, ban) in keyed where refused[key] != nil { unstored[key] = .remove(jail: ban.jail, ip: ban.ip) } }
        }
    }

    private func expire(_ due: [(Key, String, IPNetwork)], now: Double) {
        changing.lock(); defer { changing.unlock() }
        let list = due.map { (jail: $0.1, ip: $0.2) }
        do { try store?.remove(list) } catch {
            storeFailed(error, now: now, what: "removing \(list.count) expired ban(s)")
            lock.withLock { for (k, jail, ip) in due { unstored[k] = .remove(jail: jail, ip: ip) } }
        }
        var byBackend: [ObjectIdentifier: (any Firewall, [(jail: String, ip: IPNetwork)])] = [:]
        lock.lock()
        for (_, jail, ip) in due {
            if let fw = jails[jail]?.firewall { byBackend[ObjectIdentifier(fw), default: (fw, [])].1.append((jail, ip)) }
        }
        lock.unlock()
        for (_, (fw, entries)) in byBackend {
            // The kernel has usually expired them already (their timeout); this also covers a clock mismatch.
            do { try fw.remove(entries) } catch { log.error("removing \(entries.count) expired ban(s) failed: \(error)") }
        }
        lock.lock()
        for (k, jail, _) in due {
            active[k] = nil
            stats.unbansTotal[jail, default: 0] += 1
        }
        lock.unlock()
        for (_, jail, ip) in due { log.notice("[\(jail)] Unban \(ip) (ban time over)") }
        events?.publish(due.map { .unban(jail: $0.1, ip: $0.2, reason: .expired, text: "ban time over") }, now: now)
    }
}

/// A binary min-heap of (end time, key): the next ban to end is found without scanning every ban.
struct ExpiryHeap {
    private var items: [(Double, BanManager.Key)] = []

    var earliest: Double? { items.first?.0 }
    var count: Int { items.count }

    mutating func push(_ t: Double, _ k: BanManager.Key) {
        items.append((t, k))
        var i = items.count - 1
        while i > 0 {
            let parent = (i - 1) / 2
            guard items[i].0 < items[parent].0 else { break }
            items.swapAt(i, parent)
            i = parent
        }
    }

    mutating func popIfDue(_ now: Double) -> (Double, BanManager.Key)? {
        guard let first = items.first, first.0 <= now else { return nil }
        let last = items.removeLast()
        if !items.isEmpty {
            items[0] = last
            var i = 0
            while true {
                let l = 2 * i + 1, r = l + 1
                var m = i
                if l < items.count && items[l].0 < items[m].0 { m = l }
                if r < items.count && items[r].0 < items[m].0 { m = r }
                if m == i { break }
                items.swapAt(i, m)
                i = m
            }
        }
        return first
    }
}
