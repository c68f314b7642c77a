import Glibc

public struct HTTPServerOptions: Sendable {
    public var limits = HTTPLimits()
    /// TCP connections at most (the Unix socket has its own `maxUnixConnections`: no one on the network, or any
    /// user on the machine, can fill the place root's CLI needs).
    public var maxConnections = 16384
    public var maxUnixConnections = 1024
    /// TCP connections from one client address at most.
    public var maxConnectionsPerClient = 64
    /// Past this share of `maxConnections`, a silent connection is closed after `crowdedIdleTimeout`.
    public var crowdedShare = 0.75
    public var crowdedIdleTimeout: Double = 2
    public var idleTimeout: Double = 60
    public var requestTimeout: Double = 10
    /// How long a stop waits for requests in flight.
    public var shutdownGrace: Double = 10
    /// A stream (`GET /events`) with nothing to send for this long gets a keep-alive comment.
    public var streamKeepAlive: Double = 15
    /// Event-loop threads (each serves its share of the connections).
    public var threads = HTTPServerOptions.defaultThreads

    /// One per core, at most 4: the API is small work next to the engine.
    public static var defaultThreads: Int { min(max(sysconf(Int32(_SC_NPROCESSORS_ONLN)), 1), 4) }

    public init() {}
}
