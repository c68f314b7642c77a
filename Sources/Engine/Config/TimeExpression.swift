import Platform

/// fail2ban's time expressions (`MyTime.str2seconds`): plain seconds (`600`), abbreviations (`10m`, `1h30m`,
/// `12w`, `1d`), words (`1hour 30min`, `6 months`), and arithmetic (`1year-6mo`, `2*3600`). A month is a twelfth of
/// a 365.25-day year, as in fail2ban. `-1` means "forever" where a ban time is meant.
public enum TimeExpression {
    public static let units: [(names: [String], seconds: Double)] = [
        (["days", "day", "da", "dd", "d"], 86400),
        (["weeks", "week", "wee", "we", "ww", "w"], 604800),
        (["months", "month", "mon", "mo"], 2629800),
        (["years", "year", "yea", "ye", "yy", "y"], 31557600),
        (["seconds", "second", "sec", "se", "ss", "s"], 1),
        (["minutes", "minute", "min", "mi", "mm", "m"], 60),
        (["hours", "hour", "hou", "ho", "hh", "h"], 3600),
    ]

    public struct ParseError: Error, CustomStringConvertible {
        public let text: String
        public let reason: String
        public var description: String { "'\(text)' is not a time: \(reason) (use seconds or forms like 10m, 1h30m, 1d, 12w)" }
    }

    /// The longest duration read anywhere (a config value, an API field, a row of the store): 100,000 years.
    /// Anything longer is a typo or an attack, and past it the arithmetic of times stops being exact.
    public static let longest: Double = 100_000 * 31_557_600

    /// Seconds for `text`, within ±`longest`.
    public static func seconds(_ text: String) throws(ParseError) -> Double {
        let v = try Parser.unchecked(text)
        guard abs(v) <= longest else {
            throw ParseError(text: text, reason: "out of range (at most 100000y)")
        }
        return v
    }

    public struct Parser {
        /// The value of `text` without the range check (the API's bantime strings, which it cuts itself).
        public static func unchecked(_ text: String) throws(ParseError) -> Double {
            var p = Parser(text: text)
            let v = try p.parse()
            guard v.isFinite else { throw ParseError(text: text, reason: "out of range") }
            return v
        }

        let text: String
        let chars: [Character]
        var i = 0

        init(text: String) {
            self.text = text
            chars = Array(text.lowercased())
        }

        mutating func parse() throws(ParseError) -> Double {
            skipSpace()
            guard i < chars.count else { throw ParseError(text: text, reason: "empty") }
            let v = try sum()
            skipSpace()
            guard i == chars.count else { throw ParseError(text: text, reason: "unexpected '\(chars[i])'") }
            return v
        }

        mutating func skipSpace() { while i < chars.count && chars[i].isWhitespace { i += 1 } }

        /// Terms joined by + and -, or simply written one after the other ("1h 30m", "1h30m").
        mutating func sum() throws(ParseError) -> Double {
            var total = try product()
            while true {
                skipSpace()
                guard i < chars.count else { return total }
                if chars[i] == "+" {
                    i += 1; total += try product()
                } else if chars[i] == "-" {
                    i += 1; total -= try product()
                } else if chars[i].isNumber || chars[i] == "." || chars[i] == "(" {
                    total += try product()
                } else {
                    return total
                }
            }
        }

        mutating func product() throws(ParseError) -> Double {
            var v = try factor()
            while true {
                skipSpace()
                guard i < chars.count else { return v }
                if chars[i] == "*" {
                    i += 1; v *= try factor()
                } else if chars[i] == "/" {
                    i += 1
                    let d = try factor()
                    guard d != 0 else { throw ParseError(text: text, reason: "division by zero") }
                    v /= d
                } else {
                    return v
                }
            }
        }

        mutating func factor() throws(ParseError) -> Double {
            skipSpace()
            guard i < chars.count else { throw ParseError(text: text, reason: "a number is missing") }
            if chars[i] == "-" { i += 1; return -(try factor()) }
            if chars[i] == "+" { i += 1; return try factor() }
            var v: Double
            if chars[i] == "(" {
                i += 1
                v = try sum()
                skipSpace()
                guard i < chars.count && chars[i] == ")" else { throw ParseError(text: text, reason: "')' is missing") }
                i += 1
            } else {
                var digits = ""
                while i < chars.count && (chars[i].isNumber || chars[i] == ".") { digits.append(chars[i]); i += 1 }
                guard let n = Double(digits) else { throw ParseError(text: text, reason: "expected a number") }
                v = n
            }
            // An optional unit, separated by spaces or not.
            var j = i
            while j < chars.count && chars[j] == " " { j += 1 }
            var word = ""
            var k = j
            while k < chars.count && chars[k].isLetter { word.append(chars[k]); k += 1 }
            if !word.isEmpty {
                guard let unit = TimeExpression.units.first(where: { $0.names.contains(word) }) else {
                    throw ParseError(text: text, reason: "unknown unit '\(word)'")
                }
                v *= unit.seconds
                i = k
            }
            return v
        }
    }

    /// fail2ban's `seconds2str`, for messages: `1y 3w 4d`, `2d 7h 15m`, `59m 50s`.
    public static func describe(_ seconds: Double) -> String {
        if seconds < 0 { return "permanent" }
        guard seconds.isFinite else { return "unlimited" }
        // Beyond `longest`, whole years (and no conversion to Int that could trap).
        if seconds > longest { return TextFormat.fixed(seconds / 31_536_000, digits: 0) + "y" }
        var s = Int(seconds.rounded())
        // From an hour up, three units at most, the smallest rounded: "1y 2w 3d", "2w 3d 4h", "1d 2h 3m", "1h 5m".
        if s >= 31536000 { return units(s, step: 86400, [(365, "y"), (7, "w"), (1, "d")]) }
        if s >= 604800 { return units(s, step: 3600, [(168, "w"), (24, "d"), (1, "h")]) }
        if s >= 86400 { return units(s, step: 60, [(1440, "d"), (60, "h"), (1, "m")]) }
        if s >= 3595 { return units(s, step: 10, [(360, "h"), (6, "m")]) }
        var parts: [String] = []
        if s >= 60 { parts.append("\(s / 60)m"); s %= 60 }
        if s > 0 { parts.append("\(s)s") }
        return parts.isEmpty ? "0" : parts.joined(separator: " ")
    }

    /// `seconds` rounded to whole `step`s, written in `units` (each a count of steps and a name, largest first):
    /// the largest always, the others when there is at least one of them.
    private static func units(_ seconds: Int, step: Int, _ units: [(steps: Int, name: String)]) -> String {
        var s = Int((Double(seconds) / Double(step)).rounded())
        var parts: [String] = []
        for (i, unit) in units.enumerated() where i == 0 || s >= unit.steps {
            parts.append("\(s / unit.steps)\(unit.name)")
            s %= unit.steps
        }
        return parts.joined(separator: " ")
    }
}
