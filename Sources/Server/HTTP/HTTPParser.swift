/// Request framing for HTTP/1.1 (RFC 9112), as a value fed bytes: no sockets, so it is tested byte by byte and
/// fuzzed. Every bound is explicit (`HTTPLimits`); what it cannot frame safely it refuses rather than guesses.
/// This file depends on nothing else, so that the fuzz target can compile it alone.

/// Bounds on what one request may use.
public struct HTTPLimits: Sendable {
    /// Request line and header fields together.
    public var maxHeaderBytes = 16 * 1024
    public var maxHeaderCount = 100
    public var maxBodyBytes = 64 * 1024

    public init() {}
}

public struct HTTPRequest: Sendable, Equatable {
    public var method: String
    /// The request target as sent (origin form: path and query, still percent-encoded).
    public var target: String
    public var minorVersion: Int
    /// Header fields in order; names as sent (compare them case-insensitively, see `header(_:)`).
    public var headers: [(name: String, value: String)]
    public var body: [UInt8]
    /// Whether the connection stays open after the response.
    public var keepAlive: Bool

    public init(
        method: String, target: String, minorVersion: Int = 1, headers: [(name: String, value: String)] = [],
        body: [UInt8] = [], keepAlive: Bool = true
    ) {
        self.method = method
        self.target = target
        self.minorVersion = minorVersion
        self.headers = headers
        self.body = body
        self.keepAlive = keepAlive
    }

    /// The first value of a header field, by case-insensitive name.
    public func header(_ name: String) -> String? {
        let lower = name.lowercased()
        return headers.first { $0.name.lowercased() == lower }?.value
    }

    public static func == (a: HTTPRequest, b: HTTPRequest) -> Bool {
        a.method == b.method && a.target == b.target && a.minorVersion == b.minorVersion && a.body == b.body
            && a.keepAlive == b.keepAlive && a.headers.map { $0.name + ":" + $0.value } == b.headers.map { $0.name + ":" + $0.value }
    }
}

/// Why a request could not be framed; each maps to the status the server answers before closing.
public enum HTTPParseError: Error, Equatable, Sendable {
    case badRequest(String)
    case headersTooLarge
    case bodyTooLarge(Int)
    case notImplemented(String)
    case versionNotSupported

    public var status: Int {
        switch self {
        case .badRequest: 400
        case .headersTooLarge: 431
        case .bodyTooLarge: 413
        case .notImplemented: 501
        case .versionNotSupported: 505
        }
    }

    public var detail: String {
        switch self {
        case .badRequest(let why): why
        case .headersTooLarge: "the request line and headers exceed 16 KiB"
        case .bodyTooLarge(let n): "the body (\(n) bytes) exceeds 64 KiB"
        case .notImplemented(let what): what
        case .versionNotSupported: "only HTTP/1.0 and HTTP/1.1 are served"
        }
    }
}

public struct HTTPParser: Sendable {
    public enum Event: Equatable, Sendable {
        case request(HTTPRequest)
        /// The client sent `Expect: 100-continue` and waits before sending its body: answer 100 Continue.
        case continueNeeded
    }

    public let limits: HTTPLimits
    private var buffer: [UInt8] = []
    private var start = 0
    /// A parsed head whose body has not fully arrived.
    private var pendingHead: HTTPRequest?
    private var pendingLength = 0
    private var continueSent = false
    /// How far past `start` the search for the end of the head has looked.
    private var scanned = 0

    public init(limits: HTTPLimits = HTTPLimits()) {
        self.limits = limits
    }

    /// Bytes received and not yet consumed by a complete request.
    public var buffered: Int { buffer.count - start }

    /// Appends received bytes.
    public mutating func feed(_ bytes: UnsafeRawBufferPointer) {
        if start > 0 && start * 2 > buffer.count {
            buffer.removeFirst(start)
            start = 0
        }
        buffer.append(contentsOf: bytes)
    }

    public mutating func feed(_ bytes: [UInt8]) {
        bytes.withUnsafeBytes { feed($0) }
    }

