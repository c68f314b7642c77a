import Glibc
import Platform

/// Finds the timestamp of a log line, as fail2ban's `DateDetector` does: the template that matched last is tried
/// first within the same boundaries, templates that keep matching move to the front, and a match far into the
/// line loses to one closer to its start.
public final class DateDetector {
    final class Entry {
        let template: DateTemplate
        let regex: PCRE2Regex
        /// Successful selections by this detector.
        var hits = 0
        /// Successful regex matches, whether selected or not (fail2ban's per-template counter).
        var regexHits = 0
        var lastUsed: Double = 0
        var distance = 0x7fffffff
        /// The strptime fields among the regex's groups, resolved once.
        let fieldGroups: [(group: Int, field: TimeField)]
        /// The `%f` (fraction) group, which fail2ban ignores: dates differing only there are the same time.
        let fractionGroup: Int?
        // The template's facts the per-line path reads, copied out of it (reading them through the struct
        // would copy its strings).
        let isAnchored: Bool
        /// The template's weight; raised to 100 when the detector takes in fail2ban's default templates (see
        /// `addDefaults`).
        var weightFactor: Double
        let kind: DateTemplate.Kind
        /// What every line is searched with: `regex` with the groups only the field parsing reads made
        /// non-capturing (captures cost the JIT about a fifth of its time on a date). The same matches; group 1
        /// (the date) and `%f` keep their meaning. `regex` itself reads the fields when a date is parsed.
        /// Made at the first search (most templates are never searched more than once or twice).
        private(set) var searchRegex: PCRE2Regex
        private var leanRegex: PCRE2Regex?
        var isLean: Bool { leanRegex != nil }
        private(set) var searchFractionGroup: Int?
        private(set) var leanPending: Bool
        private let pattern: String

        init(_ template: DateTemplate) throws(ConfigError) {
            self.template = template
            let pattern = PythonRegex.toPCRE2(template.regex)
            do {
                regex = try PCRE2Regex(pattern)
            } catch {
                throw ConfigError("date pattern '\(template.pattern ?? template.name)' does not compile: \(error.message)")
            }
            fieldGroups = regex.groupNames.compactMap { g in TimeField(groupName: g.name).map { (g.number, $0) } }
            fractionGroup = regex.groupNumbers["f"]
            isAnchored = template.isAnchored
            weightFactor = template.weight
            kind = template.kind
            self.pattern = pattern
            searchRegex = regex
            searchFractionGroup = fractionGroup
            if case .pattern = template.kind { leanPending = true } else { leanPending = false }
        }

        func makeLean() {
            leanPending = false
            guard !regex.groupNames.contains(where: { $0.number == 1 }),
                let lean = DateDetector.fewerCaptures(pattern, keeping: ["f"]),
                let compiled = try? PCRE2Regex(lean), compiled.groupNumbers["f"] != nil || fractionGroup == nil
            else { return }
            leanRegex = compiled
            searchRegex = compiled
            searchFractionGroup = compiled.groupNumbers["f"]
        }

        var weight: Double { Double(hits) * weightFactor / Double(max(1, distance)) }
    }

    /// The templates, in the order they are tried (reordered as they win).
    private(set) var entries: [Entry] = []
    private var names = Set<String>()
    private let yearRegex: String
    /// The zone (minutes east of UTC) for timestamps that carry none; nil: the local zone (`TZ`).
    public var defaultZone: Int?
    private let unusedTime: Double = 300
    private var lastPos: (Int, Int, Int) = (1, -2, -2)
    private var lastEndPos: (Int, Int, Int) = (0x7fffffff, -2, -2)
    private var lastTemplateIndex = 0x7fffffff
    private var firstUnused = 0
    private let defaultsWhenEmpty: Bool
    private let converter = TimeConverter()
    private var lineIsASCII = false
    /// Wall-clock time, refreshed every 1024 lines: only used to age templates over minutes.
    private var coarseClock = 0.0
    private var clockCountdown = 0

