import Glibc
import Platform

/// One thread and one inotify instance for the log watching of every jail. Three hundred jails used to mean three
/// hundred threads and inotify instances (the default limit, 128, was reached at jail 127); now they are watchers
/// registered here, and the thread reads whichever log changed, a bounded amount at a time, so that a flood in one
/// log delays the others by one read of `LogFollower.bytesPerPoll` at most.
///
/// The directories of the log files are watched (appends, renames, truncation and files that appear later all
/// wake the thread); a directory that cannot be watched, or an inotify that cannot be set up, makes that jail's
/// watcher poll its files on a timer instead. The thread runs while there is a watcher, and is started again for
/// the next one.
public final class WatchHub: @unchecked Sendable {
    // @unchecked, the invariant: the command queue and the thread's bookkeeping are locked (in `queue`), `removed`
    // is guarded by `removals`; everything else (watchers, directories, the inotify state) is the hub thread's
    // alone. The hub keeps its own thread type (JoinableThread, not StoppableThread): its thread decides itself
    // when it ends (when its last watcher goes) and detaches itself then; nobody stops it.

    /// The daemon's hub.
    public static let shared = WatchHub()

    private enum Command {
        case add(LogWatcher)
        case remove(LogWatcher)
    }

    /// `thread`: the running thread's handle; `ended`: the number of the last thread that decided to end. A thread
    /// ends when it has no watcher left, and detaches itself then (nobody is left to join it, and a stop waits for
    /// its removal, not for the thread); if it ends before its starter stored its handle, the starter joins it.
    /// Watchers the hub thread let go of, until their `remove` call sees it (guarded by `removals`).
    private let removals = Condition()
    private var removed = Set<ObjectIdentifier>()
    private let queue = Locked<(commands: [Command], running: Bool, threads: Int, thread: JoinableThread?, ended: Int)>(([], false, 0, nil, 0))
    /// Wakes the hub thread for commands. Without it the hub cannot work at all (see `init`).
    private let wakeUp: EventFD
    /// nil when inotify could not be set up (every watcher polls then; `inotifyProblem` says why).
    private let inotify: Inotify?
    private let inotifyProblem: Errno?
    /// `inotify`'s descriptor number, for poll (lent: `inotify` owns it, for the hub's whole life).
    private let inotifyNumber: Int32?
    private var watchers: [ObjectIdentifier: LogWatcher] = [:]
    /// Watched directories: their watch descriptor and the watchers whose logs are there.
    private var directories: [String: (wd: Int32, users: Set<ObjectIdentifier>)] = [:]
    private var byDescriptor: [Int32: String] = [:]
    /// The first halves of renames (IN_MOVED_FROM), by cookie, waiting for their IN_MOVED_TO.
    private var movedFrom: [UInt32: String] = [:]
    /// Shared by every follower: the hub thread is the only one reading.
    let buffer = ReadBuffer()

    static let mask = UInt32(
        IN_MODIFY | IN_CREATE | IN_MOVED_TO | IN_MOVED_FROM | IN_DELETE | IN_CLOSE_WRITE | IN_ATTRIB
            | IN_DELETE_SELF | IN_MOVE_SELF)

    public init() {
        do {
            wakeUp = try EventFD()
        } catch {
            // Only at start (the shared hub is made before any jail): a process that cannot make one eventfd
            // cannot watch logs either. Better a crash the restart policy sees than a daemon that bans nothing.
            fatalError("Portcullis cannot create the log watcher's eventfd: \(error)")
        }
        do {
            let instance = try Inotify()
            inotifyNumber = instance.rawValue
            inotify = consume instance
            inotifyProblem = nil
        } catch {
            inotify = nil
            inotifyNumber = nil
            inotifyProblem = error
        }
    }

    /// Threads started so far (one per busy period, not one per jail).
    public var threadsStarted: Int { queue.withLock { $0.threads } }

    /// Whether a hub thread runs now (it ends with its last watcher).
    var isRunning: Bool { queue.withLock { $0.running } }