    /// The next complete request (or a 100-continue prompt), nil when more bytes are needed. After an error
    /// the connection must be closed: the framing is lost.
    public mutating func next() throws(HTTPParseError) -> Event? {
        if pendingHead == nil {
            guard let (head, length, expectsContinue) = try parseHead() else { return nil }
            pendingHead = head
            pendingLength = length
            continueSent = false
            if expectsContinue && length > 0 && buffered < length {
                continueSent = true
                return .continueNeeded
            }
        }
        guard buffered >= pendingLength, var request = pendingHead else { return nil }
        request.body = Array(buffer[start..<(start + pendingLength)])
        start += pendingLength
        pendingHead = nil
        pendingLength = 0
        if start == buffer.count {
            buffer.removeAll(keepingCapacity: true)
            start = 0
        }
        return .request(request)
    }

    /// Without optional whitespace around it (no Foundation here: the fuzz target compiles this file alone).
    private static func trimmed(_ s: Substring) -> String {
        var t = s
        while let f = t.first, f == " " || f == "\t" { t = t.dropFirst() }
        while let l = t.last, l == " " || l == "\t" { t = t.dropLast() }
        return String(t)
    }

    /// ASCII case-insensitive equality with a lowercase name.
    private static func named(_ bytes: ArraySlice<UInt8>, _ lower: StaticString) -> Bool {
        guard bytes.count == lower.utf8CodeUnitCount else { return false }
        let p = lower.utf8Start
        var i = 0
        for b in bytes {
            if b | 0x20 != p[i] && b != p[i] { return false }
            i += 1
        }
        return true
    }

    private static func isTokenChar(_ c: UInt8) -> Bool {
        // RFC 9110 §5.6.2 tchar
        switch c {
        case 0x30...0x39, 0x41...0x5A, 0x61...0x7A: return true
        case UInt8(ascii: "!"), UInt8(ascii: "#"), UInt8(ascii: "$"), UInt8(ascii: "%"), UInt8(ascii: "&"),
            UInt8(ascii: "'"), UInt8(ascii: "*"), UInt8(ascii: "+"), UInt8(ascii: "-"), UInt8(ascii: "."),
            UInt8(ascii: "^"), UInt8(ascii: "_"), UInt8(ascii: "`"), UInt8(ascii: "|"), UInt8(ascii: "~"):
            return true
        default: return false
        }
    }

    /// Parses the request line and header fields once they have all arrived.
    private mutating func parseHead() throws(HTTPParseError) -> (HTTPRequest, Int, Bool)? {
        skipEmptyLines()
        guard let headEnd = try findHeadEnd() else { return nil }
        let lines = headLines(to: headEnd)
        guard let requestLine = lines.first else { throw .badRequest("empty request") }
        let (method, target, minor) = try HTTPParser.parseRequestLine(requestLine)
        let fields = try HTTPParser.parseFields(lines.dropFirst(), limits: limits)
        // §6.3: Transfer-Encoding with Content-Length is a smuggling attempt; without it, the body's end is only
        // known by decoding chunks, which this server does not do: refuse rather than misread.
        if fields.transferEncoding && fields.contentLength != nil {
            throw .badRequest("both Transfer-Encoding and Content-Length")
        }
        if fields.transferEncoding {
            throw .notImplemented("Transfer-Encoding is not supported: send the body with Content-Length")
        }
        // §3.2: an HTTP/1.1 request must have exactly one Host field.
        if minor == 1 && fields.hosts == 0 { throw .badRequest("missing Host header") }
        let length = fields.contentLength ?? 0
        if length > limits.maxBodyBytes { throw .bodyTooLarge(length) }
        let keepAlive = minor == 1 ? !fields.connectionTokens.contains("close") : fields.connectionTokens.contains("keep-alive")
        start = headEnd
        let request = HTTPRequest(method: method, target: target, minorVersion: minor, headers: fields.headers, body: [], keepAlive: keepAlive)
        return (request, length, fields.expectsContinue && minor == 1)
    }

