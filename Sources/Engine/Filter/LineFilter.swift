import Glibc
import CFastScan
import Platform

/// What a failregex captured about one failure, fail2ban's `fail` dictionary. A class, because fail2ban's
/// multi-line failures (`<F-MLFID>`) share one such record between the connection cache and the result.
public final class FailData {
    /// Captured groups by name; a present key with a nil value is a group that did not take part.
    public var groups = GroupMap()
    /// The lines that make up the failure (with their dates).
    public var matches: [TupleLine] = []
    var nofailMatches: [TupleLine]? = nil
    /// User names seen over one multi-line failure.
    public var users: [String] = []
    var mlfpending = false

    init() {}

    func copy() -> FailData {
        let c = FailData()
        c.groups = groups
        c.matches = matches
        c.nofailMatches = nofailMatches
        c.users = users
        c.mlfpending = mlfpending
        return c
    }

    public func value(_ name: String) -> String? { groups[name] ?? nil }

    func truthy(_ name: String) -> Bool { !(value(name) ?? "").isEmpty }

    @discardableResult
    func pop(_ name: String) -> String? {
        let v = groups[name] ?? nil
        groups[name] = nil
        return v
    }

    /// Every capture that has a value, for reports (internal bookkeeping groups left out).
    public var reportedFields: [(String, String)] {
        groups.compactMap { k, v -> (String, String)? in
            guard let v, !k.hasPrefix("skiplines"), k != "content", k != "_sep" else { return nil }
            return (k, v)
        }.sorted { $0.0 < $1.0 }
    }
}

/// One failure found in a line.
public struct Failure {
    /// Index of the failregex that matched.
    public let regexIndex: Int
    /// The failure ID: normally the address as written in the log (raw, never resolved), or an `<F-ID>` value.
    /// nil while a multi-line failure still waits for its address.
    public let id: String?
    /// The address to ban when it differs from the ID.
    public let ip: String?
    /// Log time in epoch seconds, nil when the line has none.
    public let time: Double?
    public let data: FailData

    public var isNoFail: Bool { data.truthy("nofail") }
}

/// The compiled form of a filter and the state fail2ban's `Filter` keeps between lines: the multi-line buffer,
/// the last seen date, and connections of multi-line failures. `process` is fail2ban's `processLine` and
/// `findFailure`. One instance serves one stream of lines (one jail) on one thread.
public final class LineFilter {
    public struct Options: Sendable {
        /// Try every failregex instead of stopping at the first (fail2ban-regex does).
        public var checkAllRegex = false
        /// Drop lines older than `findTime` and treat far-off timestamps as "now" (the daemon does).
        public var checkFindTime = true
        public var findTime: Double = 600
        public var useDNS = "no"
        /// Never translate host names (fail2ban-regex `--raw`).
        public var returnRawHost = true
        public var ignorePending = true
        /// Keep fail2ban-regex's statistics exact (the prefregex hit count) even where a line is skipped.
        public var exactStatistics = false
        /// Skip lines that hold none of the strings every failregex needs (see `RegexAnalysis`).
        public var literalPrefilter = true
        /// Keep each failure's lines (`FailData.matches`); a report that only counts can do without them.
        public var recordMatches = true
        public init() {}
    }

