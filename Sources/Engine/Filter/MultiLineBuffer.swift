/// fail2ban's line buffer (`maxlines` lines for multi-line filters, one otherwise) and the regex subject made of
/// it: the buffered lines joined by newlines with their dates cut out (`_tupleLinesBuf`), or the prefregex's
/// `content` once it replaced them. One buffer serves one filter, on its thread.
final class MultiLineBuffer {
    let maxLines: Int
    /// The buffered lines, oldest first.
    private(set) var lines: [TupleLine] = []
    /// Set while the prefregex content stands in for the line buffer of a single-line filter.
    private var contentOverride = false
    /// What the regexes search; valid after `buildSubject` (or `replaceWithContent`).
    let subject = ByteBuffer()
    /// Whether `subject` holds only ASCII (then the faster byte-mode regexes apply).
    private(set) var subjectASCII = true
    private let contentScratch = ByteBuffer()

    init(maxLines: Int) { self.maxLines = maxLines }

    /// A single-line filter's buffer is emptied before the next line is built, so that it does not share that
    /// line's storage while it is rewritten (which would copy it).
    func releaseForNextLine() {
        if maxLines <= 1 { lines.removeAll(keepingCapacity: true) }
    }

    /// Adds a line (dropping the oldest beyond `maxLines`); returns the buffer as the regexes will see it
    /// (fail2ban's `orgBuffer`).
    func push(_ line: TupleLine) -> [TupleLine] {
        contentOverride = false
        lines.append(line)
        if maxLines > 1 && lines.count > maxLines { lines.removeFirst(lines.count - maxLines) }
        return lines
    }

    /// Replaces the buffer (with the lines a match left unmatched).
    func set(_ newLines: [TupleLine]) {
        lines = newLines
        contentOverride = false
    }

    /// Makes `subject` hold fail2ban's `_tupleLinesBuf(lines)` (or the prefregex content that replaced it).
    func buildSubject() {
        if contentOverride { return }
        subject.reset()
        subjectASCII = true
        if lines.isEmpty { subject.append(10); return }
        for l in lines {
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

    /// fail2ban replaces the line buffer with `[('', '', content)]` after a prefregex match; `range` is the
    /// content's place in the current subject.
    func replaceWithContent(_ range: Range<Int>) {
        // Copied out of `subject` first: the content replaces it.
        contentScratch.reset()
        contentScratch.append(UnsafeBufferPointer(rebasing: subject.buffer[range]))
        if maxLines > 1 {
            lines = [TupleLine(bytes: Array(contentScratch.buffer), isASCII: subjectASCII)]
            contentOverride = false
            buildSubject()
        } else {
            // Single-line filters keep the content in the subject itself instead of allocating a line for it.
            subject.reset()
            subject.append(contentScratch.buffer)
            subject.append(10)
            lines.removeAll(keepingCapacity: true)
            contentOverride = true
        }
    }
}
