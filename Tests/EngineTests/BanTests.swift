import Foundation
import Platform
import TestSupport
import Testing

@testable import Engine

@Suite("ban time policy")
struct BanTimePolicyTests {
    @Test func banTimeSaysPermanentInItsType() {
        #expect(BanTime(fail2banSeconds: -1) == .permanent && BanTime(fail2banSeconds: -5) == .permanent)
        #expect(BanTime(fail2banSeconds: 600) == .seconds(600))
        #expect(BanTime.permanent.fail2banSeconds == -1 && BanTime.permanent.end(from: 1000) == nil)
        #expect(BanTime.seconds(600).end(from: 1000) == 1600)
        #expect(BanTime.seconds(12 * 604_800).description == "12w" && BanTime.permanent.description == "permanent")
        let ban = StoredBan(jail: "j", ip: IPNetwork("192.0.2.1")!, bannedAt: 1000, banTime: .seconds(60), banCount: 1, failures: 1, matches: [])
        #expect(ban.expiresAt == 1060 && ban.isActive(at: 1059) && !ban.isActive(at: 1060))
    }

    @Test func defaultFormulaDoublesPerPreviousBan() throws {
        var inc = BanTimeIncrement()
        inc.enabled = true
        let p = try BanTimePolicy(base: 600, increment: inc)
        #expect(p.banTime(previousBans: 0).fail2banSeconds == 600)
        #expect(p.banTime(previousBans: 1).fail2banSeconds == 1200)
        #expect(p.banTime(previousBans: 3).fail2banSeconds == 4800)
        // 1 << 20 at most.
        #expect(p.banTime(previousBans: 40).fail2banSeconds == 600 * 1_048_576)
    }

    @Test func multipliersFactorAndCap() throws {
        var inc = BanTimeIncrement()
        inc.enabled = true
        inc.multipliers = [1, 2, 4, 8, 16, 32, 64]
        inc.factor = 2
        inc.maxTime = 3600
        let p = try BanTimePolicy(base: 600, increment: inc)
        #expect(p.banTime(previousBans: 1).fail2banSeconds == 600 * 2 * 2)
        #expect(p.banTime(previousBans: 6).fail2banSeconds == 3600)
        inc.multipliers = []
        inc.formula = "ban.Time * math.exp(float(ban.Count+1)*banFactor)/math.exp(1*banFactor)"
        inc.factor = 1
        inc.maxTime = nil
        let e = try BanTimePolicy(base: 100, increment: inc)
        #expect(abs(e.banTime(previousBans: 1).fail2banSeconds - 100 * M_E) < 1e-9)
        inc.randomTime = 10
        let r = try BanTimePolicy(base: 100, increment: inc)
        #expect(abs(r.banTime(previousBans: 1, random: 0.5).fail2banSeconds - (100 * M_E + 5)) < 1e-9)
        // Disabled: the base time, whatever happened before.
        #expect(try BanTimePolicy(base: 600, increment: BanTimeIncrement()).banTime(previousBans: 5).fail2banSeconds == 600)
    }

    /// nftables holds an element for less than 2^64 ns: longer ban times are cut to 584 years, never trap.
    @Test func banTimesAreCutToWhatThePacketFilterHolds() throws {
        var inc = BanTimeIncrement()
        inc.enabled = true
        let p = try BanTimePolicy(base: 604_800, increment: inc)
        // The 16th ban of bantime = 1w: 1w * 2^16 = 1,257 years.
        #expect(p.uncappedBanTime(previousBans: 16).fail2banSeconds > BanTimePolicy.longest)
        #expect(p.banTime(previousBans: 16).fail2banSeconds == BanTimePolicy.longest)
        #expect(try BanTimePolicy(base: .seconds(1e12), increment: BanTimeIncrement()).banTime(previousBans: 0).fail2banSeconds == BanTimePolicy.longest)
        #expect(BanTimePolicy.capped(-1, fallback: .seconds(1)) == .permanent)
        #expect(BanTimePolicy.capped(.nan, fallback: .seconds(600)) == .seconds(600))
        #expect(BanTimePolicy.capped(.infinity, fallback: .seconds(600)) == .seconds(BanTimePolicy.longest))
        // The kernel's limit: U64_MAX / 10^6 ms.
        #expect(BanTimePolicy.longest * 1000 < Double(UInt64.max / 1_000_000))
        for end in [Double.nan, .infinity, -.infinity, 1e300, -1e300, 0] {
            let ms = NftablesFirewall.timeoutMilliseconds(until: end, now: 1_000_000)
            #expect(ms >= 1000 && Double(ms) <= BanTimePolicy.longest * 1000)
        }
    }

