import Glibc

/// Wall-clock and monotonic time without Foundation, cheap enough for per-line use (vDSO `clock_gettime`).
public enum Clock {
    /// Seconds since the epoch.
    public static func now() -> Double {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
    }

    /// Seconds on a clock that never jumps (for timeouts and latencies).
    public static func monotonic() -> Double {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
    }
}
