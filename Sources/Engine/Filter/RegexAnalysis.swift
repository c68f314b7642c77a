import CFastScan
import FoundationEssentials
import Glibc
import Platform

/// Static analysis of a regex (PCRE2 syntax, as compiled) for two shortcuts that never change a result:
///
/// - `requiredLiterals`: strings one of which every match must contain. A line holding none of them cannot
///   match, so the filter skips its regexes for that line.
/// - `matchesEveryNonEmptyLine`: the regex is a line-start anchor, parts that may all match nothing, then
///   `(…).+$` — fail2ban's prefregexes are of this shape — so it matches any line that has a character left.
///
/// Anything the analysis does not understand makes it answer "unknown" (nil / false): the regex is then run.
enum RegexAnalysis {
    indirect enum Node {
        case literal(UInt8)
        case other  // a character class, an escape such as \d, or `.`
        case dotPlus  // `.+` (greedy)
        case anchorStart, anchorEnd
        case assertion  // \b, lookarounds: zero width, may fail
        case group(alternatives: [[Node]], capturing: Bool, atomic: Bool, caseless: Bool)
        case quantified(Node, min: Int, possessive: Bool)
        case unknown  // backreferences, conditionals, recursion …
    }

    struct Parser {
        let s: [UInt8]
        var i = 0
        var caseless = false

        init(_ pattern: String) { s = Array(pattern.utf8) }

        mutating func parseAlternatives() -> [[Node]] {
            var alts: [[Node]] = [[]]
            while i < s.count {
                let c = s[i]
                if c == UInt8(ascii: ")") { break }
                if c == UInt8(ascii: "|") { i += 1; alts.append([]); continue }
                guard let atom = parseAtom() else { return [[.unknown]] }
                alts[alts.count - 1].append(parseQuantifier(atom))
            }
            return alts
        }

        mutating func parseQuantifier(_ atom: Node) -> Node {
            guard i < s.count else { return atom }
            var min: Int? = nil
            switch s[i] {
            case UInt8(ascii: "*"): min = 0; i += 1
            case UInt8(ascii: "+"): min = 1; i += 1
            case UInt8(ascii: "?"): min = 0; i += 1
            case UInt8(ascii: "{"):
                var j = i + 1
                var digits = 0
                var value = 0
                while j < s.count, s[j] >= 48, s[j] <= 57 { value = value * 10 + Int(s[j] - 48); digits += 1; j += 1 }
                if j < s.count, s[j] == UInt8(ascii: ",") || s[j] == UInt8(ascii: "}") {
                    if s[j] == UInt8(ascii: ",") {
                        j += 1
                        while j < s.count, s[j] >= 48, s[j] <= 57 { j += 1 }
                    }
                    if j < s.count, s[j] == UInt8(ascii: "}") {
                        min = digits == 0 ? 0 : value
                        i = j + 1
                    }
                }
            default: break
            }
            guard let m = min else { return atom }
            var possessive = false
            if i < s.count && s[i] == UInt8(ascii: "?") { i += 1 } else if i < s.count && s[i] == UInt8(ascii: "+") { i += 1; possessive = true }
            if case .other = atom, m >= 1 { return .quantified(atom, min: m, possessive: possessive) }
            return .quantified(atom, min: m, possessive: possessive)
        }

        mutating func parseAtom() -> Node? {
            let c = s[i]
            switch c {
            case UInt8(ascii: "^"): i += 1; return .anchorStart
            case UInt8(ascii: "$"): i += 1; return .anchorEnd
            case UInt8(ascii: "."):
                i += 1
                if i < s.count && s[i] == UInt8(ascii: "+") && !(i + 1 < s.count && (s[i + 1] == UInt8(ascii: "?") || s[i + 1] == UInt8(ascii: "+"))) {
                    i += 1
                    return .dotPlus
                }
                return .other
            case UInt8(ascii: "["): return parseClass()
            case UInt8(ascii: "\\"): return parseEscape()
            case UInt8(ascii: "("): return parseGroup()
            case UInt8(ascii: "*"), UInt8(ascii: "+"), UInt8(ascii: "?"), UInt8(ascii: "{"):
                // A quantifier with nothing to repeat ("{" can also be a literal brace): give up.
                if c == UInt8(ascii: "{") { i += 1; return .literal(c) }
                return nil
            default:
                i += 1
                // Letters under (?i) match either case: not a fixed byte.
                if caseless && ((c >= 65 && c <= 90) || (c >= 97 && c <= 122)) { return .other }
                return c < 0x80 ? .literal(c) : .other
            }
        }

