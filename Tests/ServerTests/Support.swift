import Dispatch
import Foundation
import Glibc
import Platform
import TestSupport

@testable import AdminClient
@testable import Engine
@testable import HTTP
@testable import Server

/// A real daemon (the repository's config tree, a dovecot jail in dry-run mode, a SQLite store in a scratch
/// directory) with the admin API on an ephemeral loopback port and a Unix socket.
final class LiveDaemon: @unchecked Sendable {
    static let repoConfig = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("config").path
    static let adminToken = "admin-token-0123456789abcdef"
    static let readToken = "read-token-0123456789abcdef"

    let dir = TempDir()
    let daemon: Daemon
    let api: AdminServer
    let control = DispatchQueue(label: "test.control")
    var port: UInt16 = 0
    var socketPath: String { dir.path + "/api.sock" }
    let log: String

    /// `tokens`: write token files and configure them. `api`: extra `[api]` lines.
    init(tokens: Bool = false, api extra: String = "", jail extraJail: String = "") throws {
        let conf = dir.path + "/conf"
        try FileManager.default.copyItem(atPath: LiveDaemon.repoConfig, toPath: conf)
        log = dir.write("mail.log", "")
        var apiSection = "[api]\nlisten = 127.0.0.1:0\nsocket = \(dir.path)/api.sock\n"
        if tokens {
            dir.write("read.token", LiveDaemon.readToken + "\n")
            dir.write("admin.token", LiveDaemon.adminToken + "\n")
            apiSection += "read_token_file = \(dir.path)/read.token\nadmin_token_file = \(dir.path)/admin.token\n"
        }
        apiSection += extra
        dir.write("conf/portcullis.local", "[Definition]\ndbfile = \(dir.path)/db.sqlite3\nloglevel = CRITICAL\n\(apiSection)")
        dir.write(
            "conf/jail.d/test.local",
            """
            [dovecot]
            enabled = true
            logpath = \(log)
            maxretry = 2
            banaction = dry-run
            port = pop3,pop3s,1100
            ignoreip = 127.0.0.1/8 192.0.2.250
            \(extraJail)
            """)
        daemon = Daemon(configPath: conf, log: Logger(level: .critical))
        try daemon.start()
        do {
            api = try AdminServer(daemon: daemon, settings: daemon.settings.api, control: control, log: Logger(level: .critical))
        } catch {
            // The jails' watcher threads must not outlive the daemon.
            daemon.stop()
            throw error
        }
        for a in api.addresses { if case .tcp(_, let p, _) = a.kind { port = p } }
    }

    func stop() {
        api.stop()
        control.sync { daemon.stop() }
    }

    var tcp: APIClient { APIClient(endpoint: .tcp(host: "127.0.0.1", port: port), token: nil) }
    func tcp(token: String) -> APIClient { APIClient(endpoint: .tcp(host: "127.0.0.1", port: port), token: token) }
    var unix: APIClient { APIClient(endpoint: .unix(socketPath), token: nil) }
}

/// A raw TCP connection to loopback, for exact bytes on the wire (pipelining, malformed requests, slow clients).
final class RawConnection {
    let fd: Int32

    /// `receiveBuffer`: SO_RCVBUF, set before connecting (it bounds the window the server may fill).
    init(port: UInt16, timeout: Int = 10, receiveBuffer: Int32? = nil) throws {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        if var size = receiveBuffer { setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, socklen_t(MemoryLayout<Int32>.size)) }
        var sa = sockaddr_in()
        sa.sin_family = sa_family_t(AF_INET)
        sa.sin_port = port.bigEndian
        sa.sin_addr.s_addr = UInt32(0x7f000001).bigEndian
        let rc = withUnsafePointer(to: &sa) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard rc == 0 else { close(fd); throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO) }
        var tv = timeval(tv_sec: timeout, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
    }

    /// A connection to a Unix socket.
    init(unixPath: String, timeout: Int = 10) throws {
        fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        var sa = sockaddr_un()
        sa.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &sa.sun_path) { raw in
            for (i, b) in unixPath.utf8.prefix(raw.count - 1).enumerated() { raw[i] = b }
        }
        let rc = withUnsafePointer(to: &sa) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard rc == 0 else { close(fd); throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO) }
        var tv = timeval(tv_sec: timeout, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
    }

    deinit { close(fd) }

    func send(_ text: String) { send(Array(text.utf8)) }

    func send(_ bytes: [UInt8]) {
        var off = 0
        while off < bytes.count {
            let n = bytes[off...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if n <= 0 { return }
            off += n
        }
    }

    /// Tells the server that nothing more will come (half-close).
    func finishSending() { shutdown(fd, Int32(SHUT_WR)) }

    /// Everything until the server closes (or the timeout).
    func readAll() -> String {
        var data: [UInt8] = []
        var buf = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = buf.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n <= 0 { break }
            data += buf[0..<n]
        }
        return String(decoding: data, as: UTF8.self)
    }

    /// Reads until `count` complete responses (framed by Content-Length) have arrived.
    func readResponses(_ count: Int) -> [APIClient.Response] {
        var data: [UInt8] = []
        var buf = [UInt8](repeating: 0, count: 65536)
        var responses: [APIClient.Response] = []
        while responses.count < count {
            if let (r, used) = RawConnection.frame(data) {
                responses.append(r)
                data.removeFirst(used)
                continue
            }
            let n = buf.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n <= 0 { break }
            data += buf[0..<n]
        }
        return responses
    }

    /// True when the server has closed the connection (EOF) within the receive timeout.
    func isClosedByServer() -> Bool {
        var buf = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = buf.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n == 0 { return true }
            if n < 0 { return errno == ECONNRESET }
        }
    }

    static func frame(_ data: [UInt8]) -> (APIClient.Response, Int)? {
        guard let end = data.firstRange(of: [13, 10, 13, 10]) else { return nil }
        let head = String(decoding: data[..<end.lowerBound], as: UTF8.self)
        var length = 0
        for line in head.components(separatedBy: "\r\n") where line.lowercased().hasPrefix("content-length:") {
            length = Int(line.dropFirst(15).trimmingCharacters(in: .whitespaces)) ?? 0
        }
        // 1xx answers have no body.
        if head.hasPrefix("HTTP/1.1 1") { length = 0 }
        guard data.count >= end.upperBound + length else { return nil }
        guard let r = try? APIClient.parse(Array(data[..<(end.upperBound + length)])) else { return nil }
        return (r, end.upperBound + length)
    }
}

extension APIClient.Response {
    var json: [String: Any] { (try? JSONSerialization.jsonObject(with: Data(body))) as? [String: Any] ?? [:] }
    func header(_ name: String) -> String? { headers.first { $0.name.lowercased() == name.lowercased() }?.value }
}

extension APIClient {
    /// For tests: a failure is a test failure, not a thrown error type to unwrap.
    func get(_ path: String) -> Response { try! request("GET", path) }
}
