import Foundation
import Platform
import TestSupport
import Testing

@testable import Engine

/// Networks: prefix arithmetic, counting failures per prefix, and bans of networks in the ban manager.
@Suite("prefixes and network bans")
struct PrefixTests {
    func net(_ s: String) -> IPNetwork { IPNetwork(s)! }

    @Test func strictParsing() throws {
        #expect(try IPNetwork(parsing: "198.51.100.0/24") == net("198.51.100.0/24"))
        #expect(try IPNetwork(parsing: "2001:db8::/64").description == "2001:db8::/64")
        #expect(try IPNetwork(parsing: "198.51.100.7") == IPNetwork(IPAddress("198.51.100.7")!))
        #expect(try IPNetwork(parsing: "198.51.100.7/32").description == "198.51.100.7")
        #expect(try IPNetwork(parsing: "0.0.0.0/0").prefix == 0)
        #expect(try IPNetwork(parsing: "::/0").description == "::/0")
        // IPv4-mapped: the IPv4 network, its prefix less 96.
        #expect(try IPNetwork(parsing: "::ffff:198.51.100.0/120") == net("198.51.100.0/24"))
        #expect(throws: IPNetwork.ParseError.mappedPrefix("::ffff:198.51.100.0/64")) { try IPNetwork(parsing: "::ffff:198.51.100.0/64") }
        #expect(throws: IPNetwork.ParseError.badPrefix("2001:db8::/129", family: "IPv6", max: 128)) { try IPNetwork(parsing: "2001:db8::/129") }
        #expect(throws: IPNetwork.ParseError.badPrefix("198.51.100.0/33", family: "IPv4", max: 32)) { try IPNetwork(parsing: "198.51.100.0/33") }
        for bad in ["198.51.100.0/", "198.51.100.0/-1", "198.51.100.0/+8", "198.51.100.0/255.255.255.0", "198.51.100.0/0024"] {
            #expect(throws: IPNetwork.ParseError.self, "\(bad)") { try IPNetwork(parsing: bad) }
        }
        #expect(throws: IPNetwork.ParseError.notAnAddress("host.example")) { try IPNetwork(parsing: "host.example") }
        // Host bits: cleared, as ignoreip reads them.
        #expect(try IPNetwork(parsing: "198.51.100.7/24").description == "198.51.100.0/24")
        #expect(try IPNetwork(parsing: "2001:db8::1/64").description == "2001:db8::/64")
    }

    @Test func edgePrefixes() {
        let a4 = IPAddress("198.51.100.77")!
        #expect(IPNetwork(address: a4, prefix: 0).description == "0.0.0.0/0")
        #expect(IPNetwork(address: a4, prefix: 1).description == "128.0.0.0/1")
        #expect(IPNetwork(address: a4, prefix: 31).description == "198.51.100.76/31")
        #expect(IPNetwork(address: a4, prefix: 32).description == "198.51.100.77")
        let a6 = IPAddress("2001:db8:1:2:3:4:5:7")!
        #expect(IPNetwork(address: a6, prefix: 0).description == "::/0")
        #expect(IPNetwork(address: a6, prefix: 1).description == "::/1")
        #expect(IPNetwork(address: a6, prefix: 64).description == "2001:db8:1:2::/64")
        #expect(IPNetwork(address: a6, prefix: 127).description == "2001:db8:1:2:3:4:5:6/127")
        #expect(IPNetwork(address: a6, prefix: 128).description == "2001:db8:1:2:3:4:5:7")
        // Out of range: the nearest end.
        #expect(IPNetwork(address: a4, prefix: 40).prefix == 32)
        #expect(IPNetwork(address: a6, prefix: -3).prefix == 0)
    }

    @Test func containment() {
        let n64 = net("2001:db8:1:2::/64")
        #expect(n64.contains(IPAddress("2001:db8:1:2:ffff::1")!))
        #expect(!n64.contains(IPAddress("2001:db8:1:3::1")!))
        #expect(!n64.contains(IPAddress("198.51.100.1")!))
        #expect(net("::/0").contains(IPAddress("2001:db8::1")!))
        #expect(!net("::/0").contains(IPAddress("192.0.2.1")!))  // IPv4 (mapped or not) is another family
        #expect(net("0.0.0.0/0").contains(IPAddress("::ffff:192.0.2.1")!))
        #expect(net("2001:db8::/32").contains(n64) && !n64.contains(net("2001:db8::/32")))
        #expect(net("2001:db8::/32").overlaps(n64) && n64.overlaps(net("2001:db8::/32")))
        #expect(!net("198.51.100.0/25").overlaps(net("198.51.100.128/25")))
        #expect(net("198.51.100.0/24").neverASource == nil)
        #expect(net("224.1.0.0/16").neverASource != nil)
        #expect(net("ff02::/16").neverASource != nil)
        #expect(net("0.0.0.0/0").neverASource == nil)
    }

