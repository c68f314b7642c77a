import Engine
import HTTP
import Platform

/// `GET /events`: the event feed as Server-Sent Events.
extension AdminAPI {
    func events(_ request: HTTPRequest, target: RequestTarget) -> HandlerResult {
        var kinds: Set<FeedEvent.Kind> = [.ban, .unban, .reload]
        if let text = target.parameter("types") {
            var asked: Set<FeedEvent.Kind> = []
            for word in text.split(separator: ",", omittingEmptySubsequences: false) {
                guard let k = FeedEvent.Kind(rawValue: String(word)) else {
                    return .response(
                        .problem(
                            400,
                            "types: '\(word)' is not an event type (ban, unban, failure, reload, separated by commas)"))
                }
                asked.insert(k)
            }
            kinds = asked
        }
        var jails: Set<String>? = nil
        if let text = target.parameter("jail") {
            var names: Set<String> = []
            for word in text.split(separator: ",", omittingEmptySubsequences: false) {
                guard runtime(String(word)) != nil else { return .response(.problem(404, "jail: no running jail named '\(word)'")) }
                names.insert(String(word))
            }
            jails = names
        }
        var after: UInt64? = nil
        if let text = request.header("last-event-id") {
            // An empty value is what the EventSource standard sends before any id: no resume.
            if !text.isEmpty {
                guard let id = EventFeed.parseID(text) else {
                    return .response(.problem(400, "Last-Event-ID: '\(text)' is not an event id (the digits of an id: line)"))
                }
                after = id
            }
        }
        let stream = EventStream(feed: daemon.events, kinds: kinds, jails: jails, after: after)
        let head = HTTPResponse(
            status: 200,
            headers: [
                ("Content-Type", "text/event-stream; charset=utf-8"),
                ("Cache-Control", "no-store"),
                // nginx buffers proxied answers unless told not to.
                ("X-Accel-Buffering", "no"),
            ])
        return .stream(head: head, stream)
    }
}

/// One subscriber of the event feed on one connection: batches are queued here by the publisher's thread (the ban
/// worker, a log watcher) — shared, not copied — and taken by the connection's event loop at its next wake-up,
/// which copies this subscriber's events into its output. The bound is the loop's: a subscriber with more than
/// `events_buffer` bytes still unsent when new events come is ended (with a `close` event saying why), so a stalled
/// client costs at most that much plus what was published meanwhile (a ban storm is published in batches of up to
/// 5,000), and it never slows a ban or another subscriber.
final class EventStream: HTTPStream, EventSubscriber, @unchecked Sendable {
    // @unchecked, the invariant: `queue` is guarded by its lock; everything else is immutable.
    let kinds: Set<FeedEvent.Kind>
    private let jails: Set<String>?
    private let feed: EventFeed
    private let after: UInt64?

    private struct Queue {
        /// Shared with the other subscribers until `take` copies what this one wants into its own bytes.
        var batches: [EncodedBatch] = []
        var wake: (@Sendable () -> Void)?
        var closed = false
    }
    private let queue = Locked(Queue())

    init(feed: EventFeed, kinds: Set<FeedEvent.Kind>, jails: Set<String>?, after: UInt64?) {
        self.feed = feed
        self.kinds = kinds
        self.jails = jails
        self.after = after
    }

    private func wanted(_ e: EncodedEvent) -> Bool {
        guard let jails, let jail = e.jail else { return true }
        return jails.contains(jail)
    }

    func open(wake: @escaping @Sendable () -> Void) -> [UInt8] {
        queue.withLock { $0.wake = wake }
        let (resume, replay, lastID) = feed.subscribe(self, after: after)
        // How long a client waits before it reconnects (the EventSource default is a few seconds anyway).
        var out = Array("retry: 2000\n: portcullis event feed\n\n".utf8)
        switch resume {
        case .live, .replay:
            for e in replay where wanted(e) { out += e.frame }
        case .gap(let why):
            // With the latest id, so that the client's next reconnection resumes from here.
            var o = JSONObject()
            o.string("type", "gap")
            o.string("reason", why)
            o.string("resync", "GET /bans")
            out += Array("id: \(lastID)\nevent: gap\ndata: \(o.text)\n\n".utf8)
        }
        return out
    }

    /// Called with the feed's lock held: short, and never back into the feed.
    func enqueue(_ batch: EncodedBatch) {
        let wake: (@Sendable () -> Void)? = queue.withLock { q in
            guard !q.closed else { return nil }
            let wasEmpty = q.batches.isEmpty
            q.batches.append(batch)
            return wasEmpty ? q.wake : nil
        }
        wake?()
    }

    /// On the loop's thread: this subscriber's events (its jails) copied out of the shared batches.
    func take() -> HTTPStreamOutput {
        let batches = queue.withLock { q in
            defer { q.batches = [] }
            return q.batches
        }
        var out: [UInt8] = []
        out.reserveCapacity(batches.reduce(0) { $0 + $1.bytes })
        for b in batches {
            for e in b.events where wanted(e) { out += e.frame }
        }
        return out.isEmpty ? .nothing : .bytes(out)
    }

    var keepAlive: [UInt8] { Array(": keep-alive\n\n".utf8) }

    func farewell(_ why: String) -> [UInt8] {
        var o = JSONObject()
        o.string("type", "close")
        o.string("reason", why)
        return Array("event: close\ndata: \(o.text)\n\n".utf8)
    }

    func close() {
        let first = queue.withLock { q -> Bool in
            defer {
                q.closed = true
                q.wake = nil
                q.batches = []
            }
            return !q.closed
        }
        if first { feed.unsubscribe(self) }
    }
}