    public let definition: FilterDefinition
    public let options: Options
    // The options the per-line path reads, unpacked once (reading them through `options` costs retains).
    private let checkAllRegex: Bool
    private let recordMatches: Bool
    private let checkFindTime: Bool
    private let ignorePending: Bool
    private let findTime: Double
    /// The first half of the per-line work: the UTF-8 check and the date.
    public let examiner: LineExaminer
    /// Strings one of which any failregex match needs; nil when the filter gives no such guarantee. Replaced once,
    /// by `calibrate`, after 256 lines: the per-line path reads it only after calibrating, through a strong reference.
    private var screen: LiteralScanner?
    /// Per failregex, every set of strings one of which a match needs.
    private let screenCandidates: [[[[UInt8]]]]
    /// Byte counts of the first lines, to choose the rarest anchor bytes for this very log.
    private var byteCounts: [UInt32]? = nil
    private var linesCounted = 0
    /// The prefregex provably matches every line with text besides its date.
    private let prefRegexUniversal: Bool
    private let exactStatistics: Bool
    /// The strings lines are screened for (nil: every line goes through the regexes).
    var prefilterLiterals: [String]? { screen?.literals.map { String(decoding: $0, as: UTF8.self) } }
    var prefRegexIsUniversal: Bool { prefRegexUniversal }
    public let maxLines: Int
    public var dateDetector: DateDetector { examiner.dateDetector }
    let prefRegex: FilterRegex?
    let failRegexes: [FilterRegex]
    let ignoreRegexes: [FilterRegex]
    /// While processing a file's backlog this is false: timestamps are trusted; afterwards true.
    public var inOperation = true
    /// Called with the index of every ignoreregex that matched (for `portcullis regex` statistics).
    public var onIgnoreRegex: ((Int) -> Void)?

    /// A regex that could not be evaluated on a line: PCRE2 reached a limit (a line of several MiB, or a regex that
    /// backtracks without end) even with the larger limits long lines get. The line counts as not matched by it.
    public struct RegexFailure: Sendable, CustomStringConvertible {
        /// "failregex 2", "prefregex", "ignoreregex 1".
        public let regex: String
        public let message: String
        /// The length of the text searched, in bytes.
        public let length: Int
        public var description: String {
            "\(regex) could not be evaluated on a line of \(length) bytes (PCRE2: \(message)); the line counts as not matched by it"
        }
    }
    /// Called, on the filter's thread, for every search that could not complete. Without it such searches would
    /// pass for "no match" without a word.
    public var onRegexError: ((RegexFailure) -> Void)?

    private var lineBuffer: [TupleLine] = []
    /// Set while the prefregex content stands in for the line buffer of a single-line filter.
    private var contentOverride = false
    private var current = TupleLine(bytes: [])
    private let subject = ByteBuffer()
    /// Whether `subject` holds only ASCII (then the faster byte-mode regexes apply).
    private var subjectASCII = true
    private let contentScratch = ByteBuffer()
    private let lastTimeText = ByteBuffer(capacity: 64)
    /// The text around a cut-out date, for the screen.
    private let junction = ByteBuffer(capacity: 256)
    private var lastDate: Double? = nil
    private var mlfidCache = ExpiringCache<FailEntry>(maxCount: 100, maxTime: 5 * 60)

    final class FailEntry {
        var date: Double?
        var fail: FailData
        init(date: Double?, fail: FailData) { self.date = date; self.fail = fail }
    }

    public var failRegexSources: [String] { failRegexes.map(\.source) }
    public var ignoreRegexSources: [String] { ignoreRegexes.map(\.source) }
    public var prefRegexSource: String? { prefRegex?.source }
    /// Whether the prefregex matched the last line (fail2ban-regex counts it).
    public private(set) var prefRegexMatched = false
    /// The timestamp of the last line processed, nil when it had none.
    public private(set) var lastLineTime: Double?
    /// Lines held for multi-line matching (`maxlines`).
    public var bufferedLines: [TupleLine] { lineBuffer }

    /// A regex of the filter that does not compile, with the option it came from.
    public struct CompileError: Error, CustomStringConvertible {
        public let option: String
        public let regex: String
        public let message: String
        public let location: SourceLocation?
        public var description: String {
            "\(location.map { "\($0): " } ?? "")\(option) does not compile: \(message)\n  regex: \(regex)"
        }
    }

