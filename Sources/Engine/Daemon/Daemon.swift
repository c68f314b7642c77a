import FoundationEssentials
import Glibc
import Platform

/// The long-running part of Portcullis: every enabled jail watching its logs, ban decisions applied by the ban
/// manager (store first, then the packet filter), log positions kept so that a restart neither re-reads nor
/// misses lines.
public final class Daemon: @unchecked Sendable {
    // @unchecked: `jails`, `store`, `nftables` and `settings` change only in start/reload/stop/periodic, which run
    // one at a time (on the serve command's control queue, which also runs the API's reloads); other threads read
    // the jails through `snapshot` and the ban manager through `manager`, both locked.
    public let configPath: String
    public let log: Logger
    private var jails: [String: JailRuntime] = [:]
    private let snapshot = Locked<[String: JailRuntime]>([:])
    public private(set) var settings = Settings()
    public private(set) var store: BanStore?
    /// Set once by `start`; read by the API's event-loop threads, hence locked.
    private let manager = Locked<BanManager?>(nil)
    public var banManager: BanManager! { manager.withLock { $0 } }
    private var nftables: NftablesFirewall?
    private let dryRun = DryRunFirewall()
    private let openNftables: () throws -> NftablesFirewall
    private var lastPurge = 0.0
    public let startedAt = Clock.now()
    /// Bans, unbans, failures and reloads as they happen (`GET /events`).
    public let events: EventFeed
    /// Each running jail's webhooks (changed with the jails; read by the API's metrics, hence locked).
    private let hooks = Locked<[String: [WebhookDispatcher]]>([:])
    public var webhooks: [WebhookDispatcher] { hooks.withLock { $0.values.flatMap { $0 } }.sorted { $0.name < $1.name } }
    /// The link to the fleet (`[cluster]`), nil when the node is on its own (read by the API, hence locked).
    private let link = Locked<ClusterLink?>(nil)
    public var cluster: ClusterLink? { link.withLock { $0 } }

    public struct StartError: Error, CustomStringConvertible {
        public let message: String
        public var description: String { message }
    }

    public init(configPath: String, log: Logger, openNftables: @escaping () throws -> NftablesFirewall = { try NftablesFirewall() }) {
        self.configPath = configPath
        self.log = log
        self.openNftables = openNftables
        events = EventFeed(startedAt: startedAt)
    }

    /// Why the daemon is not all it should be, for `/health`: jails left out at the last (re)load, a failed
    /// reload, the store failing.
    private let configTrouble = Locked<[String]>([])
    public var problems: [String] {
        var list = configTrouble.withLock { $0 }
        if let t = banManager?.storeTrouble {
            list.append(
                "the database has failed for \(TimeExpression.describe(max(1, Clock.now() - t.since))) (\(t.error)): \(t.waiting) ban change(s) kept in memory until it works again"
            )
        }
        if let s = cluster?.status, !s.connected, let since = s.since {
            list.append(
                "cluster: not connected to PostgreSQL for \(TimeExpression.describe(max(1, Clock.now() - since))) (\(s.error ?? "connecting")): \(s.queued) change(s) queued, local banning goes on"
            )
        }
        return list
    }

    /// The jails whose bans are in nftables (not dry-run), for comparing the kernel's sets with the store.
    public var nftablesJails: [String] { runningJails.filter { !$0.definition.dryRun }.map(\.name) }

    public var runningJails: [JailRuntime] { snapshot.withLock { Array($0.values) }.sorted { $0.name < $1.name } }
    public func runningJail(named name: String) -> JailRuntime? { snapshot.withLock { $0[name] } }

    private func report(_ d: Diagnostic) {
        switch d.severity {
        case .error: log.error(d.text)
        case .warning: log.warning(d.text)
        case .note: log.info(d.text)
        }
    }

