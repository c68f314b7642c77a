import FoundationEssentials
import Glibc
import Platform

/// One way of finding a timestamp in a log line, built the way fail2ban builds its date templates: a `%`-pattern
/// (`%b %d %H:%M:%S`) turned into a regex with strptime-field groups, an epoch number, or a TAI64N label.
/// A template is a description; each `DateDetector` compiles its own copy.
public struct DateTemplate: Sendable {
    public enum Kind: Sendable {
        case pattern
        /// Unix time in seconds (`longForm`: also milli/microseconds); the number is capture group `group`.
        case epoch(longForm: Bool, group: Int)
        case tai64n
    }

    public struct Flags: OptionSet, Sendable {
        public let rawValue: Int
        public init(rawValue: Int) { self.rawValue = rawValue }
        public static let lineBegin = Flags(rawValue: 8)
        public static let lineEnd = Flags(rawValue: 4)
        public static let wordBegin = Flags(rawValue: 2)
        public static let wordEnd = Flags(rawValue: 1)
    }

    public var name: String
    /// The regex in Python syntax (as fail2ban would show it).
    public var regex: String
    /// The `%`-pattern it came from, nil for the built-in epoch and TAI64N templates.
    public var pattern: String?
    public var kind: Kind
    public var flags: Flags = []
    public var weight: Double = 1

    public var isAnchored: Bool { !flags.isDisjoint(with: [.lineBegin, .lineEnd]) }

    enum WordBegin { case no, yes, start }

    // MARK: building

