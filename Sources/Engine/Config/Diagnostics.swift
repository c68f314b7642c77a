/// Where a configuration value came from.
public struct SourceLocation: Sendable, Equatable, CustomStringConvertible {
    public var file: String
    public var line: Int

    public init(file: String, line: Int) {
        self.file = file
        self.line = line
    }

    public var description: String { line > 0 ? "\(file):\(line)" : file }
}

/// A configuration problem, named by file and line where one is known.
public struct ConfigError: Error, Sendable, CustomStringConvertible {
    public var message: String
    public var location: SourceLocation?

    public init(_ message: String, at location: SourceLocation? = nil) {
        self.message = message
        self.location = location
    }

    public var description: String {
        if let location { return "\(location): \(message)" }
        return message
    }
}

/// A finding of `portcullis check` or of loading a jail: collected, not thrown one at a time.
public struct Diagnostic: Sendable, CustomStringConvertible {
    public enum Severity: String, Sendable { case error, warning, note }
    public var severity: Severity
    public var message: String
    public var location: SourceLocation?
    public var jail: String?

    public init(_ severity: Severity, _ message: String, at location: SourceLocation? = nil, jail: String? = nil) {
        self.severity = severity
        self.message = message
        self.location = location
        self.jail = jail
    }

    public var description: String { "\(severity.rawValue): " + text }

    /// The message with its place, without the severity (for log lines that carry their own level).
    public var text: String {
        var s = ""
        if let location { s += "\(location): " }
        if let jail { s += "jail '\(jail)': " }
        return s + message
    }
}
