import CServerSupport
import Dispatch
import Engine
import Foundation
import Glibc
import Synchronization

/// Who is asking: which listener the connection came in on (authorisation depends on it).
public struct RequestContext: Sendable {
    public let listener: ListenAddress
    public var isUnixSocket: Bool { if case .unix = listener.kind { true } else { false } }
}

/// What a handler makes of a request: an answer now (on the event-loop thread, so it must not block), or work
/// that may block (the store, netlink, a reload), run on the server's worker queue and answered when done.
public enum HandlerResult: Sendable {
    case response(HTTPResponse)
    case deferred(@Sendable () -> HTTPResponse)
}

public protocol HTTPHandler: Sendable {
    func handle(_ request: HTTPRequest, context: RequestContext) -> HandlerResult
}

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
    /// Event-loop threads (each serves its share of the connections).
    public var threads = HTTPServerOptions.defaultThreads

    /// One per core, at most 4: the API is small work next to the engine.
    public static var defaultThreads: Int { min(max(ProcessInfo.processInfo.activeProcessorCount, 1), 4) }

    public init() {}
}

/// Counters for /metrics, updated by the event loop.
public final class HTTPCounters: Sendable {
    public let state = Locked(HTTPStats())
    public init() {}
}

public struct HTTPStats: Sendable {
    /// Answers by status, 100...599 (an array: this is counted on every request).
    var statusCounts = [Int](repeating: 0, count: 500)
    public var requestsByStatus: [Int: Int] {
        var d: [Int: Int] = [:]
        for (i, n) in statusCounts.enumerated() where n > 0 { d[i + 100] = n }
        return d
    }
    mutating func count(_ status: Int) {
        if (100...599).contains(status) { statusCounts[status - 100] += 1 }
    }
    public var openConnections = 0
    public var acceptedConnections = 0
    public var refusedConnections = 0
}

/// An HTTP/1.1 server on epoll event loops: every connection is a small state machine, so thousands of idle
/// keep-alive clients cost memory, not threads. Requests on a connection are answered in order (pipelining); a
/// request whose handler defers holds the ones behind it until its answer is written. Each loop thread accepts
/// from the same listening sockets (EPOLLEXCLUSIVE wakes one of them per connection) and keeps its connections.
public final class HTTPServer: @unchecked Sendable {
    // @unchecked: `listeners` and `loops` are set in `start` and read-only afterwards.
    public let options: HTTPServerOptions
    private let handler: any HTTPHandler
    private let worker: DispatchQueue
    private let log: Logger
    private let counters: HTTPCounters
    private var listeners: [(fd: Int32, address: ListenAddress)] = []
    private var loops: [EventLoop] = []

    public init(options: HTTPServerOptions, handler: any HTTPHandler, counters: HTTPCounters, worker: DispatchQueue, log: Logger) {
        self.options = options
        self.counters = counters
        self.handler = handler
        self.worker = worker
        self.log = log
    }

    public var addresses: [ListenAddress] { listeners.map(\.address) }

    /// Opens every listener (all or none) and starts the loop threads.
    public func start(_ addresses: [ListenAddress]) throws {
        raiseDescriptorLimit()
        for a in addresses {
            do {
                let (fd, bound) = try Listener.open(a)
                listeners.append((fd, bound))
            } catch {
                closeListeners()
                throw error
            }
        }
        let gates = ConnectionGates(tcp: ConnectionGate(limit: options.maxConnections),
                                    unix: ConnectionGate(limit: options.maxUnixConnections),
                                    perClient: ClientCounts(limit: options.maxConnectionsPerClient))
        for i in 0..<max(1, options.threads) {
            do {
                let loop = try EventLoop(index: i, options: options, handler: handler, counters: counters, worker: worker, log: log,
                                     listeners: listeners, gates: gates)
                loops.append(loop)
                try loop.start()
            } catch {
                // Loops already running stop; nothing is left half-started.
                stop()
                closeListeners()
                throw error
            }
        }
    }

    /// Stops accepting, lets requests in flight finish (up to `shutdownGrace`), closes everything.
    public func stop() {
        guard !loops.isEmpty else { return }
        for loop in loops { loop.requestStop() }
        for loop in loops { loop.waitUntilFinished() }
        loops = []
        closeListeners()
    }

