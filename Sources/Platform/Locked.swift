import Glibc

/// A value that threads share, guarded by a lock: the project's one way to share mutable state between threads.
///
/// A pthread mutex rather than the standard library's `Mutex`: on Linux `Mutex` locks with futexes inside the
/// standard library, which is not instrumented, so ThreadSanitizer cannot see it and reported races on correctly
/// locked data. With a pthread mutex, TSan checks every use.
public final class Locked<Value>: @unchecked Sendable {
    // @unchecked: `value` is only touched inside `withLock`, with `mutex` held.
    /// Owner: this object; allocated and initialised in `init`, destroyed and freed in `deinit` (a mutex must not
    /// move, so it lives outside the object's stored properties).
    private let mutex: UnsafeMutablePointer<pthread_mutex_t>
    private var value: Value

    public init(_ value: Value) {
        self.value = value
        mutex = .allocate(capacity: 1)
        pthread_mutex_init(mutex, nil)
    }

    deinit {
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
    }

    /// Runs `body` with the value, the lock held; keep it short and never call back into code that takes the
    /// same lock.
    @inline(__always)
    public func withLock<Result>(_ body: (inout Value) throws -> Result) rethrows -> Result {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return try body(&value)
    }
}
