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
    static let usable: Bool =
        getuid() == 0 && FileManager.default.isExecutableFile(atPath: "/usr/bin/unshare")
        && FileManager.default.isExecutableFile(atPath: "/usr/sbin/nft") && FileManager.default.isExecutableFile(atPath: "/usr/bin/python3")

    @Test(
        "scenario", .enabled(if: usable, "needs root, unshare, nft and python3 (CI runs as root)"),
        arguments: [
            "block", "expiry", "restart", "reload", "storm", "eperm", "limits", "fulldisk", "badjail", "manyports",
            "gateway", "orphan", "hooks", "prefix",
        ])
    func scenario(_ name: String) throws {
        // A private mount namespace too: `fulldisk` mounts a small tmpfs for the database.
        let r = try Binary.runTool(
            "/usr/bin/unshare", ["-n", "-m", "--propagation", "private", "/usr/bin/python3", Self.script, name, Binary.url.path, Self.config])
        #expect(r.status == 0, "\(name):\n\(r.stdout)\n\(r.stderr)")
        #expect(r.stdout.contains("PASS \(name)"))
    }

    static let dovecotScript = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("netns/dovecot_scenario.py").path
    static let repoRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path
    static let dovecotUsable =
        usable && FileManager.default.isExecutableFile(atPath: "/usr/sbin/dovecot")
        && FileManager.default.isExecutableFile(atPath: "/usr/bin/setpriv")

    /// The users' scenario with real dovecot (Debian's dovecot-pop3d; .ci/run installs it): two failed POP3 logins
    /// from 127.0.0.66 ban it, 127.0.0.1 still reads mail, the CLI and the API see and lift the ban, a restart
    /// keeps it; Portcullis runs with CAP_NET_ADMIN as its only capability.
    @Test("dovecot end to end", .enabled(if: dovecotUsable, "needs root, nft, setpriv and dovecot (apt-get install dovecot-pop3d)"))
    func dovecotEndToEnd() throws {
        let r = try Binary.runTool("/usr/bin/unshare", ["-n", "/usr/bin/python3", Self.dovecotScript, Binary.url.path, Self.repoRoot])
        #expect(r.status == 0, "\(r.stdout)\n\(r.stderr)")
        #expect(r.stdout.contains("PASS dovecot"))
    }
}
