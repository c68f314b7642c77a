import Foundation
import Testing

/// The daemon against the real kernel: nftables sets and rules, TCP connections on loopback, restarts, SIGKILL,
/// a missing CAP_NET_ADMIN. Each scenario runs in a private network namespace (`unshare -n`) that exists only for
/// it, so the host's packet filter is never touched; `netns/scenario.py` refuses to run anywhere else.
@Suite("kernel (private network namespace)", .serialized)
struct KernelTests {
    static let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("netns/scenario.py").path
    static let config = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("config").path
    static let usable: Bool = getuid() == 0 && FileManager.default.isExecutableFile(atPath: "/usr/bin/unshare")
        && FileManager.default.isExecutableFile(atPath: "/usr/sbin/nft") && FileManager.default.isExecutableFile(atPath: "/usr/bin/python3")

    @Test("scenario", .enabled(if: usable, "needs root, unshare, nft and python3 (CI runs as root)"),
          arguments: ["block", "expiry", "restart", "reload", "storm", "eperm"])
    func scenario(_ name: String) throws {
        let r = try Binary.runTool("/usr/bin/unshare", ["-n", "/usr/bin/python3", Self.script, name, Binary.url.path, Self.config])
        #expect(r.status == 0, "\(name):\n\(r.stdout)\n\(r.stderr)")
        #expect(r.stdout.contains("PASS \(name)"))
    }
}