    /// With no patterns, fail2ban's default templates are used.
    public init(patterns: [String] = [], defaultZone: Int? = nil, yearRegex: String = DateTemplate.yearRegex()) throws(ConfigError) {
        self.yearRegex = yearRegex
        self.defaultZone = defaultZone
        self.defaultsWhenEmpty = true
        for p in patterns { try append(pattern: p) }
    }

    /// Templates in their current order, with hit counts (for `portcullis regex`'s summary).
    public var templates: [(name: String, hits: Int)] {
        entries.map { ($0.template.name, $0.hits) }
    }

    /// A short description of what is configured, as fail2ban-regex prints it.
    public var summary: String {
        if entries.isEmpty || entries.count > 2 { return "Default Detectors" }
        return entries[0].template.name
    }

    private func add(_ template: DateTemplate, ignoreDuplicate: Bool) throws(ConfigError) {
        if names.contains(template.name) {
            if ignoreDuplicate { return }
            throw ConfigError("date pattern '\(template.name)' is given twice")
        }
        names.insert(template.name)
        entries.append(try Entry(template))
    }

    /// One line of a `datepattern` value. The corresponding fail2ban method is `DateDetector.appendTemplate`.
    public func append(pattern: String) throws(ConfigError) {
        let key = pattern.contains("%") ? pattern : pattern.uppercased()
        if key == "{^LN-BEG}" {
            try addDefaults { $0.flags.contains(.lineBegin) }
            return
        }
        if key == "{DEFAULT}" {
            // fail2ban adds nothing here; the defaults are then used because the list is empty.
            return
        }
        if key.contains("{DATE}") {
            try addDefaults(preMatch: pattern)
            return
        }
        if key == "{NONE}" {
            var t = try DateTemplate.pattern("{UNB}^", yearRegex: yearRegex)
            t.name = "{NONE}"
            try add(t, ignoreDuplicate: false)
            return
        }
        try add(try DateTemplate.forPattern(pattern, yearRegex: yearRegex), ignoreDuplicate: false)
        if defaultAnchoredKeys.contains(key) { sharedWeightNames.insert(entries[entries.count - 1].template.name) }
    }

    /// The keys (fail2ban's template cache keys: the pattern, upper-cased when it has no `%`) of the default
    /// templates fail2ban gives weight 100: the line-anchored variants.
    private var defaultAnchoredKeys: Set<String> {
        Set(
            DateTemplate.defaults(yearRegex: yearRegex).filter { $0.weight == 100 }.map { t in
                if case .pattern = t.kind, let p = t.pattern { return p.contains("%") ? p : p.uppercased() }
                return t.name.uppercased()
            })
    }
    /// Templates appended by a `datepattern` line that names a default anchored template (see `shareDefaultWeights`).
    private var sharedWeightNames = Set<String>()

    private func addDefaults(filter: ((DateTemplate) -> Bool)? = nil, preMatch: String? = nil) throws(ConfigError) {
        defer { shareDefaultWeights() }
        let ignoreDuplicate = !entries.isEmpty
        if let preMatch {
            for t in DateTemplate.baseDefaults(yearRegex: yearRegex) {
                let wrapped = t.anchored(
                    wrap: { DateDetector.replacingDatePlaceholder(in: preMatch, with: DateTemplate.unbound($0)) },
                    yearRegex: yearRegex)
                try add(wrapped, ignoreDuplicate: ignoreDuplicate)
            }
            return
        }
        for t in DateTemplate.defaults(yearRegex: yearRegex) where filter?(t) ?? true {
            try add(t, ignoreDuplicate: ignoreDuplicate)
        }
    }

    /// fail2ban keeps one template object per cache key for the whole process, and caching its default templates
    /// gives the line-anchored ones weight 100 (so that they bubble up): a `datepattern` line written as one of
    /// them (`{^LN-BEG}TAI64N`, `{^LN-BEG}Epoch` …) is that same object, and has weight 100 as well once the
    /// defaults are in use. (Templates `{DATE}` derives, such as `^TAI64N`, are other objects: weight 1.)
    private func shareDefaultWeights() {
        for e in entries where sharedWeightNames.contains(e.template.name) { e.weightFactor = 100 }
    }

