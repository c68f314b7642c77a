import Glibc
import Platform

/// The compiled form of a filter and the state fail2ban's `Filter` keeps between lines. `process` is fail2ban's
/// `processLine` (the date a line stands for) and `findFailure` (the regexes, and what their groups identify);
/// beside it, the screen that skips lines no failregex can match (`LineScreen`), the line buffer and the regex
/// subject (`MultiLineBuffer`), the connections of multi-line failures (`MultiLineFailures`). One instance serves
/// one stream of lines (one jail) on one thread.
public final class LineFilter {
    public struct Options: Sendable {
        /// Try every failregex instead of stopping at the first (fail2ban-regex does).
        public var checkAllRegex = false
        /// Drop lines older than `findTime` and treat far-off timestamps as "now" (the daemon does).
        public var checkFindTime = true
        public var findTime: Double = 600
        public var useDNS = UseDNS.no
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
    private let screen: LineScreen
    /// The prefregex provably matches every line with text besides its date.
    private let prefRegexUniversal: Bool
    private let exactStatistics: Bool
    /// The strings lines are screened for (nil: every line goes through the regexes).
    var prefilterLiterals: [String]? { screen.literals }
    var prefRegexIsUniversal: Bool { prefRegexUniversal }
    public var maxLines: Int { buffer.maxLines }
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

    private let buffer: MultiLineBuffer
    private var connections = MultiLineFailures()
    /// The line being processed, with the date text it stands for.
    private var current = TupleLine(bytes: [])
    /// The last date found, and its text (a line without a date of its own takes them, within 60 s).
    private let lastTimeText = ByteBuffer(capacity: 64)
    private var lastDate: Double? = nil

    public var failRegexSources: [String] { failRegexes.map(\.source) }
    public var ignoreRegexSources: [String] { ignoreRegexes.map(\.source) }
    public var prefRegexSource: String? { prefRegex?.source }
    /// Whether the prefregex matched the last line (fail2ban-regex counts it).
    public private(set) var prefRegexMatched = false
    /// The timestamp of the last line processed, nil when it had none.
    public private(set) var lastLineTime: Double?
    /// Lines held for multi-line matching (`maxlines`).
    public var bufferedLines: [TupleLine] { buffer.lines }

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

