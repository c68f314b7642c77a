/// The memory a follower reads into. One thread reads at a time, so one buffer serves every file a watcher
/// thread follows: 10,000 followed files cost one buffer, not 10,000.
///
/// Owner: the `ReadBuffer` object owns its allocation (freed in `deinit`); followers hold the object strongly and
/// only use `bytes` during a read on the owning thread.
public final class ReadBuffer: @unchecked Sendable {
    // @unchecked: used by one thread at a time (the watch hub's thread, or a test's).
    let bytes: UnsafeMutableRawBufferPointer

    public init(size: Int = 256 << 10) {
        bytes = .allocate(byteCount: size, alignment: 16)
    }

    deinit { bytes.deallocate() }
}
