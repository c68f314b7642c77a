import Glibc

/// A pthread mutex: the lock under `Locked`, and the one to use where a lock guards an operation rather than a
/// value (a database connection, a netlink socket). Not the standard library's `Mutex`: on Linux it locks with
/// futexes inside the uninstrumented standard library, and ThreadSanitizer could not see it.
public final class Lock: @unchecked Sendable {
    // @unchecked: the mutex is the synchronisation itself.
    /// Owner: this object; initialised in `init`, destroyed and freed in `deinit` (a mutex must not move).
    fileprivate let mutex: UnsafeMutablePointer<pthread_mutex_t>

    public init() {
        mutex = .allocate(capacity: 1)
        pthread_mutex_init(mutex, nil)
    }

    deinit {
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
    }

    public func lock() { pthread_mutex_lock(mutex) }
    public func unlock() { pthread_mutex_unlock(mutex) }

    @inline(__always)
    public func withLock<Result>(_ body: () throws -> Result) rethrows -> Result {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return try body()
    }
}

/// A lock with a condition variable, for threads that wait for each other's progress (a caller waiting for the
/// ban worker's result, a pipeline's reader and consumer). Timeouts run on the monotonic clock: a wall-clock jump
/// neither shortens nor stretches them.
public final class Condition: @unchecked Sendable {
    // @unchecked: the mutex and the condition variable are the synchronisation itself.
    private let mutex = Lock()
    /// Owner: this object; initialised in `init` (on CLOCK_MONOTONIC), destroyed and freed in `deinit`.
    private let condition: UnsafeMutablePointer<pthread_cond_t>

    public init() {
        condition = .allocate(capacity: 1)
        var attributes = pthread_condattr_t()
        pthread_condattr_init(&attributes)
        pthread_condattr_setclock(&attributes, CLOCK_MONOTONIC)
        pthread_cond_init(condition, &attributes)
        pthread_condattr_destroy(&attributes)
    }

    deinit {
        pthread_cond_destroy(condition)
        condition.deallocate()
    }

    public func lock() { mutex.lock() }
    public func unlock() { mutex.unlock() }

    @inline(__always)
    public func withLock<Result>(_ body: () throws -> Result) rethrows -> Result {
        try mutex.withLock(body)
    }

    /// Waits (the lock held on entry and on return) until signalled; may return spuriously: wait in a loop.
    public func wait() { pthread_cond_wait(condition, mutex.mutex) }

    /// Waits until signalled or until `deadline` (seconds on `Clock.monotonic()`); false when the deadline passed.
    @discardableResult
    public func wait(until deadline: Double) -> Bool {
        let whole = deadline.rounded(.down)
        var ts = timespec(
            tv_sec: Int(max(0, min(whole, Double(Int32.max) * 64))),
            tv_nsec: Int(max(0, (deadline - whole) * 1e9)))
        return pthread_cond_timedwait(condition, mutex.mutex, &ts) != ETIMEDOUT
    }

    public func signal() { pthread_cond_signal(condition) }
    public func broadcast() { pthread_cond_broadcast(condition) }
}
