import Foundation
import Platform
import Testing

@testable import Engine
@testable import HTTP
@testable import Server

/// Every endpoint and every error status, against a live daemon on loopback.
@Suite(.serialized) struct APITests {
    @Test func healthAndJails() throws {
        let d = try LiveDaemon()
        defer { d.stop() }
        let h = d.tcp.get("/health")
        #expect(h.status == 200)
        #expect(h.json["status"] as? String == "ok")
        #expect(h.json["version"] as? String == PortcullisVersion.string)
        #expect(h.json["uptimeSeconds"] is NSNumber)

        let jails = d.tcp.get("/jails")
        #expect(jails.status == 200)
        let list = jails.json["jails"] as? [[String: Any]] ?? []
        #expect(list.map { $0["name"] as? String } == ["dovecot"])
        #expect(Set(list.first?.keys.map { $0 } ?? []) == ["name", "enabled", "currentlyFailed", "totalFailed", "currentlyBanned", "totalBanned"])

        let jail = d.tcp.get("/jails/dovecot")
        #expect(jail.status == 200)
        #expect(jail.header("Content-Type") == "application/json")
        let o = jail.json
        #expect(o["name"] as? String == "dovecot")
        let settings = o["settings"] as? [String: Any] ?? [:]
        #expect(settings["maxretry"] as? Int == 2)
        #expect(settings["ports"] as? [String] == ["pop3", "pop3s", "1100"])
        #expect(settings["protocol"] as? String == "tcp")
        #expect(settings["backend"] as? String == "inotify")
        #expect((o["filter"] as? [String: Any])?["files"] as? [String] == [d.log])

        let missing = d.tcp.get("/jails/nope")
        #expect(missing.status == 404)
        #expect(missing.header("Content-Type") == "application/problem+json")
        #expect(missing.json["status"] as? Int == 404)
        #expect(missing.json["title"] as? String == "Not Found")
        #expect((missing.json["detail"] as? String)?.contains("nope") == true)
    }

    @Test func failuresFromTheLogShowInStatus() throws {
        let d = try LiveDaemon()
        defer { d.stop() }
        let h = FileHandle(forWritingAtPath: d.log)!
        h.seekToEndOfFile()
        let now = RFC3339.format(Clock.now())
        h.write(
            Data(
                "\(now) mail dovecot: pop3-login: Disconnected (auth failed, 1 attempts in 2 secs): user=<bob>, method=PLAIN, rip=198.51.100.23, lip=127.0.0.1, session=<a>\n"
                    .utf8))
        try h.close()
        var failed = 0
        for _ in 0..<50 {
            let f = d.tcp.get("/jails/dovecot").json["filter"] as? [String: Any]
            failed = f?["currentlyFailed"] as? Int ?? 0
            if failed == 1 { break }
            usleep(100_000)
        }
        #expect(failed == 1)
    }