    /// Python's `str.isalnum()` for one character (a code point; -1 for none).
    @inline(__always)
    private static func isAlnum(_ c: Int) -> Bool {
        if c < 128 { return (c >= 48 && c <= 57) || (c >= 65 && c <= 90) || (c >= 97 && c <= 122) }
        return isAlnumBeyondASCII(c)
    }

    @inline(never)
    private static func isAlnumBeyondASCII(_ c: Int) -> Bool {
        guard let scalar = Unicode.Scalar(UInt32(c)) else { return false }
        switch scalar.properties.generalCategory {
        case .uppercaseLetter, .lowercaseLetter, .titlecaseLetter, .modifierLetter, .otherLetter: return true
        default: return scalar.properties.numericType != nil
        }
    }

    /// The found date: the byte range of the date text in the line, and the template that matched. Valid until
    /// the detector's next search (the template's regex holds the match).
    struct Match {
        let range: Range<Int>
        let entry: Entry
        /// The search that found it (to repeat it with the fields captured).
        let searchStart: Int
        let searchLength: Int
        let ascii: Bool
        var templateName: String { entry.template.name }
    }

    /// A date found in a line: its text's byte range and its epoch seconds (nil when the text is no valid date).
    public struct Found: Sendable, Equatable {
        public let range: Range<Int>
        public let time: Double?
    }

    /// Searches `line[0..<length]` for a timestamp and reads it; `now` infers a missing year.
    public func find(_ line: UnsafePointer<UInt8>, length: Int, ascii: Bool = false, now: Double) -> Found? {
        guard let m = match(line, length: length, ascii: ascii) else { return nil }
        return Found(range: m.range, time: m.range.isEmpty ? nil : time(of: m, line: line, now: now))
    }