    @Test func badFormulasAreConfigErrors() {
        var inc = BanTimeIncrement()
        inc.enabled = true
        inc.formula = "ban.Time * ("
        #expect(throws: ConfigError.self) { try BanTimePolicy(base: 600, increment: inc) }
        inc.formula = "__import__('os')"
        #expect(throws: ConfigError.self) { try BanTimePolicy(base: 600, increment: inc) }
        inc.formula = "nosuchfunction(ban.Time)"
        let p = try? BanTimePolicy(base: 600, increment: inc)
        // A formula that cannot be evaluated leaves the base time.
        #expect(p?.banTime(previousBans: 2).fail2banSeconds == 600)
    }
}

@Suite("ban store")
struct BanStoreTests {
    @Test func bansHistoryPositionsAndMigrations() throws {
        let dir = TempDir()
        let path = dir.path + "/db/portcullis.sqlite3"
        let a = IPNetwork("192.0.2.1")!, b = IPNetwork("2001:db8::1")!
        do {
            let store = try BanStore(path: path)
            #expect(store.schemaVersion == BanStore.migrations.count)
            try store.record([
                StoredBan(jail: "dovecot", ip: a, bannedAt: 1000, banTime: 600, banCount: 1, failures: 2, matches: ["l1", "l2"]),
                StoredBan(jail: "sshd", ip: b, bannedAt: 1000, banTime: -1, banCount: 1, failures: 5, matches: []),
            ])
            try store.savePositions([LogPosition(jail: "dovecot", path: "/var/log/mail.log", firstLine: Array("first\n".utf8), offset: 42)], now: 1000)
        }
        // A second process opening the same file sees everything (and does not migrate again).
        let store = try BanStore(path: path)
        #expect(try store.activeBans(now: 1100).count == 2)
        #expect(try store.activeBans(now: 1700).map(\.jail) == ["sshd"])
        #expect(try store.ban(jail: "dovecot", ip: a)?.matches == ["l1", "l2"])
        #expect(try store.position(jail: "dovecot", path: "/var/log/mail.log")?.offset == 42)
        // A first line stored whole (by an older version) became its fingerprint when the store was opened again.
        #expect(try store.position(jail: "dovecot", path: "/var/log/mail.log")?.firstLine == LogFingerprint.of(Array("first\n".utf8)))
        try store.remove([("dovecot", a)])
        #expect(try store.ban(jail: "dovecot", ip: a) == nil)
        // History outlives the ban: the next ban counts it.
        #expect(try store.previousBanCount(ip: a, jail: "dovecot", since: 0) == 1)
        #expect(try store.previousBanCount(ip: b, jail: nil, since: 0) == 1)
        try store.purge(now: 1_000_000, age: 86400)
        #expect(try store.previousBanCount(ip: a, jail: "dovecot", since: 0) == 0)
        #expect(try store.activeBans(now: 1_000_000).count == 1)
    }

    /// The database holds matched log lines: root's alone, whether created now or by an older version.
    @Test func databaseFilesArePrivate() throws {
        func mode(_ p: String) -> mode_t { var st = stat(); return stat(p, &st) == 0 ? st.st_mode & 0o777 : 0 }
        let dir = TempDir()
        let path = dir.path + "/new/portcullis.sqlite3"
        do {
            let store = try BanStore(path: path)
            try store.record([StoredBan(jail: "j", ip: IPNetwork("192.0.2.1")!, bannedAt: 1, banTime: -1, banCount: 1, failures: 1, matches: ["x"])])
            #expect(mode(path) == 0o600)
            #expect(mode(path + "-wal") == 0o600)
            #expect(mode(dir.path + "/new") == 0o700)
        }
        let old = dir.path + "/old.sqlite3"
        do { _ = try BanStore(path: old) }
        chmod(old, 0o644)
        _ = try BanStore(path: old)
        #expect(mode(old) == 0o600)
        // fail2ban's dbfile = :memory: is a database in memory, not a file named so.
        let memory = try BanStore(path: ":memory:")
        #expect(try memory.activeBans(now: 0).isEmpty)
        #expect(!FileManager.default.fileExists(atPath: ":memory:"))
    }