    @Test func intervalEnds() {
        #expect(net("198.51.100.0/24").endBytes == [198, 51, 101, 0])
        #expect(net("198.51.100.7").endBytes == [198, 51, 100, 8])
        #expect(net("255.255.255.0/24").endBytes == nil)
        #expect(net("255.255.255.255").endBytes == nil)
        #expect(net("0.0.0.0/0").endBytes == nil)
        #expect(net("128.0.0.0/1").endBytes == nil)
        #expect(net("0.0.0.0/1").endBytes == [128, 0, 0, 0])
        #expect(net("2001:db8:1:2::/64").endBytes == IPAddress("2001:db8:1:3::")!.bytes)
        #expect(net("2001:db8::ffff:ffff:ffff:fffe/127").endBytes == IPAddress("2001:db8:0:1::")!.bytes)
        #expect(net("2001:db8::7").endBytes == IPAddress("2001:db8::8")!.bytes)
        #expect(net("::/1").endBytes == IPAddress("8000::")!.bytes)
        #expect(net("8000::/1").endBytes == nil)
        #expect(net("ffff:ffff:ffff:ffff::/64").endBytes == nil)
        #expect(net("::/0").endBytes == nil)
    }

    @Test func banPrefixSettings() throws {
        let dir = TempDir()
        dir.write("filter.d/t.conf", "[Definition]\nfailregex = x <HOST>\n")
        dir.write(
            "jail.conf",
            """
            [DEFAULT]
            banprefix6 = 64
            logpath = \(dir.path)/log
            [a]
            enabled = true
            filter = t
            [b]
            enabled = true
            filter = t
            banprefix4 = /24
            banprefix6 = 129
            """)
        dir.write("log", "")
        let config = LoadedConfig.load(dir.path)
        let a = try #require(config.jails.first { $0.name == "a" })
        #expect(a.banPrefix6 == 64 && a.banPrefix4 == 32)
        #expect(a.banTarget(IPAddress("2001:db8:1:2::7")!).description == "2001:db8:1:2::/64")
        #expect(a.banTarget(IPAddress("198.51.100.7")!).description == "198.51.100.7")
        #expect(!config.jails.contains { $0.name == "b" })
        let problem = try #require(config.diagnostics.first { $0.jail == "b" })
        #expect(problem.message.contains("banprefix6 must be a prefix length from 0 to 128, not '129'"), "\(problem)")
        #expect(problem.location?.line == 11, "\(problem)")
    }

    @Test func failuresCountPerPrefixAndList() {
        var t = FailureTracker(maxRetry: 3, findTime: 600)
        let n = net("2001:db8:1:2::/64")
        #expect(t.record(n, time: 1000, lines: ["a"], user: "bob", jail: "j") == nil)
        #expect(t.record(net("198.51.100.9"), time: 1001, lines: [], user: nil, jail: "j") == nil)
        #expect(t.record(n, time: 1002, lines: ["b"], user: "alice", jail: "j") == nil)
        let (list, next) = t.failing(limit: 10, after: nil)
        #expect(next == nil)
        #expect(list.map(\.ip) == [n, net("198.51.100.9")])
        #expect(list[0].failures == 2 && list[0].firstFailure == 1000 && list[0].lastFailure == 1002)
        #expect(list[0].users == ["bob", "alice"])
        // Paged: one at a time, newest first.
        let first = t.failing(limit: 1, after: nil)
        #expect(first.list.map(\.ip) == [n])
        let second = t.failing(limit: 1, after: first.next)
        #expect(second.list.map(\.ip) == [net("198.51.100.9")] && second.next == nil)
        let d = t.record(n, time: 1003, lines: ["c"], user: "bob", jail: "j")
        #expect(d?.ip == n && d?.failures == 3)
        #expect(t.failing(limit: 10, after: nil).list.map(\.ip) == [net("198.51.100.9")])
    }

    // MARK: the ban manager

    static func manager(_ fw: DryRunFirewall, banPrefix6: Int = 128) throws -> (BanManager, TempDir, BanStore) {
        let dir = TempDir()
        let store = try BanStore(path: dir.path + "/db.sqlite3")
        let m = BanManager(store: store, log: Logger(level: .critical))
        var j = BanManagerTests.jail("j", banTime: 3600)
        j.banPrefix6 = banPrefix6
        try m.start([BanManagerTests.setup(j, fw)])
        return (m, dir, store)
    }

