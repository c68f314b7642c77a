import Platform

/// A ban or an unban of this node on its way to the fleet's shared table, or one read from it.
public struct ClusterChange: Sendable, Equatable {
    public enum Kind: String, Sendable {
        case ban, unban
    }

    /// The outbox's row id (0 before it is stored).
    public var localID = 0
    /// The row's key in the shared table with the node's name: a change sent again after a lost answer is not
    /// written twice. Random, so that a node whose database was lost does not collide with its earlier rows.
    public var token: String
    public var kind: Kind
    public var jail: String
    public var ip: IPNetwork
    /// The ban's start (an unban's time).
    public var bannedAt: Double
    /// nil: permanent (and for an unban).
    public var expiresAt: Double?
    public var failures: Int
    public var reason: String

    public init(token: String, kind: Kind, jail: String, ip: IPNetwork, bannedAt: Double, expiresAt: Double?, failures: Int, reason: String) {
        self.token = token
        self.kind = kind
        self.jail = jail
        self.ip = ip
        self.bannedAt = bannedAt
        self.expiresAt = expiresAt
        self.failures = failures
        self.reason = reason
    }

    public static func newToken() -> String {
        String(UInt64.random(in: 0...UInt64.max), radix: 16) + String(UInt64.random(in: 0...UInt64.max), radix: 16)
    }
}

extension BanStore {
    /// Stores changes waiting to be sent (one transaction); returns them with their ids.
    public func addToClusterOutbox(_ changes: [ClusterChange]) throws -> [ClusterChange] {
        guard !changes.isEmpty else { return [] }
        return try withDB { db in
            try db.transaction {
                let insert = try db.prepare(
                    "INSERT INTO cluster_outbox (token, kind, jail, ip, banned_at, expires_at, failures, reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING id")
                var stored: [ClusterChange] = []
                stored.reserveCapacity(changes.count)
                for var c in changes {
                    let rows = try insert.rows([
                        .text(c.token), .text(c.kind.rawValue), .text(c.jail), .text(c.ip.description), .double(c.bannedAt),
                        c.expiresAt.map { .double($0) } ?? .null, .int(c.failures), .text(c.reason),
                    ])
                    c.localID = rows.first?.int(0) ?? 0
                    stored.append(c)
                }
                return stored
            }
        }
    }

    /// The changes waiting, oldest first (rows whose address no longer reads are skipped).
    public func clusterOutbox() throws -> [ClusterChange] {
        try withDB { db in
            try db.prepare("SELECT id, token, kind, jail, ip, banned_at, expires_at, failures, reason FROM cluster_outbox ORDER BY id").rows().compactMap { r in
                guard let kind = ClusterChange.Kind(rawValue: r.text(2)), let ip = IPNetwork(r.text(4)) else { return nil }
                var c = ClusterChange(
                    token: r.text(1), kind: kind, jail: r.text(3), ip: ip, bannedAt: r.double(5), expiresAt: r.isNull(6) ? nil : r.double(6),
                    failures: r.int(7), reason: r.text(8))
                c.localID = r.int(0)
                return c
            }
        }
    }

    public func removeFromClusterOutbox(_ ids: [Int]) throws {
        guard !ids.isEmpty else { return }
        try withDB { db in
            try db.transaction {
                let delete = try db.prepare("DELETE FROM cluster_outbox WHERE id = ?")
                for id in ids { try delete.run([.int(id)]) }
            }
        }
    }

    /// The last id of the shared table this node has applied; nil when it never synchronised (it then loads the
    /// bans in force).
    public func clusterLastID() throws -> Int64? {
        try withDB { db in
            try db.prepare("SELECT value FROM cluster_state WHERE key = 'last_id'").rows().first.flatMap { Int64($0.text(0)) }
        }
    }

    public func setClusterLastID(_ id: Int64?) throws {
        try withDB { db in
            if let id {
                try db.prepare("INSERT INTO cluster_state (key, value) VALUES ('last_id', ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value").run([
                    .text(String(id))
                ])
            } else {
                try db.prepare("DELETE FROM cluster_state WHERE key = 'last_id'").run([])
            }
        }
    }
}
