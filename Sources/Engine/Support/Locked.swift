import Foundation

/// A value that threads share, guarded by a lock: the project's one way to share mutable state between threads.
///
/// Built on a pthread mutex (through `NSLock`) rather than the standard library's `Mutex`: on Linux `Mutex` locks
/// with futexes inside the standard library, which is not instrumented, so ThreadSanitizer cannot see it and
/// reported races on correctly locked data. With a pthread mutex, TSan checks every use.
public final class Locked<Value>: @unchecked Sendable {
    // @unchecked: `value` is only touched inside `withLock`, with `lock` held.
    private let lock = NSLock()
    private var value: Value

    public init(_ value: Value) {
        self.value = value
    }

    /// Runs `body` with the value, the lock held; keep it short and never call back into code that takes the
    /// same lock.
    @inline(__always)
    public func withLock<Result>(_ body: (inout Value) throws -> Result) rethrows -> Result {
        lock.lock()
        defer { lock.unlock() }
        return try body(&value)
    }
}
