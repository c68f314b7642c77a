/// An address with a prefix length: an `ignoreip` entry such as `192.0.2.0/24`, or what a ban covers (one
/// address is a network of its full length, /32 or /128). Always normalized: the host bits of `address` are zero.
/// An IPv4-mapped IPv6 network (`::ffff:198.51.100.0/120`) is the IPv4 network it maps (`198.51.100.0/24`).
public struct IPNetwork: Hashable, Sendable, Comparable, CustomStringConvertible {
    public let address: IPAddress
    public let prefix: Int

    /// The network of `prefix` bits around `address` (host bits cleared; a prefix outside 0…32 or 0…128 is
    /// taken as the nearest end).
    public init(address: IPAddress, prefix: Int) {
        let bits = min(max(prefix, 0), address.isIPv4 ? 32 : 128)
        self.prefix = bits
        switch address {
        case .v4(let a): self.address = .v4(a & IPNetwork.mask4(bits))
        case .v6(let hi, let lo):
            let (mh, ml) = IPNetwork.mask6(bits)
            self.address = .v6(hi & mh, lo & ml)
        }
    }

    /// One address.
    public init(_ address: IPAddress) {
        self.address = address
        self.prefix = address.isIPv4 ? 32 : 128
    }

    /// Lenient, as fail2ban reads `ignoreip`: `a.b.c.d`, `a.b.c.d/n`, `a.b.c.d/255.255.255.0`, `x::y`, `x::y/n`,
    /// `[x::y]/n`; host bits are cleared.
    public init?(_ text: some StringProtocol) {
        let parts = text.split(separator: "/", maxSplits: 1, omittingEmptySubsequences: false)
        guard let address = IPAddress(parts[0]) else { return nil }
        let written6 = parts[0].contains(":")
        var prefix = address.isIPv4 ? 32 : 128
        if parts.count == 2 {
            if let n = Int(parts[1]), n >= 0, n <= (written6 ? 128 : 32) {
                prefix = n
            } else if let mask = IPAddress(parts[1]) {
                // A dotted mask: count its leading ones.
                switch mask {
                case .v4(let m): prefix = m.leadingZeroBitCount == 0 ? (~m).leadingZeroBitCount : 0
                case .v6(let h, let l): prefix = h == ~0 ? 64 + (~l).leadingZeroBitCount : (~h).leadingZeroBitCount
                }
            } else {
                return nil
            }
            // An IPv4-mapped IPv6 network is written with an IPv6 prefix length.
            if address.isIPv4 && written6 { prefix = max(0, prefix - 96) }
        }
        self.init(address: address, prefix: prefix)
    }

    /// Why a network written by hand (the API, the CLI) is refused.
    public enum ParseError: Error, Equatable, CustomStringConvertible {
        case notAnAddress(String)
        case badPrefix(String, family: String, max: Int)
        /// `::ffff:a.b.c.d/n` with n below 96 reaches beyond the mapped IPv4 space.
        case mappedPrefix(String)

        public var description: String {
            switch self {
            case .notAnAddress(let t): "'\(IPNetwork.shown(t))' is not an IPv4 or IPv6 address or network"
            case .badPrefix(let t, let family, let max): "'\(IPNetwork.shown(t))': an \(family) prefix length is a whole number from 0 to \(max)"
            case .mappedPrefix(let t): "'\(IPNetwork.shown(t))': an IPv4-mapped network needs a prefix of at least 96"
            }
        }
    }

    static func shown(_ text: String) -> String { text.count > 64 ? String(text.prefix(64)) + "…" : text }

    /// Strict, for what an operator types (`198.51.100.0/24`, `2001:db8::/64`, `198.51.100.7`): a decimal prefix
    /// only (no dotted masks, no signs). Host bits beyond the prefix are cleared (`198.51.100.7/24` is
    /// 198.51.100.0/24), as fail2ban's `ignoreip` and Python's `ip_network(strict=False)` read it; whoever shows the
    /// result shows the network, so the widening is visible.
    public init(parsing text: String) throws(ParseError) {
        let parts = text.split(separator: "/", maxSplits: 1, omittingEmptySubsequences: false)
        guard let address = IPAddress(parts[0]) else { throw .notAnAddress(text) }
        guard parts.count == 2 else {
            self.init(address)
            return
        }
        let written6 = parts[0].contains(":")
        let max = written6 ? 128 : 32
        let digits = parts[1]
        guard !digits.isEmpty, digits.count <= 3, digits.allSatisfy({ $0.isASCII && $0.isNumber }), digits == "0" || digits.first != "0",
            let n = Int(digits), n <= max
        else {
            throw .badPrefix(text, family: written6 ? "IPv6" : "IPv4", max: max)
        }
        var prefix = n
        if address.isIPv4 && written6 {
            guard n >= 96 else { throw .mappedPrefix(text) }
            prefix = n - 96
        }
        self.init(address: address, prefix: prefix)
    }

