import ArgumentParser
import Engine
import FoundationEssentials
import Glibc

struct RegexCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "regex",
        abstract: "Test a filter against a log file or a line (the fail2ban-regex equivalent).",
        discussion: """
            LOG is a log file, or, when no such file exists, a log line. FILTER is a filter file, a filter name in \
            CONFIG/filter.d (both optionally with options: dovecot[mode=aggressive]), or else a literal failregex.
            """
    )

    @OptionGroup var configOptions: ConfigOptions

    @Option(help: "The time used to infer missing years (ISO 8601, e.g. 2026-11-28T07:00:00Z). Default: the clock.")
    var now: String?

    @Flag(help: "Print one JSON object per input line instead of the report.")
    var json = false

    @Option(name: [.customShort("d"), .long], help: "A date pattern to use instead of the filter's.")
    var datepattern: String?

    @Option(name: [.customShort("L"), .long], help: "maxlines for multi-line filters.")
    var maxlines: Int?

    @Option(name: .long, help: "Time zone of log times that carry none (UTC, +hhmm, CET …).")
    var timezone: String?

    @Flag(help: "Do everything on one thread (by default a second thread reads the file and finds the dates; the results are the same).")
    var oneThread = false

    @Flag(name: .customLong("no-check-all"), help: "Stop at the first failregex that matches a line, as the daemon does (fail2ban-regex's --no-check-all).")
    var noCheckAll = false

    @Option(help: "Lines longer than this are cut there and only their start tested (bytes; K, M suffixes; default 4M). fail2ban-regex reads lines whole.")
    var maxLineLength: String?

    @Flag(help: "Print all matched lines.") var printAllMatched = false
    @Flag(help: "Print all missed lines, however many.") var printAllMissed = false
    @Flag(help: "Print all ignored lines, however many.") var printAllIgnored = false
    @Flag(help: "Do not print missed lines.") var printNoMissed = false
    @Flag(help: "Do not print ignored lines.") var printNoIgnored = false

    @Argument(help: "Log file or log line.") var log: String
    @Argument(help: "Filter file, filter name, or failregex.") var filter: String
    @Argument(help: "An ignoreregex to add.") var ignoreregex: String?

    func validate() throws {
        if let now, ISO8601.parse(now) == nil {
            throw ValidationError("--now '\(now)' is not an ISO 8601 time such as 2026-11-28T07:00:00Z")
        }
        if let maxlines, maxlines < 1 { throw ValidationError("--maxlines must be at least 1") }
        if let maxLineLength, ByteSize.parse(maxLineLength) == nil {
            throw ValidationError("--max-line-length '\(maxLineLength)' is not a size from 1K to 1G (bytes, or with a K or M suffix)")
        }
    }

    func run() throws {
        var options = RegexRun.Options()
        options.configDirectory = configOptions.config
        options.now = now.flatMap(ISO8601.parse)
        options.json = json
        options.datePattern = datepattern
        options.maxLines = maxlines
        options.timeZone = timezone
        options.pipelined = !oneThread
        options.checkAllRegex = !noCheckAll
        if let maxLineLength { options.maxLineLength = ByteSize.parse(maxLineLength)! }
        options.printAllMatched = printAllMatched
        options.printAllMissed = printAllMissed
        options.printAllIgnored = printAllIgnored
        options.printNoMissed = printNoMissed
        options.printNoIgnored = printNoIgnored
        let test: RegexRun
        do {
            test = try RegexRun(filterArgument: filter, ignoreRegex: ignoreregex, options: options)
        } catch {
            try fail("\(error)", code: 1)
        }
        do {
            _ = try test.run(log: log)
        } catch {
            try fail("\(error)", code: 1)
        }
    }
}
