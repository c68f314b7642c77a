import FoundationEssentials
import Glibc
import Platform

/// A ban as kept in the store.
public struct StoredBan: TimedBan, Sendable, Equatable {
    public var jail: String
    /// An address or a network.
    public var ip: IPNetwork
    public var bannedAt: Double
    public var banTime: BanTime
    /// How many times this address was banned in this jail (1 for the first ban).
    public var banCount: Int
    public var failures: Int
    public var matches: [String]

    public init(jail: String, ip: IPNetwork, bannedAt: Double, banTime: BanTime, banCount: Int, failures: Int, matches: [String]) {
        self.jail = jail
        self.ip = ip
        self.bannedAt = bannedAt
        self.banTime = banTime
        self.banCount = banCount
        self.failures = failures
        self.matches = matches
    }

}

/// Where a log file was read up to: the file is recognised by its first line's fingerprint (`LogFingerprint`).
public struct LogPosition: Sendable, Equatable {
    public var jail: String
    public var path: String
    /// `LogFingerprint.of(first line)`: never the line itself.
    public var firstLine: [UInt8]
    public var offset: Int
}

/// Portcullis' SQLite database: active bans, ban history (for `bantime.increment`), log positions and the runtime
/// allowlist.
/// WAL mode with `synchronous = NORMAL`: a committed transaction survives the process being killed at any moment
/// (only a power loss may take the last ones). Thread-safe: calls are serialised.
public final class BanStore: @unchecked Sendable {
    // @unchecked: the connection is only used while `lock` is held (SQLite is opened NOMUTEX: serialised here).
    private var db: SQLiteDatabase?
    private let lock = Lock()
    public let path: String

    /// Schema versions, applied in order; `PRAGMA user_version` says how many have run.
    static let migrations: [String] = [
        """
        CREATE TABLE bans (
            jail TEXT NOT NULL,
            ip TEXT NOT NULL,
            banned_at REAL NOT NULL,
            ban_time REAL NOT NULL,
            ban_count INTEGER NOT NULL,
            failures INTEGER NOT NULL DEFAULT 0,
            matches TEXT NOT NULL DEFAULT '',
            PRIMARY KEY (jail, ip)
        ) WITHOUT ROWID;
        CREATE TABLE ban_history (
            ip TEXT NOT NULL,
            jail TEXT NOT NULL,
            ban_count INTEGER NOT NULL,
            last_banned_at REAL NOT NULL,
            last_ban_time REAL NOT NULL,
            PRIMARY KEY (ip, jail)
        ) WITHOUT ROWID;
        CREATE TABLE log_positions (
            jail TEXT NOT NULL,
            path TEXT NOT NULL,
            first_line BLOB NOT NULL,
            offset INTEGER NOT NULL,
            updated_at REAL NOT NULL,
            PRIMARY KEY (jail, path)
        );
        """,
        // The runtime allowlist: jail '' is every jail; expires_at NULL never.
        """
        CREATE TABLE allowlist (
            ip TEXT NOT NULL,
            jail TEXT NOT NULL,
            added_at REAL NOT NULL,
            expires_at REAL,
            comment TEXT NOT NULL DEFAULT '',
            PRIMARY KEY (ip, jail)
        ) WITHOUT ROWID;
        """,
        // Webhook deliveries not made yet (they survive a restart): `hook` is the jail and the URL.
        """
        CREATE TABLE webhook_deliveries (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            hook TEXT NOT NULL,
            event TEXT NOT NULL,
            body BLOB NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0,
            next_at REAL NOT NULL DEFAULT 0
        );
        CREATE INDEX webhook_deliveries_by_hook ON webhook_deliveries (hook, id);
        """,
        // The fleet (`[cluster]`): bans and unbans waiting to be sent to PostgreSQL (they survive a restart and an
        // outage), and what this node has seen of the shared table (`last_id`).
        """
        CREATE TABLE cluster_outbox (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            token TEXT NOT NULL,
            kind TEXT NOT NULL,
            jail TEXT NOT NULL,
            ip TEXT NOT NULL,
            banned_at REAL NOT NULL,
            expires_at REAL,
            failures INTEGER NOT NULL,
            reason TEXT NOT NULL
        );
        CREATE TABLE cluster_state (
            key TEXT PRIMARY KEY,
            value TEXT NOT NULL
        ) WITHOUT ROWID;
        """,
    ]

