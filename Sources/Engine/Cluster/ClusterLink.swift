import FoundationEssentials
import Glibc
import Platform

/// This node's link to the fleet: its bans and unbans go to PostgreSQL's shared table, the other nodes' come back
/// and are applied here.
///
/// Outgoing: a subscriber of the event feed (the ban worker hands it each batch: an append under a lock), whose
/// thread writes the changes to the local store's outbox, then to PostgreSQL in one transaction per batch and a
/// `NOTIFY`. Nothing on the ban path waits for the network: when PostgreSQL is down the outbox grows (bounded by
/// `queue`) and is sent on reconnect; a change is sent again only with the same token, which the table refuses
/// twice. Incoming: the thread `LISTEN`s, reads by id what it has not seen (ids are committed in order: see
/// `ClusterSchema.writeLock`) and hands the bans to the ban manager like a detection of its own, with their
/// remaining time, which the database computes (the nodes' clocks may differ). A node that never synchronised
/// loads the bans in force. Bans applied from the fleet carry their origin and are never shared again; only unbans
/// asked for (the API, the CLI) travel, expiries happen on every node by themselves.
public final class ClusterLink: EventSubscriber, @unchecked Sendable {
    // @unchecked, the invariant: `state` is locked; the connection, the outbox and `warnings` belong to the thread
    // alone; the rest is immutable after init.
    public let settings: ClusterSettings
    public var node: String { settings.node }
    public var kinds: Set<FeedEvent.Kind> { [.ban, .unban] }
    private let password: String?
    private let store: BanStore?
    private let log: Logger
    private let bans: BanManager
    private let jail: @Sendable (String) -> JailDefinition?
    private let thread: StoppableThread
    /// Tokens are this run's random prefix and a counter: unique without a random draw per ban.
    private let runToken = String(UInt64.random(in: 0...UInt64.max), radix: 16)

    public struct Peer: Sendable, Equatable {
        public var node: String
        /// When it last announced itself (this host's clock).
        public var lastSeen: Double
        public var version: String
        public var lastID: Int64
    }

    public struct Status: Sendable {
        public var connected = false
        /// When the link came up or went down (this host's clock); nil before the first attempt ended.
        public var since: Double?
        /// Why it is down.
        public var error: String?
        /// The last id of the shared table applied here; nil before the first synchronisation.
        public var lastID: Int64?
        /// Changes waiting to be sent.
        public var queued = 0
        public var sent = 0
        /// Rows of other nodes read.
        public var received = 0
        /// Of those, bans and unbans handed to the ban manager here.
        public var applied = 0
        /// Not applied: a jail not applied or not running here, an ignored or allowlisted address, a ban over.
        public var skipped = 0
        /// Dropped because the queue was full.
        public var dropped = 0
        public var peers: [Peer] = []
    }

    private struct State {
        var incoming: [ClusterChange] = []
        var counter = 0
        var status = Status()
    }
    private let state = Locked(State())

    public init(
        settings: ClusterSettings, store: BanStore?, bans: BanManager, log: Logger, jail: @escaping @Sendable (String) -> JailDefinition?
    ) throws {
        self.settings = settings
        self.store = store
        self.bans = bans
        self.log = log
        self.jail = jail
        password = try settings.readPassword()
        thread = try StoppableThread(name: "portcullis-cluster")
    }

    public var status: Status { state.withLock { $0.status } }

    public func start() throws {
        try thread.start { [self] in run() }
    }

    /// Stops the thread (a query in progress is abandoned); what is waiting stays in the outbox.
    public func stop() { thread.stop() }

    // MARK: the feed's side (its lock held: short)