    /// The ban-manager view of the jails: backend, rules, ban-time policy. Jails that cannot be set up are
    /// reported and left out.
    private func setups(for definitions: [JailDefinition], troubles: inout [String]) throws -> [BanManager.JailSetup] {
        var result: [BanManager.JailSetup] = []
        for d in definitions {
            let (rules, warning) = JailRules.forJail(d)
            let policy: BanTimePolicy
            do { policy = try BanTimePolicy(base: d.banTime, increment: d.increment) } catch {
                log.error("[\(d.name)] jail not started: \(error.message)")
                troubles.append("jail '\(d.name)' not started: \(error.message)")
                continue
            }
            let firewall: any Firewall
            if d.dryRun {
                firewall = dryRun
            } else {
                if let w = warning { log.warning("[\(d.name)] \(w)") }
                for a in d.actions
                where !a.name.isEmpty && a.name.lowercased() != d.banAction.lowercased() && a.name.lowercased() != WebhookSpec.actionName {
                    log.warning("[\(d.name)] action '\(a.name)' is not supported by Portcullis and is ignored")
                }
                if nftables == nil { nftables = try openNftables() }
                firewall = nftables!
            }
            result.append(BanManager.JailSetup(definition: d, policy: policy, firewall: firewall, rules: rules))
        }
        return result
    }

    /// Installs the layout for `setups`; when the packet filter refuses it, finds the jails it refuses (one more
    /// at a time) and leaves them out, so that one bad jail does not stop the others. Returns the installed ones.
    /// A refusal of everything (no CAP_NET_ADMIN) is thrown as it is.
    private func install(_ setups: [BanManager.JailSetup], on manager: BanManager, troubles: inout [String]) throws -> [BanManager.JailSetup] {
        do {
            try manager.install(setups)
            return setups
        } catch let error as NftablesError where error.isPermissionDenied || error.isMissingNfTables {
            throw error
        } catch {
            guard setups.count > 1 else { throw error }
            var good: [BanManager.JailSetup] = []
            for s in setups {
                do {
                    try manager.install(good + [s])
                    good.append(s)
                } catch {
                    log.error("[\(s.definition.name)] jail not started: the packet filter refused its layout: \(error)")
                    troubles.append("jail '\(s.definition.name)' not started: the packet filter refused its layout: \(error)")
                }
            }
            guard !good.isEmpty else { throw error }
            return good
        }
    }

    /// Reads the configuration, restores the bans in force into the packet filter, and starts every enabled
    /// jail. Throws when the packet filter cannot be set up (no CAP_NET_ADMIN, no nf_tables) or no jail can run.
    public func start() throws {
        let config = LoadedConfig.load(configPath)
        settings = config.settings
        log.setLevel(config.settings.logLevel)
        for d in config.diagnostics { report(d) }
        var troubles = config.diagnostics.filter { $0.severity == .error }.map(\.text)
        defer { configTrouble.withLock { $0 = troubles } }
        guard !config.jails.isEmpty else {
            throw StartError(message: "no jail could start (enable one with \"enabled = true\" in jail.d/*.local; `portcullis check` shows the problems)")
        }
        store = try openStore(settings)
        if let store { try store.purge(now: Clock.now(), age: settings.dbPurgeAge) }
        lastPurge = Clock.now()
        let allowlist: Allowlist
        do { allowlist = try Allowlist(store: store) } catch {
            throw StartError(message: "cannot read the allowlist from \(store?.path ?? "the store"): \(error)")
        }
        let banManager = BanManager(store: store, log: log, allowlist: allowlist, events: events)
        manager.withLock { $0 = banManager }
        var setups = try setups(for: config.jails, troubles: &troubles)
        guard !setups.isEmpty else { throw StartError(message: "no jail could start") }
        try banManager.start(setups) { [self] in setups = try install($0, on: banManager, troubles: &troubles) }
        // The link subscribes before the jails read (a backlog's bans are shared too) and starts, applying the
        // other nodes' bans, once they run.
        let cluster = makeCluster(settings.cluster, troubles: &troubles)
        for s in setups { if let problem = startJail(s.definition) { troubles.append(problem) } }
        forgetRemovedWebhooks()
        guard !jails.isEmpty else {
            stopCluster()
            throw StartError(message: "no jail could start")
        }
        if let cluster { startCluster(cluster, troubles: &troubles) }
        let backend = nftables != nil ? "nftables table inet \(NftablesFirewall.table)" : "dry-run only"
        log.notice(
            "Portcullis \(PortcullisVersion.string) started with \(jails.count) jail(s): \(jails.keys.sorted().joined(separator: ", ")); \(backend); store \(store?.path ?? "none")"
        )
    }

    private func openStore(_ s: Settings) throws -> BanStore? {
        let file = s.dbFile.trimmingWhitespace()
        if file.isEmpty || file.lowercased() == "none" {
            log.warning("dbfile = \(file.isEmpty ? "(empty)" : file): bans are not persisted across restarts")
            return nil
        }
        do {
            return try BanStore(path: file)
        } catch {
            throw StartError(message: "cannot open the database \(file) (dbfile in \(s.source ?? "portcullis").conf): \(error)")
        }
    }

