import Foundation
import TestSupport
import Testing

/// The fleet on a real PostgreSQL (Debian's `postgresql`; .ci/run installs it): `cluster/cluster_scenario.py` starts
/// the server itself (initdb in the test's directory, stopped by PID) in a private network namespace, and the
/// daemons each in one of their own, with their own nftables tables. It checks propagation, a storm, an unban on
/// another node, an outage of PostgreSQL, a node away and a fresh one, an allowlisted address, a wrong password,
/// TLS with `sslmode=verify-full` and a server that requires it.
@Suite("cluster (real PostgreSQL, private network namespaces)", .serialized)
struct ClusterTests {
    static let script = DaemonProcess.repoRoot + "/Tests/IntegrationTests/cluster/cluster_scenario.py"
    static let usable: Bool =
        getuid() == 0 && FileManager.default.isExecutableFile(atPath: "/usr/bin/unshare")
        && FileManager.default.isExecutableFile(atPath: "/usr/sbin/nft") && FileManager.default.isExecutableFile(atPath: "/usr/bin/setpriv")
        && FileManager.default.fileExists(atPath: "/usr/bin/psql")

    /// deploy/cluster's init script runs a copy of the schema (the postgres image has no Portcullis to ask): it
    /// must be what `portcullis cluster-schema --role portcullis` prints.
    @Test func deployedSchemaIsTheCommandsOutput() throws {
        let r = try Binary.runTool(Binary.url.path, ["cluster-schema", "--role", "portcullis"])
        let file = try String(contentsOfFile: DaemonProcess.repoRoot + "/deploy/cluster/initdb/schema.sql.in", encoding: .utf8)
        #expect(r.status == 0 && r.stdout == file, "regenerate it: portcullis cluster-schema --role portcullis > deploy/cluster/initdb/schema.sql.in")
        let bad = try Binary.runTool(Binary.url.path, ["cluster-schema", "--role", "x; DROP TABLE y"])
        #expect(bad.status == 2 && bad.stderr.contains("is not a plain role name"), "\(bad.stderr)")
    }

    @Test("three nodes and PostgreSQL", .enabled(if: usable, "needs root, unshare, nft, setpriv and PostgreSQL (apt-get install postgresql)"))
    func fleet() throws {
        let dir = TempDir()
        // 10,000 bans replicated, as the issue asks; under a sanitizer (a build five to twenty times slower, run by
        // .ci/sanitizers) 2,000 tell the same.
        let env = ProcessInfo.processInfo.environment
        let storm = env["ASAN_OPTIONS"] != nil || env["TSAN_OPTIONS"] != nil ? "2000" : "10000"
        let r = try Binary.runTool(
            "/usr/bin/unshare",
            [
                "-n", "-m", "--propagation", "private", "/usr/bin/timeout", "600", "/usr/bin/python3", Self.script, Binary.url.path,
                DaemonProcess.repoRoot + "/config", dir.url.path, storm,
            ])
        let logs = ["mx1", "mx2", "mx3", "mx4"].map { n in
            "--- \(n):\n" + ((try? String(contentsOfFile: dir.url.path + "/\(n)/serve.log", encoding: .utf8))?.suffix(2500) ?? "")
        }
        #expect(r.status == 0, "cluster_scenario.py:\n\(r.stdout)\n\(r.stderr.suffix(3000))\n\(logs.joined(separator: "\n"))")
        #expect(r.stdout.contains("all passed"))
    }
}