    static func mask4(_ prefix: Int) -> UInt32 { prefix <= 0 ? 0 : prefix >= 32 ? ~0 : ~UInt32(0) << UInt32(32 - prefix) }

    static func mask6(_ prefix: Int) -> (UInt64, UInt64) {
        if prefix <= 0 { return (0, 0) }
        if prefix >= 128 { return (~0, ~0) }
        if prefix <= 64 { return (prefix == 64 ? ~0 : ~UInt64(0) << UInt64(64 - prefix), 0) }
        return (~0, ~UInt64(0) << UInt64(128 - prefix))
    }

    public var isIPv4: Bool { address.isIPv4 }
    public var maxPrefix: Int { address.isIPv4 ? 32 : 128 }
    public var isSingleAddress: Bool { prefix == maxPrefix }

    /// Why no connection can come from this network: it is one address that never sends, or lies wholly in a
    /// range that never does (0.0.0.0/8, multicast). nil for a network clients can be in.
    public var neverASource: String? {
        if isSingleAddress { return address.neverASource }
        for (range, what) in IPNetwork.silentRanges where range.contains(self) { return "it lies in \(range), \(what)" }
        return nil
    }

    private static let silentRanges: [(IPNetwork, String)] = [
        (IPNetwork(address: .v4(0), prefix: 8), "which means \"this network\" and never sends"),
        (IPNetwork(address: .v4(0xe000_0000), prefix: 4), "the multicast range"),
        (IPNetwork(address: .v6(0xff00 << 48, 0), prefix: 8), "the multicast range"),
    ]

    public func contains(_ ip: IPAddress) -> Bool {
        switch (address, ip) {
        case (.v4(let net), .v4(let a)):
            return a & IPNetwork.mask4(prefix) == net
        case (.v6(let nh, let nl), .v6(let h, let l)):
            let (mh, ml) = IPNetwork.mask6(prefix)
            return h & mh == nh && l & ml == nl
        default:
            return false
        }
    }

    /// `other` lies inside this network (or is it).
    public func contains(_ other: IPNetwork) -> Bool { other.prefix >= prefix && contains(other.address) }

    /// The two share an address: for prefixes, one contains the other.
    public func overlaps(_ other: IPNetwork) -> Bool { contains(other) || other.contains(self) }

    /// The first address after the network, as network-order bytes: the exclusive end of an nftables interval.
    /// nil when the network runs to the last address of its family (the interval is open at the top).
    public var endBytes: [UInt8]? {
        switch address {
        case .v4(let a):
            let end = UInt64(a) + (UInt64(1) << UInt64(32 - prefix))
            return end > UInt64(UInt32.max) ? nil : IPAddress.v4(UInt32(end)).bytes
        case .v6(let hi, let lo):
            // Add the network's size: below bit 64 into the low word (carrying into the high one), else into the
            // high word.
            if prefix > 64 {
                let (sum, carry) = lo.addingReportingOverflow(UInt64(1) << UInt64(128 - prefix))
                if !carry { return IPAddress.v6(hi, sum).bytes }
                return hi == UInt64.max ? nil : IPAddress.v6(hi + 1, 0).bytes
            }
            guard prefix > 0 else { return nil }
            let (sum, carry) = hi.addingReportingOverflow(UInt64(1) << UInt64(64 - prefix))
            return carry ? nil : IPAddress.v6(sum, 0).bytes
        }
    }

    public var description: String { isSingleAddress ? address.description : "\(address)/\(prefix)" }

    /// By address, then the wider network first.
    public static func < (a: IPNetwork, b: IPNetwork) -> Bool { a.address != b.address ? a.address < b.address : a.prefix < b.prefix }
}