    /// 10,000 idle clients need 10,000 descriptors; the default soft limit is often 1,024.
    private func raiseDescriptorLimit() {
        var rl = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &rl) == 0, rl.rlim_cur < rl.rlim_max else { return }
        rl.rlim_cur = rl.rlim_max
        _ = setrlimit(Int32(RLIMIT_NOFILE.rawValue), &rl)
    }

    private func closeListeners() {
        for l in listeners {
            close(l.fd)
            if case .unix(let path) = l.address.kind { unlink(path) }
        }
        listeners = []
    }
}

/// The connection count across loops, against `max_connections`.
final class ConnectionGate: Sendable {
    let limit: Int
    private let count = Atomic<Int>(0)

    init(limit: Int) { self.limit = limit }

    func tryEnter() -> Bool {
        if count.wrappingAdd(1, ordering: .relaxed).newValue > limit {
            count.wrappingSubtract(1, ordering: .relaxed)
            return false
        }
        return true
    }

    func leave() -> Int { count.wrappingSubtract(1, ordering: .relaxed).newValue }
    var current: Int { count.load(ordering: .relaxed) }
}

/// Connections from one client address, across loops, against `max_connections_per_client`.
final class ClientCounts: Sendable {
    let limit: Int
    private let counts = Locked<[IPAddress: Int]>([:])

    init(limit: Int) { self.limit = limit }

    func tryEnter(_ peer: IPAddress) -> Bool {
        counts.withLock { c in
            let n = c[peer, default: 0]
            guard n < limit else { return false }
            c[peer] = n + 1
            return true
        }
    }

    func leave(_ peer: IPAddress) {
        counts.withLock { c in
            let n = c[peer, default: 1] - 1
            c[peer] = n > 0 ? n : nil
        }
    }
}

/// The address of a connected TCP socket's peer (IPv4-mapped IPv6 folded to IPv4), for counting its connections.
func peerAddress(_ fd: Int32) -> IPAddress? {
    var ss = sockaddr_storage()
    var len = socklen_t(MemoryLayout<sockaddr_storage>.size)
    guard withUnsafeMutablePointer(to: &ss, { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getpeername(fd, $0, &len) } }) == 0 else { return nil }
    let family = Int32(ss.ss_family)
    return withUnsafeBytes(of: &ss) { raw -> IPAddress? in
        switch family {
        case AF_INET: return IPAddress(bytes: Array(raw[4..<8]))
        case AF_INET6: return IPAddress(bytes: Array(raw[8..<24]))
        default: return nil
        }
    }
}

/// The capacities every loop shares.
struct ConnectionGates: Sendable {
    let tcp: ConnectionGate
    let unix: ConnectionGate
    let perClient: ClientCounts
}

/// One event-loop thread and its connections.
final class EventLoop: @unchecked Sendable {
    // @unchecked: everything but `counters`, `completions`, `stopping` and `thread` is touched only by the loop
    // thread (after `start`, which sets it up before the thread exists); `thread` is set by `start` and used by
    // `waitUntilFinished`, on the thread that started the server, never by the loop.
    let options: HTTPServerOptions
    private let index: Int
    private let handler: any HTTPHandler
    private let worker: DispatchQueue
    private let log: Logger
    private let epfd: Int32
    private let wakeFD: Int32
    private var listeners: [(fd: Int32, address: ListenAddress)]
    private let gates: ConnectionGates
    private var connections: [Connection?] = []
    /// This loop's connections.
    private var connectionCount = 0
    private var nextID: UInt64 = 1
    /// Kept open so that, when the process runs out of descriptors, one can be freed to accept and close a
    /// client (otherwise the listening socket stays readable and the loop spins).
    private var reserveFD: Int32 = -1
    private let completions = Locked<[(id: UInt64, fd: Int32, response: HTTPResponse)]>([])
    private let stopping = Atomic<Bool>(false)
    /// Set by `start`, before any other thread knows the loop; joined by `waitUntilFinished`.
    private var thread: JoinableThread?
    private let counters: HTTPCounters
    private var dateText = ""
    private var dateSecond = -1.0
    private var readBuffer = [UInt8](repeating: 0, count: 64 * 1024)

    /// Pending output beyond which a connection is not read from (a client that pipelines without reading).
    private static let outputHighWater = 256 * 1024
    private static let listenerTag: UInt64 = 1 << 40
    private static let wakeTag: UInt64 = 1 << 41