    @Test func coveredAndCovering() throws {
        let fw = DryRunFirewall()
        let (m, _, store) = try Self.manager(fw, banPrefix6: 64)
        defer { m.stop(removeLayout: true) }
        _ = try m.banManually(jail: "j", ip: net("2001:db8:1:2::7"))
        _ = try m.banManually(jail: "j", ip: net("2001:db8:1:2::8"), banTime: .seconds(7200))
        #expect(m.bans.count == 2)
        // The /64 takes their place, lasting as long as the longest.
        let wide = try m.banManually(jail: "j", ip: net("2001:db8:1:2::/64"))
        #expect(m.bans.map(\.ip) == [net("2001:db8:1:2::/64")])
        #expect(fw.bans.map(\.ip) == [net("2001:db8:1:2::/64")])
        #expect(try store.activeBans(now: Clock.now()).map(\.ip) == [net("2001:db8:1:2::/64")])
        #expect((wide.expiresAt ?? 0) >= Clock.now() + 7190)
        // An address inside: already banned by the network.
        do {
            _ = try m.banManually(jail: "j", ip: net("2001:db8:1:2::9"))
            Issue.record("a covered address was banned again")
        } catch let error as BanManager.ManualError {
            #expect(error.description == "2001:db8:1:2::9 is already banned in j by 2001:db8:1:2::/64")
        }
        // Lookups: the address finds the network's ban; lifting by the bare address (the jail's /64) lifts it.
        #expect(m.bans(of: IPAddress("2001:db8:1:2::1234")!).map(\.ip) == [net("2001:db8:1:2::/64")])
        #expect(m.bans(of: IPAddress("2001:db8:1:3::1")!).isEmpty)
        #expect(m.liftTarget(jail: "j", ip: net("2001:db8:1:2::1")) == net("2001:db8:1:2::/64"))
        #expect(try m.unbanEverywhere(net("2001:db8:1:2::1")).map(\.ip) == [net("2001:db8:1:2::/64")])
        #expect(m.bans.isEmpty && fw.bans.isEmpty)
    }

    @Test func aBatchWithANetworkAndAddressesInside() throws {
        let fw = DryRunFirewall()
        let (m, _, _) = try Self.manager(fw)
        defer { m.stop(removeLayout: true) }
        // Handed in together, narrow first: the network is applied first, and the addresses are "already banned".
        for d in ["198.51.100.7", "198.51.100.8", "198.51.100.0/24", "198.51.101.1"] {
            m.submit(BanDecision(jail: "j", ip: net(d), time: Clock.now(), failures: 2, matches: []))
        }
        #expect(m.drain())
        #expect(Set(m.bans.map(\.ip)) == [net("198.51.100.0/24"), net("198.51.101.1")])
        #expect(Set(fw.bans.map(\.ip)) == [net("198.51.100.0/24"), net("198.51.101.1")])
    }

    @Test func aBatchOfNetworksTakesThePlaceOfWhatEachCovers() throws {
        let fw = DryRunFirewall()
        let (m, _, _) = try Self.manager(fw)
        defer { m.stop(removeLayout: true) }
        let singles = (1...10).map { "198.51.100.\($0)" } + ["203.0.113.5", "203.0.113.6", "203.0.113.200"]
        for a in singles { m.submit(BanDecision(jail: "j", ip: net(a), time: Clock.now(), failures: 2, matches: [])) }
        #expect(m.drain())
        #expect(m.bans.count == 13)
        for d in ["198.51.100.0/24", "203.0.113.0/25", "192.0.2.0/24"] {
            m.submit(BanDecision(jail: "j", ip: net(d), time: Clock.now(), failures: 2, matches: []))
        }
        #expect(m.drain())
        let expected: Set = [net("198.51.100.0/24"), net("203.0.113.0/25"), net("192.0.2.0/24"), net("203.0.113.200")]
        #expect(Set(m.bans.map(\.ip)) == expected)
        #expect(Set(fw.bans.map(\.ip)) == expected)
    }

