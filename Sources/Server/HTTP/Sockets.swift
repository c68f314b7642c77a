import Glibc
import Platform

/// A socket that failed to open, bind, listen or connect: which address, which step, the errno as data.
public struct SocketError: Error, CustomStringConvertible {
    /// The address as configured (`127.0.0.1:9191`, `unix:/run/portcullis/api.sock`).
    public let address: String
    /// What failed: `bind`, `listen`, `connect`, or a sentence when no system call is at fault.
    public let step: String
    public let errno: Errno?

    public var description: String {
        guard let errno else { return "\(address): \(step)" }
        var hint = ""
        switch errno.rawValue {
        case EADDRINUSE: hint = " (another process listens there: change [api] listen in portcullis.conf)"
        case EADDRNOTAVAIL: hint = " (no interface has this address)"
        default: break
        }
        return "\(address): \(step) failed: \(errno.message)\(hint)"
    }
}

/// A socket the server listens on, and the address it is bound to (with the port the kernel chose for port 0).
public final class ListeningSocket: Sendable {
    public let descriptor: FileDescriptor
    public let address: ListenAddress

    init(_ descriptor: consuming FileDescriptor, _ address: ListenAddress) {
        self.descriptor = descriptor
        self.address = address
    }
}

/// Opening sockets: listeners for the server, connections for clients; errors say which address and why.
public enum Sockets {
    /// Opens and binds a listener (non-blocking, close-on-exec).
    public static func listen(_ address: ListenAddress) throws(SocketError) -> ListeningSocket {
        switch address.kind {
        case .tcp(let host, let port, let v6):
            let fd = try openTCP(host: host, port: port, v6: v6, name: "API listener " + address.description)
            var ss = sockaddr_storage()
            var len = socklen_t(MemoryLayout<sockaddr_storage>.size)
            _ = withUnsafeMutablePointer(to: &ss) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd.rawValue, $0, &len) } }
            let bound = withUnsafeBytes(of: &ss) { raw -> UInt16 in
                // sin_port and sin6_port sit at the same offset, in network order.
                UInt16(raw[2]) << 8 | UInt16(raw[3])
            }
            return ListeningSocket(fd, ListenAddress(.tcp(host: host, port: bound, v6: v6)))
        case .unix(let path):
            return ListeningSocket(try openUnix(path), address)
        }
    }

    /// A connected TCP socket (blocking, close-on-exec) to a numeric address.
    public static func connectTCP(host: String, port: UInt16) throws(SocketError) -> FileDescriptor {
        let v6 = host.contains(":")
        let name = v6 ? "[\(host)]:\(port)" : "\(host):\(port)"
        let fd = try socket(v6 ? AF_INET6 : AF_INET, SOCK_STREAM.rawValue | SOCK_CLOEXEC.rawValue, name)
        try call("connect", name) { withSocketAddress(host: host, port: port, v6: v6) { Glibc.connect(fd.rawValue, $0, $1) } }
        return fd
    }

    /// A connected Unix-domain socket (blocking, close-on-exec).
    public static func connectUnix(_ path: String) throws(SocketError) -> FileDescriptor {
        var sa = try unixAddress(path)
        let fd = try socket(AF_UNIX, SOCK_STREAM.rawValue | SOCK_CLOEXEC.rawValue, path)
        try call("connect", path) {
            withUnsafePointer(to: &sa) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd.rawValue, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
            }
        }
        return fd
    }

    private static func socket(_ family: Int32, _ type: UInt32, _ name: String) throws(SocketError) -> FileDescriptor {
        switch valueOrErrno({ Glibc.socket(family, Int32(type), 0) }) {
        case .success(let fd): return FileDescriptor(owning: fd)
        case .failure(let e): throw SocketError(address: name, step: "socket", errno: e)
        }
    }

    /// Runs a call that returns 0 or -1 with errno (EINTR retried); a failure names `step` and `name`.
    private static func call(_ step: String, _ name: String, _ body: () -> Int32) throws(SocketError) {
        if case .failure(let e) = nothingOrErrno(body) { throw SocketError(address: name, step: step, errno: e) }
    }

    private static func openTCP(host: String, port: UInt16, v6: Bool, name: String) throws(SocketError) -> FileDescriptor {
        let fd = try socket(v6 ? AF_INET6 : AF_INET, SOCK_STREAM.rawValue | SOCK_NONBLOCK.rawValue | SOCK_CLOEXEC.rawValue, name)
        var one: Int32 = 1
        setsockopt(fd.rawValue, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        if v6 {
            // IPv4 gets its own listener when wanted; [::] must not silently take IPv4 too.
            setsockopt(fd.rawValue, Int32(IPPROTO_IPV6), IPV6_V6ONLY, &one, socklen_t(MemoryLayout<Int32>.size))
        }
        try call("bind", name) { withSocketAddress(host: host, port: port, v6: v6) { bind(fd.rawValue, $0, $1) } }
        try call("listen", name) { Glibc.listen(fd.rawValue, 4096) }
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

    private static func unixAddress(_ path: String) throws(SocketError) -> sockaddr_un {
        var sa = sockaddr_un()
        sa.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: sa.sun_path) else {
            throw SocketError(address: "API socket \(path)", step: "the path is longer than \(MemoryLayout.size(ofValue: sa.sun_path) - 1) bytes", errno: nil)
        }
        withUnsafeMutableBytes(of: &sa.sun_path) { p in
            for (i, b) in bytes.enumerated() { p[i] = b }
        }
        return sa
    }

    private static func openUnix(_ path: String) throws(SocketError) -> FileDescriptor {
        let name = "API socket " + path
        let sa = try unixAddress(path)
        let dir = Path.directory(of: path)
        try makeDirectory(dir, name)
        // In a directory others can write to, anyone could put a symlink or their own socket where ours goes
        // (a sticky directory such as /tmp stops them from replacing what is ours).
        var dst = stat()
        if stat(dir.isEmpty ? "." : dir, &dst) == 0, dst.st_mode & (S_IWOTH | S_IWGRP) != 0, dst.st_mode & S_ISVTX == 0 {
            throw SocketError(
                address: name,
                step:
                    "the directory \(dir) can be written by others (mode \(String(dst.st_mode & 0o7777, radix: 8))) and is not sticky: choose a directory only root writes to (socket in [api] of portcullis.conf)",
                errno: nil)
        }
        // A socket file left by a daemon that died is replaced; one a running daemon answers on is not.
        var st = stat()
        if lstat(path, &st) == 0 {
            guard (st.st_mode & S_IFMT) == S_IFSOCK else {
                throw SocketError(address: name, step: "the path exists and is not a socket", errno: nil)
            }
            if (try? connectUnix(path)) != nil {
                throw SocketError(address: name, step: "another Portcullis answers there (is the daemon already running?)", errno: nil)
            }
            unlink(path)
        }
        let fd = try socket(AF_UNIX, SOCK_STREAM.rawValue | SOCK_NONBLOCK.rawValue | SOCK_CLOEXEC.rawValue, name)
        // The socket appears at `path` with mode 0660 from the start (no window where others could connect): it is
        // bound in a private directory (0700), given its mode there, then renamed into place. Not through `umask`,
        // which is process-wide: the daemon's other threads create files meanwhile.
        var staging = Array((dir.isEmpty ? "." : dir).utf8CString.dropLast()) + Array("/.portcullis-XXXXXX".utf8CString)
        guard mkdtemp(&staging) != nil else { throw SocketError(address: name, step: "mkdtemp in \(dir)", errno: .current) }
        let stagingDir = String(decoding: staging.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        let stagingPath = stagingDir + "/s"
        defer { rmdir(stagingDir) }
        let stagedAddress = try? unixAddress(stagingPath)
        var staged = stagedAddress ?? sa
        let direct = stagedAddress == nil  // the staging path is too long: bind in place
        try call("bind", name) {
            withUnsafePointer(to: &staged) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd.rawValue, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
            }
        }
        let bound = direct ? path : stagingPath
        do {
            try setSocketMode(bound)
            if !direct { try call("rename into place", name) { rename(stagingPath, path) } }
        } catch {
            unlink(bound)
            throw SocketError(address: name, step: direct ? "chmod" : "rename into place", errno: error.errno)
        }
        try call("listen", name) { Glibc.listen(fd.rawValue, 1024) }
        return fd
    }

    /// Creates the socket's directory (0755) and its parents when missing.
    private static func makeDirectory(_ dir: String, _ name: String) throws(SocketError) {
        guard !dir.isEmpty, !Path.exists(dir) else { return }
        try makeDirectory(Path.directory(of: dir), name)
        if mkdir(dir, 0o755) != 0 && errno != EEXIST {
            throw SocketError(address: name, step: "creating \(dir)", errno: .current)
        }
    }

    /// Gives the socket file just bound at `path` mode 0660 without following a symlink put in its place: the
    /// node is opened with O_PATH|O_NOFOLLOW, checked to be a socket of ours, and changed through /proc/self/fd,
    /// which names that very node.
    private static func setSocketMode(_ path: String) throws(SocketError) {
        do throws(Errno) {
            let node = try FileDescriptor.openNode(path)
            var onDisk = stat()
            guard fstat(node.rawValue, &onDisk) == 0, onDisk.st_mode & S_IFMT == S_IFSOCK, onDisk.st_uid == geteuid() else {
                throw Errno.notPermitted
            }
            try nothingOrErrno { chmod("/proc/self/fd/\(node.rawValue)", 0o660) }.get()
        } catch {
            throw SocketError(address: path, step: "chmod", errno: error)
        }
    }
}
