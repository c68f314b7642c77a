import CFastScan

/// What the first half of the per-line work finds about a line: whether it is ASCII, and its date.
public struct LineFacts: Sendable {
    /// The line is pure ASCII (the faster byte-mode regexes apply).
    var ascii = true
    /// A date template matched; `dateStart..<dateEnd` is the date text (empty for templates like `{NONE}`).
    var dateFound = false
    var dateStart = 0
    var dateEnd = 0
    /// The date's epoch seconds, nil when the text is not a valid date.
    var time: Double? = nil
}

/// The first half of a filter's per-line work: the UTF-8 check and the date (fail2ban's date detector). It
/// depends only on earlier lines' dates, never on what the regexes found, and shares no state with
/// `LineFilter`'s second half: `portcullis regex` runs it one stage ahead, on another thread (`ExaminePipeline`).
public final class LineExaminer {
    public let dateDetector: DateDetector

    init(dateDetector: DateDetector) {
        self.dateDetector = dateDetector
    }

    /// Examines one line (without its terminator). A line with invalid UTF-8 is matched the way fail2ban sees
    /// it, bad sequences as U+FFFD: `repaired` then holds the bytes to process instead.
    public func examine(_ line: UnsafeBufferPointer<UInt8>, now: Double, repaired: inout [UInt8]?) -> LineFacts {
        guard let base = line.baseAddress, !line.isEmpty else {
            // An empty line still goes through the detector (it moves fail2ban's "last position"): as one NUL
            // byte of which none is searched, since PCRE2 (before 10.43) refuses a null subject.
            return LineExaminer.nul.withUnsafeBufferPointer {
                examineValid(UnsafeBufferPointer(rebasing: $0[..<0]), base: $0.baseAddress!, ascii: true, now: now)
            }
        }
        if pc_is_ascii(base, line.count) != 0 { return examineValid(line, base: base, ascii: true, now: now) }
        if String(validating: line, as: UTF8.self) != nil { return examineValid(line, base: base, ascii: false, now: now) }
        let fixed = UTF8Check.repaired(line)
        repaired = fixed
        return fixed.withUnsafeBufferPointer { examineValid($0, base: $0.baseAddress!, ascii: false, now: now) }
    }

    private static let nul: [UInt8] = [0]

    private func examineValid(_ line: UnsafeBufferPointer<UInt8>, base: UnsafePointer<UInt8>, ascii: Bool, now: Double) -> LineFacts {
        var facts = LineFacts()
        facts.ascii = ascii
        if let found = dateDetector.find(base, length: line.count, ascii: ascii, now: now) {
            facts.dateFound = true
            facts.dateStart = found.range.lowerBound
            facts.dateEnd = found.range.upperBound
            facts.time = found.time
        }
        return facts
    }
}
