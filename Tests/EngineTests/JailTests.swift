import Foundation
import Platform
import TestSupport
import Testing

@testable import Engine

@Suite("failure tracker")
struct FailureTrackerTests {
    let a = IPNetwork("192.0.2.1")!
    let b = IPNetwork("192.0.2.2")!

    @Test func maxretryWithinFindtime() {
        var t = FailureTracker(maxRetry: 3, findTime: 600)
        #expect(t.record(a, time: 1000, lines: ["1"], jail: "j") == nil)
        #expect(t.record(a, time: 1100, lines: ["2"], jail: "j") == nil)
        // The first failure has left the window by now: still two.
        #expect(t.record(a, time: 1650, lines: ["3"], jail: "j") == nil)
        let d = t.record(a, time: 1690, lines: ["4"], jail: "j")
        #expect(d?.ip == a && d?.failures == 3 && d?.matches == ["2", "3", "4"])
        // After a decision the count starts again.
        #expect(t.failures(of: a) == 0)
        #expect(t.totalFailures == 4)
    }

    @Test func boundedTable() {
        var t = FailureTracker(maxRetry: 5, findTime: 600, maxTracked: 100)
        for i in 0..<1000 {
            _ = t.record(IPNetwork(.v4(0xC000_0200 + UInt32(i))), time: Double(i), lines: [], jail: "j")
        }
        #expect(t.currentlyFailed == 100)
        #expect(t.evicted == 900)
        // The newest are kept, the oldest forgotten.
        #expect(t.failures(of: IPNetwork(.v4(0xC000_0200 + 999))) == 1)
        #expect(t.failures(of: IPNetwork(.v4(0xC000_0200))) == 0)
    }

    @Test func expiry() {
        var t = FailureTracker(maxRetry: 5, findTime: 600)
        _ = t.record(a, time: 1000, lines: [], jail: "j")
        _ = t.record(b, time: 1500, lines: [], jail: "j")
        t.expire(now: 1700)
        #expect(t.currentlyFailed == 1)
        #expect(t.failures(of: b) == 1)
    }
}

@Suite("log follower")
struct LogFollowerTests {
    func collect(_ f: LogFollower) -> [String] {
        var lines: [String] = []
        f.poll(now: Clock.now()) { line, _ in lines.append(String(decoding: line, as: UTF8.self)) }
        return lines
    }

    @Test func appendsAndPartialLines() {
        let dir = TempDir()
        dir.write("a.log", "one\ntwo\n")
        let f = LogFollower(path: dir.path + "/a.log")
        #expect(collect(f) == ["one", "two"])
        dir.append("a.log", "thr")
        #expect(collect(f) == [])
        dir.append("a.log", "ee\r\nfour\n")
        #expect(collect(f) == ["three", "four"])
        #expect(f.position == 20)
    }

    @Test func renameRotationLosesNothing() throws {
        let dir = TempDir()
        dir.write("a.log", "one\n")
        let f = LogFollower(path: dir.path + "/a.log")
        #expect(collect(f) == ["one"])
        dir.append("a.log", "two\n")
        try FileManager.default.moveItem(atPath: dir.path + "/a.log", toPath: dir.path + "/a.log.1")
        dir.write("a.log", "three\n")
        #expect(collect(f) == ["two", "three"])
        // A late write to the renamed file (before the daemon reopened it) is still read.
        dir.append("a.log.1", "late\n")
        dir.append("a.log", "four\n")
        #expect(collect(f) == ["late", "four"])
        #expect(f.rotations == 1)
    }

    /// Two rotations before the follower looked: the middle file (never opened) is found where the renames took
    /// it, and read between the old file and the new one.
    @Test func twoRotationsBetweenPollsLoseNothing() throws {
        let dir = TempDir()
        let log = dir.path + "/a.log"
        dir.write("a.log", "a1\n")
        let f = LogFollower(path: log)
        #expect(collect(f) == ["a1"])
        dir.append("a.log", "a2\n")
        rename(log, log + ".1"); f.noteRenamed(from: log, to: log + ".1")
        dir.write("a.log", "b1\nb2\n")
        rename(log + ".1", log + ".2"); f.noteRenamed(from: log + ".1", to: log + ".2")
        rename(log, log + ".1"); f.noteRenamed(from: log, to: log + ".1")
        dir.write("a.log", "c1\n")
        #expect(collect(f) == ["a2", "b1", "b2", "c1"])
        #expect(f.rotations == 2)
    }

