import FoundationEssentials
import Glibc
import Platform
import Synchronization
import Testing

@Suite struct FileDescriptorTests {
    /// Whether `fd` is open in this process.
    private func isOpen(_ fd: Int32) -> Bool { fcntl(fd, F_GETFD) != -1 }

    @Test func closesWhenItsOwnerGoes() throws {
        var raw: Int32 = -1
        do {
            let fd = try FileDescriptor.open("/dev/null", O_RDONLY)
            raw = fd.rawValue
            #expect(isOpen(raw))
            #expect(fcntl(raw, F_GETFD) & FD_CLOEXEC != 0)
        }
        #expect(!isOpen(raw))
    }

    @Test func relinquishedDescriptorsStayOpen() throws {
        let fd = try FileDescriptor.open("/dev/null", O_RDONLY)
        let raw = fd.relinquish()
        #expect(isOpen(raw))
        close(raw)
    }

    @Test func errorsKeepTheirErrno() {
        #expect(throws: Errno.noSuchFile) { _ = try FileDescriptor.open("/nonexistent/portcullis", O_RDONLY) }
        let e = Errno(EACCES)
        #expect(e.description.contains("errno 13"))
    }

    @Test func readsAndWritesWholeBuffers() throws {
        var ends: [Int32] = [0, 0]
        #expect(pipe(&ends) == 0)
        let reader = FileDescriptor(owning: ends[0])
        let writer = FileDescriptor(owning: ends[1])
        let text = Array("portcullis\n".utf8)
        try text.withUnsafeBytes { try writer.writeAll($0) }
        var buffer = [UInt8](repeating: 0, count: 64)
        let n = try buffer.withUnsafeMutableBytes { try reader.read(into: $0) }
        #expect(Array(buffer[0..<n]) == text)
    }
}

@Suite struct EventTests {
    @Test func epollReportsAnEventfdOnceSignalledAndNotAfterItIsDrained() throws {
        let epoll = try Epoll()
        let wake = try EventFD()
        try epoll.add(wake.rawValue, .input, data: 42)
        var seen: [UInt64] = []
        #expect(try epoll.wait(timeout: 0) { _, data in seen.append(data) } == 0)
        wake.signal()
        wake.signal()
        var readable = false
        let ready = try epoll.wait(timeout: 1000) { events, data in
            readable = events.contains(.input)
            seen.append(data)
        }
        #expect(ready == 1 && readable)
        #expect(seen == [42])
        wake.drain()
        #expect(try epoll.wait(timeout: 0) { _, _ in } == 0)
        try epoll.remove(wake.rawValue)
        #expect(throws: Errno(ENOENT)) { try epoll.remove(wake.rawValue) }
    }

    @Test func inotifyReportsAFileCreatedInAWatchedDirectory() throws {
        var template = Array("/tmp/portcullis-platform-XXXXXX".utf8CString)
        guard let made = mkdtemp(&template) else { Issue.record("mkdtemp"); return }
        let dir = String(cString: made)
        defer { unlink(dir + "/log"); rmdir(dir) }
        let inotify = try Inotify()
        _ = try inotify.addWatch(dir, mask: UInt32(IN_CREATE))
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 4096, alignment: 8)
        defer { buffer.deallocate() }
        #expect(try inotify.read(into: buffer) == 0)
        let fd = try FileDescriptor.open(dir + "/log", O_WRONLY | O_CREAT, mode: 0o600)
        _ = fd
        #expect(try inotify.read(into: buffer) > 0)
    }
}

@Suite struct ThreadTests {
    @Test func stoppableThreadWakesStopsAndJoins() throws {
        let thread = try StoppableThread(name: "platform-test")
        let wakes = Atomic<Int>(0)
        let ended = Atomic<Bool>(false)
        try thread.start {
            while !thread.isStopping {
                thread.waitForWake(timeout: nil)
                wakes.add(1, ordering: .relaxed)
            }
            ended.store(true, ordering: .relaxed)
        }
        // A wake-up without a stop returns from the wait (the body would otherwise wait without end).
        thread.wake()
        let deadline = Clock.monotonic() + 10
        while wakes.load(ordering: .relaxed) == 0 && Clock.monotonic() < deadline { usleep(10_000) }
        let woke = wakes.load(ordering: .relaxed)
        #expect(woke >= 1)
        thread.stop()
        // Joined: the body has returned.
        let returned = ended.load(ordering: .relaxed)
        #expect(returned)
        thread.stop()
    }