    public init(path: String) throws {
        self.path = path
        let dir = Path.directory(of: path)
        if !dir.isEmpty && !FileManager.default.fileExists(atPath: dir) {
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        }
        // The database holds matched log lines: readable by root alone. SQLite gives its -wal and -shm files the
        // database file's mode, so the file is made (or narrowed) before SQLite opens it.
        if path != ":memory:" && !path.hasPrefix("file:") { try BanStore.makePrivate(path) }
        let database = try SQLiteDatabase(path: path)
        try database.execute("PRAGMA journal_mode = WAL")
        try database.execute("PRAGMA synchronous = NORMAL")
        try database.execute("PRAGMA foreign_keys = ON")
        // Room for a storm's worth of pages in one transaction (4 MiB).
        try database.execute("PRAGMA cache_size = -4096")
        let version = database.userVersion
        guard version <= BanStore.migrations.count else {
            throw SQLiteError(
                resultCode: 0, message: "\(path) has schema version \(version), newer than this Portcullis knows (\(BanStore.migrations.count))", sql: nil)
        }
        for (i, sql) in BanStore.migrations.enumerated() where i >= version {
            try database.transaction {
                try database.execute(sql)
                try database.execute("PRAGMA user_version = \(i + 1)")
            }
        }
        // Not fatal: a store that cannot be rewritten now (a full disk) still opens; `LogFollower.resume` also
        // recognises a line stored whole.
        try? BanStore.fingerprintLegacyPositions(database)
        db = database
    }

    /// Rows of older versions hold a log's first line itself (which may be a secret, when a log path was made a
    /// symlink to one): they get its fingerprint instead, in place, so that their positions stay usable.
    static func fingerprintLegacyPositions(_ db: SQLiteDatabase) throws {
        let rows = try db.prepare("SELECT jail, path, first_line FROM log_positions").rows()
        let legacy = rows.filter { !LogFingerprint.isFingerprint($0.blob(2)) }
        guard !legacy.isEmpty else { return }
        try db.transaction {
            let update = try db.prepare("UPDATE log_positions SET first_line = ? WHERE jail = ? AND path = ?")
            for r in legacy { try update.run([.blob(LogFingerprint.of(r.blob(2))), .text(r.text(0)), .text(r.text(1))]) }
        }
        // The lines are gone from the rows; VACUUM takes them out of the free pages too.
        try? db.execute("VACUUM")
    }

    /// Creates `path` with mode 0600, or takes group and other permissions away from an existing database.
    static func makePrivate(_ path: String) throws(SQLiteError) {
        // A dbfile that is a symlink (to a volume) is followed, as SQLite follows it.
        let database: FileDescriptor
        do { database = try FileDescriptor.open(path, O_RDWR | O_CREAT, mode: 0o600) } catch {
            throw SQLiteError(resultCode: 0, message: "cannot open \(path): \(error.message)", sql: nil)
        }
        var st = stat()
        if fstat(database.rawValue, &st) == 0 && st.st_mode & 0o077 != 0 { _ = fchmod(database.rawValue, st.st_mode & 0o700) }
        for suffix in ["-wal", "-shm"] {
            guard let side = try? OwnedFile.open(path + suffix, O_RDWR | O_NOFOLLOW) else { continue }
            if fstat(side.rawValue, &st) == 0 && st.st_mode & 0o077 != 0 { _ = fchmod(side.rawValue, st.st_mode & 0o700) }
        }
    }

    public var schemaVersion: Int { lock.withLock { db?.userVersion ?? 0 } }

    /// Hands SQLite's unused page-cache memory back (after a storm the cache holds megabytes it will not need).
    public func releaseMemory() {
        lock.withLock { db?.releaseMemory() }
    }

