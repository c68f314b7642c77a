import CNetfilter
import FoundationEssentials
import Glibc
import Platform

/// A refused nftables operation, naming what was attempted.
public struct NftablesError: Error, CustomStringConvertible, Sendable {
    public let operation: String
    public let code: Int32

    public var isPermissionDenied: Bool { code == EPERM || code == EACCES }
    public var isMissingNfTables: Bool { [EPROTONOSUPPORT, EAFNOSUPPORT, EOPNOTSUPP].contains(code) }

    public var description: String {
        if isPermissionDenied {
            return
                "\(operation): permission denied (EPERM): nftables needs root with CAP_NET_ADMIN; in Docker compose that is `cap_add: [NET_ADMIN]` (privileged is not needed)"
        }
        if isMissingNfTables {
            return
                "\(operation): this kernel has no nf_tables (\(String(cString: strerror(code)))): load the nf_tables module on the host (modprobe nf_tables) or use banaction = dry-run"
        }
        return "\(operation): \(String(cString: strerror(code))) (errno \(code))"
    }
}

extension FilterHook {
    /// The netfilter hook number (linux/netfilter.h: NF_INET_PRE_ROUTING 0, LOCAL_IN 1, FORWARD 2).
    var hookNumber: UInt32 {
        switch self {
        case .prerouting: return 0
        case .input: return 1
        case .forward: return 2
        }
    }
}

/// A ban as the packet filter holds it.
public struct BanEntry: Sendable, Equatable {
    public var jail: String
    /// An address or a network.
    public var ip: IPNetwork
    /// nil: permanent.
    public var expiresAt: Double?

    public init(jail: String, ip: IPNetwork, expiresAt: Double?) {
        self.jail = jail
        self.ip = ip
        self.expiresAt = expiresAt
    }
}

/// What a jail blocks: its sets, protocol, ports and how.
public struct JailRules: Sendable, Equatable {
    public var jail: String
    /// IANA protocol number: 6 tcp, 17 udp, 132 sctp; 0 every protocol.
    public var l4proto: UInt8
    /// Destination port ranges; empty: every port.
    public var ports: [ClosedRange<UInt16>]
    public var drop: Bool
    public var hook: FilterHook

    /// Port ranges sorted, with overlapping and touching ones joined (an interval set refuses overlaps).
    public static func merged(_ ranges: [ClosedRange<UInt16>]) -> [ClosedRange<UInt16>] {
        var out: [ClosedRange<UInt16>] = []
        for r in ranges.sorted(by: { $0.lowerBound < $1.lowerBound }) {
            if let last = out.last, Int(r.lowerBound) <= Int(last.upperBound) + 1 {
                out[out.count - 1] = last.lowerBound...max(last.upperBound, r.upperBound)
            } else {
                out.append(r)
            }
        }
        return out
    }

    public var v4Set: String { NftablesFirewall.set(jail, ipv6: false, network: false) }
    public var v6Set: String { NftablesFirewall.set(jail, ipv6: true, network: false) }
    public var v4NetworkSet: String { NftablesFirewall.set(jail, ipv6: false, network: true) }
    public var v6NetworkSet: String { NftablesFirewall.set(jail, ipv6: true, network: true) }

    public init(jail: String, l4proto: UInt8, ports: [ClosedRange<UInt16>], drop: Bool, hook: FilterHook = .input) {
        self.jail = jail
        self.l4proto = l4proto
        self.ports = ports
        self.drop = drop
        self.hook = hook
    }

    /// The native backend's reading of a jail's `banaction`, `port`, `protocol` and `blocktype`. Returns the rules
    /// and, for a banaction Portcullis does not know, a warning (the jail is then handled as nftables-multiport).
    public static func forJail(_ jail: JailDefinition) -> (rules: JailRules, warning: String?) {
        let action = jail.banAction.lowercased()
        let known = [
            "nftables", "nftables-multiport", "nftables-allports", "iptables", "iptables-multiport",
            "iptables-allports", "iptables-new", "nftables-common",
        ]
        var warning: String? = nil
        if !known.contains(action) {
            warning = "banaction = \(jail.banAction) is not supported; Portcullis blocks through its own nftables table as nftables-multiport does"
        }
        let proto: UInt8 = ["tcp": 6, "udp": 17, "sctp": 132][jail.protocol] ?? 0
        let everything = jail.ports.contains { $0.first == 0 && $0.last == 65535 }
        let allPorts = action.hasSuffix("allports") || everything || jail.ports.isEmpty
        var blocktype = ""
        for a in jail.actions { if let b = a.options["blocktype"] { blocktype = b } }
        let drop = blocktype.lowercased().hasPrefix("drop")
        return (JailRules(jail: jail.name, l4proto: proto, ports: allPorts ? [] : jail.ports.map { $0.first...$0.last }, drop: drop, hook: jail.hook), warning)
    }
}

