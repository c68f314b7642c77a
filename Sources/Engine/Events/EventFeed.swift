import FoundationEssentials
import Platform
import Synchronization

/// Where a subscriber's events go: a `GET /events` connection. `enqueue` is called with the feed's lock held
/// (that keeps every subscriber's events in id order), so it must be short and must not call back into the feed.
public protocol EventSubscriber: AnyObject, Sendable {
    /// What this subscriber wants: the feed hands it only these (it filters by jail itself).
    var kinds: Set<FeedEvent.Kind> { get }
    /// A batch shared by every subscriber (keep it, do not copy its bytes here: this runs on the thread that
    /// banned, once per subscriber).
    func enqueue(_ batch: EncodedBatch)
    /// A client of `GET /events` (counted in the metrics), not one of the daemon's own (webhooks, the cluster).
    var isClient: Bool { get }
}

extension EventSubscriber {
    public var isClient: Bool { false }
}

/// Events published together, with the size of their wire form.
public struct EncodedBatch: Sendable {
    public let events: [EncodedEvent]
    public let bytes: Int

    public init(_ events: [EncodedEvent]) {
        self.events = events
        bytes = events.reduce(0) { $0 + $1.frame.count }
    }
}

/// An event with its wire form, made once per event and shared by every subscriber.
public struct EncodedEvent: Sendable {
    public let id: UInt64
    public let kind: FeedEvent.Kind
    public let jail: String?
    /// The SSE wire form; empty when no `GET /events` client listened as it was published (the daemon's own
    /// subscribers, webhooks and the cluster, read `event`).
    public let frame: [UInt8]
    /// The event itself (webhooks make their own body of it).
    public let event: FeedEvent

    public init(_ e: FeedEvent, withFrame: Bool = true) {
        id = e.id
        kind = e.kind
        jail = e.jail
        frame = withFrame ? e.frame : []
        event = e
    }
}

/// The daemon's events (bans, unbans, failures, reloads) for live subscribers, and the latest
/// `historyLimit` of them (failures excepted) for a subscriber that comes back with `Last-Event-ID`.
///
/// Ids are `base + n`: `base` is the start time in milliseconds × 1,000,000, so an id tells which run of the
/// daemon made it (a client that reconnects after a restart is told what it missed cannot be replayed: a `gap`),
/// and they increase within a run. Publishing costs a lock and an append when nobody listens (the ban path of a
/// storm must not pay for a feed nobody reads); the wire form is made only for subscribers.
public final class EventFeed: @unchecked Sendable {
    // @unchecked, the invariant: `next`, `history`, `historyStart` and `subscribers` are guarded by `lock`;
    // `base` and `historyLimit` are immutable; `failureListeners` is atomic.
    public let base: UInt64
    public let historyLimit: Int
    private let lock = Lock()
    private var next: UInt64 = 1
    /// A ring of the latest events (not failures): `history[(historyStart + i) % historyLimit]` is the i-th oldest.
    private var history: [FeedEvent] = []
    private var historyStart = 0
    private var subscribers: [ObjectIdentifier: any EventSubscriber] = [:]
    private var handedOut = 0
    /// Subscribers that asked for failures: read on every counted failure, without a lock.
    private let failureListeners = Atomic<Int>(0)

    public static let defaultHistoryLimit = 10_000

    public init(historyLimit: Int = EventFeed.defaultHistoryLimit, startedAt: Double = Clock.now()) {
        self.historyLimit = max(1, historyLimit)
        base = UInt64(max(0, startedAt * 1000).rounded(.down)) &* 1_000_000
    }

    /// Whether anyone wants failure events (they are made only then).
    public var wantsFailures: Bool { failureListeners.load(ordering: .relaxed) > 0 }

    public var subscriberCount: Int { lock.withLock { subscribers.count } }

    /// Subscribers that are `GET /events` clients.
    public var clientCount: Int { lock.withLock { subscribers.values.reduce(0) { $0 + ($1.isClient ? 1 : 0) } } }

    /// Events handed to subscribers so far (one per event and subscriber that wanted it, before its jail filter).
    public var eventsHandedOut: Int { lock.withLock { handedOut } }

    /// The last id given, or `base` when none was.
    public var lastID: UInt64 { lock.withLock { base + next - 1 } }

    public enum Publishable: Sendable {
        case ban(
            jail: String, ip: IPNetwork, bannedAt: Double, banTime: BanTime, banCount: Int, failures: Int, reason: String, matches: [String] = [],
            origin: String? = nil)
        case unban(jail: String, ip: IPNetwork, reason: FeedEvent.UnbanReason, text: String)
        case failure(jail: String, ip: IPNetwork, failures: Int, user: String?)
        case reload(jails: [String], errors: [String])
    }

