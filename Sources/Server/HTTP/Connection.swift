import Platform

/// One client connection's state, owned by its loop thread. The connection owns its socket: it is closed when the
/// loop lets go of the connection (after removing it from the epoll set and the table).
final class Connection {
    let socket: FileDescriptor
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
    var interest: Epoll.Events = []
    /// TCP: counted against max_connections and, by `peer`, against max_connections_per_client.
    var isTCP = false
    var peer: PeerAddress?
    /// The streamed body in progress (after its head): the connection takes no more requests.
    var stream: (any HTTPStream)?
    /// The stream's body is in chunks (HTTP/1.1); else it ends with the connection (HTTP/1.0).
    var streamChunked = false
    /// The connection carried a stream (it may have ended, its last bytes still going out).
    var streamed = false

    /// The socket's number, for the loop's table and system calls (lent: the connection owns it).
    var fd: Int32 { socket.rawValue }

    init(socket: consuming FileDescriptor, id: UInt64, context: RequestContext, limits: HTTPLimits, now: Double) {
        self.socket = socket
        self.id = id
        self.context = context
        parser = HTTPParser(limits: limits)
        lastActivity = now
        lastWrite = now
    }
}