    public func enqueue(_ batch: EncodedBatch) {
        var made: [ClusterChange] = []
        for e in batch.events {
            guard let jail = e.jail, let ip = e.event.ip, settings.share.contains(jail) else { continue }
            switch e.event.detail {
            case .ban(let bannedAt, let banTime, _, let failures, let reason, _, let origin) where origin == nil:
                made.append(
                    ClusterChange(
                        token: "", kind: .ban, jail: jail, ip: ip, bannedAt: bannedAt,
                        expiresAt: banTime.isPermanent ? nil : bannedAt + banTime.fail2banSeconds, failures: failures, reason: reason))
            case .unban(.request, let text):
                made.append(ClusterChange(token: "", kind: .unban, jail: jail, ip: ip, bannedAt: e.event.time, expiresAt: nil, failures: 0, reason: text))
            default:
                continue
            }
        }
        hand(made)
        thread.wake()
    }

    /// Queues changes for the thread, each with its token (this run's prefix and a counter).
    private func hand(_ changes: [ClusterChange]) {
        guard !changes.isEmpty else { return }
        state.withLock { s in
            var made = changes
            for i in made.indices {
                s.counter += 1
                made[i].token = "\(runToken)-\(s.counter)"
            }
            // Bounded here too: a thread stuck on a dead server must not let memory grow.
            s.status.dropped += s.incoming.append(contentsOf: made, keepingAtMost: settings.queue).count
        }
    }

    // MARK: the thread

    private var warnings = RepeatedWarnings(interval: 600)

    private func run() {
        var outbox: [ClusterChange] = []
        var lastID: Int64?
        do {
            outbox = try store?.clusterOutbox() ?? []
            lastID = try store?.clusterLastID()
        } catch {
            log.error("cluster: reading the outbox from the store failed: \(error)")
        }
        if !outbox.isEmpty { log.notice("cluster: \(outbox.count) change(s) left from before, sent when PostgreSQL answers") }
        state.withLock {
            $0.status.queued = outbox.count
            $0.status.lastID = lastID
        }
        var connection: PostgresConnection?
        var retryAt = 0.0
        var backoff = 1.0
        var heartbeatAt = 0.0
        while !thread.isStopping {
            thread.drainWake()
            takeIncoming(&outbox)
            if connection == nil && Clock.monotonic() >= retryAt {
                do {
                    connection = try open(&lastID, outbox: &outbox)
                    backoff = 1
                    heartbeatAt = 0
                } catch {
                    if thread.isStopping { break }
                    down(error, wasUp: false, queued: outbox.count, retryIn: backoff)
                    retryAt = Clock.monotonic() + backoff
                    backoff = min(backoff * 2, 30)
                }
            }
            if let c = connection {
                do {
                    while !outbox.isEmpty && !thread.isStopping {
                        try send(c, &outbox)
                        takeIncoming(&outbox)
                    }
                    if try c.takeNotifications() > 0 { try catchUp(c, &lastID) }
                    if Clock.monotonic() >= heartbeatAt {
                        try heartbeat(c, lastID: lastID)
                        heartbeatAt = Clock.monotonic() + ClusterLink.heartbeatInterval
                    }
                } catch {
                    if thread.isStopping { break }
                    connection = nil
                    down(error, wasUp: true, queued: outbox.count, retryIn: 1)
                    retryAt = Clock.monotonic() + 1
                    backoff = 2
                }
            }
            // Changes that came while a query ran (its wait took the wake-up): at once, not at the next heartbeat.
            if state.withLock({ !$0.incoming.isEmpty }) { continue }
            var fds = [pollfd(fd: thread.wakeDescriptor, events: Int16(POLLIN), revents: 0)]
            if let c = connection { fds.append(pollfd(fd: c.socket, events: Int16(POLLIN), revents: 0)) }
            let until = connection == nil ? retryAt : heartbeatAt
            let ms = Int32((min(max(0, until - Clock.monotonic()), ClusterLink.heartbeatInterval) * 1000).rounded(.up))
            _ = poll(&fds, nfds_t(fds.count), ms)
        }
        takeIncoming(&outbox)
        if connection != nil {
            connection = nil
            state.withLock { $0.status.connected = false }
        }
    }

