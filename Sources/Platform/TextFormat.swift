/// The few printf-style formats the program prints, without Foundation's `String(format:)`.
public enum TextFormat {
    /// The text of a fixed-size C `char` array field (a tuple in Swift), up to its NUL.
    public static func text<Field>(ofCArray field: Field) -> String {
        var copy = field
        return withUnsafeBytes(of: &copy) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
    }

    /// `value` with `digits` digits after the point, rounded half away from zero ("%.3f").
    public static func fixed(_ value: Double, digits: Int) -> String {
        guard value.isFinite else { return String(value) }
        var scale = 1.0
        for _ in 0..<digits { scale *= 10 }
        let scaled = (abs(value) * scale).rounded()
        guard scaled < 9e18 else { return String(value) }
        let whole = UInt64(scaled)
        let divisor = UInt64(scale)
        var text = String(whole / divisor)
        if digits > 0 {
            let fraction = String(whole % divisor)
            text += "." + String(repeating: "0", count: digits - fraction.count) + fraction
        }
        return (value < 0 && scaled > 0 ? "-" : "") + text
    }

    /// `text` followed by spaces up to `width` characters ("%-Ns"); longer text is kept whole.
    public static func padded(_ text: String, to width: Int) -> String {
        let count = text.count
        return count >= width ? text : text + String(repeating: " ", count: width - count)
    }

    /// `value` in upper-case hexadecimal, zero-padded to `width` digits ("%04X").
    public static func hex(_ value: UInt32, width: Int) -> String {
        let text = String(value, radix: 16, uppercase: true)
        return text.count >= width ? text : String(repeating: "0", count: width - text.count) + text
    }
}

/// Messages for the user on standard error (one write per message).
public enum StandardError {
    public static func write(_ text: String) {
        var text = text
        text.withUTF8 { try? FileDescriptor.writeAll(UnsafeRawBufferPointer($0), to: 2) }
    }
}