    public init(_ definition: FilterDefinition, options: Options = Options(), datePatterns: [String]? = nil,
                logTimeZone: Int? = nil, maxLinesOverride: Int? = nil) throws {
        self.definition = definition
        var options = options
        if let u = definition.usedns { options.useDNS = u.lowercased() }
        if !["yes", "warn", "no", "raw"].contains(options.useDNS) { options.useDNS = "no" }
        self.options = options
        checkAllRegex = options.checkAllRegex
        recordMatches = options.recordMatches
        checkFindTime = options.checkFindTime
        ignorePending = options.ignorePending
        findTime = options.findTime
        let maxLines = maxLinesOverride ?? definition.maxlines ?? 1
        self.maxLines = maxLines
        let useDNS = options.useDNS
        func compile(_ s: String, option: String, multiline: Bool) throws -> FilterRegex {
            do {
                let r = try FilterRegex(s, useDNS: useDNS, multiline: multiline)
                return r
            } catch {
                throw CompileError(option: option, regex: s, message: error.message, location: definition.locations[option])
            }
        }
        prefRegex = try definition.prefregex.map { try compile($0, option: "prefregex", multiline: false) }
        var fails: [FilterRegex] = []
        for s in definition.failregex {
            let r = try compile(s, option: "failregex", multiline: maxLines > 1)
            if !r.hasFailureIDGroup && !(prefRegex?.hasFailureIDGroup ?? false) {
                throw CompileError(option: "failregex", regex: s,
                                   message: "no failure-id group: the regex needs <HOST>, <ADDR>, <IP4>, <IP6>, <DNS>, <F-ID> or <F-MLFID>",
                                   location: definition.locations["failregex"])
            }
            fails.append(r)
        }
        failRegexes = fails
        ignoreRegexes = try definition.ignoreregex.map { try compile($0, option: "ignoreregex", multiline: false) }
        exactStatistics = options.exactStatistics
        prefRegexUniversal = prefRegex.map { RegexAnalysis.matchesEveryNonEmptyLine($0.compiled) } ?? true
        // Lines are skipped only when that cannot change anything: single-line filters, every failregex with a
        // known set of required strings, and no ignoreregex that fail2ban would try before the failregexes.
        var candidates: [[[[UInt8]]]] = []
        var usable = options.literalPrefilter && maxLines <= 1 && !fails.isEmpty
            && !(!ignoreRegexes.isEmpty && ignoreRegexes.count < fails.count - 2)
        for r in fails where usable {
            if let sets = RegexAnalysis.candidateSets(r.compiled) { candidates.append(sets) } else { usable = false }
        }
        var patterns = datePatterns ?? []
        if datePatterns == nil, let dp = definition.datepattern {
            patterns = dp.split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        }
        let dateDetector: DateDetector
        do {
            dateDetector = try DateDetector(patterns: patterns, defaultZone: logTimeZone)
        } catch {
            throw ConfigError(error.message, at: definition.locations["datepattern"])
        }
        examiner = LineExaminer(dateDetector: dateDetector)
        screenCandidates = usable ? candidates : []
        if usable {
            screen = LiteralScanner(LiteralScanner.choose(candidates, frequencies: nil))
            byteCounts = [UInt32](repeating: 0, count: 256)
        }
        // The regexes belong to this filter and never outlive it.
        let report: (FilterRegex, Int32, Int) -> Void = { [unowned self] regex, code, length in
            onRegexError?(RegexFailure(regex: regex.label, message: PCRE2Regex.message(for: code), length: length))
        }
        prefRegex?.label = "prefregex"
        for (i, r) in failRegexes.enumerated() { r.label = "failregex \(i + 1)" }
        for (i, r) in ignoreRegexes.enumerated() { r.label = "ignoreregex \(i + 1)" }
        for r in [prefRegex].compactMap({ $0 }) + failRegexes + ignoreRegexes { r.onError = report }
    }

    // MARK: processing

    /// Processes one line (without its line terminator). `now` is the current time (or the `--now` of
    /// `portcullis regex`). Returns the failures found, nofail markers included.
    public func process(_ line: UnsafeBufferPointer<UInt8>, now: Double) -> [Failure] {
        var repaired: [UInt8]? = nil
        let facts = examiner.examine(line, now: now, repaired: &repaired)
        if let repaired {
            return repaired.withUnsafeBufferPointer { process($0, facts: facts, now: now) }
        }
        return process(line, facts: facts, now: now)
    }

