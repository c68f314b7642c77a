import Glibc
import Platform

/// Follows one log file across appends and rotation: new lines are read as they arrive; a file renamed away
/// (logrotate's default) is read to its end before the new file at the same path is read from its start; a file
/// truncated in place (`copytruncate`) is read again from its start; a file that does not exist yet is picked up
/// when it appears. An unfinished last line waits for its newline.
///
/// Not thread-safe: one watcher thread owns it.
public final class LogFollower {
    public let path: String
    /// Start at the end of the file instead of its beginning (fail2ban's `logpath = … tail`).
    public let startAtEnd: Bool
    /// The file open at the path; nil while there is none.
    private var file: OwnedFile?
    /// Its number (-1 without one), lent for calls.
    private var fd: Int32 { file?.rawValue ?? -1 }
    private var device: UInt64 = 0
    private var inode: UInt64 = 0
    private var offset: Int = 0
    private var splitter: LineSplitter
    /// The first line (up to 256 bytes) of the open file, to recognise a file replaced by one of the same size.
    private var firstLine: [UInt8] = []
    /// Files renamed away that writers may still append to for a moment: drained until the deadline.
    private var retired: [Retired] = []
    /// A file no longer at the path (or a copy of it) that is read to its end before anything newer.
    private struct Retired {
        let file: OwnedFile
        var fd: Int32 { file.rawValue }
        var splitter: LineSplitter
        /// Kept open for late writers until then.
        var until: Double
        var device: UInt64
        var inode: UInt64
    }
    /// Where files that were at `path` went, as the watcher saw them renamed (inotify): one we never opened
    /// among them was rotated away before we looked, and is read before the file now at the path.
    /// Names are kept a minute (the watcher may learn of renames after the files moved on) and looked at each
    /// poll; a file is never read twice thanks to `seen`.
    private var formerNames: [(name: String, at: Double)] = []
    /// A rename was noted (or the file at the path changed) since the former names were last looked at: they are
    /// looked at only then, not at every poll of a busy log.
    private var formerNamesMoved = false
    /// The files read from this path (device, inode), most recent last: an adopted name that holds one of them
    /// is skipped.
    private var seen: [FileID] = []
    private struct FileID: Equatable { let device: UInt64, inode: UInt64 }
    /// The file's size at the last poll: what a truncation may have taken before we read it.
    private var lastSize = 0
    private var rotationsAtAdoption = 0
    /// Bytes known lost to a copytruncate that left no copy to read them from.
    public private(set) var lostBytes = 0
    private var opened = false
    /// Where the path led at the first open (the file's real path).
    private var target0: String?
    private let readBuffer: ReadBuffer
    private var buffer: UnsafeMutableRawBufferPointer { readBuffer.bytes }
    /// Set once the backlog has been read: lines after this are "in operation" (fresh).
    public private(set) var caughtUp = false
    /// Times the file was found rotated or truncated.
    public private(set) var rotations = 0
    public private(set) var bytesRead = 0
    public var lastError: String?

    /// `buffer`: shared by the followers of one thread (a fresh one by default).
    public init(path: String, startAtEnd: Bool = false, maxLineLength: Int = 4 << 20, buffer: ReadBuffer = ReadBuffer()) {
        self.path = path
        self.startAtEnd = startAtEnd
        splitter = LineSplitter(maxLineLength: maxLineLength)
        readBuffer = buffer
    }

    /// Lines cut at the length cap so far, in every file followed at this path (it only grows).
    public var truncatedLines: Int { splitter.truncatedLines + retired.reduce(retiredTruncatedLines) { $0 + $1.splitter.truncatedLines } }
    /// Cut lines of renamed-away files that were closed.
    private var retiredTruncatedLines = 0

    /// The byte offset up to which lines were delivered (for persisting the position).
    public var position: Int { offset - splitter.pendingCount }
    public var isOpen: Bool { fd >= 0 }
    public var identity: (device: UInt64, inode: UInt64) { (device, inode) }
    /// What the store keeps of the first line (empty while the file has none).
    public var firstLineFingerprint: [UInt8] { firstLine.isEmpty ? [] : LogFingerprint.of(firstLine) }