    @Test func unreadableDatabaseIsAClearError() throws {
        let dir = TempDir()
        let path = dir.write("not-a-db.sqlite3", "this is not a database, just text that is long enough to be read as a header")
        #expect(throws: (any Error).self) {
            let s = try BanStore(path: path)
            _ = try s.activeBans(now: 0)
        }
    }
}

@Suite("ban manager")
struct BanManagerTests {
    static func jail(_ name: String, banTime: BanTime, increment: Bool = false) -> JailDefinition {
        var inc = BanTimeIncrement()
        inc.enabled = increment
        return JailDefinition(
            name: name, filter: FilterDefinition(name: "t", failregex: ["x <HOST>"]), filterSpec: "t",
            logPaths: [], backend: .polling, maxRetry: 1, findTime: 600, banTime: banTime, increment: inc,
            ports: [], portSpec: "", protocol: "tcp", ignoreList: IgnoreList(ignoreSelf: false),
            banAction: "dry-run", actions: [], logEncoding: "auto", logTimeZone: nil, maxMatches: 3,
            maxTracked: 100, location: nil)
    }

    static func setup(_ j: JailDefinition, _ fw: DryRunFirewall) throws -> BanManager.JailSetup {
        BanManager.JailSetup(
            definition: j, policy: try BanTimePolicy(base: j.banTime, increment: j.increment), firewall: fw,
            rules: JailRules.forJail(j).rules)
    }

    @Test func storeFirstAlreadyBannedExpiryAndIncrement() throws {
        let dir = TempDir()
        let store = try BanStore(path: dir.path + "/db.sqlite3")
        let fw = DryRunFirewall()
        let manager = BanManager(store: store, log: Logger(level: .critical))
        try manager.start([Self.setup(Self.jail("j", banTime: 1, increment: true), fw)])
        defer { manager.stop(removeLayout: true) }
        let ip = IPNetwork("192.0.2.77")!
        manager.submit(BanDecision(jail: "j", ip: ip, time: Clock.now(), failures: 1, matches: ["m"]))
        manager.submit(BanDecision(jail: "j", ip: ip, time: Clock.now(), failures: 1, matches: ["m"]))
        #expect(manager.drain())
        #expect(fw.bans.map(\.ip) == [ip])
        #expect(try store.activeBans(now: Clock.now()).map(\.ip) == [ip])
        // The timer lifts it after 1 s, from the kernel side and the store.
        #expect(eventually(timeout: 5) { fw.bans.isEmpty && !manager.isBanned(jail: "j", ip: ip) })
        #expect(try store.activeBans(now: Clock.now()).isEmpty)
        // A repeat offender: twice the time (bantime.increment's default formula).
        manager.submit(BanDecision(jail: "j", ip: ip, time: Clock.now(), failures: 1, matches: []))
        #expect(manager.drain())
        #expect(manager.bans.first?.banTime == 2)
        #expect(manager.bans.first?.banCount == 2)
        #expect(manager.statistics.bansTotal["j"] == 2)
    }

    @Test func liftsByRequestRaceExpiryWithoutDoubleCounting() throws {
        // Requests to lift bans arrive from API threads while the worker expires the same bans: each ban ends once
        // (one unban counted, one log line), and the store, the packet filter and the table agree afterwards.
        let dir = TempDir()
        let store = try BanStore(path: dir.path + "/db.sqlite3")
        let fw = DryRunFirewall()
        let manager = BanManager(store: store, log: Logger(level: .critical))
        try manager.start([Self.setup(Self.jail("j", banTime: 1), fw)])
        defer { manager.stop(removeLayout: true) }
        let ips = (0..<300).map { IPNetwork(IPAddress.v4(0xC633_6400 + UInt32($0))) }
        for ip in ips { manager.submit(BanDecision(jail: "j", ip: ip, time: Clock.now(), failures: 1, matches: [])) }
        #expect(manager.drain())
        #expect(manager.activeCount == 300)
        // Start lifting just before the bans end, so that lifts are in flight when the worker expires the rest.
        let ends = manager.bans.compactMap(\.expiresAt).min() ?? Clock.now()
        let wait = ends - 0.04 - Clock.now()
        if wait > 0 { usleep(UInt32(wait * 1_000_000)) }
        let lifted = Locked(0)
        DispatchQueue.concurrentPerform(iterations: 4) { part in
            for ip in ips[(part * 75)..<(part * 75 + 75)] {
                if (try? manager.unban(jail: "j", ip: ip)) == true { lifted.withLock { $0 += 1 } }
                usleep(500)
            }
        }
        #expect(eventually { manager.activeCount == 0 })
        #expect(manager.statistics.unbansTotal["j"] == 300, "lifted by request: \(lifted.withLock { $0 })")
        #expect(fw.bans.isEmpty)
        #expect(try store.activeBans(now: 0).isEmpty)
    }

