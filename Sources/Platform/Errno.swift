import Glibc

/// An error number from the C library, kept as data: a caller can `catch` the one it expects (`EAGAIN`, `ENOENT`)
/// instead of reading it out of a message.
public struct Errno: Error, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: Int32

    public init(_ rawValue: Int32) { self.rawValue = rawValue }

    /// The calling thread's `errno`, read at once (any later C call may change it).
    public static var current: Errno { Errno(errno) }

    /// strerror's text, without the number.
    public var message: String { String(cString: strerror(rawValue)) }
    public var description: String { "\(message) (errno \(rawValue))" }

    public static let interrupted = Errno(EINTR)
    public static let wouldBlock = Errno(EAGAIN)
    public static let noSuchFile = Errno(ENOENT)
    public static let tooManyOpenFiles = Errno(EMFILE)
    public static let systemOutOfFiles = Errno(ENFILE)
    public static let notPermitted = Errno(EPERM)
}

/// Runs a C call that returns -1 and sets `errno` on failure; with `retryOnInterrupt`, a call a signal cut short
/// (EINTR) is made again. The one place the project loops on EINTR.
@inline(__always)
public func valueOrErrno<I: FixedWidthInteger>(retryOnInterrupt: Bool = true, _ call: () -> I) -> Result<I, Errno> {
    while true {
        let value = call()
        if value != -1 { return .success(value) }
        let error = Errno.current
        if retryOnInterrupt && error == .interrupted { continue }
        return .failure(error)
    }
}

/// `valueOrErrno` for calls whose value is only success or failure.
@inline(__always)
public func nothingOrErrno<I: FixedWidthInteger>(retryOnInterrupt: Bool = true, _ call: () -> I) -> Result<Void, Errno> {
    valueOrErrno(retryOnInterrupt: retryOnInterrupt, call).map { _ in () }
}
