import Engine
import Foundation
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
    FileManager.default.createFile(atPath: logPath, contents: nil)
    let jail = JailDefinition(
        name: "bench", filter: filter, filterSpec: filterName, logPaths: [LogPath(pattern: logPath, tail: false)],
        backend: .inotify, maxRetry: 3, findTime: 86400 * 3650, banTime: 3600, ports: [], portSpec: "", protocol: "tcp",
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
    print(String(format: "live: %d lines in %.3f s (writer done after %.3f s): %.0f lines/s through watcher → filter → tracker; %d ban decisions",
                 count, end - start, written - start, Double(count) / (end - start), decisions.load(ordering: .relaxed)))
}

struct Usage: Error, CustomStringConvertible {
    var description: String {
        "usage: portcullis-bench live CONFIG_DIR FILTER LOG [LINES]"
    }
}

/// `portcullis-bench nft-smoke`: installs a table with one jail and two bans (run it inside `unshare -n`).
func nftSmoke() throws {
    let fw = try NftablesFirewall()
    let rules = JailRules(jail: "dovecot", l4proto: 6, ports: [110...110, 995...995, 1000...2000], drop: false)
    let now = Clock.now()
    try fw.install([rules], bans: [BanEntry(jail: "dovecot", ip: IPAddress("127.0.0.66")!, expiresAt: now + 600),
                                   BanEntry(jail: "dovecot", ip: IPAddress("::1")!, expiresAt: nil)], now: now)
    try fw.add([BanEntry(jail: "dovecot", ip: IPAddress("192.0.2.7")!, expiresAt: now + 60)], now: now)
    try fw.remove([("dovecot", IPAddress("192.0.2.99")!)])
    print("installed")
}

let args = Array(CommandLine.arguments.dropFirst())
do {
    switch args.first {
    case "live": try live(Array(args.dropFirst()))
    case "nft-smoke": try nftSmoke()
    default: throw Usage()
    }
} catch {
    FileHandle.standardError.write(Data("\(error)\n".utf8))
    exit(2)
}
