import Dispatch
import Glibc
import Platform

/// An HTTP/1.1 server on epoll event loops: every connection is a small state machine, so thousands of idle
/// keep-alive clients cost memory, not threads. Requests on a connection are answered in order (pipelining); a
/// request whose handler defers holds the ones behind it until its answer is written. Each loop thread accepts
/// from the same listening sockets (EPOLLEXCLUSIVE wakes one of them per connection) and keeps its connections.
///
/// `start` and `stop` are called by one thread (the daemon's); the loops run on threads of their own.
public final class HTTPServer: Sendable {
    public let options: HTTPServerOptions
    private let handler: any HTTPHandler
    private let worker: DispatchQueue
    private let log: Logger
    private let counters: HTTPCounters
    /// The listening sockets and the loops, set by `start`, emptied by `stop`.
    private let running = Locked<(listeners: [ListeningSocket], loops: [EventLoop])>(([], []))

    public init(options: HTTPServerOptions, handler: any HTTPHandler, counters: HTTPCounters, worker: DispatchQueue, log: Logger) {
        self.options = options
        self.counters = counters
        self.handler = handler
        self.worker = worker
        self.log = log
    }

    public var addresses: [ListenAddress] { running.withLock { $0.listeners.map(\.address) } }

    /// Opens every listener (all or none) and starts the loop threads.
    public func start(_ addresses: [ListenAddress]) throws {
        raiseDescriptorLimit()
        var listeners: [ListeningSocket] = []
        do {
            for a in addresses { listeners.append(try Sockets.listen(a)) }
        } catch {
            HTTPServer.removeSocketFiles(listeners)
            throw error
        }
        let gates = ConnectionGates(
            tcp: ConnectionGate(limit: options.maxConnections),
            unix: ConnectionGate(limit: options.maxUnixConnections),
            perClient: ClientCounts(limit: options.maxConnectionsPerClient))
        var loops: [EventLoop] = []
        do {
            for i in 0..<max(1, options.threads) {
                let loop = try EventLoop(
                    index: i, options: options, handler: handler, counters: counters, worker: worker, log: log,
                    listeners: listeners, gates: gates)
                loops.append(loop)
                try loop.start()
            }
        } catch {
            // Loops already running stop; nothing is left half-started.
            for loop in loops { loop.stop() }
            HTTPServer.removeSocketFiles(listeners)
            throw error
        }
        running.withLock { $0 = (listeners, loops) }
    }

    /// Stops accepting, lets requests in flight finish (up to `shutdownGrace`), closes everything.
    public func stop() {
        let (listeners, loops) = running.withLock { r in
            defer { r = ([], []) }
            return r
        }
        for loop in loops { loop.requestStop() }
        for loop in loops { loop.stop() }
        HTTPServer.removeSocketFiles(listeners)
        // The listening sockets close as `listeners` goes.
    }

    /// 10,000 idle clients need 10,000 descriptors; the default soft limit is often 1,024.
    private func raiseDescriptorLimit() {
        var rl = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &rl) == 0, rl.rlim_cur < rl.rlim_max else { return }
        rl.rlim_cur = rl.rlim_max
        _ = setrlimit(Int32(RLIMIT_NOFILE.rawValue), &rl)
    }

    private static func removeSocketFiles(_ listeners: [ListeningSocket]) {
        for l in listeners {
            if case .unix(let path) = l.address.kind { unlink(path) }
        }
    }
}
