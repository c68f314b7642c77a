import Foundation
import Platform
import Testing

@testable import Engine
@testable import Server

/// `/allowlist`, `/jails/{jail}/failures` and networks in the ban paths, against a live daemon.
@Suite(.serialized) struct AllowlistAPITests {
    func appendFailures(_ d: LiveDaemon, _ addresses: [(String, String)]) throws {
        let h = try #require(FileHandle(forWritingAtPath: d.log))
        h.seekToEndOfFile()
        let now = RFC3339.format(Clock.now())
        for (i, (ip, user)) in addresses.enumerated() {
            h.write(
                Data(
                    "\(now) mail dovecot: pop3-login: Disconnected (auth failed, 1 attempts in 2 secs): user=<\(user)>, method=PLAIN, rip=\(ip), lip=127.0.0.1, session=<s\(i)>\n"
                        .utf8))
        }
        try h.close()
    }

    func waitFor(_ condition: () -> Bool) -> Bool {
        for _ in 0..<100 {
            if condition() { return true }
            usleep(50_000)
        }
        return condition()
    }

    @Test func anEntryLiftsWhatItCoversAndRefusesBans() throws {
        let d = try LiveDaemon()
        defer { d.stop() }
        #expect(try d.unix.request("POST", "/jails/dovecot/bans", body: #"{"ip": "203.0.113.7"}"#).status == 201)
        #expect(try d.unix.request("POST", "/jails/dovecot/bans", body: #"{"ip": "2001:db8::/64"}"#).status == 201)
        // A /24 lifts the address inside it; an address inside the banned /64 lifts the /64.
        let added = try d.unix.request("POST", "/allowlist", body: #"{"ip": "203.0.113.0/24", "comment": "office", "expires": "7d"}"#)
        #expect(added.status == 201, "\(added.text)")
        #expect(added.header("Location") == "/allowlist/203.0.113.0/24")
        let entry = try #require(added.json["entry"] as? [String: Any])
        #expect(entry["ip"] as? String == "203.0.113.0/24" && entry["comment"] as? String == "office")
        #expect(entry["jail"] is NSNull && entry["expiresAt"] is String)
        #expect((added.json["lifted"] as? [[String: String]]) == [["jail": "dovecot", "ip": "203.0.113.7"]])
        let inside = try d.unix.request("POST", "/allowlist", body: #"{"ip": "2001:db8::5", "jail": "dovecot"}"#)
        #expect((inside.json["lifted"] as? [[String: String]]) == [["jail": "dovecot", "ip": "2001:db8::/64"]])
        #expect(d.daemon.banManager.activeCount == 0)
        // Bans that would reach an entry: 409, naming it.
        let refused = try d.unix.request("POST", "/jails/dovecot/bans", body: #"{"ip": "203.0.113.9"}"#)
        #expect(refused.status == 409)
        #expect((refused.json["detail"] as? String)?.contains("protected by allowlist 203.0.113.0/24 (every jail, until") == true, "\(refused.text)")
        #expect(try d.unix.request("POST", "/jails/dovecot/bans", body: #"{"ip": "2001:db8::/48"}"#).status == 409)
        // The same network and jail again: replaced (200).
        #expect(try d.unix.request("POST", "/allowlist", body: #"{"ip": "203.0.113.0/24", "comment": "office 2"}"#).status == 200)
        let list = d.tcp.get("/allowlist").json
        let entries = try #require(list["entries"] as? [[String: Any]])
        #expect(entries.map { $0["ip"] as? String } == ["2001:db8::5", "203.0.113.0/24"])
        #expect(entries.last?["comment"] as? String == "office 2" && entries.last?["expiresAt"] is NSNull)
        let configured = try #require(list["configured"] as? [[String: String]])
        #expect(configured.contains(["ip": "127.0.0.0/8", "jail": "dovecot", "source": "ignoreip"]))
        #expect(configured.contains(["ip": "192.0.2.250", "jail": "dovecot", "source": "ignoreip"]))
        // Failures from an entry are not counted.
        try appendFailures(d, [("203.0.113.50", "x"), ("203.0.113.50", "x"), ("198.51.100.1", "y")])
        #expect(waitFor { d.daemon.runningJail(named: "dovecot")?.counters.totalFailed == 1 })
        #expect(d.daemon.runningJail(named: "dovecot")?.counters.ignored == 2)
        // Removed: by jail only, then all of a network.
        #expect(try d.unix.request("DELETE", "/allowlist/2001:db8::5?jail=").status == 404)  // not an every-jail entry
        #expect(try d.unix.request("DELETE", "/allowlist/2001:db8::5?jail=dovecot").status == 200)
        let removed = try d.unix.request("DELETE", "/allowlist/203.0.113.0%2F24")
        #expect(removed.status == 200 && (removed.json["removed"] as? [[String: Any]])?.count == 1)
        #expect(try d.unix.request("DELETE", "/allowlist/203.0.113.0/24").status == 404)
        #expect(try d.unix.request("POST", "/jails/dovecot/bans", body: #"{"ip": "203.0.113.9"}"#).status == 201)
    }

    @Test(arguments: [
        (#"{"ip": "203.0.113.0/33"}"#, 400), (#"{"ip": "x"}"#, 400), (#"{}"#, 400), (#"{"ip": "203.0.113.1", "jail": ""}"#, 400),
        (#"{"ip": "203.0.113.1", "jail": "nope"}"#, 404), (#"{"ip": "203.0.113.1", "expires": "-1"}"#, 400),
        (#"{"ip": "203.0.113.1", "expires": 0}"#, 400), (#"{"ip": "203.0.113.1", "expires": "soon"}"#, 400),
        (#"{"ip": "203.0.113.1", "comment": "a\nb"}"#, 400), (#"{"ip": "203.0.113.1", "extra": 1}"#, 400),
    ])
    func badEntriesAreRefused(_ body: String, _ status: Int) throws {
        let d = try LiveDaemon()
        defer { d.stop() }
        let r = try d.unix.request("POST", "/allowlist", body: body)
        #expect(r.status == status, "\(body): \(r.text)")
        #expect(d.daemon.banManager.allowlist?.list().isEmpty == true)
    }

    @Test func entriesPersistAndExpire() throws {
        let d = try LiveDaemon()
        #expect(try d.unix.request("POST", "/allowlist", body: #"{"ip": "198.51.100.0/24", "jail": "dovecot"}"#).status == 201)
        #expect(try d.unix.request("POST", "/allowlist", body: #"{"ip": "192.0.2.77", "expires": 1}"#).status == 201)
        // Expired: it protects nothing from its end, and the daemon's periodic work takes it out of the store.
        usleep(1_300_000)
        #expect(d.daemon.banManager.allowlist?.list().map(\.ip.description) == ["198.51.100.0/24"])
        #expect(try d.unix.request("POST", "/jails/dovecot/bans", body: #"{"ip": "192.0.2.77"}"#).status == 201)
        d.control.sync { d.daemon.periodic() }
        #expect(try d.daemon.store!.allowlistEntries().map(\.ip.description) == ["198.51.100.0/24"])
        // A restart (the same store) keeps the entry, and it still protects.
        let store = d.dir.path + "/db.sqlite3"
        d.stop()
        let again = try Allowlist(store: try BanStore(path: store))
        #expect(again.entry(protecting: IPNetwork("198.51.100.9")!, jail: "dovecot")?.ip.description == "198.51.100.0/24")
        #expect(again.entry(protecting: IPNetwork("198.51.100.9")!, jail: "sshd") == nil)
    }

    @Test func whoIsFailingNow() throws {
        let d = try LiveDaemon(jail: "maxretry = 5\nbanprefix6 = 64")
        defer { d.stop() }
        try appendFailures(d, [("198.51.100.1", "alice"), ("2001:db8:1:2::7", "bob"), ("2001:db8:1:2::8", "carol"), ("198.51.100.2", "dave")])
        #expect(waitFor { d.daemon.runningJail(named: "dovecot")?.counters.totalFailed == 4 })
        let first = d.tcp.get("/jails/dovecot/failures?limit=2").json
        let page1 = try #require(first["failures"] as? [[String: Any]])
        #expect(page1.map { $0["ip"] as? String } == ["198.51.100.2", "2001:db8:1:2::/64"])
        #expect(page1[1]["failures"] as? Int == 2 && page1[1]["users"] as? [String] == ["bob", "carol"])
        #expect(first["maxretry"] as? Int == 5)
        let next = try #require(first["next"] as? String)
        let second = d.tcp.get("/jails/dovecot/failures?limit=2&after=\(next)").json
        #expect((second["failures"] as? [[String: Any]])?.map { $0["ip"] as? String } == ["198.51.100.1"])
        #expect(second["next"] is NSNull)
        #expect(d.tcp.get("/jails/dovecot/failures?after=zz").status == 400)
        // Twelve base-36 digits always fit the 64-bit generation (openapi.yaml's pattern); thirteen are refused.
        #expect(d.tcp.get("/jails/dovecot/failures?after=fzzzzzzzzzzzz").status == 200)
        #expect(d.tcp.get("/jails/dovecot/failures?after=fibyk0efa4f6w8").status == 400)
        #expect(d.tcp.get("/jails/dovecot/failures?limit=0").status == 400)
        #expect(d.tcp.get("/jails/nope/failures").status == 404)
    }
}