    /// copytruncate while lines were not read yet: they are read from the copy, then the emptied file.
    @Test func copytruncateReadsWhatItMissedFromTheCopy() throws {
        let dir = TempDir()
        let log = dir.path + "/a.log"
        dir.write("a.log", "one\ntwo\n")
        let f = LogFollower(path: log)
        #expect(collect(f) == ["one", "two"])
        dir.append("a.log", "three\nfou")
        #expect(collect(f) == ["three"])
        dir.append("a.log", "r\nfive\n")
        try FileManager.default.copyItem(atPath: log, toPath: log + ".1")
        let h = FileHandle(forWritingAtPath: log)!
        h.truncateFile(atOffset: 0)
        try h.close()
        dir.append("a.log", "six\n")
        #expect(collect(f) == ["four", "five", "six"])
        #expect(f.lostBytes == 0)
    }

    /// A burst through logrotate-style rotations (a.log.N → a.log.N+1, a.log → a.log.1) with nothing between
    /// them: the watcher (inotify) reads every line of every file, each file in order. (Which file comes first
    /// is best effort here: a file rotated on before its rename event is read may come after a newer one.)
    @Test func aBurstThroughRotationsLosesNothing() throws {
        let dir = TempDir()
        let log = dir.path + "/a.log"
        dir.write("a.log", "")
        let lines = Locked<[String]>([])
        let watcher = LogWatcher(name: "t", paths: [LogPath(pattern: log, tail: false)], polling: false) { line, _, _ in
            let text = String(decoding: line, as: UTF8.self)
            lines.withLock { $0.append(text) }
        }
        watcher.start()
        defer { watcher.stop() }
        usleep(100_000)
        let rounds = 10, perRound = 300
        for r in 0..<rounds {
            let h = FileHandle(forWritingAtPath: log)!
            h.seekToEndOfFile()
            h.write(Data((0..<perRound).map { "round \(r) line \($0)\n" }.joined().utf8))
            try h.close()
            for k in stride(from: r, through: 1, by: -1) { rename(log + ".\(k)", log + ".\(k + 1)") }
            rename(log, log + ".1")
            dir.write("a.log", "")
        }
        let expected = (0..<rounds).flatMap { r in (0..<perRound).map { "round \(r) line \($0)" } }
        #expect(eventually(timeout: 10) { lines.withLock { $0.count } >= expected.count })
        let got = lines.withLock { $0 }
        #expect(got.count == expected.count)
        #expect(Set(got) == Set(expected), "missing: \(Set(expected).subtracting(got).sorted().prefix(5))")
        for r in 0..<rounds {
            let round = got.filter { $0.hasPrefix("round \(r) ") }
            #expect(round == (0..<perRound).map { "round \(r) line \($0)" }, "round \(r) out of order")
        }
    }

    /// copytruncate in the middle of a burst (10,000 lines): what the watcher had not read yet is read from the
    /// copy, so nothing written before the copy is lost.
    @Test func copytruncateDuringABurstLosesNothing() throws {
        let dir = TempDir()
        let log = dir.path + "/a.log"
        dir.write("a.log", "")
        let count = Locked(0)
        let watcher = LogWatcher(name: "t", paths: [LogPath(pattern: log, tail: false)], polling: false) { _, _, _ in
            count.withLock { $0 += 1 }
        }
        watcher.start()
        defer { watcher.stop() }
        usleep(100_000)
        let h = FileHandle(forWritingAtPath: log)!
        for i in 0..<10_000 {
            h.seekToEndOfFile()
            h.write(Data("burst line \(i) from 192.0.2.\(i % 250)\n".utf8))
            if i == 6000 {
                // logrotate's copytruncate: copy, then empty the file in place (the writer goes on at its end).
                try FileManager.default.copyItem(atPath: log, toPath: log + ".1")
                h.truncateFile(atOffset: 0)
            }
        }
        try h.close()
        #expect(eventually(timeout: 10) { count.withLock { $0 } >= 10_000 })
        usleep(200_000)
        #expect(count.withLock { $0 } == 10_000)
    }

