import CFastScan

/// The literal screen in front of a filter's regexes: a line that holds none of the strings every failregex match
/// needs (see `RegexAnalysis`) cannot match, and skips the regexes. The strings' anchor bytes are chosen again
/// after 256 lines, from the bytes this very log holds (calibration). One screen serves one filter, on its thread.
final class LineScreen {
    /// nil: no screen (every line goes through the regexes). Replaced once, by `calibrate`.
    private var scanner: LiteralScanner?
    /// Per failregex, every set of strings one of which a match needs.
    private let candidates: [[[[UInt8]]]]
    /// Byte counts of the first lines, until calibration.
    private var byteCounts: [UInt32]?
    private var linesCounted = 0
    /// The text around a cut-out date.
    private let junction = ByteBuffer(capacity: 256)

    /// `candidates`: nil when the filter gives no guarantee (then every line passes).
    init(candidates: [[[[UInt8]]]]?) {
        self.candidates = candidates ?? []
        if let candidates {
            scanner = LiteralScanner(LiteralScanner.choose(candidates, frequencies: nil))
            byteCounts = [UInt32](repeating: 0, count: 256)
        }
    }

    /// The strings lines are screened for (nil: every line goes through the regexes).
    var literals: [String]? { scanner?.literals.map { String(decoding: $0, as: UTF8.self) } }

    /// Whether the line, without its date (`cutDate`), may hold one of the strings some failregex needs (always
    /// true without a screen). A date at the start is simply skipped; elsewhere the whole line is scanned, and as
    /// cutting the date out joins the text on both sides of it (as in "[]"), a string the whole line lacks can
    /// then only appear across that join.
    func mayMatch(_ line: UnsafeBufferPointer<UInt8>, _ facts: LineFacts, cutDate: Bool) -> Bool {
        // Calibrating may replace the scanner: read it only afterwards (issue 9: an unretained reference taken
        // before this call outlived the scanner it pointed to, and the 256th line was scanned with freed memory).
        if byteCounts != nil { calibrate(line) }
        guard let scanner else { return true }
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
        if linesCounted == 256, scanner != nil {
            scanner = LiteralScanner(LiteralScanner.choose(candidates, frequencies: byteCounts), frequencies: byteCounts)
            byteCounts = nil
        }
    }
}