    /// Resumes at `position` in the file whose first line has the fingerprint `expected` (restored from the
    /// store): used only if the file still starts with that line and is at least that long; otherwise it is read
    /// from the start.
    public func resume(at position: Int, firstLine expected: [UInt8]) {
        guard !opened else { return }
        guard openFile(at: 0) else { return }
        // A position stored by an older version holds the line itself.
        let known = firstLineFingerprint == expected || (!LogFingerprint.isFingerprint(expected) && firstLine == expected)
        if !expected.isEmpty && known && position <= fileSize() {
            offset = position
            lseek(fd, off_t(position), SEEK_SET)
        }
    }

    private func fileSize() -> Int {
        var st = stat()
        return fstat(fd, &st) == 0 ? Int(st.st_size) : 0
    }

    @discardableResult
    private func openFile(at start: Int) -> Bool {
        let newFile: OwnedFile
        do { newFile = try OwnedFile.open(path, O_RDONLY | O_NONBLOCK) } catch {
            if error != .noSuchFile { lastError = "cannot open \(path): \(error.message)" }
            return false
        }
        let f = newFile.rawValue
        var st = stat()
        fstat(f, &st)
        // Only regular files: a directory put in the log's place, or a device (/dev/zero), is not a log.
        guard st.st_mode & S_IFMT == S_IFREG else {
            lastError = "\(path) is \(LogFollower.kind(st.st_mode)), not a regular file: not followed"
            return false
        }
        // The file must be where the path led when the jail first opened it: a log path that becomes a symlink to
        // another file (/etc/shadow) is not followed there. Checked on the open file (its /proc/self/fd link), so
        // that a symlink swapped in between cannot slip by.
        let target = LogFollower.openedPath(f) ?? path
        if let expected = target0, target != expected {
            lastError = "\(path) now leads to \(target), not to \(expected) as when it was first opened: not followed (a symlink put in place of the log?)"
            return false
        }
        target0 = target
        file = newFile
        device = UInt64(st.st_dev)
        inode = UInt64(st.st_ino)
        remember(FileID(device: device, inode: inode))
        opened = true
        lastError = nil
        firstLine = readFirstLine(f)
        offset = start == -1 ? Int(st.st_size) : start
        lseek(f, off_t(offset), SEEK_SET)
        splitter.reset()
        return true
    }

    private static func kind(_ mode: mode_t) -> String {
        switch mode & S_IFMT {
        case S_IFDIR: "a directory"
        case S_IFCHR: "a character device"
        case S_IFBLK: "a block device"
        case S_IFIFO: "a pipe"
        case S_IFSOCK: "a socket"
        default: "not a regular file"
        }
    }

