/// The bans in force, compact: 100,000 of them in a few megabytes. A ban is keyed by its jail (a small number)
/// and its network (two words and a prefix length); jail names and addresses are rebuilt only when someone asks.
/// Which bans cover an address is found by looking it up once per prefix length in use, not by a scan.
struct BanTable {
    struct Key: Hashable {
        let hi: UInt64
        let lo: UInt64
        /// jail number << 9 | prefix length << 1 | 1 for IPv6
        let tag: UInt32

        var jailID: UInt32 { tag >> 9 }
        var prefix: Int { Int(tag >> 1 & 0xff) }
        var isIPv6: Bool { tag & 1 == 1 }
    }

    struct Value: TimedBan {
        var bannedAt: Double
        /// fail2ban's seconds (-1: permanent), kept as a plain Double: a `BanTime` would take a word more per ban.
        private var banSeconds: Double
        var banTime: BanTime { BanTime(fail2banSeconds: banSeconds) }
        // Narrow counters and a 32-bit sequence keep a ban at 24 bytes (100,000 bans held in under 50 MB).
        var banCount: UInt16
        var failures: UInt16
        /// Position in `order`, assigned when stored: the stable order of listings (newest ban last).
        var seq: UInt32 = 0

        init(bannedAt: Double, banTime: BanTime, banCount: Int, failures: Int) {
            self.bannedAt = bannedAt
            self.banSeconds = banTime.fail2banSeconds
            self.banCount = UInt16(clamping: banCount)
            self.failures = UInt16(clamping: failures)
        }
    }

    private(set) var jailNames: [String] = []
    private var jailIDs: [String: UInt32] = [:]
    private var storage: [Key: Value] = [:]
    /// Every stored ban by ascending `seq` (a re-ban moves to the end), so that a page of a listing is a binary
    /// search and a walk, not a sort of 100,000 bans. Entries whose `seq` no longer matches are stale and are
    /// compacted away once they are the majority.
    private var order: [OrderEntry] = []
    private var stale = 0
    /// Internal, not private: a test starts it near the end of its range.
    var nextSeq: UInt32 = 1

    /// A key and its sequence number, flat (24 bytes, where a tuple would take 32).
    private struct OrderEntry {
        let hi: UInt64
        let lo: UInt64
        let tag: UInt32
        let seq: UInt32
        var key: Key { Key(hi: hi, lo: lo, tag: tag) }
    }
    /// Bans in force per jail number, kept as bans come and go (status polls must not count 100,000 bans).
    private var jailCounts: [Int] = []
    /// Bans in force per prefix length: IPv4 at 0…32, IPv6 at 33…161. The lengths with bans are the lookups that
    /// find what covers an address (usually one or two).
    private var prefixCounts = [Int](repeating: 0, count: 162)
    /// The lengths with bans, longest first, per family: rebuilt only when a length comes into use or goes out of
    /// it (every decision asks what covers it).
    private var inUse4: [Int] = []
    private var inUse6: [Int] = []

    private static func prefixSlot(_ prefix: Int, ipv6: Bool) -> Int { ipv6 ? 33 + prefix : prefix }

    /// The prefix lengths of bans in force for one family, longest first.
    func prefixesInUse(ipv6: Bool) -> [Int] { ipv6 ? inUse6 : inUse4 }

    private mutating func prefixCountChanged(ipv6: Bool) {
        let lengths = (0...(ipv6 ? 128 : 32)).reversed().filter { prefixCounts[BanTable.prefixSlot($0, ipv6: ipv6)] > 0 }
        if ipv6 { inUse6 = lengths } else { inUse4 = lengths }
    }

    var count: Int { storage.count }
    func count(jail: String) -> Int { jailIDs[jail].map { jailCounts[Int($0)] } ?? 0 }

    mutating func reserveCapacity(_ n: Int) { storage.reserveCapacity(n) }

