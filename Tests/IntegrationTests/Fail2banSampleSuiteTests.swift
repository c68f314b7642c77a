import Engine
import Foundation
import TestSupport
import Testing

/// fail2ban's own filter sample suite, run through `portcullis regex --config /etc/fail2ban`.
///
/// Debian's `fail2ban` package installs the sample logs: every log line is preceded by a `# failJSON: {...}`
/// comment saying whether it must match and what the match must capture (host, time, user …). This test follows
/// the semantics of fail2ban's `tests/samplestestcase.py`: `filterOptions` blocks select filter options,
/// `fileOptions` apply to a whole file, `addFILE` pulls in another sample, TZ is `CET-01CEST-02,M3.5.0,M10.5.0`
/// and "now" is 1124013600. Blocks for `logtype = journal` are skipped (there is no journal in a container).
/// Nothing of fail2ban is copied into this repository: the files are read where the package installed them.
@Suite("fail2ban sample suite")
struct Fail2banSampleSuiteTests {
    static let samples = "/usr/lib/python3/dist-packages/fail2ban/tests/files/logs"
    static let config = "/etc/fail2ban"
    static let timeZone = "CET-01CEST-02,M3.5.0,M10.5.0"
    static let testNow = 1124013600.0
    static let installed = FileManager.default.fileExists(atPath: samples)

    /// Filters fail2ban tests: every stock filter but the `*common.conf` helpers. (fail2ban also tests two
    /// `zzz-*` filters of its source tree, which include `common.conf` by a path that only exists in a source
    /// checkout; Debian's installed copy cannot load them, so fail2ban's own suite errors on them there too.)
    static let filters: [String] = {
        let files = (try? FileManager.default.contentsOfDirectory(atPath: config + "/filter.d")) ?? []
        return files.filter { $0.hasSuffix(".conf") && !$0.hasSuffix("common.conf") }.map { String($0.dropLast(5)) }.sorted()
    }()

    @Test(
        "sample log matches its failJSON annotations", .enabled(if: installed, "needs Debian's fail2ban package (apt-get install fail2ban)"),
        arguments: filters)
    func sample(_ name: String) throws {
        try SampleSuite.run(filter: name, config: Self.config, samples: Self.samples, now: Self.testNow)
    }
}

/// Portcullis' own filters (config/filter.d) against the project's own samples (Tests/Fixtures/samples), in the
/// same failJSON format; these include address-injection attempts that must not ban the injected address.
@Suite("Portcullis filter samples")
struct OwnFilterSampleTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    static let config = root.appendingPathComponent("config").path
    static let samples = root.appendingPathComponent("Tests/Fixtures/samples").path
    /// 2005-11-28 12:00 in the samples' time zone.
    static let now = 1133175600.0

    @Test(
        "own sample log matches its failJSON annotations",
        arguments: ["dovecot", "sshd", "postfix", "nginx-http-auth", "nginx-limit-req"])
    func sample(_ name: String) throws {
        try SampleSuite.run(filter: name, config: Self.config, samples: Self.samples, now: Self.now)
    }
}

enum SampleSuite {
    static func run(filter name: String, config: String, samples: String, now: Double) throws {
        let cases = try SampleFile.parse(filter: name, samples: samples)
        #expect(!cases.isEmpty, "no sample lines for \(name)")
        setenv("TZ", Fail2banSampleSuiteTests.timeZone, 1)
        tzset()
        var checkedMatches = 0
        for (filterSpec, lines) in cases.grouped() {
            let dir = TempDir()
            let log = dir.write("sample.log", lines.map(\.line).joined(separator: "\n") + "\n")
            let result = try Binary.run(
                ["regex", "--config", config, "--json", "--now", String(now), log, filterSpec],
                environment: ["TZ": Fail2banSampleSuiteTests.timeZone])
            #expect(result.status == 0, "portcullis regex \(filterSpec) failed: \(result.stderr)")
            let outputs = result.stdout.split(separator: "\n")
            #expect(outputs.count == lines.count, "\(filterSpec): \(outputs.count) JSON lines for \(lines.count) log lines")
            for (sample, output) in zip(lines, outputs) {
                let got = try JSONSerialization.jsonObject(with: Data(output.utf8)) as! [String: Any]
                let problems = sample.check(got)
                if sample.expected["match"] as? Bool == true { checkedMatches += 1 }
                #expect(
                    problems.isEmpty,
                    "\(filterSpec) \(sample.file):\(sample.lineNumber): \(problems.joined(separator: "; "))\n  line: \(sample.line)\n  got:  \(output)")
            }
        }
        #expect(checkedMatches > 0, "\(name): no line expected to match was checked")
    }
}

/// One annotated sample line and what fail2ban expects of it.
struct SampleLine {
    let file: String
    let lineNumber: Int
    let line: String
    let expected: [String: Any]

