import Foundation
import Testing

/// The `portcullis` executable, run as a user would.
@Suite("command line")
struct CommandLineTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    static let config = root.appendingPathComponent("config").path

    @Test func regexOnOneLineWithALiteralFailregex() throws {
        let r = try Binary.run(["regex", "--config", Self.config,
                                "Nov 28 06:10:51 host sshd[1]: Failed password for root from 192.0.2.5 port 22 ssh2",
                                #"Failed password for \S+ from <HOST>"#])
        #expect(r.status == 0)
        #expect(r.stdout.contains("Use      single line : "))
        #expect(r.stdout.contains("Lines: 1 lines, 0 ignored, 1 matched, 0 missed"))
    }

    @Test func regexJSONHasOneObjectPerLine() throws {
        let dir = try TemporaryDirectory()
        let log = try dir.file("mail.log", """
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

    @Test func regexErrors() throws {
        let bad = try Binary.run(["regex", "--config", Self.config, "x", "^broken ( <HOST>"])
        #expect(bad.status != 0)
        #expect(bad.stderr.contains("missing closing parenthesis"))
        let opts = try Binary.run(["regex", "--config", Self.config, "x", "dovecot[mode=aggressive"])
        #expect(opts.status != 0 || opts.stdout.contains("failregex line"))
        let now = try Binary.run(["regex", "--now", "yesterday", "x", "y"])
        #expect(now.status == 64 || now.status == 2 || now.status == 1)
        #expect(now.stderr.contains("--now"))
    }

    @Test func checkReportsProblemsAndExitCode() throws {
        let dir = try TemporaryDirectory()
        _ = try dir.file("filter.d/f.conf", "[Definition]\nfailregex = ^x from <HOST>\n")
        _ = try dir.file("jail.conf", "[a]\nenabled = true\nfilter = f\nlogpath = /nonexistent.log\nmaxretry = lots\n[b]\nenabled = true\nfilter = f\nlogpath = /nonexistent.log\n")
        let r = try Binary.run(["check", "--config", dir.url.path])
        #expect(r.status == 1)
        #expect(r.stdout.contains("jail.conf:5: jail 'a': maxretry must be a whole number, not 'lots'"))
        #expect(r.stdout.contains("[b]"))
        let ok = try Binary.run(["check", "--config", Self.config])
        #expect(ok.status == 0, "\(ok.stdout)")
    }

    @Test func serveCountsFailuresAndStopsOnSIGTERM() throws {
        let dir = try TemporaryDirectory()
        let log = try dir.file("mail.log", "")
        try FileManager.default.removeItem(at: dir.url)
        try FileManager.default.copyItem(atPath: Self.config, toPath: dir.url.path)
        _ = try dir.file("mail.log", "")
        _ = try dir.file("portcullis.local", "[Definition]\ndbfile = \(dir.url.path)/portcullis.sqlite3\n[api]\nlisten = 127.0.0.1:0\nsocket = \(dir.url.path)/api.sock\n")
        _ = try dir.file("jail.d/test.local", """
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
        usleep(500_000)
        let handle = FileHandle(forWritingAtPath: log)!
        handle.seekToEndOfFile()
        for i in 0..<2 {
            handle.write(Data("Nov 28 06:10:5\(i) pop3-login: Info: Disconnected (auth failed, 1 attempts in 2 secs): user=<bob>, method=PLAIN, rip=192.0.2.10, lip=127.0.0.1, session=<s\(i)>\n".utf8))
        }
        try handle.close()
        usleep(700_000)
        kill(process.processIdentifier, SIGTERM)
        process.waitUntilExit()
        let output = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        #expect(process.terminationStatus == 0)
        #expect(output.contains("[dovecot] Ban 192.0.2.10"), "\(output)")
        #expect(output.contains("Portcullis stopped"))
    }

    @Test func serveRefusesAJournalJailClearly() throws {
        let dir = try TemporaryDirectory()
        _ = try dir.file("filter.d/f.conf", "[Definition]\nfailregex = ^x from <HOST>\n")
        _ = try dir.file("jail.conf", "[sshd]\nenabled = true\nfilter = f\nbackend = systemd\nlogpath = /x\n")
        let r = try Binary.run(["serve", "--config", dir.url.path])
        #expect(r.status == 1)
        #expect(r.stderr.contains("no systemd journal in a container"))
        #expect(r.stderr.contains("no jail could start"))
    }
}
