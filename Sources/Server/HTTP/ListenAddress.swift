import Glibc

/// A listening socket: TCP on one address, or a Unix-domain socket path.
public struct ListenAddress: Sendable, Equatable, CustomStringConvertible {
    public enum Kind: Sendable, Equatable {
        case tcp(host: String, port: UInt16, v6: Bool)
        case unix(path: String)
    }

    public let kind: Kind

    public init(_ kind: Kind) { self.kind = kind }

    public struct Invalid: Error, CustomStringConvertible {
        public let description: String
    }

    /// `127.0.0.1:9191`, `[::1]:9191`, `0.0.0.0:9191`, `[::]:9191`.
    public static func tcp(_ text: String) throws(Invalid) -> ListenAddress {
        let host: String, portText: Substring
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]"), text[text.index(after: close)...].hasPrefix(":") else {
                throw Invalid(description: "listen = \(text): an IPv6 address is written [address]:port")
            }
            host = String(text[text.index(after: text.startIndex)..<close])
            portText = text[text.index(close, offsetBy: 2)...]
        } else {
            guard let colon = text.lastIndex(of: ":"), !text[..<colon].contains(":") else {
                throw Invalid(description: "listen = \(text): expected host:port, e.g. 127.0.0.1:9191 or [::1]:9191")
            }
            host = String(text[..<colon])
            portText = text[text.index(after: colon)...]
        }
        // Port 0 takes a free port (tests); the log names the one bound.
        guard let port = UInt16(portText) else {
            throw Invalid(description: "listen = \(text): '\(portText)' is not a port number (1-65535)")
        }
        var v4 = in_addr(), v6 = in6_addr()
        if inet_pton(AF_INET, host, &v4) == 1 { return ListenAddress(.tcp(host: host, port: port, v6: false)) }
        if inet_pton(AF_INET6, host, &v6) == 1 { return ListenAddress(.tcp(host: host, port: port, v6: true)) }
        if host == "localhost" { return ListenAddress(.tcp(host: "127.0.0.1", port: port, v6: false)) }
        throw Invalid(description: "listen = \(text): '\(host)' is not an IPv4 or IPv6 address")
    }

    /// Whether only this machine can reach it (127.0.0.0/8, ::1, or a Unix socket).
    public var isLoopback: Bool {
        switch kind {
        case .unix: return true
        case .tcp(let host, _, let v6):
            if v6 {
                var a = in6_addr()
                guard inet_pton(AF_INET6, host, &a) == 1 else { return false }
                return withUnsafeBytes(of: &a) { b in b.prefix(15).allSatisfy { $0 == 0 } && b[15] == 1 }
            }
            return host.hasPrefix("127.")
        }
    }

    public var description: String {
        switch kind {
        case .unix(let path): return "unix:" + path
        case .tcp(let host, let port, let v6): return v6 ? "[\(host)]:\(port)" : "\(host):\(port)"
        }
    }
}