    /// Deliveries queued for webhooks the configuration no longer has are dropped, and said so.
    private func forgetRemovedWebhooks() {
        let kept = Set(webhooks.map(\.hookKey))
        do {
            for (hook, n) in try store?.dropDeliveries(keeping: kept) ?? [:] {
                let jail = hook.prefix { $0 != " " }
                log.warning("[\(jail)] \(n) webhook delivery(ies) dropped: their webhook is no longer configured")
            }
        } catch {
            log.error("dropping the deliveries of removed webhooks failed: \(error)")
        }
    }

    /// The link to the fleet when `[cluster]` asks for one, subscribed to the feed (it collects this node's bans
    /// from now on) but not started; nil, with the problem noted, when it cannot be made (local banning goes on
    /// without it).
    private func makeCluster(_ c: ClusterSettings, troubles: inout [String]) -> ClusterLink? {
        guard c.enabled else { return nil }
        do {
            let l = try ClusterLink(settings: c, store: store, bans: banManager, log: log) { [snapshot] name in
                snapshot.withLock { $0[name]?.definition }
            }
            _ = events.subscribe(l, after: nil)
            link.withLock { $0 = l }
            return l
        } catch {
            log.error("cluster: not started: \(error); this node bans on its own")
            troubles.append("cluster not started: \(error)")
            return nil
        }
    }

    /// Starts the link's thread: it connects, sends what it collected and applies the other nodes' bans.
    private func startCluster(_ l: ClusterLink, troubles: inout [String]) {
        do {
            try l.start()
            log.info("cluster: node \(l.node), sharing \(l.settings.share), applying \(l.settings.apply)")
        } catch {
            stopCluster()
            log.error("cluster: not started: \(error); this node bans on its own")
            troubles.append("cluster not started: \(error)")
        }
    }

    private func stopCluster() {
        guard
            let l = link.withLock({ l -> ClusterLink? in
                defer { l = nil }
                return l
            })
        else { return }
        events.unsubscribe(l)
        l.stop()
    }

    /// Returns the problem when the jail could not start.
    @discardableResult
    private func startJail(_ definition: JailDefinition) -> String? {
        do {
            let manager = banManager!
            let runtime = try JailRuntime(definition, log: log, allowlist: manager.allowlist, events: events) { decision in manager.submit(decision) }
            if let store {
                let logger = log
                runtime.prepareFollower = { follower in
                    do {
                        if let p = try store.position(jail: definition.name, path: follower.path) {
                            follower.resume(at: p.offset, firstLine: p.firstLine)
                        }
                    } catch {
                        logger.warning("[\(definition.name)] cannot read the saved position of \(follower.path): \(error)")
                    }
                }
            }
            // Its webhooks first: the jail's first ban may come as soon as it reads.
            var dispatchers: [WebhookDispatcher] = []
            do {
                for spec in definition.webhooks {
                    let d = try WebhookDispatcher(spec: spec, jail: definition.name, store: store, log: log)
                    try d.start()
                    dispatchers.append(d)
                    _ = events.subscribe(d, after: nil)
                }
            } catch {
                for d in dispatchers {
                    events.unsubscribe(d)
                    d.stop()
                }
                throw error
            }
            hooks.withLock { $0[definition.name] = dispatchers }
            runtime.start()
            jails[definition.name] = runtime
            snapshot.withLock { $0[definition.name] = runtime }
            log.info(
                "[\(definition.name)] Jail started: \(definition.logPaths.map(\.pattern).joined(separator: ", ")), maxretry \(definition.maxRetry), findtime \(TimeExpression.describe(definition.findTime)), bantime \(definition.banTime), \(definition.backend.rawValue)"
            )
        } catch {
            log.error("[\(definition.name)] jail not started: \(error)")
            return "jail '\(definition.name)' not started: \(error)"
        }
        return nil
    }

    private func stopJail(_ name: String) {
        for d in hooks.withLock({ $0.removeValue(forKey: name) ?? [] }) {
            events.unsubscribe(d)
            d.stop()
        }
        guard let runtime = jails[name] else { return }
        let positions = runtime.stopAndCollectPositions()
        do { try store?.savePositions(positions, now: Clock.now()) } catch { log.error("[\(name)] saving log positions failed: \(error)") }
        jails[name] = nil
        snapshot.withLock { $0[name] = nil }
    }