    /// Seconds between a node's announcements (`portcullis_nodes`), which also read the peers'.
    static let heartbeatInterval = 15.0
    /// Rows read or written per query.
    static let batchSize = 5000

    /// New changes from the feed: into the store's outbox first (a restart or an outage keeps them), then the queue.
    private func takeIncoming(_ outbox: inout [ClusterChange]) {
        let incoming = state.withLock { s in
            defer { s.incoming = [] }
            return s.incoming
        }
        guard !incoming.isEmpty else { return }
        var stored = incoming
        if let store {
            do { stored = try store.addToClusterOutbox(incoming) } catch {
                log.error("cluster: storing \(incoming.count) change(s) failed: \(error); kept in memory")
            }
        }
        let dropped = outbox.append(contentsOf: stored, keepingAtMost: settings.queue)
        if !dropped.isEmpty {
            do { try store?.removeFromClusterOutbox(dropped.map(\.localID).filter { $0 > 0 }) } catch {
                log.error("cluster: dropping changes from the store failed: \(error)")
            }
            log.warning(
                "cluster: \(dropped.count) change(s) dropped, the oldest: the queue holds \(settings.queue) (queue in [cluster]) and PostgreSQL is not taking them"
            )
        }
        state.withLock {
            $0.status.queued = outbox.count
            $0.status.dropped += dropped.count
        }
    }

    private func down(_ error: any Error, wasUp: Bool, queued: Int, retryIn: Double) {
        let message = "\(error)"
        let now = Clock.now()
        state.withLock { s in
            if s.status.connected || s.status.since == nil || s.status.error != message { s.status.since = now }
            s.status.connected = false
            s.status.error = message
        }
        if wasUp {
            log.error("cluster: lost PostgreSQL (\(message)); local banning goes on, bans are queued (\(queued) now) and sent on reconnect")
        } else {
            warnings.report(
                "cluster: cannot use PostgreSQL: \(message); local banning goes on, bans are queued (\(queued) now); retrying", key: "connect", now: now
            ) { log.error($0) }
        }
    }

    /// Connects, checks the schema, listens, and synchronises: the bans in force for a node that never did (or
    /// whose table was made anew), else what it missed, by id. A node that joins the fleet brings its own bans in
    /// force (they go out with its queue).
    private func open(_ lastID: inout Int64?, outbox: inout [ClusterChange]) throws -> PostgresConnection {
        var parameters: [(String, String)] = [
            // Defaults the connection string may override: a dead server is noticed in seconds, not hours.
            ("connect_timeout", "10"), ("keepalives_idle", "30"), ("keepalives_interval", "10"), ("keepalives_count", "3"),
            ("fallback_application_name", "portcullis \(settings.node)"), ("dbname", settings.conninfo),
        ]
        if let password { parameters.append(("password", password)) }
        let c = try PostgresConnection.connect(parameters, thread: thread, timeout: 15)
        let newest: Int64
        do {
            try c.execute("LISTEN \(ClusterSchema.channel)")
            newest = Int64(try c.query("SELECT coalesce(max(id), 0) FROM portcullis_bans").rows.first?[0] ?? "0") ?? 0
        } catch {
            throw ClusterLink.explained(error)
        }
        if lastID == nil || lastID! > newest {
            // Read before the fleet's bans are applied here (they are stored locally too): what is this node's own.
            let own = lastID == nil ? ownBansInForce(excluding: outbox) : []
            let (loaded, fleet) = try loadInForce(c, upTo: newest)
            let joining = own.filter { !fleet.contains(ClusterLink.key($0.jail, $0.ip)) }
            log.notice(
                "cluster: \(lastID == nil ? "first synchronisation" : "the shared table was made anew (last id \(lastID!), now \(newest))"): \(loaded) ban(s) in force loaded"
                    + (lastID == nil ? ", \(joining.count) of this node's own to share" : ""))
            hand(joining)
            takeIncoming(&outbox)
            lastID = newest
            saveLastID(newest)
        }
        let queued = outbox.count
        let missed = try catchUp(c, &lastID)
        let now = Clock.now()
        warnings.clear(key: "connect", now: now) { _ in }
        state.withLock {
            $0.status.connected = true
            $0.status.since = now
            $0.status.error = nil
        }
        log.notice(
            "cluster: connected to PostgreSQL as node \(settings.node) (last id \(lastID ?? 0), \(missed) change(s) of other nodes caught up, \(queued) queued to send)"
        )
        return c
    }

