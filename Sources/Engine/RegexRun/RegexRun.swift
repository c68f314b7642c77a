import FoundationEssentials
import Glibc
import Platform

/// `portcullis regex`: runs a filter over a log file (or one line) and reports what fail2ban-regex reports,
/// with the same counting (`Lines: N lines, I ignored, M matched, X missed`), or one JSON object per line.
public final class RegexRun {
    public struct Options {
        public var configDirectory = "/etc/portcullis"
        public var now: Double? = nil
        public var json = false
        public var datePattern: String? = nil
        public var maxLines: Int? = nil
        public var timeZone: String? = nil
        public var printAllMatched = false
        public var printAllMissed = false
        public var printAllIgnored = false
        public var printNoMissed = false
        public var printNoIgnored = false
        /// Skip lines no failregex can match (counts stay exact; see `RegexAnalysis`).
        public var literalPrefilter = true
        /// Read a log file on a second thread, which also finds the dates (see `ExaminePipeline`); off, one
        /// thread does everything (same results).
        public var pipelined = true
        /// Try every failregex on a line (fail2ban-regex's default); off, stop at the first that matches, as the
        /// daemon does (fail2ban-regex's `--no-check-all`).
        public var checkAllRegex = true
        /// Longer lines are cut there (fail2ban reads them whole); the report names them.
        public var maxLineLength = LineSplitter.defaultMaxLineLength
        public init() {}
    }

    public struct Stats: Sendable, Equatable {
        public var tested = 0, ignored = 0, matched = 0, missed = 0
        public var summary: String { "\(tested) lines, \(ignored) ignored, \(matched) matched, \(missed) missed" }
    }

    let options: Options
    let out: OutputBuffer
    public let filter: LineFilter
    private var header: [String] = []
    private var failHits: [Int]
    private var ignoreHits: [Int]
    private var prefHits = 0
    public private(set) var stats = Stats()
    private var matchedLines: [String] = []
    private var missedLines: [String] = []
    private var ignoredLines: [String] = []
    private var lineIgnored = false
    private var unterminatedBytes = 0
    private var cutLines = (count: 0, numbers: [Int]())
    /// Searches that could not complete: how many, and the first ones with their line numbers.
    private var regexErrors = (count: 0, first: [(line: Int, failure: LineFilter.RegexFailure)]())
    private var lineErrors: [LineFilter.RegexFailure] = []
    private var currentLine = 0
    private let printLimit = 20

    public struct SetupError: Error, CustomStringConvertible {
        public let message: String
        public var description: String { message }
    }

    public init(
        filterArgument: String, ignoreRegex: String? = nil, options: Options,
        output: OutputBuffer = OutputBuffer()
    ) throws {
        self.options = options
        self.out = output
        var definition: FilterDefinition
        let config = ConfigDirectory(options.configDirectory)
        if let found = try RegexRun.locateFilter(filterArgument, config: config) {
            definition = found.definition
            header += found.header
        } else {
            definition = FilterDefinition(name: "literal", failregex: [filterArgument])
            header.append("Use   failregex line : \(RegexRun.shortstr(filterArgument))")
        }
        if let ignoreRegex {
            definition.ignoreregex.append(ignoreRegex)
            header.append("Use ignoreregex line : \(RegexRun.shortstr(ignoreRegex))")
        }
        var opts = LineFilter.Options()
        opts.checkAllRegex = options.checkAllRegex
        opts.checkFindTime = false
        opts.returnRawHost = true
        opts.useDNS = definition.usedns.flatMap(UseDNS.init(setting:)) ?? .raw
        opts.exactStatistics = !options.json
        // Only the JSON output reports a failure's lines (as `attempts`).
        opts.recordMatches = options.json
        opts.literalPrefilter = options.literalPrefilter
        var zone: Int? = nil
        if let tz = options.timeZone {
            guard let z = ZoneOffsets.offset(tz) else {
                throw SetupError(message: "unknown or unsupported time zone '\(tz)' (use UTC, +hhmm or an abbreviation such as CET)")
            }
            zone = z
        }
        var datePatterns: [String]? = nil
        if let dp = options.datePattern {
            datePatterns = [dp]
            definition.datepattern = dp
        }
        filter = try LineFilter(
            definition, options: opts, datePatterns: datePatterns, logTimeZone: zone,
            maxLinesOverride: options.maxLines)
        if let max = options.maxLines ?? definition.maxlines { header.append("Use         maxlines : \(max)") }
        if let dp = definition.datepattern {
            header.append("Use      datepattern : \(dp) : \(filter.dateDetector.summary)")
        }
        failHits = Array(repeating: 0, count: definition.failregex.count)
        ignoreHits = Array(repeating: 0, count: definition.ignoreregex.count)
        filter.onIgnoreRegex = { [unowned self] index in
            self.lineIgnored = true
            self.ignoreHits[index] += 1
        }
        filter.onRegexError = { [unowned self] failure in
            self.regexErrors.count += 1
            if self.regexErrors.first.count < 10 { self.regexErrors.first.append((self.currentLine, failure)) }
            self.lineErrors.append(failure)
        }
    }

