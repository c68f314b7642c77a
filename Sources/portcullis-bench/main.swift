import Engine
import Foundation
import Platform
import Synchronization

/// `portcullis-bench live CONFIG FILTER LOG [N]`: the live path. A jail with FILTER (from CONFIG/filter.d) follows
/// a fresh log file while this program appends the first N lines of LOG to it as fast as it can, in 64 KiB
/// writes; it reports lines per second from the first write until the jail has read the last line, and how many
/// ban decisions were made.
func live(_ args: [String]) throws {
    guard args.count >= 3 else { throw Usage() }
    let configDir = args[0], filterName = args[1], source = args[2]
    let limit = args.count > 3 ? Int(args[3]) ?? Int.max : Int.max
    let reader = try FilterReader(name: filterName, jail: "bench", options: OrderedMap(), directory: ConfigDirectory(configDir))
    reader.applyAutoOptions(backend: "auto")
    try reader.readOptions([:], all: false)
    let filter = try reader.definition()
    let dir = NSTemporaryDirectory() + "portcullis-bench-\(getpid())"
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(atPath: dir) }
    let logPath = dir + "/mail.log"
    _ = FileManager.default.createFile(atPath: logPath, contents: nil)
    let jail = JailDefinition(
        name: "bench", filter: filter, filterSpec: filterName, logPaths: [LogPath(pattern: logPath, tail: false)],
        backend: .inotify, maxRetry: 3, findTime: 86400 * 3650, banTime: .seconds(3600), ports: [], portSpec: "", protocol: "tcp",
        ignoreList: IgnoreList(ignoreSelf: false), banAction: "dry-run", actions: [], logEncoding: "auto", logTimeZone: nil,
        maxMatches: 3, maxTracked: 100_000, location: nil)
    let decisions = Atomic<Int>(0)
    let runtime = try JailRuntime(jail, log: Logger(level: .error)) { _ in decisions.add(1, ordering: .relaxed) }
    runtime.start()
    defer { runtime.stop() }
    usleep(200_000)

    // Read the source lines up front so that the writer is not the bottleneck.
    var data = Data()
    var count = 0
    try FileLines.forEach(path: source) { line in
        guard count < limit else { return }
        data.append(contentsOf: line)
        data.append(10)
        count += 1
    }
    let out = open(logPath, O_WRONLY | O_APPEND)
    let start = Clock.monotonic()
    data.withUnsafeBytes { raw in
        var off = 0
        while off < raw.count {
            let n = write(out, raw.baseAddress! + off, min(65536, raw.count - off))
            if n <= 0 { break }
            off += n
        }
    }
    close(out)
    let written = Clock.monotonic()
    while runtime.counters.linesRead < count { usleep(200) }
    let end = Clock.monotonic()
    print(
        String(
            format: "live: %d lines in %.3f s (writer done after %.3f s): %.0f lines/s through watcher → filter → tracker; %d ban decisions",
            count, end - start, written - start, Double(count) / (end - start), decisions.load(ordering: .relaxed)))
}

struct Usage: Error, CustomStringConvertible {
    var description: String {
        """
        usage: portcullis-bench live CONFIG_DIR FILTER LOG [LINES]
               portcullis-bench latency CONFIG_DIR [BANS]     (inside unshare -n, as root)
               portcullis-bench bulk CONFIG_DIR [BANS]        (inside unshare -n, as root)
               portcullis-bench nft-smoke | nft-overlap        (inside unshare -n, as root)
        """
    }
}

/// A dovecot jail (Portcullis' filter) on a fresh log, banning at the first failure, with the real nftables
/// backend and a store in a scratch directory. For the ban benchmarks; run inside `unshare -n`.
final class BanRig {
    let dir: String
    let logPath: String
    let store: BanStore
    let firewall: NftablesFirewall
    let manager: BanManager
    var jail: JailDefinition
    var runtime: JailRuntime!
    let setup: BanManager.JailSetup

    /// `banPrefix6`: the jail's `banprefix6` (the benchmark's addresses each lie in their own /64).
    init(configDir: String, banPrefix6: Int = 128) throws {
        dir = NSTemporaryDirectory() + "portcullis-bench-\(getpid())"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        logPath = dir + "/mail.log"
        _ = FileManager.default.createFile(atPath: logPath, contents: nil)
        let reader = try FilterReader(name: "dovecot", jail: "dovecot", options: OrderedMap(), directory: ConfigDirectory(configDir))
        reader.applyAutoOptions(backend: "auto")
        try reader.readOptions([:], all: false)
        jail = JailDefinition(
            name: "dovecot", filter: try reader.definition(), filterSpec: "dovecot", logPaths: [LogPath(pattern: logPath)],
            backend: .inotify, maxRetry: 1, findTime: 600, banTime: .seconds(3600), ports: [PortRange(first: 1100, last: 1100, name: "1100")],
            portSpec: "1100", protocol: "tcp", ignoreList: IgnoreList(ignoreSelf: false), banAction: "nftables-multiport",
            actions: [], logEncoding: "auto", logTimeZone: nil, maxMatches: 1, maxTracked: 200_000, location: nil)
        jail.banPrefix6 = banPrefix6
        store = try BanStore(path: dir + "/bans.sqlite3")
        firewall = try NftablesFirewall()
        manager = BanManager(store: store, log: Logger(level: .error))
        setup = BanManager.JailSetup(
            definition: jail, policy: try BanTimePolicy(base: .seconds(3600), increment: BanTimeIncrement()),
            firewall: firewall, rules: JailRules.forJail(jail).rules)
    }