    func add(_ w: LogWatcher) {
        let number: Int? = queue.withLock { q in
            q.commands.append(.add(w))
            if q.running { return nil }
            q.running = true
            q.threads += 1
            return q.threads
        }
        guard let number else { return wake() }
        do {
            let t = try JoinableThread(name: "portcullis-watch") { [self] in run(number) }
            let endedAlready = queue.withLock { q -> Bool in
                if q.ended == number { return true }
                q.thread = t
                return false
            }
            if endedAlready { t.join() }
        } catch {
            // Without this thread no log is read at all: better a crash the restart policy sees than a daemon that
            // looks alive and bans nothing.
            fatalError("Portcullis cannot start its log-watching thread: \(error)")
        }
    }

    /// Returns once the hub thread let go of `w`: no callback of it runs after this.
    func remove(_ w: LogWatcher) {
        let id = ObjectIdentifier(w)
        queue.withLock { $0.commands.append(.remove(w)) }
        wake()
        removals.lock()
        while !removed.contains(id) { removals.wait() }
        removed.remove(id)
        removals.unlock()
    }

    /// Said by the hub thread once it let go of a watcher.
    private func removalDone(_ id: ObjectIdentifier) {
        removals.withLock {
            removed.insert(id)
            removals.broadcast()
        }
    }

    private func wake() { wakeUp.signal() }

    // MARK: the thread

    private func run(_ number: Int) {
        let events = UnsafeMutableRawBufferPointer.allocate(byteCount: 64 * 1024, alignment: 8)
        defer { events.deallocate() }
        var pfds = [pollfd(fd: wakeUp.rawValue, events: Int16(POLLIN), revents: 0)]
        if let fd = inotifyNumber { pfds.append(pollfd(fd: fd, events: Int16(POLLIN), revents: 0)) }
        while true {
            // Commands first: a watcher being stopped must not wait for a long read of another.
            var mine: JoinableThread? = nil
            let commands: [Command]? = queue.withLock { q in
                let c = q.commands
                q.commands = []
                if c.isEmpty && watchers.isEmpty {
                    q.running = false
                    q.ended = number
                    mine = q.thread
                    q.thread = nil
                    return nil
                }
                return c
            }
            guard let commands else {
                mine?.detach()
                return
            }
            for c in commands {
                switch c {
                case .add(let w): attach(w)
                case .remove(let w):
                    detach(w)
                    removalDone(ObjectIdentifier(w))
                }
            }
            if watchers.isEmpty { continue }
            let now = Clock.now()
            var timeout: Int32 = 1000
            for w in watchers.values {
                if w.hasMore { timeout = 0; break }
                if w.needsTimer { timeout = min(timeout, max(0, Int32((w.lastPoll + Double(w.pollInterval) / 1000 - now) * 1000))) }
            }
            for i in pfds.indices { pfds[i].revents = 0 }
            if case .failure(let error) = valueOrErrno(retryOnInterrupt: false, { poll(&pfds, nfds_t(pfds.count), timeout) }),
                error != .interrupted
            {
                // poll(2) fails only for lack of memory (EINVAL/EFAULT would be our bug): the timers still run.
                reportPollFailure(error)
                for i in pfds.indices { pfds[i].revents = 0 }
            }
            if pfds[0].revents & Int16(POLLIN) != 0 { wakeUp.drain() }
            var changed = Set<ObjectIdentifier>()
            if pfds.count > 1 && pfds[1].revents & Int16(POLLIN) != 0 { changed = drainInotify(events) }
            let t = Clock.now()
            for (id, w) in watchers {
                let due = w.needsTimer && t - w.lastPoll >= Double(w.pollInterval) / 1000
                if changed.contains(id) || w.hasMore || due {
                    w.pollAll(t)
                } else if t - w.lastHousekeeping >= 1 {
                    w.housekeeping(t)
                }
            }
        }
    }

