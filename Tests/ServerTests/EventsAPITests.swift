import Foundation
import Platform
import Testing

@testable import Engine
@testable import Server

/// A Server-Sent Events reader over a raw socket: the head, then events as they come (chunked framing undone).
// @unchecked: one thread at a time reads it (a test hands it to a reader thread and waits for that thread).
final class SSEReader: @unchecked Sendable {
    let connection: RawConnection
    private var body: [UInt8] = []
    private var raw: [UInt8] = []
    private(set) var head = ""
    private(set) var chunked = false
    private(set) var ended = false

    struct Event {
        var id: String?
        var type = "message"
        var data = ""
        var comment = false
        var json: [String: Any] { (try? JSONSerialization.jsonObject(with: Data(data.utf8))) as? [String: Any] ?? [:] }
    }

    init(port: UInt16, path: String = "/events", headers: [String] = [], timeout: Int = 10, receiveBuffer: Int32? = nil) throws {
        connection = try RawConnection(port: port, timeout: timeout, receiveBuffer: receiveBuffer)
        connection.send("GET \(path) HTTP/1.1\r\nHost: localhost\r\n" + headers.map { $0 + "\r\n" }.joined() + "\r\n")
    }

    var status: Int {
        let line = head.split(separator: "\r\n").first ?? ""
        return Int(line.split(separator: " ").dropFirst().first ?? "") ?? 0
    }

    /// Reads more from the socket; false at the end or the timeout.
    private func fill() -> Bool {
        var buf = [UInt8](repeating: 0, count: 65536)
        let n = buf.withUnsafeMutableBytes { recv(connection.fd, $0.baseAddress, $0.count, 0) }
        guard n > 0 else { return false }
        raw += buf[0..<n]
        if head.isEmpty, let end = find(raw, Array("\r\n\r\n".utf8)) {
            head = String(decoding: raw[..<end], as: UTF8.self)
            chunked = head.lowercased().contains("transfer-encoding: chunked")
            raw.removeFirst(end + 4)
        }
        guard !head.isEmpty else { return true }
        if !chunked {
            body += raw
            raw = []
            return true
        }
        while let lineEnd = find(raw, Array("\r\n".utf8)) {
            guard let size = Int(String(decoding: raw[..<lineEnd], as: UTF8.self), radix: 16) else { return false }
            if size == 0 {
                ended = true
                raw = []
                break
            }
            guard raw.count >= lineEnd + 2 + size + 2 else { break }
            body += raw[(lineEnd + 2)..<(lineEnd + 2 + size)]
            raw.removeFirst(lineEnd + 2 + size + 2)
        }
        return true
    }

    private func find(_ hay: [UInt8], _ needle: [UInt8]) -> Int? {
        guard hay.count >= needle.count else { return nil }
        for i in 0...(hay.count - needle.count) where hay[i] == needle[0] && Array(hay[i..<(i + needle.count)]) == needle { return i }
        return nil
    }

    /// The head (and whatever came with it).
    func readHead() -> Bool {
        while head.isEmpty { if !fill() { return false } }
        return true
    }

    /// The next event or comment block; nil at the end or the timeout.
    func next() -> Event? {
        while true {
            if let end = find(body, Array("\n\n".utf8)) {
                let block = String(decoding: body[..<end], as: UTF8.self)
                body.removeFirst(end + 2)
                var e = Event()
                var fields = 0
                for line in block.split(separator: "\n", omittingEmptySubsequences: false) {
                    if line.hasPrefix(":") {
                        e.comment = true
                        e.data = String(line.dropFirst())
                        continue
                    }
                    fields += 1
                    let (name, value) =
                        line.firstIndex(of: ":").map { (String(line[..<$0]), String(line[line.index(after: $0)...].drop { $0 == " " })) } ?? (String(line), "")
                    switch name {
                    case "id": e.id = value
                    case "event": e.type = value
                    case "data": e.data = value
                    default: break
                    }
                }
                if fields > 0 { e.comment = false }
                return e
            }
            if ended || !fill() { return nil }
        }
    }

    /// The next `count` events, skipping comments and `retry:` blocks.
    func events(_ count: Int) -> [Event] {
        var out: [Event] = []
        while out.count < count, let e = next() {
            if e.comment || (e.id == nil && e.type == "message") { continue }
            out.append(e)
        }
        return out
    }
}

