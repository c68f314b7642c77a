import CFastScan
import Foundation
import TestSupport
import Testing

@testable import Engine

@Suite("regex analysis")
struct RegexAnalysisTests {
    func literals(_ p: String) -> [String]? {
        RegexAnalysis.requiredLiterals(p)?.map { String(decoding: $0, as: UTF8.self) }
    }

    @Test func requiredLiterals() {
        #expect(literals("^authentication failure; logname=\\S*") == ["authentication failure; logname="])
        #expect(literals("^(?:Aborted login|Disconnected) \\(x\\) rip=(?P<ip4>\\d+)")?.sorted() == ["Aborted login", "Disconnected"])
        #expect(literals("^[a-z]{3}\\(\\S*\\): (?:[Uu]nknown user|[Pp]assword mismatch)")?.sorted() == ["assword mismatch", "nknown user"])
        // Optional parts and case-insensitive parts promise nothing.
        #expect(literals("^(?:optional literal)?\\d+") == nil)
        #expect(literals("(?i)^failed login") == nil)
        #expect(literals("^(?i:FAILED) from here") == [" from here"])
        // A branch without a literal makes the whole alternation useless.
        #expect(literals("^(?:abcdef|\\d+)$") == nil)
        // A back-reference is text the analysis cannot know: it promises nothing, even beside long literals.
        #expect(literals("^x(?P<n>\\d+)y (?P=n)") == nil)
        #expect(literals("^xyz(?P<n>\\d+)abc (?P=n)") == nil)
    }

    @Test func universalPrefregexes() {
        #expect(RegexAnalysis.matchesEveryNonEmptyLine("^(?:\\[\\])?\\s*(?:\\S+\\s+)?(?:kernel: )?(?P<content>.+)$"))
        #expect(RegexAnalysis.matchesEveryNonEmptyLine("^(?P<mlfid>(?:\\S+\\s+)?)(?:x: )?(?P<content>.+)$"))
        #expect(!RegexAnalysis.matchesEveryNonEmptyLine("^\\s*sshd: (?P<content>.+)$"))
        #expect(!RegexAnalysis.matchesEveryNonEmptyLine("^(?:\\S+\\s+)?+(?P<content>.+)$"))
        #expect(!RegexAnalysis.matchesEveryNonEmptyLine("^(?P<content>.+?)$"))
    }

    @Test(.enabled(if: FileManager.default.fileExists(atPath: "/etc/fail2ban/filter.d/dovecot.conf"), "needs Debian's fail2ban package"))
    func fail2banDovecotIsScreened() throws {
        let reader = try FilterReader(name: "dovecot", jail: "t", options: OrderedMap(), directory: ConfigDirectory("/etc/fail2ban"))
        reader.applyAutoOptions(backend: "auto")
        try reader.readOptions([:], all: false)
        let f = try LineFilter(try reader.definition())
        #expect(f.prefilterLiterals != nil)
        #expect(f.prefRegexIsUniversal)
    }

