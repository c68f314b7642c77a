import FoundationEssentials
import Glibc
import HTTP
import Platform

/// A small blocking HTTP/1.1 client for the CLI: one request per connection, over the daemon's Unix socket or
/// TCP (`http://host:port`). Answers are framed by Content-Length, as the server always sends.
public struct APIClient: Sendable {
    public enum Endpoint: Sendable, CustomStringConvertible {
        case unix(String)
        case tcp(host: String, port: UInt16)

        public var description: String {
            switch self {
            case .unix(let path): "the Unix socket \(path)"
            case .tcp(let host, let port): host.contains(":") ? "http://[\(host)]:\(port)" : "http://\(host):\(port)"
            }
        }
    }

    public struct Response: Sendable {
        public let status: Int
        public let headers: [(name: String, value: String)]
        public let body: [UInt8]
        public var text: String { String(decoding: body, as: UTF8.self) }

        /// The detail of a problem document, else the body.
        public var problemDetail: String {
            struct Problem: Decodable { let detail: String? }
            if let problem = try? JSONDecoder().decode(Problem.self, from: Data(body)), let d = problem.detail { return d }
            return text
        }
    }

    public enum Failure: Error, CustomStringConvertible {
        /// The daemon could not be reached (exit code 3).
        case unreachable(String)
        case usage(String)
        case protocolError(String)

        public var description: String {
            switch self {
            case .unreachable(let m), .usage(let m), .protocolError(let m): m
            }
        }
    }

    public let endpoint: Endpoint
    public let token: String?
    public var timeout: Double = 30
    /// `portcullis/<version>` from the CLI.
    public var userAgent: String

    public init(endpoint: Endpoint, token: String?, userAgent: String = "portcullis") {
        self.endpoint = endpoint
        self.token = token
        self.userAgent = userAgent
    }

    /// `http://host:port` (https is not served: put a TLS proxy in front and talk to it).
    public static func endpoint(url: String) throws(Failure) -> Endpoint {
        guard url.hasPrefix("http://") else {
            throw .usage("--url \(url): only http://host:port is supported (the API has no TLS; tunnel it, e.g. over SSH)")
        }
        var rest = Substring(url.dropFirst(7))
        if let slash = rest.firstIndex(of: "/") { rest = rest[..<slash] }
        do {
            let a = try ListenAddress.tcp(rest.contains(":") ? String(rest) : String(rest) + ":80")
            guard case .tcp(let host, let port, _) = a.kind else { throw Failure.usage("--url \(url)") }
            return .tcp(host: host, port: port)
        } catch {
            throw .usage("--url \(url): \(error)")
        }
    }

    public func request(_ method: String, _ path: String, body: String? = nil) throws(Failure) -> Response {
        let socket = try connect()
        let fd = socket.rawValue
        var head = "\(method) \(path) HTTP/1.1\r\nHost: \(hostHeader)\r\nUser-Agent: \(userAgent)\r\nAccept: application/json\r\nConnection: close\r\n"
        if let token { head += "Authorization: Bearer \(token)\r\n" }
        let bodyBytes = Array((body ?? "").utf8)
        if body != nil { head += "Content-Type: application/json\r\n" }
        if body != nil || method == "POST" || method == "DELETE" { head += "Content-Length: \(bodyBytes.count)\r\n" }
        head += "\r\n"
        let out = Array(head.utf8) + bodyBytes
        var sent = 0
        while sent < out.count {
            let result = out[sent...].withUnsafeBytes { bytes in valueOrErrno { send(fd, bytes.baseAddress, bytes.count, Int32(MSG_NOSIGNAL)) } }
            switch result {
            case .success(let n) where n > 0: sent += n
            case .success: throw .unreachable("sending to \(endpoint) failed: the connection closed")
            case .failure(let e): throw .unreachable("sending to \(endpoint) failed: \(e.message)")
            }
        }
        var data: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let result = buffer.withUnsafeMutableBytes { b in valueOrErrno { recv(fd, b.baseAddress, b.count, 0) } }
            switch result {
            case .success(let n) where n > 0:
                data += buffer[0..<n]
                if data.count > 64 * 1024 * 1024 { break }
                continue
            case .success: break
            case .failure(let e) where e == .wouldBlock: throw .unreachable("\(endpoint) did not answer within \(Int(timeout)) s")
            case .failure(let e): throw .unreachable("reading from \(endpoint) failed: \(e.message)")
            }
            break
        }
        return try APIClient.parse(data, head: method == "HEAD")
    }

    private var hostHeader: String {
        switch endpoint {
        case .unix: "localhost"
        case .tcp(let host, let port): host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
        }
    }

    private func connect() throws(Failure) -> FileDescriptor {
        let socket: FileDescriptor
        switch endpoint {
        case .unix(let path):
            do { socket = try Sockets.connectUnix(path) } catch {
                throw .unreachable(
                    "cannot reach the daemon at \(endpoint): \(error.errno?.message ?? error.description) (is `portcullis serve` running? --socket or --url choose where to look)"
                )
            }
        case .tcp(let host, let port):
            do { socket = try Sockets.connectTCP(host: host, port: port) } catch {
                throw .unreachable(
                    "cannot reach the daemon at \(endpoint): \(error.errno?.message ?? error.description) (is `portcullis serve` running with [api] listen there?)"
                )
            }
        }
        var tv = timeval(tv_sec: Int(timeout), tv_usec: 0)
        setsockopt(socket.rawValue, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(socket.rawValue, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        return socket
    }

    /// `head`: the answer to HEAD, whose Content-Length describes a body that is not sent.
    static func parse(_ data: [UInt8], head isHead: Bool = false) throws(Failure) -> Response {
        guard let end = data.firstRange(of: [13, 10, 13, 10]) else {
            throw .protocolError("the daemon's answer was cut short (\(data.count) bytes)")
        }
        let head = String(decoding: data[..<end.lowerBound], as: UTF8.self)
        var lines = head.components(separatedBy: "\r\n")
        let statusLine = lines.removeFirst().split(separator: " ", maxSplits: 2)
        guard statusLine.count >= 2, statusLine[0].hasPrefix("HTTP/1."), let status = Int(statusLine[1]) else {
            throw .protocolError("not an HTTP answer: \(head.prefix(80))")
        }
        var headers: [(String, String)] = []
        var length: Int? = nil
        for line in lines {
            guard let colon = line.firstIndex(of: ":") else { continue }
            let name = String(line[..<colon]), value = String(line[line.index(after: colon)...]).trimmingWhitespace()
            headers.append((name, value))
            if name.lowercased() == "content-length" { length = Int(value) }
        }
        var body = Array(data[end.upperBound...])
        if isHead {
            body = []
        } else if let length {
            guard body.count >= length else { throw .protocolError("the daemon's answer was cut short") }
            body = Array(body.prefix(length))
        }
        return Response(status: status, headers: headers, body: body)
    }
}
