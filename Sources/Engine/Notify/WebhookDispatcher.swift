import CHTTPClient
import FoundationEssentials
import Glibc
import Platform

/// Delivers one webhook's events: a subscriber of the event feed that queues a signed JSON body per event (quickly,
/// on the thread that banned), and a thread of its own that POSTs them in order. Banning never waits for it: the
/// queue is bounded (`queue`; beyond it the oldest delivery is dropped and counted), deliveries are written to the
/// store before they are attempted (a restart resumes them), and a delivery that fails with a 5xx answer, a
/// timeout or a connection error is retried after a delay that doubles (with jitter), holding the ones behind it
/// (the receiver gets them in order, and a receiver that is down is not hammered). A 4xx answer (but 408 and 429)
/// or a certificate that cannot be verified is a failure, not retried.
public final class WebhookDispatcher: EventSubscriber, @unchecked Sendable {
    // @unchecked, the invariant: `state` is locked; `client` is used by the worker thread alone (`pc_http_cancel`
    // is thread-safe); the rest is immutable after init.
    public let spec: WebhookSpec
    public let jail: String
    public var kinds: Set<FeedEvent.Kind> { spec.events }
    /// The store's key of this webhook's deliveries.
    public var hookKey: String { WebhookDispatcher.hookKey(jail: jail, url: spec.url) }
    /// `dovecot/1`: the jail and the webhook's position among its actions (metrics and logs; never the URL).
    public var name: String { "\(jail)/\(spec.index)" }
    private let secret: [UInt8]
    private let store: BanStore?
    private let log: Logger
    private let hostname: String
    private let thread: StoppableThread
    /// libcurl's handle and connection, owned by this dispatcher: created in init, freed in deinit (after the
    /// worker, its only user, has been joined by `stop`).
    private let client: OpaquePointer
    private static let userAgent = "Portcullis/\(PortcullisVersion.string)"

    public struct Stats: Sendable, Equatable {
        public var delivered = 0
        /// Given up: a 4xx answer, a certificate error, or `attempts` failed attempts.
        public var failed = 0
        /// Attempts that failed and will be made again.
        public var retried = 0
        /// Dropped because the queue was full.
        public var dropped = 0
        /// Waiting now.
        public var queued = 0
    }

    private struct State {
        var incoming: [(event: String, body: [UInt8])] = []
        var stats = Stats()
    }
    private let state = Locked(State())

    private struct Item {
        var id: Int
        var event: String
        var body: [UInt8]
        var attempts: Int
        var nextAt: Double
    }

    public static func hookKey(jail: String, url: String) -> String { "\(jail) \(url)" }

    public init(spec: WebhookSpec, jail: String, store: BanStore?, log: Logger) throws {
        self.spec = spec
        self.jail = jail
        self.store = store
        self.log = log
        secret = try spec.readSecret()
        hostname = HostName.current ?? ""
        thread = try StoppableThread(name: "portcullis-hook")
        guard let c = pc_http_new() else { throw ConfigError("webhook: libcurl could not start (out of memory)") }
        client = c
    }

    deinit { pc_http_free(client) }

    public var statistics: Stats { state.withLock { $0.stats } }

    /// Loads the deliveries a previous run left, and starts the worker.
    public func start() throws {
        let left = try store?.pendingDeliveries(hook: hookKey) ?? []
        if !left.isEmpty { log.notice("[\(jail)] webhook \(spec.index) (\(spec.host)): \(left.count) delivery(ies) left from before, resumed") }
        state.withLock { $0.stats.queued = left.count }
        let items = left.map { Item(id: $0.id, event: $0.event, body: $0.body, attempts: $0.attempts, nextAt: 0) }
        try thread.start { [self] in run(items) }
    }

    /// Stops the worker (a request in progress is cancelled); what is queued stays in the store.
    public func stop() {
        thread.requestStop()
        pc_http_cancel(client)
        thread.stop()
    }

    // MARK: the feed's side (its lock held: short)