    @Test func networksSurviveARestartAndKeepHistory() throws {
        let fw = DryRunFirewall()
        let (m, dir, store) = try Self.manager(fw)
        _ = try m.banManually(jail: "j", ip: net("203.0.113.0/25"))
        _ = try m.banManually(jail: "j", ip: net("203.0.113.128/25"))  // adjacent, not overlapping
        m.stop(removeLayout: true)
        #expect(try store.previousBanCount(ip: net("203.0.113.0/25"), jail: "j", since: 0) == 1)
        let again = BanManager(store: try BanStore(path: dir.path + "/db.sqlite3"), log: Logger(level: .critical))
        let fw2 = DryRunFirewall()
        try again.start([BanManagerTests.setup(BanManagerTests.jail("j", banTime: 3600), fw2)])
        defer { again.stop(removeLayout: true) }
        #expect(Set(fw2.bans.map(\.ip)) == [net("203.0.113.0/25"), net("203.0.113.128/25")])
        #expect(again.bans(of: IPAddress("203.0.113.200")!).map(\.ip) == [net("203.0.113.128/25")])
    }

    /// A stop between storing a network ban and removing the bans it replaced leaves both in the store: a restart
    /// keeps the network alone (the kernel's interval set refuses an overlap, and the layout with it).
    @Test func overlappingRowsInTheStoreAreResolvedAtStart() throws {
        let dir = TempDir()
        let store = try BanStore(path: dir.path + "/db.sqlite3")
        let now = Clock.now()
        try store.record([
            StoredBan(jail: "j", ip: net("198.51.100.7"), bannedAt: now, banTime: 3600, banCount: 1, failures: 2, matches: []),
            StoredBan(jail: "j", ip: net("198.51.100.0/24"), bannedAt: now, banTime: 3600, banCount: 1, failures: 0, matches: []),
            StoredBan(jail: "j", ip: net("203.0.113.7"), bannedAt: now, banTime: 3600, banCount: 1, failures: 2, matches: []),
        ])
        let fw = DryRunFirewall()
        let m = BanManager(store: store, log: Logger(level: .critical))
        try m.start([BanManagerTests.setup(BanManagerTests.jail("j", banTime: 3600), fw)])
        defer { m.stop(removeLayout: true) }
        #expect(Set(fw.bans.map(\.ip)) == [net("198.51.100.0/24"), net("203.0.113.7")])
        #expect(Set(m.bans.map(\.ip)) == [net("198.51.100.0/24"), net("203.0.113.7")])
        #expect(Set(try store.activeBans(now: now).map(\.ip)) == [net("198.51.100.0/24"), net("203.0.113.7")])
    }

    /// banprefix4 = 24: failures count per /24, except in a /24 that holds the default gateway (every client behind
    /// a proxy) or an ignored address: there each address counts alone.
    @Test func networksAroundTheGatewayOrAnIgnoredAddressCountPerAddress() throws {
        let dir = TempDir()
        var def = try JailRuntimeTests.jail(dir, ignore: "203.0.113.9")
        def.banPrefix4 = 24
        let decisions = Locked<[BanDecision]>([])
        let gateways = Gateways(maxAge: 60) { [IPAddress("192.0.2.1")!] }
        let runtime = try JailRuntime(def, log: Logger(level: .critical), gateways: gateways) { d in decisions.withLock { $0.append(d) } }
        for ip in ["198.51.100.5", "198.51.100.6", "192.0.2.5", "192.0.2.6", "203.0.113.5", "203.0.113.6"] {
            let line = Array(JailRuntimeTests.line(ip).dropLast().utf8)
            line.withUnsafeBufferPointer { runtime.process($0, inOperation: true) }
        }
        #expect(decisions.withLock { $0.map(\.ip) } == [net("198.51.100.0/24")])
        let counted = Set(runtime.failing(limit: 10, after: nil).list.map(\.ip))
        #expect(counted == [net("192.0.2.5"), net("192.0.2.6"), net("203.0.113.5"), net("203.0.113.6")])
    }

    @Test func ignoredAddressesInsideANetwork() {
        var list = IgnoreList.parse("192.0.2.10 2001:db8:5::/48", ignoreSelf: false).list
        #expect(list.reason(covering: net("192.0.2.0/24")) == "it contains 192.0.2.10, in ignoreip")
        #expect(list.reason(covering: net("2001:db8::/32")) == "it overlaps 2001:db8:5::/48, in ignoreip")
        #expect(list.reason(covering: net("2001:db8:5:1::/64")) == "it overlaps 2001:db8:5::/48, in ignoreip")
        #expect(list.reason(covering: net("198.51.100.0/24")) == nil)
        list.ignoreSelf = true
        #expect(list.reason(covering: net("127.0.0.0/8"))?.contains("ignoreself") == true)
    }
}
