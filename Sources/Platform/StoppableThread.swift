import Glibc
import Synchronization

/// A thread that runs until it is asked to stop, the project's one way to run a long-lived loop: `wake()` signals
/// an eventfd the body waits on (beside its own descriptors, or alone through `waitForWake`), `stop()` sets the
/// stop flag, wakes the body and joins the thread. Work handed to the thread (commands, completions) is queued by
/// its owner, then `wake()` is called; an eventfd keeps a signal until it is drained, so none is lost between the
/// body's last look at its queue and its wait.
public final class StoppableThread: Sendable {
    private let wakeUp: EventFD
    private let stopping = Atomic<Bool>(false)
    /// Set by `start`, taken by the first `join`.
    private let thread = Locked<JoinableThread?>(nil)
    public let name: String

    /// Creating the eventfd can fail (EMFILE, ENFILE, ENOMEM): an error, never a loop spinning on a bad descriptor.
    public init(name: String) throws(Errno) {
        self.name = name
        wakeUp = try EventFD()
    }

    /// Starts `body` on the thread. The body returns when `isStopping` is true (after its own clean-up).
    public func start(_ body: @escaping @Sendable () -> Void) throws(JoinableThread.StartError) {
        let t = try JoinableThread(name: name, body)
        thread.withLock { $0 = t }
    }

    /// The descriptor the body watches for readability; after it fires, call `drainWake()`.
    public var wakeDescriptor: Int32 { wakeUp.rawValue }

    public var isStopping: Bool { stopping.load(ordering: .acquiring) }

    public func wake() { wakeUp.signal() }

    /// Clears the wake-up (call before looking at the queued work, so that work queued later wakes again).
    public func drainWake() { wakeUp.drain() }

    /// For a body with no descriptors of its own: returns when woken (the wake-up drained), or at `timeout`
    /// seconds (nil: without end).
    public func waitForWake(timeout: Double?) {
        var p = pollfd(fd: wakeUp.rawValue, events: Int16(POLLIN), revents: 0)
        let ms: Int32 = timeout.map { Int32(max(0, min($0 * 1000, Double(Int32.max)).rounded(.up))) } ?? -1
        if case .success(let n) = valueOrErrno(retryOnInterrupt: false, { poll(&p, 1, ms) }), n > 0 { wakeUp.drain() }
    }

    /// Asks the body to stop, without waiting for it.
    public func requestStop() {
        stopping.store(true, ordering: .releasing)
        wakeUp.signal()
    }

    /// Waits until the body has returned. Never call from the thread itself.
    public func join() {
        let t = thread.withLock { t -> JoinableThread? in
            defer { t = nil }
            return t
        }
        t?.join()
    }

    /// `requestStop`, then `join`.
    public func stop() {
        requestStop()
        join()
    }
}