    @Test func copytruncate() throws {
        let dir = TempDir()
        dir.write("a.log", "one\ntwo\n")
        let f = LogFollower(path: dir.path + "/a.log")
        #expect(collect(f) == ["one", "two"])
        // logrotate copytruncate: the file is emptied in place, then written again.
        let h = FileHandle(forWritingAtPath: dir.path + "/a.log")!
        h.truncateFile(atOffset: 0)
        try h.close()
        dir.append("a.log", "three\n")
        #expect(collect(f) == ["three"])
        // Truncated and refilled past the old offset before we looked: the first line gives it away.
        try Data("NEW first line\nsecond line here\nthird line here\n".utf8).write(to: URL(fileURLWithPath: dir.path + "/a.log"))
        #expect(collect(f) == ["NEW first line", "second line here", "third line here"])
    }

    @Test func longLinesAreCutAndSaid() throws {
        // A line over the jail's maxlinelength reaches the filter cut at the cap, and the log says so.
        let dir = TempDir()
        dir.write("a.log", "")
        let logPath = dir.path + "/portcullis.log"
        let fd = open(logPath, O_WRONLY | O_CREAT | O_APPEND, 0o600)
        defer { close(fd) }
        let lines = Locked<[Int]>([])
        let watcher = LogWatcher(
            name: "t", paths: [LogPath(pattern: dir.path + "/a.log", tail: false)], polling: true,
            pollInterval: 50, log: Logger(level: .info, fd: fd), maxLineLength: 1024
        ) { line, _, _ in
            lines.withLock { $0.append(line.count) }
        }
        watcher.start()
        defer { watcher.stop() }
        dir.append("a.log", "short\n" + String(repeating: "x", count: 5000) + " from 192.0.2.1\nshort again\n")
        #expect(eventually { lines.withLock { $0 } == [5, 1024, 11] })
        #expect(
            eventually {
                ((try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "").contains("1 line(s) of \(dir.path)/a.log longer than 1024 bytes were cut there")
            })
    }

    /// A log path replaced by a symlink to another file (a secret) is not followed there; a directory or a
    /// device is not a log.
    @Test func hostilePathsAreNotFollowed() {
        let dir = TempDir()
        dir.write("a.log", "one\n")
        dir.write("secret", "root:$y$hash:19000:0:99999:7:::\n")
        let f = LogFollower(path: dir.path + "/a.log")
        #expect(collect(f) == ["one"])
        unlink(dir.path + "/a.log")
        symlink(dir.path + "/secret", dir.path + "/a.log")
        #expect(collect(f) == [])
        #expect(f.lastError?.contains("not followed (a symlink put in place of the log?)") == true, "\(f.lastError ?? "nil")")
        #expect(f.firstLineFingerprint == LogFingerprint.of(Array("one\n".utf8)))
        // Back to a regular file at the path: followed again, from its start.
        unlink(dir.path + "/a.log")
        dir.write("a.log", "two\n")
        #expect(collect(f) == ["two"])
        // A directory in its place.
        unlink(dir.path + "/a.log")
        mkdir(dir.path + "/a.log", 0o755)
        f.lastError = nil
        #expect(collect(f) == [])
        #expect(f.lastError?.contains("is a directory, not a regular file") == true)
        let zero = LogFollower(path: "/dev/zero")
        #expect(collect(zero) == [])
        #expect(zero.lastError == "/dev/zero is a character device, not a regular file: not followed")
    }

