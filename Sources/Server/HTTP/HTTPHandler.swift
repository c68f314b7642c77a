/// What a handler makes of a request: an answer now (on the event-loop thread, so it must not block), or work
/// that may block (the store, netlink, a reload), run on the server's worker queue and answered when done.
public enum HandlerResult: Sendable {
    case response(HTTPResponse)
    case deferred(@Sendable () -> HTTPResponse)
}

public protocol HTTPHandler: Sendable {
    func handle(_ request: HTTPRequest, context: RequestContext) -> HandlerResult
}