/// Portcullis' packet filter: `table inet portcullis`, per jail and family an address set (`<jail>-v4`,
/// `<jail>-v6`: hashes with timeouts) and a network set (`<jail>-n4`, `<jail>-n6`: intervals with timeouts), and
/// rules in the base chain of the jail's hook (`input`: `hook input priority filter - 1; policy accept`; `forward`
/// and `prerouting` only when a jail filters there, see `FilterHook`) that match the jail's protocol and ports and a
/// source in one of its sets, then reject (TCP reset) or drop. A base chain's drop or reject is final whatever other
/// tables accept, and applies to every packet, so a ban also cuts connections that were open before it. Driven
/// through libnftnl/libmnl netlink transactions; never touches another table, never runs `nft`.
public final class NftablesFirewall: @unchecked Sendable {
    // @unchecked: the netlink socket is only used while `lock` is held.
    public static let table = "portcullis"
    /// Addresses, and networks, per netlink message (a transaction may hold many messages): what one message's
    /// element list holds.
    static let addressesPerMessage = Int(PC_NFT_MAX_ELEMENTS)
    static let networksPerMessage = Int(PC_NFT_MAX_INTERVALS)

    private let socket: OpaquePointer
    private let lock = Lock()
    private var nextSetID: UInt32 = 1

    public init() throws(NftablesError) {
        var error: Int32 = 0
        guard let s = pc_nft_open(&error) else {
            throw NftablesError(operation: "open a netlink socket to nftables", code: error)
        }
        socket = s
    }

    deinit { pc_nft_close(socket) }

    /// One netlink transaction: messages remembered by sequence number so that a refusal names its operation.
    private final class Transaction {
        let batch: OpaquePointer
        var operations: [UInt32: String] = [:]
        var first: String?

        init(_ socket: OpaquePointer) throws(NftablesError) {
            guard let b = pc_nft_batch_new(socket) else { throw NftablesError(operation: "start a transaction", code: ENOMEM) }
            batch = b
        }

        deinit { pc_nft_batch_free(batch) }

        func note(_ seq: UInt32, _ operation: String) throws(NftablesError) {
            guard seq != 0 else { throw NftablesError(operation: operation, code: ENOMEM) }
            operations[seq] = operation
            if first == nil { first = operation }
        }

        func commit(ignoring ignored: Set<Int32> = []) throws(NftablesError) {
            var failures = [pc_nft_failure](repeating: pc_nft_failure(), count: 16)
            let rc = pc_nft_commit(batch, &failures, failures.count)
            if rc < 0 { throw NftablesError(operation: "send the transaction to the kernel", code: -rc) }
            for f in failures.prefix(Int(rc)) where !ignored.contains(f.error) {
                // A refusal of the whole batch (EPERM) comes with the sequence number of its first message.
                throw NftablesError(operation: operations[f.seq] ?? first ?? "nftables transaction", code: f.error)
            }
        }
    }

    /// The elements of networks of one family as pc_nft_add_intervals takes them.
    private struct Intervals {
        var starts: [UInt8] = []
        var ends: [UInt8] = []
        var open: [UInt8] = []

        init(_ networks: some Sequence<IPNetwork>) {
            for n in networks {
                let start = n.address.bytes
                starts += start
                if let end = n.endBytes {
                    ends += end
                    open.append(0)
                } else {
                    ends += start
                    open.append(1)
                }
            }
        }
    }

    /// The set of a jail for a family: addresses (`<jail>-v4`, a hash) or networks (`<jail>-n4`, intervals).
    static func set(_ jail: String, ipv6: Bool, network: Bool) -> String { "\(jail)-\(network ? "n" : "v")\(ipv6 ? "6" : "4")" }
    static func set(for e: (jail: String, ip: IPNetwork)) -> String { set(e.jail, ipv6: !e.ip.isIPv4, network: !e.ip.isSingleAddress) }