    /// RFC 9112 §2.2: at least one empty line (CRLF) before the request line is ignored. One loop over CRLF and
    /// bare LF alike, so that where the bytes were cut in transit changes nothing.
    private mutating func skipEmptyLines() {
        while buffered >= 1 {
            if buffer[start] == 10 {
                start += 1
                scanned = 0
            } else if buffered >= 2 && buffer[start] == 13 && buffer[start + 1] == 10 {
                start += 2
                scanned = 0
            } else {
                break
            }
        }
    }

    /// Where the head ends: after its empty line (CRLF CRLF, or bare LF LF, which §2.2 lets a server accept); nil
    /// while it has not all arrived. The head may take maxHeaderBytes plus its final empty line. Scanning resumes
    /// where it stopped, so that a client sending one byte at a time costs linear, not quadratic, time.
    private mutating func findHeadEnd() throws(HTTPParseError) -> Int? {
        let maxHead = limits.maxHeaderBytes + 4
        var end: Int? = nil
        var i = start + scanned
        let limit = min(buffer.count, start + maxHead)
        while i < limit {
            if buffer[i] == 10 {
                if i + 1 < buffer.count && buffer[i + 1] == 10 { end = i + 2; break }
                if i + 2 < buffer.count && buffer[i + 1] == 13 && buffer[i + 2] == 10 { end = i + 3; break }
            }
            i += 1
        }
        guard let headEnd = end else {
            // The last two bytes may start a terminator whose rest has not arrived.
            scanned = max(0, limit - start - 2)
            if buffered >= maxHead { throw .headersTooLarge }
            return nil
        }
        scanned = 0
        if headEnd - start > maxHead { throw .headersTooLarge }
        return headEnd
    }

    /// The head's lines, without their CRLF or LF, trailing empty lines dropped.
    private func headLines(to headEnd: Int) -> [ArraySlice<UInt8>] {
        var lines: [ArraySlice<UInt8>] = []
        var lineStart = start
        for j in start..<headEnd where buffer[j] == 10 {
            var lineEnd = j
            if lineEnd > lineStart && buffer[lineEnd - 1] == 13 { lineEnd -= 1 }
            lines.append(buffer[lineStart..<lineEnd])
            lineStart = j + 1
        }
        while let last = lines.last, last.isEmpty { lines.removeLast() }
        return lines
    }

    /// request-line = method SP request-target SP HTTP-version (§3); HTTP/1.0 and 1.1 only.
    private static func parseRequestLine(_ line: ArraySlice<UInt8>) throws(HTTPParseError) -> (method: String, target: String, minor: Int) {
        let parts = line.split(separator: 32, omittingEmptySubsequences: false)
        guard parts.count == 3 else { throw .badRequest("malformed request line") }
        let methodBytes = parts[0], targetBytes = parts[1], versionBytes = parts[2]
        guard !methodBytes.isEmpty, methodBytes.allSatisfy(HTTPParser.isTokenChar) else { throw .badRequest("malformed method") }
        guard !targetBytes.isEmpty, targetBytes.allSatisfy({ $0 > 32 && $0 < 127 }) else {
            throw .badRequest("malformed request target")
        }
        let version = Array(versionBytes)
        guard version.count == 8, version[0..<5] == Array("HTTP/".utf8)[...], version[6] == UInt8(ascii: "."),
            (48...57).contains(version[5]), (48...57).contains(version[7])
        else {
            throw .badRequest("malformed HTTP version")
        }
        guard version[5] == UInt8(ascii: "1") else { throw .versionNotSupported }
        let minor = Int(version[7] - 48)
        guard minor <= 1 else { throw .versionNotSupported }
        return (String(decoding: methodBytes, as: UTF8.self), String(decoding: targetBytes, as: UTF8.self), minor)
    }

    /// The header fields, and what of them frames the request.
    private struct Fields {
        var headers: [(name: String, value: String)] = []
        var contentLength: Int? = nil
        var transferEncoding = false
        var connectionTokens: [String] = []
        var expectsContinue = false
        var hosts = 0
        var authorizations = 0
        var contentTypes = 0
    }