    static let reGlobalFlags = SharedRegex(#"((?:^|(?!<\\))\(\?[a-z]+\))"#)
    static let reNoWordBoundBegin = SharedRegex(#"^\(*(?:\(\?\w+\))?(?:\^|\(*\*\*|\((?:\?:)?\^)"#)
    static let reNoWordBoundEnd = SharedRegex(#"(?<!\\)(?:\$\)?|\\b|\\s|\*\*\)*)$"#)
    static let reGrouped = SharedRegex(#"(?<!\(\?)(?<!\\)\((?!\?)"#)
    static let reGroup = SharedRegex(#"^((?:\(\?\w+\))?\^?(?:\(\?\w+\))?)(.*?)(\$?)$"#)
    static let reLineBoundBegin = SharedRegex(#"^(?:\(\?\w+\))?(?:\^|\((?:\?:)?\^(?!\|))"#)
    static let reLineBoundEnd = SharedRegex(#"(?<![\\\|])(?:\$\)?)$"#)
    static let reDelWordBounds = SharedRegex(#"^\(*(?:\(\?\w+\))?\(*\*\*|(?<!\\)\*\*\)*$"#)
    static let reAlphaPattern = SharedRegex(#"(?<!\%)\%[aAbBpc]"#)
    static let reEpochPattern = SharedRegex(#"(?i)(?<!\\)\{L?EPOCH\}"#)

    /// fail2ban's `DateTemplate.setRegex`: word or line boundaries around the regex, the date in group 1.
    mutating func setRegex(_ input: String, wordBegin: WordBegin = .yes, wordEnd: Bool = true) {
        var regex = input.trimmingWhitespace()
        var globalFlags: String? = nil
        if DateTemplate.reGlobalFlags.search(regex) {
            regex = DateTemplate.reGlobalFlags.sub(regex, count: 1) { g in
                globalFlags = g(1); return ""
            }
        }
        let boundBegin = wordBegin != .no && !DateTemplate.reNoWordBoundBegin.search(regex)
        let boundEnd = wordEnd && !DateTemplate.reNoWordBoundEnd.search(regex)
        if !DateTemplate.reGrouped.search(regex) {
            regex = DateTemplate.reGroup.sub(regex) { g in (g(1) ?? "") + "(" + (g(2) ?? "") + ")" + (g(3) ?? "") }
        }
        flags = []
        if boundBegin {
            if wordBegin != .start {
                flags.insert(.wordBegin)
                regex = #"(?=^|\b|\W)"# + regex
            } else {
                flags.insert(.lineBegin)
                regex = #"^(?:\W{0,2})?"# + regex
                if !name.hasPrefix("{^LN-BEG}") { name = "{^LN-BEG}" + name }
            }
        }
        if boundEnd {
            flags.insert(.wordEnd)
            regex += #"(?=\b|\W|$)"#
        }
        if !flags.contains(.lineBegin) && DateTemplate.reLineBoundBegin.search(regex) { flags.insert(.lineBegin) }
        if !flags.contains(.lineEnd) && DateTemplate.reLineBoundEnd.search(regex) { flags.insert(.lineEnd) }
        regex = DateTemplate.reDelWordBounds.sub(regex) { g in (g(0) ?? "").replacing("**", with: "") }
        if let globalFlags { regex = globalFlags + regex }
        self.regex = regex
    }

    init(name: String, kind: Kind) {
        self.name = name
        self.regex = ""
        self.kind = kind
    }

    /// A template from a `%`-pattern (fail2ban's `DatePatternRegex`), with `{UNB}` and `{^LN-BEG}` prefixes.
    public static func pattern(_ pattern: String, yearRegex: String) throws(ConfigError) -> DateTemplate {
        var p = pattern
        var wordBegin = WordBegin.yes
        var wordEnd = true
        if p.hasPrefix("{UNB}") {
            p.removeFirst(5)
            wordBegin = .no; wordEnd = false
        }
        if wordBegin != .no && p.hasPrefix("{^LN-BEG}") {
            p.removeFirst(9)
            wordBegin = .start
        }
        let (name, regex) = try TimeCodes.expand(p, yearRegex: yearRegex)
        var t = DateTemplate(name: name, kind: .pattern)
        t.pattern = pattern
        var r = regex
        if DateTemplate.reAlphaPattern.search(p) { r = "(?iu)" + r }
        t.setRegex(r, wordBegin: wordBegin, wordEnd: wordEnd)
        return t
    }

    /// Unix timestamps: at line start, in square brackets (nsd) or in SELinux `audit(...)` records.
    public static func epoch(lineBeginOnly: Bool = false, longForm: Bool = false, pattern: String? = nil) -> DateTemplate {
        let epochRE = longForm ? #"\d{10,11}(?:\d{3}(?:\.\d{1,6}|\d{3})?)?"# : #"\d{10,11}\b(?:\.\d{3,6})?"#
        var t = DateTemplate(name: pattern ?? (longForm ? "LongEpoch" : "Epoch"), kind: .epoch(longForm: longForm, group: 1))
        if let pattern {
            let regex = "(" + reEpochPattern.sub(pattern) { _ in "(" + epochRE + ")" } + ")"
            t.kind = .epoch(longForm: longForm, group: 2)
            t.pattern = pattern
            t.setRegex(regex)
        } else if !lineBeginOnly {
            t.setRegex(
                #"((?:^|(?P<square>(?<=^\[))|(?P<selinux>(?<=\baudit\()))"# + epochRE + #")(?:(?(selinux)(?=:\d+\)))|(?(square)(?=\])))"#,
                wordBegin: .no)
        } else {
            t.setRegex(#"((?P<square>(?<=^\[))?"# + epochRE + #")(?(square)(?=\]))"#, wordBegin: .start)
        }
        return t
    }

    public static func tai64n(lineBegin: Bool = false) -> DateTemplate {
        var t = DateTemplate(name: "TAI64N", kind: .tai64n)
        t.setRegex("@[0-9a-f]{24}", wordBegin: lineBegin ? .start : .no)
        return t
    }

    /// A template for a `datepattern` entry, the way fail2ban's `_getPatternTemplate` chooses its class.
    public static func forPattern(_ pattern: String, yearRegex: String) throws(ConfigError) -> DateTemplate {
        let key = pattern.contains("%") ? pattern : pattern.uppercased()
        if key.contains("EPOCH") {
            if reEpochPattern.search(pattern) {
                return epoch(longForm: key.contains("LEPOCH"), pattern: pattern)
            }
            if ["EPOCH", "{^LN-BEG}EPOCH", "^EPOCH"].contains(key) { return epoch(lineBeginOnly: key != "EPOCH") }
            if ["LEPOCH", "{^LN-BEG}LEPOCH", "^LEPOCH"].contains(key) {
                return epoch(lineBeginOnly: key != "LEPOCH", longForm: true)
            }
        }
        if ["TAI64N", "{^LN-BEG}TAI64N", "^TAI64N"].contains(key) { return tai64n(lineBegin: key != "TAI64N") }
        return try DateTemplate.pattern(pattern, yearRegex: yearRegex)
    }

    // MARK: defaults

    static let defaultPatterns = [
        #"%ExY(?P<_sep>[-/.])%m(?P=_sep)%d(?:T|  ?)%H:%M:%S(?:[.,]%f)?(?:\s*%z)?"#,
        #"(?:%a )?%b %d %k:%M:%S(?:\.%f)?(?: %ExY)?"#,
        #"(?:%a )?%b %d %ExY %k:%M:%S(?:\.%f)?"#,
        #"%d(?P<_sep>[-/])%m(?P=_sep)(?:%ExY|%Exy) %k:%M:%S"#,
        #"%d(?P<_sep>[-/])%b(?P=_sep)%ExY[ :]?%H:%M:%S(?:\.%f)?(?: %z)?"#,
        #"%m/%d/%ExY:%H:%M:%S"#,
        #"%m-%d-%ExY %k:%M:%S(?:\.%f)?"#,
        "EPOCH",
        "{^LN-BEG}%H:%M:%S",
        #"^<%m/%d/%Exy@%H:%M:%S>"#,
        #"%Exy%Exm%Exd  ?%H:%M:%S"#,
        #"%b %d, %ExY %I:%M:%S %p"#,
        #"^%b-%d-%Exy %k:%M:%S"#,
        #"%ExY%Exm%Exd(?:T|  ?)%ExH%ExM%ExS(?:[.,]%f)?(?:\s*%z)?"#,
        #"(?:%Z )?(?:%a )?%b %d %k:%M:%S(?:\.%f)?(?: %ExY)?"#,
        #"(?:%z )?(?:%a )?%b %d %k:%M:%S(?:\.%f)?(?: %ExY)?"#,
        "TAI64N",
    ]

    /// fail2ban's 17 base templates, unanchored.
    public static func baseDefaults(yearRegex: String) -> [DateTemplate] {
        defaultPatterns.map { p in
            // The built-in patterns are known to be valid.
            (try? forPattern(p, yearRegex: yearRegex))!
        }
    }

    /// fail2ban's default list: the line-anchored variant of each template first (weight 100), then the base ones.
    public static func defaults(yearRegex: String) -> [DateTemplate] {
        var anchored: [DateTemplate] = []
        var base: [DateTemplate] = []
        for t in baseDefaults(yearRegex: yearRegex) {
            if !t.name.hasPrefix("{^LN-BEG}") && !t.name.hasPrefix("^") {
                var a = t.anchored(wrap: { "{^LN-BEG}" + $0 }, yearRegex: yearRegex)
                if a.name != t.name {
                    a.weight = 100
                    anchored.append(a)
                }
            }
            base.append(t)
        }
        return anchored + base
    }

    /// fail2ban's `_getAnchoredTemplate`: the template re-built from its wrapped pattern (or, for epoch and TAI64N,
    /// from its wrapped name).
    func anchored(wrap: (String) -> String, yearRegex: String) -> DateTemplate {
        if case .pattern = kind, let pattern {
            return (try? DateTemplate.forPattern(wrap(pattern), yearRegex: yearRegex)) ?? self
        }
        return (try? DateTemplate.forPattern(wrap(name), yearRegex: yearRegex)) ?? self
    }

    /// What remains of a pattern without its boundary markers (fail2ban's `unboundPattern`).
    static func unbound(_ pattern: String) -> String {
        var p = pattern
        if p.hasPrefix("{UNB}") { p.removeFirst(5) }
        if p.hasPrefix("{^LN-BEG}") { p.removeFirst(9) }
        for prefix in [#"(?:^|\b|\W)"#, #"(^|\b|\W)"#] where p.hasPrefix(prefix) { p.removeFirst(prefix.count); break }
        if p.hasSuffix(#"(?=\b|\W|$)"#) { p.removeLast(#"(?=\b|\W|$)"#.count) }
        return p
    }

    /// Regex for `%ExY`: four-digit years from 2000 to three years after the current one, as fail2ban builds it.
    public static func yearRegex(now: Double = Double(time(nil))) -> String {
        let last = CivilTime.year(ofEpoch: now) + 3
        var decades: [String] = []
        var y = 2000
        while y <= last {
            decades.append(String(String(y).prefix(3)))
            y += 10
        }
        if decades.count == 1 { return "(?P<Y>" + decades[0] + #"\d)"# }
        return "(?P<Y>(?:" + decades.joined(separator: "|") + #")\d)"#
    }
}

/// The strptime codes fail2ban accepts in date patterns, with their regexes and display names.
enum TimeCodes {
    static let table: [String: (regex: String, name: String)] = [
        "%": ("%", "%"),
        "A": ("(?P<A>wednesday|thursday|saturday|tuesday|monday|friday|sunday)", "DAYNAME"),
        "B": ("(?P<B>september|february|november|december|january|october|august|march|april|june|july|may)", "MONTH"),
        "ExH": (#"(?P<H>[0-1]\d|2[0-3])"#, "Ex24hour"),
        "ExM": (#"(?P<M>[0-5]\d)"#, "ExMinute"),
        "ExS": (#"(?P<S>[0-5]\d|6[0-1])"#, "ExSecond"),
        "ExZ": (#"(?P<Z>[A-Z](?:[A-Z]{2,4})?)"#, "ExZone name"),
        "Exd": (#"(?P<d>[1-2]\d|0[1-9]|3[0-1])"#, "ExDay"),
        "Exk": (#" ?(?P<H>[0-1]?\d|2[0-3])"#, "Ex%k"),
        "Exl": (#" ?(?P<I>1[0-2]|\d)"#, "Ex%l"),
        "Exm": (#"(?P<m>0[1-9]|1[0-2])"#, "ExMonth"),
        "Exy": (#"(?P<y>\d{2})"#, "ExYear2"),
        "Exz": (#"(?P<z>(?:[A-Z](?:[A-Z]{2,4})?)?[+-][01]\d(?::?\d{2})?|[A-Z](?:[A-Z]{2,4})?)"#, "ExZone offset"),
        "G": (#"(?P<G>\d\d\d\d)"#, "%G"),
        "H": (#"(?P<H>[0-1]?\d|2[0-3])"#, "24hour"),
        "I": (#"(?P<I>1[0-2]|0[1-9]|[1-9])"#, "12hour"),
        "M": (#"(?P<M>[0-5]?\d)"#, "Minute"),
        "S": (#"(?P<S>[0-5]?\d|6[0-1])"#, "Second"),
        "U": (#"(?P<U>5[0-3]|[0-4]\d|\d)"#, "Yearweek"),
        "V": (#"(?P<V>5[0-3]|0[1-9]|[1-4]\d|\d)"#, "%V"),
        "W": (#"(?P<W>5[0-3]|[0-4]\d|\d)"#, "Yearweek"),
        "X": (#"(?P<H>2[0-3]|[0-1]\d|\d):(?P<M>[0-5]\d|\d):(?P<S>6[0-1]|[0-5]\d|\d)"#, "%X"),
        "Y": (#"(?P<Y>\d{4})"#, "Year"),
        "Z": (#"(?P<Z>Z|[A-Z]{3,5})"#, "Zone name"),
        "a": ("(?P<a>mon|tue|wed|thu|fri|sat|sun)", "DAY"),
        "b": ("(?P<b>jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)", "MON"),
        "c": (
            #"(?P<a>mon|tue|wed|thu|fri|sat|sun)\s+(?P<b>jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)\s+(?P<d>3[0-1]|[1-2]\d|0[1-9]|[1-9]| [1-9])\s+(?P<H>2[0-3]|[0-1]\d|\d):(?P<M>[0-5]\d|\d):(?P<S>6[0-1]|[0-5]\d|\d)\s+(?P<Y>\d\d\d\d)"#,
            "%c"
        ),
        "d": (#"(?P<d>[1-2]\d|[0 ]?[1-9]|3[0-1])"#, "Day"),
        "f": (#"(?P<f>[0-9]{1,6})"#, "Microseconds"),
        "j": (#"(?P<j>36[0-6]|3[0-5]\d|[1-2]\d\d|0[1-9]\d|00[1-9]|[1-9]\d|0[1-9]|[1-9])"#, "Yearday"),
        "k": (#" ?(?P<H>[0-2]?\d)"#, "%k"),
        "l": (#" ?(?P<I>1?\d)"#, "%l"),
        "m": (#"(?P<m>0?[1-9]|1[0-2])"#, "Month"),
        "p": ("(?P<p>am|pm)", "AMPM"),
        "u": ("(?P<u>[1-7])", "%u"),
        "w": ("(?P<w>[0-6])", "Weekday"),
        "x": (#"(?P<m>1[0-2]|0[1-9]|[1-9])/(?P<d>3[0-1]|[1-2]\d|0[1-9]|[1-9]| [1-9])/(?P<y>\d\d)"#, "%x"),
        "y": (#"(?P<y>\d\d)"#, "Year2"),
        "z": (#"(?P<z>Z|UTC|GMT|[+-][01]\d(?::?\d{2})?)"#, "Zone offset"),
    ]

    static let multiLetter = ["ExZ", "Exz", "Exd", "Exm", "ExH", "Exk", "Exl", "ExM", "ExS", "ExY", "Exy"]

    /// Replaces every `%code` with its regex (and, for the name, its display name).
    static func expand(_ pattern: String, yearRegex: String) throws(ConfigError) -> (name: String, regex: String) {
        var name = ""
        var regex = ""
        var i = pattern.startIndex
        while i < pattern.endIndex {
            let c = pattern[i]
            guard c == "%" else { name.append(c); regex.append(c); i = pattern.index(after: i); continue }
            let rest = pattern[pattern.index(after: i)...]
            var code: String? = nil
            if rest.first == "%" { code = "%" }
            if code == nil { code = multiLetter.first { rest.hasPrefix($0) } }
            if code == nil, let f = rest.first, table[String(f)] != nil { code = String(f) }
            guard let code else {
                throw ConfigError("date pattern '\(pattern)': unknown code '%\(rest.prefix(1))' (write %% for a literal %)")
            }
            if code == "ExY" {
                name += "ExYear"; regex += yearRegex
            } else {
                let entry = table[code]!
                name += entry.name; regex += entry.regex
            }
            i = pattern.index(i, offsetBy: 1 + code.count)
        }
        return (name, regex)
    }
}
