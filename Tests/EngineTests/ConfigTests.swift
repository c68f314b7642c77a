import Foundation
import TestSupport
import Testing

@testable import Engine

@Suite("INI dialect")
struct IniFileTests {
    @Test func continuationCommentsAndDefaults() throws {
        let text = """
            # comment
            [DEFAULT]
            base = /var/log
            [jail]
            Key = first
                  second ; inline comment

                  third
            ; a comment line inside the value
                  fourth
            other: value # not a comment
            empty =
            """
        let f = try IniFile.parse(text, path: "t.conf")
        #expect(f.defaults["base"]?.value == "/var/log")
        #expect(f.sections["jail"]?["key"]?.value == "first\nsecond\n\nthird\nfourth")
        #expect(f.sections["jail"]?["key"]?.location == SourceLocation(file: "t.conf", line: 5))
        #expect(f.sections["jail"]?["other"]?.value == "value # not a comment")
        #expect(f.sections["jail"]?["empty"]?.value == "")
    }

    @Test func errorsNameFileAndLine() {
        #expect {
            try IniFile.parse("key = value\n", path: "a.conf")
        } throws: { e in
            (e as? ConfigError)?.location == SourceLocation(file: "a.conf", line: 1)
        }
        #expect {
            try IniFile.parse("[s]\nkey = 1\nthis line has no delimiter\n", path: "b.conf")
        } throws: { e in
            let c = e as? ConfigError
            return c?.location == SourceLocation(file: "b.conf", line: 3) && c!.message.contains("this line has no delimiter")
        }
    }

    @Test func crlfAndUnicode() throws {
        let f = try IniFile.parse("[s]\r\nname = Grüße\r\n", path: "c.conf")
        #expect(f.sections["s"]?["name"]?.value == "Grüße")
    }
}

@Suite("fail2ban config stack")
struct ConfigStackTests {
    @Test func includesLocalOverlaysAndKnown() throws {
        let dir = TempDir()
        dir.write("common.conf", "[DEFAULT]\nprefix = C\n[Definition]\nshared = from-common\n")
        dir.write("filter.d/f.conf", "[INCLUDES]\nbefore = ../common.conf\n[Definition]\nfailregex = a\nx = %(prefix)s-%(shared)s\n")
        dir.write("filter.d/f.local", "[Definition]\nfailregex = %(known/failregex)s\n            b\n")
        let stack = try ConfigStack.read([dir.path + "/filter.d/f.conf"], cache: IniCache())
        #expect(try stack.get("Definition", "failregex") == "a\nb")
        #expect(try stack.get("Definition", "x") == "C-from-common")
        #expect(stack.files.map { ($0 as NSString).lastPathComponent } == ["common.conf", "f.conf", "f.local"])
    }

    @Test func sectionReferencesAndName() throws {
        var stack = ConfigStack()
        stack.merge(
            try IniFile.parse(
                """
                [DEFAULT]
                backend = auto
                default_backend = %(default/backend)s
                [lt_file]
                datepattern = {^LN-BEG}
                [jail]
                dp = %(lt_file/datepattern)s
                me = %(__name__)s
                b = %(default_backend)s
                pct = 100%%
                """, path: "j.conf"))
        #expect(try stack.get("jail", "dp") == "{^LN-BEG}")
        #expect(try stack.get("jail", "me") == "jail")
        #expect(try stack.get("jail", "b") == "auto")
        #expect(try stack.get("jail", "pct") == "100%")
    }

    @Test func brokenInterpolationIsReportedWithItsLine() throws {
        var stack = ConfigStack()
        stack.merge(try IniFile.parse("[j]\na = %(missing)s\nloop = %(loop)s\nbad = 50%\n", path: "j.conf"))
        #expect { try stack.get("j", "a") } throws: { e in
            let c = e as! ConfigError
            return c.location?.line == 2 && c.message.contains("missing")
        }
        #expect { try stack.get("j", "loop") } throws: { e in (e as! ConfigError).message.contains("deeper") }
        #expect { try stack.get("j", "bad") } throws: { e in (e as! ConfigError).location?.line == 4 }
    }

    @Test func nestedTagsAndModes() throws {
        var opts = OrderedMap<String>()
        opts["failregex"] = "^<lt_<logtype>/prefix>x <mdre-<mode>>"
        opts["logtype"] = "file"
        opts["mode"] = "aggressive"
        opts["mdre-aggressive"] = "AGG"
        let resolved = try TagSubstitution.substitute(opts) { name throws(ConfigError) in
            name == "lt_file/prefix" ? "P:" : nil
        }
        #expect(resolved["failregex"] == "^P:x AGG")
        var loop = OrderedMap<String>()
        loop["a"] = "<b>"
        loop["b"] = "<a>"
        #expect(throws: ConfigError.self) { try TagSubstitution.substitute(loop) { _ throws(ConfigError) in nil } }
    }

    @Test func filterOptionSyntax() throws {
        let (name, opts) = try OptionSyntax.extract(#"dovecot[mode=aggressive, logtype="short, with comma", x='q']"#)
        #expect(name == "dovecot")
        #expect(opts["mode"] == "aggressive")
        #expect(opts["logtype"] == "short, with comma")
        #expect(opts["x"] == "q")
        #expect(throws: ConfigError.self) { try OptionSyntax.extract("x[mode=1") }
        #expect(OptionSyntax.splitEntries("a[p=\"1, 2\"]\n  b[q=3] c") == [#"a[p="1, 2"]"#, "b[q=3]", "c"])
    }
}

