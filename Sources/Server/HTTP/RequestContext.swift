/// Who is asking: which listener the connection came in on (authorisation depends on it).
public struct RequestContext: Sendable {
    public let listener: ListenAddress
    public var isUnixSocket: Bool { if case .unix = listener.kind { true } else { false } }
}