    public init(
        _ definition: FilterDefinition, options: Options = Options(), datePatterns: [String]? = nil,
        logTimeZone: Int? = nil, maxLinesOverride: Int? = nil
    ) throws {
        self.definition = definition
        var options = options
        // The filter's own `usedns` wins; a value that is none of the four counts as `no` (`check` warns of it).
        if let u = definition.usedns { options.useDNS = UseDNS(setting: u) ?? .no }
        self.options = options
        checkAllRegex = options.checkAllRegex
        recordMatches = options.recordMatches
        checkFindTime = options.checkFindTime
        ignorePending = options.ignorePending
        findTime = options.findTime
        let maxLines = maxLinesOverride ?? definition.maxlines ?? 1
        buffer = MultiLineBuffer(maxLines: maxLines)
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
                throw CompileError(
                    option: "failregex", regex: s,
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
        var usable =
            options.literalPrefilter && maxLines <= 1 && !fails.isEmpty
            && !(!ignoreRegexes.isEmpty && ignoreRegexes.count < fails.count - 2)
        for r in fails where usable {
            if let sets = RegexAnalysis.candidateSets(r.compiled) { candidates.append(sets) } else { usable = false }
        }
        var patterns = datePatterns ?? []
        if datePatterns == nil, let dp = definition.datepattern {
            patterns = dp.split(separator: "\n").map { $0.trimmingWhitespace() }.filter { !$0.isEmpty }
        }
        let dateDetector: DateDetector
        do {
            dateDetector = try DateDetector(patterns: patterns, defaultZone: logTimeZone)
        } catch {
            throw ConfigError(error.message, at: definition.locations["datepattern"])
        }
        examiner = LineExaminer(dateDetector: dateDetector)
        screen = LineScreen(candidates: usable ? candidates : nil)
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
        guard let dated = date(of: line, facts, now: now) else { return [] }
        lastLineTime = dated.date
        if !screen.mayMatch(line, facts, cutDate: !dated.usesLastText) {
            countPrefRegexOnly(line, facts, dated)
            return []
        }
        buffer.releaseForNextLine()
        current.bytes.removeAll(keepingCapacity: true)
        current.isASCII = facts.ascii && (!dated.usesLastText || lastTimeText.buffer.allSatisfy { $0 < 0x80 })
        if dated.usesLastText {
            current.bytes.append(contentsOf: lastTimeText.buffer)
            current.bytes.append(contentsOf: line)
            current.dateStart = 0
            current.dateEnd = lastTimeText.count
        } else {
            current.bytes.append(contentsOf: line)
            current.dateStart = facts.dateFound ? facts.dateStart : 0
            current.dateEnd = facts.dateFound ? facts.dateEnd : 0
        }
        return findFailure(date: dated.date, noDate: dated.noDate)
    }

    /// The date a line stands for (fail2ban's `processLine`).
    private struct LineDate {
        var date: Double?
        /// The line has no date of its own.
        var noDate: Bool
        /// The line takes the last date's text (it had none, or one that could not be read, within 60 s of it).
        var usesLastText: Bool
    }

    /// The date `line` stands for; nil when the line is to be dropped (older than `findtime`, reading a backlog).
    private func date(of line: UnsafeBufferPointer<UInt8>, _ facts: LineFacts, now: Double) -> LineDate? {
        var result = LineDate(date: nil, noDate: false, usesLastText: false)
        if facts.dateFound {
            if facts.dateEnd > facts.dateStart {
                result.date = facts.time
                if let date = facts.time {
                    lastTimeText.reset()
                    lastTimeText.append(UnsafeBufferPointer(rebasing: line[facts.dateStart..<facts.dateEnd]))
                    lastDate = date
                }
            } else if let last = lastDate, last > now - 60 {
                result.usesLastText = true
                result.date = last
            } else {
                result.date = now
            }
        }
        if result.date == nil {
            result.noDate = true
            if let last = lastDate, last > now - 60 {
                result.usesLastText = true
                result.date = last
            } else if checkFindTime && inOperation {
                result.date = now
            }
        }
        // Before the screen: a line no failregex can match still moves the last date (issue 9: skipping this
        // made the next line with an unparsable date keep its text where fail2ban's daemon takes the last one).
        if checkFindTime, let d = result.date {
            if inOperation {
                if abs(d - now) > 60 {
                    // fail2ban's "simulate now": a date far from now in operation is taken as now.
                    result.date = now
                    lastDate = now
                }
            } else if d < now - findTime {
                return nil
            }
        }
        return result
    }

    /// A line the screen skipped: only the prefregex statistic needs updating (exactly, for `portcullis regex`).
    private func countPrefRegexOnly(_ line: UnsafeBufferPointer<UInt8>, _ facts: LineFacts, _ dated: LineDate) {
        prefRegexMatched = false
        guard let pref = prefRegex else { return }
        let dateLength = facts.dateFound && !dated.usesLastText ? facts.dateEnd - facts.dateStart : 0
        if prefRegexUniversal {
            prefRegexMatched = line.count - dateLength > 0
        } else if exactStatistics {
            let subject = buffer.subject
            subject.reset()
            if dateLength == 0 {
                subject.append(line)
            } else {
                subject.append(UnsafeBufferPointer(rebasing: line[..<facts.dateStart]))
                subject.append(UnsafeBufferPointer(rebasing: line[facts.dateEnd...]))
            }
            subject.append(10)
            prefRegexMatched = pref.search(subject.buffer, originCount: 1, ascii: facts.ascii)
        }
    }

    /// fail2ban's `findFailure`: the prefregex, then each failregex (with the ignoreregexes), on the buffer.
    private func findFailure(date: Double?, noDate: Bool) -> [Failure] {
        var failList: [Failure] = []
        prefRegexMatched = false
        let orgBuffer = buffer.push(current)
        let subject = buffer.subject
        buffer.buildSubject()
        var subjectValid = true

        if !ignoreRegexes.isEmpty && ignoreRegexes.count < failRegexes.count - 2 {
            if ignoreLine(subject.buffer, orgBuffer, failRegex: nil) != nil { return failList }
        }
        var preGroups = GroupMap()
        if let pref = prefRegex {
            if !pref.search(subject.buffer, originCount: orgBuffer.count, ascii: buffer.subjectASCII) { return failList }
            prefRegexMatched = true
            if pref.hasGroupsBesidesContent {
                preGroups = pref.groups(subject.buffer)
                preGroups["content"] = nil
            }
            if let r = pref.contentRange, !r.isEmpty { buffer.replaceWithContent(r) }
        }
        let failRegexes = self.failRegexes
        for index in failRegexes.indices {
            let failRegex = failRegexes[index]
            if !subjectValid { buffer.buildSubject(); subjectValid = true }
            let buf = subject.buffer
            if !failRegex.search(buf, originCount: orgBuffer.count, ascii: buffer.subjectASCII) { continue }
            var groups = failRegex.groups(buf)
            if !ignoreRegexes.isEmpty && ignoreLine(buf, orgBuffer, failRegex: failRegex) != nil {
                subjectValid = false
                if !checkAllRegex { break }
                continue
            }
            if noDate && date == nil && checkFindTime { continue }
            if !checkAllRegex || maxLines > 1 {
                buffer.set(failRegex.unmatchedLines(orgBuffer))
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
                fail = connections.merge(mlfid, fail, failRegex, orgBuffer, lastDate: lastDate)
                if fail.truthy("nofail") && !checkAllRegex { return failList }
            } else if recordMatches {
                fail.matches += failRegex.matchedLines(orgBuffer)
            }
            guard let failure = identify(fail, mlfid: mlfid, regexIndex: index, date: date) else { return failList }
            failList.append(failure)
            if !checkAllRegex { break }
        }
        return failList
    }

    /// What a match identifies (fail2ban's choice among `ip4`, `ip6`, `dns`, `fid` and the other id groups), as a
    /// failure; nil when nothing identifies it yet and the search is to end (a multi-line failure still pending).
    private func identify(_ fail: FailData, mlfid: String?, regexIndex: Int, date: Double?) -> Failure? {
        var fid = fail.value("fid")
        var ip: String? = fail.value("ip4") ?? fail.value("ip6")
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
        if let ip {
            if fid == nil || fid == ip {
                fid = LineFilter.withPrefix(ip, fail.value("cidr"))
            } else {
                reportedIP = ip
                fail.groups["ip"] = ip
            }
        } else {
            fail.mlfpending = true
            if !checkAllRegex && ignorePending { return nil }
        }
        let result = checkAllRegex && mlfid != nil ? fail.copy() : fail
        return Failure(regexIndex: regexIndex, id: ip == nil ? nil : fid, ip: reportedIP, time: date, data: result)
    }

    /// `<SUBNET>` / `<ADDR>/<CIDR>` failures are identified by their network, as fail2ban's `IPAddr(ip, cidr)`.
    static func withPrefix(_ ip: String, _ cidr: String?) -> String {
        guard let cidr, !cidr.isEmpty, let network = IPNetwork(ip + "/" + cidr) else { return ip }
        return network.description
    }

    private func ignoreLine(_ subject: UnsafeBufferPointer<UInt8>, _ origin: [TupleLine], failRegex: FilterRegex?) -> Int? {
        var ownBuffer: [UInt8] = []
        var org = origin
        if let failRegex, maxLines > 1 {
            org = failRegex.matchedLines(origin)
            TupleLine.buffer(org, into: &ownBuffer)
        }
        var found: Int? = nil
        for (index, ignore) in ignoreRegexes.enumerated() {
            let ok =
                ownBuffer.isEmpty
                ? ignore.search(subject, originCount: org.count, ascii: buffer.subjectASCII)
                : ownBuffer.withUnsafeBufferPointer { ignore.search($0, originCount: org.count) }
            if ok {
                found = index
                onIgnoreRegex?(index)
                if !checkAllRegex || maxLines > 1 {
                    if let failRegex { buffer.set(failRegex.unmatchedLines(origin)) }
                }
                if !checkAllRegex { break }
            }
        }
        return found
    }
}