@Suite("durations, ports and addresses")
struct ValueParsingTests {
    @Test(arguments: [
        ("600", 600.0), ("10m", 600), ("1h30m", 5400), ("1h 30m", 5400), ("1d", 86400), ("12w", 7_257_600),
        ("-1", -1), ("1hour+30min", 5400), ("1year-6mo", 15_778_800), ("2*3600", 7200), ("1.5h", 5400), ("90s", 90),
    ])
    func duration(_ text: String, _ seconds: Double) throws {
        #expect(try TimeExpression.seconds(text) == seconds)
    }

    @Test func badDurations() {
        for bad in ["", "ten minutes", "1x", "5/0", "(1"] {
            #expect(throws: TimeExpression.ParseError.self) { try TimeExpression.seconds(bad) }
        }
    }

    /// Values that trapped the ban path or a reload: refused when read, with the reason.
    @Test func durationsOutOfRange() {
        for bad in ["999999999999w", "99999999999999999999", "-99999999999999999999", "1e400", "100001y"] {
            #expect(throws: TimeExpression.ParseError.self) { try TimeExpression.seconds(bad) }
        }
        #expect(throws: TimeExpression.ParseError.self) { try TimeExpression.seconds("99999999999999999999") }
        #expect((try? TimeExpression.seconds("100000y")) == TimeExpression.longest)
        // Describing any value never traps.
        #expect(TimeExpression.describe(.infinity) == "unlimited")
        #expect(TimeExpression.describe(1e300).hasSuffix("y"))
        #expect(TimeExpression.describe(BanTimePolicy.longest) == "584y")
    }

    @Test func ports() throws {
        let p = try Ports.parse("pop3,pop3s,imap,imaps,submission,465,sieve,1100,1000:2000")
        #expect(p.map(\.first) == [110, 995, 143, 993, 587, 465, 4190, 1100, 1000])
        #expect(p.last?.last == 2000)
        #expect(throws: Ports.ResolveError.self) { try Ports.parse("nosuchservice") }
        #expect(throws: Ports.ResolveError.self) { try Ports.parse("70000") }
        #expect(throws: Ports.ResolveError.self) { try Ports.parse("2000:1000") }
    }

    @Test func addresses() {
        #expect(IPAddress("192.0.2.1")?.description == "192.0.2.1")
        #expect(IPAddress("::ffff:192.0.2.1") == IPAddress("192.0.2.1"))
        #expect(IPAddress("2001:DB8::1")?.description == "2001:db8::1")
        #expect(IPAddress("[2001:db8::1]")?.description == "2001:db8::1")
        #expect(IPAddress("999.1.1.1") == nil)
        #expect(IPAddress("example.com") == nil)
        let net = IPNetwork("192.0.2.0/24")!
        #expect(net.contains(IPAddress("192.0.2.200")!))
        #expect(!net.contains(IPAddress("192.0.3.1")!))
        #expect(IPNetwork("192.0.2.7/255.255.255.0")?.description == "192.0.2.0/24")
        #expect(IPNetwork("2001:db8::/32")!.contains(IPAddress("2001:db8:1::5")!))
    }

    @Test func ignoreList() {
        let (list, problems) = IgnoreList.parse("127.0.0.1/8 ::1, 192.0.2.0/24 198.51.100.7 myhost bad/99", ignoreSelf: false) { name in
            name == "myhost" ? [IPAddress("203.0.113.9")!] : []
        }
        #expect(list.contains(IPAddress("127.3.4.5")!))
        #expect(list.contains(IPAddress("192.0.2.99")!))
        #expect(list.contains(IPAddress("198.51.100.7")!))
        #expect(list.contains(IPAddress("203.0.113.9")!))
        #expect(!list.contains(IPAddress("203.0.113.10")!))
        #expect(problems.count == 1 && problems[0].contains("bad/99"))
    }
}