    @Test func banListUnbanOverTheUnixSocket() throws {
        let d = try LiveDaemon()
        defer { d.stop() }
        let created = try d.unix.request("POST", "/jails/dovecot/bans", body: #"{"ip": "203.0.113.7", "bantime": "1h"}"#)
        #expect(created.status == 201, "\(created.text)")
        #expect(created.header("Location") == "/bans/203.0.113.7")
        #expect(created.json["ip"] as? String == "203.0.113.7")
        #expect(created.json["jail"] as? String == "dovecot")
        let bannedAt = ISO8601.parse(created.json["bannedAt"] as? String ?? "") ?? 0
        let expiresAt = ISO8601.parse(created.json["expiresAt"] as? String ?? "") ?? 0
        #expect(expiresAt - bannedAt == 3600)

        // Again: already banned, the ban in force is returned.
        let again = try d.unix.request("POST", "/jails/dovecot/bans", body: #"{"ip": "203.0.113.7"}"#)
        #expect(again.status == 200)

        let permanent = try d.unix.request("POST", "/jails/dovecot/bans", body: #"{"ip": "2001:db8::7", "bantime": -1}"#)
        #expect(permanent.status == 201)
        #expect(permanent.json["expiresAt"] is NSNull)

        let one = d.tcp.get("/bans/203.0.113.7")
        #expect(one.status == 200)
        #expect((one.json["bans"] as? [[String: Any]])?.count == 1)
        // IPv6 plainly and percent-encoded.
        #expect(d.tcp.get("/bans/2001:db8::7").status == 200)
        #expect(d.tcp.get("/bans/2001%3Adb8%3A%3A7").status == 200)
        #expect(d.tcp.get("/bans/198.51.100.99").status == 404)
        #expect(d.tcp.get("/bans/not-an-ip").status == 400)
        #expect(d.tcp.get("/bans/1.2.3.4%00x").status == 400)

        let jail = d.tcp.get("/jails/dovecot").json["actions"] as? [String: Any]
        #expect(jail?["bannedIPs"] as? [String] == ["203.0.113.7", "2001:db8::7"])
        #expect(jail?["currentlyBanned"] as? Int == 2)

        let removed = try d.unix.request("DELETE", "/bans/203.0.113.7")
        #expect(removed.status == 200)
        #expect(removed.json["unbannedFrom"] as? [String] == ["dovecot"])
        #expect(try d.unix.request("DELETE", "/bans/203.0.113.7").status == 404)
        #expect(try d.unix.request("DELETE", "/bans/bogus").status == 400)

        #expect(try d.unix.request("DELETE", "/jails/dovecot/bans/2001:db8::7").status == 200)
        #expect(try d.unix.request("DELETE", "/jails/dovecot/bans/2001:db8::7").status == 404)
        #expect(try d.unix.request("DELETE", "/jails/nope/bans/2001:db8::7").status == 404)
        #expect(try d.unix.request("DELETE", "/jails/dovecot/bans/x").status == 400)
        #expect(d.daemon.banManager.activeCount == 0)
        // The store agrees: nothing to restore.
        #expect(try d.daemon.store!.activeBanSummaries(now: Clock.now()).isEmpty)
    }

    @Test(arguments: [
        ("", 400), ("not json", 400), ("[]", 400), (#"{"ip": 7}"#, 400), (#"{"ip": "300.1.1.1"}"#, 400),
        (#"{"ip": "203.0.113.8", "bantime": "soon"}"#, 400), (#"{"ip": "203.0.113.8", "bantime": 0}"#, 400),
        (#"{"ip": "203.0.113.8", "bantime": true}"#, 400), (#"{"ip": "203.0.113.8", "extra": 1}"#, 400),
        (#"{"ip": "203.0.113.0/33"}"#, 400), (#"{"ip": "203.0.113.0/024"}"#, 400), (#"{"ip": "192.0.2.250"}"#, 409), (#"{"ip": "127.0.0.5"}"#, 409),
        // Strict JSON: a duplicate member, a trailing comma, a comment, trailing data.
        (#"{"ip": "203.0.113.8", "ip": "203.0.113.9"}"#, 400), (#"{"ip": "203.0.113.8",}"#, 400),
        (#"{"ip": "203.0.113.8" /* x */}"#, 400), (#"{"ip": "203.0.113.8"} {}"#, 400),
        // Addresses no connection comes from.
        (#"{"ip": "0.0.0.0"}"#, 409), (#"{"ip": "255.255.255.255"}"#, 409), (#"{"ip": "::"}"#, 409),
        (#"{"ip": "224.0.0.1"}"#, 409), (#"{"ip": "ff02::1"}"#, 409),
        // Strings outside openapi.yaml's pattern, and a duration past 200 years.
        (#"{"ip": "203.0.113.8", "bantime": "1year-6mo"}"#, 400), (#"{"ip": "203.0.113.8", "bantime": "2*3600"}"#, 400),
        (#"{"ip": "203.0.113.8", "bantime": 18417024001}"#, 400), (#"{"ip": "203.0.113.8", "bantime": "0"}"#, 400),
    ])
    func badBansAreRefused(_ body: String, _ status: Int) throws {
        let d = try LiveDaemon()
        defer { d.stop() }
        let r = try d.unix.request("POST", "/jails/dovecot/bans", body: body)
        #expect(r.status == status, "\(body): \(r.text)")
        #expect(r.header("Content-Type") == "application/problem+json")
        if status == 409 { #expect((r.json["detail"] as? String).map { $0.contains("ignore") || $0.contains("cannot be banned") } == true) }
        #expect(d.daemon.banManager.activeCount == 0)
    }

    /// Headers that must be single, a missing Content-Type, this host's own loopback address, and, without
    /// tokens, a Host that is not a loopback name (DNS rebinding).
    @Test func strictHeadersOwnAddressAndHost() throws {
        let d = try LiveDaemon(jail: "ignoreself = false\nignoreip =")
        defer { d.stop() }
        func raw(_ request: String, unix: Bool = true) throws -> (status: Int, text: String) {
            let c = unix ? try RawConnection(unixPath: d.socketPath) : try RawConnection(port: d.port)
            c.send(request)
            let text = c.readAll()
            return (Int(text.split(separator: " ").dropFirst().first ?? "") ?? 0, text)
        }
        let body = #"{"ip": "203.0.113.8"}"#
        let twoTypes = try raw(
            "POST /jails/dovecot/bans HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Type: text/plain\r\nContent-Length: \(body.utf8.count)\r\nConnection: close\r\n\r\n\(body)"
        )
        #expect(twoTypes.status == 400 && twoTypes.text.contains("more than one content-type"))
        let noType = try raw("POST /jails/dovecot/bans HTTP/1.1\r\nHost: x\r\nContent-Length: \(body.utf8.count)\r\nConnection: close\r\n\r\n\(body)")
        #expect(noType.status == 400 && noType.text.contains("Content-Type is missing"))
        let twoAuth = try raw(
            "GET /jails HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer a\r\nAuthorization: Bearer b\r\nConnection: close\r\n\r\n", unix: false)
        #expect(twoAuth.status == 400 && twoAuth.text.contains("more than one authorization"))
        #expect(d.daemon.banManager.activeCount == 0)
        let own = try d.unix.request("POST", "/jails/dovecot/bans", body: #"{"ip": "127.0.0.1"}"#)
        #expect(own.status == 409 && own.text.contains("own loopback address"))
        // Another loopback address (a test's own host on lo) may be banned.
        #expect(try d.unix.request("POST", "/jails/dovecot/bans", body: #"{"ip": "127.0.0.66"}"#).status == 201)
        // Token-less TCP: a page on evil.example rebound to 127.0.0.1 gets nothing.
        for host in ["evil.example", "evil.example:9191", "127.0.0.1.evil.example", "[2001:db8::1]:80", "10.0.0.1"] {
            let r = try raw("GET /jails HTTP/1.1\r\nHost: \(host)\r\nConnection: close\r\n\r\n", unix: false)
            #expect(r.status == 421, "\(host): \(r.text)")
        }
        for host in ["localhost", "127.0.0.1:\(d.port)", "[::1]:\(d.port)", "LOCALHOST:1", "127.1.2.3"] {
            let r = try raw("GET /jails HTTP/1.1\r\nHost: \(host)\r\nConnection: close\r\n\r\n", unix: false)
            #expect(r.status == 200, "\(host): \(r.text)")
        }
    }

    /// openapi.yaml's bantime pattern and the server agree on every string.
    @Test func banTimePatternIsTheServers() throws {
        let yaml = try String(contentsOfFile: LiveDaemon.repoConfig + "/../openapi.yaml", encoding: .utf8)
        let line = try #require(yaml.split(separator: "\n").first { $0.contains("pattern: \"^(-1|[1-9]") })
        let pattern = String(line.split(separator: "\"")[1]).replacingOccurrences(of: "\\\\", with: "\\")
        let regex = try NSRegularExpression(pattern: pattern)
        let samples = [
            "-1", "1", "3600", "1h", "12w", "1h30m", "1d 12h", "1d  12h", "2mo", "1y", "0", "01", "1x", "1h ",
            " 1h", "-2", "1.5h", "1hour", "2*3600", "1year-6mo", "", "h", "1h30", "999999999999w", "9999999999999",
            "1m1m1m1m1m1m1m1m", "1m1m1m1m1m1m1m1m1m", "1mo2", "1 2", "1 2 3 4 5 6 7 8", "1 2 3 4 5 6 7 8 9", "1h 2", "0s", "00",
        ]
        for sample in samples {
            let byRegex = regex.firstMatch(in: sample, range: NSRange(sample.startIndex..., in: sample)) != nil
            #expect(byRegex == BanRequest.matchesPattern(sample), "'\(sample)': openapi \(byRegex), server \(!byRegex)")
        }
    }

    @Test func unknownJailAndWrongContentType() throws {
        let d = try LiveDaemon()
        defer { d.stop() }
        #expect(try d.unix.request("POST", "/jails/nope/bans", body: #"{"ip": "203.0.113.8"}"#).status == 404)
        // A form body is refused with 415 (over the socket, where mutations are allowed).
        let socket = try Sockets.connectUnix(d.socketPath)
        let fd = socket.rawValue
        let req =
            "POST /jails/dovecot/bans HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 14\r\nConnection: close\r\n\r\nip=203.0.113.8"
        _ = Array(req.utf8).withUnsafeBytes { send(fd, $0.baseAddress, $0.count, 0) }
        var buf = [UInt8](repeating: 0, count: 4096)
        let n = recv(fd, &buf, buf.count, 0)
        #expect(String(decoding: buf[0..<max(n, 0)], as: UTF8.self).hasPrefix("HTTP/1.1 415 "))
    }

    @Test func paginationIsStableAndComplete() throws {
        let d = try LiveDaemon()
        defer { d.stop() }
        for i in 1...250 {
            _ = try d.daemon.banManager.banManually(jail: "dovecot", ip: IPNetwork("198.51.100.\(i)")!)
        }
        var seen: [String] = []
        var cursor: String? = nil
        var pages = 0
        repeat {
            let r = d.tcp.get("/bans?limit=100" + (cursor.map { "&after=" + $0 } ?? ""))
            #expect(r.status == 200)
            let bans = r.json["bans"] as? [[String: Any]] ?? []
            seen += bans.compactMap { $0["ip"] as? String }
            cursor = r.json["next"] as? String
            pages += 1
            // A ban lifted between pages does not shift the next page.
            if pages == 1 { _ = try d.daemon.banManager.unban(jail: "dovecot", ip: IPNetwork("198.51.100.50")!) }
        } while cursor != nil && pages < 10
        #expect(pages == 3)
        #expect(seen.count == 250)
        #expect(Array(seen.prefix(3)) == ["198.51.100.1", "198.51.100.2", "198.51.100.3"])
        #expect(Set(seen).count == 250)
        #expect(d.tcp.get("/bans?jail=dovecot&limit=1").json["next"] as? String != nil)
        #expect(d.tcp.get("/bans?jail=nope").status == 404)
        #expect(d.tcp.get("/bans?limit=0").status == 400)
        #expect(d.tcp.get("/bans?limit=1001").status == 400)
        #expect(d.tcp.get("/bans?limit=x").status == 400)
        #expect(d.tcp.get("/bans?after=garbage").status == 400)
    }

    @Test func methodsHeadAndUnknownPaths() throws {
        let d = try LiveDaemon()
        defer { d.stop() }
        let r = try d.tcp.request("PUT", "/jails")
        #expect(r.status == 405)
        #expect(r.header("Allow") == "GET, HEAD")
        #expect(try d.tcp.request("GET", "/reload").header("Allow") == "POST")
        #expect(try d.tcp.request("PATCH", "/bans/192.0.2.1").header("Allow") == "GET, HEAD, DELETE")
        let head = try d.tcp.request("HEAD", "/jails/dovecot")
        #expect(head.status == 200)
        #expect(head.body.isEmpty)
        #expect(Int(head.header("Content-Length") ?? "") == d.tcp.get("/jails/dovecot").body.count)
        #expect(d.tcp.get("/").status == 404)
        #expect(d.tcp.get("/jails/dovecot/extra/deep/path").status == 404)
    }

    @Test func metricsAreInPrometheusFormat() throws {
        let d = try LiveDaemon()
        defer { d.stop() }
        _ = try d.daemon.banManager.banManually(jail: "dovecot", ip: IPNetwork("203.0.113.9")!)
        _ = try d.daemon.banManager.banManually(jail: "dovecot", ip: IPNetwork("2001:db8::/64")!)
        #expect(try d.unix.request("POST", "/allowlist", body: #"{"ip": "198.51.100.0/24"}"#).status == 201)
        _ = d.tcp.get("/nope")
        let m = d.tcp.get("/metrics")
        #expect(m.status == 200)
        #expect(m.header("Content-Type")?.hasPrefix("text/plain; version=0.0.4") == true)
        let text = m.text
        for line in [
            "portcullis_bans_active{jail=\"dovecot\"} 2", "portcullis_bans_total{jail=\"dovecot\"} 2", "portcullis_allowlist_entries 1",
            "portcullis_lines_read_total{jail=\"dovecot\"} 0", "portcullis_http_requests_total{code=\"404\"} 1",
            "# TYPE portcullis_failures_total counter", "portcullis_watcher_lag_bytes{jail=\"dovecot\"} 0",
            "portcullis_unbans_total{jail=\"dovecot\"} 0",
        ] {
            #expect(text.contains(line + "\n"), "missing: \(line)")
        }
        // Every sample line is name{labels} value.
        for line in text.split(separator: "\n") where !line.hasPrefix("#") {
            #expect(line.wholeMatch(of: /[a-z_]+(\{[a-z]+="[^"]*"\})? -?[0-9.e+]+/) != nil, "\(line)")
        }
        // The standard process metrics, read from /proc: this test process is the daemon's.
        #expect(text.contains("portcullis_build_info{version=\"\(PortcullisVersion.string)\"} 1\n"))
        #expect(!text.contains("portcullis_uptime_seconds"))
        func value(_ name: String) -> Double? {
            text.split(separator: "\n").first { $0.hasPrefix(name + " ") }.flatMap { Double($0.split(separator: " ")[1]) }
        }
        let start = try #require(value("process_start_time_seconds"))
        #expect(abs(start - Clock.now()) < 3600, "the test process started within the hour: \(start)")
        #expect(try #require(value("process_resident_memory_bytes")) > 1_000_000)
        #expect(try #require(value("process_cpu_seconds_total")) > 0)
        let open = try #require(value("process_open_fds")), max = try #require(value("process_max_fds"))
        #expect(open >= 3 && open < max, "\(open) of \(max)")
    }

    @Test func reloadRereadsTheConfiguration() throws {
        let d = try LiveDaemon()
        defer { d.stop() }
        d.dir.write("conf/jail.d/test.local", "[dovecot]\nenabled = true\nlogpath = \(d.log)\nmaxretry = 5\nbanaction = dry-run\n")
        let r = try d.unix.request("POST", "/reload")
        #expect(r.status == 200)
        #expect(r.json["jails"] as? [String] == ["dovecot"])
        #expect(r.json["errors"] as? [String] == [])
        #expect((d.tcp.get("/jails/dovecot").json["settings"] as? [String: Any])?["maxretry"] as? Int == 5)
    }
}

/// Who may do what.
@Suite(.serialized) struct AuthorisationTests {
    @Test func tokensDecide() throws {
        let d = try LiveDaemon(tokens: true)
        defer { d.stop() }
        #expect(d.tcp.get("/health").status == 200)  // open: container health checks
        let none = d.tcp.get("/jails")
        #expect(none.status == 401)
        #expect(none.header("WWW-Authenticate")?.hasPrefix("Bearer") == true)
        #expect(d.tcp(token: "wrong-token-0123456789abcdef").get("/jails").status == 401)
        #expect(d.tcp(token: LiveDaemon.readToken).get("/jails").status == 200)
        #expect(d.tcp(token: LiveDaemon.readToken).get("/metrics").status == 200)
        let refused = try d.tcp(token: LiveDaemon.readToken).request("POST", "/jails/dovecot/bans", body: #"{"ip": "203.0.113.7"}"#)
        #expect(refused.status == 403)
        #expect(d.daemon.banManager.activeCount == 0)
        let made = try d.tcp(token: LiveDaemon.adminToken).request("POST", "/jails/dovecot/bans", body: #"{"ip": "203.0.113.7"}"#)
        #expect(made.status == 201)
        #expect(try d.tcp(token: LiveDaemon.readToken).request("DELETE", "/bans/203.0.113.7").status == 403)
        #expect(try d.tcp(token: LiveDaemon.adminToken).request("DELETE", "/bans/203.0.113.7").status == 200)
        #expect(try d.tcp.request("POST", "/reload").status == 401)
        // The socket needs no token: its file permissions are the check.
        #expect(try d.unix.request("POST", "/reload").status == 200)
        let mode = (try FileManager.default.attributesOfItem(atPath: d.socketPath)[.posixPermissions] as? Int) ?? 0
        #expect(mode == 0o660)
    }

    @Test func tokensRotateOnReload() throws {
        let d = try LiveDaemon(tokens: true)
        defer { d.stop() }
        let fresh = "rotated-admin-token-0123456789"
        d.dir.write("admin.token", fresh + "\n")
        #expect(try d.tcp(token: LiveDaemon.adminToken).request("POST", "/reload").status == 200)
        #expect(d.tcp(token: LiveDaemon.adminToken).get("/jails").status == 401)
        #expect(d.tcp(token: fresh).get("/jails").status == 200)
        // A broken token file keeps the tokens in force and says so.
        d.dir.write("admin.token", "short\n")
        let r = try d.unix.request("POST", "/reload")
        #expect((r.json["errors"] as? [String])?.first?.contains("admin_token_file") == true)
        #expect(d.tcp(token: fresh).get("/jails").status == 200)
    }

    @Test func withoutTokensTCPIsReadOnly() throws {
        let d = try LiveDaemon()
        defer { d.stop() }
        #expect(d.tcp.get("/jails").status == 200)
        let r = try d.tcp.request("DELETE", "/bans/203.0.113.7")
        #expect(r.status == 403)
        #expect((r.json["detail"] as? String)?.contains("admin_token_file") == true)
    }

    @Test func nonLoopbackWithoutTokensRefusesToStart() throws {
        #expect(throws: AdminServer.SetupError.self) { try LiveDaemon(api: "listen = 0.0.0.0:0\n") }
    }

    @Test func aSecondDaemonOnTheSameSocketIsRefused() throws {
        let d = try LiveDaemon()
        defer { d.stop() }
        var settings = APISettings()
        settings.listen = []
        settings.socket = d.socketPath
        // The listener's own error: the socket path and what is wrong there.
        #expect {
            try AdminServer(daemon: d.daemon, settings: settings, control: DispatchQueue(label: "x"), log: Logger(level: .critical))
        } throws: { error in
            (error as? SocketError)?.description == "API socket \(d.socketPath): another Portcullis answers there (is the daemon already running?)"
        }
        #expect(d.unix.get("/health").status == 200)
    }
}
