import CPlatform
import Glibc

/// A thread its owner can join: `join()` returns once the thread has ended (`pthread_join`), so that nothing of it
/// (its stack, what its body holds) outlives the owner's stop. Foundation's `Thread` cannot be joined: a stop that
/// waited for a "finished" signal still raced with the thread's last instructions.
///
/// Stopping is the body's business (the ban worker's condition, an event loop's eventfd, the hub's pipe); this type
/// only starts and joins. A thread never joined is detached when its handle goes away, so it is never leaked.
public final class JoinableThread: @unchecked Sendable {
    // @unchecked: `handle` is written once, in init; whether it was joined is kept in `joined`, locked.
    private var handle = pthread_t()
    private let joined = Locked(false)

    public struct StartError: Error, CustomStringConvertible {
        public let name: String
        public let code: Int32
        public var description: String { "starting the thread \(name) failed: \(String(cString: strerror(code))) (errno \(code))" }
    }

    /// The body as the new thread receives it, with the thread's name (at most 15 bytes show).
    private final class Body {
        let name: String
        let run: @Sendable () -> Void
        init(_ name: String, _ run: @escaping @Sendable () -> Void) { self.name = name; self.run = run }
    }

    /// Starts `body` on a new thread named `name` (the first 15 bytes show in `top -H` and in sanitizer reports).
    public init(name: String, _ body: @escaping @Sendable () -> Void) throws(StartError) {
        // Owner of this +1 reference: the new thread, which takes it back as its first act (`takeRetainedValue`
        // in the entry below); if the thread cannot be created, this initializer releases it.
        let context = Unmanaged.passRetained(Body(String(name.utf8.prefix(15)) ?? "portcullis", body)).toOpaque()
        let rc = pthread_create(
            &handle, nil,
            { context in
                let body = Unmanaged<Body>.fromOpaque(context!).takeRetainedValue()
                _ = pc_name_this_thread(body.name)
                body.run()
                return nil
            }, context)
        guard rc == 0 else {
            Unmanaged<Body>.fromOpaque(context).release()
            throw StartError(name: name, code: rc)
        }
    }

    /// Waits until the thread has ended. Call from another thread than this one; a second call returns at once.
    public func join() {
        if claim() { pthread_join(handle, nil) }
    }

    /// Lets the thread end on its own, never joined: for a thread that decides itself when it ends (the watch
    /// hub's, when its last watcher goes), called by that thread. Joining it afterwards returns at once.
    public func detach() {
        if claim() { pthread_detach(handle) }
    }

    deinit {
        if claim() { pthread_detach(handle) }
    }

    /// True the first time: a thread is joined or detached exactly once.
    private func claim() -> Bool {
        joined.withLock { done in
            defer { done = true }
            return !done
        }
    }
}
