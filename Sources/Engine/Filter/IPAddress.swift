import Glibc

/// An IPv4 or IPv6 address. IPv4-mapped IPv6 addresses (`::ffff:192.0.2.1`) are folded to IPv4, as fail2ban does.
public enum IPAddress: Hashable, Sendable, Comparable, CustomStringConvertible {
    case v4(UInt32)
    case v6(UInt64, UInt64)

    /// Parses a textual address; brackets around IPv6 (`[2001:db8::1]`) are accepted. The corresponding C
    /// function is `inet_pton`.
    public init?(_ text: some StringProtocol) {
        var s = String(text)
        if s.count > 2, s.hasPrefix("["), s.hasSuffix("]") { s = String(s.dropFirst().dropLast()) }
        if s.contains(":") {
            var a = in6_addr()
            guard inet_pton(AF_INET6, s, &a) == 1 else { return nil }
            let bytes = withUnsafeBytes(of: a) { Array($0) }
            var hi: UInt64 = 0, lo: UInt64 = 0
            for i in 0..<8 { hi = hi << 8 | UInt64(bytes[i]) }
            for i in 8..<16 { lo = lo << 8 | UInt64(bytes[i]) }
            if hi == 0 && lo >> 32 == 0xffff {
                self = .v4(UInt32(truncatingIfNeeded: lo))
            } else {
                self = .v6(hi, lo)
            }
        } else {
            var a = in_addr()
            guard inet_pton(AF_INET, s, &a) == 1 else { return nil }
            self = .v4(UInt32(bigEndian: a.s_addr))
        }
    }

    /// Parses a NUL-terminated address without making a `String`.
    init?(cString s: UnsafePointer<CChar>) {
        if strchr(s, 58) != nil {  // ':'
            var a = in6_addr()
            guard inet_pton(AF_INET6, s, &a) == 1 else { return nil }
            let (hi, lo) = withUnsafeBytes(of: a) { b -> (UInt64, UInt64) in
                var hi: UInt64 = 0, lo: UInt64 = 0
                for i in 0..<8 { hi = hi << 8 | UInt64(b[i]) }
                for i in 8..<16 { lo = lo << 8 | UInt64(b[i]) }
                return (hi, lo)
            }
            self = hi == 0 && lo >> 32 == 0xffff ? .v4(UInt32(truncatingIfNeeded: lo)) : .v6(hi, lo)
        } else {
            var a = in_addr()
            guard inet_pton(AF_INET, s, &a) == 1 else { return nil }
            self = .v4(UInt32(bigEndian: a.s_addr))
        }
    }

    /// From network-order bytes, as `bytes` gives them: 4 for IPv4, 16 for IPv6 (IPv4-mapped folded to IPv4).
    public init?(bytes b: [UInt8]) {
        if b.count == 4 {
            self = .v4(UInt32(b[0]) << 24 | UInt32(b[1]) << 16 | UInt32(b[2]) << 8 | UInt32(b[3]))
            return
        }
        guard b.count == 16 else { return nil }
        var hi: UInt64 = 0, lo: UInt64 = 0
        for i in 0..<8 { hi = hi << 8 | UInt64(b[i]) }
        for i in 8..<16 { lo = lo << 8 | UInt64(b[i]) }
        self = hi == 0 && lo >> 32 == 0xffff ? .v4(UInt32(truncatingIfNeeded: lo)) : .v6(hi, lo)
    }

    public var isIPv4: Bool { if case .v4 = self { return true } else { return false } }

    /// Why no connection can come from this address (unspecified, broadcast, multicast): banning it would do
    /// nothing but hide a parsing mistake. nil for an address that can be a client.
    public var neverASource: String? {
        switch self {
        case .v4(let a):
            if a >> 24 == 0 { return "it is in 0.0.0.0/8, which means \"this network\" and never sends" }
            if a == 0xffff_ffff { return "it is the broadcast address" }
            if a >> 28 == 0xe { return "it is a multicast address (224.0.0.0/4)" }
            return nil
        case .v6(let hi, let lo):
            if hi == 0 && lo == 0 { return "it is the unspecified address ::" }
            if hi >> 56 == 0xff { return "it is a multicast address (ff00::/8)" }
            return nil
        }
    }

    /// 127.0.0.1 and ::1: the addresses this host's own clients (the CLI over TCP, health checks) come from.
    public var isPrimaryLoopback: Bool { self == .v4(0x7f00_0001) || self == .v6(0, 1) }

    /// Network-order bytes (4 or 16).
    public var bytes: [UInt8] {
        switch self {
        case .v4(let a): return withUnsafeBytes(of: a.bigEndian) { Array($0) }
        case .v6(let hi, let lo): return withUnsafeBytes(of: hi.bigEndian) { Array($0) } + withUnsafeBytes(of: lo.bigEndian) { Array($0) }
        }
    }

    public var description: String {
        var buffer = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN) + 1)
        switch self {
        case .v4(let a):
            var addr = in_addr(s_addr: a.bigEndian)
            inet_ntop(AF_INET, &addr, &buffer, socklen_t(buffer.count))
        case .v6:
            var addr = in6_addr()
            let b = bytes
            withUnsafeMutableBytes(of: &addr) { raw in for i in 0..<16 { raw[i] = b[i] } }
            inet_ntop(AF_INET6, &addr, &buffer, socklen_t(buffer.count))
        }
        let end = buffer.firstIndex(of: 0) ?? buffer.count
        return String(decoding: buffer[..<end].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    public static func < (a: IPAddress, b: IPAddress) -> Bool {
        switch (a, b) {
        case (.v4(let x), .v4(let y)): return x < y
        case (.v4, .v6): return true
        case (.v6, .v4): return false
        case (.v6(let h1, let l1), .v6(let h2, let l2)): return h1 != h2 ? h1 < h2 : l1 < l2
        }
    }
}
