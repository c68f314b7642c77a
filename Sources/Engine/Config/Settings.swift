import Foundation

/// Daemon-wide settings from `portcullis.conf` (or, in a fail2ban tree, `fail2ban.conf`), with their `.local`
/// overlays. fail2ban's key names are used where fail2ban has them.
public struct Settings: Sendable {
    public var logLevel: Logger.Level = .info
    public var dbFile: String = "/var/lib/portcullis/portcullis.sqlite3"
    public var dbPurgeAge: Double = 86400
    public var dbMaxMatches: Int = 10
    /// Which file they came from ("portcullis" or "fail2ban"), nil when neither exists (defaults apply).
    public var source: String?

    public init() {}

    public static func read(_ directory: ConfigDirectory) throws(ConfigError) -> (Settings, [Diagnostic]) {
        var s = Settings()
        var diagnostics: [Diagnostic] = []
        let name = !directory.files(for: "portcullis").isEmpty ? "portcullis"
            : !directory.files(for: "fail2ban").isEmpty ? "fail2ban" : nil
        guard let name else { return (s, diagnostics) }
        s.source = name
        var stack = try directory.read(name)
        stack.setDefault("portcullis_confpath", directory.path)
        stack.setDefault("fail2ban_confpath", directory.path)
        diagnostics += stack.warnings
        let section = stack.hasSection("Definition") ? "Definition" : IniFile.defaultSectionName
        func value(_ key: String) throws(ConfigError) -> (String, SourceLocation?)? {
            guard let v = try stack.get(section, key) else { return nil }
            return (v.trimmingCharacters(in: .whitespaces), stack.rawEntry(section, key)?.location)
        }
        if let (v, loc) = try value("loglevel") {
            guard let level = Logger.Level(name: v) else {
                throw ConfigError("loglevel '\(v)' is not one of CRITICAL, ERROR, WARNING, NOTICE, INFO, DEBUG", at: loc)
            }
            s.logLevel = level
        }
        if let (v, loc) = try value("logtarget"), !["STDERR", "STDOUT", "SYSOUT", "SYSLOG"].contains(v.uppercased()) {
            diagnostics.append(Diagnostic(.note, "logtarget = \(v): Portcullis logs to stderr (collect it with your container runtime)", at: loc))
        }
        if let (v, _) = try value("dbfile") { s.dbFile = v }
        if let (v, loc) = try value("dbpurgeage") {
            do { s.dbPurgeAge = try Duration.seconds(v) } catch { throw ConfigError("dbpurgeage: \(error)", at: loc) }
        }
        if let (v, loc) = try value("dbmaxmatches") {
            guard let n = Int(v), n >= 0 else { throw ConfigError("dbmaxmatches must be a whole number, not '\(v)'", at: loc) }
            s.dbMaxMatches = n
        }
        return (s, diagnostics)
    }
}

/// The whole configuration, read and checked: settings, enabled jails with their compiled filters, and every
/// problem found. A jail with an error is left out; the others stay.
public struct LoadedConfig {
    public var settings = Settings()
    public var jails: [JailDefinition] = []
    public var diagnostics: [Diagnostic] = []
    public var hasErrors: Bool { diagnostics.contains { $0.severity == .error } }

    public static func load(_ path: String, cache: IniCache = IniCache()) -> LoadedConfig {
        var result = LoadedConfig()
        let dir = ConfigDirectory(path, cache: cache)
        guard dir.exists else {
            result.diagnostics.append(Diagnostic(.error, "configuration directory \(path) does not exist"))
            return result
        }
        do {
            let (settings, d) = try Settings.read(dir)
            result.settings = settings
            result.diagnostics += d
        } catch {
            result.diagnostics.append(Diagnostic(.error, error.message, at: error.location))
        }
        var reader = JailsReader(directory: dir)
        do {
            let jails = try reader.read()
            result.diagnostics += reader.diagnostics
            for jail in jails {
                // Compile now, so that a broken regex is reported with its jail and the other jails still start.
                do {
                    _ = try LineFilter(jail.filter, logTimeZone: jail.logTimeZone)
                    result.jails.append(jail)
                } catch let e as LineFilter.CompileError {
                    result.diagnostics.append(Diagnostic(.error, e.description + " — jail skipped", at: e.location, jail: jail.name))
                } catch let e as ConfigError {
                    result.diagnostics.append(Diagnostic(.error, e.message + " — jail skipped", at: e.location, jail: jail.name))
                } catch {
                    result.diagnostics.append(Diagnostic(.error, "\(error) — jail skipped", jail: jail.name))
                }
            }
        } catch {
            result.diagnostics += reader.diagnostics
            result.diagnostics.append(Diagnostic(.error, error.message, at: error.location))
        }
        return result
    }
}
