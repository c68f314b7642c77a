import FoundationEssentials
import Glibc

/// The addresses a jail never bans: `ignoreip` entries (addresses, networks, host names resolved at load time)
/// and, with `ignoreself`, the machine's own addresses.
public struct IgnoreList: Sendable {
    public private(set) var networks: [IPNetwork] = []
    private var singles = Set<IPAddress>()
    /// Host names as written, with what they resolved to (for `portcullis check`).
    public private(set) var hostNames: [(name: String, addresses: [IPAddress])] = []
    public var ignoreSelf: Bool

    public init(ignoreSelf: Bool = true) {
        self.ignoreSelf = ignoreSelf
    }

    /// Parses an `ignoreip` value (entries separated by spaces, commas or new lines). Host names are resolved
    /// once, here; a name that does not resolve is reported in `problems`.
    public static func parse(
        _ text: String, ignoreSelf: Bool, resolve: (String) -> [IPAddress] = IgnoreList.resolve
    )
        -> (list: IgnoreList, problems: [String])
    {
        var list = IgnoreList(ignoreSelf: ignoreSelf)
        var problems: [String] = []
        for raw in text.split(whereSeparator: { $0 == "," || $0 == " " || $0 == "\n" || $0 == "\t" }) {
            let entry = String(raw)
            if let net = IPNetwork(entry) {
                list.add(net)
            } else if entry.hasPrefix("file:") || entry.hasPrefix("!") {
                problems.append("ignoreip entry '\(entry)' is not supported (list addresses, networks or host names)")
            } else if entry.contains("/") || entry.first?.isNumber == true && entry.allSatisfy({ $0.isNumber || $0 == "." }) {
                problems.append("ignoreip entry '\(entry)' is not a valid address or network")
            } else {
                let addresses = resolve(entry)
                if addresses.isEmpty { problems.append("ignoreip host name '\(entry)' does not resolve") }
                list.hostNames.append((entry, addresses))
                for a in addresses { list.add(IPNetwork(address: a, prefix: a.isIPv4 ? 32 : 128)) }
            }
        }
        return (list, problems)
    }

    public mutating func add(_ network: IPNetwork) {
        if network.isSingleAddress { singles.insert(network.address) } else { networks.append(network) }
    }

    public var entries: [IPNetwork] {
        singles.sorted().map { IPNetwork(address: $0, prefix: $0.isIPv4 ? 32 : 128) } + networks
    }

    /// Why `ip` is ignored, nil when it is not.
    public func reason(for ip: IPAddress) -> String? {
        if ignoreSelf && SelfAddresses.current.contains(ip) { return "ignoreself (an address of this host)" }
        if singles.contains(ip) { return "ignoreip \(ip)" }
        if let net = networks.first(where: { $0.contains(ip) }) { return "ignoreip \(net)" }
        return nil
    }

    public func contains(_ ip: IPAddress) -> Bool { reason(for: ip) != nil }

    /// Why a ban of `network` would reach an ignored address (one inside it, or an ignored network it overlaps),
    /// nil when it would not. For a single address, `reason(for:)`.
    public func reason(covering network: IPNetwork) -> String? {
        if network.isSingleAddress { return reason(for: network.address) }
        if ignoreSelf, let own = SelfAddresses.current.filter({ network.contains($0) }).min() {
            return "ignoreself: it contains \(own), an address of this host"
        }
        if let single = singles.filter({ network.contains($0) }).min() { return "it contains \(single), in ignoreip" }
        if let net = networks.first(where: { $0.overlaps(network) }) { return "it overlaps \(net), in ignoreip" }
        return nil
    }

    /// Resolves a host name with `getaddrinfo` (only at configuration time, never per log line).
    public static func resolve(_ name: String) -> [IPAddress] {
        var hints = addrinfo()
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var result: UnsafeMutablePointer<addrinfo>? = nil
        guard getaddrinfo(name, nil, &hints, &result) == 0, let first = result else { return [] }
        defer { freeaddrinfo(first) }
        var out: [IPAddress] = []
        var p: UnsafeMutablePointer<addrinfo>? = first
        while let ai = p {
            if let sa = ai.pointee.ai_addr, let ip = SelfAddresses.address(sa) {
                if !out.contains(ip) { out.append(ip) }
            }
            p = ai.pointee.ai_next
        }
        return out
    }
}

/// The addresses of this host's interfaces (fail2ban's `ignoreself`), plus loopback.
public enum SelfAddresses {
    public static let current: Set<IPAddress> = {
        var set: Set<IPAddress> = [IPAddress("127.0.0.1")!, IPAddress("::1")!]
        _ = forEachInterface { ifa in
            if let sa = ifa.ifa_addr, let ip = address(sa) { set.insert(ip) }
        }
        return set
    }()

    /// Calls `body` with every entry `getifaddrs` lists (this thread's network namespace: netlink, not a sysfs
    /// mounted for another). False when the list could not be read.
    static func forEachInterface(_ body: (ifaddrs) -> Void) -> Bool {
        var list: UnsafeMutablePointer<ifaddrs>? = nil
        guard getifaddrs(&list) == 0, let first = list else { return false }
        defer { freeifaddrs(first) }
        var p: UnsafeMutablePointer<ifaddrs>? = first
        while let ifa = p {
            body(ifa.pointee)
            p = ifa.pointee.ifa_next
        }
        return true
    }

    static func address(_ sa: UnsafeMutablePointer<sockaddr>) -> IPAddress? {
        switch Int32(sa.pointee.sa_family) {
        case AF_INET:
            return sa.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { IPAddress.v4(UInt32(bigEndian: $0.pointee.sin_addr.s_addr)) }
        case AF_INET6:
            let bytes = sa.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { p in withUnsafeBytes(of: p.pointee.sin6_addr) { Array($0) } }
            var hi: UInt64 = 0, lo: UInt64 = 0
            for i in 0..<8 { hi = hi << 8 | UInt64(bytes[i]) }
            for i in 8..<16 { lo = lo << 8 | UInt64(bytes[i]) }
            if hi == 0 && lo >> 32 == 0xffff { return .v4(UInt32(truncatingIfNeeded: lo)) }
            return .v6(hi, lo)
        default:
            return nil
        }
    }
}
