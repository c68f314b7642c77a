import Foundation
import TestSupport
import Testing

/// The `portcullis` executable, run as a user would.
@Suite("command line")
struct CommandLineTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    static let config = root.appendingPathComponent("config").path

    @Test func regexOnOneLineWithALiteralFailregex() throws {
        let r = try Binary.run([
            "regex", "--config", Self.config,
            "Nov 28 06:10:51 host sshd[1]: Failed password for root from 192.0.2.5 port 22 ssh2",
            #"Failed password for \S+ from <HOST>"#,
        ])
        #expect(r.status == 0)
        #expect(r.stdout.contains("Use      single line : "))
        #expect(r.stdout.contains("Lines: 1 lines, 0 ignored, 1 matched, 0 missed"))
    }

    @Test func regexJSONHasOneObjectPerLine() throws {
        let dir = TempDir()
        let log = dir.write(
            "mail.log",
            """
            Nov 28 06:10:51 pop3-login: Info: Disconnected (auth failed, 1 attempts in 2 secs): user=<bob>, method=PLAIN, rip=192.0.2.10, lip=127.0.0.1, session=<a>
            # a comment

            garbage \u{1}\u{2} line
            """ + "\n")
        let r = try Binary.run(["regex", "--config", Self.config, "--json", "--now", "2026-11-28T12:00:00Z", log, "dovecot"])
        #expect(r.status == 0)
        let objects = r.stdout.split(separator: "\n").map { try! JSONSerialization.jsonObject(with: Data($0.utf8)) as! [String: Any] }
        #expect(objects.count == 4)
        #expect(objects[0]["match"] as? Bool == true)
        #expect(objects[0]["host"] as? String == "192.0.2.10")
        #expect((objects[0]["fields"] as? [String: Any])?["user"] as? String == "bob")
        #expect(objects.map { $0["line"] as? Int } == [1, 2, 3, 4])
        #expect(objects[3]["match"] as? Bool == false)
    }

    /// The reader thread that finds dates one stage ahead (`ExaminePipeline`) changes nothing in what is
    /// reported: the same text report and the same JSON as one thread, over batches, a line longer than a batch,
    /// invalid UTF-8, CRLF, comments, lines without dates and an unterminated last line.
    @Test func regexOnTwoThreadsReportsWhatOneThreadDoes() throws {
        var log = Data()
        func add(_ s: String) { log.append(contentsOf: Array(s.utf8)) }
        for i in 0..<10_000 {
            let ip = "192.0.2.\(i % 250 + 1)"
            switch i % 13 {
            case 0:
                add(
                    "2026-11-28T06:\(10 + i % 40):51.\(100_000 + i)+00:00 mail dovecot: pop3-login: Disconnected (auth failed, 1 attempts in 2 secs): user=<u\(i)>, method=PLAIN, rip=\(ip), lip=127.0.0.1, session=<a>\n"
                )
            case 1: add("Nov 28 06:10:\(10 + i % 50) mail dovecot: imap-login: Login: user=<x>, method=PLAIN, rip=\(ip), lip=127.0.0.1\n")
            case 2: add("# comment \(i)\n")
            case 3: add("\n")
            case 4: add("   \t \n")
            case 5:
                add(
                    "2026-11-28T06:11:00+00:00 mail dovecot: pop3-login: Aborted login (auth failed, 1 attempts): user=<\u{e9}l\u{e8}ve>, rip=\(ip), lip=127.0.0.1\r\n"
                )
            case 6:
                add("2026-11-28T06:11:01+00:00 mail dovecot: pop3-login: Disconnected (auth failed, 2 attempts in 2 secs): user=<")
                log.append(contentsOf: [0xff, 0xfe, 0x80])
                add(">, method=PLAIN, rip=\(ip), lip=127.0.0.1\n")
            case 7: add("no date here: Disconnected (auth failed, 1 attempts): rip=\(ip)\n")
            case 8: add("[28/Nov/2026:06:12:00 +0000] Disconnected (auth failed, 1 attempts): rip=\(ip)\n")
            default: add("2026-11-28T06:12:\(10 + i % 50).5+00:00 mail postfix/smtpd[\(i)]: connect from unknown[\(ip)]\n")
            }
            if i == 5_000 {
                add(
                    "2026-11-28T06:13:00+00:00 mail dovecot: pop3-login: Disconnected (auth failed, 1 attempts in 2 secs): user=<big"
                        + String(repeating: "x", count: 600 << 10) + ">, rip=198.51.100.7, lip=127.0.0.1\n")
            }
        }
        add("2026-11-28T06:14:00+00:00 mail dovecot: pop3-login: Disconnected (auth failed): rip=198.51.100.8")
        let dir = TempDir()
        let path = dir.url.appendingPathComponent("mail.log").path
        try log.write(to: URL(fileURLWithPath: path))
        func withoutTiming(_ s: String) -> String { s.split(separator: "\n").filter { !$0.hasPrefix("[processed in") }.joined(separator: "\n") }
        for extra in [["--print-all-matched"], ["--json"]] {
            let args = ["regex", "--config", Self.config, "--now", "2026-11-28T12:00:00Z"] + extra + [path, "dovecot"]
            let two = try Binary.run(args)
            let one = try Binary.run(args + ["--one-thread"])
            #expect(two.status == 0 && one.status == 0, "\(two.stderr) \(one.stderr)")
            #expect(withoutTiming(two.stdout) == withoutTiming(one.stdout), "\(extra)")
            if extra == ["--json"] {
                #expect(two.stdout.split(separator: "\n").count == 10_000 + 1)
            } else {
                #expect(two.stdout.contains("xxx>, rip=198.51.100.7, lip=127.0.0.1"))
            }
        }
    }

    @Test func regexErrors() throws {
        let bad = try Binary.run(["regex", "--config", Self.config, "x", "^broken ( <HOST>"])
        #expect(bad.status != 0)
        #expect(bad.stderr.contains("missing closing parenthesis"))
        let opts = try Binary.run(["regex", "--config", Self.config, "x", "dovecot[mode=aggressive"])
        // Unbalanced brackets make no filter name, so it is a literal failregex, which does not compile.
        #expect(opts.status == 1)
        #expect(opts.stderr.contains("does not compile") && opts.stderr.contains("dovecot[mode=aggressive"))
        let now = try Binary.run(["regex", "--now", "yesterday", "x", "y"])
        #expect(now.status == 2, "a usage error")
        #expect(now.stderr.contains("--now"))
    }

    @Test func checkReportsProblemsAndExitCode() throws {
        let dir = TempDir()
        _ = dir.write("filter.d/f.conf", "[Definition]\nfailregex = ^x from <HOST>\n")
        _ = dir.write(
            "jail.conf",
            "[a]\nenabled = true\nfilter = f\nlogpath = /nonexistent.log\nmaxretry = lots\n[b]\nenabled = true\nfilter = f\nlogpath = /nonexistent.log\n")
        let r = try Binary.run(["check", "--config", dir.url.path])
        #expect(r.status == 1)
        #expect(r.stdout.contains("jail.conf:5: jail 'a': maxretry must be a whole number, not 'lots'"))
        #expect(r.stdout.contains("[b]"))
        let ok = try Binary.run(["check", "--config", Self.config])
        #expect(ok.status == 0, "\(ok.stdout)")
    }

    @Test func serveCountsFailuresAndStopsOnSIGTERM() throws {
        let dir = TempDir()
        let log = dir.write("mail.log", "")
        try FileManager.default.removeItem(at: dir.url)
        try FileManager.default.copyItem(atPath: Self.config, toPath: dir.url.path)
        _ = dir.write("mail.log", "")
        _ = dir.write(
            "portcullis.local", "[Definition]\ndbfile = \(dir.url.path)/portcullis.sqlite3\n[api]\nlisten = 127.0.0.1:0\nsocket = \(dir.url.path)/api.sock\n")
        _ = dir.write(
            "jail.d/test.local",
            """
            [dovecot]
            enabled = true
            logpath = \(log)
            maxretry = 2
            banaction = dry-run
            """)
        let process = Process()
        process.executableURL = Binary.url
        process.arguments = ["serve", "--config", dir.url.path]
        let err = Pipe()
        process.standardError = err
        process.standardOutput = FileHandle.nullDevice
        try process.run()
        defer { if process.isRunning { process.terminate() } }
        // Ready once its API socket is there (no fixed sleep: a sanitizer build on a loaded machine is slow).
        let socket = dir.url.path + "/api.sock"
        for _ in 0..<400 where !FileManager.default.fileExists(atPath: socket) { usleep(50_000) }
        let handle = FileHandle(forWritingAtPath: log)!
        handle.seekToEndOfFile()
        for i in 0..<2 {
            handle.write(
                Data(
                    "Nov 28 06:10:5\(i) pop3-login: Info: Disconnected (auth failed, 1 attempts in 2 secs): user=<bob>, method=PLAIN, rip=192.0.2.10, lip=127.0.0.1, session=<s\(i)>\n"
                        .utf8))
        }
        try handle.close()
        for _ in 0..<400 {
            if let r = try? Binary.run(["status", "dovecot", "--socket", socket]), r.stdout.contains("192.0.2.10") { break }
            usleep(50_000)
        }
        kill(process.processIdentifier, SIGTERM)
        process.waitUntilExit()
        let output = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        #expect(process.terminationStatus == 0)
        #expect(output.contains("[dovecot] Ban 192.0.2.10"), "\(output)")
        #expect(output.contains("Portcullis stopped"))
    }

    @Test func serveRefusesAJournalJailClearly() throws {
        let dir = TempDir()
        _ = dir.write("filter.d/f.conf", "[Definition]\nfailregex = ^x from <HOST>\n")
        _ = dir.write("jail.conf", "[sshd]\nenabled = true\nfilter = f\nbackend = systemd\nlogpath = /x\n")
        let r = try Binary.run(["serve", "--config", dir.url.path])
        #expect(r.status == 1)
        #expect(r.stderr.contains("no systemd journal in a container"))
        #expect(r.stderr.contains("no jail could start"))
    }
}