    func start() throws {
        try manager.start([setup])
        let m = manager
        runtime = try JailRuntime(jail, log: Logger(level: .error)) { m.submit($0) }
        runtime.start()
        usleep(200_000)
    }

    func stop() {
        runtime?.stop()
        manager.stop(removeLayout: true)
        try? FileManager.default.removeItem(atPath: dir)
    }

    static func line(_ ip: String, _ i: Int) -> String {
        let stamp = LogTime.format(Clock.now())
        return "\(stamp) pop3-login: Info: Disconnected (auth failed, 1 attempts in 2 secs): user=<x>, method=PLAIN, rip=\(ip), lip=127.0.0.1, session=<\(i)>\n"
    }

    static func address(_ i: Int) -> String { "2001:db8:\(String(i >> 16, radix: 16)):\(String(i & 0xffff, radix: 16))::1" }
}

func rssKiB() -> Int {
    let status = (try? String(contentsOfFile: "/proc/self/status", encoding: .utf8)) ?? ""
    let line = status.split(separator: "\n").first { $0.hasPrefix("VmRSS:") } ?? ""
    return Int(line.split(separator: " ").dropFirst().first ?? "0") ?? 0
}

/// `portcullis-bench latency CONFIG [N]`: from appending one failure line to its address being in the kernel set,
/// N times (one at a time); prints p50, p90, p99 and max.
func latency(_ args: [String]) throws {
    let n = args.count > 1 ? Int(args[1]) ?? 1000 : 1000
    let rig = try BanRig(configDir: args.first ?? "config")
    try rig.start()
    defer { rig.stop() }
    let out = open(rig.logPath, O_WRONLY | O_APPEND)
    defer { close(out) }
    var samples: [Double] = []
    for i in 0..<n {
        let ipText = BanRig.address(i)
        let ip = IPAddress(ipText)!
        let bytes = Array(BanRig.line(ipText, i).utf8)
        let t0 = Clock.monotonic()
        _ = bytes.withUnsafeBytes { write(out, $0.baseAddress, $0.count) }
        // The manager marks the ban active only after the netlink transaction was acknowledged.
        while !rig.manager.isBanned(jail: "dovecot", ip: ip) {
            if Clock.monotonic() - t0 > 5 { throw Usage() }
        }
        samples.append((Clock.monotonic() - t0) * 1000)
        usleep(2000)
    }
    samples.sort()
    func pct(_ p: Double) -> Double { samples[min(samples.count - 1, Int(Double(samples.count) * p))] }
    print(
        String(
            format: "ban latency over %d bans (failure line appended → element in the kernel set): p50 %.3f ms, p90 %.3f ms, p99 %.3f ms, max %.3f ms",
            n, pct(0.5), pct(0.9), pct(0.99), samples.last ?? 0))
}