    /// The schema's troubles, with what to do about them.
    static func explained(_ e: PostgresError) -> PostgresError {
        switch e.sqlState {
        case "42P01":
            PostgresError(
                "the table portcullis_bans does not exist: create it once as the database's owner (`portcullis cluster-schema --role ROLE | psql …`, see docs/cluster.md)",
                sqlState: e.sqlState)
        case "42501":
            PostgresError(
                "\(e.message) (grant the daemons' role what `portcullis cluster-schema --role ROLE` grants, see docs/cluster.md)", sqlState: e.sqlState)
        default: e
        }
    }

    private static let columns = "id, kind, jail, ip::text, origin, failures, reason, extract(epoch FROM expires_at - now())::float8"

    /// The bans in force in this node's store, of the jails it shares, that are not waiting in the outbox already.
    private func ownBansInForce(excluding outbox: [ClusterChange]) -> [ClusterChange] {
        guard let store else { return [] }
        let queued = Set(outbox.map { ClusterLink.key($0.jail, $0.ip) })
        do {
            return try store.activeBanSummaries(now: Clock.now()).compactMap { b in
                guard settings.share.contains(b.jail), !queued.contains(ClusterLink.key(b.jail, b.ip)) else { return nil }
                return ClusterChange(
                    token: "", kind: .ban, jail: b.jail, ip: b.ip, bannedAt: b.bannedAt, expiresAt: b.expiresAt, failures: b.failures,
                    reason: "\(b.failures) failure\(b.failures == 1 ? "" : "s") (banned before this node joined the fleet)")
            }
        } catch {
            log.error("cluster: reading this node's bans in force to share them failed: \(error)")
            return []
        }
    }

    static func key(_ jail: String, _ ip: IPNetwork) -> String { "\(jail) \(ip)" }

    /// Applies the bans in force of the shared table up to `newest`; returns how many were applied, and every
    /// jail and address the table holds in force.
    private func loadInForce(_ c: PostgresConnection, upTo newest: Int64) throws -> (Int, Set<String>) {
        let rows = try c.query(
            """
            SELECT \(ClusterLink.columns) FROM (SELECT DISTINCT ON (jail, ip) * FROM portcullis_bans WHERE id <= $1 ORDER BY jail, ip, id DESC) AS latest
            WHERE kind = 'ban' AND (expires_at IS NULL OR expires_at > now()) ORDER BY id
            """, [String(newest)], timeout: 120)
        let remote = rows.rows.compactMap(Remote.init)
        return (apply(remote, includeOwn: true), Set(remote.map { ClusterLink.key($0.jail, $0.ip) }))
    }

    /// Reads and applies the rows after `lastID`; returns how many were other nodes' (its own it skips: they are
    /// read once more after each of its sends, unless another node's notification came first).
    @discardableResult
    private func catchUp(_ c: PostgresConnection, _ lastID: inout Int64?) throws -> Int {
        var total = 0
        while !thread.isStopping {
            let rows = try c.query(
                "SELECT \(ClusterLink.columns) FROM portcullis_bans WHERE id > $1 ORDER BY id LIMIT \(ClusterLink.batchSize)", [String(lastID ?? 0)])
            guard let last = rows.rows.last, let id = last[0].flatMap({ Int64($0) }) else { break }
            let remote = rows.rows.compactMap(Remote.init)
            apply(remote, includeOwn: false)
            total += remote.count { $0.origin != settings.node }
            lastID = id
            saveLastID(id)
            if rows.count < ClusterLink.batchSize { break }
        }
        return total
    }