    private func addElements(_ t: Transaction, _ entries: [BanEntry], now: Double) throws(NftablesError) {
        var byTarget: [String: [BanEntry]] = [:]
        for e in entries { byTarget[NftablesFirewall.set(for: (e.jail, e.ip)), default: []].append(e) }
        for (set, list) in byTarget.sorted(by: { $0.key < $1.key }) {
            let ipv6 = !(list[0].ip.isIPv4)
            let networks = !list[0].ip.isSingleAddress
            var start = 0
            while start < list.count {
                let chunk = list[start..<min(list.count, start + (networks ? NftablesFirewall.networksPerMessage : NftablesFirewall.addressesPerMessage))]
                // The kernel expires the element itself: the ban ends even if Portcullis is not running.
                let timeouts = chunk.map { e in e.expiresAt.map { NftablesFirewall.timeoutMilliseconds(until: $0, now: now) } ?? 0 }
                let what =
                    chunk.count == 1
                    ? "add \(chunk.first!.ip) to set \(set) of jail \(chunk.first!.jail)"
                    : "add \(chunk.count) \(networks ? "networks" : "addresses") to set \(set)"
                let seq: UInt32
                if networks {
                    let intervals = Intervals(chunk.map(\.ip))
                    seq = intervals.starts.withUnsafeBufferPointer { s in
                        intervals.ends.withUnsafeBufferPointer { e in
                            intervals.open.withUnsafeBufferPointer { o in
                                timeouts.withUnsafeBufferPointer { tm in
                                    pc_nft_add_intervals(
                                        t.batch, NftablesFirewall.table, set, ipv6 ? 1 : 0, s.baseAddress, e.baseAddress, o.baseAddress,
                                        tm.baseAddress, chunk.count)
                                }
                            }
                        }
                    }
                } else {
                    let addresses = chunk.flatMap(\.ip.address.bytes)
                    seq = addresses.withUnsafeBufferPointer { a in
                        timeouts.withUnsafeBufferPointer { tm in
                            pc_nft_add_elements(t.batch, NftablesFirewall.table, set, ipv6 ? 1 : 0, a.baseAddress, tm.baseAddress, chunk.count)
                        }
                    }
                }
                try t.note(seq, what)
                start += chunk.count
            }
        }
    }

    private func removeElement(_ t: Transaction, jail: String, ip: IPNetwork) throws(NftablesError) {
        let set = NftablesFirewall.set(for: (jail, ip))
        let seq: UInt32
        if ip.isSingleAddress {
            seq = ip.address.bytes.withUnsafeBufferPointer {
                pc_nft_del_elements(t.batch, NftablesFirewall.table, set, ip.isIPv4 ? 0 : 1, $0.baseAddress, 1)
            }
        } else {
            let intervals = Intervals([ip])
            seq = intervals.starts.withUnsafeBufferPointer { s in
                intervals.ends.withUnsafeBufferPointer { e in
                    intervals.open.withUnsafeBufferPointer { o in
                        pc_nft_del_intervals(t.batch, NftablesFirewall.table, set, ip.isIPv4 ? 0 : 1, s.baseAddress, e.baseAddress, o.baseAddress, 1)
                    }
                }
            }
        }
        try t.note(seq, "remove \(ip) from set \(set) of jail \(jail)")
    }

    /// An element's timeout: at least a second, at most what the kernel takes (`BanTimePolicy.longest`); no value
    /// (NaN, infinity) can trap the conversion.
    static func timeoutMilliseconds(until end: Double, now: Double) -> UInt64 {
        let ms = ((end - now) * 1000).rounded()
        guard !ms.isNaN else { return UInt64(BanTimePolicy.longest * 1000) }
        return UInt64(min(max(1000, ms), BanTimePolicy.longest * 1000))
    }