    private func attach(_ w: LogWatcher) {
        let id = ObjectIdentifier(w)
        watchers[id] = w
        var polling = w.usePolling
        if !polling {
            if inotify == nil {
                w.log?.warning("[\(w.name)] inotify unavailable (\(inotifyProblem?.message ?? "?")); polling the log files")
                polling = true
            }
            for dir in w.directories where inotify != nil {
                if var entry = directories[dir] {
                    entry.users.insert(id)
                    directories[dir] = entry
                    continue
                }
                do {
                    guard let wd = try inotify?.addWatch(dir, mask: WatchHub.mask) else { continue }
                    directories[dir] = (wd, [id])
                    byDescriptor[wd] = dir
                } catch {
                    w.log?.warning("[\(w.name)] cannot watch \(dir) (\(error.message)); polling it")
                    polling = true
                }
            }
        }
        w.attached(polling: polling, buffer: buffer)
    }

    private func detach(_ w: LogWatcher) {
        let id = ObjectIdentifier(w)
        guard watchers.removeValue(forKey: id) != nil else { return }
        for dir in w.directories {
            guard var entry = directories[dir] else { continue }
            entry.users.remove(id)
            if entry.users.isEmpty {
                inotify?.removeWatch(entry.wd)
                directories[dir] = nil
                byDescriptor[entry.wd] = nil
            } else {
                directories[dir] = entry
            }
        }
    }

    /// A failing poll is said once a minute at most (with how often it failed meanwhile).
    private var pollWarnings = RepeatedWarnings(interval: 60)

    private func reportPollFailure(_ error: Errno) {
        let log = watchers.values.first?.log
        pollWarnings.report("the log watcher's poll failed: \(error)", key: "poll", now: Clock.now()) { log?.error($0) }
    }

    /// Reads queued inotify events; returns the watchers they concern.
    private func drainInotify(_ buffer: UnsafeMutableRawBufferPointer) -> Set<ObjectIdentifier> {
        var changed = Set<ObjectIdentifier>()
        var rescan = Set<ObjectIdentifier>()
        while inotify != nil {
            // EAGAIN (nothing queued) reads as 0; any other error ends this drain (the next poll tries again).
            let n = (try? inotify?.read(into: buffer)) ?? 0
            if n <= 0 { break }
            var off = 0
            while off < n {
                let ev = buffer.baseAddress!.advanced(by: off).assumingMemoryBound(to: inotify_event.self)
                let len = Int(ev.pointee.len)
                let mask = ev.pointee.mask
                off += MemoryLayout<inotify_event>.size + len
                if mask & UInt32(IN_Q_OVERFLOW) != 0 {
                    // Events were lost: every watcher looks at everything again.
                    for id in watchers.keys { changed.insert(id); rescan.insert(id) }
                    continue
                }
                guard let dir = byDescriptor[ev.pointee.wd], let users = directories[dir]?.users else { continue }
                guard len > 0 else { changed.formUnion(users); continue }
                let name = String(cString: UnsafeRawPointer(ev).advanced(by: MemoryLayout<inotify_event>.size).assumingMemoryBound(to: CChar.self))
                let path = dir + "/" + name
                // Renames are followed (a rename's two halves share a cookie), so that a log rotated twice before
                // we looked still has its middle file read.
                var renamedFrom: String? = nil
                if mask & UInt32(IN_MOVED_FROM) != 0 {
                    if movedFrom.count > 64 { movedFrom.removeAll() }
                    movedFrom[ev.pointee.cookie] = path
                } else if mask & UInt32(IN_MOVED_TO) != 0 {
                    renamedFrom = movedFrom.removeValue(forKey: ev.pointee.cookie)
                }
                let appeared = mask & UInt32(IN_CREATE | IN_MOVED_TO) != 0
                for id in users {
                    guard let w = watchers[id] else { continue }
                    if let from = renamedFrom { w.noteRenamed(from: from, to: path) }
                    if appeared { rescan.insert(id); changed.insert(id) } else if w.follows(path) { changed.insert(id) }
                }
            }
        }
        for id in rescan { watchers[id]?.refreshFollowers() }
        return changed
    }
}
