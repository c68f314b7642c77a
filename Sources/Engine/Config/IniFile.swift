import FoundationEssentials
import Glibc
import Platform

/// One `key = value` with the place it was written.
public struct IniValue: Sendable {
    public var value: String
    public var location: SourceLocation

    public init(_ value: String, at location: SourceLocation) {
        self.value = value
        self.location = location
    }
}

public typealias IniSection = OrderedMap<IniValue>

/// One file in the dialect of Python's `configparser` as fail2ban configures it: `key = value` or `key: value`,
/// keys folded to lower case, indented continuation lines joined with newlines, whole-line `#`/`;` comments,
/// inline comments after `;` preceded by white space, and a `[DEFAULT]` section whose keys every section sees.
public struct IniFile: Sendable {
    public let path: String
    public var defaults = IniSection()
    public var sections = OrderedMap<IniSection>()
    /// Non-fatal findings (a duplicate key, say); fatal ones are thrown.
    public var warnings: [Diagnostic] = []

    public static let defaultSectionName = "DEFAULT"

    public init(path: String, defaults: IniSection = IniSection(), sections: OrderedMap<IniSection> = .init()) {
        self.path = path
        self.defaults = defaults
        self.sections = sections
    }

    /// Reads and parses `path`. The corresponding Python behaviour is `RawConfigParser._read`.
    public static func load(_ path: String) throws(ConfigError) -> IniFile {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw ConfigError("cannot read file", at: SourceLocation(file: path, line: 0))
        }
        guard let text = String(data: data, encoding: .utf8) else {
            throw ConfigError("file is not valid UTF-8", at: SourceLocation(file: path, line: 0))
        }
        return try parse(text, path: path)
    }

    public static func parse(_ text: String, path: String) throws(ConfigError) -> IniFile {
        var parser = Parser(path: path)
        var lineNumber = 0
        // "\r\n" is a single Character in Swift: normalise line ends before splitting.
        let normalized = text.contains("\r\n") ? text.replacing("\r\n", with: "\n") : text
        for rawLine in normalized.split(separator: "\n", omittingEmptySubsequences: false) {
            lineNumber += 1
            var line = Substring(rawLine)
            if line.hasSuffix("\r") { line = line.dropLast() }
            try parser.read(line, number: lineNumber)
        }
        parser.flush()
        return parser.file
    }

    /// configparser's reading of one file, line by line.
    private struct Parser {
        let path: String
        var file: IniFile
        /// The section being filled: nil before the first header, "" for DEFAULT.
        var current: String? = nil
        /// The option being read, its lines so far (continuations included) and where it began.
        var option: String? = nil
        var optionLines: [String] = []
        var optionLine = 0
        var indentLevel = 0
        /// Sections ("[name") and keys ("section\0key") seen, to warn of repeats.
        var seen = Set<String>()

        init(path: String) {
            self.path = path
            file = IniFile(path: path)
        }

        mutating func read(_ line: Substring, number: Int) throws(ConfigError) {
            let (content, commented, fullComment) = Parser.content(of: line)
            if content.isEmpty {
                // An empty line inside a value is kept (configparser's empty_lines_in_values); a comment is not.
                if !commented && !fullComment && option != nil { optionLines.append("") }
                return
            }
            let indent = line.prefix { $0 == " " || $0 == "\t" }.count
            if current != nil, option != nil, indent > indentLevel {
                optionLines.append(content)
                return
            }
            indentLevel = indent
            if content.hasPrefix("["), let close = content.lastIndex(of: "]"), close > content.index(after: content.startIndex) {
                header(String(content[content.index(after: content.startIndex)..<close]), number: number)
                return
            }
            try keyValue(content, number: number)
        }

        /// The line without its comment (';' at the start or after white space, or a line starting with '#' or
        /// ';'), trimmed; whether it had one, and whether the whole line is one.
        private static func content(of line: Substring) -> (String, commented: Bool, fullComment: Bool) {
            var commentStart: String.Index? = nil
            var previous: Character? = nil
            for idx in line.indices {
                let ch = line[idx]
                if ch == ";" && (previous == nil || previous!.isWhitespace) { commentStart = idx; break }
                previous = ch
            }
            let stripped = line.trimmingWhitespace()
            var fullComment = false
            if stripped.hasPrefix("#") || stripped.hasPrefix(";") { commentStart = line.startIndex; fullComment = true }
            let content = (commentStart.map { line[..<$0] } ?? line).trimmingWhitespace()
            return (content, commentStart != nil, fullComment)
        }

        private mutating func header(_ name: String, number: Int) {
            flush()
            option = nil
            optionLines = []
            if name == IniFile.defaultSectionName {
                current = ""
                return
            }
            if seen.contains("[" + name) {
                file.warnings.append(
                    Diagnostic(
                        .warning, "section [\(name)] appears twice; its keys are merged",
                        at: SourceLocation(file: path, line: number)))
            }
            seen.insert("[" + name)
            if file.sections[name] == nil { file.sections[name] = IniSection() }
            current = name
        }

        private mutating func keyValue(_ content: String, number: Int) throws(ConfigError) {
            let location = SourceLocation(file: path, line: number)
            guard let section = current else {
                throw ConfigError("no [section] header before this line: '\(content)'", at: location)
            }
            guard let delimiter = content.firstIndex(where: { $0 == "=" || $0 == ":" }) else {
                throw ConfigError("expected 'key = value' or a continuation line indented under a key, found '\(content)'", at: location)
            }
            let key = content[..<delimiter].trimmingWhitespace().lowercased()
            if key.isEmpty {
                throw ConfigError("a value without a key: '\(content)'", at: location)
            }
            flush()
            if seen.contains(section + "\u{0}" + key) {
                file.warnings.append(
                    Diagnostic(
                        .warning, "key '\(key)' set twice in [\(section.isEmpty ? IniFile.defaultSectionName : section)]; the later value wins",
                        at: location))
            }
            seen.insert(section + "\u{0}" + key)
            option = key
            optionLine = number
            optionLines = [content[content.index(after: delimiter)...].trimmingWhitespace()]
        }

        /// Stores the option being read (its value without trailing white space).
        mutating func flush() {
            guard let option, let current else { return }
            var value = optionLines.joined(separator: "\n")
            while let last = value.unicodeScalars.last, last.properties.isWhitespace { value.unicodeScalars.removeLast() }
            let entry = IniValue(value, at: SourceLocation(file: path, line: optionLine))
            if current.isEmpty { file.defaults[option] = entry } else { file.sections[current]![option] = entry }
        }
    }
}
