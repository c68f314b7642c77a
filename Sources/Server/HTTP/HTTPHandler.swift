/// What a handler makes of a request: an answer now (on the event-loop thread, so it must not block), work that may
/// block (the store, netlink, a reload), run on the server's worker queue and answered when done, or a stream
/// (Server-Sent Events): a head, then a body that goes on as long as the connection.
public enum HandlerResult: Sendable {
    case response(HTTPResponse)
    case deferred(@Sendable () -> HTTPResponse)
    /// `head`'s status and headers start the answer (its body is ignored); `stream` writes the rest.
    case stream(head: HTTPResponse, any HTTPStream)
}

public protocol HTTPHandler: Sendable {
    func handle(_ request: HTTPRequest, context: RequestContext) -> HandlerResult
}

/// The body of a streamed answer. The event loop owns the connection and calls these on its thread; `wake`, given
/// by `open`, may be called from any thread (any number of times) to have the loop call `take` soon.
public protocol HTTPStream: AnyObject, Sendable {
    /// Once the head is written; returns the body's first bytes.
    func open(wake: @escaping @Sendable () -> Void) -> [UInt8]
    /// What is to be sent now: about `max` bytes at most (whole messages; at least one), the rest stays for later.
    func take(max: Int) -> HTTPStreamOutput
    /// Sent when nothing else was for a while (`HTTPServerOptions.streamKeepAlive`), so that proxies keep it open.
    var keepAlive: [UInt8] { get }
    /// The last bytes before the server ends the stream, saying why (a client too slow, the server stopping).
    func farewell(_ why: String) -> [UInt8]
    /// The stream is over (either side ended it): called once, let go of its source.
    func close()
}

public enum HTTPStreamOutput: Sendable {
    case nothing
    case bytes([UInt8])
    /// The client fell too far behind: the loop ends the stream with `why`.
    case overflowed(why: String)
}
