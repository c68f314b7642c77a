import Dispatch
import Glibc
import Platform

/// One event-loop thread and its connections.
final class EventLoop: @unchecked Sendable {
    // @unchecked, the invariant: the connection table, the listeners' registration, `reserve`, the date cache and
    // the read buffer are the loop thread's alone (set up by `init`/`start` before the thread exists, touched by
    // nobody else after); other threads only queue `completions` (locked) and call `thread`'s wake/stop.
    let options: HTTPServerOptions
    private let index: Int
    private let handler: any HTTPHandler
    private let worker: DispatchQueue
    private let log: Logger
    private let epoll: Epoll
    private var listeners: [ListeningSocket]
    private let gates: ConnectionGates
    private var connections: [Connection?] = []
    /// This loop's connections.
    private var connectionCount = 0
    private var nextID: UInt64 = 1
    /// Kept open so that, when the process runs out of descriptors, one can be freed to accept and close a
    /// client (otherwise the listening socket stays readable and the loop spins).
    private var reserve: FileDescriptor?
    private let completions = Locked<[(id: UInt64, fd: Int32, response: HTTPResponse)]>([])
    /// Streams that have something to send (their `wake`), by connection.
    private let readyStreams = Locked<[(id: UInt64, fd: Int32)]>([])
    /// The loop's thread; its eventfd wakes the loop for completions and for the stop.
    private let thread: StoppableThread
    private let counters: HTTPCounters
    private var dateText = ""
    private var dateSecond = -1.0
    private var readBuffer = [UInt8](repeating: 0, count: 64 * 1024)

    /// Pending output beyond which a connection is not read from (a client that pipelines without reading).
    private static let outputHighWater = 256 * 1024
    /// SO_SNDBUF of a stream's socket (the kernel doubles it for its bookkeeping).
    private static let streamSocketBuffer = 64 * 1024
    /// A stream's output is taken in pieces of about this size, as the socket drains.
    private static let streamChunk = 64 * 1024
    private static let listenerTag: UInt64 = 1 << 40
    private static let wakeTag: UInt64 = 1 << 41

    /// Creating the epoll set or the wake-up eventfd can fail (EMFILE, ENFILE, ENOMEM): that is an error, not a
    /// loop that would spin on an invalid descriptor.
    struct CreateError: Error, CustomStringConvertible {
        let what: String
        let errno: Errno
        var description: String { "the API's event loop: \(what) failed: \(errno)" }
    }

    init(
        index: Int, options: HTTPServerOptions, handler: any HTTPHandler, counters: HTTPCounters, worker: DispatchQueue,
        log: Logger, listeners: [ListeningSocket], gates: ConnectionGates
    ) throws(CreateError) {
        self.index = index
        self.options = options
        self.counters = counters
        self.handler = handler
        self.worker = worker
        self.log = log
        self.listeners = listeners
        self.gates = gates
        do { epoll = try Epoll() } catch { throw CreateError(what: "epoll_create1", errno: error) }
        do { thread = try StoppableThread(name: "portcullis-http-\(index)") } catch { throw CreateError(what: "eventfd", errno: error) }
    }

    /// Registers the listeners and the wake-up, and starts the thread.
    func start() throws {
        do {
            for (i, l) in listeners.enumerated() {
                try epoll.add(l.descriptor.rawValue, [.input, .exclusive], data: EventLoop.listenerTag | UInt64(i))
            }
            try epoll.add(thread.wakeDescriptor, .input, data: EventLoop.wakeTag)
        } catch {
            throw CreateError(what: "epoll_ctl ADD", errno: error)
        }
        reserve = try? FileDescriptor.open("/dev/null", O_RDONLY)
        try thread.start { [self] in run() }
    }

    func requestStop() { thread.requestStop() }

    /// Asks the loop to stop and returns once its thread has ended (every connection closed).
    func stop() { thread.stop() }

    /// Stops accepting on this loop (the server closes the sockets once every loop has stopped).
    private func closeListeners() {
        for l in listeners { try? epoll.remove(l.descriptor.rawValue) }
        listeners = []
    }

    // MARK: the loop