    private static func parseFields(_ lines: ArraySlice<ArraySlice<UInt8>>, limits: HTTPLimits) throws(HTTPParseError) -> Fields {
        var fields = Fields()
        for line in lines {
            // obs-fold (§5.2): a server must reject it or unfold; we reject.
            if let f = line.first, f == 32 || f == 9 { throw .badRequest("obsolete line folding in header fields") }
            guard let colon = line.firstIndex(of: UInt8(ascii: ":")) else { throw .badRequest("header field without a colon") }
            let nameBytes = line[line.startIndex..<colon]
            // No whitespace between the field name and the colon (§5.1): a 400.
            guard !nameBytes.isEmpty, nameBytes.allSatisfy(HTTPParser.isTokenChar) else { throw .badRequest("malformed header field name") }
            var valueBytes = line[line.index(after: colon)...]
            while let f = valueBytes.first, f == 32 || f == 9 { valueBytes = valueBytes.dropFirst() }
            while let l = valueBytes.last, l == 32 || l == 9 { valueBytes = valueBytes.dropLast() }
            guard valueBytes.allSatisfy({ $0 == 9 || ($0 >= 32 && $0 != 127) }) else {
                throw .badRequest("control character in a header field value")
            }
            let value = String(decoding: valueBytes, as: UTF8.self)
            fields.headers.append((String(decoding: nameBytes, as: UTF8.self), value))
            guard fields.headers.count <= limits.maxHeaderCount else { throw .headersTooLarge }
            try note(framingField(nameBytes), value, in: &fields)
        }
        return fields
    }

    /// The lowercased name of a field that frames the request, recognised without building lowercased strings;
    /// "" for any other.
    private static func framingField(_ nameBytes: ArraySlice<UInt8>) -> String {
        switch nameBytes.count {
        case 4 where HTTPParser.named(nameBytes, "host"): "host"
        case 6 where HTTPParser.named(nameBytes, "expect"): "expect"
        case 10 where HTTPParser.named(nameBytes, "connection"): "connection"
        case 12 where HTTPParser.named(nameBytes, "content-type"): "content-type"
        case 13 where HTTPParser.named(nameBytes, "authorization"): "authorization"
        case 14 where HTTPParser.named(nameBytes, "content-length"): "content-length"
        case 17 where HTTPParser.named(nameBytes, "transfer-encoding"): "transfer-encoding"
        default: ""
        }
    }

    private static func note(_ name: String, _ value: String, in fields: inout Fields) throws(HTTPParseError) {
        switch name {
        case "content-length":
            // A list of identical values is allowed (§6.3); anything else is invalid.
            let values = value.split(separator: ",").map(HTTPParser.trimmed)
            guard let first = values.first, values.allSatisfy({ $0 == first }), !first.isEmpty,
                first.allSatisfy({ $0.isASCII && $0.isNumber }), first.count <= 12, let n = Int(first)
            else {
                throw .badRequest("invalid Content-Length")
            }
            if let previous = fields.contentLength, previous != n { throw .badRequest("conflicting Content-Length fields") }
            fields.contentLength = n
        case "transfer-encoding":
            fields.transferEncoding = true
        case "connection":
            fields.connectionTokens += value.lowercased().split(separator: ",").map(HTTPParser.trimmed)
        case "expect":
            if value.lowercased() == "100-continue" { fields.expectsContinue = true } else { throw .notImplemented("Expect: \(value) is not supported") }
        case "host":
            fields.hosts += 1
            if fields.hosts > 1 { throw .badRequest("the request carries more than one host header") }
        case "authorization":
            // Two would let a proxy and this server read different ones.
            fields.authorizations += 1
            if fields.authorizations > 1 { throw .badRequest("the request carries more than one authorization header") }
        case "content-type":
            fields.contentTypes += 1
            if fields.contentTypes > 1 { throw .badRequest("the request carries more than one content-type header") }
        default:
            break
        }
    }
}