    /// A packet filter that refuses some addresses (as the kernel refused a timeout out of its range).
    final class RefusingFirewall: Firewall, @unchecked Sendable {
        let inner = DryRunFirewall()
        let refused: Set<IPNetwork>
        init(refusing: Set<IPNetwork>) { refused = refusing }
        struct Refusal: Error, CustomStringConvertible { var description: String { "Numerical result out of range (errno 34)" } }
        func install(_ jails: [JailRules], bans: [BanEntry], now: Double) throws { inner.install(jails, bans: bans, now: now) }
        func add(_ bans: [BanEntry], replacing: [(jail: String, ip: IPNetwork)], now: Double) throws {
            if bans.contains(where: { refused.contains($0.ip) }) { throw Refusal() }
            inner.add(bans, replacing: replacing, now: now)
        }
        func remove(_ bans: [(jail: String, ip: IPNetwork)]) throws { inner.remove(bans) }
        func uninstall() throws { inner.uninstall() }
    }

    /// A packet filter whose `add` waits until the test opens it (a netlink transaction that takes its time).
    final class GatedFirewall: Firewall, @unchecked Sendable {
        let inner = DryRunFirewall()
        private let gate = Condition()
        private var open = false
        private let adding = Locked(0)
        func install(_ jails: [JailRules], bans: [BanEntry], now: Double) throws { inner.install(jails, bans: bans, now: now) }
        func add(_ bans: [BanEntry], replacing: [(jail: String, ip: IPNetwork)], now: Double) throws {
            adding.withLock { $0 += 1 }
            gate.lock()
            while !open { gate.wait() }
            gate.unlock()
            inner.add(bans, replacing: replacing, now: now)
        }
        func remove(_ bans: [(jail: String, ip: IPNetwork)]) throws { inner.remove(bans) }
        func uninstall() throws { inner.uninstall() }
        /// `add` calls begun (waiting or done).
        var adds: Int { adding.withLock { $0 } }
        func openGate() {
            gate.withLock {
                open = true
                gate.broadcast()
            }
        }
    }

    /// A storm faster than the packet filter: decisions beyond `maxPending` wait in `submit` (the reader, and so
    /// its lines, wait in the log) instead of piling up in memory; all are banned once the filter catches up, and
    /// a stop never leaves a submitter waiting.
    @Test func aStormWaitsForTheWorkerInsteadOfPilingUp() throws {
        for stopWhileWaiting in [false, true] {
            let fw = GatedFirewall()
            let manager = BanManager(store: nil, log: Logger(level: .critical), maxPending: 100, maxBatch: 50)
            let j = Self.jail("j", banTime: 3600)
            try manager.start([
                BanManager.JailSetup(
                    definition: j, policy: try BanTimePolicy(base: 3600, increment: j.increment),
                    firewall: fw, rules: JailRules.forJail(j).rules)
            ])
            let total = 1_000
            let returned = Locked(0)
            let submitter = try JoinableThread(name: "test-storm") {
                for i in 0..<total {
                    manager.submit(
                        BanDecision(jail: "j", ip: IPNetwork("2001:db8::\(String(i + 1, radix: 16))")!, time: Clock.now(), failures: 1, matches: ["line \(i)"]))
                    returned.withLock { $0 += 1 }
                }
            }
            // The worker holds one batch in the closed filter; the queue fills to its bound, and the submitter waits.
            #expect(eventually(timeout: 10) { fw.adds == 1 && manager.waitingDecisions == 100 })
            // Handed in: the queue's 100 and the worker's first batch (at most 50), and no more while it waits.
            usleep(100_000)
            let handedIn = returned.withLock { $0 }
            usleep(200_000)
            #expect(handedIn > 100 && handedIn <= 150 && returned.withLock { $0 } == handedIn, "handed in \(handedIn)")
            #expect(manager.waitingDecisions == 100)
            if stopWhileWaiting {
                // Stopping releases the submitter (what it hands in meanwhile is applied before the worker ends).
                let stopper = try JoinableThread(name: "test-stop") { manager.stop(removeLayout: false) }
                #expect(eventually(timeout: 10) { returned.withLock { $0 } == total })
                fw.openGate()
                stopper.join()
                submitter.join()
                #expect(fw.inner.bans.count == total)
            } else {
                fw.openGate()
                submitter.join()
                #expect(manager.drain())
                #expect(manager.activeCount == total && fw.inner.bans.count == total)
                manager.stop(removeLayout: true)
            }
        }
    }