    /// The store keeps a fingerprint of the first line, never the line.
    @Test func fingerprints() {
        let a = LogFingerprint.of(Array("root:$y$secret\n".utf8))
        #expect(a.count == 17 && LogFingerprint.isFingerprint(a))
        #expect(!String(decoding: a, as: UTF8.self).contains("root"))
        #expect(a != LogFingerprint.of(Array("root:$y$secreT\n".utf8)))
        #expect(!LogFingerprint.isFingerprint(Array("a line of a log\n".utf8)))
    }

    /// A problem met at every poll is said once, then at most every interval with a count, and its end once.
    @Test func repeatedWarningsAreThrottled() {
        var w = RepeatedWarnings(interval: 600)
        var said: [String] = []
        for i in 0..<1000 { w.report("cannot open x: Permission denied", key: "x", now: Double(i), say: { said.append($0) }) }
        #expect(said == ["cannot open x: Permission denied", "cannot open x: Permission denied (again 600 time(s) since 10m ago; said every 10m at most)"])
        w.report("x is a directory, not a regular file: not followed", key: "x", now: 1000) { said.append($0) }
        #expect(said.count == 3)
        w.clear(key: "x", now: 1010) { said.append($0) }
        #expect(said.last == "resolved after 10s: x is a directory, not a regular file: not followed")
        w.clear(key: "x", now: 1011) { said.append($0) }
        #expect(said.count == 4 && w.count == 0)
    }

    /// A log replaced by a directory while followed: one warning, not one per event (it was 300,000 in 10 s).
    @Test func aLogReplacedByADirectoryIsSaidOnce() throws {
        let dir = TempDir()
        dir.write("a.log", "first\n")
        let logPath = dir.path + "/portcullis.log"
        let fd = open(logPath, O_WRONLY | O_CREAT | O_APPEND, 0o600)
        defer { close(fd) }
        let lines = Locked<[Int]>([])
        let watcher = LogWatcher(
            name: "t", paths: [LogPath(pattern: dir.path + "/a.log", tail: false)], polling: false,
            pollInterval: 20, log: Logger(level: .info, fd: fd)
        ) { line, _, _ in
            lines.withLock { $0.append(line.count) }
        }
        watcher.start()
        #expect(eventually { lines.withLock { $0 } == [5] })
        unlink(dir.path + "/a.log")
        mkdir(dir.path + "/a.log", 0o755)
        // Events in the directory keep waking the watcher.
        for i in 0..<200 { dir.write("noise-\(i)", "x"); usleep(5000) }
        watcher.stop()
        let text = (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? ""
        let warnings = text.split(separator: "\n").filter { $0.contains("WARNING") && $0.contains("a.log") }
        #expect(warnings.count == 1 && warnings[0].contains("is a directory, not a regular file"), "\(text.prefix(2000))")
    }

    /// 300 jails are 300 watchers on one hub: one thread and one inotify instance (the default limit of 128
    /// instances was reached at jail 127), and every jail still gets its lines. The hub counts its threads: the
    /// process's count moves with the tests running beside this one (it once read 3 new threads under ASan).
    @Test func manyJailsShareOneThread() throws {
        let dir = TempDir()
        let hub = WatchHub()
        let counts = Locked([Int](repeating: 0, count: 300))
        var watchers: [LogWatcher] = []
        for i in 0..<300 {
            mkdir(dir.path + "/j\(i)", 0o755)
            dir.write("j\(i)/a.log", "")
            let w = LogWatcher(name: "j\(i)", paths: [LogPath(pattern: dir.path + "/j\(i)/a.log", tail: false)], polling: false, hub: hub) { _, _, _ in
                counts.withLock { $0[i] += 1 }
            }
            w.start()
            watchers.append(w)
        }
        #expect(hub.threadsStarted == 1 && hub.isRunning)
        for i in 0..<300 { dir.append("j\(i)/a.log", "one\ntwo\n") }
        #expect(eventually { counts.withLock { $0.allSatisfy { $0 == 2 } } })
        #expect(hub.threadsStarted == 1)
        for w in watchers { w.stop() }
        // Once the last watcher is gone, so is the thread.
        #expect(eventually { !hub.isRunning })
        #expect(hub.threadsStarted == 1)
    }

    /// A glob matching 10,000 files: all followed (one read buffer for all of them).
    @Test func aGlobOfTenThousandFiles() throws {
        let dir = TempDir()
        for i in 0..<10_000 { dir.write("f\(i).log", "line of file \(i)\n") }
        let count = Locked(0)
        let watcher = LogWatcher(name: "g", paths: [LogPath(pattern: dir.path + "/*.log", tail: false)], polling: false, hub: WatchHub()) { _, _, _ in
            count.withLock { $0 += 1 }
        }
        watcher.start()
        defer { watcher.stop() }
        #expect(eventually(timeout: 30) { count.withLock { $0 } == 10_000 })
        #expect(watcher.files.count == 10_000)
    }

    @Test func fileAppearingLater() {
        let dir = TempDir()
        let f = LogFollower(path: dir.path + "/later.log")
        #expect(collect(f) == [])
        dir.write("later.log", "hello\n")
        #expect(collect(f) == ["hello"])
    }

    @Test func resumeFromPosition() {
        let dir = TempDir()
        dir.write("a.log", "one\ntwo\n")
        let first = LogFollower(path: dir.path + "/a.log")
        _ = collect(first)
        dir.append("a.log", "three\n")
        let again = LogFollower(path: dir.path + "/a.log")
        again.resume(at: first.position, firstLine: first.firstLineFingerprint)
        #expect(collect(again) == ["three"])
        // A different file at the path: read from its start.
        dir.write("a.log", "other\n")
        let third = LogFollower(path: dir.path + "/a.log")
        third.resume(at: first.position, firstLine: first.firstLineFingerprint)
        #expect(collect(third) == ["other"])
        // A position an older version stored, with the first line itself.
        dir.append("a.log", "more\n")
        let legacy = LogFollower(path: dir.path + "/a.log")
        legacy.resume(at: 6, firstLine: Array("other\n".utf8))
        #expect(collect(legacy) == ["more"])
    }
}

/// Ban decisions collected from a jail's thread.
final class DecisionLog: Sendable {
    private let list = Locked<[BanDecision]>([])
    func append(_ d: BanDecision) { list.withLock { $0.append(d) } }
    var decisions: [BanDecision] { list.withLock { $0 } }
}

@Suite("jails, live")
struct JailRuntimeTests {
    init() { _ = TestZone.ready }