    private func run() {
        var lastSweep = Clock.monotonic()
        var stopDeadline: Double? = nil
        while true {
            var now = Clock.monotonic()
            do {
                try epoll.wait(timeout: 1000) { events, data in
                    now = Clock.monotonic()
                    if data & EventLoop.wakeTag != 0 {
                        thread.drainWake()
                        deliverCompletions(now)
                        pumpStreams(now)
                    } else if data & EventLoop.listenerTag != 0 {
                        let index = Int(data & 0xffff)
                        if index < listeners.count { accept(from: index, now: now) }
                    } else {
                        event(fd: Int32(truncatingIfNeeded: data), events, now)
                    }
                }
            } catch {
                // EBADF/EINVAL would mean the set itself is broken: stop serving rather than spin.
                log.error("API: epoll_wait failed: \(error); the event loop \(index) stops")
                break
            }
            now = Clock.monotonic()
            if thread.isStopping {
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
        reserve = nil
    }

    private func beginShutdown(_ now: Double) {
        closeListeners()
        for case let c? in connections {
            if c.stream != nil {
                endStream(c, why: "the server is stopping")
                flush(c, now)
            } else if !c.busy && c.parser.buffered == 0 && c.outPending == 0 {
                closeConnection(c)
            } else {
                c.stopAfterCurrent = true
            }
        }
    }

    private func accept(from index: Int, now: Double) {
        let listener = listeners[index]
        while true {
            let socket: FileDescriptor
            do {
                socket = try FileDescriptor.accept(from: listener.descriptor.rawValue)
            } catch {
                if error == .tooManyOpenFiles || error == .systemOutOfFiles, reserve != nil {
                    // One descriptor freed to take the client and close it: otherwise the listening socket stays
                    // readable and the loop spins.
                    reserve = nil
                    _ = try? FileDescriptor.accept(from: listener.descriptor.rawValue)
                    reserve = try? FileDescriptor.open("/dev/null", O_RDONLY)
                    counters.state.withLock { $0.refusedConnections += 1 }
                    log.warning("API: out of file descriptors; a connection was refused")
                    continue
                }
                return
            }
            let fd = socket.rawValue
            let isTCP: Bool
            if case .tcp = listener.address.kind { isTCP = true } else { isTCP = false }
            let gate = isTCP ? gates.tcp : gates.unix
            if !gate.tryEnter() {
                refuse(
                    socket,
                    isTCP
                        ? "too many connections (max_connections = \(options.maxConnections))"
                        : "too many connections on the Unix socket (\(options.maxUnixConnections))")
                continue
            }
            var peer: PeerAddress? = nil
            if isTCP {
                peer = PeerAddress(ofConnected: fd)
                if let p = peer, !gates.perClient.tryEnter(p) {
                    _ = gate.leave()
                    refuse(socket, "too many connections from \(p) (max_connections_per_client = \(options.maxConnectionsPerClient))")
                    continue
                }
                var one: Int32 = 1
                setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
            }
            let c = Connection(socket: socket, id: nextID, context: RequestContext(listener: listener.address), limits: options.limits, now: now)
            c.peer = peer
            c.isTCP = isTCP
            nextID += 1
            if Int(fd) >= connections.count {
                connections.append(contentsOf: repeatElement(nil, count: max(Int(fd) + 1 - connections.count, connections.count)))
            }
            connections[Int(fd)] = c
            connectionCount += 1
            let open = gates.tcp.current + gates.unix.current
            counters.state.withLock {
                $0.openConnections = open; $0.acceptedConnections += 1
            }
            c.interest = [.input, .readHangUp]
            do {
                try epoll.add(fd, c.interest, data: UInt64(fd))
            } catch {
                // Not watched, it would never be read nor closed: close it now (ENOMEM, or the user's epoll limit).
                closeConnection(c)
                log.warning("API: a connection was closed: epoll_ctl ADD failed: \(error)")
            }
        }
    }

    /// Closes a connection over a limit, with a best-effort answer that says why (the socket buffer takes it whole).
    private func refuse(_ socket: consuming FileDescriptor, _ detail: String) {
        var out: [UInt8] = []
        HTTPResponse.problem(503, detail, headers: [("Retry-After", "1")])
            .serialize(date: date(), keepAlive: false, http10: false, head: false, into: &out)
        _ = out.withUnsafeBytes { send(socket.rawValue, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
        // `socket` closes here, at the end of its owner's scope.
        counters.state.withLock {
            $0.refusedConnections += 1; $0.count(503)
        }
    }

    private func event(fd: Int32, _ events: Epoll.Events, _ now: Double) {
        guard Int(fd) < connections.count, let c = connections[Int(fd)] else { return }
        if !events.isDisjoint(with: [.error, .hangUp]) && !events.contains(.input) {
            closeConnection(c)
            return
        }
        if events.contains(.output) {
            flush(c, now)
            if connections[Int(fd)] == nil { return }
            if c.stream != nil { pump(c, now) }
            if connections[Int(fd)] == nil { return }
            if c.outPending < EventLoop.outputHighWater { process(c, now) }
        }
        if !events.isDisjoint(with: [.input, .readHangUp]) {
            readable(c, now)
        }
        if let c = connections[Int(fd)] { settle(c) }
    }

    private func readable(_ c: Connection, _ now: Double) {
        var total = 0
        while total < 256 * 1024 {
            let received = readBuffer.withUnsafeMutableBytes { buffer in valueOrErrno { recv(c.fd, buffer.baseAddress, buffer.count, 0) } }
            guard case .success(let n) = received else {
                if case .failure(let error) = received, error == .wouldBlock { break }
                closeConnection(c)
                return
            }
            if n > 0 {
                total += n
                // After the answer that ends a connection, whatever else the client sends is read and dropped.
                if !c.draining && !c.closeAfterWrite && !c.streamed {
                    readBuffer.withUnsafeBytes { c.parser.feed(UnsafeRawBufferPointer(rebasing: $0[0..<n])) }
                }
                if n < readBuffer.count { break }
            } else {
                c.peerClosed = true
                break
            }
        }
        if c.draining || c.streamed {
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
            while !c.busy && !c.closeAfterWrite && !c.streamed {
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
        case .stream(let streamHead, let stream):
            startStream(c, streamHead, stream, isHead: head, http10: http10)
        case .deferred(let work):
            c.busy = true
            c.deferred = (head, keepAlive, http10)
            let id = c.id, fd = c.fd
            worker.async { [self] in
                let response = work()
                completions.withLock { $0.append((id, fd, response)) }
                thread.wake()
            }
        }
    }

    // MARK: streams

    /// Writes a stream's head and first bytes; from now on the connection carries that stream alone (requests
    /// pipelined behind it are not answered: read and dropped).
    private func startStream(_ c: Connection, _ head: HTTPResponse, _ stream: any HTTPStream, isHead: Bool, http10: Bool) {
        counters.state.withLock { $0.count(head.status) }
        c.out.append(contentsOf: "HTTP/1.1 \(head.status) \(HTTPResponse.reason(head.status))\r\n".utf8)
        for (name, value) in head.headers { c.out.append(contentsOf: "\(name): \(value)\r\n".utf8) }
        // HTTP/1.1: chunks, so that a proxy knows a cut stream from an ended one; HTTP/1.0 has none: the body
        // ends with the connection.
        c.out.append(contentsOf: (http10 ? "Connection: close" : "Transfer-Encoding: chunked").utf8)
        c.out.append(contentsOf: "\r\nDate: \(date())\r\n\r\n".utf8)
        c.streamed = true
        if isHead {
            stream.close()
            c.closeAfterWrite = true
            return
        }
        c.stream = stream
        c.streamChunked = !http10
        // The kernel would otherwise let a subscriber that does not read hold megabytes of socket buffer (it grows
        // the buffer for a fast link): small, the bound on what a stalled client costs is ours.
        var size = Int32(EventLoop.streamSocketBuffer)
        setsockopt(c.fd, SOL_SOCKET, SO_SNDBUF, &size, socklen_t(MemoryLayout<Int32>.size))
        counters.state.withLock { $0.openStreams += 1 }
        let id = c.id, fd = c.fd
        let first = stream.open(wake: { [weak self] in self?.streamReady(id: id, fd: fd) })
        appendToStream(c, first)
    }

    /// A stream's `wake`: any thread.
    private func streamReady(id: UInt64, fd: Int32) {
        readyStreams.withLock { $0.append((id, fd)) }
        thread.wake()
    }

    private func pumpStreams(_ now: Double) {
        let ready = readyStreams.withLock { list -> [(id: UInt64, fd: Int32)] in
            defer { list = [] }
            return list
        }
        for (id, fd) in ready {
            guard Int(fd) < connections.count, let c = connections[Int(fd)], c.id == id, c.stream != nil else { continue }
            pump(c, now)
            if let c = connections[Int(fd)] { settle(c) }
        }
    }

    /// Takes from a stream as the socket drains: at most `streamChunk` bytes at a time, while less than that is
    /// unsent. What the client has not read yet stays in the stream (shared with the other subscribers), not
    /// copied into this connection.
    private func pump(_ c: Connection, _ now: Double) {
        while let stream = c.stream {
            // With the socket full, only whether the client fell too far behind (`max: 0` takes nothing).
            let full = c.outPending >= EventLoop.streamChunk
            switch stream.take(max: full ? 0 : EventLoop.streamChunk) {
            case .nothing: return
            case .bytes(let bytes): appendToStream(c, bytes)
            case .overflowed(let why):
                endStream(c, why: why, dropped: true)
            }
            flush(c, now)
            guard Int(c.fd) < connections.count, connections[Int(c.fd)] === c else { return }
        }
    }

    private func appendToStream(_ c: Connection, _ bytes: [UInt8]) {
        guard !bytes.isEmpty else { return }
        if c.streamChunked {
            c.out.append(contentsOf: String(bytes.count, radix: 16).utf8)
            c.out.append(contentsOf: "\r\n".utf8)
            c.out.append(contentsOf: bytes)
            c.out.append(contentsOf: "\r\n".utf8)
        } else {
            c.out.append(contentsOf: bytes)
        }
    }

    /// Ends a stream from the server's side: its farewell, the last chunk, then the connection closes once they
    /// are written (or when the client has not read for `3 × requestTimeout`).
    private func endStream(_ c: Connection, why: String, dropped: Bool = false) {
        guard let stream = c.stream else { return }
        appendToStream(c, stream.farewell(why))
        if c.streamChunked { c.out.append(contentsOf: "0\r\n\r\n".utf8) }
        stream.close()
        c.stream = nil
        c.closeAfterWrite = true
        counters.state.withLock {
            $0.openStreams -= 1
            if dropped { $0.droppedStreams += 1 }
        }
        if dropped { log.warning("API: an event stream was dropped: \(why)") }
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
            let sent = c.out.withUnsafeBytes { out in valueOrErrno { send(c.fd, out.baseAddress! + c.outOffset, c.outPending, Int32(MSG_NOSIGNAL)) } }
            switch sent {
            case .success(let n) where n > 0:
                c.outOffset += n
                c.lastWrite = now
            case .failure(let error) where error == .wouldBlock:
                return  // the socket is full: EPOLLOUT resumes
            default:
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
        var want: Epoll.Events = []
        if !c.peerClosed && (c.draining || (!c.busy && !c.closeAfterWrite && c.outPending < EventLoop.outputHighWater)) {
            want.formUnion([.input, .readHangUp])
        }
        if c.outPending > 0 { want.insert(.output) }
        if want != c.interest {
            c.interest = want
            do { try epoll.modify(c.fd, want, data: UInt64(c.fd)) } catch {
                // A connection whose interest cannot follow its state would stall: closed.
                closeConnection(c)
                log.warning("API: a connection was closed: epoll_ctl MOD failed: \(error)")
            }
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
            } else if c.streamed {
                if c.outPending > 0 {
                    // A subscriber that stopped reading altogether (its socket buffer full).
                    if now - c.lastWrite > options.requestTimeout * 3 { closeConnection(c) }
                } else if let stream = c.stream, now - c.lastWrite >= options.streamKeepAlive {
                    appendToStream(c, stream.keepAlive)
                    flush(c, now)
                    if let c = connections[Int(c.fd)] { settle(c) }
                }
            } else if c.busy {
                continue
            } else if c.outPending > 0 {
                // A client that stopped reading its answers.
                if now - c.lastWrite > options.requestTimeout * 3 { closeConnection(c) }
            } else if let started = c.requestStarted, now - started > options.requestTimeout {
                respond(
                    c, HTTPResponse.problem(408, "the request was not complete within \(Int(options.requestTimeout)) s"),
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
        try? epoll.remove(c.fd)
        // The socket closes when the last reference to `c` goes (the caller's, at the end of this event).
        connections[Int(c.fd)] = nil
        connectionCount -= 1
        if let stream = c.stream {
            stream.close()
            c.stream = nil
            counters.state.withLock { $0.openStreams -= 1 }
        }
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