/// `GET /events` against a live daemon.
@Suite(.serialized) struct EventsAPITests {
    @Test func bansUnbansAndReloadsInOrderThenResumed() throws {
        let d = try LiveDaemon()
        defer { d.stop() }
        let feed = try SSEReader(port: d.port)
        #expect(feed.readHead() && feed.status == 200)
        #expect(feed.head.contains("Content-Type: text/event-stream") && feed.chunked)
        #expect(try d.unix.request("POST", "/jails/dovecot/bans", body: #"{"ip": "203.0.113.7"}"#).status == 201)
        #expect(try d.unix.request("DELETE", "/bans/203.0.113.7").status == 200)
        #expect(try d.unix.request("POST", "/reload").status == 200)
        let events = feed.events(3)
        #expect(events.map(\.type) == ["ban", "unban", "reload"])
        let ids = events.compactMap { $0.id.flatMap(UInt64.init) }
        #expect(ids.count == 3 && ids == ids.sorted() && Set(ids).count == 3)
        #expect(events[0].json["ip"] as? String == "203.0.113.7" && events[0].json["jail"] as? String == "dovecot")
        #expect(events[0].json["reason"] as? String == "by request" && events[0].json["expiresAt"] is String)
        #expect(events[1].json["reason"] as? String == "request")
        #expect(events[2].json["jails"] as? [String] == ["dovecot"])

        // Back with the first id: the two after it, from the history.
        let resumed = try SSEReader(port: d.port, headers: ["Last-Event-ID: \(events[0].id!)"])
        #expect(resumed.events(2).map(\.id) == [events[1].id, events[2].id])
        // Filtered by type on resume too.
        let onlyBans = try SSEReader(port: d.port, path: "/events?types=unban", headers: ["Last-Event-ID: \(ids[0] - 1)"])
        #expect(onlyBans.events(1).map(\.type) == ["unban"])
        // An id of an earlier run: a gap, with the latest id, then live events.
        let stale = try SSEReader(port: d.port, headers: ["Last-Event-ID: 5"])
        let gap = try #require(stale.events(1).first)
        #expect(gap.type == "gap" && gap.id == events[2].id)
        #expect((gap.json["reason"] as? String)?.contains("earlier run") == true)
        #expect(try d.unix.request("POST", "/jails/dovecot/bans", body: #"{"ip": "198.51.100.9"}"#).status == 201)
        #expect(stale.events(1).first?.json["ip"] as? String == "198.51.100.9")
        #expect(feed.events(1).first?.json["ip"] as? String == "198.51.100.9")
    }

    @Test func aReloadThatStopsAJailTellsItsBansAreOut() throws {
        let second = "\n[second]\nenabled = true\nfilter = dovecot\nlogpath = /dev/null\nbanaction = dry-run\nport = 1200\n"
        let d = try LiveDaemon(jail: second)
        defer { d.stop() }
        #expect(try d.unix.request("POST", "/jails/second/bans", body: #"{"ip": "203.0.113.70"}"#).status == 201)
        let feed = try SSEReader(port: d.port)
        #expect(feed.readHead())
        // The second jail goes from the configuration: its ban leaves the packet filter with it.
        let file = d.dir.path + "/conf/jail.d/test.local"
        let text = try String(contentsOfFile: file, encoding: .utf8)
        try text.replacingOccurrences(of: second, with: "\n").write(toFile: file, atomically: true, encoding: .utf8)
        #expect(try d.unix.request("POST", "/reload").status == 200)
        let events = feed.events(2)
        #expect(events.map(\.type) == ["unban", "reload"])
        #expect(events.first?.json["reason"] as? String == "reload" && events.first?.json["jail"] as? String == "second")
        #expect(events.last?.json["jails"] as? [String] == ["dovecot"])
    }

    @Test(arguments: [
        ("/events?types=ban,nope", [String](), 400), ("/events?types=", [], 400), ("/events?jail=nope", [], 404),
        ("/events", ["Last-Event-ID: 12x"], 400), ("/events", ["Last-Event-ID: 123456789012345678901"], 400),
    ])
    func badRequestsAreRefused(_ path: String, _ headers: [String], _ status: Int) throws {
        let d = try LiveDaemon()
        defer { d.stop() }
        let r = try SSEReader(port: d.port, path: path, headers: headers)
        #expect(r.readHead() && r.status == status, "\(r.head)")
    }

    @Test func failuresOnlyWhenAskedAndByJail() throws {
        let d = try LiveDaemon()
        defer { d.stop() }
        let failures = try SSEReader(port: d.port, path: "/events?types=failure,ban&jail=dovecot")
        #expect(failures.readHead() && failures.status == 200)
        let plain = try SSEReader(port: d.port)
        #expect(plain.readHead())
        // The subscription is registered once the head is out; a failure of each of two addresses, then a ban.
        try AllowlistAPITests().appendFailures(d, [("203.0.113.5", "alice"), ("198.51.100.3", "bob"), ("203.0.113.5", "alice")])
        let seen = failures.events(4)
        #expect(seen.map(\.type) == ["failure", "failure", "failure", "ban"])
        #expect(seen.map { $0.json["failures"] as? Int } == [1, 1, 2, 2])
        #expect(seen[0].json["user"] as? String == "alice" && seen[1].json["ip"] as? String == "198.51.100.3")
        let ban = plain.events(1)
        #expect(ban.map(\.type) == ["ban"])
        // The ban came from a log line: its latency is in the histogram (a manual ban's would not be).
        let metrics = d.tcp.get("/metrics").text
        #expect(metrics.contains("portcullis_ban_latency_seconds_count 1\n") && metrics.contains("portcullis_ban_latency_seconds_bucket{le=\"+Inf\"} 1\n"))
        #expect(metrics.contains("portcullis_ban_latency_seconds_bucket{le=\"10\"} 1\n"))
        #expect(d.daemon.events.wantsFailures)
    }

