import Platform
import Testing

@testable import Engine

/// The event feed's ids, history and resume, without a server.
@Suite struct EventFeedTests {
    /// A subscriber as `GET /events` is (a client, given the wire form), or as the daemon's own are.
    final class Sink: EventSubscriber, @unchecked Sendable {
        // @unchecked: `got` is locked.
        let kinds: Set<FeedEvent.Kind>
        let isClient: Bool
        let got = Locked<[EncodedEvent]>([])
        init(_ kinds: Set<FeedEvent.Kind>, client: Bool = true) {
            self.kinds = kinds
            isClient = client
        }
        func enqueue(_ batch: EncodedBatch) { got.withLock { $0 += batch.events } }
    }

    @Test func theWireFormIsMadeOnlyForClients() {
        let feed = EventFeed()
        let own = Sink([.unban], client: false)
        _ = feed.subscribe(own, after: nil)
        feed.publish(unbans(2))
        #expect(own.got.withLock { $0.map(\.frame.count) } == [0, 0])
        let client = Sink([.unban])
        _ = feed.subscribe(client, after: nil)
        feed.publish(unbans(1))
        #expect(own.got.withLock { $0.count } == 3 && client.got.withLock { $0.first?.frame.isEmpty } == false)
        #expect(feed.clientCount == 1 && feed.subscriberCount == 2)
    }

    static let ip = IPNetwork(IPAddress("203.0.113.1")!)

    func unbans(_ n: Int) -> [EventFeed.Publishable] {
        (0..<n).map { _ in .unban(jail: "j", ip: EventFeedTests.ip, reason: .expired, text: "ban time over") }
    }

    @Test func idsTellTheRunAndIncrease() {
        let feed = EventFeed(historyLimit: 10, startedAt: 1_800_000_000.5)
        #expect(feed.base == 1_800_000_000_500 * 1_000_000)
        #expect(feed.lastID == feed.base)
        feed.publish(unbans(3))
        #expect(feed.lastID == feed.base + 3)
        let later = EventFeed(startedAt: 1_800_000_001)
        #expect(later.base > feed.lastID)
    }

    @Test func resumeFromTheHistoryThenGaps() {
        let feed = EventFeed(historyLimit: 4, startedAt: 1_800_000_000)
        let b = feed.base
        feed.publish(unbans(3))
        // Failures are handed out live, never kept.
        feed.publish([.failure(jail: "j", ip: EventFeedTests.ip, failures: 1, user: nil)])
        let s = Sink([.unban, .failure])
        let (resume, replay, last) = feed.subscribe(s, after: b + 1)
        #expect(resume == .replay(count: 2) && replay.map(\.id) == [b + 2, b + 3] && last == b + 4)
        #expect(feed.wantsFailures)
        feed.publish([.failure(jail: "j", ip: EventFeedTests.ip, failures: 2, user: "u")] + unbans(1))
        #expect(s.got.withLock { $0.map(\.kind) } == [.failure, .unban])
        // The ring holds the latest four: b+3, b+6 (b+4 and b+5 were failures), then four more push b+3 out.
        feed.publish(unbans(4))
        if case .gap(let why) = feed.subscribe(Sink([.unban]), after: b + 3).resume {
            #expect(why.contains("older than the 4 events kept"))
        } else {
            Issue.record("no gap for an id pushed out of the history")
        }
        #expect(feed.subscribe(Sink([.unban]), after: b + 6).replay.count == 4)
        #expect(feed.subscribe(Sink([.unban]), after: b - 1).resume == .gap("event \(b - 1) is from an earlier run of the daemon"))
        #expect(feed.subscribe(Sink([.unban]), after: b + 100).resume == .gap("event \(b + 100) was never sent"))
        feed.unsubscribe(s)
        #expect(!feed.wantsFailures)
    }

    @Test func histogramCountsCumulatively() {
        var h = Histogram(bounds: [0.01, 0.1, 1])
        for v in [0.005, 0.01, 0.05, 2, 0.5] { h.observe(v) }
        #expect(h.cumulative.map(\.count) == [2, 3, 4, 5])
        #expect(h.cumulative.last?.bound == .infinity && h.count == 5 && abs(h.sum - 2.565) < 1e-9)
    }

    @Test func theWireForm() {
        let feed = EventFeed(startedAt: 1_800_000_000)
        let s = Sink([.ban])
        _ = feed.subscribe(s, after: nil)
        feed.publish(
            [
                .ban(
                    jail: "sshd", ip: IPNetwork("2001:db8::/64")!, bannedAt: 1_800_000_100, banTime: .seconds(600), banCount: 2, failures: 5,
                    reason: "5 failures")
            ],
            now: 1_800_000_100)
        let frame = String(decoding: s.got.withLock { $0 }.first?.frame ?? [], as: UTF8.self)
        #expect(frame.hasPrefix("id: \(feed.base + 1)\nevent: ban\ndata: {"))
        #expect(frame.hasSuffix("}\n\n") && frame.split(separator: "\n").count == 3)
        #expect(frame.contains(#""ip":"2001:db8::/64""#) && frame.contains(#""expiresAt":"2027-01-15T08:11:40Z""#))
        #expect(EventFeed.parseID("18446744073709551615") == UInt64.max)
        #expect(EventFeed.parseID("18446744073709551616") == nil && EventFeed.parseID("-1") == nil && EventFeed.parseID("") == nil)
    }
}