    /// The second half of `process`, with what `examiner.examine` found for this line.
    public func process(_ line: UnsafeBufferPointer<UInt8>, facts: LineFacts, now: Double) -> [Failure] {
        var date: Double? = nil
        var noDate = false
        var tuple: (start: Int, end: Int) = (0, 0)
        var useLastText = false
        let ascii = facts.ascii
        if facts.dateFound {
            tuple = (facts.dateStart, facts.dateEnd)
            if tuple.end > tuple.start {
                date = facts.time
                if let date {
                    lastTimeText.reset()
                    lastTimeText.append(UnsafeBufferPointer(rebasing: line[tuple.start..<tuple.end]))
                    lastDate = date
                }
            } else if let last = lastDate, last > now - 60 {
                useLastText = true
                date = last
            } else {
                date = now
            }
        }
        if date == nil {
            noDate = true
            if let last = lastDate, last > now - 60 {
                useLastText = true
                date = last
            } else if checkFindTime && inOperation {
                date = now
            }
        }
        // Before the screen: a line no failregex can match still moves the last date (issue 9: skipping this
        // made the next line with an unparsable date keep its text where fail2ban's daemon takes the last one).
        if checkFindTime, let d = date {
            if inOperation {
                if abs(d - now) > 60 {
                    // fail2ban's "simulate now": a date far from now in operation is taken as now.
                    date = now
                    lastDate = now
                }
            } else if d < now - findTime {
                return []
            }
        }
        lastLineTime = date
        if !screened(line, facts, cutDate: !useLastText) {
            // No failregex can match this line: only the prefregex statistic needs updating.
            prefRegexMatched = false
            if let pref = prefRegex {
                let remaining = line.count - (useLastText ? 0 : tuple.end - tuple.start)
                if prefRegexUniversal {
                    prefRegexMatched = remaining > 0
                } else if exactStatistics {
                    subject.reset()
                    if useLastText {
                        subject.append(line)
                    } else {
                        subject.append(UnsafeBufferPointer(rebasing: line[..<tuple.start]))
                        subject.append(UnsafeBufferPointer(rebasing: line[tuple.end...]))
                    }
                    subject.append(10)
                    prefRegexMatched = pref.search(subject.buffer, originCount: 1, ascii: ascii)
                }
            }
            return []
        }
        // The buffer must not share `current`'s storage while it is rewritten (that would copy it).
        if maxLines <= 1 { lineBuffer.removeAll(keepingCapacity: true) }
        current.bytes.removeAll(keepingCapacity: true)
        current.isASCII = ascii && (!useLastText || lastTimeText.buffer.allSatisfy { $0 < 0x80 })
        if useLastText {
            current.bytes.append(contentsOf: lastTimeText.buffer)
            current.bytes.append(contentsOf: line)
            current.dateStart = 0
            current.dateEnd = lastTimeText.count
        } else {
            current.bytes.append(contentsOf: line)
            current.dateStart = tuple.start
            current.dateEnd = tuple.end
        }
        return findFailure(date: date, noDate: noDate)
    }

