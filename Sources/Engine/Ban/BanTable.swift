/// The bans in force, compact: 100,000 of them in a few megabytes. A ban is keyed by its jail (a small number)
/// and its address (two words); jail names and addresses are rebuilt only when someone asks.
struct BanTable {
    struct Key: Hashable {
        let hi: UInt64
        let lo: UInt64
        /// jail number << 1 | 1 for IPv6
        let tag: UInt32
    }

    struct Value {
        var bannedAt: Double
        /// Seconds; negative: permanent.
        var banTime: Double
        var banCount: UInt32
        var failures: UInt32

        var expiresAt: Double? { banTime < 0 ? nil : bannedAt + banTime }
    }

    private(set) var jailNames: [String] = []
    private var jailIDs: [String: UInt32] = [:]
    private var storage: [Key: Value] = [:]

    var count: Int { storage.count }

    mutating func reserveCapacity(_ n: Int) { storage.reserveCapacity(n) }

    /// The key for a ban, registering the jail name when it is new.
    mutating func key(_ jail: String, _ ip: IPAddress) -> Key {
        let id: UInt32
        if let known = jailIDs[jail] {
            id = known
        } else {
            id = UInt32(jailNames.count)
            jailNames.append(jail)
            jailIDs[jail] = id
        }
        return BanTable.makeKey(id, ip)
    }

    /// The key, or nil when no ban of this jail was ever seen.
    func existingKey(_ jail: String, _ ip: IPAddress) -> Key? {
        jailIDs[jail].map { BanTable.makeKey($0, ip) }
    }

    private static func makeKey(_ id: UInt32, _ ip: IPAddress) -> Key {
        switch ip {
        case .v4(let a): return Key(hi: 0, lo: UInt64(a), tag: id << 1)
        case .v6(let h, let l): return Key(hi: h, lo: l, tag: id << 1 | 1)
        }
    }

    func jail(of key: Key) -> String { jailNames[Int(key.tag >> 1)] }
    func ip(of key: Key) -> IPAddress { key.tag & 1 == 1 ? .v6(key.hi, key.lo) : .v4(UInt32(truncatingIfNeeded: key.lo)) }

    subscript(key: Key) -> Value? {
        get { storage[key] }
        set { storage[key] = newValue }
    }

    func ban(_ key: Key, _ v: Value) -> BanManager.ActiveBan {
        BanManager.ActiveBan(jail: jail(of: key), ip: ip(of: key), bannedAt: v.bannedAt, banTime: v.banTime,
                             banCount: Int(v.banCount), failures: Int(v.failures))
    }

    func all() -> [BanManager.ActiveBan] { storage.map { ban($0.key, $0.value) } }

    func bans(where include: (Key) -> Bool) -> [BanManager.ActiveBan] {
        storage.compactMap { include($0.key) ? ban($0.key, $0.value) : nil }
    }
}