        mutating func parseClass() -> Node? {
            i += 1
            if i < s.count && s[i] == UInt8(ascii: "^") { i += 1 }
            if i < s.count && s[i] == UInt8(ascii: "]") { i += 1 }
            while i < s.count && s[i] != UInt8(ascii: "]") {
                if s[i] == UInt8(ascii: "\\") {
                    i += 2
                } else if s[i] == UInt8(ascii: "["), i + 1 < s.count, s[i + 1] == UInt8(ascii: ":") {
                    // POSIX class [:alpha:]
                    while i < s.count && s[i] != UInt8(ascii: "]") { i += 1 }
                    i += 1
                } else {
                    i += 1
                }
            }
            guard i < s.count else { return nil }
            i += 1
            return .other
        }

        mutating func parseEscape() -> Node? {
            guard i + 1 < s.count else { return nil }
            let e = s[i + 1]
            i += 2
            switch e {
            case UInt8(ascii: "b"), UInt8(ascii: "B"), UInt8(ascii: "A"), UInt8(ascii: "z"), UInt8(ascii: "Z"), UInt8(ascii: "G"):
                return .assertion
            case UInt8(ascii: "d"), UInt8(ascii: "D"), UInt8(ascii: "w"), UInt8(ascii: "W"), UInt8(ascii: "s"), UInt8(ascii: "S"),
                UInt8(ascii: "h"), UInt8(ascii: "H"), UInt8(ascii: "v"), UInt8(ascii: "V"), UInt8(ascii: "R"), UInt8(ascii: "N"),
                UInt8(ascii: "X"), UInt8(ascii: "C"):
                return .other
            case UInt8(ascii: "n"): return .literal(10)
            case UInt8(ascii: "t"): return .literal(9)
            case UInt8(ascii: "r"): return .literal(13)
            case UInt8(ascii: "x"), UInt8(ascii: "p"), UInt8(ascii: "P"), UInt8(ascii: "u"), UInt8(ascii: "c"), UInt8(ascii: "o"):
                // \x{..}, \p{..}: skip a braced argument if there is one.
                if i < s.count && s[i] == UInt8(ascii: "{") {
                    while i < s.count && s[i] != UInt8(ascii: "}") { i += 1 }
                    i += 1
                } else if e == UInt8(ascii: "x") {
                    i = min(s.count, i + 2)
                }
                return .other
            case UInt8(ascii: "k"), UInt8(ascii: "g"), UInt8(ascii: "Q"), UInt8(ascii: "E"), UInt8(ascii: "K"):
                return .unknown
            default:
                if e >= 48 && e <= 57 { return .unknown }  // backreference
                if (e >= 65 && e <= 90) || (e >= 97 && e <= 122) { return .unknown }
                if caseless && ((e >= 65 && e <= 90) || (e >= 97 && e <= 122)) { return .other }
                return e < 0x80 ? .literal(e) : .other
            }
        }