    /// Replaces `table inet portcullis` in one transaction: the layout for `jails`, holding `bans`. Traffic is
    /// never left unfiltered in between: the kernel switches from the old table to the new one at once.
    public func install(_ jails: [JailRules], bans: [BanEntry], now: Double) throws(NftablesError) {
        lock.lock(); defer { lock.unlock() }
        let t = try Transaction(socket)
        // "add; delete; add": deleting alone would fail when there is no table yet.
        try t.note(pc_nft_add_table(t.batch, NftablesFirewall.table), "create table inet \(NftablesFirewall.table)")
        try t.note(pc_nft_del_table(t.batch, NftablesFirewall.table), "replace table inet \(NftablesFirewall.table)")
        try t.note(pc_nft_add_table(t.batch, NftablesFirewall.table), "create table inet \(NftablesFirewall.table)")
        for hook in FilterHook.allCases where hook == .input || jails.contains(where: { $0.hook == hook }) {
            try t.note(
                pc_nft_add_chain(t.batch, NftablesFirewall.table, hook.chainName, hook.hookNumber, hook.priority),
                "create chain \(hook.chainName) (\(hook.description))")
        }
        for jail in jails {
            // Per family an address set (a hash: one lookup per packet whatever the number of bans) and a network
            // set (intervals), each with its rule. A single port or range is compared in the rule, several are an
            // anonymous interval set it looks up (500 ports are one rule, not 500).
            for (ipv6, network, set) in [
                (false, false, jail.v4Set), (false, true, jail.v4NetworkSet), (true, false, jail.v6Set), (true, true, jail.v6NetworkSet),
            ] {
                let id = nextSetID
                nextSetID &+= 1
                try t.note(
                    pc_nft_add_set(t.batch, NftablesFirewall.table, set, ipv6 ? 1 : 0, network ? 1 : 0, id), "create set \(set) of jail \(jail.jail)")
                let ranges = JailRules.merged(jail.ports)
                let everyPort = ranges.isEmpty || jail.l4proto == 0
                var portSetID: UInt32 = 0
                if !everyPort && ranges.count > 1 {
                    portSetID = nextSetID
                    nextSetID &+= 1
                    try t.note(pc_nft_add_port_set(t.batch, NftablesFirewall.table, portSetID), "create the port set of jail \(jail.jail)")
                    let firsts = ranges.map(\.lowerBound), lasts = ranges.map(\.upperBound)
                    let seq = firsts.withUnsafeBufferPointer { f in
                        lasts.withUnsafeBufferPointer { l in
                            pc_nft_add_port_ranges(t.batch, NftablesFirewall.table, portSetID, f.baseAddress, l.baseAddress, ranges.count)
                        }
                    }
                    try t.note(seq, "add \(ranges.count) port ranges to the port set of jail \(jail.jail)")
                }
                let single = !everyPort && ranges.count == 1 ? ranges[0] : nil
                let comment = "portcullis jail \(jail.jail)"
                let seq = set.withCString { setName in
                    comment.withCString { c in
                        var rule = pc_nft_rule(
                            ipv6: ipv6 ? 1 : 0, l4proto: jail.l4proto,
                            port_first: single?.lowerBound ?? 0, port_last: single?.upperBound ?? 0,
                            all_ports: everyPort ? 1 : 0, port_set_id: portSetID,
                            original_dport: jail.hook == .forward ? 1 : 0, set: setName, set_id: id,
                            drop: jail.drop ? 1 : 0, comment: c)
                        return pc_nft_add_rule(t.batch, NftablesFirewall.table, jail.hook.chainName, &rule)
                    }
                }
                let portText =
                    everyPort
                    ? "all ports"
                    : ranges.map { $0.lowerBound == $0.upperBound ? "\($0.lowerBound)" : "\($0.lowerBound)-\($0.upperBound)" }.joined(separator: ",")
                try t.note(
                    seq,
                    "add the rule of jail \(jail.jail) to chain \(jail.hook.chainName) (\(ipv6 ? "IPv6" : "IPv4") \(network ? "networks" : "addresses"), ports \(portText.prefix(200)))"
                )
            }
        }
        let known = Set(jails.map(\.jail))
        try addElements(t, bans.filter { known.contains($0.jail) && ($0.expiresAt.map { $0 > now } ?? true) }, now: now)
        try t.commit()
    }