    @Test func ownFiltersAreScreened() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        for name in ["dovecot", "sshd", "postfix", "nginx-http-auth", "nginx-limit-req"] {
            let reader = try FilterReader(name: name, jail: "t", options: OrderedMap(), directory: ConfigDirectory(root.appendingPathComponent("config").path))
            reader.applyAutoOptions(backend: "auto")
            try reader.readOptions([:], all: false)
            let f = try LineFilter(try reader.definition())
            #expect(f.prefilterLiterals != nil, "\(name)")
            #expect(f.prefRegexIsUniversal || name != "dovecot", "\(name)")
        }
    }

    @Test func screeningNeverHidesAMatch() throws {
        // The same lines through a filter with and without screening give the same failures.
        var options = LineFilter.Options()
        options.checkFindTime = false
        let def = FilterDefinition(
            name: "t",
            failregex: [
                #"^\s*(?:Aborted login|Disconnected) \(auth failed\): rip=<HOST>$"#,
                #"^\s*pam\(\S+,<HOST>\): pam_authenticate\(\) failed"#,
            ])
        let fast = try LineFilter(def, options: options)
        options.literalPrefilter = false
        let slow = try LineFilter(def, options: options)
        #expect(fast.prefilterLiterals != nil && slow.prefilterLiterals == nil)
        let lines = [
            "Disconnected (auth failed): rip=192.0.2.1", "pam(x,192.0.2.2): pam_authenticate() failed: y",
            "Aborted login (auth failed): rip=192.0.2.3", "unrelated 192.0.2.4", "Disconnect (auth failed): rip=192.0.2.5",
            String(repeating: "z", count: 40) + "Disconnected (auth failed): rip=192.0.2.6",
        ]
        var found: [String?] = []
        for l in lines {
            let ids = fast.process(l, now: testNow).map(\.id)
            #expect(ids == slow.process(l, now: testNow).map(\.id), "\(l)")
            found += ids
        }
        // And the matches are there: the screen let through every line that holds a failure.
        #expect(found == ["192.0.2.1", "192.0.2.2", "192.0.2.3"])
    }

    @Test func screenFindsExactlyTheStrings() {
        // Random lines with the strings (and near misses) at every offset, across 32-byte blocks and at the very
        // end: the vectorised screen, the portable one and a plain search agree, and both tell non-ASCII lines.
        let strings = [
            "Disconnected", "auth failed, ", "nknown user", "xy", "): ", "pam_authenticate() failed: ",
            "Aborted login", "assword mismatch", "tried to use ", "Remote closed connection",
        ]
        let literals = strings.map { Array($0.utf8) }
        let fast = LiteralScanner(literals)
        let portable = LiteralScanner(literals, vectorised: false)
        var rng = SeededGenerator("RegexAnalysisTests.screenFindsExactlyTheStrings")
        let alphabet = Array("abcdenkDisx():; _,".utf8) + [0xc3, 0xa9]
        for n in 0..<3000 {
            var line = (0..<Int.random(in: 0...90, using: &rng)).map { _ in alphabet.randomElement(using: &rng)! }
            if n % 3 == 0 {
                var s = literals.randomElement(using: &rng)!
                if n % 2 == 0 { s.removeLast() }  // a near miss
                line.insert(contentsOf: s, at: Int.random(in: 0...line.count, using: &rng))
            }
            let expected = literals.contains { line.firstRange(of: $0) != nil }
            let ascii = line.allSatisfy { $0 < 0x80 }
            let count = line.count
            // An empty line is scanned as zero bytes of a one-byte buffer (the scanners take a pointer).
            (line.isEmpty ? [0] : line).withUnsafeBufferPointer { b in
                let p = b.baseAddress!
                let f = fast.scan(p, count), q = portable.scan(p, count)
                #expect(f.found == expected && q.found == expected, "\(line)")
                #expect(f.ascii == ascii && q.ascii == ascii && (pc_is_ascii(p, count) != 0) == ascii)
            }
        }
    }

    @Test func screeningSeesTheLineWithoutItsDate() throws {
        // "[]" only exists once the date inside the brackets is cut out.
        var options = LineFilter.Options()
        options.checkFindTime = false
        let f = try LineFilter(FilterDefinition(name: "t", failregex: [#"^<HOST> - \S+ \[\] "[^"]*" 400"#]), options: options)
        #expect(f.prefilterLiterals != nil)
        let r = f.process(#"192.0.2.1 - - [14/Aug/2005:10:00:00 +0200] "GET / HTTP/1.1" 400 47"#, now: testNow)
        #expect(r.first?.id == "192.0.2.1")
    }
}

/// `portcullis check`'s warning for regexes whose backtracking can explode.
@Suite struct QuantifierCheckTests {
    @Test(arguments: [#"^(a+)+$"#, #"(\w+\s*)*x"#, #"x(.*)*"#, #"(?:\d+)+"#, #"((ab)*c*)*"#, #"(?P<x>\S+)+"#, #"(a|b+)*"#])
    func nestedRepetitionsAreFound(_ regex: String) {
        #expect(QuantifierCheck.nestedRepetition(in: regex) != nil)
    }

    @Test(arguments: [
        #"(?:[^|]*\|)*"#, #"(a|b)*"#, #"(?:, arg\d+=\S*)*"#, #"(ab)+"#, #"\(a+\)+"#, #"[(a+)+]"#,
        #"(?:\[[^\]]+\] )*"#, #"(?: uname=\S+| error="[^"]+")*"#, #"^(a+)?$"#, #"(a{2,5})+"#, #"(?=a+)+"#,
    ])
    func separatedOrBoundedOnesAreNot(_ regex: String) {
        #expect(QuantifierCheck.nestedRepetition(in: regex) == nil)
    }
}