    /// Creating the epoll set or the wake-up eventfd can fail (EMFILE, ENFILE, ENOMEM): that is an error, not a
    /// loop that would spin on an invalid descriptor.
    struct CreateError: Error, CustomStringConvertible {
        let what: String
        let code: Int32
        var description: String { "the API's event loop: \(what) failed: \(String(cString: strerror(code))) (errno \(code))" }
    }

    init(index: Int, options: HTTPServerOptions, handler: any HTTPHandler, counters: HTTPCounters, worker: DispatchQueue,
         log: Logger, listeners: [(fd: Int32, address: ListenAddress)], gates: ConnectionGates) throws(CreateError) {
        self.index = index
        self.options = options
        self.counters = counters
        self.handler = handler
        self.worker = worker
        self.log = log
        self.listeners = listeners
        self.gates = gates
        let ep = pc_epoll_create()
        guard ep >= 0 else { throw CreateError(what: "epoll_create1", code: errno) }
        let wake = pc_eventfd()
        guard wake >= 0 else {
            let code = errno
            close(ep)
            throw CreateError(what: "eventfd", code: code)
        }
        epfd = ep
        wakeFD = wake
    }

    deinit {
        close(epfd)
        close(wakeFD)
    }

    func start() throws(JoinableThread.StartError) {
        for (i, l) in listeners.enumerated() {
            _ = pc_epoll_ctl(epfd, Int32(PC_EPOLL_ADD), l.fd, UInt32(PC_EPOLLIN) | UInt32(PC_EPOLLEXCLUSIVE), EventLoop.listenerTag | UInt64(i))
        }
        _ = pc_epoll_ctl(epfd, Int32(PC_EPOLL_ADD), wakeFD, UInt32(PC_EPOLLIN), EventLoop.wakeTag)
        reserveFD = open("/dev/null", O_RDONLY | O_CLOEXEC)
        thread = try JoinableThread(name: "portcullis-http-\(index)") { [self] in run() }
    }

    func requestStop() {
        stopping.store(true, ordering: .releasing)
        wake()
    }

    /// Returns once the loop's thread has ended (every connection closed).
    func waitUntilFinished() { thread?.join() }

    private func wake() {
        var one: UInt64 = 1
        _ = write(wakeFD, &one, 8)
    }

    /// Stops accepting on this loop (the server closes the sockets once every loop has stopped).
    private func closeListeners() {
        for l in listeners { _ = pc_epoll_ctl(epfd, Int32(PC_EPOLL_DEL), l.fd, 0, 0) }
        listeners = []
    }

    // MARK: the loop

    private func run() {
        var events = [pc_event](repeating: pc_event(), count: 256)
        var lastSweep = Clock.monotonic()
        var stopDeadline: Double? = nil
        while true {
            let n = pc_epoll_wait(epfd, &events, Int32(events.count), 1000)
            let now = Clock.monotonic()
            if n > 0 {
                for i in 0..<Int(n) {
                    let e = events[i]
                    if e.data & EventLoop.wakeTag != 0 {
                        var value: UInt64 = 0
                        _ = read(wakeFD, &value, 8)
                        deliverCompletions(now)
                    } else if e.data & EventLoop.listenerTag != 0 {
                        let index = Int(e.data & 0xffff)
                        if index < listeners.count { accept(from: index, now: now) }
                    } else {
                        event(fd: Int32(truncatingIfNeeded: e.data), e.events, now)
                    }
                }
            }
            if stopping.load(ordering: .acquiring) {
                if stopDeadline == nil {
                    stopDeadline = now + options.shutdownGrace
                    beginShutdown(now)
                }
                deliverCompletions(now)
                // Connections only draining after their last answer hold nothing in flight.
                if connectionCount == 0 || now > stopDeadline! || connections.allSatisfy({ $0?.draining ?? true }) { break }
            }
            if now - lastSweep >= 1 {
                lastSweep = now
                sweep(now)
            }
        }
        for case let c? in connections { closeConnection(c) }
        if reserveFD >= 0 { close(reserveFD) }
    }

    private func beginShutdown(_ now: Double) {
        closeListeners()
        for case let c? in connections {
            if !c.busy && c.parser.buffered == 0 && c.outPending == 0 {
                closeConnection(c)
            } else {
                c.stopAfterCurrent = true
            }
        }
    }

