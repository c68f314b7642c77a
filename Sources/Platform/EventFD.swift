import CPlatform
import Glibc

/// A non-blocking eventfd: the way one thread wakes another that waits in epoll or poll. Signals between two
/// drains add up to one wake-up.
public struct EventFD: ~Copyable, Sendable {
    private let descriptor: FileDescriptor

    public init() throws(Errno) {
        descriptor = FileDescriptor(owning: try valueOrErrno { pc_eventfd() }.get())
    }

    /// The number to watch for readability (lent; owned by this value).
    public var rawValue: Int32 { descriptor.rawValue }

    /// Makes the descriptor readable. A full counter (EAGAIN, after 2^64-2 signals) is already readable.
    public func signal() {
        var one: UInt64 = 1
        _ = valueOrErrno { Glibc.write(descriptor.rawValue, &one, 8) }
    }

    /// Resets the counter (the descriptor is no longer readable until the next signal).
    public func drain() {
        var value: UInt64 = 0
        _ = valueOrErrno { Glibc.read(descriptor.rawValue, &value, 8) }
    }
}
