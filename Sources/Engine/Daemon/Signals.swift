import Glibc

/// Signals the daemon handles synchronously: they are blocked in every thread (threads started afterwards inherit
/// the mask) and collected by `wait()` on the main thread. This works for PID 1 in a container too, where signals
/// with default dispositions would otherwise be ignored.
public enum Signals {
    public static let handled: [Int32] = [SIGTERM, SIGINT, SIGHUP, SIGQUIT]

    /// Blocks the handled signals in the calling thread. Call before starting any thread.
    public static func block() {
        var set = sigset_t()
        sigemptyset(&set)
        for s in handled { sigaddset(&set, s) }
        pthread_sigmask(SIG_BLOCK, &set, nil)
        // A write to a closed socket must be an error, not the end of the daemon.
        signal(SIGPIPE, SIG_IGN)
    }

    /// Waits for one of the handled signals, or until `timeout` seconds pass (nil then).
    public static func wait(timeout: Double) -> Int32? {
        var set = sigset_t()
        sigemptyset(&set)
        for s in handled { sigaddset(&set, s) }
        var ts = timespec(tv_sec: Int(timeout), tv_nsec: Int((timeout - timeout.rounded(.down)) * 1e9))
        let s = sigtimedwait(&set, nil, &ts)
        return s > 0 ? s : nil
    }

    public static func name(_ s: Int32) -> String {
        switch s {
        case SIGTERM: "SIGTERM"
        case SIGINT: "SIGINT"
        case SIGHUP: "SIGHUP"
        case SIGQUIT: "SIGQUIT"
        default: "signal \(s)"
        }
    }
}
