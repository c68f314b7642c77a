/// A value that threads share, guarded by a `Lock` (a pthread mutex, which ThreadSanitizer checks): the project's
/// one way to share mutable state between threads.
public final class Locked<Value>: @unchecked Sendable {
    // @unchecked: `value` is only touched inside `withLock`, with `lock` held.
    private let lock = Lock()
    private var value: Value

    public init(_ value: Value) {
        self.value = value
    }

    /// Runs `body` with the value, the lock held; keep it short and never call back into code that takes the
    /// same lock.
    @inline(__always)
    public func withLock<Result>(_ body: (inout Value) throws -> Result) rethrows -> Result {
        try lock.withLock { try body(&value) }
    }
}