    /// Adds bans (many in one transaction), and removes the narrower ones they cover in the same one (one ban per
    /// address; within a network set the kernel would refuse the overlap).
    public func add(_ bans: [BanEntry], replacing: [(jail: String, ip: IPNetwork)], now: Double) throws(NftablesError) {
        guard !bans.isEmpty || !replacing.isEmpty else { return }
        lock.lock(); defer { lock.unlock() }
        do {
            let t = try Transaction(socket)
            for r in replacing { try removeElement(t, jail: r.jail, ip: r.ip) }
            try addElements(t, bans, now: now)
            try t.commit()
        } catch let error where !replacing.isEmpty && error.code == ENOENT {
            // A covered element the kernel let expire meanwhile: remove the others one by one, then add.
            try removeEach(replacing)
            let t = try Transaction(socket)
            try addElements(t, bans, now: now)
            try t.commit()
        }
    }

    /// Removes bans. An element the kernel already let expire is not an error.
    public func remove(_ bans: [(jail: String, ip: IPNetwork)]) throws(NftablesError) {
        lock.lock(); defer { lock.unlock() }
        try removeEach(bans)
    }

    private func removeEach(_ bans: [(jail: String, ip: IPNetwork)]) throws(NftablesError) {
        // One transaction per element: a missing one (ENOENT) must not undo the others.
        for b in bans {
            let t = try Transaction(socket)
            try removeElement(t, jail: b.jail, ip: b.ip)
            try t.commit(ignoring: [ENOENT])
        }
    }

    /// What the jails' rules refused, per jail (their counters), read on a netlink socket of its own (a scrape never
    /// waits for a ban). Cheap: a few rules a jail.
    public static func readBlocked() throws(NftablesError) -> [String: (packets: UInt64, bytes: UInt64)] {
        var blocked: [String: (packets: UInt64, bytes: UInt64)] = [:]
        let prefix = "portcullis jail "
        for r in try readAll(pc_nft_rule_counter(), "read the rules of table inet \(table)", { pc_nft_rule_counters(table, $0, $1) }) {
            let comment = TextFormat.text(ofCArray: r.comment)
            guard comment.hasPrefix(prefix) else { continue }
            let jail = String(comment.dropFirst(prefix.count))
            let sum = blocked[jail] ?? (0, 0)
            blocked[jail] = (sum.packets + r.packets, sum.bytes + r.bytes)
        }
        return blocked
    }

    /// How many elements each jail's sets hold (jail → set name → addresses or networks), on sockets of their own.
    /// Not cheap: the kernel walks a hash set from its start again for every message of a dump, so 100,000 bans
    /// cost it about 0.7 s (measured; `/metrics` reads this at most once a minute).
    public static func readSetSizes() throws(NftablesError) -> [String: [String: Int]] {
        var elements: [String: [String: Int]] = [:]
        for s in try readAll(pc_nft_set_size(), "read the sets of table inet \(table)", { pc_nft_set_sizes(table, $0, $1) }) {
            let name = TextFormat.text(ofCArray: s.name)
            // `<jail>-v4`, `-v6`, `-n4`, `-n6`.
            guard name.count > 3, name.dropLast(2).hasSuffix("-") else { continue }
            elements[String(name.dropLast(3)), default: [:]][name] = Int(s.elements)
        }
        return elements
    }

    /// Records a C reader fills (it returns how many there are, or -errno): room for 256, and once more with room
    /// for all when there are more.
    private static func readAll<Record>(
        _ blank: Record, _ operation: String, _ read: (UnsafeMutablePointer<Record>, Int) -> Int32
    ) throws(NftablesError) -> ArraySlice<Record> {
        var room = 256
        while true {
            var records = [Record](repeating: blank, count: room)
            let n = records.withUnsafeMutableBufferPointer { read($0.baseAddress!, $0.count) }
            guard n >= 0 else { throw NftablesError(operation: operation, code: -n) }
            if Int(n) <= room { return records.prefix(Int(n)) }
            room = Int(n) + 64
        }
    }

    /// Deletes the table (at shutdown, as fail2ban removes its rules on stop).
    public func uninstall() throws(NftablesError) {
        lock.lock(); defer { lock.unlock() }
        let t = try Transaction(socket)
        try t.note(pc_nft_add_table(t.batch, NftablesFirewall.table), "create table inet \(NftablesFirewall.table)")
        try t.note(pc_nft_del_table(t.batch, NftablesFirewall.table), "delete table inet \(NftablesFirewall.table)")
        try t.commit()
    }
}