    /// Searches `line[0..<length]` for a timestamp. The corresponding fail2ban method is `DateDetector.matchTime`.
    // One function on purpose, though long: it runs for every line, and cut into three (the last template, the
    // search over all, remembering the choice; tried in issue 12) it made `portcullis regex` 9-27% slower on
    // 1,000,000 lines, inlined or not (farm-bench against the previous build). Its parts are marked below.
    func match(_ line: UnsafePointer<UInt8>, length: Int, ascii: Bool = false) -> Match? {
        lineIsASCII = ascii
        if entries.isEmpty && defaultsWhenEmpty {
            // Built-in templates always compile.
            try? addDefaults()
        }
        // The best alternative so far: template index, distance, end, and the search bounds that found it.
        var found: (index: Int, distance: Int, end: Int, start: Int, length: Int)? = nil
        var ignoreBySearch = 0x7fffffff
        var matched = false
        var i = lastTemplateIndex
        var selected: Entry? = nil
        // fail2ban measures positions in characters of the decoded line: `distance` and `endpos` (and `lastPos`,
        // `lastEndPos`, an entry's `distance`) are character offsets, the same as byte offsets on an ASCII line;
        // `bytes` is the match in bytes.
        let text = CharView(line, length, ascii: ascii)
        var distance = 0, endpos = 0
        var bytes = 0..<0
        var bounds = (start: 0, length: length)
        // 1. The template that matched last, within the last date's bounds when the text around them is unchanged.
        if i < entries.count {
            let e = entries[i]
            var ok = false
            var searchStart = 0
            var searchLength = length
            if e.isAnchored {
                ok = searchEntry(e, line, length)
                ignoreBySearch = i
            } else {
                let (d, dPrev, dChar) = lastPos
                let (ep, epPrev, epChar) = lastEndPos
                let begins =
                    text.character(d - 1) == dPrev
                    || (text.character(d) == dChar && !DateDetector.isAlnum(dChar))
                let ends =
                    text.character(ep) == epChar
                    || (text.character(ep - 1) == epPrev && !DateDetector.isAlnum(epPrev))
                if begins && ends {
                    searchStart = text.byteOffset(ofCharacter: d)
                    searchLength = min(text.byteOffset(ofCharacter: ep), length)
                    ok = searchEntry(e, line, searchLength, start: searchStart)
                } else {
                    ok = searchEntry(e, line, length)
                    ignoreBySearch = i
                }
            }
            if ok, let r = e.matchRange {
                bytes = r
                (distance, endpos) = text.characterOffsets(of: r)
                if entries.count == 1 || e.isAnchored || (distance == lastPos.0 && endpos == lastEndPos.0) {
                    matched = true; selected = e; bounds = (searchStart, searchLength)
                } else {
                    found = (i, distance, endpos, searchStart, searchLength)
                }
            }
        }
        // 2. Every template in order; the nearest match found when none is taken at once.
        if !matched {
            i = 0
            while i < entries.count {
                if i == ignoreBySearch { i += 1; continue }
                let e = entries[i]
                if searchEntry(e, line, length), let r = e.matchRange {
                    bytes = r
                    (distance, endpos) = text.characterOffsets(of: r)
                    if i + 1 >= entries.count || e.isAnchored {
                        matched = true; selected = e; break
                    }
                    if distance == 0 && e.hits > 0 && entries[i + 1].regexHits == 0 {
                        matched = true; selected = e; break
                    }
                    if distance > e.distance || distance > lastPos.0 {
                        if distance < (found?.distance ?? 0x7fffffff) { found = (i, distance, endpos, 0, length) }
                        i += 1
                        continue
                    }
                    matched = true; selected = e; break
                }
                i += 1
            }
            if !matched, let f = found {
                i = f.index; distance = f.distance; endpos = f.end
                selected = entries[i]
                // Later searches may have overwritten this regex's match data: repeat the search that found it.
                _ = searchEntry(entries[i], line, f.length, start: f.start, countHit: false)
                bytes = entries[i].matchRange ?? bytes
                bounds = (f.start, f.length)
                matched = true
            }
        }
        // 3. Remember the choice: statistics, the positions the next line is first tried at, the order.
        guard matched, let entry = selected else { return nil }
        if clockCountdown == 0 {
            coarseClock = Clock.now()
            clockCountdown = 1024
        }
        clockCountdown -= 1
        entry.hits += 1
        entry.lastUsed = coarseClock
        entry.distance = distance
        if firstUnused == i { firstUnused += 1 }
        lastPos = (distance, text.character(distance - 1), text.character(distance))
        lastEndPos = (endpos, text.character(endpos - 1), text.character(endpos))
        if i != 0 && i != lastTemplateIndex { i = reorder(i) }
        lastTemplateIndex = i
        // Group 1 holds the date itself.
        let dateRange = entry.dateRange ?? bytes
        return Match(range: dateRange, entry: entry, searchStart: bounds.start, searchLength: bounds.length, ascii: lineIsASCII)
    }