    public func enqueue(_ batch: EncodedBatch) {
        var made: [(String, [UInt8])] = []
        for e in batch.events where e.jail == jail && spec.events.contains(e.kind) {
            let body = e.event.json(matches: true, extra: [("id", String(e.id)), ("host", hostname)])
            made.append((e.kind.rawValue, Array(body.utf8)))
        }
        guard !made.isEmpty else { return }
        state.withLock { s in
            // Bounded here too: a worker stuck on a receiver must not let memory grow.
            s.stats.dropped += s.incoming.append(contentsOf: made, keepingAtMost: spec.queue).count
        }
        thread.wake()
    }

    // MARK: the worker

    private func run(_ initial: [Item]) {
        var pending = initial
        var nextLocalID = -1
        var warnedDrop = false
        // Deliveries done (delivered or given up), removed from the store together: one transaction each was most
        // of a delivery's cost (2,300/s against 11,000/s). A crash before the removal sends them again after the
        // restart: at least once, as webhooks go (`X-Portcullis-Delivery` lets a receiver tell).
        var done: [Int] = []
        func forget(_ id: Int) {
            if id > 0 { done.append(id) }
            if done.count >= 500 { flushDone(&done) }
        }
        while true {
            let stopping = thread.isStopping
            // New deliveries: into the store first (a restart finds them), then the queue.
            let incoming = state.withLock { s in
                defer { s.incoming = [] }
                return s.incoming
            }
            if !incoming.isEmpty {
                var ids: [Int] = []
                if let store {
                    do { ids = try store.addDeliveries(hook: hookKey, incoming) } catch {
                        log.error("[\(jail)] webhook \(spec.index) (\(spec.host)): storing \(incoming.count) delivery(ies) failed: \(error); kept in memory")
                    }
                }
                for (i, item) in incoming.enumerated() {
                    // Not stored (no database, or it failed): a negative id of this run, never looked up there.
                    let id: Int
                    if i < ids.count {
                        id = ids[i]
                    } else {
                        id = nextLocalID
                        nextLocalID -= 1
                    }
                    pending.append(Item(id: id, event: item.event, body: item.body, attempts: 0, nextAt: 0))
                }
                let over = pending.count - spec.queue
                if over > 0 {
                    let dropped = pending.prefix(over)
                    pending.removeFirst(over)
                    // A failed removal only means they are tried again after a restart.
                    try? store?.removeDeliveries(dropped.map(\.id).filter { $0 > 0 })
                    state.withLock { $0.stats.dropped += over }
                    if !warnedDrop {
                        warnedDrop = true
                        log.warning("[\(jail)] webhook \(spec.index) (\(spec.host)): queue full (\(spec.queue)): the oldest deliveries are dropped")
                    }
                }
                state.withLock { $0.stats.queued = pending.count }
            }
            if stopping {
                flushDone(&done)
                return
            }
            guard var head = pending.first else {
                warnedDrop = false
                flushDone(&done)
                thread.waitForWake(timeout: nil)
                continue
            }
            let now = Clock.now()
            if head.nextAt > now {
                flushDone(&done)
                thread.waitForWake(timeout: head.nextAt - now)
                continue
            }
            let outcome = deliver(head)
            head.attempts += 1
            switch outcome {
            case .delivered:
                pending.removeFirst()
                forget(head.id)
                state.withLock {
                    $0.stats.delivered += 1
                    $0.stats.queued = pending.count
                }
            case .failed(let why):
                pending.removeFirst()
                forget(head.id)
                state.withLock {
                    $0.stats.failed += 1
                    $0.stats.queued = pending.count
                }
                log.warning("[\(jail)] webhook \(spec.index) (\(spec.host)): delivery \(head.id) (\(head.event)) failed: \(why); not retried")
            case .retry(let why):
                if thread.isStopping { continue }
                if head.attempts >= spec.attempts {
                    pending.removeFirst()
                    forget(head.id)
                    state.withLock {
                        $0.stats.failed += 1
                        $0.stats.queued = pending.count
                    }
                    log.warning(
                        "[\(jail)] webhook \(spec.index) (\(spec.host)): delivery \(head.id) (\(head.event)) given up after \(head.attempts) attempts: \(why)")
                    continue
                }
                let delay = WebhookDispatcher.delay(attempt: head.attempts, base: spec.backoff)
                head.nextAt = Clock.now() + delay
                pending[0] = head
                try? store?.updateDelivery(id: head.id, attempts: head.attempts, nextAt: head.nextAt)
                state.withLock { $0.stats.retried += 1 }
                log.info(
                    "[\(jail)] webhook \(spec.index) (\(spec.host)): delivery \(head.id) (\(head.event)): \(why); attempt \(head.attempts + 1) in \(TextFormat.fixed(delay, digits: 1)) s"
                )
            }
        }
    }