    /// Gives the events their ids, keeps them in the history and hands them to the subscribers that want them,
    /// in one go: a batch of bans is one lock and one wake-up per subscriber.
    public func publish(_ items: [Publishable], now: Double = Clock.now()) {
        guard !items.isEmpty else { return }
        lock.lock()
        defer { lock.unlock() }
        var events: [FeedEvent] = []
        events.reserveCapacity(items.count)
        for item in items {
            let id = base + next
            next += 1
            let e: FeedEvent
            switch item {
            case .ban(let jail, let ip, let bannedAt, let banTime, let banCount, let failures, let reason, let matches, let origin):
                e = FeedEvent(
                    id: id, time: now, jail: jail, ip: ip,
                    detail: .ban(
                        bannedAt: bannedAt, banTime: banTime, banCount: banCount, failures: failures, reason: reason, matches: matches, origin: origin))
            case .unban(let jail, let ip, let reason, let text):
                e = FeedEvent(id: id, time: now, jail: jail, ip: ip, detail: .unban(reason, text: text))
            case .failure(let jail, let ip, let failures, let user):
                e = FeedEvent(id: id, time: now, jail: jail, ip: ip, detail: .failure(failures: failures, user: user))
            case .reload(let jails, let errors):
                e = FeedEvent(id: id, time: now, jail: nil, ip: nil, detail: .reload(jails: jails, errors: errors))
            }
            if e.kind != .failure { remember(e) }
            events.append(e)
        }
        guard !subscribers.isEmpty else { return }
        // Encoded once, filtered once per set of wanted kinds (most subscribers share one): what each subscriber
        // costs this thread is a lock and an append, whatever the batch's size.
        // The wire form only for clients: with only webhooks or the cluster listening, a ban storm is not encoded.
        let frames = subscribers.values.contains { $0.isClient }
        let encoded = events.map { EncodedEvent($0, withFrame: frames) }
        var byKinds: [Set<FeedEvent.Kind>: EncodedBatch] = [:]
        for s in subscribers.values {
            let batch: EncodedBatch
            if let b = byKinds[s.kinds] {
                batch = b
            } else {
                batch = EncodedBatch(encoded.filter { s.kinds.contains($0.kind) })
                byKinds[s.kinds] = batch
            }
            if !batch.events.isEmpty {
                handedOut += batch.events.count
                s.enqueue(batch)
            }
        }
    }

    private func remember(_ e: FeedEvent) {
        if history.count < historyLimit {
            history.append(e)
        } else {
            history[historyStart] = e
            historyStart = (historyStart + 1) % historyLimit
        }
    }

    /// What a subscriber gets first, for the `Last-Event-ID` it came back with.
    public enum Resume: Sendable, Equatable {
        /// Nothing was asked for: live events from now on.
        case live
        /// The events after the id, from the history (maybe none).
        case replay(count: Int)
        /// The id cannot be resumed from; why (the subscriber should read the state again: `GET /bans`).
        case gap(String)
    }

    /// Registers a subscriber and returns, atomically with it, the events it missed after `lastEventID`: nothing
    /// is lost or doubled between the replay and the live events. `lastID` is the latest id given (for a gap: the
    /// subscriber's place from now on).
    public func subscribe(_ s: any EventSubscriber, after lastEventID: UInt64?) -> (resume: Resume, replay: [EncodedEvent], lastID: UInt64) {
        lock.lock()
        defer { lock.unlock() }
        subscribers[ObjectIdentifier(s)] = s
        if s.kinds.contains(.failure) { failureListeners.add(1, ordering: .relaxed) }
        let last = base + next - 1
        guard let after = lastEventID else { return (.live, [], last) }
        guard after >= base && after <= last else {
            return (.gap(after < base ? "event \(after) is from an earlier run of the daemon" : "event \(after) was never sent"), [], last)
        }
        let oldestKept = history.isEmpty ? last + 1 : history[historyStart].id
        // Failures are not kept: ids between kept events may be failures, missed by design.
        if after + 1 < oldestKept && !(history.count < historyLimit) {
            return (.gap("event \(after) is older than the \(historyLimit) events kept"), [], last)
        }
        var replay: [EncodedEvent] = []
        for i in 0..<history.count {
            let e = history[(historyStart + i) % history.count]
            if e.id > after && s.kinds.contains(e.kind) { replay.append(EncodedEvent(e)) }
        }
        return (.replay(count: replay.count), replay, last)
    }

    public func unsubscribe(_ s: any EventSubscriber) {
        lock.withLock {
            if subscribers.removeValue(forKey: ObjectIdentifier(s)) != nil && s.kinds.contains(.failure) {
                failureListeners.subtract(1, ordering: .relaxed)
            }
        }
    }

    /// The ids a client may send back: digits, at most 20 (a UInt64).
    public static func parseID(_ text: String) -> UInt64? {
        guard (1...20).contains(text.utf8.count), text.utf8.allSatisfy({ (48...57).contains($0) }) else { return nil }
        return UInt64(text)
    }
}
