import Glibc

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

        init(_ template: DateTemplate) throws(ConfigError) {
            self.template = template
            do {
                regex = try PCRE2Regex(PythonRegex.toPCRE2(template.regex))
            } catch {
                throw ConfigError("date pattern '\(template.pattern ?? template.name)' does not compile: \(error.message)")
            }
            fieldGroups = regex.groupNames.compactMap { g in TimeField(groupName: g.name).map { (g.number, $0) } }
            fractionGroup = regex.groupNumbers["f"]
        }

        var weight: Double { Double(hits) * template.weight / Double(max(1, distance)) }
    }

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
    }

    private func addDefaults(filter: ((DateTemplate) -> Bool)? = nil, preMatch: String? = nil) throws(ConfigError) {
        let ignoreDuplicate = !entries.isEmpty
        if let preMatch {
            for t in DateTemplate.baseDefaults(yearRegex: yearRegex) {
                let wrapped = t.anchored(wrap: { preMatch.replacingOccurrences(of: "{DATE}", with: DateTemplate.unbound($0), options: .caseInsensitive) },
                                         yearRegex: yearRegex)
                try add(wrapped, ignoreDuplicate: ignoreDuplicate)
            }
            return
        }
        for t in DateTemplate.defaults(yearRegex: yearRegex) where filter?(t) ?? true {
            try add(t, ignoreDuplicate: ignoreDuplicate)
        }
    }

    @inline(__always)
    private static func byte(_ p: UnsafePointer<UInt8>, _ n: Int, _ i: Int) -> Int {
        i >= 0 && i < n ? Int(p[i]) : -1
    }

    @inline(__always)
    private static func isAlnum(_ b: Int) -> Bool {
        // Non-ASCII bytes are parts of letters more often than not; Python's isalnum() agrees for most of them.
        (b >= 48 && b <= 57) || (b >= 65 && b <= 90) || (b >= 97 && b <= 122) || b >= 128
    }

    /// The found date: the byte range of the date text in the line, and the template that matched.
    public struct Match {
        public let range: Range<Int>
        let entry: Entry
        public var templateName: String { entry.template.name }
    }

    /// Searches `line[0..<length]` for a timestamp. The corresponding fail2ban method is `DateDetector.matchTime`.
    public func match(_ line: UnsafePointer<UInt8>, length: Int, ascii: Bool = false) -> Match? {
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
        var distance = 0, endpos = 0
        if i < entries.count {
            let e = entries[i]
            var ok = false
            var searchStart = 0
            var searchLength = length
            if e.template.isAnchored {
                ok = searchEntry(e, line, length)
                ignoreBySearch = i
            } else {
                let (d, dPrev, dChar) = lastPos
                let (ep, epPrev, epChar) = lastEndPos
                let begins = DateDetector.byte(line, length, d - 1) == dPrev
                    || (DateDetector.byte(line, length, d) == dChar && !DateDetector.isAlnum(dChar))
                let ends = DateDetector.byte(line, length, ep) == epChar
                    || (DateDetector.byte(line, length, ep - 1) == epPrev && !DateDetector.isAlnum(epPrev))
                if begins && ends {
                    searchStart = d
                    searchLength = min(ep, length)
                    ok = searchEntry(e, line, searchLength, start: searchStart)
                } else {
                    ok = searchEntry(e, line, length)
                    ignoreBySearch = i
                }
            }
            if ok, let r = e.regex.range(0) {
                distance = r.lowerBound; endpos = r.upperBound
                if entries.count == 1 || e.template.isAnchored || (distance == lastPos.0 && endpos == lastEndPos.0) {
                    matched = true; selected = e
                } else {
                    found = (i, distance, endpos, searchStart, searchLength)
                }
            }
        }
        if !matched {
            i = 0
            while i < entries.count {
                if i == ignoreBySearch { i += 1; continue }
                let e = entries[i]
                if searchEntry(e, line, length), let r = e.regex.range(0) {
                    distance = r.lowerBound; endpos = r.upperBound
                    if i + 1 >= entries.count || e.template.isAnchored {
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
                matched = true
            }
        }
        guard matched, let entry = selected else { return nil }
        entry.hits += 1
        if clockCountdown == 0 {
            coarseClock = Clock.now()
            clockCountdown = 1024
        }
        clockCountdown -= 1
        entry.lastUsed = coarseClock
        entry.distance = distance
        if firstUnused == i { firstUnused += 1 }
        lastPos = (distance, DateDetector.byte(line, length, distance - 1), DateDetector.byte(line, length, distance))
        lastEndPos = (endpos, DateDetector.byte(line, length, endpos - 1), DateDetector.byte(line, length, endpos))
        if i != 0 && i != lastTemplateIndex { i = reorder(i) }
        lastTemplateIndex = i
        // Group 1 holds the date itself.
        let dateRange = entry.regex.range(1) ?? (distance..<endpos)
        return Match(range: dateRange, entry: entry)
    }

    @inline(__always)
    private func searchEntry(_ e: Entry, _ line: UnsafePointer<UInt8>, _ length: Int, start: Int = 0,
                             countHit: Bool = true) -> Bool {
        let ok = e.regex.search(line, length: length, start: max(0, start), ascii: lineIsASCII)
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
    public func time(of match: Match, line: UnsafePointer<UInt8>, now: Double) -> Double? {
        let regex = match.entry.regex
        switch match.entry.template.kind {
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
            guard let whole = regex.range(1) else { return nil }
            var skip = whole.upperBound..<whole.upperBound
            if let g = match.entry.fractionGroup, let f = regex.range(g) { skip = f }
            let head = UnsafeBufferPointer(start: line + whole.lowerBound, count: skip.lowerBound - whole.lowerBound)
            let tail = UnsafeBufferPointer(start: line + skip.upperBound, count: whole.upperBound - skip.upperBound)
            if let cached = dateCache, cached.entry === match.entry, cached.now == now, cached.zone == defaultZone,
               DateDetector.same(cached.head, head), DateDetector.same(cached.tail, tail) {
                return cached.result
            }
            let result = parseFields(match, line: line, now: now)
            if dateCache != nil {
                // Updated in place, so that the buffers are reused.
                dateCache!.entry = match.entry
                dateCache!.now = now
                dateCache!.zone = defaultZone
                dateCache!.head.removeAll(keepingCapacity: true)
                dateCache!.head.append(contentsOf: head)
                dateCache!.tail.removeAll(keepingCapacity: true)
                dateCache!.tail.append(contentsOf: tail)
                dateCache!.result = result
            } else {
                dateCache = DateCache(entry: match.entry, now: now, zone: defaultZone, head: Array(head), tail: Array(tail), result: result)
            }
            return result
        }
    }

    @inline(__always)
    private static func same(_ a: [UInt8], _ b: UnsafeBufferPointer<UInt8>) -> Bool {
        guard a.count == b.count else { return false }
        if a.isEmpty { return true }
        return a.withUnsafeBufferPointer { memcmp($0.baseAddress!, b.baseAddress!, a.count) == 0 }
    }

    private struct DateCache {
        var entry: Entry
        var now: Double
        var zone: Int?
        var head: [UInt8]
        var tail: [UInt8]
        var result: Double?
    }
    private var dateCache: DateCache?

    private func parseFields(_ match: Match, line: UnsafePointer<UInt8>, now: Double) -> Double? {
        let regex = match.entry.regex
        do {
            var p = ParsedTime()
            var hour12: Int? = nil
            var ampm: Int? = nil  // 0 am, 1 pm, -1 something else
            for (group, field) in match.entry.fieldGroups {
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

import Foundation