    func check(_ got: [String: Any]) -> [String] {
        var problems: [String] = []
        let shouldMatch = expected["match"] as? Bool ?? false
        let matched = got["match"] as? Bool ?? false
        if shouldMatch != matched {
            return [shouldMatch ? "line not matched when it should have" : "line matched when it should not have"]
        }
        guard matched else { return [] }
        if let n = got["failures"] as? Int, n > 1 { problems.append("\(n) regexes matched") }
        let fields = got["fields"] as? [String: Any] ?? [:]
        for (key, value) in expected where !["time", "match", "desc", "constraint"].contains(key) {
            switch key {
            case "host":
                let want = value as? String
                let have = got["host"] as? String
                if !SampleLine.sameHost(want, have) { problems.append("host \(have ?? "null") != \(want ?? "null")") }
            case "attempts":
                if (got["attempts"] as? Int) != (value as? Int) { problems.append("attempts \(got["attempts"] ?? "nil") != \(value)") }
            case "users":
                let want = (value as? [String] ?? []).sorted()
                let have = (got["users"] as? [String] ?? []).sorted()
                if want != have { problems.append("users \(have) != \(want)") }
            default:
                let want = value is NSNull ? nil : "\(value)"
                let have = fields[key].map { "\($0)" }
                if want != have { problems.append("\(key) \(have ?? "null") != \(want ?? "null")") }
            }
        }
        if let t = expected["time"] as? String {
            guard let want = SampleLine.localTime(t) else { return problems + ["bad expected time \(t)"] }
            let have = (got["time"] as? NSNumber)?.doubleValue
            if have != want { problems.append("time \(have.map { String($0) } ?? "null") != \(want) (\(t))") }
        }
        return problems
    }

    /// `2005-03-7T02:09:33[.ffffff]` as local time, the way Python's `strptime` + `time.mktime` read it.
    static func localTime(_ text: String) -> Double? {
        let parts = text.split(whereSeparator: { !$0.isNumber }).map { String($0) }
        guard parts.count >= 6, let y = Int(parts[0]), let mo = Int(parts[1]), let d = Int(parts[2]),
            let h = Int(parts[3]), let mi = Int(parts[4]), let s = Int(parts[5])
        else { return nil }
        var tmv = tm()
        tmv.tm_year = Int32(y - 1900); tmv.tm_mon = Int32(mo - 1); tmv.tm_mday = Int32(d)
        tmv.tm_hour = Int32(h); tmv.tm_min = Int32(mi); tmv.tm_sec = Int32(s); tmv.tm_isdst = -1
        var t = Double(mktime(&tmv))
        if parts.count > 6, let frac = Double("0." + parts[6]) { t += frac }
        return t
    }

    static func sameHost(_ a: String?, _ b: String?) -> Bool {
        guard let a, let b else { return a == b }
        if a == b { return true }
        if let x = IPNetwork(a), let y = IPNetwork(b) { return x == y }
        return false
    }
}

/// A sample log parsed the way fail2ban's `samplestestcase.py` walks it.
struct SampleFile {
    /// (filter spec for `portcullis regex`, the lines to run through it in order)
    var entries: [(spec: String, line: SampleLine)] = []

    func grouped() -> [(String, [SampleLine])] {
        var order: [String] = []
        var groups: [String: [SampleLine]] = [:]
        for (spec, line) in entries {
            if groups[spec] == nil { order.append(spec) }
            groups[spec, default: []].append(line)
        }
        return order.map { ($0, groups[$0]!) }
    }

    var isEmpty: Bool { entries.isEmpty }

    struct Block {
        let spec: String
        let options: [String: String]
    }