    /// A ban the packet filter refused is not reported, listed, counted or kept; the others of its batch are made.
    @Test func bansThePacketFilterRefusesAreNotReported() throws {
        let dir = TempDir()
        let store = try BanStore(path: dir.path + "/db.sqlite3")
        let bad = IPNetwork("192.0.2.50")!
        let fw = RefusingFirewall(refusing: [bad])
        let manager = BanManager(store: store, log: Logger(level: .critical))
        let j = Self.jail("j", banTime: 3600)
        try manager.start([
            BanManager.JailSetup(
                definition: j, policy: try BanTimePolicy(base: 3600, increment: j.increment),
                firewall: fw, rules: JailRules.forJail(j).rules)
        ])
        defer { manager.stop(removeLayout: true) }
        let ips = (1...20).map { IPNetwork("192.0.2.\($0 + 40)")! }
        for ip in ips { manager.submit(BanDecision(jail: "j", ip: ip, time: Clock.now(), failures: 1, matches: [])) }
        #expect(manager.drain())
        #expect(Set(manager.bans.map(\.ip)) == Set(ips).subtracting([bad]))
        #expect(Set(fw.inner.bans.map(\.ip)) == Set(ips).subtracting([bad]))
        #expect(try store.ban(jail: "j", ip: bad) == nil)
        #expect(try store.activeBans(now: Clock.now()).count == 19)
        #expect(manager.statistics.failedBans == 1)
        #expect(manager.statistics.bansTotal["j"] == 19)
        #expect {
            try manager.banManually(jail: "j", ip: bad)
        } throws: { "\($0)".contains("not applied: Numerical result out of range") }
    }

    @Test func anUnreadableBanHistoryIsSaidAndCountedNotSilent() throws {
        let dir = TempDir()
        let path = dir.path + "/db.sqlite3"
        let store = try BanStore(path: path)
        let manager = BanManager(store: store, log: Logger(level: .critical))
        let j = Self.jail("j", banTime: 3600, increment: true)
        try manager.start([Self.setup(j, DryRunFirewall())])
        defer { manager.stop(removeLayout: true) }
        // Another connection takes the history away: every read of it fails from now on.
        try SQLiteDatabase(path: path).execute("ALTER TABLE ban_history RENAME TO gone")
        let ip = IPNetwork("192.0.2.77")!
        manager.submit(BanDecision(jail: "j", ip: ip, time: Clock.now(), failures: 1, matches: []))
        #expect(manager.drain())
        // Banned all the same, with the base time, and counted.
        #expect(manager.bans.first { $0.ip == ip }.map { $0.banTime } == 3600)
        #expect(manager.statistics.historyUnread == 1)
    }

    @Test func restartRestoresAndManualChanges() throws {
        let dir = TempDir()
        let path = dir.path + "/db.sqlite3"
        let ip = IPNetwork("2001:db8::42")!
        do {
            let fw = DryRunFirewall()
            let m = BanManager(store: try BanStore(path: path), log: Logger(level: .critical))
            try m.start([Self.setup(Self.jail("a", banTime: 3600), fw), Self.setup(Self.jail("b", banTime: -1), fw)])
            _ = try m.banManually(jail: "a", ip: ip)
            _ = try m.banManually(jail: "b", ip: ip)
            #expect(throws: BanManager.ManualError.self) { try m.banManually(jail: "nope", ip: ip) }
            m.stop(removeLayout: true)
            #expect(fw.bans.isEmpty)
        }
        let fw = DryRunFirewall()
        let m = BanManager(store: try BanStore(path: path), log: Logger(level: .critical))
        try m.start([Self.setup(Self.jail("a", banTime: 3600), fw), Self.setup(Self.jail("b", banTime: -1), fw)])
        defer { m.stop(removeLayout: true) }
        #expect(Set(fw.bans.map(\.jail)) == ["a", "b"])
        #expect(fw.bans.first { $0.jail == "b" }?.expiresAt == nil)
        #expect(try m.unbanEverywhere(ip).map(\.jail) == ["a", "b"])
        #expect(fw.bans.isEmpty && m.bans.isEmpty)
        #expect(try m.unban(jail: "a", ip: ip) == false)
    }
}

