import Dispatch
import Foundation
import Glibc
import Platform
import TestSupport
import Testing

@testable import Engine
@testable import HTTP
@testable import Server

/// A handler for connection-level tests: `/slow` defers and takes 300 ms (a request in flight), anything else
/// answers at once with the path.
final class EchoHandler: HTTPHandler {
    func handle(_ request: HTTPRequest, context: RequestContext) -> HandlerResult {
        if request.target == "/big" {
            // An answer far over the server's output high-water mark (256 KiB), as /jails/x with 100,000 bans.
            return .response(.json(200, "{\"big\":\"" + String(repeating: "b", count: 1_500_000) + "\"}"))
        }
        if request.target == "/slow" {
            return .deferred {
                usleep(300_000)
                return .json(200, #"{"slow":true}"#)
            }
        }
        return .response(.json(200, "{\"path\":\(JSONText.quote(request.target)),\"body\":\(request.body.count)}"))
    }
}

final class EchoServer {
    let server: HTTPServer
    let port: UInt16

    init(unixSocket: String? = nil, configure: (inout HTTPServerOptions) -> Void = { _ in }) throws {
        var options = HTTPServerOptions()
        configure(&options)
        server = HTTPServer(
            options: options, handler: EchoHandler(), counters: HTTPCounters(),
            worker: DispatchQueue(label: "echo", attributes: .concurrent), log: Logger(level: .critical))
        try server.start([try ListenAddress.tcp("127.0.0.1:0")] + (unixSocket.map { [ListenAddress(.unix(path: $0))] } ?? []))
        guard case .tcp(_, let p, _) = server.addresses[0].kind else { fatalError() }
        port = p
    }

    deinit { server.stop() }
}

@Suite(.serialized) struct ConnectionTests {
    @Test func keepAliveServesManyRequestsOnOneConnection() throws {
        let s = try EchoServer()
        let c = try RawConnection(port: s.port)
        for i in 0..<20 {
            c.send("GET /r\(i) HTTP/1.1\r\nHost: x\r\n\r\n")
            let r = c.readResponses(1)
            #expect(r.first?.status == 200)
            #expect(r.first?.json["path"] as? String == "/r\(i)")
        }
    }