    /// `pattern` (PCRE2 syntax) with every named group not in `keeping` and not referred to by `(?P=name)` made
    /// non-capturing; nil when the pattern uses a construct whose meaning could change with the group numbers
    /// (numbered or other named references, conditionals, recursion, branch reset).
    static func fewerCaptures(_ pattern: String, keeping: Set<String>) -> String? {
        let s = Array(pattern.unicodeScalars)
        var keep = keeping
        var out = String.UnicodeScalarView()
        // First pass: the names referred to. Second: the rewrite.
        for pass in 0..<2 {
            var i = 0
            var inClass = false
            while i < s.count {
                let c = s[i]
                if c == "\\" {
                    guard i + 1 < s.count else { return nil }
                    let n = s[i + 1]
                    if !inClass && (("0"..."9").contains(n) || n == "g" || n == "k") { return nil }
                    if pass == 1 { out.append(c); out.append(n) }
                    i += 2
                    continue
                }
                if inClass {
                    if c == "]" { inClass = false }
                    if pass == 1 { out.append(c) }
                    i += 1
                    continue
                }
                if c == "[" {
                    inClass = true
                    if pass == 1 { out.append(c) }
                    i += 1
                    if i < s.count && s[i] == "^" { if pass == 1 { out.append(s[i]) }; i += 1 }
                    if i < s.count && s[i] == "]" { if pass == 1 { out.append(s[i]) }; i += 1 }
                    continue
                }
                if c == "(" && i + 1 < s.count && s[i + 1] == "?" {
                    let rest = String(String.UnicodeScalarView(s[(i + 2)..<min(s.count, i + 40)]))
                    var nameStart: Int? = nil
                    if rest.hasPrefix("P<") {
                        nameStart = i + 4
                    } else if rest.hasPrefix("<") && !rest.hasPrefix("<=") && !rest.hasPrefix("<!") {
                        nameStart = i + 3
                    }
                    if let start = nameStart {
                        guard let end = s[start...].firstIndex(of: ">") else { return nil }
                        let name = String(String.UnicodeScalarView(s[start..<end]))
                        if pass == 1 {
                            if keep.contains(name) { out.append(contentsOf: s[i...end]) } else { out.append(contentsOf: "(?:".unicodeScalars) }
                        }
                        i = end + 1
                        continue
                    }
                    if rest.hasPrefix("P=") {
                        guard let end = s[(i + 4)...].firstIndex(of: ")") else { return nil }
                        keep.insert(String(String.UnicodeScalarView(s[(i + 4)..<end])))
                        if pass == 1 { out.append(contentsOf: s[i...end]) }
                        i = end + 1
                        continue
                    }
                    // Groups that capture nothing and refer to nothing: (?: (?= (?! (?<= (?<! (?> and inline flags,
                    // except extended mode (x), whose comments this scan would not recognise.
                    guard let next = rest.unicodeScalars.first,
                        ":=!<>imnsxJU^-".unicodeScalars.contains(next),
                        !rest.prefix(while: { $0 != ")" && $0 != ":" }).contains("x")
                    else { return nil }
                }
                if pass == 1 { out.append(c) }
                i += 1
            }
        }
        return String(out)
    }

    @inline(__always)
    private func searchEntry(
        _ e: Entry, _ line: UnsafePointer<UInt8>, _ length: Int, start: Int = 0,
        countHit: Bool = true
    ) -> Bool {
        if e.leanPending { e.makeLean() }
        let ok = e.searchRegex.search(line, length: length, start: max(0, start), ascii: lineIsASCII)
        if ok && countHit { e.regexHits += 1 }
        return ok
    }

    /// Moves a template that keeps winning towards the front (fail2ban's `_reorderTemplate`).
    private func reorder(_ num: Int) -> Int {
        let e = entries[num]
        let untime = e.lastUsed - unusedTime
        let weight = e.weight
        var pos = firstUnused < num ? firstUnused : num / 2
        func movable() -> Bool { weight > entries[pos].weight || untime > entries[pos].lastUsed }
        if !movable() {
            if pos == num - 1 { return num }
            pos = num - 1
            if !movable() { return num }
        }
        entries.remove(at: num)
        entries.insert(e, at: pos)
        while firstUnused < entries.count && entries[firstUnused].hits > 0 { firstUnused += 1 }
        return pos
    }

