import CPlatform
import Glibc

/// An open file descriptor and the duty to close it: non-copyable, so exactly one owner holds it, and closed in
/// `deinit` when that owner lets go. `rawValue` lends the number for a C call; the number must not be kept beyond
/// the owner's life (the kernel reuses it at the next open).
public struct FileDescriptor: ~Copyable, @unchecked Sendable {
    // @unchecked: an Int32 and the closing duty; a descriptor may be used from several threads (the kernel
    // serialises what needs it), and closing is the single owner's.
    public let rawValue: Int32

    /// Takes ownership of `rawValue` (which must be an open descriptor nobody else closes).
    public init(owning rawValue: Int32) {
        self.rawValue = rawValue
    }

    deinit {
        // close(2) frees the number even when it reports an error (EINTR included on Linux): never retried.
        _ = Glibc.close(rawValue)
    }

    /// Gives the number up without closing it: the caller owns it from now on.
    public consuming func relinquish() -> Int32 {
        let fd = rawValue
        discard self
        return fd
    }

    /// open(2) with O_CLOEXEC added.
    public static func open(_ path: String, _ flags: Int32, mode: mode_t = 0) throws(Errno) -> FileDescriptor {
        let fd = try valueOrErrno { Glibc.open(path, flags | O_CLOEXEC, mode) }.get()
        return FileDescriptor(owning: fd)
    }

    /// One read(2) into `buffer`: the number of bytes read, 0 at the end of the file. EINTR is retried.
    public func read(into buffer: UnsafeMutableRawBufferPointer) throws(Errno) -> Int {
        try valueOrErrno { Glibc.read(rawValue, buffer.baseAddress, buffer.count) }.get()
    }

    /// Writes every byte of `bytes` (a short write continues where it stopped). EINTR is retried.
    public func writeAll(_ bytes: UnsafeRawBufferPointer) throws(Errno) {
        try FileDescriptor.writeAll(bytes, to: rawValue)
    }

    /// Writes every byte of `bytes` to a descriptor nobody here owns (stdout, stderr).
    public static func writeAll(_ bytes: UnsafeRawBufferPointer, to fd: Int32) throws(Errno) {
        var offset = 0
        while offset < bytes.count {
            let n = try valueOrErrno { Glibc.write(fd, bytes.baseAddress! + offset, bytes.count - offset) }.get()
            if n == 0 { throw Errno(EIO) }
            offset += n
        }
    }
}

extension FileDescriptor {
    /// accept4(2) on a listening socket: the connection, non-blocking and close-on-exec. EINTR is retried.
    public static func accept(from listener: Int32) throws(Errno) -> FileDescriptor {
        FileDescriptor(owning: try valueOrErrno { pc_accept(listener) }.get())
    }

    /// The node at `path` itself (O_PATH | O_NOFOLLOW): a symlink is not followed, and nothing is read or
    /// written through it; for checking and changing the node by descriptor (fchmod through /proc/self/fd).
    public static func openNode(_ path: String) throws(Errno) -> FileDescriptor {
        FileDescriptor(owning: try valueOrErrno { pc_open_node(path) }.get())
    }
}