    @Test func pipelinedRequestsAreAnsweredInOrderEvenWhenOneIsSlow() throws {
        let s = try EchoServer()
        let c = try RawConnection(port: s.port)
        c.send(
            "GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /slow HTTP/1.1\r\nHost: x\r\n\r\nPOST /c HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabcGET /d HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        let r = c.readResponses(4)
        #expect(r.count == 4)
        #expect(r.map { $0.json["path"] as? String ?? ($0.json["slow"] != nil ? "/slow" : "?") } == ["/a", "/slow", "/c", "/d"])
        #expect(r[2].json["body"] as? Int == 3)
    }

    @Test func connectionCloseAndHTTP10() throws {
        let s = try EchoServer()
        let c = try RawConnection(port: s.port)
        c.send("GET /x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        let text = c.readAll()
        #expect(text.hasPrefix("HTTP/1.1 200 OK\r\n"))
        #expect(text.contains("\r\nConnection: close\r\n"))
        let old = try RawConnection(port: s.port)
        old.send("GET /y HTTP/1.0\r\n\r\n")
        #expect(old.readAll().contains("\"/y\""))
        let kept = try RawConnection(port: s.port)
        kept.send("GET /z HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        let first = kept.readResponses(1)
        #expect(first.first?.header("Connection") == "keep-alive")
        kept.send("GET /z2 HTTP/1.0\r\n\r\n")
        #expect(kept.readResponses(1).first?.json["path"] as? String == "/z2")
    }

    @Test func expectContinueGetsAnInterimAnswer() throws {
        let s = try EchoServer()
        let c = try RawConnection(port: s.port)
        c.send("POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n")
        let interim = c.readResponses(1)
        #expect(interim.first?.status == 100)
        c.send("body")
        #expect(c.readResponses(1).first?.json["body"] as? Int == 4)
    }

    @Test(arguments: [
        ("GET / HTTP/1.1\r\nHost: x\r\nX: " + String(repeating: "a", count: 17_000) + "\r\n\r\n", 431),
        ("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 70000\r\n\r\n", 413),
        ("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", 501),
        ("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\nabc", 400),
        ("\u{16}\u{03}\u{01}\u{02}\u{00}\u{01}\u{00}\u{01}\u{fc}\u{03}\u{03}\r\n\r\n", 400),  // a TLS hello
        ("GET / HTTP/3.0\r\nHost: x\r\n\r\n", 505),
    ])
    func malformedRequestsGetAProblemAndAClose(_ request: String, _ status: Int) throws {
        let s = try EchoServer()
        let c = try RawConnection(port: s.port)
        c.send(request)
        let text = c.readAll()
        #expect(text.hasPrefix("HTTP/1.1 \(status) "), "\(text.prefix(100))")
        #expect(text.contains("Content-Type: application/problem+json"))
        #expect(text.contains("Connection: close"))
    }

    @Test func slowAndSilentClientsAreClosed() throws {
        let s = try EchoServer {
            $0.requestTimeout = 1; $0.idleTimeout = 1
        }
        // Slowloris: a head that never ends.
        let slow = try RawConnection(port: s.port)
        slow.send("GET / HTTP/1.1\r\nHost: x\r\n")
        usleep(500_000)
        slow.send("X-More: 1\r\n")
        let text = slow.readAll()
        #expect(text.hasPrefix("HTTP/1.1 408 "))
        // A silent keep-alive connection is closed after the idle timeout.
        let idle = try RawConnection(port: s.port, timeout: 5)
        idle.send("GET /once HTTP/1.1\r\nHost: x\r\n\r\n")
        #expect(idle.readResponses(1).count == 1)
        let t0 = Clock.monotonic()
        #expect(idle.isClosedByServer())
        #expect(Clock.monotonic() - t0 < 4)
    }

    @Test func connectionsBeyondTheCapGet503() throws {
        let s = try EchoServer { $0.maxConnections = 5 }
        var held: [RawConnection] = []
        for _ in 0..<5 {
            let c = try RawConnection(port: s.port)
            c.send("GET /h HTTP/1.1\r\nHost: x\r\n\r\n")
            #expect(c.readResponses(1).count == 1)
            held.append(c)
        }
        let extra = try RawConnection(port: s.port)
        #expect(extra.readAll().hasPrefix("HTTP/1.1 503 "))
        held.removeAll()
        usleep(200_000)
        let again = try RawConnection(port: s.port)
        again.send("GET /h HTTP/1.1\r\nHost: x\r\n\r\n")
        #expect(again.readResponses(1).first?.status == 200)
    }

    /// A complete request is answered whatever the size of the answers before it: one of 1.5 MB then a small
    /// one in the same write, and 2,000 pipelined requests (the answers pass the 256 KiB high-water mark).
    @Test func pipelinedRequestsBehindLargeAnswersAreAnswered() throws {
        let s = try EchoServer { $0.requestTimeout = 3 }
        let c = try RawConnection(port: s.port)
        c.send("GET /big HTTP/1.1\r\nHost: x\r\n\r\nGET /after HTTP/1.1\r\nHost: x\r\n\r\n")
        let t0 = Clock.monotonic()
        let r = c.readResponses(2)
        #expect(r.map(\.status) == [200, 200])
        #expect(r.last?.json["path"] as? String == "/after")
        #expect(Clock.monotonic() - t0 < 2)
        let many = try RawConnection(port: s.port)
        many.send((0..<2000).map { "GET /h\($0) HTTP/1.1\r\nHost: x\r\n\r\n" }.joined())
        let answers = many.readResponses(2000)
        #expect(answers.count == 2000)
        #expect(answers.allSatisfy { $0.status == 200 })
        #expect(answers.last?.json["path"] as? String == "/h1999")
    }

    /// Idle TCP connections (anyone can open them) cannot lock the admin out: the Unix socket has its own
    /// capacity, one client address its own limit, and silent connections go sooner near the cap.
    @Test func idleConnectionsCannotLockTheAdminOut() throws {
        let dir = TempDir()
        let sock = dir.path + "/api.sock"
        let s = try EchoServer(unixSocket: sock) {
            $0.maxConnections = 8
            $0.maxConnectionsPerClient = 6
            $0.crowdedShare = 0.5
            $0.crowdedIdleTimeout = 1
        }
        var idle: [RawConnection] = []
        for _ in 0..<7 { idle.append(try RawConnection(port: s.port)) }
        usleep(300_000)
        // Seven from one address: one is refused, with the reason (which one depends on the loops' order).
        let early = idle.map { c -> String in
            var buf = [UInt8](repeating: 0, count: 4096)
            let n = buf.withUnsafeMutableBytes { recv(c.fd, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT)) }
            return n > 0 ? String(decoding: buf[0..<n], as: UTF8.self) : ""
        }
        let refused = early.filter { $0.hasPrefix("HTTP/1.1 503 ") }
        #expect(refused.count == 1 && refused.first?.contains("max_connections_per_client = 6") == true, "\(early)")
        // Root's CLI on the Unix socket is served meanwhile.
        let admin = try RawConnection(unixPath: sock)
        admin.send("GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        #expect(admin.readResponses(1).first?.status == 200)
        // Past half of max_connections, silent ones are closed after a second or two, not idle_timeout (60 s),
        // until the server is below that share again.
        usleep(2_600_000)
        let closed = idle.filter { c in
            var byte: UInt8 = 0
            return recv(c.fd, &byte, 1, Int32(MSG_DONTWAIT)) == 0
        }
        #expect(closed.count >= 4, "\(closed.count) of 6 idle connections closed")
        idle.removeAll()
        let fresh = try RawConnection(port: s.port)
        fresh.send("GET /again HTTP/1.1\r\nHost: x\r\n\r\n")
        #expect(fresh.readResponses(1).first?.status == 200)
    }

    @Test func aThousandConcurrentConnections() throws {
        var rl = rlimit()
        getrlimit(Int32(RLIMIT_NOFILE.rawValue), &rl)
        rl.rlim_cur = rl.rlim_max
        setrlimit(Int32(RLIMIT_NOFILE.rawValue), &rl)
        // One client address here: its own limit raised.
        let s = try EchoServer { $0.maxConnectionsPerClient = 2000 }
        var connections: [RawConnection] = []
        for _ in 0..<1000 { connections.append(try RawConnection(port: s.port)) }
        for (i, c) in connections.enumerated() { c.send("GET /c\(i) HTTP/1.1\r\nHost: x\r\n\r\n") }
        var ok = 0
        for (i, c) in connections.enumerated() where c.readResponses(1).first?.json["path"] as? String == "/c\(i)" { ok += 1 }
        #expect(ok == 1000)
        // All still open and served again.
        for c in connections.prefix(10) { c.send("GET /again HTTP/1.1\r\nHost: x\r\n\r\n") }
        #expect(connections.prefix(10).allSatisfy { $0.readResponses(1).count == 1 })
    }

    @Test func gracefulStopFinishesTheRequestInFlight() throws {
        let s = try EchoServer()
        let c = try RawConnection(port: s.port)
        c.send("GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
        usleep(50_000)
        let stopped = DispatchSemaphore(value: 0)
        let server = s.server
        Thread {
            server.stop()
            stopped.signal()
        }.start()
        let text = c.readAll()
        #expect(text.hasPrefix("HTTP/1.1 200 "))
        #expect(text.contains("Connection: close"))
        stopped.wait()
        #expect(throws: (any Error).self) { try RawConnection(port: s.port) }
    }

    @Test func garbageDoesNotHurtTheServer() throws {
        let s = try EchoServer()
        var generator = SeededGenerator("ConnectionTests.garbageDoesNotHurtTheServer")
        for _ in 0..<50 {
            let c = try RawConnection(port: s.port, timeout: 2)
            c.send((0..<Int.random(in: 1..<4000, using: &generator)).map { _ in UInt8.random(in: 0...255, using: &generator) })
            c.finishSending()
            // Random bytes are no request: the answer is a refusal (4xx/5xx) before the close, or just the close.
            let answer = c.readAll()
            #expect(answer.isEmpty || answer.hasPrefix("HTTP/1.1 4") || answer.hasPrefix("HTTP/1.1 5"), "\(answer.prefix(80))")
        }
        let ok = try RawConnection(port: s.port)
        ok.send("GET /fine HTTP/1.1\r\nHost: x\r\n\r\n")
        #expect(ok.readResponses(1).first?.status == 200)
    }
}

/// The API's Unix socket is created so that no one else on the machine can redirect it or widen its mode.
@Suite struct UnixSocketTests {
    private func mode(_ path: String) -> mode_t {
        var st = stat()
        return lstat(path, &st) == 0 ? st.st_mode : 0
    }

    /// A port already taken: the error names the address and the step, keeps the errno, and says what to do.
    @Test func aTakenPortIsNamedWithItsErrno() throws {
        let first = try Sockets.listen(try ListenAddress.tcp("127.0.0.1:0"))
        guard case .tcp(_, let port, _) = first.address.kind else { Issue.record("not TCP"); return }
        let same = try ListenAddress.tcp("127.0.0.1:\(port)")
        do {
            _ = try Sockets.listen(same)
            Issue.record("the second listener opened")
        } catch {
            #expect(error.errno == Errno(EADDRINUSE) && error.step == "bind")
            #expect(error.description.contains("127.0.0.1:\(port): bind failed") && error.description.contains("another process listens there"))
        }
    }

    @Test func refusesADirectoryOthersCanWriteUnlessSticky() throws {
        let dir = TempDir()
        let open = dir.path + "/open"
        mkdir(open, 0o777)
        chmod(open, 0o777)
        #expect {
            _ = try Sockets.listen(ListenAddress(.unix(path: open + "/api.sock")))
        } throws: { "\($0)".contains("can be written by others") && "\($0)".contains("not sticky") }
        // Sticky, as /tmp: others cannot replace what is ours there.
        chmod(open, 0o1777)
        _ = try Sockets.listen(ListenAddress(.unix(path: open + "/api.sock")))
        #expect(mode(open + "/api.sock") & 0o7777 == 0o660)
    }

    /// A path too long for the private staging directory is bound in place; its mode is still set on the socket
    /// itself, never through a symlink.
    @Test func modeSetWithoutFollowingSymlinksWhenBoundInPlace() throws {
        let dir = TempDir()
        // 107 bytes at most in sun_path; leave too little room for "/.portcullis-XXXXXX/s".
        let sub = dir.path + "/" + String(repeating: "d", count: max(1, 100 - dir.path.count - 10))
        mkdir(sub, 0o700)
        let path = sub + "/api.sock"
        #expect(path.utf8.count < 108 && path.utf8.count + 21 > 107)
        let victim = dir.path + "/victim"
        _ = dir.write("victim", "secret")
        chmod(victim, 0o600)
        _ = try Sockets.listen(ListenAddress(.unix(path: path)))
        #expect(mode(path) & S_IFMT == S_IFSOCK)
        #expect(mode(path) & 0o7777 == 0o660)
        #expect(mode(victim) & 0o7777 == 0o600)
    }
}
