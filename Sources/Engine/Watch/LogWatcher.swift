import Glibc
import Synchronization
import Foundation

/// Watches a jail's log files on a thread of its own and hands every new line to a callback on that thread.
///
/// With the inotify backend the *directories* of the log files are watched, so that appends, renames (logrotate),
/// truncation and files that appear later all wake the thread at once; a directory that does not exist, or an
/// inotify that cannot be set up (watch limit reached), falls back to polling. The polling backend checks every
/// file twice a second. The thread is stopped through a pipe, never by cancellation.
public final class LogWatcher: @unchecked Sendable {
    // @unchecked: `followers`, `patterns` and the inotify state are touched only by the watcher thread after
    // `start()`; `stopRequested` is atomic; the thread handle is set before the thread starts and cleared after it finished.
    public typealias LineHandler = (_ line: UnsafeBufferPointer<UInt8>, _ inOperation: Bool, _ follower: LogFollower) -> Void

    public let name: String
    private let patterns: [LogPath]
    private let usePolling: Bool
    private let pollInterval: Int32
    private var followers: [String: LogFollower] = [:]
    private var inotifyFD: Int32 = -1
    private var watchDirs: [Int32: String] = [:]
    /// The first halves of renames (IN_MOVED_FROM), by cookie, waiting for their IN_MOVED_TO.
    private var movedFrom: [UInt32: String] = [:]
    private var wakePipe: (read: Int32, write: Int32) = (-1, -1)
    private var thread: Thread?
    private let stopRequested = Atomic<Bool>(false)
    private let finished = Locked<Bool>(false)
    private let handler: LineHandler
    private let maxLineLength: Int
    private let onIdle: (Double) -> Void
    private let log: Logger?
    /// Whether the watcher fell back to polling (or was asked to poll); read by other threads (status).
    private let pollingFlag = Atomic<Bool>(false)
    public private(set) var polling: Bool {
        get { pollingFlag.load(ordering: .relaxed) }
        set { pollingFlag.store(newValue, ordering: .relaxed) }
    }
    /// The followed files, published for other threads (status requests) whenever the watcher thread changes them.
    private let fileList = Locked<[String]>([])
    /// A problem with a file (unreadable, not a regular file) is met at every poll: said once, then again at most
    /// every 10 minutes with how often it was met meanwhile.
    private var warnings = RepeatedWarnings(interval: 600)
    /// Called once before the first poll, on the watcher thread, to restore positions.
    public var prepare: ((LogFollower) -> Void)?

    /// - Parameters:
    ///   - onIdle: called on the watcher thread after each batch of reading, and at least once a second.
    public init(name: String, paths: [LogPath], polling: Bool, pollInterval: Int32 = 500, log: Logger? = nil,
                maxLineLength: Int = LineSplitter.defaultMaxLineLength,
                onIdle: @escaping (Double) -> Void = { _ in }, handler: @escaping LineHandler) {
        self.name = name
        self.maxLineLength = maxLineLength
        self.patterns = paths
        self.usePolling = polling
        self.pollInterval = pollInterval
        self.handler = handler
        self.onIdle = onIdle
        self.log = log
    }

    deinit {
        if inotifyFD >= 0 { close(inotifyFD) }
        if wakePipe.read >= 0 { close(wakePipe.read); close(wakePipe.write) }
    }

    /// The files currently followed (safe from any thread).
    public var files: [String] { fileList.withLock { $0 } }

    /// Where each file was read up to. Call on the watcher thread (from `onIdle`) or after `stop()`.
    public func positions() -> [(path: String, firstLine: [UInt8], offset: Int)] {
        followers.values.filter { $0.isOpen && !$0.firstLineFingerprint.isEmpty }.map { ($0.path, $0.firstLineFingerprint, $0.position) }
    }

    public func start() {
        // Status requests may come before the thread's first pass: publish the files it is about to follow.
        let initial = Set(patterns.flatMap(expand)).sorted()
        fileList.withLock { $0 = initial }
        var fds: [Int32] = [0, 0]
        _ = pipe(&fds)
        for fd in fds {
            _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
            _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
        }
        wakePipe = (fds[0], fds[1])
        let t = Thread { [self] in run() }
        t.name = "watch:\(name)"
        thread = t
        t.start()
    }

    /// Stops the thread and waits for it to finish its current batch.
    public func stop() {
        stopRequested.store(true, ordering: .sequentiallyConsistent)
        var b: UInt8 = 1
        _ = write(wakePipe.write, &b, 1)
        while !finished.withLock({ $0 }) { usleep(1000) }
        // The thread holds this watcher through its closure: let go of it, or the two keep each other alive.
        thread = nil
    }

    private func now() -> Double { Clock.now() }

    /// The paths the patterns name now (a plain path that does not exist yet included: it may appear later).
    private func expand(_ p: LogPath) -> [String] {
        let matches = Glob.expand(p.pattern)
        return matches.isEmpty && !p.pattern.contains(where: { "*?[".contains($0) }) ? [p.pattern] : matches
    }

    private func refreshFollowers() {
        for p in patterns {
            for path in expand(p) where followers[path] == nil {
                let f = LogFollower(path: path, startAtEnd: p.tail, maxLineLength: maxLineLength)
                prepare?(f)
                followers[path] = f
                let list = followers.keys.sorted()
                fileList.withLock { $0 = list }
            }
        }
    }

