import CPlatform

/// An epoll set (close-on-exec), with its operations named. Creation is checked: a loop must never wait on a
/// descriptor that failed to open (it would spin a core).
public struct Epoll: ~Copyable {
    public struct Events: OptionSet, Sendable {
        public let rawValue: UInt32
        public init(rawValue: UInt32) { self.rawValue = rawValue }

        public static let input = Events(rawValue: UInt32(PC_EPOLLIN))
        public static let output = Events(rawValue: UInt32(PC_EPOLLOUT))
        public static let error = Events(rawValue: UInt32(PC_EPOLLERR))
        public static let hangUp = Events(rawValue: UInt32(PC_EPOLLHUP))
        /// The peer closed its writing side.
        public static let readHangUp = Events(rawValue: UInt32(PC_EPOLLRDHUP))
        /// Only one of the sets sharing a (listening) descriptor is woken per event.
        public static let exclusive = Events(rawValue: UInt32(PC_EPOLLEXCLUSIVE))
    }

    private let descriptor: FileDescriptor
    /// Owner: this value; allocated in `init`, freed in `deinit`. Filled by `wait`, read by its callback only.
    private let ready: UnsafeMutablePointer<pc_event>
    private static let capacity = 256

    public init() throws(Errno) {
        descriptor = FileDescriptor(owning: try valueOrErrno { pc_epoll_create() }.get())
        ready = .allocate(capacity: Epoll.capacity)
    }

    deinit { ready.deallocate() }

    /// Watches `fd` for `events`; `data` comes back with each of its events.
    public func add(_ fd: Int32, _ events: Events, data: UInt64) throws(Errno) {
        try control(Int32(PC_EPOLL_ADD), fd, events, data)
    }

    public func modify(_ fd: Int32, _ events: Events, data: UInt64) throws(Errno) {
        try control(Int32(PC_EPOLL_MOD), fd, events, data)
    }

    public func remove(_ fd: Int32) throws(Errno) {
        try control(Int32(PC_EPOLL_DEL), fd, [], 0)
    }

    private func control(_ op: Int32, _ fd: Int32, _ events: Events, _ data: UInt64) throws(Errno) {
        try nothingOrErrno { pc_epoll_ctl(descriptor.rawValue, op, fd, events.rawValue, data) }.get()
    }

    /// Waits up to `timeout` milliseconds (-1: without end) and calls `body` for each ready descriptor; returns
    /// their number (0 on timeout or when a signal interrupted the wait, which the caller's loop simply repeats).
    @discardableResult
    public func wait(timeout: Int32, _ body: (Events, UInt64) -> Void) throws(Errno) -> Int {
        let n = pc_epoll_wait(descriptor.rawValue, ready, Int32(Epoll.capacity), timeout)
        if n < 0 {
            let error = Errno.current
            if error == .interrupted { return 0 }
            throw error
        }
        for i in 0..<Int(n) { body(Events(rawValue: ready[i].events), ready[i].data) }
        return Int(n)
    }
}