    /// The epoch seconds of a found date, nil when the text is not a valid date.
    func time(of match: Match, line: UnsafePointer<UInt8>, now: Double) -> Double? {
        let entry = match.entry
        let regex = entry.regex
        switch entry.kind {
        case .tai64n:
            guard let r = regex.range(1), r.count >= 17 else { return nil }
            let hex = String(decoding: UnsafeBufferPointer(start: line + r.lowerBound + 2, count: 15), as: UTF8.self)
            return UInt64(hex, radix: 16).map { Double($0) }
        case .epoch(let longForm, let group):
            guard let r = regex.range(group) else { return nil }
            let text = String(decoding: UnsafeBufferPointer(start: line + r.lowerBound, count: r.count), as: UTF8.self)
            guard var v = Double(text) else { return nil }
            if longForm && text.count >= 13 {
                v = text.count >= 16 && !text.contains(".") ? v / 1_000_000 : v / 1000
            }
            return v
        case .pattern:
            // Consecutive lines mostly carry the same date text (up to the fraction fail2ban ignores): then the
            // last result stands, without parsing the fields again.
            let search = entry.searchRegex
            guard let whole = search.range(1) else { return nil }
            var skip = whole.upperBound..<whole.upperBound
            if let g = entry.searchFractionGroup, let f = search.range(g) { skip = f }
            let head = UnsafeBufferPointer(start: line + whole.lowerBound, count: skip.lowerBound - whole.lowerBound)
            let tail = UnsafeBufferPointer(start: line + skip.upperBound, count: whole.upperBound - skip.upperBound)
            let entryID = ObjectIdentifier(entry)
            if cacheValid, cacheEntry == entryID, cacheNow == now, cacheZone == defaultZone,
                cacheHead.equals(head), cacheTail.equals(tail)
            {
                return cacheResult
            }
            // The fields: the same search again, with every group captured.
            if entry.isLean && !regex.search(line, length: match.searchLength, start: match.searchStart, ascii: match.ascii) {
                return nil
            }
            let result = parseFields(entry, line: line, now: now)
            cacheValid = true
            cacheEntry = entryID
            cacheNow = now
            cacheZone = defaultZone
            cacheHead.reset()
            cacheHead.append(head)
            cacheTail.reset()
            cacheTail.append(tail)
            cacheResult = result
            return result
        }
    }

    // The last parsed date: its template, the clock and zone it was read against, its text around the
    // fraction, and the result. Plain fields, not a struct: reading a struct of references retains each of them.
    private var cacheValid = false
    private var cacheEntry: ObjectIdentifier?
    private var cacheNow = 0.0
    private var cacheZone: Int?
    private var cacheResult: Double?
    private let cacheHead = ByteBuffer(capacity: 64)
    private let cacheTail = ByteBuffer(capacity: 64)

    private func parseFields(_ entry: Entry, line: UnsafePointer<UInt8>, now: Double) -> Double? {
        let regex = entry.regex
        do {
            var p = ParsedTime()
            var hour12: Int? = nil
            var ampm: Int? = nil  // 0 am, 1 pm, -1 something else
            for (group, field) in entry.fieldGroups {
                guard let r = regex.range(group) else { continue }
                let b = UnsafeBufferPointer(start: line + r.lowerBound, count: r.count)
                switch field {
                case .y:
                    guard var y = FieldBytes.int(b) else { p.invalid = true; break }
                    if y <= 2000 { y += 2000 }
                    p.year = y
                case .Y: p.year = FieldBytes.int(b); if p.year == nil { p.invalid = true }
                case .m: p.month = FieldBytes.int(b); if p.month == nil { p.invalid = true }
                case .B: p.month = FieldBytes.index(b, in: CivilTime.monthNames).map { $0 + 1 }; if p.month == nil { p.invalid = true }
                case .b: p.month = FieldBytes.index(b, in: CivilTime.monthAbbrevs).map { $0 + 1 }; if p.month == nil { p.invalid = true }
                case .d: p.day = FieldBytes.int(b); if p.day == nil { p.invalid = true }
                case .H: if let v = FieldBytes.int(b) { p.hour = v } else { p.invalid = true }
                case .I: hour12 = FieldBytes.int(b); if hour12 == nil { p.invalid = true }
                case .p:
                    let s = String(decoding: b, as: UTF8.self).lowercased()
                    ampm = s == "am" ? 0 : s == "pm" ? 1 : -1
                case .M: if let v = FieldBytes.int(b) { p.minute = v } else { p.invalid = true }
                case .S: if let v = FieldBytes.int(b) { p.second = v } else { p.invalid = true }
                case .A: p.weekday = FieldBytes.index(b, in: CivilTime.weekdayNames)
                case .a: p.weekday = FieldBytes.index(b, in: CivilTime.weekdayAbbrevs)
                case .w:
                    guard let v = FieldBytes.int(b) else { p.invalid = true; break }
                    p.weekday = v - 1 < 0 ? 6 : v - 1
                case .j: p.julian = FieldBytes.int(b)
                case .U, .W:
                    p.weekOfYear = FieldBytes.int(b)
                    p.weekStartsMonday = field == .W
                case .z, .Z:
                    if r.count == 3, (b[0] == 85 && b[1] == 84 && b[2] == 67) || (b[0] == 71 && b[1] == 77 && b[2] == 84) {
                        p.zone = 0
                    } else if let z = ZoneOffsets.offset(bytes: b) {
                        p.zone = z
                    } else {
                        p.invalid = true
                    }
                }
            }
            if var h = hour12 {
                // %I with %p: 12 am is midnight, 12 pm noon.
                if ampm == nil || ampm == 0 {
                    if h == 12 { h = 0 }
                } else if ampm == 1 {
                    if h != 12 { h += 12 }
                }
                p.hour = h
            }
            return converter.epoch(p, now: now, defaultZone: defaultZone)
        }
    }
}