    private func flushDone(_ done: inout [Int]) {
        guard !done.isEmpty else { return }
        do {
            try store?.removeDeliveries(done)
            done = []
        } catch {
            // Kept for the next try: at worst they are sent again after a restart.
            log.error("[\(jail)] webhook \(spec.index) (\(spec.host)): removing \(done.count) finished delivery(ies) from the store failed: \(error)")
            if done.count > 100_000 { done = [] }
        }
    }

    /// The delay before attempt `attempt + 1`: `base × 2^(attempt-1)`, at most 10 minutes, times a random factor
    /// from 0.5 to 1 (receivers that come back are not hit by every sender at once).
    static func delay(attempt: Int, base: Double, random: Double = Double.random(in: 0.5...1)) -> Double {
        min(600, base * pow(2, Double(max(0, attempt - 1)))) * random
    }

    enum Outcome: Equatable {
        case delivered
        case retry(String)
        case failed(String)
    }

    private func deliver(_ item: Item) -> Outcome {
        let signature = "sha256=" + WebhookDispatcher.hmacHex(key: secret, item.body)
        let headers = [
            "Content-Type: application/json", "X-Portcullis-Event: \(item.event)", "X-Portcullis-Delivery: \(item.id)",
            "X-Portcullis-Signature: \(signature)",
            // libcurl would otherwise wait for "100 Continue" on bodies over 1 KiB.
            "Expect:",
        ]
        var result = pc_http_result()
        let cHeaders = headers.map { strdup($0) }
        defer { for h in cHeaders { free(h) } }
        var pointers = cHeaders.map { UnsafePointer($0) }
        item.body.withUnsafeBufferPointer { body in
            pointers.withUnsafeMutableBufferPointer { list in
                pc_http_post(
                    client, spec.url, list.baseAddress, list.count, body.baseAddress, body.count, Int(spec.timeout * 1000), spec.cafile,
                    WebhookDispatcher.userAgent, &result)
            }
        }
        return WebhookDispatcher.classify(result)
    }

    static func classify(_ r: pc_http_result) -> Outcome {
        let message = TextFormat.text(ofCArray: r.error)
        if r.status >= 200 && r.status < 300 { return .delivered }
        if r.status == 408 || r.status == 429 || r.status >= 500 { return .retry("HTTP \(r.status)") }
        if r.status > 0 { return .failed("HTTP \(r.status)") }
        if r.tls_failure != 0 { return .failed("TLS: \(message)") }
        return .retry(r.timed_out != 0 ? "no answer within \(message.isEmpty ? "the timeout" : message)" : message)
    }

    /// HMAC-SHA256 of `data` under `key`, in lowercase hex (what `X-Portcullis-Signature: sha256=` carries).
    public static func hmacHex(key: [UInt8], _ data: [UInt8]) -> String {
        var mac = [UInt8](repeating: 0, count: 32)
        _ = pc_hmac_sha256(key, key.count, data, data.count, &mac)
        let digits = Array("0123456789abcdef".utf8)
        var out: [UInt8] = []
        out.reserveCapacity(64)
        for b in mac {
            out.append(digits[Int(b >> 4)])
            out.append(digits[Int(b & 15)])
        }
        return String(decoding: out, as: UTF8.self)
    }
}