        mutating func parseGroup() -> Node? {
            i += 1
            var capturing = true
            var atomic = false
            var isAssertion = false
            let outerCaseless = caseless
            var localCaseless = caseless
            if i < s.count && s[i] == UInt8(ascii: "?") {
                i += 1
                guard i < s.count else { return nil }
                let k = s[i]
                switch k {
                case UInt8(ascii: ":"): capturing = false; i += 1
                case UInt8(ascii: ">"): capturing = false; atomic = true; i += 1
                case UInt8(ascii: "="), UInt8(ascii: "!"): isAssertion = true; i += 1
                case UInt8(ascii: "<"):
                    if i + 1 < s.count && (s[i + 1] == UInt8(ascii: "=") || s[i + 1] == UInt8(ascii: "!")) {
                        isAssertion = true; i += 2
                    } else {
                        while i < s.count && s[i] != UInt8(ascii: ">") { i += 1 }
                        i += 1
                    }
                case UInt8(ascii: "P"):
                    guard i + 1 < s.count, s[i + 1] == UInt8(ascii: "<") else { return nil }
                    while i < s.count && s[i] != UInt8(ascii: ">") { i += 1 }
                    i += 1
                case UInt8(ascii: "#"):
                    while i < s.count && s[i] != UInt8(ascii: ")") { i += 1 }
                    i += 1
                    return .quantified(.other, min: 0, possessive: false)
                default:
                    // Inline flags: (?i) / (?i:...) / (?-i)
                    var flags: [UInt8] = []
                    while i < s.count, s[i] != UInt8(ascii: ")"), s[i] != UInt8(ascii: ":") { flags.append(s[i]); i += 1 }
                    guard i < s.count, flags.allSatisfy({ "imnsxJU-".utf8.contains($0) }) else { return nil }
                    let negative = flags.firstIndex(of: UInt8(ascii: "-"))
                    if let iFlag = flags.firstIndex(of: UInt8(ascii: "i")) { localCaseless = negative.map { iFlag < $0 } ?? true }
                    if s[i] == UInt8(ascii: ")") {
                        // Applies to the rest of the enclosing group.
                        i += 1
                        caseless = localCaseless
                        return .quantified(.other, min: 0, possessive: false)
                    }
                    capturing = false
                    i += 1
                }
            }
            caseless = localCaseless
            let alts = parseAlternatives()
            caseless = outerCaseless
            guard i < s.count, s[i] == UInt8(ascii: ")") else { return nil }
            i += 1
            if isAssertion { return .assertion }
            return .group(alternatives: alts, capturing: capturing, atomic: atomic, caseless: localCaseless)
        }
    }

    static func parse(_ pattern: String) -> [[Node]]? {
        var p = Parser(pattern)
        let alts = p.parseAlternatives()
        guard p.i == p.s.count else { return nil }
        return alts
    }

    // MARK: required literals

    /// Strings of which every match of `pattern` contains at least one; nil when no useful set is known.
    static func requiredLiterals(_ pattern: String, minimumLength: Int = 3) -> [[UInt8]]? {
        candidateSets(pattern, minimumLength: minimumLength)?.max { score($0) < score($1) }
    }

    /// Every set found (each alone suffices), so that the cheapest to look for in a given log can be chosen.
    static func candidateSets(_ pattern: String, minimumLength: Int = 3) -> [[[UInt8]]]? {
        guard let alts = parse(pattern) else { return nil }
        if alts.count == 1 {
            let sets = sets(forSequence: alts[0], minimumLength: minimumLength)
            return sets.isEmpty ? nil : sets
        }
        return best(for: alts, minimumLength: minimumLength).map { [$0] }
    }

    /// For alternatives: one literal set per branch, united (a match goes through one branch).
    private static func best(for alternatives: [[Node]], minimumLength: Int) -> [[UInt8]]? {
        var union: [[UInt8]] = []
        for branch in alternatives {
            guard let set = best(forSequence: branch, minimumLength: minimumLength) else { return nil }
            union += set
        }
        return union.isEmpty ? nil : union
    }

    /// The best set among the mandatory parts of a sequence: the one whose shortest string is longest.
    private static func best(forSequence seq: [Node], minimumLength: Int) -> [[UInt8]]? {
        sets(forSequence: seq, minimumLength: minimumLength).max { score($0) < score($1) }
    }