    /// Whether the line, without its date (`cutDate`), may hold one of the strings some failregex needs (always
    /// true without a screen). A date at the start is simply skipped; elsewhere the whole line is scanned, and as
    /// cutting the date out joins the text on both sides of it (as in "[]"), a string the whole line lacks can
    /// then only appear across that join.
    private func screened(_ line: UnsafeBufferPointer<UInt8>, _ facts: LineFacts, cutDate: Bool) -> Bool {
        // Calibrating may replace the screen: read it only afterwards (issue 9: an unretained reference taken
        // before this call outlived the screen it pointed to, and the 256th line was scanned with freed memory).
        if byteCounts != nil { calibrate(line) }
        guard let scanner = screen else { return true }
        guard let base = line.baseAddress, !line.isEmpty else { return false }
        let cut = cutDate && facts.dateEnd > facts.dateStart
        if cut && facts.dateStart == 0 { return scanner.scan(base + facts.dateEnd, line.count - facts.dateEnd).found }
        if scanner.scan(base, line.count).found { return true }
        guard cut, facts.dateEnd < line.count else { return false }
        let reach = scanner.maxLength - 1
        junction.reset()
        junction.append(UnsafeBufferPointer(rebasing: line[max(0, facts.dateStart - reach)..<facts.dateStart]))
        junction.append(UnsafeBufferPointer(rebasing: line[facts.dateEnd..<min(line.count, facts.dateEnd + reach)]))
        return scanner.containsAny(junction.base, junction.count)
    }

    /// After 256 lines, picks the screening anchors from the bytes this log actually holds.
    private func calibrate(_ line: UnsafeBufferPointer<UInt8>) {
        if let base = line.baseAddress { byteCounts!.withUnsafeMutableBufferPointer { pc_count_bytes(base, line.count, $0.baseAddress!) } }
        linesCounted += 1
        if linesCounted == 256, screen != nil {
            screen = LiteralScanner(LiteralScanner.choose(screenCandidates, frequencies: byteCounts), frequencies: byteCounts)
            byteCounts = nil
        }
    }

    /// Makes `subject` hold fail2ban's `_tupleLinesBuf(lineBuffer)` (or the prefregex content that replaced it).
    private func buildSubject() {
        if contentOverride { return }
        subject.reset()
        subjectASCII = true
        if lineBuffer.isEmpty { subject.append(10); return }
        for l in lineBuffer {
            subjectASCII = subjectASCII && l.isASCII
            l.bytes.withUnsafeBufferPointer { b in
                if l.dateEnd == l.dateStart {
                    subject.append(b)
                } else {
                    subject.append(UnsafeBufferPointer(rebasing: b[..<l.dateStart]))
                    subject.append(UnsafeBufferPointer(rebasing: b[l.dateEnd...]))
                }
            }
            subject.append(10)
        }
    }

    /// fail2ban replaces the line buffer with `[('', '', content)]` after a prefregex match.
    private func replaceWithContent() {
        if maxLines > 1 {
            lineBuffer = [TupleLine(bytes: Array(contentScratch.buffer), isASCII: subjectASCII)]
            contentOverride = false
            buildSubject()
        } else {
            // Single-line filters keep the content in the subject itself instead of allocating a line for it.
            subject.reset()
            subject.append(contentScratch.buffer)
            subject.append(10)
            lineBuffer.removeAll(keepingCapacity: true)
            contentOverride = true
        }
    }

    private func setLineBuffer(_ lines: [TupleLine]) {
        lineBuffer = lines
        contentOverride = false
    }

