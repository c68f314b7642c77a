import CFastScan

/// What the first half of the per-line work finds about a line.
public struct LineFacts: Sendable {
    /// The line is pure ASCII (the faster byte-mode regexes apply).
    var ascii = true
    /// The line, with its date cut out, may hold a string some failregex needs (always true without a screen).
    var screened = true
    /// A date template matched; `dateStart..<dateEnd` is the date text (empty for templates like `{NONE}`).
    var dateFound = false
    var dateStart = 0
    var dateEnd = 0
    /// The date's epoch seconds, nil when the text is not a valid date.
    var time: Double? = nil
}

/// The first half of a filter's per-line work: the UTF-8 check, the date (fail2ban's date detector), and the
/// screen that rules out lines no failregex can match. It depends only on earlier lines' dates, never on what
/// the regexes found, and shares no state with `LineFilter`'s second half: `portcullis regex` runs it one stage
/// ahead, on another thread (`ExaminePipeline`).
public final class LineExaminer {
    public let dateDetector: DateDetector
    /// Strings one of which any failregex match needs; nil when the filter gives no such guarantee.
    private var screen: LiteralScanner? {
        didSet { screenRef = screen.map { Unmanaged.passUnretained($0) } }
    }
    /// `screen`, for the per-line path: used without reference counting (`screen` keeps it alive).
    private var screenRef: Unmanaged<LiteralScanner>?
    /// Per failregex, every set of strings one of which a match needs.
    private let candidates: [[[[UInt8]]]]
    /// Byte counts of the first lines, to choose the rarest anchor bytes for this very log.
    private var byteCounts: [UInt32]? = nil
    private var linesCounted = 0
    /// The text around a cut-out date.
    private let junction = ByteBuffer(capacity: 256)

    /// `screenCandidates`: per failregex, the sets of strings one of which a match needs (nil: no screen).
    init(dateDetector: DateDetector, screenCandidates: [[[[UInt8]]]]?) {
        self.dateDetector = dateDetector
        candidates = screenCandidates ?? []
        if let screenCandidates {
            screen = LiteralScanner(LiteralScanner.choose(screenCandidates, frequencies: nil))
            screenRef = screen.map { Unmanaged.passUnretained($0) }
            byteCounts = [UInt32](repeating: 0, count: 256)
        }
    }

    /// The strings lines are screened for (nil: every line goes through the regexes).
    var screenLiterals: [String]? { screen?.literals.map { String(decoding: $0, as: UTF8.self) } }

    /// Examines one line (without its terminator). A line with invalid UTF-8 is matched the way fail2ban sees
    /// it, bad sequences as U+FFFD: `repaired` then holds the bytes to process instead.
    public func examine(_ line: UnsafeBufferPointer<UInt8>, now: Double, repaired: inout [UInt8]?) -> LineFacts {
        var facts = LineFacts()
        guard let base = line.baseAddress, !line.isEmpty else {
            facts.screened = screen == nil
            if let m = dateDetector.match(UnsafePointer(bitPattern: 1)!, length: 0, ascii: true) {
                facts.dateFound = true
                facts.dateStart = m.range.lowerBound
                facts.dateEnd = m.range.upperBound
            }
            return facts
        }
        // One pass answers both questions asked first: is the line ASCII, and does it hold any string a failregex
        // needs.
        var found = true
        var ascii: Bool
        if let screenRef {
            let r = screenRef._withUnsafeGuaranteedRef { $0.scan(base, line.count) }
            found = r.found
            ascii = r.ascii
        } else {
            ascii = pc_is_ascii(base, line.count) != 0
        }
        if !ascii && String(validating: line, as: UTF8.self) == nil {
            let fixed = UTF8Check.repaired(line)
            repaired = fixed
            return fixed.withUnsafeBufferPointer { r in
                examineValid(r, ascii: false, found: screen.map { $0.scan(r.baseAddress!, r.count).found } ?? true, now: now)
            }
        }
        return examineValid(line, ascii: ascii, found: found, now: now)
    }

    private func examineValid(_ line: UnsafeBufferPointer<UInt8>, ascii: Bool, found: Bool, now: Double) -> LineFacts {
        let base = line.baseAddress!
        var facts = LineFacts()
        facts.ascii = ascii
        facts.screened = found
        if let m = dateDetector.match(base, length: line.count, ascii: ascii) {
            facts.dateFound = true
            facts.dateStart = m.range.lowerBound
            facts.dateEnd = m.range.upperBound
            if !m.range.isEmpty { facts.time = dateDetector.time(of: m, line: base, now: now) }
        }
        if byteCounts != nil { calibrate(line) }
        if !found, let screenRef, facts.dateStart > 0, facts.dateEnd > facts.dateStart, facts.dateEnd < line.count {
            // The regexes see the line without its date, which joins the text on both sides of it (as in "[]"):
            // a string the whole line lacks can only appear across that join. (A line that is given the last
            // line's date text instead keeps all its text: the whole-line answer stands.)
            facts.screened = screenRef._withUnsafeGuaranteedRef { scanner in
                let reach = scanner.maxLength - 1
                junction.reset()
                junction.append(UnsafeBufferPointer(rebasing: line[max(0, facts.dateStart - reach)..<facts.dateStart]))
                junction.append(UnsafeBufferPointer(rebasing: line[facts.dateEnd..<min(line.count, facts.dateEnd + reach)]))
                return scanner.containsAny(junction.base, junction.count)
            }
        }
        return facts
    }

    /// After 256 lines, picks the screening anchors from the bytes this log actually holds.
    private func calibrate(_ line: UnsafeBufferPointer<UInt8>) {
        if let base = line.baseAddress { byteCounts!.withUnsafeMutableBufferPointer { pc_count_bytes(base, line.count, $0.baseAddress!) } }
        linesCounted += 1
        if linesCounted == 256, screen != nil {
            screen = LiteralScanner(LiteralScanner.choose(candidates, frequencies: byteCounts), frequencies: byteCounts)
            byteCounts = nil
        }
    }
}
