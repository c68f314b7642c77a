import Glibc
import TestSupport
import Testing

@testable import HTTP
@testable import Server

@Suite struct HTTPParserTests {
    private func parse(_ text: String, limits: HTTPLimits = HTTPLimits()) throws(HTTPParseError) -> [HTTPParser.Event] {
        var p = HTTPParser(limits: limits)
        p.feed(Array(text.utf8))
        var events: [HTTPParser.Event] = []
        while let e = try p.next() { events.append(e) }
        return events
    }

    private func request(_ text: String) throws -> HTTPRequest {
        let events = try parse(text)
        guard events.count == 1, case .request(let r) = events[0] else { throw HTTPParseError.badRequest("expected one request, got \(events)") }
        return r
    }

    @Test func parsesAGetWithHeadersInOrder() throws {
        let r = try request("GET /jails/dovecot?x=1 HTTP/1.1\r\nHost: localhost\r\nX-A:  spaced value \t\r\nAccept: */*\r\n\r\n")
        #expect(r.method == "GET")
        #expect(r.target == "/jails/dovecot?x=1")
        #expect(r.headers.map(\.name) == ["Host", "X-A", "Accept"])
        #expect(r.header("x-a") == "spaced value")
        #expect(r.keepAlive)
        #expect(r.body.isEmpty)
    }

    @Test func feedsByteByByteWithTheSameResult() throws {
        let text =
            "POST /jails/dovecot/bans HTTP/1.1\r\nHost: h\r\nContent-Length: 22\r\n\r\n{\"ip\": \"203.0.113.7\"}\nGET /health HTTP/1.1\r\nHost: h\r\n\r\n"
        var p = HTTPParser()
        var events: [HTTPParser.Event] = []
        for byte in text.utf8 {
            p.feed([byte])
            while let e = try p.next() { events.append(e) }
        }
        #expect(events.count == 2)
        if case .request(let post) = events[0] {
            #expect(String(decoding: post.body, as: UTF8.self) == "{\"ip\": \"203.0.113.7\"}\n")
        } else {
            Issue.record("no POST")
        }
        if case .request(let get) = events[1] { #expect(get.target == "/health") } else { Issue.record("no GET") }
        #expect(p.buffered == 0)
    }

    @Test func pipelinedRequestsComeOutInOrder() throws {
        let events = try parse("GET /a HTTP/1.1\r\nHost: h\r\n\r\nGET /b HTTP/1.1\r\nHost: h\r\n\r\nGET /c HTTP/1.1\r\nHost: h\r\n\r\n")
        let targets = events.compactMap { if case .request(let r) = $0 { r.target } else { nil } }
        #expect(targets == ["/a", "/b", "/c"])
    }

    @Test func connectionSemanticsOfBothVersions() throws {
        #expect(try !request("GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n").keepAlive)
        #expect(try !request("GET / HTTP/1.0\r\n\r\n").keepAlive)
        #expect(try request("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").keepAlive)
        #expect(try request("GET / HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, Upgrade\r\n\r\n").keepAlive)
    }

    @Test func toleratesBareLineFeedsAndLeadingEmptyLines() throws {
        let r = try request("\r\n\nGET /x HTTP/1.1\nHost: h\n\n")
        #expect(r.target == "/x")
    }

    @Test func expectContinueIsAnnouncedBeforeTheBody() throws {
        var p = HTTPParser()
        p.feed(Array("POST /reload HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n".utf8))
        #expect(try p.next() == .continueNeeded)
        #expect(try p.next() == nil)
        p.feed(Array("{}".utf8))
        guard case .request(let r)? = try p.next() else { Issue.record("no request"); return }
        #expect(r.body == Array("{}".utf8))
        #expect(throws: HTTPParseError.notImplemented("Expect: something-else is not supported")) {
            try parse("POST / HTTP/1.1\r\nHost: h\r\nExpect: something-else\r\n\r\n")
        }
    }