    static func parse(filter name: String, samples: String) throws -> SampleFile {
        var result = SampleFile()
        var filenames = [name]
        var commonOptions: [String: Any] = [:]
        var blocks: [Block]? = nil
        var index = 0
        while index < filenames.count {
            let file = filenames[index]
            index += 1
            let data = try Data(contentsOf: URL(fileURLWithPath: samples + "/" + file))
            // Split bytes, not Characters: Swift reads "\r\n" as one Character.
            var lines = data.split(separator: 10, omittingEmptySubsequences: false).map { String(decoding: $0, as: UTF8.self) }
            if lines.last == "" { lines.removeLast() }
            var ignoreBlock = false
            var i = 0
            while i < lines.count {
                var line = lines[i]
                i += 1
                var expected: [String: Any] = [:]
                if let (kind, json) = directive(line) {
                    let value = try JSONSerialization.jsonObject(with: Data(json.utf8), options: [.fragmentsAllowed])
                    switch kind {
                    case "fileOptions":
                        commonOptions = value as? [String: Any] ?? [:]
                        continue
                    case "filterOptions":
                        blocks = []
                        ignoreBlock = false
                        let list = value as? [[String: Any]] ?? [value as? [String: Any] ?? [:]]
                        for item in list {
                            var opts = commonOptions
                            for (k, v) in item { opts[k] = v }
                            if let cond = opts["test.condition"] as? String {
                                ignoreBlock = !Constraint.holds(cond, name: name, options: [:])
                            }
                            if ignoreBlock { continue }
                            var filterOptions: [String: String] = [:]
                            for (k, v) in opts where !k.hasPrefix("test.") { filterOptions[k] = "\(v)" }
                            blocks!.append(Block(spec: spec(name, filterOptions), options: filterOptions))
                        }
                        continue
                    case "addFILE":
                        if let f = value as? String { filenames.append(f) }
                        continue
                    default:
                        expected = value as? [String: Any] ?? [:]
                        guard i < lines.count else { continue }
                        line = lines[i]
                        i += 1
                    }
                } else if ignoreBlock || line.hasPrefix("#") || line.trimmingCharacters(in: .whitespaces).isEmpty {
                    continue
                }
                if ignoreBlock { continue }
                if blocks == nil || blocks!.isEmpty { blocks = [Block(spec: name, options: [:])] }
                while line.unicodeScalars.last == "\r" || line.unicodeScalars.last == "\n" { line.unicodeScalars.removeLast() }
                for block in blocks! {
                    // No journal in a container: journal-mode blocks are not run.
                    if block.options["logtype"] == "journal" { continue }
                    if let c = expected["constraint"] as? String, !Constraint.holds(c, name: name, options: block.options) { continue }
                    result.entries.append((block.spec, SampleLine(file: file, lineNumber: i, line: line, expected: expected)))
                }
            }
        }
        return result
    }

    static func spec(_ name: String, _ options: [String: String]) -> String {
        if options.isEmpty { return name }
        let body = options.keys.sorted().map { "\($0)=\"\(options[$0]!)\"" }.joined(separator: ", ")
        return "\(name)[\(body)]"
    }

    /// `# failJSON: {...}`, `# filterOptions: ...`, `# fileOptions: ...`, `# addFILE: "..."`.
    static func directive(_ line: String) -> (String, String)? {
        guard line.hasPrefix("#") else { return nil }
        var rest = line.drop { $0 == "#" }
        if rest.hasPrefix(" ") { rest = rest.dropFirst() }
        for kind in ["failJSON", "fileOptions", "filterOptions", "addFILE"] where rest.hasPrefix(kind + ":") {
            return (kind, String(rest.dropFirst(kind.count + 1)).trimmingCharacters(in: .whitespacesAndNewlines))
        }
        return nil
    }
}

/// The few Python expressions the samples use as constraints: `name == 'sshd'`, `opts.get('mode') != 'x'`.
enum Constraint {
    static func holds(_ expression: String, name: String, options: [String: String]) -> Bool {
        let e = expression.replacingOccurrences(of: " ", with: "")
        for op in ["==", "!="] {
            let parts = e.components(separatedBy: op)
            guard parts.count == 2 else { continue }
            let right = parts[1].trimmingCharacters(in: CharacterSet(charactersIn: "'\""))
            var left: String?
            if parts[0] == "name" {
                left = name
            } else if parts[0].hasPrefix("opts.get(") {
                let key = parts[0].dropFirst(9).dropLast().trimmingCharacters(in: CharacterSet(charactersIn: "'\""))
                left = options[key]
            }
            return op == "==" ? left == right : left != right
        }
        Issue.record("unsupported constraint: \(expression)")
        return false
    }
}

/// `portcullis regex` counts lines the way fail2ban-regex does: the `Lines:` summary of both, run on each sample
/// log with its filter, must be identical. fail2ban-regex runs with `--raw` because Portcullis never resolves host
/// names (fail2ban-regex would otherwise count a failure from an unresolvable name as missed).
@Suite("fail2ban-regex summary parity")
struct Fail2banRegexParityTests {
    static let available =
        FileManager.default.isExecutableFile(atPath: "/usr/bin/fail2ban-regex")
        && Fail2banSampleSuiteTests.installed

    @Test(
        "Lines: summary equals fail2ban-regex --raw", .enabled(if: available, "needs Debian's fail2ban package"),
        arguments: Fail2banSampleSuiteTests.filters)
    func summary(_ name: String) throws {
        let log = Fail2banSampleSuiteTests.samples + "/" + name
        let env = ["TZ": Fail2banSampleSuiteTests.timeZone]
        let theirs = try Binary.runTool("/usr/bin/fail2ban-regex", ["--raw", log, name], environment: env)
        let ours = try Binary.run(["regex", "--config", Fail2banSampleSuiteTests.config, log, name], environment: env)
        func lines(_ s: String) -> String? { s.split(separator: "\n").first { $0.hasPrefix("Lines:") }.map(String.init) }
        #expect(lines(theirs.stdout) != nil, "fail2ban-regex printed no summary: \(theirs.stderr)")
        #expect(lines(ours.stdout) == lines(theirs.stdout))
    }
}