    /// Closes the database (further calls fail).
    public func close() { lock.withLock { db = nil } }

    func withDB<T>(_ body: (SQLiteDatabase) throws -> T) throws -> T {
        try lock.withLock {
            guard let database = db else { throw SQLiteError(resultCode: 0, message: "the database is closed", sql: nil) }
            return try body(database)
        }
    }

    // MARK: bans

    /// Bans in force at `now`, oldest first.
    public func activeBans(now: Double) throws -> [StoredBan] {
        try withDB { db in
            try db.prepare(
                "SELECT jail, ip, banned_at, ban_time, ban_count, failures, matches FROM bans WHERE ban_time < 0 OR banned_at + ban_time > ? ORDER BY banned_at, jail, ip"
            )
            .rows([.double(now)]).compactMap(BanStore.ban)
        }
    }

    /// Bans in force, without their matched lines: what a restart needs, read without building rows.
    public func activeBanSummaries(now: Double) throws -> [StoredBan] {
        try withDB { db in
            let s = try db.prepare("SELECT jail, ip, banned_at, ban_time, ban_count, failures FROM bans WHERE ban_time < 0 OR banned_at + ban_time > ?")
            try s.bind([.double(now)])
            var result: [StoredBan] = []
            var jailNames: [String: String] = [:]
            while try s.step() {
                guard let ip = s.ipNetwork(1) else { continue }
                let rawJail = s.text(0)
                // Jail names repeat: share one String per name.
                let jail =
                    jailNames[rawJail]
                    ?? {
                        jailNames[rawJail] = rawJail; return rawJail
                    }()
                result.append(
                    StoredBan(
                        jail: jail, ip: ip, bannedAt: s.double(2), banTime: BanTime(fail2banSeconds: s.double(3)), banCount: s.int(4),
                        failures: s.int(5), matches: []))
            }
            return result
        }
    }

    public func ban(jail: String, ip: IPNetwork) throws -> StoredBan? {
        try withDB { db in
            try db.prepare("SELECT jail, ip, banned_at, ban_time, ban_count, failures, matches FROM bans WHERE jail = ? AND ip = ?")
                .rows([.text(jail), .text(ip.description)]).compactMap(BanStore.ban).first
        }
    }

    static func ban(_ r: Statement.Row) -> StoredBan? {
        guard let ip = IPNetwork(r.text(1)) else { return nil }
        let matches = r.text(6)
        return StoredBan(
            jail: r.text(0), ip: ip, bannedAt: r.double(2), banTime: BanTime(fail2banSeconds: r.double(3)), banCount: r.int(4),
            failures: r.int(5), matches: matches.isEmpty ? [] : matches.components(separatedBy: "\n"))
    }

    /// Previous bans of `ip` (in `jail`, or in every jail) since `since`: fail2ban's ban count for
    /// `bantime.increment`.
    public func previousBanCount(ip: IPNetwork, jail: String?, since: Double) throws -> Int {
        try withDB { db in
            if let jail {
                return try db.prepare("SELECT ban_count FROM ban_history WHERE ip = ? AND jail = ? AND last_banned_at > ?")
                    .firstInt([.text(ip.description), .text(jail), .double(since)]) ?? 0
            }
            return try db.prepare("SELECT COALESCE(SUM(ban_count), 0) FROM ban_history WHERE ip = ? AND last_banned_at > ?")
                .firstInt([.text(ip.description), .double(since)]) ?? 0
        }
    }