    @Test func waitForWakeReturnsAtItsTimeout() throws {
        let thread = try StoppableThread(name: "platform-test")
        let started = Clock.monotonic()
        thread.waitForWake(timeout: 0.05)
        #expect(Clock.monotonic() - started >= 0.04)
    }

    @Test func lockedSerialisesWriters() throws {
        let counter = Locked(0)
        let threads = try (0..<4).map { _ in
            try JoinableThread(name: "platform-lock") { for _ in 0..<10_000 { counter.withLock { $0 += 1 } } }
        }
        for t in threads { t.join() }
        #expect(counter.withLock { $0 } == 40_000)
    }
}

@Suite struct TextTests {
    @Test func pathsFollowNSStringsRules() {
        #expect(Path.directory(of: "/etc/fail2ban/jail.conf") == "/etc/fail2ban")
        #expect(Path.directory(of: "/etc/") == "/")
        #expect(Path.directory(of: "/etc") == "/")
        #expect(Path.directory(of: "jail.conf") == "")
        #expect(Path.directory(of: "a/b//") == "a")
        #expect(Path.lastComponent("/etc/fail2ban/") == "fail2ban")
        #expect(Path.lastComponent("/") == "/")
        #expect(Path.deletingExtension("/etc/filter.d/sshd.conf") == "/etc/filter.d/sshd")
        #expect(Path.deletingExtension("/etc/.hidden") == "/etc/.hidden")
        #expect(Path.deletingExtension("a.b/c") == "a.b/c")
        #expect(Path.appending("/etc/", "jail.conf") == "/etc/jail.conf")
        #expect(Path.appending("/", "etc") == "/etc")
        #expect(Path.appending("", "etc") == "etc")
        #expect(Path.isDirectory("/tmp") && !Path.isDirectory("/etc/hostname") && Path.exists("/etc/hostname"))
    }

    @Test func trimmingMatchesFoundationsSets() {
        #expect(" \tdovecot \u{00A0}".trimmingWhitespace() == "dovecot")
        #expect("\n x \n".trimmingWhitespace() == "\n x \n")
        #expect("\n x \r\n".trimmingWhitespaceAndNewlines() == "x")
        #expect("   ".trimmingWhitespace() == "")
    }

    @Test func formatsAsPrintfWould() {
        #expect(TextFormat.fixed(0.0005, digits: 3) == "0.001")
        #expect(TextFormat.fixed(2.5, digits: 0) == "3")
        #expect(TextFormat.fixed(-1.25, digits: 1) == "-1.3")
        #expect(TextFormat.fixed(12, digits: 2) == "12.00")
        #expect(TextFormat.hex(0x1F, width: 4) == "001F")
        #expect(TextFormat.padded("ab", to: 4) == "ab  " && TextFormat.padded("abcdef", to: 4) == "abcdef")
    }

    @Test func jsonValuesKeepIntegersAndNesting() throws {
        let text = #"{"a": 1, "b": 1.5, "c": [true, null, "x"], "d": {"e": "f"}}"#
        let value = try JSONDecoder().decode(JSONValue.self, from: Data(text.utf8))
        #expect(value["a"]?.numberText == "1")
        #expect(value["b"]?.numberText == "1.5")
        #expect(value["c"]?.array.count == 3 && value["c"]?.strings == ["x"])
        #expect(value["d"]?["e"]?.string == "f")
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        #expect(String(decoding: try encoder.encode(value["d"]!), as: UTF8.self) == #"{"e":"f"}"#)
    }
}

@Suite struct ProcessStatsTests {
    @Test func figuresFromProc() throws {
        let before = try #require(ProcessStats.current())
        // Hold a descriptor and use some CPU.
        let fd = try FileDescriptor.open("/dev/null", O_RDONLY)
        var x = 0.0
        for i in 0..<3_000_000 { x += Double(i).squareRoot() }
        let after = try #require(ProcessStats.current())
        #expect(x > 0)
        // (Other suites open and close descriptors meanwhile: no exact count.)
        #expect(after.openFileDescriptors >= 4 && before.openFileDescriptors >= 3)
        #expect(after.cpuSeconds >= before.cpuSeconds)
        #expect(after.startTime == before.startTime && abs(after.startTime - Clock.now()) < 86400)
        #expect(after.residentBytes > 1_000_000 && after.virtualBytes >= after.residentBytes)
        #expect(after.maxFileDescriptors > after.openFileDescriptors)
        _ = fd.rawValue
    }
}
