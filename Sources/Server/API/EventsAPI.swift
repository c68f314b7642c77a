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
        let stream = EventStream(feed: daemon.events, kinds: kinds, jails: jails, after: after, limit: streamBufferLimit)
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
/// worker, a log watcher) — shared with the other subscribers, not copied — and the connection's event loop takes
/// this subscriber's events out of them as its socket drains (`take(max:)`). A subscriber with more than `limit`
/// bytes not yet taken when a new batch comes is ended (the loop writes a `close` event saying why): a stalled
/// client holds at most that much of the batches alive, plus a socket's buffer and one piece of copied output, and
/// never slows a ban or another subscriber. (A batch is never refused for its own size: a ban storm comes in
/// batches of up to 5,000 events, and a client that keeps up must not be dropped for one.)
final class EventStream: HTTPStream, EventSubscriber, @unchecked Sendable {
    var isClient: Bool { true }
    // @unchecked, the invariant: `queue` is guarded by its lock; everything else is immutable.
    let kinds: Set<FeedEvent.Kind>
    private let jails: Set<String>?
    private let feed: EventFeed
    private let after: UInt64?
    private let limit: Int

    private struct Queue {
        /// Shared with the other subscribers; `next` is the first event of `batches[0]` not taken yet.
        var batches: [EncodedBatch] = []
        var next = 0
        /// Bytes of the batches not taken yet.
        var waiting = 0
        /// Set when a batch came with more than `limit` bytes waiting: how many.
        var overflow: Int?
        var wake: (@Sendable () -> Void)?
        var closed = false
    }
    private let queue = Locked(Queue())

    init(feed: EventFeed, kinds: Set<FeedEvent.Kind>, jails: Set<String>?, after: UInt64?, limit: Int) {
        self.limit = limit
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
            guard !q.closed, q.overflow == nil else { return nil }
            if q.waiting > limit {
                q.overflow = q.waiting
                q.batches = []
                return q.wake
            }
            let wasEmpty = q.batches.isEmpty
            q.batches.append(batch)
            q.waiting += batch.bytes
            return wasEmpty ? q.wake : nil
        }
        wake?()
    }

    /// On the loop's thread: this subscriber's events (its jails) copied out of the shared batches.
    func take(max: Int) -> HTTPStreamOutput {
        queue.withLock { q in
            if let waiting = q.overflow {
                return .overflowed(why: "the client read too slowly: \(waiting) bytes were waiting for it (limit \(limit))")
            }
            var out: [UInt8] = []
            while out.count < max, let batch = q.batches.first {
                let e = batch.events[q.next]
                if wanted(e) { out += e.frame }
                q.waiting -= e.frame.count
                q.next += 1
                if q.next == batch.events.count {
                    q.batches.removeFirst()
                    q.next = 0
                }
            }
            return out.isEmpty ? .nothing : .bytes(out)
        }
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
