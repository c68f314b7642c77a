import Foundation
import Platform
import Testing

@testable import Engine

@Suite("gateways, namespace, hooks")
struct NetworkTests {
    @Test func ipv4DefaultRoutesFromProc() {
        // /proc/net/route as a Docker container has it (little-endian hex), plus a route that is not a default one
        // and a default route without a gateway (a point-to-point link).
        let text = """
            Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT
            eth0\t00000000\t010012AC\t0003\t0\t0\t0\t00000000\t0\t0\t0
            eth0\t000012AC\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0
            tun0\t00000000\t00000000\t0001\t0\t0\t0\t00000000\t0\t0\t0
            eth1\t00000000\t0100A8C0\t0003\t0\t0\t100\t00000000\t0\t0\t0
            """
        // (The hex is of the address in host byte order: these lines are a little-endian machine's, as every
        // platform Swift on Linux runs on.)
        #expect(Gateways.ipv4DefaultGateways(text) == [IPAddress("172.18.0.1")!, IPAddress("192.168.0.1")!])
        #expect(Gateways.ipv4DefaultGateways("garbage\nmore garbage\t1\t2") == [])
    }

    @Test func ipv6DefaultRoutesFromProc() {
        let text = """
            00000000000000000000000000000000 00 00000000000000000000000000000000 00 fd000000000000000000000000000001 00000400 00000001 00000000 00000003 eth0
            fd000000000000000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001 eth0
            00000000000000000000000000000000 00 00000000000000000000000000000000 00 00000000000000000000000000000000 ffffffff 00000001 00000000 00200200 lo
            """
        #expect(Gateways.ipv6DefaultGateways(text) == [IPAddress("fd00::1")!])
    }

    @Test func gatewaysAreReadAgainWhenStale() {
        let reads = Locked(0)
        let g = Gateways(maxAge: 5) {
            let n = reads.withLock {
                $0 += 1; return $0
            }
            return n == 1 ? [IPAddress("10.0.0.1")!] : [IPAddress("10.0.0.9")!]
        }
        #expect(g.contains(IPAddress("10.0.0.1")!, now: 100))
        #expect(g.contains(IPAddress("10.0.0.1")!, now: 104))
        #expect(reads.withLock { $0 } == 1)
        #expect(!g.contains(IPAddress("10.0.0.1")!, now: 105))
        #expect(g.contains(IPAddress("10.0.0.9")!, now: 105))
    }

    @Test func orphanedOnlyAfterHavingANetworkAndTheGrace() {
        let names = Locked<[String]>([])
        var w = NamespaceWatch(grace: 3) { names.withLock { $0 } }
        #expect(w.check(now: 0) == nil)  // never had a network: not orphaned, however long
        #expect(w.check(now: 100) == nil)
        names.withLock { $0 = ["eth0"] }
        #expect(w.check(now: 101) == nil)
        names.withLock { $0 = [] }
        #expect(w.check(now: 102) == nil)
        #expect(w.check(now: 104.9) == nil)
        names.withLock { $0 = ["eth0"] }  // back in time: the clock starts again
        #expect(w.check(now: 105) == nil)
        names.withLock { $0 = [] }
        #expect(w.check(now: 106) == nil)
        let why = w.check(now: 109)
        #expect(why?.contains("eth0 removed") == true)
    }

    @Test func chainNamesMapToHooks() throws {
        #expect(try FilterHook(chain: "") == .input)
        #expect(try FilterHook(chain: "<known/chain>") == .input)
        #expect(try FilterHook(chain: " input ") == .input)
        #expect(try FilterHook(chain: "DOCKER-USER") == .forward)
        #expect(try FilterHook(chain: "FORWARD") == .forward)
        #expect(try FilterHook(chain: "PREROUTING") == .prerouting)
        #expect(throws: FilterHook.Unknown.self) { try FilterHook(chain: "OUTPUT") }
    }
}
