import Platform

/// A trusted address or network added at run time (`portcullis set JAIL addignoreip`, `POST /allowlist`): never
/// counted, never banned, in one jail or in all of them, until it expires or is removed.
public struct AllowlistEntry: Sendable, Equatable, CustomStringConvertible {
    public let ip: IPNetwork
    /// nil: every jail.
    public let jail: String?
    public let addedAt: Double
    /// nil: until removed.
    public let expiresAt: Double?
    public let comment: String

    public init(ip: IPNetwork, jail: String?, addedAt: Double, expiresAt: Double?, comment: String) {
        self.ip = ip
        self.jail = jail
        self.addedAt = addedAt
        self.expiresAt = expiresAt
        self.comment = comment
    }

    public func isActive(at now: Double) -> Bool { expiresAt.map { $0 > now } ?? true }
    public func applies(to jail: String) -> Bool { self.jail == nil || self.jail == jail }

    /// How the log and the API name it: `allowlist 2001:db8::/64 (every jail, until 2026-12-13T10:00:00Z)`.
    public var description: String {
        "allowlist \(ip) (\(jail.map { "jail \($0)" } ?? "every jail")\(expiresAt.map { ", until \(RFC3339.format($0))" } ?? ""))"
    }
}

/// The runtime allowlist, persistent in the store: it survives restarts and reloads. Every change is written to
/// the store before it takes effect; an entry that expired protects nothing from that moment (and leaves the store
/// at the next `removeExpired`). Thread-safe; lookups take a short lock (jail threads ask once per failure).
public final class Allowlist: Sendable {
    private let entries: Locked<[AllowlistEntry]>
    private let store: BanStore?

    /// Loads the entries in force from the store.
    public init(store: BanStore?, now: Double = Clock.now()) throws {
        self.store = store
        entries = Locked(try store?.allowlistEntries().filter { $0.isActive(at: now) } ?? [])
    }

    /// The entries in force, oldest first.
    public func list(now: Double = Clock.now()) -> [AllowlistEntry] {
        entries.withLock { $0.filter { $0.isActive(at: now) } }
    }

    /// The entry that protects `network` in `jail`: one that overlaps it (contains it, or lies inside it). nil when
    /// none does.
    public func entry(protecting network: IPNetwork, jail: String, now: Double = Clock.now()) -> AllowlistEntry? {
        entries.withLock { list in
            list.first { $0.applies(to: jail) && $0.isActive(at: now) && $0.ip.overlaps(network) }
        }
    }

    /// Adds an entry (replacing one of the same network and jail); stored first.
    public func add(_ entry: AllowlistEntry) throws {
        try store?.saveAllowlistEntry(entry)
        entries.withLock { list in
            list.removeAll { $0.ip == entry.ip && $0.jail == entry.jail }
            list.append(entry)
        }
    }

    /// Which entries of a network a removal takes.
    public enum Scope: Sendable {
        /// Every entry of the network, whatever its jail.
        case all
        /// The entry of one jail, or (nil) the one for every jail.
        case entry(jail: String?)

        public var description: String {
            switch self {
            case .all: ""
            case .entry(let jail): " for \(jail.map { "jail \($0)" } ?? "every jail")"
            }
        }
    }

    /// Removes entries of `network`. Returns what was removed.
    public func remove(_ network: IPNetwork, scope: Scope = .all) throws -> [AllowlistEntry] {
        let matching = entries.withLock { list in
            list.filter { e in
                guard e.ip == network else { return false }
                if case .entry(let jail) = scope { return e.jail == jail }
                return true
            }
        }
        try store?.removeAllowlistEntries(matching)
        entries.withLock { list in list.removeAll { e in matching.contains(e) } }
        return matching
    }

    /// Takes the expired entries out (memory and store); returns them.
    @discardableResult
    public func removeExpired(now: Double = Clock.now()) throws -> [AllowlistEntry] {
        let expired = entries.withLock { $0.filter { !$0.isActive(at: now) } }
        guard !expired.isEmpty else { return [] }
        try store?.removeAllowlistEntries(expired)
        entries.withLock { list in list.removeAll { e in expired.contains(e) } }
        return expired
    }
}