    /// All sets found among the mandatory parts of a sequence.
    private static func sets(forSequence seq: [Node], minimumLength: Int) -> [[[UInt8]]] {
        var candidates: [[[UInt8]]] = []
        var run: [UInt8] = []
        func endRun() {
            if run.count >= minimumLength { candidates.append([run]) }
            run = []
        }
        for node in seq {
            switch node {
            case .literal(let b):
                run.append(b)
            case .group(let alts, _, _, _):
                endRun()
                if alts.count == 1, let inner = best(forSequence: alts[0], minimumLength: minimumLength) {
                    candidates.append(inner)
                } else if let set = best(for: alts, minimumLength: minimumLength) {
                    candidates.append(set)
                }
            case .quantified(let inner, let min, _):
                endRun()
                if min >= 1, case .group(let alts, _, _, _) = inner, let set = best(for: alts, minimumLength: minimumLength) {
                    candidates.append(set)
                } else if min >= 1, case .literal(let b) = inner, minimumLength <= 1 {
                    candidates.append([[b]])
                }
            case .anchorStart, .anchorEnd, .assertion:
                // Zero width: a literal run may not continue across it.
                endRun()
            default:
                endRun()
            }
        }
        endRun()
        return candidates
    }

    static func score(_ set: [[UInt8]]) -> Int {
        // Longer shortest string first; fewer alternatives break ties.
        (set.map(\.count).min() ?? 0) * 1000 - set.count
    }

    // MARK: universal prefregex

    /// Whether `pattern` matches every subject that holds at least one character before its final newline
    /// (single-line mode): `^`, parts that can all match nothing and never fail, then `.+` (possibly in a group)
    /// and `$`.
    static func matchesEveryNonEmptyLine(_ pattern: String) -> Bool {
        guard let alts = parse(pattern), alts.count == 1 else { return false }
        var seq = alts[0]
        guard case .anchorStart = seq.first else { return false }
        seq.removeFirst()
        guard case .anchorEnd = seq.last else { return false }
        seq.removeLast()
        guard let last = seq.popLast(), isDotPlus(last) else { return false }
        return seq.allSatisfy(canMatchEmptyWithoutFailing)
    }

    private static func isDotPlus(_ node: Node) -> Bool {
        switch node {
        case .dotPlus: return true
        case .group(let alts, _, let atomic, _): return !atomic && alts.count == 1 && alts[0].count == 1 && isDotPlus(alts[0][0])
        default: return false
        }
    }

    /// Never makes the overall match fail and may consume nothing (so `.+` after it can always be reached).
    private static func canMatchEmptyWithoutFailing(_ node: Node) -> Bool {
        switch node {
        case .quantified(_, let min, let possessive): return min == 0 && !possessive
        case .group(let alts, _, let atomic, _):
            return !atomic && alts.contains { $0.allSatisfy(canMatchEmptyWithoutFailing) }
        default: return false
        }
    }
}

/// Finds whether a line holds any of a set of strings. Each string is looked for by its rarest pair of
/// neighbouring bytes (by how often bytes occur in log text); where one of those pairs occurs, the string is
/// compared in full. The scan is one vectorised pass in C (`pc_screen_scan`) that also tells whether the line is
/// pure ASCII.
final class LiteralScanner {
    let literals: [[UInt8]]
    /// The longest string's length: text joined where a date is cut out is screened this far on each side.
    let maxLength: Int
    /// nil without strings: then every line may match.
    private let screen: OpaquePointer?
    /// The strings' bytes, owned here for the C scanner's pointers.
    private let storage: UnsafeMutablePointer<UInt8>
    private let probes: UnsafeMutablePointer<pc_probe>
    private let probeCount: Int

    /// Rough rarity of bytes in log lines: lower is rarer. Letters by English frequency, digits and the
    /// punctuation of dates and addresses common, other punctuation rarer.
    static func commonness(_ b: UInt8) -> Int {
        switch b {
        case UInt8(ascii: " "): return 1000
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return 600
        case UInt8(ascii: ":"), UInt8(ascii: "."), UInt8(ascii: "-"), UInt8(ascii: "/"), UInt8(ascii: "["), UInt8(ascii: "]"),
            UInt8(ascii: ","), UInt8(ascii: "="), UInt8(ascii: "_"):
            return 300
        case UInt8(ascii: "a")...UInt8(ascii: "z"):
            let order = Array("etaoinsrhldcumfpgwybvkxjqz".utf8)
            return 500 - (order.firstIndex(of: b) ?? 25) * 12
        case UInt8(ascii: "A")...UInt8(ascii: "Z"): return 60
        default: return 40
        }
    }