    private func findFailure(date: Double?, noDate: Bool) -> [Failure] {
        var failList: [Failure] = []
        prefRegexMatched = false
        contentOverride = false
        if maxLines > 1 {
            lineBuffer.append(current)
            if lineBuffer.count > maxLines { lineBuffer.removeFirst(lineBuffer.count - maxLines) }
        } else {
            lineBuffer.append(current)
        }
        let orgBuffer = lineBuffer
        let subject = self.subject
        buildSubject()
        var subjectValid = true

        if !ignoreRegexes.isEmpty && ignoreRegexes.count < failRegexes.count - 2 {
            if ignoreLine(subject.buffer, orgBuffer, failRegex: nil) != nil { return failList }
        }
        var preGroups = GroupMap()
        if let pref = prefRegex {
            if !pref.search(subject.buffer, originCount: orgBuffer.count, ascii: subjectASCII) { return failList }
            prefRegexMatched = true
            if pref.hasGroupsBesidesContent {
                preGroups = pref.groups(subject.buffer)
                preGroups["content"] = nil
            }
            if let r = pref.contentRange, !r.isEmpty {
                // Copy out of `subject` first: the content replaces it.
                contentScratch.reset()
                contentScratch.append(UnsafeBufferPointer(rebasing: subject.buffer[r]))
                replaceWithContent()
            }
        }
        let failRegexes = self.failRegexes
        for index in failRegexes.indices {
            let failRegex = failRegexes[index]
            if !subjectValid { buildSubject(); subjectValid = true }
            let buf = subject.buffer
            if !failRegex.search(buf, originCount: orgBuffer.count, ascii: subjectASCII) { continue }
            var groups = failRegex.groups(buf)
            if !ignoreRegexes.isEmpty && ignoreLine(buf, orgBuffer, failRegex: failRegex) != nil {
                subjectValid = false
                if !checkAllRegex { break }
                continue
            }
            if noDate && date == nil && checkFindTime { continue }
            if !checkAllRegex || maxLines > 1 {
                setLineBuffer(failRegex.unmatchedLines(orgBuffer))
                subjectValid = false
            }
            if !preGroups.isEmpty {
                var merged = preGroups
                for (k, v) in groups { merged[k] = v }
                groups = merged
            }
            var fail = FailData()
            fail.groups = groups
            let mlfid = fail.value("mlfid")
            if let mlfid {
                fail = mergeFailure(mlfid, fail, failRegex, orgBuffer)
                if fail.truthy("nofail") && !checkAllRegex { return failList }
            } else if recordMatches {
                fail.matches += failRegex.matchedLines(orgBuffer)
            }
            var fid = fail.value("fid")
            var ip: String? = fail.value("ip4")
            if ip == nil { ip = fail.value("ip6") }
            if ip == nil {
                ip = fail.value("dns")
                if ip == nil {
                    if fid == nil && mlfid == nil {
                        fid = FilterRegex.failureIDGroups.lazy.compactMap { fail.value($0) }.first
                    }
                    ip = fid
                }
            }
            var reportedIP: String? = nil
            if ip == nil {
                fail.mlfpending = true
                if !checkAllRegex && ignorePending { return failList }
            } else if fid == nil || fid == ip {
                fid = LineFilter.withPrefix(ip!, fail.value("cidr"))
            } else {
                reportedIP = ip
                fail.groups["ip"] = ip
            }
            let result = checkAllRegex && mlfid != nil ? fail.copy() : fail
            failList.append(Failure(regexIndex: index, id: ip == nil ? nil : fid, ip: reportedIP, time: date, data: result))
            if !checkAllRegex { break }
        }
        return failList
    }

    /// `<SUBNET>` / `<ADDR>/<CIDR>` failures are identified by their network, as fail2ban's `IPAddr(ip, cidr)`.
    static func withPrefix(_ ip: String, _ cidr: String?) -> String {
        guard let cidr, !cidr.isEmpty, let network = IPNetwork(ip + "/" + cidr) else { return ip }
        return network.description
    }

    private func ignoreLine(_ buffer: UnsafeBufferPointer<UInt8>, _ origin: [TupleLine], failRegex: FilterRegex?) -> Int? {
        var ownBuffer: [UInt8] = []
        var org = origin
        if let failRegex, maxLines > 1 {
            org = failRegex.matchedLines(origin)
            TupleLine.buffer(org, into: &ownBuffer)
        }
        var found: Int? = nil
        for (index, ignore) in ignoreRegexes.enumerated() {
            let ok = ownBuffer.isEmpty
                ? ignore.search(buffer, originCount: org.count, ascii: subjectASCII)
                : ownBuffer.withUnsafeBufferPointer { ignore.search($0, originCount: org.count) }
            if ok {
                found = index
                onIgnoreRegex?(index)
                if !checkAllRegex || maxLines > 1 {
                    if let failRegex { setLineBuffer(failRegex.unmatchedLines(origin)) }
                }
                if !checkAllRegex { break }
            }
        }
        return found
    }

