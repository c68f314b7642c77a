/// A log line split around its timestamp, as fail2ban keeps it: the regexes see the line without the date text,
/// the matched lines that are reported keep it.
public struct TupleLine: Sendable, Equatable {
    public var bytes: [UInt8]
    public var dateStart: Int
    public var dateEnd: Int
    /// No byte above 0x7F (the regexes may then use their faster byte mode).
    public var isASCII: Bool

    public init(bytes: [UInt8], dateStart: Int = 0, dateEnd: Int = 0, isASCII: Bool? = nil) {
        self.bytes = bytes
        self.dateStart = dateStart
        self.dateEnd = dateEnd
        self.isASCII = isASCII ?? bytes.allSatisfy { $0 < 0x80 }
    }

    /// The whole line, date included.
    public var text: String { String(decoding: bytes, as: UTF8.self) }

    /// The line without its date, as the regexes see it.
    public var withoutDate: [UInt8] { Array(bytes[..<dateStart]) + bytes[dateEnd...] }

    /// Appends the line without its date to `buffer`.
    @inline(__always)
    func appendWithoutDate(to buffer: inout [UInt8]) {
        if dateEnd == dateStart {
            buffer.append(contentsOf: bytes)
        } else {
            buffer.append(contentsOf: bytes[..<dateStart])
            buffer.append(contentsOf: bytes[dateEnd...])
        }
    }

    /// fail2ban's `_tupleLinesBuf`: the lines without dates, each followed by a newline.
    static func buffer(_ lines: [TupleLine], into buffer: inout [UInt8]) {
        buffer.removeAll(keepingCapacity: true)
        for line in lines {
            line.appendWithoutDate(to: &buffer)
            buffer.append(10)
        }
        if lines.isEmpty { buffer.append(10) }
    }
}