    /// - Parameter frequencies: how often each byte occurred in the lines seen so far (256 counts); without
    ///   them a static estimate for log text is used.
    /// `vectorised: false` keeps to the portable SSE2 scan (for comparing the two).
    init(_ literals: [[UInt8]], frequencies: [UInt32]? = nil, vectorised: Bool = true) {
        func cost(_ b: UInt8) -> Int {
            if let f = frequencies { return Int(f[Int(b)]) }
            return LiteralScanner.commonness(b)
        }
        var unique: [[UInt8]] = []
        // Strings are at least two bytes long (the analysis asks for three).
        for l in literals where l.count >= 2 && !unique.contains(l) { unique.append(l) }
        self.literals = unique
        maxLength = unique.map(\.count).max() ?? 0
        let total = unique.reduce(0) { $0 + $1.count }
        storage = .allocate(capacity: max(1, total))
        probes = .allocate(capacity: max(1, unique.count))
        probeCount = unique.count
        var cursor = storage
        for (i, l) in unique.enumerated() {
            // The anchor is the pair of neighbouring bytes least likely to occur together: both rare, judged by
            // the rarer and then the commoner of the two.
            let offset = (0..<(l.count - 1)).min { a, b in
                let ca = (min(cost(l[a]), cost(l[a + 1])), max(cost(l[a]), cost(l[a + 1])))
                let cb = (min(cost(l[b]), cost(l[b + 1])), max(cost(l[b]), cost(l[b + 1])))
                return ca < cb
            }!
            cursor.initialize(from: l, count: l.count)
            probes[i] = pc_probe(bytes: UnsafePointer(cursor), length: UInt32(l.count), offset: UInt32(offset))
            cursor += l.count
        }
        screen = pc_screen_create(probes, probeCount, vectorised ? 1 : 0)
        if getenv("PORTCULLIS_DEBUG_SCREEN") != nil {
            let text = unique.enumerated().map { i, l in
                "\(String(decoding: l, as: UTF8.self))@\(String(decoding: l[Int(probes[i].offset)...].prefix(2), as: UTF8.self))"
            }
            StandardError.write("screen: \(text.joined(separator: " | "))\n")
        }
    }

    deinit {
        pc_screen_free(screen)
        storage.deallocate()
        probes.deallocate()
    }

    /// For each regex, the candidate set that should produce the fewest false hits in a log with these byte
    /// `frequencies` (or, without them, the one whose shortest string is longest).
    static func choose(_ candidates: [[[[UInt8]]]], frequencies: [UInt32]?) -> [[UInt8]] {
        var chosen: [[UInt8]] = []
        for sets in candidates {
            guard let frequencies else {
                chosen += sets.max { RegexAnalysis.score($0) < RegexAnalysis.score($1) } ?? []
                continue
            }
            // Expected hits: for each string, how often its rarest byte occurs.
            func cost(_ set: [[UInt8]]) -> UInt64 {
                set.reduce(0) { $0 + UInt64($1.map { frequencies[Int($0)] }.min() ?? 0) }
            }
            chosen += sets.min { cost($0) < cost($1) } ?? []
        }
        return chosen
    }

    /// One pass over `p[0..<n]`: whether it holds one of the strings, and whether it is pure ASCII.
    @inline(__always)
    func scan(_ p: UnsafePointer<UInt8>, _ n: Int) -> (found: Bool, ascii: Bool) {
        guard let screen else { return (true, pc_is_ascii(p, n) != 0) }
        let r = pc_screen_scan(screen, p, n)
        return (r & 1 != 0, r & PC_SCREEN_NON_ASCII == 0)
    }

    func containsAny(_ p: UnsafePointer<UInt8>, _ n: Int) -> Bool { scan(p, n).found }
}
