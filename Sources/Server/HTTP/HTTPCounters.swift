import Platform

/// Counters for /metrics, updated by the event loop.
public final class HTTPCounters: Sendable {
    public let state = Locked(HTTPStats())
    public init() {}
}