    /// The key for a ban, registering the jail name when it is new.
    mutating func key(_ jail: String, _ ip: IPNetwork) -> Key {
        let id: UInt32
        if let known = jailIDs[jail] {
            id = known
        } else {
            id = UInt32(jailNames.count)
            jailNames.append(jail)
            jailCounts.append(0)
            jailIDs[jail] = id
        }
        return BanTable.makeKey(id, ip)
    }

    /// The key, or nil when no ban of this jail was ever seen.
    func existingKey(_ jail: String, _ ip: IPNetwork) -> Key? {
        jailIDs[jail].map { BanTable.makeKey($0, ip) }
    }

    private static func makeKey(_ id: UInt32, _ ip: IPNetwork) -> Key {
        let prefix = UInt32(ip.prefix) << 1
        switch ip.address {
        case .v4(let a): return Key(hi: 0, lo: UInt64(a), tag: id << 9 | prefix)
        case .v6(let h, let l): return Key(hi: h, lo: l, tag: id << 9 | prefix | 1)
        }
    }

    func jail(of key: Key) -> String { jailNames[Int(key.jailID)] }
    func ip(of key: Key) -> IPNetwork {
        IPNetwork(address: key.isIPv6 ? .v6(key.hi, key.lo) : .v4(UInt32(truncatingIfNeeded: key.lo)), prefix: key.prefix)
    }

    /// The bans of one jail that cover `network` (it, or a wider network around it), narrowest first.
    func covering(_ network: IPNetwork, jailID: UInt32) -> [Key] {
        var found: [Key] = []
        for p in prefixesInUse(ipv6: !network.isIPv4) where p <= network.prefix {
            let key = BanTable.makeKey(jailID, IPNetwork(address: network.address, prefix: p))
            if storage[key] != nil { found.append(key) }
        }
        return found
    }

    /// The bans of `jail` that cover `network`, narrowest first.
    func covering(_ network: IPNetwork, jail: String) -> [Key] {
        jailIDs[jail].map { covering(network, jailID: $0) } ?? []
    }

    /// The bans of every jail that cover `network`, by jail.
    func covering(_ network: IPNetwork) -> [Key] {
        (0..<UInt32(jailNames.count)).flatMap { covering(network, jailID: $0) }
    }

    /// The bans of `jail` strictly inside `network` (narrower ones).
    func inside(_ network: IPNetwork, jail: String) -> [Key] { inside([(jail, network)])[0] }

    /// For each network, the bans of its jail strictly inside it: one scan of the table for all of them (a batch
    /// of networks must not scan once each), made only when narrower bans exist.
    func inside(_ networks: [(jail: String, ip: IPNetwork)]) -> [[Key]] {
        var result = [[Key]](repeating: [], count: networks.count)
        var position: [Key: Int] = [:]
        var lengths: [Bool: Set<Int>] = [false: [], true: []]
        for (i, n) in networks.enumerated() {
            let ipv6 = !n.ip.isIPv4
            guard let id = jailIDs[n.jail], prefixesInUse(ipv6: ipv6).contains(where: { $0 > n.ip.prefix }) else { continue }
            position[BanTable.makeKey(id, n.ip)] = i
            lengths[ipv6]!.insert(n.ip.prefix)
        }
        guard !position.isEmpty else { return result }
        for key in storage.keys {
            for p in lengths[key.isIPv6]! where p < key.prefix {
                let around = BanTable.makeKey(key.jailID, IPNetwork(address: ip(of: key).address, prefix: p))
                if let i = position[around] { result[i].append(key) }
            }
        }
        return result
    }