/// `portcullis-bench bulk CONFIG [N [PREFIX6]]`: N distinct addresses fail once each (one log write of N lines);
/// prints the time until all N are banned (store and kernel), the RSS then, and the time a restart takes to restore
/// them. Each address lies in its own /64: with PREFIX6 = 64 (the jail's banprefix6) the bans are N /64 networks.
func bulk(_ args: [String]) throws {
    let n = args.count > 1 ? Int(args[1]) ?? 100_000 : 100_000
    let prefix6 = args.count > 2 ? Int(args[2]) ?? 128 : 128
    let rig = try BanRig(configDir: args.first ?? "config", banPrefix6: prefix6)
    try rig.start()
    var text = ""
    text.reserveCapacity(n * 160)
    for i in 0..<n { text += BanRig.line(BanRig.address(i), i) }
    let data = Array(text.utf8)
    text = ""
    let out = open(rig.logPath, O_WRONLY | O_APPEND)
    let t0 = Clock.monotonic()
    data.withUnsafeBytes { raw in
        var off = 0
        while off < raw.count { let w = write(out, raw.baseAddress! + off, raw.count - off); if w <= 0 { break }; off += w }
    }
    close(out)
    var readAt: Double? = nil
    var lastReport = 0.0
    let verbose = getenv("PORTCULLIS_BENCH_TRACE") != nil
    while rig.manager.activeCount < n {
        usleep(1000)
        if verbose && Clock.monotonic() - t0 - lastReport > 0.2 {
            lastReport = Clock.monotonic() - t0
            print(String(format: "  t=%.2f s: lines %d, bans %d", lastReport, rig.runtime.counters.linesRead, rig.manager.activeCount))
        }
        if readAt == nil && rig.runtime.counters.linesRead >= n { readAt = Clock.monotonic() - t0 }
        if Clock.monotonic() - t0 > 120 { throw Usage() }
    }
    let banned = Clock.monotonic() - t0
    if let readAt { print(String(format: "  (the jail had read and judged every line after %.2f s)", readAt)) }
    let rss = rssKiB()
    print(
        String(
            format:
                "%d distinct addresses (banprefix6 %d) banned (failure lines written → in the store and the kernel) in %.2f s (%.0f bans/s); RSS of the whole benchmark process then: %d MiB",
            n, prefix6, banned, Double(n) / banned, rss / 1024))
    // Restart: a new manager on the same store installs every ban in one transaction.
    rig.runtime.stop()
    rig.manager.stop(removeLayout: true)
    let again = BanManager(store: rig.store, log: Logger(level: .error))
    let t1 = Clock.monotonic()
    try again.start([rig.setup])
    let restored = Clock.monotonic() - t1
    print(String(format: "restart: %d bans read from the store and installed in the kernel in %.2f s", again.bans.count, restored))
    again.stop(removeLayout: true)
    try? FileManager.default.removeItem(atPath: rig.dir)
}

/// `portcullis-bench nft-smoke`: installs a table with one jail and two bans (run it inside `unshare -n`).
func nftSmoke() throws {
    let fw = try NftablesFirewall()
    let rules = JailRules(jail: "dovecot", l4proto: 6, ports: [110...110, 995...995, 1000...2000], drop: false)
    let now = Clock.now()
    try fw.install(
        [rules],
        bans: [
            BanEntry(jail: "dovecot", ip: IPNetwork("127.0.0.66")!, expiresAt: now + 600),
            BanEntry(jail: "dovecot", ip: IPNetwork("::1")!, expiresAt: nil),
            BanEntry(jail: "dovecot", ip: IPNetwork("2001:db8:1:2::/64")!, expiresAt: now + 600),
        ], now: now)
    try fw.add([BanEntry(jail: "dovecot", ip: IPNetwork("192.0.2.7")!, expiresAt: now + 60)], now: now)
    try fw.add([BanEntry(jail: "dovecot", ip: IPNetwork("192.0.2.0/24")!, expiresAt: now + 60)], replacing: [("dovecot", IPNetwork("192.0.2.7")!)], now: now)
    try fw.remove([("dovecot", IPNetwork("192.0.2.99")!)])
    print("installed")
}

/// `portcullis-bench nft-overlap`: what the kernel does with overlapping and adjacent networks in one of our
/// network (interval) sets (run it inside `unshare -n`). Portcullis never sends an overlap (a network ban replaces
/// the narrower ones it covers); this shows why it must not: one line per attempt, "accepted" or the kernel's errno.
func nftOverlap() throws {
    let fw = try NftablesFirewall()
    let now = Clock.now()
    try fw.install([JailRules(jail: "j", l4proto: 6, ports: [], drop: false)], bans: [], now: now)
    func attempt(_ name: String, _ network: String) {
        do {
            try fw.add([BanEntry(jail: "j", ip: IPNetwork(network)!, expiresAt: now + 600)], now: now)
            print("\(name) \(network): accepted")
        } catch {
            print("\(name) \(network): errno \((error as? NftablesError)?.code ?? -1)")
        }
    }
    attempt("first", "198.51.100.0/24")
    attempt("wider", "198.51.0.0/16")
    attempt("narrower", "198.51.100.128/25")
    attempt("adjacent-below", "198.51.99.0/24")
    attempt("adjacent-above", "198.51.101.0/24")
    attempt("first6", "2001:db8:1:2::/64")
    attempt("wider6", "2001:db8::/32")
    attempt("adjacent6", "2001:db8:1:3::/64")
    attempt("top", "255.255.255.0/24")
}

let args = Array(CommandLine.arguments.dropFirst())
do {
    switch args.first {
    case "live": try live(Array(args.dropFirst()))
    case "nft-smoke": try nftSmoke()
    case "nft-overlap": try nftOverlap()
    case "latency": try latency(Array(args.dropFirst()))
    case "bulk": try bulk(Array(args.dropFirst()))
    default: throw Usage()
    }
} catch {
    FileHandle.standardError.write(Data("\(error)\n".utf8))
    exit(2)
}
