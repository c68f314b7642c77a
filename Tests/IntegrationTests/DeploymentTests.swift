import Foundation
import TestSupport
import Testing

/// The container files, checked without a Docker engine: compose.yaml with the real Compose v2 (`config`), the
/// jail users write, hadolint on the Dockerfiles,
/// shellcheck on every shell script (deploy/check_deployment.py), and the deployment's configuration tree through
/// `portcullis check`.
@Suite struct DeploymentTests {
    static let root = DaemonProcess.repoRoot

    @Test func containerFilesHoldUp() throws {
        // The Swift image the Dockerfile builds with must be the toolchain this project is tested with.
        let version = try Binary.runTool("/usr/bin/env", ["swift", "--version"])
        let swift = try #require(version.stdout.firstMatch(of: /Swift version ([0-9]+\.[0-9]+(\.[0-9]+)?)/)).1
        let r = try Binary.runTool(
            "/usr/bin/env",
            [
                "python3", Self.root + "/Tests/IntegrationTests/deploy/check_deployment.py",
                Self.root, String(swift),
            ])
        #expect(r.status == 0, "\(r.stdout)\n\(r.stderr)")
        #expect(r.stdout.contains("PASS"))
    }

    @Test func deploymentTreeLoads() throws {
        let dir = TempDir()
        let conf = dir.url.path + "/etc"
        try FileManager.default.copyItem(atPath: Self.root + "/config", toPath: conf)
        for file in ["jail.d/jail.local", "portcullis.local"] {
            try FileManager.default.copyItem(atPath: Self.root + "/deploy/portcullis/" + file, toPath: conf + "/" + file)
        }
        // The mail log where the container has it is not on this machine: point the path there.
        let log = dir.write("mail.log", "")
        _ = dir.write("etc/paths.local", "[DEFAULT]\ndovecot_log = \(log)\n")
        let r = try Binary.run(["check", "--config", conf])
        #expect(r.status == 0, "\(r.stdout)\n\(r.stderr)")
        #expect(r.stdout.contains("[dovecot]"))
        #expect(r.stdout.contains("1100"))
    }
}