    struct Located {
        let definition: FilterDefinition
        let header: [String]
    }

    /// Finds the filter the way fail2ban-regex does: a file path, or a name in `DIR/filter.d`, with options in
    /// brackets; nil when the argument is neither (it is then a literal failregex).
    static func locateFilter(_ argument: String, config: ConfigDirectory) throws -> Located? {
        let looksLikeName = argument.wholeMatch(of: #/\/{0,3}[\w\/_\-.]+(?:\[.*\])?/#) != nil
        guard looksLikeName else { return nil }
        let (name, filterOptions): (String, OrderedMap<String>)
        do {
            (name, filterOptions) = try OptionSyntax.extract(argument)
        } catch {
            throw SetupError(message: "wrong filter name or options: \(error.message)\n       while parsing: \(argument)")
        }
        let hasExtension = name.suffix(6).contains(".")
        let candidates = hasExtension ? [name] : [name, name + ".conf", name + ".local"]
        var found: String? = nil
        var baseDir = config.path
        for candidate in candidates {
            var path = candidate
            if !candidate.contains("/") {
                path =
                    Path.lastComponent(config.path) == "filter.d"
                    ? config.path + "/" + candidate : config.path + "/filter.d/" + candidate
            } else {
                baseDir = Path.directory(of: candidate)
            }
            if Path.exists(path), !Path.isDirectory(path) {
                found = path
                break
            }
        }
        guard found != nil else { return nil }
        var header: [String] = []
        let reader: FilterReader
        if baseDir == config.path || Path.lastComponent(baseDir) == "filter.d" || (!hasExtension && !name.contains("/")) {
            if Path.lastComponent(baseDir) == "filter.d" { baseDir = Path.directory(of: baseDir) }
            let short = Path.deletingExtension(Path.lastComponent(name))
            header.append("Use   failregex filter file : \(short), basedir: \(baseDir)")
            reader = try FilterReader(
                name: short, jail: "portcullis-regex", options: filterOptions,
                directory: ConfigDirectory(baseDir, cache: config.cache))
        } else {
            header.append("Use   failregex file : \(name)")
            let path = name.hasPrefix("/") ? name : FileManager.default.currentDirectoryPath + "/" + name
            reader = try FilterReader(file: path, jail: "portcullis-regex", options: filterOptions, cache: config.cache)
        }
        if !filterOptions.isEmpty {
            let repr = filterOptions.map { "'\($0.key)': '\($0.value)'" }.joined(separator: ", ")
            header.append("Use   filter options : {\(repr)}")
        }
        reader.applyAutoOptions(backend: "auto")
        try reader.readOptions([:], all: false)
        return Located(definition: try reader.definition(), header: header)
    }

    static func shortstr(_ s: String, _ l: Int = 53) -> String {
        s.count > l ? String(s.prefix(l - 3)) + "..." : s
    }

    /// Runs the test over `log`: a file when one exists at that path, otherwise the text itself as log lines.
    public func run(log: String) throws -> Stats {
        let start = Clock.now()
        let now = options.now ?? start
        if !options.json {
            out.line("")
            out.line("Running tests")
            out.line("=============")
            out.line("")
            for h in header { out.line(h) }
        }
        var lineNumber = 0
        let handle: (UnsafeBufferPointer<UInt8>) -> Void = { [self] line in
            lineNumber += 1
            if RegexRun.isSkipped(line) {
                skippedLine(number: lineNumber)
            } else {
                processLine(line, number: lineNumber, facts: nil, now: now)
            }
        }
        if Path.exists(log), !Path.isDirectory(log) {
            if !options.json {
                out.line("Use         log file : \(log)")
                out.line("Use         encoding : UTF-8")
                out.line("")
            }
            do {
                var pipelined: ExaminePipeline.Batch? = nil
                if options.pipelined {
                    let pipeline = ExaminePipeline(
                        filter: filter, path: log, now: now, maxLineLength: options.maxLineLength,
                        skip: RegexRun.isSkipped)
                    // nil: no second thread could be started; then this one reads, below.
                    pipelined = try pipeline.run { batch in
                        for i in 0..<batch.count {
                            lineNumber += 1
                            if let facts = batch[i].facts {
                                processLine(batch.line(i), number: lineNumber, facts: facts, now: now)
                            } else {
                                skippedLine(number: lineNumber)
                            }
                        }
                    }
                }
                if let last = pipelined {
                    unterminatedBytes = last.unterminatedBytes
                    cutLines = (last.cutLines, last.cutLineNumbers)
                } else {
                    // fail2ban-regex waits for a line's newline, so a last line without one is not counted.
                    let splitter = try FileLines.forEach(
                        path: log, maxLineLength: options.maxLineLength,
                        includeUnterminated: false, handle)
                    unterminatedBytes = splitter.pendingCount
                    cutLines = (splitter.truncatedLines, splitter.cutLineNumbers)
                }
                if let cut = cutLinesSummary {
                    // Said on stderr too, so that the JSON output's readers hear of it.
                    StandardError.write("portcullis regex: \(log): \(cut)\n")
                }
            } catch {
                throw SetupError(message: error.description)
            }
        } else {
            let lines = filter.maxLines <= 1 && !log.contains("\n") ? [log] : log.components(separatedBy: "\n")
            if !options.json {
                if lines.count == 1 {
                    out.line("Use      single line : \(RegexRun.shortstr(log.replacing("\n", with: "\\n")))")
                } else {
                    out.line("Use      multi line : \(lines.count) line(s)")
                    for (i, l) in lines.prefix(5).enumerated() { out.line("| \(TextFormat.padded(String(i + 1), to: 2)): \(RegexRun.shortstr(l))") }
                    if lines.count > 5 { out.line("| ...") }
                    out.line("`-")
                }
                out.line("")
            }
            for l in lines {
                var bytes = Array(l.utf8)
                while bytes.last == 13 { bytes.removeLast() }
                bytes.withUnsafeBufferPointer(handle)
            }
        }
        if !options.json { printStats(elapsed: Clock.now() - start) }
        out.flush()
        if regexErrors.count > 0 {
            StandardError.write(
                "portcullis regex: \(regexErrors.count) regex search(es) could not be evaluated (first: line \(regexErrors.first[0].line): \(regexErrors.first[0].failure))\n"
            )
        }
        return stats
    }

    /// Lines fail2ban-regex passes over: empty ones and comments. (A line of spaces or tabs is tested, and
    /// missed, as fail2ban-regex does: it strips only the line end.)
    @Sendable
    static func isSkipped(_ line: UnsafeBufferPointer<UInt8>) -> Bool {
        line.isEmpty || line[0] == 35 /* '#' */
    }

    private func skippedLine(number: Int) {
        if options.json {
            out.line("{\"line\": \(number), \"match\": false, \"ignored\": false, \"skipped\": true, \"host\": null, \"time\": null, \"fields\": {}}")
        }
    }

    /// `facts`: what `LineExaminer.examine` found for the line, when the pipeline's reader thread has examined it.
    private func processLine(_ line: UnsafeBufferPointer<UInt8>, number: Int, facts: LineFacts?, now: Double) {
        let multiLine = filter.maxLines > 1
        let before = multiLine ? filter.bufferedLines : []
        lineIgnored = false
        currentLine = number
        if !lineErrors.isEmpty { lineErrors.removeAll(keepingCapacity: true) }
        let found = facts.map { filter.process(line, facts: $0, now: now) } ?? filter.process(line, now: now)
        if filter.prefRegexMatched { prefHits += 1 }
        var isIgnored = false
        var realCount = 0
        for f in found {
            failHits[f.regexIndex] += 1
            if f.isNoFail { isIgnored = true } else { realCount += 1 }
        }
        isIgnored = isIgnored || lineIgnored
        // Lines an earlier multi-line match consumed from the buffer were counted as missed: they matched.
        if multiLine {
            let after = filter.bufferedLines
            let full = before.count >= filter.maxLines
            for old in before.dropFirst(full ? 1 : 0) where !after.contains(old) {
                if let i = missedLines.firstIndex(of: old.text) { missedLines.remove(at: i) }
                if options.printAllMatched { matchedLines.append(old.text) }
                stats.matched += 1
                stats.missed -= 1
            }
        }
        // Decode the line only when it is kept for printing.
        func text() -> String { String(decoding: line, as: UTF8.self) }
        if isIgnored {
            stats.ignored += 1
            if !options.json && !options.printNoIgnored && (options.printAllIgnored || stats.ignored <= printLimit + 1) { ignoredLines.append(text()) }
        } else if realCount > 0 {
            stats.matched += 1
            if !options.json && options.printAllMatched { matchedLines.append(text()) }
        } else {
            stats.missed += 1
            if !options.json && !options.printNoMissed && (options.printAllMissed || stats.missed <= printLimit + 1) { missedLines.append(text()) }
        }
        stats.tested += 1
        if options.json {
            let result = isIgnored ? "ignored" : realCount > 0 ? "matched" : "missed"
            writeJSON(
                number: number, real: found.filter { !$0.isNoFail }, ignored: isIgnored, result: result,
                errors: lineErrors)
        }
    }

    /// `result`: what the line counts as in the `Lines:` summary (fail2ban-regex's matched, missed, ignored).
    private func writeJSON(number: Int, real: [Failure], ignored: Bool, result: String, errors: [LineFilter.RegexFailure]) {
        // A match, as fail2ban's sample tests count it: a failure with an ID (not one still waiting for its address).
        let identified = real.filter { $0.id != nil }
        var s = "{\"line\": \(number), \"result\": \"\(result)\", \"match\": \(!identified.isEmpty), \"ignored\": \(ignored)"
        if let f = identified.first {
            s += ", \"regex\": \(f.regexIndex + 1)"
            s += ", \"host\": " + (f.id.map(JSONText.quote) ?? "null")
            s += ", \"time\": " + (f.time.map(JSONText.number) ?? "null")
            s += ", \"fields\": {"
            s += f.data.reportedFields.map { JSONText.quote($0.0) + ": " + JSONText.quote($0.1) }.joined(separator: ", ")
            s += "}, \"attempts\": \(f.data.matches.count)"
            if !f.data.users.isEmpty {
                s += ", \"users\": [" + f.data.users.map(JSONText.quote).joined(separator: ", ") + "]"
            }
            if identified.count > 1 { s += ", \"failures\": \(identified.count)" }
        } else {
            s += ", \"host\": null, \"time\": " + (filter.lastLineTime.map(JSONText.number) ?? "null") + ", \"fields\": {}"
        }
        if !errors.isEmpty {
            // Regexes that could not be evaluated on this line: its verdict is not to be trusted.
            s += ", \"untested\": [" + errors.map { JSONText.quote("\($0.regex): \($0.message)") }.joined(separator: ", ") + "]"
        }
        out.line(s + "}")
    }

    private func list(_ items: [String], header: String? = nil) {
        guard !items.isEmpty else { return }
        var s = header.map { "|- \($0)\n" } ?? ""
        s += "|  " + items.joined(separator: "\n|  ") + "\n`-"
        out.line(s)
    }

    private func printStats(elapsed: Double) {
        out.line("")
        out.line("Results")
        out.line("=======")
        if let pref = filter.prefRegexSource {
            out.line("")
            out.line("Prefregex: \(prefHits) total")
            list([FilterTags.localizeFlags(FilterTags.expand(pref, useDNS: filter.options.useDNS))])
        }
        func regexes(_ title: String, _ sources: [String], _ hits: [Int]) {
            out.line("")
            out.line("\(title): \(hits.reduce(0, +)) total")
            var rows: [String] = []
            for (i, src) in sources.enumerated() where hits[i] > 0 {
                rows.append("\(String(i + 1).leftPad(2))) [\(hits[i])] \(src)")
            }
            list(rows, header: " #) [# of hits] regular expression")
        }
        regexes("Failregex", filter.failRegexSources, failHits)
        regexes("Ignoreregex", filter.ignoreRegexSources, ignoreHits)
        out.line("")
        out.line("Date template hits:")
        list(
            filter.dateDetector.templates.filter { $0.hits > 0 }.map { "[\($0.hits)] \($0.name)" },
            header: "[# of hits] date format")
        out.line("")
        out.line("Lines: \(stats.summary)")
        out.line("[processed in \(TextFormat.fixed(elapsed, digits: 2)) sec]")
        if regexErrors.count > 0 {
            out.line("(\(regexErrors.count) regex search(es) could not be evaluated; those lines count as not matched by that regex:")
            for e in regexErrors.first { out.line("   line \(e.line): \(e.failure)") }
            if regexErrors.count > regexErrors.first.count { out.line("   …") }
            out.line(")")
        }
        if let cut = cutLinesSummary { out.line("(\(cut))") }
        if unterminatedBytes > 0 {
            out.line("(the last line, \(unterminatedBytes) bytes without a final newline, was not read, as fail2ban-regex does)")
        }
        out.line("")
        if options.printAllMatched { printLines("Matched", stats.matched, matchedLines, all: true) }
        if !options.printNoIgnored { printLines("Ignored", stats.ignored, ignoredLines, all: options.printAllIgnored) }
        if !options.printNoMissed { printLines("Missed", stats.missed, missedLines, all: options.printAllMissed) }
    }

    /// The lines cut at the length cap, for the report and stderr; nil when none was.
    private var cutLinesSummary: String? {
        guard cutLines.count > 0 else { return nil }
        let numbers = cutLines.numbers.prefix(10).map(String.init).joined(separator: ", ")
        let cap = options.maxLineLength
        return
            "\(cutLines.count) line(s) longer than \(cap) bytes were cut there, and only their first \(cap) bytes tested: line \(numbers)\(cutLines.count > 10 ? ", …" : ""); fail2ban-regex reads them whole; --max-line-length raises the cap"
    }

    private func printLines(_ kind: String, _ count: Int, _ lines: [String], all: Bool) {
        guard count > 0 else { return }
        let header = "\(kind) line(s):"
        if count < printLimit || all {
            list(lines.map { $0.trimmingTrailingWhitespace() }, header: header)
        } else {
            out.line("\(header) too many to print.  Use --print-all-\(kind.lowercased()) to print all \(count) lines")
        }
    }
}

extension String {
    func leftPad(_ width: Int) -> String { count >= width ? self : String(repeating: " ", count: width - count) + self }

    func trimmingTrailingWhitespace() -> String {
        var s = Substring(self)
        while let last = s.last, last.isWhitespace { s.removeLast() }
        return String(s)
    }
}