    subscript(key: Key) -> Value? {
        get { storage[key] }
        set {
            let jail = Int(key.jailID)
            let slot = BanTable.prefixSlot(key.prefix, ipv6: key.isIPv6)
            if var v = newValue {
                if nextSeq == UInt32.max { renumber() }
                v.seq = nextSeq
                nextSeq += 1
                if storage.updateValue(v, forKey: key) == nil {
                    jailCounts[jail] += 1
                    prefixCounts[slot] += 1
                    if prefixCounts[slot] == 1 { prefixCountChanged(ipv6: key.isIPv6) }
                } else {
                    stale += 1
                }
                order.append(OrderEntry(hi: key.hi, lo: key.lo, tag: key.tag, seq: v.seq))
            } else if storage.removeValue(forKey: key) != nil {
                jailCounts[jail] -= 1
                prefixCounts[slot] -= 1
                if prefixCounts[slot] == 0 { prefixCountChanged(ipv6: key.isIPv6) }
                stale += 1
            }
            if stale > 1024 && stale * 2 > order.count {
                order.removeAll { storage[$0.key]?.seq != $0.seq }
                stale = 0
            }
        }
    }

    /// After four billion bans the numbers start again from 1, in the same order (open cursors then point
    /// at the start: a client pages through again rather than missing bans).
    private mutating func renumber() {
        order.removeAll { storage[$0.key]?.seq != $0.seq }
        stale = 0
        nextSeq = 1
        for i in order.indices {
            let key = order[i].key
            storage[key]!.seq = nextSeq
            order[i] = OrderEntry(hi: key.hi, lo: key.lo, tag: key.tag, seq: nextSeq)
            nextSeq += 1
        }
    }

    /// Walks the bans in force after `after` in ban order, optionally of one jail, until `body` returns false.
    private func walk(after: UInt64, jail: String?, _ body: (Key, Value) -> Bool) {
        var jailTag: UInt32? = nil
        if let jail {
            guard let id = jailIDs[jail] else { return }
            jailTag = id
        }
        // First entry with seq > after.
        var lo = 0, hi = order.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if UInt64(order[mid].seq) <= after { lo = mid + 1 } else { hi = mid }
        }
        for entry in order[lo...] {
            let key = entry.key
            guard let v = storage[key], v.seq == entry.seq else { continue }
            if let t = jailTag, key.jailID != t { continue }
            if !body(key, v) { return }
        }
    }

    /// Up to `limit` bans after the cursor `after` (0: from the start), in ban order, optionally of one jail;
    /// with the cursor of the last one returned when more follow.
    func page(after: UInt64, limit: Int, jail: String?) -> (bans: [BanManager.ActiveBan], next: UInt64?) {
        var result: [BanManager.ActiveBan] = []
        result.reserveCapacity(min(limit, 1000))
        var lastSeq: UInt32 = 0
        var more = false
        walk(after: after, jail: jail) { key, v in
            if result.count == limit {
                more = true
                return false
            }
            result.append(ban(key, v))
            lastSeq = v.seq
            return true
        }
        return (result, more ? UInt64(lastSeq) : nil)
    }

    /// The addresses banned in one jail, in ban order (no ban records built: status asks for this often).
    func addresses(jail: String) -> [IPNetwork] {
        var result: [IPNetwork] = []
        walk(after: 0, jail: jail) { key, _ in
            result.append(ip(of: key))
            return true
        }
        return result
    }

    /// The cursor of a listing is the `seq` of the last ban of the previous page.
    static func cursor(_ seq: UInt64) -> String { "b" + String(seq, radix: 36) }
    static func seq(cursor: String) -> UInt64? {
        // Exactly what `cursor` writes (openapi.yaml: ^b[0-9a-z]{1,12}$).
        let digits = cursor.utf8.dropFirst()
        guard cursor.utf8.first == UInt8(ascii: "b"), (1...12).contains(digits.count),
            digits.allSatisfy({ (48...57).contains($0) || (97...122).contains($0) })
        else { return nil }
        return UInt64(cursor.dropFirst(), radix: 36)
    }

    func ban(_ key: Key, _ v: Value) -> BanManager.ActiveBan {
        BanManager.ActiveBan(
            jail: jail(of: key), ip: ip(of: key), bannedAt: v.bannedAt, banTime: v.banTime,
            banCount: Int(v.banCount), failures: Int(v.failures))
    }

    func all() -> [BanManager.ActiveBan] { storage.map { ban($0.key, $0.value) } }
}