    /// The path the kernel opened for `f`.
    private static func openedPath(_ f: Int32) -> String? {
        var buf = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        let n = readlink("/proc/self/fd/\(f)", &buf, buf.count - 1)
        guard n > 0 else { return nil }
        return String(decoding: buf[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    private func readFirstLine(_ f: Int32) -> [UInt8] {
        var head = [UInt8](repeating: 0, count: 256)
        let n = head.withUnsafeMutableBytes { pread(f, $0.baseAddress, 256, 0) }
        guard n > 0 else { return [] }
        let bytes = head[0..<n]
        if let nl = bytes.firstIndex(of: 10) { return Array(bytes[...nl]) }
        return n == 256 ? Array(bytes) : []
    }

    /// Checks the file and delivers every complete new line to `body`, with whether it belongs to the backlog
    /// (`false`) or arrived while following (`true`). Returns the number of lines delivered.
    @discardableResult
    public func poll(now: Double, _ body: (UnsafeBufferPointer<UInt8>, _ inOperation: Bool) -> Void) -> Int {
        var delivered = 0
        let inOperation = caughtUp
        let deliver: (UnsafeBufferPointer<UInt8>) -> Void = { line in
            delivered += 1
            body(line, inOperation)
        }
        var more = false
        defer { hasMore = more }
        var st = stat()
        let exists = stat(path, &st) == 0
        if fd >= 0 && (!exists || UInt64(st.st_dev) != device || UInt64(st.st_ino) != inode) {
            // Renamed or deleted: the old file is finished first (with its own unfinished line) and kept open
            // briefly for late writers.
            retired.append(Retired(file: file!, splitter: splitter, until: now + 5, device: device, inode: inode))
            splitter = LineSplitter(maxLineLength: splitter.maxLineLength)
            file = nil
            rotations += 1
        }
        // Then files rotated on before we ever opened them, then the file at the path.
        if formerNamesMoved || rotations != rotationsAtAdoption {
            formerNamesMoved = false
            rotationsAtAdoption = rotations
            if !formerNames.isEmpty { adoptFormerFiles(now: now) }
        }
        if !retired.isEmpty {
            drainRetired(now: now, deliver)
            // One left to read beyond this poll's budget: the newer files wait, or their lines would come first.
            if lastReadStopped { more = true; return delivered }
        }
        if fd < 0 {
            guard exists else { caughtUp = true; return delivered }
            // A file that appears after we started (or after a rotation) is new content: read from its start.
            guard openFile(at: (!opened && startAtEnd) ? -1 : 0) else { return delivered }
        } else {
            let size = Int(st.st_size)
            if size < offset || (size > 0 && !firstLine.isEmpty && offset > 0 && readFirstLine(fd) != firstLine) {
                // Truncated in place (copytruncate) or rewritten: what was written since our last read is in the
                // copy, if there is one; then the file is read again from its start.
                rotations += 1
                recoverFromCopy(now: now)
                splitter = LineSplitter(maxLineLength: splitter.maxLineLength)
                offset = 0
                lseek(fd, 0, SEEK_SET)
                firstLine = readFirstLine(fd)
                drainRetired(now: now, deliver)
                if lastReadStopped { more = true; return delivered }
            } else if firstLine.isEmpty && size > 0 {
                firstLine = readFirstLine(fd)
            }
        }
        readAvailable(fd, &splitter, deliver)
        more = lastReadStopped
        if !more { caughtUp = true }
        // The size seen at the start of this poll (no second stat): what a truncation may take before the next.
        lastSize = max(offset, Int(st.st_size))
        return delivered
    }

    /// The watcher saw `from` renamed to `to` in the log's directory.
    public func noteRenamed(from: String, to: String, now: Double = Clock.now()) {
        formerNamesMoved = true
        if from == path {
            formerNames.append((to, now))
            if formerNames.count > 32 { formerNames.removeFirst() }
        } else if let i = formerNames.firstIndex(where: { $0.name == from }) {
            formerNames[i].name = to
        }
    }

    private func remember(_ id: FileID) {
        guard !seen.contains(id) else { return }
        seen.append(id)
        if seen.count > 64 { seen.removeFirst() }
    }

    /// Files that were at the path and that we never opened (rotated on before we looked): read from their
    /// start, oldest (by last write) first, before the file at the path now.
    private func adoptFormerFiles(now: Double) {
        formerNames.removeAll { now - $0.at > 60 }
        var found: [(file: OwnedFile, st: stat)] = []
        for (name, _) in formerNames {
            guard let f = try? OwnedFile.open(name, O_RDONLY | O_NONBLOCK | O_NOFOLLOW) else { continue }
            var st = stat()
            guard fstat(f.rawValue, &st) == 0, st.st_mode & S_IFMT == S_IFREG,
                !seen.contains(FileID(device: UInt64(st.st_dev), inode: UInt64(st.st_ino))),
                !found.contains(where: { $0.st.st_ino == st.st_ino && $0.st.st_dev == st.st_dev })
            else {
                continue
            }
            found.append((f, st))
        }
        found.sort { ($0.st.st_mtim.tv_sec, $0.st.st_mtim.tv_nsec) < ($1.st.st_mtim.tv_sec, $1.st.st_mtim.tv_nsec) }
        for (f, st) in found {
            let id = FileID(device: UInt64(st.st_dev), inode: UInt64(st.st_ino))
            remember(id)
            retired.append(
                Retired(
                    file: f, splitter: LineSplitter(maxLineLength: splitter.maxLineLength), until: now + 5,
                    device: id.device, inode: id.inode))
            rotations += 1
        }
    }

    /// After a copytruncate: the copy (a file next to the log, named after it, written in the last minutes, that
    /// starts with the same line and reaches our position) holds what was written between our last read and the
    /// copy; it is read from our position, with the line we had begun. Without a copy, what we know was not
    /// read is counted and said.
    private func recoverFromCopy(now: Double) {
        let dir = path.split(separator: "/", omittingEmptySubsequences: false).dropLast().joined(separator: "/")
        let base = String(path.split(separator: "/").last ?? "")
        var best: (file: OwnedFile, st: stat)? = nil
        if let d = opendir(dir.isEmpty ? "." : dir) {
            while let e = readdir(d) {
                let name = withUnsafeBytes(of: e.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
                guard name != base, name.hasPrefix(base) else { continue }
                guard let f = try? OwnedFile.open((dir.isEmpty ? "." : dir) + "/" + name, O_RDONLY | O_NONBLOCK | O_NOFOLLOW) else { continue }
                var st = stat()
                // A better copy replaces the best so far (whose descriptor closes as it goes).
                if fstat(f.rawValue, &st) == 0, st.st_mode & S_IFMT == S_IFREG, Int(st.st_size) >= offset,
                    now - Double(st.st_mtim.tv_sec) < 600, readFirstLine(f.rawValue) == firstLine,
                    best.map({ st.st_mtim.tv_sec > $0.st.st_mtim.tv_sec }) ?? true
                {
                    best = (f, st)
                }
            }
            closedir(d)
        }
        guard let copy = best else {
            // What the file held beyond our position when we last looked is known lost; what was written after
            // that look cannot be known (a copy compressed away at once leaves nothing to read).
            let unread = max(0, lastSize - offset)
            if unread > 0 {
                lostBytes += unread
                lastError =
                    "\(path) was truncated in place (copytruncate) before \(unread) byte(s) of it were read, and no copy of it was found next to it: those lines were lost"
            }
            return
        }
        // The line we had begun continues in the copy, from our offset.
        lseek(copy.file.rawValue, off_t(offset), SEEK_SET)
        retired.append(Retired(file: copy.file, splitter: splitter, until: now, device: UInt64(copy.st.st_dev), inode: UInt64(copy.st.st_ino)))
    }

    /// Bytes read from the file per poll at most: a file that never ends (a writer faster than us, a huge
    /// backlog) must not keep the watcher from seeing a stop request; the rest is read at the next poll.
    static let bytesPerPoll = 32 << 20
    /// Whether the last poll stopped at `bytesPerPoll` with more to read (the watcher polls again at once).
    public private(set) var hasMore = false
    /// Whether the last `readAvailable` stopped at its budget (any retired file's, in `drainRetired`).
    private var lastReadStopped = false

    private func readAvailable(_ f: Int32, _ splitter: inout LineSplitter, _ deliver: (UnsafeBufferPointer<UInt8>) -> Void) {
        var budget = LogFollower.bytesPerPoll
        lastReadStopped = false
        while true {
            if budget <= 0 { lastReadStopped = true; return }
            let n: Int
            switch valueOrErrno({ read(f, buffer.baseAddress, buffer.count) }) {
            case .success(let count): n = count
            case .failure(let error):
                if error != .wouldBlock { lastError = "cannot read \(path): \(error.message)" }
                return
            }
            if n == 0 { return }
            if f == fd { offset += n }
            bytesRead += n
            budget -= n
            splitter.feed(UnsafeRawBufferPointer(rebasing: buffer[0..<n]), deliver)
        }
    }

    private func drainRetired(now: Double, _ deliver: (UnsafeBufferPointer<UInt8>) -> Void) {
        var keep: [Retired] = []
        var stopped = false
        for var r in retired {
            if stopped { keep.append(r); continue }
            readAvailable(r.fd, &r.splitter, deliver)
            // Not finished within this poll's budget: read on at the next, before anything newer.
            if lastReadStopped { stopped = true; keep.append(r); continue }
            if now >= r.until {
                r.splitter.flush(deliver)
                retiredTruncatedLines += r.splitter.truncatedLines
                // Not kept: its descriptor closes with the last reference, below.
            } else {
                keep.append(r)
            }
        }
        retired = keep
        lastReadStopped = stopped
    }

    /// Whether renamed-away files are still being drained (the watcher then polls on a timer).
    public var hasRetired: Bool { !retired.isEmpty }
}
