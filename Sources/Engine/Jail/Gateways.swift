import FoundationEssentials
import Glibc
import Platform

/// The default gateways of this network namespace (IPv4 and IPv6 default routes).
///
/// Behind a proxy every client has the proxy's address. In a container that proxy is Docker's userland proxy (a
/// published port reached from the host's loopback, an IPv6 client on an IPv4-only network) or rootless Docker's
/// port driver, and the container sees it as the network's gateway. Banning the gateway would let one stranger lock
/// out every client that comes that way, so jails do not count failures from a gateway unless told to
/// (`ignoregateway = false`). Read from the kernel's route tables in /proc, again when the last reading is older
/// than `maxAge`: a change of routes is seen within seconds, and a log line costs no system call.
public final class Gateways: Sendable {
    public static let shared = Gateways()

    private let state = Locked<(addresses: Set<IPAddress>, readAt: Double)>(([], -Double.infinity))
    private let maxAge: Double
    private let read: @Sendable () -> Set<IPAddress>

    public init(maxAge: Double = 5, read: @escaping @Sendable () -> Set<IPAddress> = Gateways.fromProc) {
        self.maxAge = maxAge
        self.read = read
    }

    /// The gateways now (re-read when the last reading is stale).
    public func current(now: Double = Clock.now()) -> Set<IPAddress> {
        // abs: a clock that went back (or a caller's own clock) must not make a reading fresh for ever.
        if let fresh = state.withLock({ abs(now - $0.readAt) < maxAge ? $0.addresses : nil }) { return fresh }
        // Read outside the lock: two threads may both read, which is harmless.
        let addresses = read()
        state.withLock { $0 = (addresses, now) }
        return addresses
    }

    public func contains(_ ip: IPAddress, now: Double = Clock.now()) -> Bool { current(now: now).contains(ip) }

    /// The default routes' next hops from /proc/net/route and /proc/net/ipv6_route.
    public static func fromProc() -> Set<IPAddress> {
        let v4 = (try? String(contentsOfFile: "/proc/net/route", encoding: .utf8)).map(ipv4DefaultGateways) ?? []
        let v6 = (try? String(contentsOfFile: "/proc/net/ipv6_route", encoding: .utf8)).map(ipv6DefaultGateways) ?? []
        return Set(v4 + v6)
    }

    /// /proc/net/route: `Iface Destination Gateway Flags RefCnt Use Metric Mask …`, addresses as the hex of the
    /// 32-bit value in host byte order (so its bytes in memory are the address in network order).
    static func ipv4DefaultGateways(_ text: String) -> [IPAddress] {
        var out: [IPAddress] = []
        for line in text.split(separator: "\n").dropFirst() {
            let f = line.split(whereSeparator: { $0 == "\t" || $0 == " " })
            guard f.count >= 8, f[1] == "00000000", f[7] == "00000000",
                let gateway = UInt32(f[2], radix: 16), gateway != 0,
                let flags = UInt32(f[3], radix: 16), flags & 0x2 != 0
            else { continue }  // RTF_GATEWAY
            let bytes = withUnsafeBytes(of: gateway) { Array($0) }
            if let ip = IPAddress(bytes: bytes), !out.contains(ip) { out.append(ip) }
        }
        return out
    }

    /// /proc/net/ipv6_route: `dest plen src plen next-hop metric refcnt use flags iface`, addresses as 32 hex digits.
    static func ipv6DefaultGateways(_ text: String) -> [IPAddress] {
        var out: [IPAddress] = []
        for line in text.split(separator: "\n") {
            let f = line.split(separator: " ", omittingEmptySubsequences: true)
            guard f.count >= 10, f[0].allSatisfy({ $0 == "0" }), f[1] == "00", f[4].count == 32,
                !f[4].allSatisfy({ $0 == "0" })
            else { continue }
            var bytes: [UInt8] = []
            var i = f[4].startIndex
            while i < f[4].endIndex {
                let j = f[4].index(i, offsetBy: 2)
                guard let b = UInt8(f[4][i..<j], radix: 16) else { break }
                bytes.append(b)
                i = j
            }
            if let ip = IPAddress(bytes: bytes), !out.contains(ip) { out.append(ip) }
        }
        return out
    }

    /// What the jail logs, once, the first time it meets a failure from a gateway.
    public static func explanation(jail: String, address: IPAddress) -> String {
        "[\(jail)] Not banning \(address): it is this network namespace's default gateway. Failures from the gateway "
            + "are clients arriving through a proxy (Docker's userland proxy: a published port reached from the host's "
            + "loopback, or IPv6 clients on an IPv4-only network; rootless Docker's port driver), so their real "
            + "addresses are lost here, and banning the gateway would lock out every client that comes that way. "
            + "To see real addresses: enable IPv6 on the compose network, set \"userland-proxy\": false in the "
            + "engine's daemon.json, or run Portcullis in host mode (docs/deployment.md: Host mode). To ban the gateway anyway: "
            + "ignoregateway = false in the jail."
    }
}