    @Test func aSlowClientIsDroppedAndOthersGetEverything() throws {
        let d = try LiveDaemon(api: "events_buffer = 65536\n")
        defer { d.stop() }
        // A subscriber that never reads, with a small receive window: the kernel's buffers fill, then ours.
        let stalled = try SSEReader(port: d.port, timeout: 20, receiveBuffer: 2048)
        let reader = try SSEReader(port: d.port, timeout: 20)
        #expect(reader.readHead())
        // Wait until both are subscribed (the stalled one reads nothing, not even its head).
        for _ in 0..<100 where d.daemon.events.subscriberCount < 2 { usleep(20_000) }
        #expect(d.daemon.events.subscriberCount == 2)
        let manager = d.daemon.banManager!
        let count = 3000
        // The reader that keeps up reads as the events come, on a thread of its own.
        let got = Locked<[SSEReader.Event]>([])
        let done = DispatchSemaphore(value: 0)
        Thread.detachNewThread {
            while got.withLock({ $0.count }) < count + 1, let e = reader.events(1).first { got.withLock { $0.append(e) } }
            done.signal()
        }
        // Bans in rounds of 50 (about 12 KB of events, well under the 64 KB limit), the next once the reader has the
        // last: that is what keeping up means. Sent in one burst, a reader slowed by a sanitizer on a busy machine
        // fell 64 KB behind and was dropped too — rightly, but not what this test is about.
        let round = 50
        for start in stride(from: 0, to: count, by: round) {
            for i in start..<min(start + round, count) {
                manager.submit(
                    BanDecision(
                        jail: "dovecot", ip: IPNetwork(IPAddress("2001:db8::\(String(i + 1, radix: 16))")!), time: Clock.now(), failures: 2,
                        matches: [], reason: "test"))
            }
            let sent = min(start + round, count)
            for _ in 0..<1500 where got.withLock({ $0.count }) < sent { usleep(2_000) }
            // A reader 3 s behind will not catch up: the checks below say how it ended, without 60 more waits.
            if got.withLock({ $0.count }) < sent { break }
        }
        #expect(manager.drain(timeout: 60))
        for _ in 0..<500 where got.withLock({ $0.count }) < count { usleep(20_000) }
        // More events after the storm: the stalled client is over the limit with what it has not read (3,000
        // events, about 750 KB, beyond its socket's buffers), the reader that kept up is not.
        #expect(try d.unix.request("POST", "/jails/dovecot/bans", body: #"{"ip": "203.0.113.77"}"#).status == 201)
        #expect(manager.activeCount == count + 1)
        // The reader that keeps up gets every one, in order.
        #expect(done.wait(timeout: .now() + 30) == .success)
        let events = got.withLock { $0 }
        #expect(events.count == count + 1 && events.allSatisfy { $0.type == "ban" })
        #expect(events.last?.json["ip"] as? String == "203.0.113.77")
        // The stalled one was dropped; what it reads now ends with the reason.
        for _ in 0..<100 where d.daemon.events.subscriberCount > 1 { usleep(20_000) }
        #expect(d.daemon.events.subscriberCount == 1)
        var last: SSEReader.Event?
        // Bounded: a subscriber never dropped would get keep-alives for ever.
        let giveUp = Clock.monotonic() + 30
        while last?.type != "close", Clock.monotonic() < giveUp, let e = stalled.next() { if !e.comment { last = e } }
        #expect(last?.type == "close")
        #expect((last?.json["reason"] as? String)?.contains("read too slowly") == true, "\(String(describing: last))")
        #expect(d.tcp.get("/metrics").text.contains("portcullis_event_subscribers_dropped_total 1\n"))
    }

    @Test func keepAliveAndShutdown() throws {
        let d = try LiveDaemon(tokens: true, api: "events_keepalive = 1\n")
        var stopped = false
        defer { if !stopped { d.stop() } }
        #expect(try SSEReader(port: d.port).readHead())
        let anonymous = try SSEReader(port: d.port)
        #expect(anonymous.readHead() && anonymous.status == 401)
        // The read token suffices.
        let feed = try SSEReader(port: d.port, headers: ["Authorization: Bearer \(LiveDaemon.readToken)"])
        #expect(feed.readHead() && feed.status == 200)
        var comments: [String] = []
        let start = Clock.monotonic()
        while comments.filter({ $0.contains("keep-alive") }).isEmpty && Clock.monotonic() - start < 5, let e = feed.next() {
            if e.comment { comments.append(e.data) }
        }
        #expect(comments.contains { $0.contains("keep-alive") })
        d.stop()
        stopped = true
        var last: SSEReader.Event?
        while let e = feed.next() { if !e.comment { last = e } }
        #expect(last?.type == "close" && (last?.json["reason"] as? String) == "the server is stopping")
        #expect(feed.ended)
    }
}