/// A line's characters (code points of its UTF-8), addressed the way fail2ban's Python code addresses them. On
/// an ASCII line (nearly every line) characters are bytes and nothing is decoded.
private struct CharView {
    let p: UnsafePointer<UInt8>
    let n: Int
    let ascii: Bool

    init(_ p: UnsafePointer<UInt8>, _ n: Int, ascii: Bool) {
        self.p = p
        self.n = n
        self.ascii = ascii
    }

    @inline(__always)
    private func isLead(_ i: Int) -> Bool { p[i] & 0xC0 != 0x80 }

    /// The character offsets of a byte range that starts and ends on character boundaries.
    @inline(__always)
    func characterOffsets(of r: Range<Int>) -> (Int, Int) {
        if ascii { return (r.lowerBound, r.upperBound) }
        return decodedOffsets(of: r)
    }

    @inline(never)
    private func decodedOffsets(of r: Range<Int>) -> (Int, Int) {
        var c = 0
        for i in 0..<r.lowerBound where isLead(i) { c += 1 }
        let start = c
        for i in r where isLead(i) { c += 1 }
        return (start, c)
    }

    /// The byte offset of character `c` (`n` plus the excess past the end).
    @inline(__always)
    func byteOffset(ofCharacter c: Int) -> Int {
        if ascii || c <= 0 { return c }
        return decodedByteOffset(ofCharacter: c)
    }

    @inline(never)
    private func decodedByteOffset(ofCharacter c: Int) -> Int {
        var seen = 0
        for i in 0..<n where isLead(i) {
            if seen == c { return i }
            seen += 1
        }
        return n + (c - seen)
    }

    /// The code point of character `c`, -1 outside the line (Python's `line[c:c+1]` being empty).
    @inline(__always)
    func character(_ c: Int) -> Int {
        if ascii { return c >= 0 && c < n ? Int(p[c]) : -1 }
        return decodedCharacter(c)
    }

    @inline(never)
    private func decodedCharacter(_ c: Int) -> Int {
        guard c >= 0 else { return -1 }
        let b = byteOffset(ofCharacter: c)
        guard b < n else { return -1 }
        var end = b + 1
        while end < n && !isLead(end) { end += 1 }
        var decoder = UTF8()
        var bytes = UnsafeBufferPointer(start: p + b, count: end - b).makeIterator()
        if case .scalarValue(let s) = decoder.decode(&bytes) { return Int(s.value) }
        return -1
    }
}

extension DateDetector.Entry {
    /// The whole match of the last search.
    var matchRange: Range<Int>? { searchRegex.range(0) }
    /// The date text of the last search (group 1).
    var dateRange: Range<Int>? { searchRegex.range(1) }
}

extension DateDetector {
    /// `pattern` with every `{DATE}` (in any letter case, as fail2ban reads it) replaced by `date`.
    static func replacingDatePlaceholder(in pattern: String, with date: String) -> String {
        var out = ""
        var rest = Substring(pattern)
        while let open = rest.firstIndex(of: "{") {
            let candidate = rest[open...].prefix(6)
            if candidate.count == 6 && candidate.uppercased() == "{DATE}" {
                out += rest[..<open] + date
                rest = rest[candidate.endIndex...]
            } else {
                out += rest[...open]
                rest = rest[rest.index(after: open)...]
            }
        }
        return out + rest
    }
}