    private func accept(from index: Int, now: Double) {
        let listener = listeners[index]
        while true {
            let fd = pc_accept(listener.fd)
            if fd < 0 {
                if errno == EMFILE || errno == ENFILE, reserveFD >= 0 {
                    close(reserveFD)
                    let c = pc_accept(listener.fd)
                    if c >= 0 { close(c) }
                    reserveFD = open("/dev/null", O_RDONLY | O_CLOEXEC)
                    counters.state.withLock { $0.refusedConnections += 1 }
                    log.warning("API: out of file descriptors; a connection was refused")
                    continue
                }
                return
            }
            let isTCP: Bool
            if case .tcp = listener.address.kind { isTCP = true } else { isTCP = false }
            let gate = isTCP ? gates.tcp : gates.unix
            if !gate.tryEnter() {
                refuse(fd, isTCP ? "too many connections (max_connections = \(options.maxConnections))"
                                 : "too many connections on the Unix socket (\(options.maxUnixConnections))")
                continue
            }
            var peer: IPAddress? = nil
            if isTCP {
                peer = peerAddress(fd)
                if let p = peer, !gates.perClient.tryEnter(p) {
                    _ = gate.leave()
                    refuse(fd, "too many connections from \(p) (max_connections_per_client = \(options.maxConnectionsPerClient))")
                    continue
                }
                var one: Int32 = 1
                setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
            }
            let c = Connection(fd: fd, id: nextID, context: RequestContext(listener: listener.address), limits: options.limits, now: now)
            c.peer = peer
            c.isTCP = isTCP
            nextID += 1
            if Int(fd) >= connections.count {
                connections.append(contentsOf: repeatElement(nil, count: max(Int(fd) + 1 - connections.count, connections.count)))
            }
            connections[Int(fd)] = c
            connectionCount += 1
            let open = gates.tcp.current + gates.unix.current
            counters.state.withLock { $0.openConnections = open; $0.acceptedConnections += 1 }
            c.interest = UInt32(PC_EPOLLIN | PC_EPOLLRDHUP)
            if pc_epoll_ctl(epfd, Int32(PC_EPOLL_ADD), fd, c.interest, UInt64(fd)) != 0 {
                // Not watched, it would never be read nor closed: close it now (ENOMEM, or the user's epoll limit).
                let code = errno
                closeConnection(c)
                log.warning("API: a connection was closed: epoll_ctl ADD failed: \(String(cString: strerror(code)))")
            }
        }
    }

    /// Closes a connection over a limit, with a best-effort answer that says why (the socket buffer takes it whole).
    private func refuse(_ fd: Int32, _ detail: String) {
        var out: [UInt8] = []
        HTTPResponse.problem(503, detail, headers: [("Retry-After", "1")])
            .serialize(date: date(), keepAlive: false, http10: false, head: false, into: &out)
        _ = out.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
        close(fd)
        counters.state.withLock { $0.refusedConnections += 1; $0.count(503) }
    }

    private func event(fd: Int32, _ events: UInt32, _ now: Double) {
        guard Int(fd) < connections.count, let c = connections[Int(fd)] else { return }
        if events & UInt32(PC_EPOLLERR | PC_EPOLLHUP) != 0 && events & UInt32(PC_EPOLLIN) == 0 {
            closeConnection(c)
            return
        }
        if events & UInt32(PC_EPOLLOUT) != 0 {
            flush(c, now)
            if connections[Int(fd)] == nil { return }
            if c.outPending < EventLoop.outputHighWater { process(c, now) }
        }
        if events & UInt32(PC_EPOLLIN | PC_EPOLLRDHUP) != 0 {
            readable(c, now)
        }
        if let c = connections[Int(fd)] { settle(c) }
    }

    private func readable(_ c: Connection, _ now: Double) {
        var total = 0
        while total < 256 * 1024 {
            let n = readBuffer.withUnsafeMutableBytes { recv(c.fd, $0.baseAddress, $0.count, 0) }
            if n > 0 {
                total += n
                // After the answer that ends a connection, whatever else the client sends is read and dropped.
                if !c.draining && !c.closeAfterWrite {
                    readBuffer.withUnsafeBytes { c.parser.feed(UnsafeRawBufferPointer(rebasing: $0[0..<n])) }
                }
                if n < readBuffer.count { break }
            } else if n == 0 {
                c.peerClosed = true
                break
            } else {
                if errno == EINTR { continue }
                if errno == EAGAIN || errno == EWOULDBLOCK { break }
                closeConnection(c)
                return
            }
        }
        if c.draining {
            if c.peerClosed { closeConnection(c) }
            return
        }
        if total > 0 { c.lastActivity = now }
        process(c, now)
    }