    static func jail(_ dir: TempDir, backend: Backend = .inotify, ignore: String = "", maxRetry: Int = 2) throws -> JailDefinition {
        let filter = FilterDefinition(name: "t", failregex: [#"^\s*auth failed from <HOST>$"#])
        return JailDefinition(
            name: "t", filter: filter, filterSpec: "t", logPaths: [LogPath(pattern: dir.path + "/live.log", tail: false)],
            backend: backend, maxRetry: maxRetry, findTime: 600, banTime: 3600, ports: [], portSpec: "", protocol: "tcp",
            ignoreList: IgnoreList.parse(ignore, ignoreSelf: true).list, banAction: "dry-run", actions: [],
            logEncoding: "auto", logTimeZone: nil, maxMatches: 5, maxTracked: 1000, location: nil)
    }

    static func line(_ ip: String, at t: Double = Clock.now()) -> String {
        "\(LogTime.format(t)) auth failed from \(ip)\n"
    }

    @Test func filesAreKnownAsSoonAsTheJailStarts() throws {
        // Status requests may arrive before the watcher thread's first pass; they must not see an empty list.
        let dir = TempDir()
        let runtime = try JailRuntime(Self.jail(dir), log: Logger(level: .critical)) { _ in }
        runtime.start()
        defer { runtime.stop() }
        #expect(runtime.files == [dir.path + "/live.log"])
    }

    @Test func threeHundredFailuresThreeHundredBans() throws {
        // Issue 9: with maxretry 1, 300 failures from 300 addresses appended to a watched log gave 299 bans (the
        // filter's 256th line was screened with freed memory).
        let dir = TempDir()
        dir.write("live.log", "")
        let fw = DecisionLog()
        let runtime = try JailRuntime(Self.jail(dir, maxRetry: 1), log: Logger(level: .critical)) { fw.append($0) }
        runtime.start()
        defer { runtime.stop() }
        let ips = (0..<300).map { "198.51.\(100 + $0 / 250).\($0 % 250 + 1)" }
        dir.append("live.log", ips.map { Self.line($0) }.joined())
        #expect(eventually { fw.decisions.count == 300 })
        let missing = Set(ips.compactMap { IPNetwork($0) }).subtracting(fw.decisions.map(\.ip))
        #expect(missing.isEmpty, "not banned: \(missing.map(\.description).sorted().prefix(5))")
    }

    /// fail2ban 1.0.2's daemon counts a multi-line failure once toward maxretry, whatever the number of lines it
    /// gathered (its `FailTicket` starts at one attempt; fail2ban-regex and the sample tests report the lines as
    /// "attempts", which is another thing). Checked against fail2ban's own FailManager when this was written.
    @Test(.enabled(if: FileManager.default.fileExists(atPath: "/etc/fail2ban/filter.d/sshd.conf"), "needs Debian's fail2ban package"))
    func aMultiLineFailureCountsOnce() throws {
        let dir = TempDir()
        let found = try #require(try RegexRun.locateFilter("sshd", config: ConfigDirectory("/etc/fail2ban")))
        var def = try Self.jail(dir, maxRetry: 2)
        def.filter = found.definition
        let fw = DecisionLog()
        let runtime = try JailRuntime(def, log: Logger(level: .critical)) { fw.append($0) }
        let lines = [
            "Nov 28 09:16:05 srv sshd[32310]: Failed publickey for git from 192.0.2.111 port 57910 ssh2: ECDSA 1e:fe:xx",
            "Nov 28 09:16:05 srv sshd[32310]: Failed publickey for git from 192.0.2.111 port 57910 ssh2: RSA 14:ba:xx",
            "Nov 28 09:16:05 srv sshd[32310]: Disconnecting: Too many authentication failures for git [preauth]",
        ]
        for l in lines { Array(l.utf8).withUnsafeBufferPointer { runtime.process($0, inOperation: true) } }
        // One failure, which gathered three lines: below maxretry 2, no ban.
        #expect(runtime.counters.totalFailed == 1)
        #expect(fw.decisions.isEmpty)
        let again = "Nov 28 09:16:09 srv sshd[32311]: Failed password for root from 192.0.2.111 port 57911 ssh2"
        Array(again.utf8).withUnsafeBufferPointer { runtime.process($0, inOperation: true) }
        #expect(fw.decisions.map(\.failures) == [2])
    }

    @Test(arguments: [Backend.inotify, .polling])
    func liveBanDecisions(_ backend: Backend) throws {
        let dir = TempDir()
        // Old failures (beyond findtime) in the backlog do not count; recent ones do.
        let old = Clock.now() - 7200
        dir.write("live.log", Self.line("192.0.2.50", at: old) + Self.line("192.0.2.50", at: old + 1) + Self.line("192.0.2.51"))
        let fw = DecisionLog()
        let runtime = try JailRuntime(Self.jail(dir, backend: backend, ignore: "198.51.100.0/24"), log: Logger(level: .critical)) { d in
            fw.append(d)
        }
        runtime.start()
        defer { runtime.stop() }
        #expect(eventually { runtime.counters.linesRead == 3 })
        #expect(fw.decisions.isEmpty)
        dir.append("live.log", Self.line("192.0.2.51") + Self.line("198.51.100.9") + Self.line("198.51.100.9"))
        #expect(eventually { fw.decisions.count == 1 })
        #expect(fw.decisions.first?.ip == IPNetwork("192.0.2.51"))
        #expect(fw.decisions.first?.matches.count == 2)
        #expect(eventually { runtime.counters.ignored == 2 })
        // The file is rotated and a new one written: the watcher follows.
        try FileManager.default.moveItem(atPath: dir.path + "/live.log", toPath: dir.path + "/live.log.1")
        dir.write("live.log", Self.line("2001:db8::5") + Self.line("2001:db8::5"))
        #expect(eventually { fw.decisions.count == 2 })
        #expect(fw.decisions.last?.ip == IPNetwork("2001:db8::5"))
    }
}

@Suite("jail configuration")
struct JailsReaderTests {
    init() { _ = TestZone.ready }

    static let filter = "[Definition]\nfailregex = ^\\s*fail from <HOST>$\n"

    @Test func overridesAndErrors() throws {
        let dir = TempDir()
        dir.write("filter.d/good.conf", Self.filter)
        dir.write("filter.d/broken.conf", "[Definition]\nfailregex = ^fail ( from <HOST>\n")
        dir.write(
            "jail.conf",
            """
            [DEFAULT]
            maxretry = 5
            bantime = 10m
            findtime = 10m
            backend = auto
            port = 0:65535
            logpath = /var/log/x.log
            [good]
            filter = good
            [broken]
            filter = broken
            enabled = true
            [journal]
            filter = good
            enabled = true
            backend = systemd
            """)
        dir.write("jail.d/10-first.conf", "[good]\nenabled = true\nmaxretry = 3\n")
        dir.write("jail.d/zz.local", "[good]\nmaxretry = 2\nbantime = 12w\nfindtime = 1d\nport = pop3,1100\n")
        dir.write("jail.local", "[good]\nmaxretry = 4\n")
        let config = LoadedConfig.load(dir.path)
        #expect(config.jails.map(\.name) == ["good"])
        let good = try #require(config.jails.first)
        // jail.conf, jail.d/*.conf, jail.local, jail.d/*.local: the last wins.
        #expect(good.maxRetry == 2)
        #expect(good.banTime == 7_257_600)
        #expect(good.findTime == 86400)
        #expect(good.ports.map(\.first) == [110, 1100])
        let broken = config.diagnostics.first { $0.jail == "broken" }
        #expect(broken?.severity == .error)
        #expect(broken?.message.contains("^fail ( from <HOST>") == true)
        #expect(broken?.message.contains("missing closing parenthesis") == true)
        let journal = config.diagnostics.first { $0.jail == "journal" }
        #expect(journal?.message.contains("no systemd journal") == true)
        #expect(journal?.location?.line == 16)
    }

    /// Values no ban can have and names nftables cannot hold: the jail is skipped with file:line; ban times past
    /// the kernel's limit are a warning (they are cut).
    @Test func outOfRangeValuesAndNames() throws {
        let dir = TempDir()
        dir.write("filter.d/good.conf", Self.filter)
        let long = String(repeating: "j", count: 253)
        dir.write(
            "jail.conf",
            "[a]\nenabled = true\nfilter = good\nlogpath = /var/log/x.log\nbantime = 999999999999w\n"
                + "[b]\nenabled = true\nfilter = good\nlogpath = /var/log/x.log\nfindtime = 99999999999999999999\n"
                + "[c]\nenabled = true\nfilter = good\nlogpath = /var/log/x.log\nbantime = 1000000000000\n"
                + "[\(long)]\nenabled = true\nfilter = good\nlogpath = /var/log/x.log\n"
                + "[\(String(repeating: "k", count: 252))]\nenabled = true\nfilter = good\nlogpath = /var/log/x.log\n")
        let config = LoadedConfig.load(dir.path)
        #expect(config.jails.map(\.name) == ["c", String(repeating: "k", count: 252)])
        let a = try #require(config.diagnostics.first { $0.jail == "a" })
        #expect(a.severity == .error && a.location?.line == 5 && a.message.contains("out of range"))
        let b = try #require(config.diagnostics.first { $0.jail == "b" })
        #expect(b.severity == .error && b.location?.line == 10 && b.message.contains("findtime"))
        let c = try #require(config.diagnostics.first { $0.jail == "c" })
        #expect(c.severity == .warning && c.location?.line == 15 && c.message.contains("bans last 584y"))
        let n = try #require(config.diagnostics.first { $0.jail == long })
        #expect(n.severity == .error && n.message.contains("at most 252"))
    }

    /// References that repeat each other expand exponentially (1.2 GB from 20 lines): capped with a clear error,
    /// and each name is expanded once.
    @Test func exponentialInterpolationIsCapped() throws {
        let dir = TempDir()
        dir.write("filter.d/good.conf", Self.filter)
        var lines = "[DEFAULT]\nl0 = 0123456789\n"
        for i in 1...9 { lines += "l\(i) = " + String(repeating: "%(l\(i - 1))s", count: 10) + "\n" }
        lines += "[a]\nenabled = true\nfilter = good\nlogpath = /var/log/x.log\nignoreip = %(l9)s\n"
        lines += "[b]\nenabled = true\nfilter = good\nlogpath = /var/log/x.log\nignoreip = %(l3)s\n"
        dir.write("jail.conf", lines)
        let config = LoadedConfig.load(dir.path)
        let a = try #require(config.diagnostics.first { $0.jail == "a" })
        #expect(a.severity == .error && a.message.contains("expands to more than 1 MiB"))
        // 10,000 bytes is fine (and a warning for a bad ignoreip, not an error).
        #expect(config.jails.map(\.name) == ["b"])
    }

    @Test func maxLineLength() throws {
        let dir = TempDir()
        dir.write("filter.d/good.conf", Self.filter)
        dir.write(
            "jail.conf",
            "[a]\nenabled = true\nfilter = good\nlogpath = /var/log/x.log\nmaxlinelength = 16M\n"
                + "[b]\nenabled = true\nfilter = good\nlogpath = /var/log/x.log\nmaxlinelength = 12 bytes\n")
        let config = LoadedConfig.load(dir.path)
        #expect(config.jails.map(\.name) == ["a"])
        #expect(config.jails.first?.maxLineLength == 16 << 20)
        let b = try #require(config.diagnostics.first { $0.jail == "b" })
        #expect(b.message.contains("maxlinelength = 12 bytes") && b.location?.line == 10)
    }

    /// Debian's /etc/fail2ban (from the fail2ban package) loads as it is.
    @Test(.enabled(if: FileManager.default.fileExists(atPath: "/etc/fail2ban/jail.conf"), "needs Debian's fail2ban package"))
    func fail2banTreeUnchanged() throws {
        let config = LoadedConfig.load("/etc/fail2ban")
        #expect(!config.hasErrors, "\(config.diagnostics)")
        #expect(config.jails.contains { $0.name == "sshd" })
    }

    @Test func ownTreeWithUsersJailLocal() throws {
        // The repository's config/ with the jail.d/jail.local our users write.
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let dir = TempDir()
        try FileManager.default.removeItem(atPath: dir.path)
        try FileManager.default.copyItem(atPath: root.appendingPathComponent("config").path, toPath: dir.path)
        dir.write(
            "jail.d/jail.local",
            """
            [dovecot]
            enabled  = true
            port     = pop3,pop3s,imap,imaps,submission,465,sieve
            logpath  = %(dovecot_log)s
            backend  = auto
            maxretry = 2
            findtime = 1d
            bantime  = 12w
            """)
        let config = LoadedConfig.load(dir.path)
        #expect(!config.hasErrors, "\(config.diagnostics)")
        let dovecot = try #require(config.jails.first { $0.name == "dovecot" })
        #expect(dovecot.logPaths.map(\.pattern) == ["/var/log/mail.log"])
        #expect(dovecot.maxRetry == 2 && dovecot.findTime == 86400 && dovecot.banTime == 7_257_600)
        #expect(dovecot.ports.map(\.first) == [110, 995, 143, 993, 587, 465, 4190])
        #expect(dovecot.banAction == "nftables-multiport")
    }
}