    /// Records new bans (and their history) in one transaction. When this returns, the bans are on disk.
    /// Each ban's `banCount` is set from the history (previous bans in its jail, plus this one); the bans are
    /// returned with it.
    @discardableResult
    public func record(_ bans: [StoredBan]) throws -> [StoredBan] {
        guard !bans.isEmpty else { return [] }
        return try withDB { db in
            try db.transaction {
                let insert = try db.prepare(
                    "INSERT OR REPLACE INTO bans (jail, ip, banned_at, ban_time, ban_count, failures, matches) VALUES (?, ?, ?, ?, ?, ?, ?)")
                let history = try db.prepare(
                    """
                    INSERT INTO ban_history (ip, jail, ban_count, last_banned_at, last_ban_time) VALUES (?, ?, 1, ?, ?)
                    ON CONFLICT (ip, jail) DO UPDATE SET ban_count = ban_count + 1,
                        last_banned_at = excluded.last_banned_at, last_ban_time = excluded.last_ban_time
                    RETURNING ban_count
                    """)
                var result: [StoredBan] = []
                result.reserveCapacity(bans.count)
                for var b in bans {
                    let ip = b.ip.description
                    history.reset()
                    try history.bind(1, ip); try history.bind(2, b.jail); try history.bind(3, b.bannedAt); try history.bind(4, b.banTime.fail2banSeconds)
                    b.banCount = try history.step() ? history.int(0) : 1
                    // Finish the RETURNING statement before the next one runs.
                    while try history.step() {}
                    insert.reset()
                    try insert.bind(1, b.jail); try insert.bind(2, ip); try insert.bind(3, b.bannedAt); try insert.bind(4, b.banTime.fail2banSeconds)
                    try insert.bind(5, b.banCount); try insert.bind(6, b.failures); try insert.bind(7, b.matches.joined(separator: "\n"))
                    while try insert.step() {}
                    result.append(b)
                }
                return result
            }
        }
    }

    // MARK: webhook deliveries

    public struct PendingDelivery: Sendable, Equatable {
        public var id: Int
        public var event: String
        public var body: [UInt8]
        public var attempts: Int
        public var nextAt: Double
    }

    /// Stores new deliveries of a webhook (one transaction); returns their ids, in order.
    public func addDeliveries(hook: String, _ items: [(event: String, body: [UInt8])]) throws -> [Int] {
        guard !items.isEmpty else { return [] }
        return try withDB { db in
            try db.transaction {
                let insert = try db.prepare("INSERT INTO webhook_deliveries (hook, event, body) VALUES (?, ?, ?) RETURNING id")
                var ids: [Int] = []
                for item in items {
                    let rows = try insert.rows([.text(hook), .text(item.event), .blob(item.body)])
                    ids.append(rows.first?.int(0) ?? 0)
                }
                return ids
            }
        }
    }

    public func pendingDeliveries(hook: String) throws -> [PendingDelivery] {
        try withDB { db in
            try db.prepare("SELECT id, event, body, attempts, next_at FROM webhook_deliveries WHERE hook = ? ORDER BY id").rows([.text(hook)]).map {
                PendingDelivery(id: $0.int(0), event: $0.text(1), body: $0.blob(2), attempts: $0.int(3), nextAt: $0.double(4))
            }
        }
    }

    public func updateDelivery(id: Int, attempts: Int, nextAt: Double) throws {
        try withDB { db in
            try db.prepare("UPDATE webhook_deliveries SET attempts = ?, next_at = ? WHERE id = ?").run([.int(attempts), .double(nextAt), .int(id)])
        }
    }

    public func removeDeliveries(_ ids: [Int]) throws {
        guard !ids.isEmpty else { return }
        try withDB { db in
            try db.transaction {
                let delete = try db.prepare("DELETE FROM webhook_deliveries WHERE id = ?")
                for id in ids { try delete.run([.int(id)]) }
            }
        }
    }

    /// Deliveries of webhooks the configuration no longer has: removed, their count returned per hook.
    public func dropDeliveries(keeping hooks: Set<String>) throws -> [String: Int] {
        try withDB { db in
            var gone: [String: Int] = [:]
            for r in try db.prepare("SELECT hook, count(*) FROM webhook_deliveries GROUP BY hook").rows() where !hooks.contains(r.text(0)) {
                gone[r.text(0)] = r.int(1)
            }
            let delete = try db.prepare("DELETE FROM webhook_deliveries WHERE hook = ?")
            for h in gone.keys { try delete.run([.text(h)]) }
            return gone
        }
    }

