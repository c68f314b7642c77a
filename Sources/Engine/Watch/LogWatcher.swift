import FoundationEssentials
import Glibc
import Platform
import Synchronization

/// Watches a jail's log files and hands every new line to a callback, on the thread of its `WatchHub` (one
/// thread and one inotify instance for every jail; see there). A file that does not exist yet is picked up when
/// it appears; the polling backend (or a directory that cannot be watched) checks the files on a timer instead.
public final class LogWatcher: @unchecked Sendable {
    // @unchecked: `followers`, `patterns`, `warnings` and the timing fields are touched only by the hub thread
    // between `start()` and `stop()` (and by the caller after `stop()`); `prepare` is set before `start()`;
    // `fileList` is locked and `pollingFlag` atomic.
    public typealias LineHandler = (_ line: UnsafeBufferPointer<UInt8>, _ inOperation: Bool, _ follower: LogFollower) -> Void

    public let name: String
    private let patterns: [LogPath]
    let usePolling: Bool
    let pollInterval: Int32
    private var followers: [String: LogFollower] = [:]
    private let handler: LineHandler
    private let maxLineLength: Int
    private let onIdle: (Double) -> Void
    let log: Logger?
    private let hub: WatchHub
    private var buffer: ReadBuffer?
    /// Whether the watcher polls (asked to, or no inotify for its directories); read by other threads (status).
    private let pollingFlag = Atomic<Bool>(false)
    public private(set) var polling: Bool {
        get { pollingFlag.load(ordering: .relaxed) }
        set { pollingFlag.store(newValue, ordering: .relaxed) }
    }
    /// The followed files, published for other threads (status requests) whenever the hub thread changes them.
    private let fileList = Locked<[String]>([])
    /// Called once before the first poll of each file, on the hub thread, to restore positions.
    public var prepare: ((LogFollower) -> Void)?
    /// A problem with a file (unreadable, not a regular file) is met at every poll: said once, then again at most
    /// every 10 minutes with how often it was met meanwhile.
    private var warnings = RepeatedWarnings(interval: 600)
    private(set) var lastPoll = 0.0
    private(set) var lastHousekeeping = 0.0
    private var started = false

    /// - Parameters:
    ///   - onIdle: called on the hub thread after each batch of reading, and at least once a second.
    public init(
        name: String, paths: [LogPath], polling: Bool, pollInterval: Int32 = 500, log: Logger? = nil,
        maxLineLength: Int = LineSplitter.defaultMaxLineLength, hub: WatchHub = .shared,
        onIdle: @escaping (Double) -> Void = { _ in }, handler: @escaping LineHandler
    ) {
        self.name = name
        self.maxLineLength = maxLineLength
        self.patterns = paths
        self.usePolling = polling
        self.pollInterval = pollInterval
        self.handler = handler
        self.onIdle = onIdle
        self.log = log
        self.hub = hub
    }

    /// The files currently followed (safe from any thread).
    public var files: [String] { fileList.withLock { $0 } }

    /// Where each file was read up to. Call on the hub thread (from `onIdle`) or after `stop()`.
    public func positions() -> [(path: String, firstLine: [UInt8], offset: Int)] {
        followers.values.filter { $0.isOpen && !$0.firstLineFingerprint.isEmpty }.map { ($0.path, $0.firstLineFingerprint, $0.position) }
    }

    public func start() {
        // Status requests may come before the first pass: publish the files about to be followed.
        let initial = Set(patterns.flatMap(expand)).sorted()
        fileList.withLock { $0 = initial }
        started = true
        hub.add(self)
    }

    /// Returns once the hub has let go of this watcher: no line is handed over after it.
    public func stop() {
        guard started else { return }
        started = false
        hub.remove(self)
    }

    // MARK: on the hub thread

    /// The directories to watch.
    var directories: Set<String> { Set(patterns.map { Path.directory(of: $0.pattern) }) }

    /// Registered: follow the files and read the backlog (everything already in them).
    func attached(polling: Bool, buffer: ReadBuffer) {
        self.polling = polling
        self.buffer = buffer
        refreshFollowers()
        pollAll(Clock.now())
    }

    /// Whether the hub must come back on a timer: polling, or files renamed away or not there yet. Both flags
    /// change only when the files are polled, so they are worked out then, not at each turn of the hub's loop
    /// (a glob of 10,000 files would be walked for every event of every jail).
    private(set) var needsTimer = false
    /// Whether a file has more to read than one poll takes.
    private(set) var hasMore = false

    func follows(_ path: String) -> Bool { followers[path] != nil }

    func noteRenamed(from: String, to: String) {
        for f in followers.values { f.noteRenamed(from: from, to: to) }
    }

    /// The paths the patterns name now (a plain path that does not exist yet included: it may appear later).
    private func expand(_ p: LogPath) -> [String] {
        let matches = Glob.expand(p.pattern)
        return matches.isEmpty && !p.pattern.contains(where: { "*?[".contains($0) }) ? [p.pattern] : matches
    }

    func refreshFollowers() {
        var added = false
        for p in patterns {
            for path in expand(p) where followers[path] == nil {
                let f = LogFollower(path: path, startAtEnd: p.tail, maxLineLength: maxLineLength, buffer: buffer ?? ReadBuffer())
                prepare?(f)
                followers[path] = f
                added = true
            }
        }
        // Published once per pass: 10,000 files matched by a glob are one sort, not 10,000.
        if added {
            let list = followers.keys.sorted()
            fileList.withLock { $0 = list }
        }
    }

    func pollAll(_ t: Double) {
        lastPoll = t
        for (_, f) in followers {
            let cutBefore = f.truncatedLines
            f.poll(now: t) { line, inOperation in handler(line, inOperation, f) }
            if f.truncatedLines > cutBefore {
                // fail2ban would test these lines whole: say so every time.
                log?.warning(
                    "[\(name)] \(f.truncatedLines - cutBefore) line(s) of \(f.path) longer than \(maxLineLength) bytes were cut there; only their first \(maxLineLength) bytes were tested (maxlinelength raises the cap)"
                )
            }
            if let e = f.lastError {
                warnings.report(e, key: f.path, now: t) { log?.warning("[\(name)] \($0)") }
                f.lastError = nil
            } else if f.isOpen {
                warnings.clear(key: f.path, now: t) { log?.notice("[\(name)] \($0)") }
            }
        }
        needsTimer = polling || followers.values.contains { $0.hasRetired || !$0.isOpen }
        hasMore = followers.values.contains { $0.hasMore }
        housekeeping(t)
    }

    func housekeeping(_ t: Double) {
        lastHousekeeping = t
        onIdle(t)
    }
}