    /// fail2ban's `_mergeFailure`: joins the lines of one connection (`<F-MLFID>`) into one failure.
    private func mergeFailure(_ mlfid: String, _ failIn: FailData, _ failRegex: FilterRegex,
                              _ origin: [TupleLine]) -> FailData {
        var fail = failIn
        let cached = mlfidCache.get(mlfid)
        var users: [String]? = nil
        var flags = 0
        if fail.truthy("mlfgained") {
            flags |= 8 | 1
            if !fail.truthy("nofail") { fail.groups["nofail"] = fail.value("mlfgained") }
        } else if fail.truthy("nofail") {
            flags |= 1
        }
        if let forget = fail.pop("mlfforget"), !forget.isEmpty { flags |= 2 }
        var entry: FailEntry? = nil
        if let cached {
            let groups = cached.fail
            users = LineFilter.updateUsers(groups, fail.value("user"))
            if let v = groups.pop("nofail"), !v.isEmpty { flags |= 4 }
            if let v = groups.pop("mlfgained"), !v.isEmpty { flags |= 4 }
            if flags & 4 == 0 && !groups.mlfpending { groups.matches = [] }
            for (k, v) in fail.groups where v != nil { groups.groups[k] = v }
            fail = groups
            entry = cached
            if flags & 2 != 0 { mlfidCache.unset(mlfid); entry = nil }
        } else if flags & 2 == 0 {
            users = LineFilter.updateUsers(fail, fail.value("user"))
            let e = FailEntry(date: lastDate, fail: fail)
            mlfidCache.set(mlfid, e)
            entry = e
        }
        let pending = fail.mlfpending
        fail.mlfpending = false
        if pending || (users?.count ?? 0) > 1 {
            fail.pop("nofail")
            fail.pop("mlfgained")
            flags &= ~(8 | 1)
        }
        if flags & 1 == 0 {
            var m = fail.nofailMatches ?? []
            fail.nofailMatches = nil
            m += fail.matches
            if flags & 8 == 0 { m += failRegex.matchedLines(origin) }
            fail.matches = m
        } else if flags & 3 == 1 {
            fail.nofailMatches = (fail.nofailMatches ?? []) + failRegex.matchedLines(origin)
        }
        _ = entry
        return fail
    }

    private static func updateUsers(_ fail: FailData, _ user: String?) -> [String]? {
        if let user, !user.isEmpty {
            if !fail.users.contains(user) { fail.users.append(user) }
            return fail.users
        }
        return fail.users.isEmpty ? nil : fail.users
    }
}

/// fail2ban's `Utils.Cache`: bounded by count (oldest inserted evicted first) and by age.
struct ExpiringCache<Value> {
    let maxCount: Int
    let maxTime: Double
    private var order: [String] = []
    private var items: [String: (value: Value, expires: Double)] = [:]

    init(maxCount: Int, maxTime: Double) {
        self.maxCount = maxCount
        self.maxTime = maxTime
    }

    private static func now() -> Double { Clock.now() }

    mutating func get(_ key: String) -> Value? {
        guard let item = items[key] else { return nil }
        if item.expires > ExpiringCache.now() { return item.value }
        unset(key)
        return nil
    }

    mutating func set(_ key: String, _ value: Value) {
        let t = ExpiringCache.now()
        if items.count >= maxCount {
            while let first = order.first {
                order.removeFirst()
                let evicted = items.removeValue(forKey: first)
                if let evicted, evicted.expires > t, items.count < maxCount { break }
            }
        }
        if items[key] == nil { order.append(key) }
        items[key] = (value, t + maxTime)
    }

    mutating func unset(_ key: String) {
        if items.removeValue(forKey: key) != nil { order.removeAll { $0 == key } }
    }
}

enum UTF8Check {
    /// The bytes with every invalid sequence replaced by U+FFFD (Python's `errors='replace'`).
    static func repaired(_ bytes: UnsafeBufferPointer<UInt8>) -> [UInt8] {
        Array(String(decoding: bytes, as: UTF8.self).utf8)
    }
}