    /// Bans in force per jail, as the database holds them.
    public func activeCounts(now: Double) throws -> [String: Int] {
        try withDB { db in
            var counts: [String: Int] = [:]
            for r in try db.prepare("SELECT jail, count(*) FROM bans WHERE ban_time < 0 OR banned_at + ban_time > ? GROUP BY jail").rows([.double(now)]) {
                counts[r.text(0)] = r.int(1)
            }
            return counts
        }
    }

    /// Removes bans (expired or lifted); their history stays for `bantime.increment`.
    public func remove(_ keys: [(jail: String, ip: IPNetwork)]) throws {
        guard !keys.isEmpty else { return }
        try withDB { db in
            try db.transaction {
                let delete = try db.prepare("DELETE FROM bans WHERE jail = ? AND ip = ?")
                for k in keys { try delete.run([.text(k.jail), .text(k.ip.description)]) }
            }
        }
    }

    /// Drops expired bans, and history and positions older than `age` seconds (fail2ban's `dbpurgeage`).
    public func purge(now: Double, age: Double) throws {
        try withDB { db in
            try db.transaction {
                try db.prepare("DELETE FROM bans WHERE ban_time >= 0 AND banned_at + ban_time <= ?").run([.double(now)])
                try db.prepare("DELETE FROM ban_history WHERE last_ban_time >= 0 AND last_banned_at + last_ban_time < ?").run([.double(now - age)])
                try db.prepare("DELETE FROM log_positions WHERE updated_at < ?").run([.double(now - max(age, 7 * 86400))])
            }
        }
    }

    // MARK: the allowlist

    /// Every stored allowlist entry (expired ones too, until `Allowlist.removeExpired` takes them out).
    public func allowlistEntries() throws -> [AllowlistEntry] {
        try withDB { db in
            try db.prepare("SELECT ip, jail, added_at, expires_at, comment FROM allowlist ORDER BY added_at, ip, jail").rows().compactMap { r in
                guard let ip = IPNetwork(r.text(0)) else { return nil }
                let expires: Double? = if case .null = r.values[3] { nil } else { r.double(3) }
                return AllowlistEntry(ip: ip, jail: r.text(1).isEmpty ? nil : r.text(1), addedAt: r.double(2), expiresAt: expires, comment: r.text(4))
            }
        }
    }

    /// Adds an entry, or replaces the one of the same network and jail.
    public func saveAllowlistEntry(_ e: AllowlistEntry) throws {
        try withDB { db in
            try db.prepare("INSERT OR REPLACE INTO allowlist (ip, jail, added_at, expires_at, comment) VALUES (?, ?, ?, ?, ?)")
                .run([.text(e.ip.description), .text(e.jail ?? ""), .double(e.addedAt), e.expiresAt.map { .double($0) } ?? .null, .text(e.comment)])
        }
    }

    public func removeAllowlistEntries(_ entries: [AllowlistEntry]) throws {
        guard !entries.isEmpty else { return }
        try withDB { db in
            try db.transaction {
                let delete = try db.prepare("DELETE FROM allowlist WHERE ip = ? AND jail = ?")
                for e in entries { try delete.run([.text(e.ip.description), .text(e.jail ?? "")]) }
            }
        }
    }

    // MARK: log positions

    public func position(jail: String, path: String) throws -> LogPosition? {
        try withDB { db in
            try db.prepare("SELECT first_line, offset FROM log_positions WHERE jail = ? AND path = ?")
                .rows([.text(jail), .text(path)]).first.map { LogPosition(jail: jail, path: path, firstLine: $0.blob(0), offset: $0.int(1)) }
        }
    }

    public func savePositions(_ positions: [LogPosition], now: Double) throws {
        guard !positions.isEmpty else { return }
        try withDB { db in
            try db.transaction {
                let upsert = try db.prepare("INSERT OR REPLACE INTO log_positions (jail, path, first_line, offset, updated_at) VALUES (?, ?, ?, ?, ?)")
                for p in positions {
                    try upsert.run([.text(p.jail), .text(p.path), .blob(p.firstLine), .int(p.offset), .double(now)])
                }
            }
        }
    }
}
