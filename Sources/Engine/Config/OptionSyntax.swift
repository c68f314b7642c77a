import FoundationEssentials
import Glibc
import Platform

/// fail2ban's `name[key=value, key="quoted, with commas", key='x']` syntax for filters and actions.
public enum OptionSyntax {
    /// Splits `dovecot[mode=aggressive, logtype=short]` into the name and its options.
    /// The corresponding fail2ban function is `extractOptions`.
    public static func extract(_ text: String) throws(ConfigError) -> (name: String, options: OrderedMap<String>) {
        let trimmed = text.trimmingWhitespaceAndNewlines()
        guard let open = trimmed.firstIndex(of: "[") else {
            if trimmed.isEmpty { throw ConfigError("empty name") }
            return (trimmed, OrderedMap())
        }
        let name = String(trimmed[..<open]).trimmingWhitespace()
        guard !name.isEmpty else { throw ConfigError("missing name before '[' in '\(text)'") }
        guard trimmed.hasSuffix("]") else { throw ConfigError("options of '\(name)' do not end with ']': '\(text)'") }
        var options = OrderedMap<String>()
        let body = Array(trimmed[trimmed.index(after: open)..<trimmed.index(before: trimmed.endIndex)])
        var i = 0
        func skipSpace() { while i < body.count && body[i].isWhitespace { i += 1 } }
        while true {
            skipSpace()
            if i >= body.count { break }
            var key = ""
            while i < body.count, body[i].isLetter || body[i].isNumber || "_-.".contains(body[i]) { key.append(body[i]); i += 1 }
            guard !key.isEmpty, i < body.count, body[i] == "=" else {
                throw ConfigError("expected key=value in the options of '\(name)' at '\(String(body[i...]).prefix(25))'")
            }
            i += 1
            var value = ""
            if i < body.count, body[i] == "\"" || body[i] == "'" {
                let quote = body[i]
                i += 1
                while i < body.count && body[i] != quote { value.append(body[i]); i += 1 }
                guard i < body.count else { throw ConfigError("unterminated quote in the options of '\(name)'") }
                i += 1
            } else {
                while i < body.count && body[i] != "," && body[i] != "]" { value.append(body[i]); i += 1 }
            }
            options[key] = value.trimmingWhitespaceAndNewlines()
            skipSpace()
            if i >= body.count { break }
            if body[i] == "," { i += 1; continue }
            // fail2ban ≥ 0.10 also separates option groups with "][": act[a=1][b=2]
            if body[i] == "]" {
                i += 1; skipSpace()
                if i < body.count && body[i] == "[" { i += 1; continue }
            }
            throw ConfigError("unexpected text in the options of '\(name)' at '\(String(body[i...]).prefix(25))'")
        }
        return (name, options)
    }

    /// Splits an `action` value into its entries (separated by new lines or spaces outside brackets).
    public static func splitEntries(_ text: String) -> [String] {
        var result: [String] = []
        var current = ""
        var depth = 0
        var quote: Character? = nil
        for ch in text {
            if let q = quote {
                current.append(ch)
                if ch == q { quote = nil }
                continue
            }
            switch ch {
            case "\"", "'":
                if depth > 0 { quote = ch }
                current.append(ch)
            case "[":
                depth += 1; current.append(ch)
            case "]":
                depth = max(0, depth - 1); current.append(ch)
            case "\n", " ", "\t":
                if depth > 0 { current.append(ch) } else if !current.isEmpty { result.append(current); current = "" }
            default:
                current.append(ch)
            }
        }
        if !current.isEmpty { result.append(current) }
        return result
    }
}

/// fail2ban's `<tag>` substitution (`substituteRecursiveTags`): tags are replaced by other options, recursively,
/// inner tags first (`<lt_<logtype>/__prefix_line>`); unknown tags such as `<HOST>` stay for the regex layer.
public enum TagSubstitution {
    public static let maxReplaceCount = 25

    public static func substitute(
        _ input: OrderedMap<String>, ignore: Set<String> = [],
        lookup: (String) throws(ConfigError) -> String?
    ) throws(ConfigError) -> OrderedMap<String> {
        var tags = input
        var done = Set<String>()
        var repCounts: [String: [String: Int]] = [:]
        while true {
            var again = false
            for tag in tags.keys {
                if ignore.contains(tag) || done.contains(tag) { continue }
                let original = tags[tag]!
                var value = original
                var counts = repCounts[tag] ?? [:]
                var searchFrom = value.startIndex
                while let m = findTag(in: value, from: searchFrom) {
                    let name = m.name
                    if ignore.contains(name) { searchFrom = m.range.upperBound; continue }
                    if name == tag || counts[name, default: 1] > maxReplaceCount {
                        throw ConfigError("option '\(tag)' refers to itself through <\(name)> and cannot be resolved")
                    }
                    var replacement = tags[name]
                    if replacement == nil { replacement = try lookup(name) }
                    guard let replacement else { searchFrom = m.range.upperBound; continue }
                    let start = value.distance(from: value.startIndex, to: m.range.lowerBound)
                    value = value.replacing("<\(name)>", with: replacement)
                    counts[name, default: 0] += 1
                    searchFrom = value.index(value.startIndex, offsetBy: min(start, value.count))
                }
                if original != value {
                    if findTag(in: value, from: value.startIndex) != nil {
                        repCounts[tag] = counts
                        again = true
                    }
                    tags[tag] = value
                }
                if !value.contains("<") { done.insert(tag) }
            }
            if !again { break }
        }
        return tags
    }

    /// The first `<name>` (no spaces or angle brackets inside) at or after `from`.
    static func findTag(in s: String, from: String.Index) -> (name: String, range: Range<String.Index>)? {
        var i = from
        while let open = s[i...].firstIndex(of: "<") {
            var j = s.index(after: open)
            while j < s.endIndex, s[j] != ">", s[j] != "<", s[j] != " " { j = s.index(after: j) }
            if j < s.endIndex, s[j] == ">", j > s.index(after: open) {
                return (String(s[s.index(after: open)..<j]), open..<s.index(after: j))
            }
            i = s.index(after: open)
        }
        return nil
    }
}
