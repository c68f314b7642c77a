import CPlatform

/// glibc's allocator, tuned for a long-running daemon.
public enum Allocator {
    /// Makes the daemon's memory follow its load: glibc raises its mmap threshold after large blocks are freed (so
    /// the tables that grow during a ban storm end up in the heap, where fragmentation keeps them from being given
    /// back), and gives every thread its own arena. A fixed threshold keeps large tables in mmap (returned whole
    /// when freed); two arenas bound fragmentation across the watcher, ban-manager and API threads. Call before
    /// the threads start.
    @discardableResult
    public static func tuneForDaemon() -> Bool {
        pc_tune_malloc(256 * 1024, 2) == 1
    }

    /// Gives free heap memory back to the system (after a large table was released).
    public static func returnFreeMemory() {
        _ = pc_malloc_trim()
    }
}
