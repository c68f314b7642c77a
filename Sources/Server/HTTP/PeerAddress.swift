import Glibc

/// A TCP client's address, to count its connections: IPv4 kept in its IPv4-mapped IPv6 form, so that a client is
/// one client whichever way it reached a dual-stack listener.
struct PeerAddress: Hashable, Sendable, CustomStringConvertible {
    /// The sixteen bytes of the IPv6 (or IPv4-mapped) address, in network order.
    private let high: UInt64
    private let low: UInt64

    private init(_ bytes: UnsafeRawBufferPointer) {
        var h: UInt64 = 0, l: UInt64 = 0
        for i in 0..<8 { h = h << 8 | UInt64(bytes[i]) }
        for i in 8..<16 { l = l << 8 | UInt64(bytes[i]) }
        high = h
        low = l
    }

    /// The peer of a connected socket; nil for a Unix-domain socket or when it cannot be read.
    init?(ofConnected fd: Int32) {
        var ss = sockaddr_storage()
        var len = socklen_t(MemoryLayout<sockaddr_storage>.size)
        guard withUnsafeMutablePointer(to: &ss, { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getpeername(fd, $0, &len) } }) == 0 else { return nil }
        let family = Int32(ss.ss_family)
        var mapped = [UInt8](repeating: 0, count: 16)
        let ok = withUnsafeBytes(of: &ss) { raw -> Bool in
            switch family {
            case AF_INET:
                mapped[10] = 0xff
                mapped[11] = 0xff
                for i in 0..<4 { mapped[12 + i] = raw[4 + i] }
                return true
            case AF_INET6:
                for i in 0..<16 { mapped[i] = raw[8 + i] }
                return true
            default: return false
            }
        }
        guard ok else { return nil }
        self = mapped.withUnsafeBytes { PeerAddress($0) }
    }

    private var isIPv4Mapped: Bool { high == 0 && low >> 32 == 0xffff }

    var description: String {
        var bytes = [UInt8](repeating: 0, count: 16)
        for i in 0..<8 {
            bytes[i] = UInt8(truncatingIfNeeded: high >> (56 - 8 * i))
            bytes[8 + i] = UInt8(truncatingIfNeeded: low >> (56 - 8 * i))
        }
        var text = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN))
        if isIPv4Mapped {
            _ = bytes.withUnsafeBytes { inet_ntop(AF_INET, $0.baseAddress! + 12, &text, socklen_t(text.count)) }
        } else {
            _ = bytes.withUnsafeBytes { inet_ntop(AF_INET6, $0.baseAddress, &text, socklen_t(text.count)) }
        }
        return String(decoding: text.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}
