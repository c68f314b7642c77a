import Foundation
import Testing

/// `portcullis regex` held to fail2ban-regex line by line, and the daemon's live path to fail2ban's daemon, on long
/// logs built from fail2ban's sample logs (Tests/IntegrationTests/differential/differential.py says how). The script
/// runs fail2ban's own code from Debian's package as the oracle and prints every difference with the filter, the
/// line and both verdicts.
@Suite("differential against fail2ban")
struct DifferentialTests {
    static let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .appendingPathComponent("differential/differential.py").path
    static let available =
        FileManager.default.fileExists(atPath: "/usr/lib/python3/dist-packages/fail2ban/client/fail2banregex.py")
        && FileManager.default.fileExists(atPath: "/etc/fail2ban/filter.d")

    @Test(
        "every line, every stock filter; the daemon's failures", .enabled(if: available, "needs Debian's fail2ban package"),
        .timeLimit(.minutes(20)))
    func identicalToFail2ban() throws {
        let r = try Binary.runTool("/usr/bin/python3", [Self.script, Binary.url.path])
        print(r.stdout)
        #expect(
            r.status == 0,
            "differences from fail2ban:\n\(r.stdout.split(separator: "\n").filter { $0.hasPrefix("DIFFERENCE") }.prefix(30).joined(separator: "\n"))\n\(r.stderr.suffix(3000))"
        )
        // It really compared: hundreds of thousands of lines, and a daemon with a jail per single-line filter.
        let summary = try #require(
            r.stdout.firstMatch(of: /(\d+) lines compared .*live path: (\d+) jails in one daemon, (\d+) failures/),
            "the script did not finish: \(r.stderr.suffix(3000))")
        #expect(Int(summary.1)! > 400_000)
        #expect(Int(summary.2)! >= 50 && Int(summary.3)! > 50_000)
    }
}