    private func setUpInotify() -> Bool {
        let fd = inotify_init1(Int32(IN_NONBLOCK | IN_CLOEXEC))
        guard fd >= 0 else {
            log?.warning("[\(name)] inotify unavailable (\(String(cString: strerror(errno)))); polling the log files")
            return false
        }
        inotifyFD = fd
        let mask = UInt32(IN_MODIFY | IN_CREATE | IN_MOVED_TO | IN_MOVED_FROM | IN_DELETE | IN_CLOSE_WRITE | IN_ATTRIB
            | IN_DELETE_SELF | IN_MOVE_SELF)
        var dirs = Set<String>()
        for p in patterns { dirs.insert((p.pattern as NSString).deletingLastPathComponent) }
        var allWatched = true
        for dir in dirs {
            let wd = inotify_add_watch(fd, dir, mask)
            if wd < 0 {
                log?.warning("[\(name)] cannot watch \(dir) (\(String(cString: strerror(errno)))); polling it")
                allWatched = false
            } else {
                watchDirs[wd] = dir
            }
        }
        polling = !allWatched
        return true
    }

    private func run() {
        defer { finished.withLock { $0 = true } }
        refreshFollowers()
        polling = usePolling
        if !usePolling && !setUpInotify() { polling = true }
        // The backlog: everything already in the files.
        pollAll()
        var lastHousekeeping = now()
        var pfds = [pollfd(fd: wakePipe.read, events: Int16(POLLIN), revents: 0)]
        if inotifyFD >= 0 { pfds.append(pollfd(fd: inotifyFD, events: Int16(POLLIN), revents: 0)) }
        let events = UnsafeMutableRawBufferPointer.allocate(byteCount: 64 * 1024, alignment: 8)
        defer { events.deallocate() }
        while !stopRequested.load(ordering: .relaxed) {
            let needTimer = polling || followers.values.contains { $0.hasRetired || !$0.isOpen }
            let more = followers.values.contains { $0.hasMore }
            let timeout: Int32 = more ? 0 : needTimer ? pollInterval : 1000
            for i in pfds.indices { pfds[i].revents = 0 }
            let r = poll(&pfds, nfds_t(pfds.count), timeout)
            if r < 0 && errno != EINTR {
                log?.error("[\(name)] poll failed: \(String(cString: strerror(errno)))")
                usleep(100_000)
            }
            if stopRequested.load(ordering: .relaxed) { break }
            var changed = false
            if inotifyFD >= 0 && pfds.count > 1 && pfds[1].revents & Int16(POLLIN) != 0 {
                changed = drainInotify(events)
            }
            if changed || needTimer || more || r == 0 {
                pollAll()
            }
            let t = now()
            if t - lastHousekeeping >= 1 {
                lastHousekeeping = t
                onIdle(t)
            }
        }
    }

    /// Reads queued inotify events; returns whether any concerned our files (or the set of files may change).
    private func drainInotify(_ buffer: UnsafeMutableRawBufferPointer) -> Bool {
        var relevant = false
        var rescan = false
        while true {
            let n = read(inotifyFD, buffer.baseAddress, buffer.count)
            if n <= 0 { break }
            var off = 0
            while off < n {
                let ev = buffer.baseAddress!.advanced(by: off).assumingMemoryBound(to: inotify_event.self)
                let len = Int(ev.pointee.len)
                if ev.pointee.mask & UInt32(IN_Q_OVERFLOW) != 0 { relevant = true; rescan = true }
                if ev.pointee.mask & UInt32(IN_CREATE | IN_MOVED_TO) != 0 { rescan = true }
                if len > 0, let dir = watchDirs[ev.pointee.wd] {
                    let namePtr = UnsafeRawPointer(ev).advanced(by: MemoryLayout<inotify_event>.size)
                        .assumingMemoryBound(to: CChar.self)
                    let name = String(cString: namePtr)
                    // Renames are followed (a rename's two halves share a cookie), so that a log rotated twice
                    // before we looked still has its middle file read.
                    if ev.pointee.mask & UInt32(IN_MOVED_FROM) != 0 {
                        if movedFrom.count > 64 { movedFrom.removeAll() }
                        movedFrom[ev.pointee.cookie] = dir + "/" + name
                    } else if ev.pointee.mask & UInt32(IN_MOVED_TO) != 0, let from = movedFrom.removeValue(forKey: ev.pointee.cookie) {
                        for f in followers.values { f.noteRenamed(from: from, to: dir + "/" + name) }
                    }
                    if followers[dir + "/" + name] != nil { relevant = true }
                    else if rescan { relevant = true }
                } else {
                    relevant = true
                }
                off += MemoryLayout<inotify_event>.size + len
            }
        }
        if rescan { refreshFollowers() }
        return relevant
    }

    private func pollAll() {
        let t = now()
        for (_, f) in followers {
            let cutBefore = f.truncatedLines
            f.poll(now: t) { line, inOperation in handler(line, inOperation, f) }
            if f.truncatedLines > cutBefore {
                // fail2ban would test these lines whole: say so every time.
                log?.warning("[\(name)] \(f.truncatedLines - cutBefore) line(s) of \(f.path) longer than \(maxLineLength) bytes were cut there; only their first \(maxLineLength) bytes were tested (maxlinelength raises the cap)")
            }
            if let e = f.lastError {
                warnings.report(e, key: f.path, now: t) { log?.warning("[\(name)] \($0)") }
                f.lastError = nil
            } else if f.isOpen {
                warnings.clear(key: f.path, now: t) { log?.notice("[\(name)] \($0)") }
            }
        }
        onIdle(t)
    }
}