    /// Keeps the last id applied in the store (a restart catches up from it). A store that fails (a full disk) is
    /// not PostgreSQL's fault: the link goes on with the id in memory, and a restart reads some rows again (a ban in
    /// force is not made twice).
    private func saveLastID(_ id: Int64) {
        do {
            try store?.setClusterLastID(id)
            warnings.clear(key: "store", now: Clock.now()) { log.notice("cluster: \($0)") }
        } catch {
            warnings.report("storing the last id applied failed: \(error)", key: "store", now: Clock.now()) { log.error("cluster: \($0)") }
        }
        state.withLock { $0.status.lastID = id }
    }

    /// A row of the shared table.
    struct Remote {
        var id: Int64
        var kind: ClusterChange.Kind
        var jail: String
        var ip: IPNetwork
        var origin: String
        var failures: Int
        var reason: String
        /// Seconds left by the database's clock; nil: permanent.
        var remaining: Double?

        init?(_ row: [String?]) {
            guard row.count == 8, let id = row[0].flatMap({ Int64($0) }), let kind = row[1].flatMap(ClusterChange.Kind.init(rawValue:)),
                let jail = row[2], let ip = row[3].flatMap({ IPNetwork($0) }), let origin = row[4]
            else { return nil }
            self.id = id
            self.kind = kind
            self.jail = jail
            self.ip = ip
            self.origin = origin
            failures = row[5].flatMap { Int($0) } ?? 0
            reason = row[6] ?? ""
            remaining = row[7].flatMap { Double($0) }
        }
    }

    /// Hands the other nodes' bans and unbans to the ban manager, in order, and waits until they are applied (the
    /// last id seen is stored after this: a crash in between reads them again, and a ban in force already is not
    /// made twice). Returns how many were applied.
    @discardableResult
    private func apply(_ rows: [Remote], includeOwn: Bool) -> Int {
        var decisions: [BanDecision] = []
        var received = 0
        var applied = 0
        var skipped = 0
        func flush() {
            for d in decisions { bans.submit(d) }
            if !decisions.isEmpty { _ = bans.drain(timeout: 60) }
            decisions = []
        }
        let now = Clock.now()
        for r in rows where includeOwn || r.origin != settings.node {
            received += 1
            guard settings.apply.contains(r.jail) else {
                skipped += 1
                continue
            }
            guard let definition = jail(r.jail) else {
                log.info("cluster: \(r.kind.rawValue) of \(r.ip) in \(r.jail) from node \(r.origin) not applied: no jail \(r.jail) runs here")
                skipped += 1
                continue
            }
            switch r.kind {
            case .ban:
                if let left = r.remaining, left < 1 {
                    skipped += 1
                    continue
                }
                if let why = definition.ignoreList.reason(covering: r.ip) {
                    log.notice("[\(r.jail)] ban of \(r.ip) from node \(r.origin) not applied here: \(why)")
                    skipped += 1
                    continue
                }
                if let entry = bans.allowlist?.entry(protecting: r.ip, jail: r.jail, now: now) {
                    log.notice("[\(r.jail)] ban of \(r.ip) from node \(r.origin) not applied here: protected by \(entry)")
                    skipped += 1
                    continue
                }
                var d = BanDecision(
                    jail: r.jail, ip: r.ip, time: now, failures: r.failures, matches: [],
                    banTimeOverride: r.remaining.map { .seconds($0.rounded(.up)) } ?? .permanent, reason: "\(r.reason) (from node \(r.origin))")
                d.origin = r.origin
                decisions.append(d)
                applied += 1
            case .unban:
                flush()
                do {
                    if try bans.unban(jail: r.jail, ip: r.ip, reason: "from node \(r.origin)", kind: .cluster) { applied += 1 } else { skipped += 1 }
                } catch {
                    log.error("[\(r.jail)] unban of \(r.ip) from node \(r.origin) failed: \(error)")
                    skipped += 1
                }
            }
        }
        flush()
        state.withLock {
            $0.status.received += received
            $0.status.applied += applied
            $0.status.skipped += skipped
        }
        return applied
    }