    /// Work done every few seconds (on the serve command's control queue, like every change of this state): log
    /// positions to the store, memory handed back, the hourly purge.
    public func periodic() {
        let now = Clock.now()
        var positions: [LogPosition] = []
        for runtime in jails.values { positions += runtime.positions }
        do { try store?.savePositions(positions, now: now) } catch { log.error("saving log positions failed: \(error)") }
        // Bursts (a ban storm, a long backlog) leave memory in SQLite's cache and malloc's free lists: hand it back.
        store?.releaseMemory()
        Allocator.returnFreeMemory()
        do {
            for e in try banManager?.allowlist?.removeExpired(now: now) ?? [] {
                log.notice("Allowlist entry \(e.ip) expired (\(e.jail.map { "jail \($0)" } ?? "every jail"))")
            }
        } catch {
            log.error("removing expired allowlist entries failed: \(error)")
        }
        if now - lastPurge > 3600 {
            lastPurge = now
            do { try store?.purge(now: now, age: settings.dbPurgeAge) } catch { log.error("purging the database failed: \(error)") }
        }
    }

    /// Stops every jail, applies what is pending, saves positions, removes the packet-filter layout (as fail2ban
    /// does on stop; the bans come back from the store at the next start).
    public func stop() {
        stopCluster()
        for name in Array(jails.keys) {
            stopJail(name)
            log.info("[\(name)] Jail stopped")
        }
        banManager?.stop(removeLayout: true)
        store?.close()
    }

    /// What a reload did: the jails running after it, and the errors met (jails left out, a failed rebuild).
    public struct ReloadSummary: Sendable {
        public var jails: [String]
        public var errors: [String]
    }

    /// Re-reads the configuration: jails that disappeared stop, new ones start, changed ones restart, and the
    /// packet filter is rebuilt at once with every ban in force. Positions and bans are kept.
    @discardableResult
    public func reload() -> ReloadSummary {
        let config = LoadedConfig.load(configPath)
        var errors: [String] = []
        for d in config.diagnostics {
            report(d)
            if d.severity == .error { errors.append(d.text) }
        }
        // The new layout first: when nothing of it can be installed, the running jails and the packet filter
        // stay as they were.
        var troubles = errors
        let setups: [BanManager.JailSetup]
        do {
            let wanted = try self.setups(for: config.jails, troubles: &troubles)
            guard !wanted.isEmpty else { throw StartError(message: "no jail of the new configuration can start") }
            setups = try install(wanted, on: banManager, troubles: &troubles)
        } catch {
            log.error("reload failed, the previous configuration keeps running: \(error)")
            errors.append("reload failed, the previous configuration keeps running: \(error)")
            configTrouble.withLock { $0 = troubles + ["the last reload failed, the previous configuration keeps running: \(error)"] }
            events.publish([.reload(jails: jails.keys.sorted(), errors: errors)])
            return ReloadSummary(jails: jails.keys.sorted(), errors: errors)
        }
        log.setLevel(config.settings.logLevel)
        settings = config.settings
        let wanted = Set(setups.map(\.definition.name))
        var dropped: [EventFeed.Publishable] = []
        for name in Array(jails.keys) {
            stopJail(name)
            if !wanted.contains(name) {
                log.info("[\(name)] Jail stopped (no longer enabled)")
                // Out of the packet filter with the jail's layout; the store keeps them for the jail's return.
                for ip in banManager.bannedAddresses(jail: name) {
                    dropped.append(.unban(jail: name, ip: ip, reason: .reload, text: "the jail was stopped by a reload"))
                }
            }
        }
        events.publish(dropped)
        for s in setups { if let problem = startJail(s.definition) { troubles.append(problem) } }
        forgetRemovedWebhooks()
        if cluster?.settings != settings.cluster {
            stopCluster()
            if let l = makeCluster(settings.cluster, troubles: &troubles) { startCluster(l, troubles: &troubles) }
        }
        errors = troubles
        configTrouble.withLock { $0 = troubles }
        log.notice("Configuration reloaded: \(jails.count) jail(s)")
        events.publish([.reload(jails: jails.keys.sorted(), errors: errors)])
        return ReloadSummary(jails: jails.keys.sorted(), errors: errors)
    }
}
