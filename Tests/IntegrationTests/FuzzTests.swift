import Foundation
import TestSupport
import Testing

/// A short, bounded libFuzzer run of the HTTP request parser (fuzz/HTTPParserFuzz.swift): built with
/// `swiftc -sanitize=fuzzer,address`, run for 20 seconds from the committed seed corpus. Longer runs are recorded
/// in BENCHMARKS.md.
@Suite struct FuzzTests {
    @Test func httpParserSurvivesABoundedFuzzRun() throws {
        let root = DaemonProcess.repoRoot
        let dir = TempDir()
        let binary = dir.url.path + "/http-parser-fuzz"
        let build = try Binary.runTool(
            "/usr/bin/env",
            [
                "swiftc", "-sanitize=fuzzer,address", "-parse-as-library", "-O",
                root + "/Sources/Server/HTTP/HTTPParser.swift", root + "/fuzz/HTTPParserFuzz.swift", "-o", binary,
            ])
        try #require(build.status == 0, "building the fuzz target failed:\n\(build.stderr)")
        // A scratch corpus: what the run discovers must not land in the repository.
        let corpus = dir.url.path + "/corpus"
        try FileManager.default.copyItem(atPath: root + "/fuzz/corpus", toPath: corpus)
        let run = try Binary.runTool(
            binary,
            [
                "-max_total_time=20", "-timeout=5", "-rss_limit_mb=2048",
                "-artifact_prefix=\(dir.url.path)/", corpus,
            ])
        #expect(run.status == 0, "the fuzzer found a problem:\n\(run.stderr.suffix(4000))")
        #expect(run.stderr.contains("Done "), "\(run.stderr.suffix(2000))")
    }
}