    /// Writes a batch of the outbox in one transaction (under the write lock: ids in commit order), notifies the
    /// listeners, then forgets the batch locally. A ban that ended meanwhile (a long outage) is not sent.
    private func send(_ c: PostgresConnection, _ outbox: inout [ClusterChange]) throws {
        let batch = outbox.prefix(ClusterLink.batchSize)
        let now = Clock.now()
        var columns = [[String?]](repeating: [], count: 8)
        for ch in batch {
            var remaining: Double?
            if ch.kind == .ban, let end = ch.expiresAt {
                remaining = end - now
                if remaining! < 1 { continue }
            }
            let values: [String?] = [
                ch.kind.rawValue, ch.jail, ch.ip.description, ch.token, String(ch.bannedAt), remaining.map { String($0) }, String(ch.failures), ch.reason,
            ]
            for i in 0..<8 { columns[i].append(values[i]) }
        }
        if !columns[0].isEmpty {
            try c.execute("BEGIN; SELECT pg_advisory_xact_lock(\(ClusterSchema.writeLock))")
            try c.query(
                """
                INSERT INTO portcullis_bans (kind, jail, ip, origin, token, banned_at, expires_at, failures, reason)
                SELECT k, j, i::cidr, $1, t, to_timestamp(b), CASE WHEN r IS NULL THEN NULL ELSE now() + make_interval(secs => r) END, f, re
                FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::float8[], $7::float8[], $8::int[], $9::text[]) AS u(k, j, i, t, b, r, f, re)
                ON CONFLICT (origin, token) DO NOTHING
                """, [settings.node] + columns.map { ClusterLink.arrayLiteral($0) })
            try c.execute("NOTIFY \(ClusterSchema.channel); COMMIT")
        }
        let ids = batch.map(\.localID).filter { $0 > 0 }
        outbox.removeFirst(batch.count)
        do { try store?.removeFromClusterOutbox(ids) } catch {
            // Sent again after a restart: the table refuses a token twice.
            log.error("cluster: removing \(ids.count) sent change(s) from the store failed: \(error)")
        }
        let sent = columns[0].count
        state.withLock {
            $0.status.sent += sent
            $0.status.queued = outbox.count
        }
    }

    /// A PostgreSQL array literal of text values (NULL for nil), for one parameter.
    static func arrayLiteral(_ values: [String?]) -> String {
        var out = "{"
        for (i, v) in values.enumerated() {
            if i > 0 { out += "," }
            guard let v else {
                out += "NULL"
                continue
            }
            out += "\""
            for ch in v.unicodeScalars {
                if ch == "\"" || ch == "\\" { out += "\\" }
                out.unicodeScalars.append(ch)
            }
            out += "\""
        }
        return out + "}"
    }

    /// Announces this node and reads the others' announcements.
    private func heartbeat(_ c: PostgresConnection, lastID: Int64?) throws {
        try c.query(
            """
            INSERT INTO portcullis_nodes (node, last_seen, version, last_id) VALUES ($1, now(), $2, $3)
            ON CONFLICT (node) DO UPDATE SET last_seen = now(), version = excluded.version, last_id = excluded.last_id
            """, [settings.node, PortcullisVersion.string, String(lastID ?? 0)])
        let rows = try c.query("SELECT node, extract(epoch FROM now() - last_seen)::float8, version, last_id FROM portcullis_nodes ORDER BY node")
        let now = Clock.now()
        let peers = rows.rows.compactMap { r -> Peer? in
            guard let node = r[0], node != settings.node else { return nil }
            return Peer(node: node, lastSeen: now - (r[1].flatMap { Double($0) } ?? 0), version: r[2] ?? "", lastID: r[3].flatMap { Int64($0) } ?? 0)
        }
        state.withLock { $0.status.peers = peers }
    }
}
