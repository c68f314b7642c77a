import Foundation
import CServerSupport
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

/// Opening listening sockets, with errors that say which address failed and why.
enum Listener {
    struct OpenError: Error, CustomStringConvertible {
        let description: String
    }

    /// The socket, and the address as bound (with the port the kernel chose for port 0).
    static func open(_ address: ListenAddress) throws(OpenError) -> (Int32, ListenAddress) {
        switch address.kind {
        case .tcp(let host, let port, let v6):
            let fd = try openTCP(host: host, port: port, v6: v6, name: address.description)
            var ss = sockaddr_storage()
            var len = socklen_t(MemoryLayout<sockaddr_storage>.size)
            _ = withUnsafeMutablePointer(to: &ss) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) } }
            let bound = withUnsafeBytes(of: &ss) { raw -> UInt16 in
                // sin_port and sin6_port sit at the same offset, in network order.
                UInt16(raw[2]) << 8 | UInt16(raw[3])
            }
            return (fd, ListenAddress(.tcp(host: host, port: bound, v6: v6)))
        case .unix(let path): return (try openUnix(path), address)
        }
    }

    private static func failure(_ what: String, _ name: String) -> OpenError {
        let e = errno
        var hint = ""
        if e == EADDRINUSE { hint = " (another process listens there: change [api] listen in portcullis.conf)" }
        if e == EACCES { hint = " (permission denied)" }
        if e == EADDRNOTAVAIL { hint = " (no interface has this address)" }
        return OpenError(description: "API listener \(name): \(what) failed: \(String(cString: strerror(e)))\(hint)")
    }

    private static func openTCP(host: String, port: UInt16, v6: Bool, name: String) throws(OpenError) -> Int32 {
        let fd = socket(v6 ? AF_INET6 : AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw failure("socket", name) }
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        if v6 {
            // IPv4 gets its own listener when wanted; [::] must not silently take IPv4 too.
            setsockopt(fd, Int32(IPPROTO_IPV6), IPV6_V6ONLY, &one, socklen_t(MemoryLayout<Int32>.size))
        }
        let rc = withSocketAddress(host: host, port: port, v6: v6) { bind(fd, $0, $1) }
        if rc != 0 { let e = failure("bind", name); close(fd); throw e }
        if listen(fd, 4096) != 0 { let e = failure("listen", name); close(fd); throw e }
        return fd
    }

    /// A numeric IPv4 or IPv6 address and port as the `sockaddr` that bind and connect take.
    static func withSocketAddress<T>(host: String, port: UInt16, v6: Bool, _ body: (UnsafePointer<sockaddr>, socklen_t) -> T) -> T {
        if v6 {
            var sa = sockaddr_in6()
            sa.sin6_family = sa_family_t(AF_INET6)
            sa.sin6_port = port.bigEndian
            inet_pton(AF_INET6, host, &sa.sin6_addr)
            return withUnsafePointer(to: &sa) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { body($0, socklen_t(MemoryLayout<sockaddr_in6>.size)) } }
        }
        var sa = sockaddr_in()
        sa.sin_family = sa_family_t(AF_INET)
        sa.sin_port = port.bigEndian
        inet_pton(AF_INET, host, &sa.sin_addr)
        return withUnsafePointer(to: &sa) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { body($0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
    }

    private static func unixAddress(_ path: String) throws(OpenError) -> sockaddr_un {
        var sa = sockaddr_un()
        sa.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: sa.sun_path) else {
            throw OpenError(description: "API socket \(path): the path is longer than \(MemoryLayout.size(ofValue: sa.sun_path) - 1) bytes")
        }
        withUnsafeMutableBytes(of: &sa.sun_path) { p in
            for (i, b) in bytes.enumerated() { p[i] = b }
        }
        return sa
    }

    private static func openUnix(_ path: String) throws(OpenError) -> Int32 {
        let name = "unix:" + path
        var sa = try unixAddress(path)
        let dir = (path as NSString).deletingLastPathComponent
        if !dir.isEmpty && !FileManager.default.fileExists(atPath: dir) {
            do {
                try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o755])
            } catch {
                throw OpenError(description: "API socket \(path): cannot create \(dir): \(error.localizedDescription)")
            }
        }
        // In a directory others can write to, anyone could put a symlink or their own socket where ours goes
        // (a sticky directory such as /tmp stops them from replacing what is ours).
        var dst = stat()
        if stat(dir.isEmpty ? "." : dir, &dst) == 0, dst.st_mode & (S_IWOTH | S_IWGRP) != 0, dst.st_mode & S_ISVTX == 0 {
            throw OpenError(description: "API socket \(path): the directory \(dir) can be written by others (mode \(String(dst.st_mode & 0o7777, radix: 8))) and is not sticky: choose a directory only root writes to (socket in [api] of portcullis.conf)")
        }
        // A socket file left by a daemon that died is replaced; one a running daemon answers on is not.
        var st = stat()
        if lstat(path, &st) == 0 {
            guard (st.st_mode & S_IFMT) == S_IFSOCK else {
                throw OpenError(description: "API socket \(path): the path exists and is not a socket")
            }
            let probe = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
            let live = withUnsafePointer(to: &sa) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(probe, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) } } == 0
            close(probe)
            if live { throw OpenError(description: "API socket \(path): another Portcullis answers there (is the daemon already running?)") }
            unlink(path)
        }
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw failure("socket", name) }
        // The socket appears at `path` with mode 0660 from the start (no window where others could connect): it is
        // bound in a private directory (0700), given its mode there, then renamed into place. Not through `umask`,
        // which is process-wide: the daemon's other threads create files meanwhile.
        var staging = Array((dir.isEmpty ? "." : dir).utf8CString.dropLast()) + Array("/.portcullis-XXXXXX".utf8CString)
        guard mkdtemp(&staging) != nil else { let e = failure("mkdtemp in \(dir)", name); close(fd); throw e }
        let stagingDir = String(decoding: staging.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        let stagingPath = stagingDir + "/s"
        defer { rmdir(stagingDir) }
        do {
            let stagedAddress = try? unixAddress(stagingPath)
            var staged = stagedAddress ?? sa
            let direct = stagedAddress == nil  // the staging path is too long: bind in place
            let rc = withUnsafePointer(to: &staged) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) } }
            if rc != 0 { let e = failure("bind", name); close(fd); throw e }
            let bound = direct ? path : stagingPath
            if !setSocketMode(bound) || (!direct && rename(stagingPath, path) != 0) {
                let e = failure(direct ? "chmod" : "rename into place", name)
                unlink(bound)
                close(fd)
                throw e
            }
        }
        if listen(fd, 1024) != 0 { let e = failure("listen", name); close(fd); throw e }
        return fd
    }

    /// Gives the socket file just bound at `path` mode 0660 without following a symlink put in its place: the
    /// node is opened with O_PATH|O_NOFOLLOW, checked to be a socket of ours, and changed through /proc/self/fd,
    /// which names that very node.
    private static func setSocketMode(_ path: String) -> Bool {
        let node = pc_open_node(path)
        guard node >= 0 else { return false }
        defer { close(node) }
        var onDisk = stat()
        guard fstat(node, &onDisk) == 0, onDisk.st_mode & S_IFMT == S_IFSOCK,
              onDisk.st_uid == geteuid() else {
            errno = EPERM
            return false
        }
        return chmod("/proc/self/fd/\(node)", 0o660) == 0
    }

    /// The connected address of a Unix socket path, for clients.
    static func connectUnix(_ path: String) throws(OpenError) -> Int32 {
        var sa = try unixAddress(path)
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw failure("socket", path) }
        let rc = withUnsafePointer(to: &sa) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) } }
        if rc != 0 {
            let e = OpenError(description: String(cString: strerror(errno)))
            close(fd)
            throw e
        }
        return fd
    }
}