@Suite struct JailRulesTests {
    /// An interval set refuses overlapping ranges: ports are sorted and joined first.
    @Test func portRangesAreMerged() {
        #expect(
            JailRules.merged([995...995, 110...110, 1000...2000, 1500...2500, 2501...2501, 143...143, 110...110])
                == [110...110, 143...143, 995...995, 1000...2501])
        #expect(JailRules.merged([]) == [])
        #expect(JailRules.merged([65535...65535, 0...0, 1...65534]) == [0...65535])
    }
}

@Suite("python expressions")
struct PythonExpressionTests {
    @Test(arguments: [
        ("1 + 2 * 3", 7.0), ("(1 + 2) * 3", 9), ("2 ** 3 ** 2", 512), ("1 << 4", 16), ("7 // 2", 3), ("-7 % 3", 2),
        ("5 if 1 < 2 else 6", 5), ("5 if 1 > 2 else 6", 6), ("max(1, 3, 2)", 3), ("not 0", 1), ("1 and 0 or 4", 4),
    ])
    func evaluate(_ text: String, _ value: Double) throws {
        #expect(try PythonExpression(text).evaluate([:]) == value)
    }
}

@Suite struct BanTableTests {
    private func value(_ t: Double) -> BanTable.Value { BanTable.Value(bannedAt: t, banTime: 3600, banCount: 1, failures: 2) }

    @Test func pagesFollowBanOrderAndSurviveChanges() {
        var table = BanTable()
        for i in 1...10 { table[table.key("dovecot", IPNetwork("192.0.2.\(i)")!)] = value(Double(i)) }
        let first = table.page(after: 0, limit: 4, jail: nil)
        #expect(first.bans.map(\.ip.description) == ["192.0.2.1", "192.0.2.2", "192.0.2.3", "192.0.2.4"])
        // A lifted ban and a re-ban between pages: nothing is skipped, the re-ban moves to the end.
        table[table.key("dovecot", IPNetwork("192.0.2.5")!)] = nil
        table[table.key("dovecot", IPNetwork("192.0.2.2")!)] = value(99)
        let second = table.page(after: first.next!, limit: 100, jail: nil)
        #expect(second.bans.map(\.ip.description) == ["192.0.2.6", "192.0.2.7", "192.0.2.8", "192.0.2.9", "192.0.2.10", "192.0.2.2"])
        #expect(second.next == nil)
        #expect(table.count(jail: "dovecot") == 9)
        #expect(table.page(after: 0, limit: 100, jail: "sshd").bans.isEmpty)
    }

    @Test func sequenceNumbersWrapWithoutLosingOrder() {
        var table = BanTable()
        table.nextSeq = UInt32.max - 3
        for i in 1...8 { table[table.key("dovecot", IPNetwork("198.51.100.\(i)")!)] = value(Double(i)) }
        let all = table.page(after: 0, limit: 100, jail: nil).bans.map(\.ip.description)
        #expect(all == (1...8).map { "198.51.100.\($0)" })
        #expect(table.count == 8)
    }

    @Test func cursorsAreExactlyWhatThePageReturned() {
        #expect(BanTable.seq(cursor: BanTable.cursor(12345)) == 12345)
        for bad in ["", "b", "x12", "B12", "b1A", "b" + String(repeating: "z", count: 13), "b-1"] {
            #expect(BanTable.seq(cursor: bad) == nil, "\(bad)")
        }
    }
}