    /// Answers every complete request that can be answered now, in order. Requests beyond what the output may
    /// hold (`outputHighWater`) wait in the parser's buffer; once the socket takes the output, they are answered
    /// without waiting for more input (the client may have sent everything already).
    private func process(_ c: Connection, _ now: Double) {
        var heldBack: Bool
        repeat {
            heldBack = false
            while !c.busy && !c.closeAfterWrite {
                if c.outPending >= EventLoop.outputHighWater { heldBack = true; break }
                let event: HTTPParser.Event?
                do {
                    event = try c.parser.next()
                } catch {
                    // The framing is lost: answer, then close (never guess where the next request starts).
                    respond(c, HTTPResponse.problem(error.status, error.detail), head: false, keepAlive: false, http10: false)
                    break
                }
                guard let event else { break }
                switch event {
                case .continueNeeded:
                    c.out.append(contentsOf: "HTTP/1.1 100 Continue\r\n\r\n".utf8)
                case .request(let request):
                    dispatch(c, request)
                }
            }
            // Only a request still arriving runs against request_timeout, not one we hold back.
            if c.parser.buffered == 0 || heldBack || c.busy {
                c.requestStarted = nil
            } else if c.requestStarted == nil {
                c.requestStarted = now
            }
            flush(c, now)
            guard Int(c.fd) < connections.count, connections[Int(c.fd)] === c else { return }
        } while heldBack && c.outPending < EventLoop.outputHighWater
    }

    private func dispatch(_ c: Connection, _ request: HTTPRequest) {
        let head = request.method == "HEAD"
        let keepAlive = request.keepAlive && !c.stopAfterCurrent
        let http10 = request.minorVersion == 0
        switch handler.handle(request, context: c.context) {
        case .response(let response):
            respond(c, response, head: head, keepAlive: keepAlive, http10: http10)
        case .deferred(let work):
            c.busy = true
            c.deferred = (head, keepAlive, http10)
            let id = c.id, fd = c.fd
            worker.async { [self] in
                let response = work()
                completions.withLock { $0.append((id, fd, response)) }
                wake()
            }
        }
    }

    private func deliverCompletions(_ now: Double) {
        let done = completions.withLock { list -> [(id: UInt64, fd: Int32, response: HTTPResponse)] in
            let l = list
            list = []
            return l
        }
        for (id, fd, response) in done {
            // The client may have gone (and its descriptor been reused) while the work ran.
            guard Int(fd) < connections.count, let c = connections[Int(fd)], c.id == id, let (head, keepAlive, http10) = c.deferred else { continue }
            c.busy = false
            c.deferred = nil
            respond(c, response, head: head, keepAlive: keepAlive && !c.stopAfterCurrent, http10: http10)
            process(c, now)
            if let c = connections[Int(fd)] { settle(c) }
        }
    }

    private func respond(_ c: Connection, _ response: HTTPResponse, head: Bool, keepAlive: Bool, http10: Bool) {
        response.serialize(date: date(), keepAlive: keepAlive, http10: http10, head: head, into: &c.out)
        if !keepAlive { c.closeAfterWrite = true }
        counters.state.withLock { $0.count(response.status) }
    }

