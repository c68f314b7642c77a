import Glibc

/// A non-blocking, close-on-exec inotify instance.
public struct Inotify: ~Copyable, Sendable {
    private let descriptor: FileDescriptor

    public init() throws(Errno) {
        descriptor = FileDescriptor(owning: try valueOrErrno { inotify_init1(Int32(IN_NONBLOCK | IN_CLOEXEC)) }.get())
    }

    /// The number to watch for readability (lent; owned by this value).
    public var rawValue: Int32 { descriptor.rawValue }

    /// Watches `path` for the events in `mask`; returns the watch descriptor its events carry.
    public func addWatch(_ path: String, mask: UInt32) throws(Errno) -> Int32 {
        try valueOrErrno { inotify_add_watch(descriptor.rawValue, path, mask) }.get()
    }

    /// Stops a watch. EINVAL (the watch went with its directory) is not an error here: the result is the same.
    public func removeWatch(_ wd: Int32) {
        _ = inotify_rm_watch(descriptor.rawValue, wd)
    }

    /// Reads queued events into `buffer`; 0 when none are queued.
    public func read(into buffer: UnsafeMutableRawBufferPointer) throws(Errno) -> Int {
        switch valueOrErrno({ Glibc.read(descriptor.rawValue, buffer.baseAddress, buffer.count) }) {
        case .success(let n): return n
        case .failure(let e) where e == .wouldBlock: return 0
        case .failure(let e): throw e
        }
    }
}
