import Glibc

/// Buffered writing to a file descriptor (stdout), flushed when full and at the end.
public final class OutputBuffer {
    private var buffer: [UInt8] = []
    private let fd: Int32

    public init(fd: Int32 = 1) {
        self.fd = fd
        buffer.reserveCapacity(1 << 16)
    }

    deinit { flush() }

    public func write(_ s: String) {
        buffer.append(contentsOf: s.utf8)
        if buffer.count >= 1 << 16 { flush() }
    }

    public func line(_ s: String) { write(s); write("\n") }

    public func flush() {
        // Output that cannot be written (a closed pipe) is dropped, as `print` would.
        buffer.withUnsafeBytes { try? FileDescriptor.writeAll($0, to: fd) }
        buffer.removeAll(keepingCapacity: true)
    }
}