    private func flush(_ c: Connection, _ now: Double) {
        while c.outPending > 0 {
            let n = c.out.withUnsafeBytes { send(c.fd, $0.baseAddress! + c.outOffset, c.outPending, Int32(MSG_NOSIGNAL)) }
            if n > 0 {
                c.outOffset += n
                c.lastWrite = now
            } else if n < 0 && errno == EINTR {
                continue
            } else if n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) {
                break
            } else {
                closeConnection(c)
                return
            }
        }
        if c.outPending == 0 {
            // Small buffers are kept for the next response; a large one is given back.
            if c.out.capacity > 64 * 1024 { c.out = [] } else { c.out.removeAll(keepingCapacity: true) }
            c.outOffset = 0
            if c.closeAfterWrite && !c.draining {
                if c.peerClosed {
                    closeConnection(c)
                } else {
                    // Lingering close (RFC 9112 §9.6): half-close, then read until the client closes, so that
                    // unread request bytes do not turn into a reset that destroys the answer in flight.
                    shutdown(c.fd, Int32(SHUT_WR))
                    c.draining = true
                    c.drainDeadline = now + 2
                }
            }
        }
    }

    /// Brings the epoll interest in line with the connection's state, or closes a connection that is done.
    private func settle(_ c: Connection) {
        if c.peerClosed && !c.busy && c.outPending == 0 && !c.draining {
            closeConnection(c)
            return
        }
        var want: UInt32 = 0
        if !c.peerClosed && (c.draining || (!c.busy && !c.closeAfterWrite && c.outPending < EventLoop.outputHighWater)) {
            want |= UInt32(PC_EPOLLIN | PC_EPOLLRDHUP)
        }
        if c.outPending > 0 { want |= UInt32(PC_EPOLLOUT) }
        if want != c.interest {
            c.interest = want
            _ = pc_epoll_ctl(epfd, Int32(PC_EPOLL_MOD), c.fd, want, UInt64(c.fd))
        }
    }

    /// Once a second: slow or silent clients are closed.
    private func sweep(_ now: Double) {
        // Near the cap, silent connections make room sooner: idle ones cost the server a place a client may need.
        let crowded = Double(gates.tcp.current) >= options.crowdedShare * Double(options.maxConnections)
        let idle = crowded ? min(options.idleTimeout, options.crowdedIdleTimeout) : options.idleTimeout
        for case let c? in connections {
            if c.draining {
                if now > c.drainDeadline { closeConnection(c) }
            } else if c.busy {
                continue
            } else if c.outPending > 0 {
                // A client that stopped reading its answers.
                if now - c.lastWrite > options.requestTimeout * 3 { closeConnection(c) }
            } else if let started = c.requestStarted, now - started > options.requestTimeout {
                respond(c, HTTPResponse.problem(408, "the request was not complete within \(Int(options.requestTimeout)) s"),
                        head: false, keepAlive: false, http10: false)
                flush(c, now)
                if let c = connections[Int(c.fd)] { settle(c) }
            } else if c.requestStarted == nil && now - c.lastActivity > idle {
                closeConnection(c)
            }
        }
    }

    private func closeConnection(_ c: Connection) {
        guard Int(c.fd) < connections.count, connections[Int(c.fd)] === c else { return }
        _ = pc_epoll_ctl(epfd, Int32(PC_EPOLL_DEL), c.fd, 0, 0)
        close(c.fd)
        connections[Int(c.fd)] = nil
        connectionCount -= 1
        _ = (c.isTCP ? gates.tcp : gates.unix).leave()
        if let p = c.peer { gates.perClient.leave(p) }
        let open = gates.tcp.current + gates.unix.current
        counters.state.withLock { $0.openConnections = open }
    }

    private func date() -> String {
        let now = Clock.now().rounded(.down)
        if now != dateSecond {
            dateSecond = now
            dateText = RFC3339.httpDate(now)
        }
        return dateText
    }
}

/// One client connection's state, owned by the loop thread.
final class Connection {
    let fd: Int32
    let id: UInt64
    let context: RequestContext
    var parser: HTTPParser
    var out: [UInt8] = []
    var outOffset = 0
    var outPending: Int { out.count - outOffset }
    /// A deferred handler is running; what its answer needs (HEAD, keep-alive, HTTP/1.0).
    var busy = false
    var deferred: (head: Bool, keepAlive: Bool, http10: Bool)?
    var closeAfterWrite = false
    /// The answer that closes the connection is written; reading on until the client closes.
    var draining = false
    var drainDeadline = 0.0
    var peerClosed = false
    /// The server is stopping: the request being answered is the last.
    var stopAfterCurrent = false
    var lastActivity: Double
    var lastWrite: Double
    /// When the first byte of the request not yet complete arrived.
    var requestStarted: Double?
    var interest: UInt32 = 0
    /// TCP: counted against max_connections and, by `peer`, against max_connections_per_client.
    var isTCP = false
    var peer: IPAddress?

    init(fd: Int32, id: UInt64, context: RequestContext, limits: HTTPLimits, now: Double) {
        self.fd = fd
        self.id = id
        self.context = context
        parser = HTTPParser(limits: limits)
        lastActivity = now
        lastWrite = now
    }
}