    @Test(arguments: [
        ("GET /\r\n\r\n", 400),  // no version
        ("GET  / HTTP/1.1\r\nHost: h\r\n\r\n", 400),  // two spaces
        ("G(T / HTTP/1.1\r\nHost: h\r\n\r\n", 400),  // bad method
        ("GET / HTTP/2.0\r\nHost: h\r\n\r\n", 505),
        ("GET / HTTP/1.2\r\nHost: h\r\n\r\n", 505),
        ("GET / HTTX/1.1\r\nHost: h\r\n\r\n", 400),
        ("GET / HTTP/1.1\r\n\r\n", 400),  // no Host
        ("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),  // two Hosts
        ("GET / HTTP/1.1\r\nHost: h\r\nX: a\r\n  folded\r\n\r\n", 400),  // obs-fold
        ("GET / HTTP/1.1\r\nHost: h\r\nBad Name: x\r\n\r\n", 400),
        ("GET / HTTP/1.1\r\nHost: h\r\nNoColon\r\n\r\n", 400),
        ("GET / HTTP/1.1\r\nHost: h\r\nX: a\u{01}b\r\n\r\n", 400),  // control character
        ("GET /a\u{7f} HTTP/1.1\r\nHost: h\r\n\r\n", 400),
        ("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: -1\r\n\r\n", 400),
        ("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1e3\r\n\r\n", 400),
        ("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 99999999999999999999\r\n\r\n", 400),
        ("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n", 400),
        ("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5, 6\r\n\r\n", 400),
        ("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n", 400),  // smuggling
        ("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 501),
        ("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 65537\r\n\r\n", 413),
    ])
    func refusesWhatItCannotFrameSafely(_ text: String, _ status: Int) {
        do {
            _ = try parse(text)
            Issue.record("accepted: \(text.debugDescription)")
        } catch {
            #expect(error.status == status, "\(text.debugDescription): \(error)")
        }
    }

    @Test func repeatedEqualContentLengthsAreOneValue() throws {
        let r = try request("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 2, 2\r\n\r\n{}")
        #expect(r.body.count == 2)
    }

    @Test func headBoundsHold() {
        let big = "GET / HTTP/1.1\r\nHost: h\r\nX: " + String(repeating: "a", count: 17 * 1024) + "\r\n\r\n"
        #expect(throws: HTTPParseError.headersTooLarge) { try parse(big) }
        // Without an end of the head in sight, the parser gives up at the limit rather than buffering on.
        var p = HTTPParser()
        p.feed(Array(("GET / HTTP/1.1\r\nX: " + String(repeating: "b", count: 20 * 1024)).utf8))
        #expect(throws: HTTPParseError.headersTooLarge) { try p.next() }
        let many = "GET / HTTP/1.1\r\nHost: h\r\n" + (0..<101).map { "X-\($0): 1\r\n" }.joined() + "\r\n"
        #expect(throws: HTTPParseError.headersTooLarge) { try parse(many) }
    }

    @Test func garbageGetsAnAnswerOrWaits() {
        // A valid request line, random bytes, and the end of a head: the parser frames the request it was sent
        // (method and target intact) or refuses with a status the server can answer; it never waits for more,
        // never makes up another request, and once it has refused, it stays refused.
        var generator = SeededGenerator("HTTPParserTests.garbageGetsAnAnswerOrWaits")
        var outcomes = (waiting: 0, framed: 0, refused: 0)
        for _ in 0..<2000 {
            var p = HTTPParser()
            let bytes = (0..<Int.random(in: 0..<300, using: &generator)).map { _ in UInt8.random(in: 0...255, using: &generator) }
            p.feed(Array("GET / HTTP/1.1\r\n".utf8) + bytes + Array("\r\n\r\n".utf8))
            do {
                switch try p.next() {
                case nil:
                    outcomes.waiting += 1
                case .request(let r)?:
                    outcomes.framed += 1
                    #expect(r.method == "GET" && r.target == "/", "\(bytes)")
                case .continueNeeded?:
                    outcomes.framed += 1
                }
            } catch {
                outcomes.refused += 1
                #expect([400, 413, 431, 501, 505].contains(error.status), "\(bytes)")
                #expect(throws: HTTPParseError.self) { try p.next() }
            }
        }
        // Random bytes break the header syntax: nearly every input is refused (the empty ones are framed).
        #expect(outcomes.waiting == 0, "\(outcomes)")
        #expect(outcomes.refused > 1900, "\(outcomes)")
    }
}

@Suite struct RequestTargetTests {
    @Test func decodesSegmentsAndQuery() throws {
        let t = try RequestTarget("/bans/2001%3Adb8%3A%3A1?jail=dove%20cot&limit=5&flag")
        #expect(t.segments == ["bans", "2001:db8::1"])
        #expect(t.parameter("jail") == "dove cot")
        #expect(t.parameter("limit") == "5")
        #expect(t.parameter("flag") == "")
        #expect(try RequestTarget("/bans/2001:db8::1").segments == ["bans", "2001:db8::1"])
        #expect(try RequestTarget("http://localhost:9191/jails?x=1").segments == ["jails"])
        // An encoded slash stays inside its segment.
        #expect(try RequestTarget("/jails/a%2Fb").segments == ["jails", "a/b"])
    }

    @Test func refusesBrokenEncoding() {
        #expect(throws: RequestTarget.Invalid.self) { try RequestTarget("/bans/%zz") }
        #expect(throws: RequestTarget.Invalid.self) { try RequestTarget("/bans/%ff%fe") }
        #expect(throws: RequestTarget.Invalid.self) { try RequestTarget("*") }
    }
}

@Suite struct AccessPolicyTests {
    @Test func constantTimeComparisonIsStillAComparison() {
        let a = Array("0123456789abcdef".utf8)
        #expect(AccessPolicy.constantTimeEqual(a, a))
        #expect(!AccessPolicy.constantTimeEqual(a, Array("0123456789abcdeF".utf8)))
        #expect(!AccessPolicy.constantTimeEqual(a, Array("0123456789abcde".utf8)))
        #expect(!AccessPolicy.constantTimeEqual(a, a + a))
        #expect(!AccessPolicy.constantTimeEqual(a, a + Array(repeating: 0, count: 256)))
    }

    @Test func refusesToExposeTheAPIWithoutTokens() throws {
        let open = AccessPolicy(readToken: nil, adminToken: nil)
        try open.check([try ListenAddress.tcp("127.0.0.1:9191"), try ListenAddress.tcp("[::1]:9191")])
        #expect(throws: AccessPolicy.SetupError.self) { try open.check([try ListenAddress.tcp("0.0.0.0:9191")]) }
        #expect(throws: AccessPolicy.SetupError.self) { try open.check([try ListenAddress.tcp("[::]:9191")]) }
        let guarded = AccessPolicy(readToken: "r-0123456789abcdef", adminToken: nil)
        try guarded.check([try ListenAddress.tcp("0.0.0.0:9191")])
    }

    /// Token files: one others can read is a warning; a control character in a token is refused.
    @Test func tokenFilePermissionsAndControlCharacters() throws {
        let dir = TempDir()
        let open = dir.write("open.token", "read-token-0123456789abcdef\n")
        chmod(open, 0o644)
        let policy = try AccessPolicy.load(readTokenFile: open, adminTokenFile: "")
        #expect(policy.warnings.count == 1 && policy.warnings[0].contains("can be read by anyone on this machine"))
        chmod(open, 0o600)
        #expect(try AccessPolicy.load(readTokenFile: open, adminTokenFile: "").warnings.isEmpty)
        let escape = dir.write("escape.token", "admin-token-0123\u{1b}[2J456789abcdef\n")
        #expect {
            try AccessPolicy.load(readTokenFile: "", adminTokenFile: escape)
        } throws: { "\($0)".contains("control character (U+001B)") }
    }

    @Test func tokenFilesAreChecked() throws {
        let dir = TempDir()
        let short = dir.write("short", "abc\n")
        let empty = dir.write("empty", "\n")
        let good = dir.write("good", "  0123456789abcdef0123  \n")
        #expect(throws: AccessPolicy.SetupError.self) { try AccessPolicy.load(readTokenFile: short, adminTokenFile: "") }
        #expect(throws: AccessPolicy.SetupError.self) { try AccessPolicy.load(readTokenFile: empty, adminTokenFile: "") }
        #expect(throws: AccessPolicy.SetupError.self) { try AccessPolicy.load(readTokenFile: dir.path + "/missing", adminTokenFile: "") }
        #expect(throws: AccessPolicy.SetupError.self) { try AccessPolicy.load(readTokenFile: good, adminTokenFile: good) }
        let p = try AccessPolicy.load(readTokenFile: "", adminTokenFile: good)
        let tcp = RequestContext(listener: try ListenAddress.tcp("127.0.0.1:1"))
        #expect(p.level(authorization: "Bearer 0123456789abcdef0123", context: tcp) == .granted(.admin))
        #expect(p.level(authorization: "bearer 0123456789abcdef0123", context: tcp) == .granted(.admin))
        #expect(p.level(authorization: "Basic 0123456789abcdef0123", context: tcp) != .granted(.admin))
        #expect(p.level(authorization: nil, context: tcp) != .granted(.admin))
        #expect(p.level(authorization: nil, context: RequestContext(listener: ListenAddress(.unix(path: "/x")))) == .granted(.admin))
    }

    @Test func listenAddressesAreParsed() throws {
        #expect(try ListenAddress.tcp("127.0.0.1:9191").isLoopback)
        #expect(try ListenAddress.tcp("[::1]:9191").isLoopback)
        #expect(try !ListenAddress.tcp("192.0.2.1:9191").isLoopback)
        #expect(throws: ListenAddress.Invalid.self) { try ListenAddress.tcp("127.0.0.1") }
        #expect(throws: ListenAddress.Invalid.self) { try ListenAddress.tcp("::1:9191") }
        #expect(throws: ListenAddress.Invalid.self) { try ListenAddress.tcp("example.org:9191") }
        #expect(throws: ListenAddress.Invalid.self) { try ListenAddress.tcp("127.0.0.1:70000") }
    }
}
