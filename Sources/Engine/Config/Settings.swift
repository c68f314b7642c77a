import FoundationEssentials
import Glibc
import Platform

/// Daemon-wide settings from `portcullis.conf` (or, in a fail2ban tree, `fail2ban.conf`), with their `.local`
/// overlays. fail2ban's key names are used where fail2ban has them.
public struct Settings: Sendable {
    public var logLevel: Logger.Level = .info
    public var dbFile: String = "/var/lib/portcullis/portcullis.sqlite3"
    public var dbPurgeAge: Double = 86400
    public var dbMaxMatches: Int = 10
    public var api = APISettings()
    /// `[cluster]`: bans shared across a fleet through PostgreSQL.
    public var cluster = ClusterSettings()
    /// `orphanexit`: how long the network namespace may have lost its last interface before the daemon exits (see
    /// `NamespaceWatch`); nil: never.
    public var orphanExit: Double? = 3
    /// Which file they came from ("portcullis" or "fail2ban"), nil when neither exists (defaults apply).
    public var source: String?

    public init() {}

    public static func read(_ directory: ConfigDirectory) throws(ConfigError) -> (Settings, [Diagnostic]) {
        var s = Settings()
        var diagnostics: [Diagnostic] = []
        let name =
            !directory.files(for: "portcullis").isEmpty
            ? "portcullis"
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
            return (v.trimmingWhitespace(), stack.rawEntry(section, key)?.location)
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
            do { s.dbPurgeAge = try TimeExpression.seconds(v) } catch { throw ConfigError("dbpurgeage: \(error)", at: loc) }
        }
        if let (v, loc) = try value("dbmaxmatches") {
            guard let n = Int(v), n >= 0 else { throw ConfigError("dbmaxmatches must be a whole number, not '\(v)'", at: loc) }
            s.dbMaxMatches = n
        }
        if let (v, loc) = try value("orphanexit") {
            if ["no", "off", "never", "false", "0"].contains(v.lowercased()) {
                s.orphanExit = nil
            } else {
                do { s.orphanExit = try TimeExpression.seconds(v) } catch { throw ConfigError("orphanexit: \(error) (or no)", at: loc) }
                guard s.orphanExit! > 0 && s.orphanExit! <= 3600 else { throw ConfigError("orphanexit must be from 1s to 1h, or no", at: loc) }
            }
        }
        if stack.hasSection("api") { s.api = try APISettings.read(stack, file: name) }
        if stack.hasSection("cluster") { s.cluster = try ClusterSettings.read(stack, file: name) }
        return (s, diagnostics)
    }
}

/// The admin API's listeners and limits: `[api]` in portcullis.conf (a fail2ban tree has none: defaults apply).
public struct APISettings: Sendable, Equatable {
    /// TCP listeners, `host:port` (`[::1]:9191` for IPv6). Empty: no TCP listener.
    public var listen: [String] = ["127.0.0.1:9191"]
    /// The Unix-domain socket for the local CLI. Empty: none.
    public var socket = "/run/portcullis/portcullis.sock"
    /// Files holding the bearer tokens (one line each); empty: not configured.
    public var readTokenFile = ""
    public var adminTokenFile = ""
    public var maxConnections = 16384
    /// TCP connections from one client address at most (the Unix socket is counted apart).
    public var maxConnectionsPerClient = 64
    /// Event-loop threads; 0: one per core, at most 4.
    public var threads = 0
    /// Seconds a keep-alive connection may stay silent between requests.
    public var idleTimeout: Double = 60
    /// Seconds a client has to send a whole request once it has started one (slow-header and slow-body defence).
    public var requestTimeout: Double = 10
    /// Seconds of silence after which an event stream gets a keep-alive comment (proxies close quiet connections).
    public var eventsKeepAlive: Double = 15
    /// Bytes an event-stream subscriber may fall behind before it is dropped.
    public var eventsBuffer = 1 << 20
    /// Seconds `/metrics` keeps its reading of the kernel's set sizes (a dump of a large set is costly); 0: every
    /// scrape.
    public var metricsKernelInterval: Double = 60

    public init() {}

    static func read(_ stack: ConfigStack, file: String) throws(ConfigError) -> APISettings {
        var a = APISettings()
        func value(_ key: String) throws(ConfigError) -> (String, SourceLocation?)? {
            guard let v = try stack.get("api", key) else { return nil }
            return (v.trimmingWhitespaceAndNewlines(), stack.rawEntry("api", key)?.location)
        }
        if let (v, _) = try value("listen") {
            a.listen = v.split(whereSeparator: { $0 == "," || $0.isWhitespace }).map(String.init)
        }
        if let (v, _) = try value("socket") { a.socket = v }
        if let (v, _) = try value("read_token_file") { a.readTokenFile = v }
        if let (v, _) = try value("admin_token_file") { a.adminTokenFile = v }
        if let (v, loc) = try value("threads") {
            guard let n = Int(v), (0...64).contains(n) else {
                throw ConfigError("[api] threads must be a number from 0 (one per core) to 64, not '\(v)'", at: loc)
            }
            a.threads = n
        }
        if let (v, loc) = try value("max_connections") {
            guard let n = Int(v), n >= 1 else { throw ConfigError("[api] max_connections must be a positive number, not '\(v)'", at: loc) }
            a.maxConnections = n
        }
        if let (v, loc) = try value("max_connections_per_client") {
            guard let n = Int(v), n >= 1 else { throw ConfigError("[api] max_connections_per_client must be a positive number, not '\(v)'", at: loc) }
            a.maxConnectionsPerClient = n
        }
        if let (v, loc) = try value("events_buffer") {
            guard let n = Int(v), (4096...(1 << 30)).contains(n) else {
                throw ConfigError("[api] events_buffer must be a number of bytes from 4096 to 1073741824, not '\(v)'", at: loc)
            }
            a.eventsBuffer = n
        }
        if let (v, loc) = try value("metrics_kernel_interval") {
            do { a.metricsKernelInterval = try TimeExpression.seconds(v) } catch { throw ConfigError("[api] metrics_kernel_interval: \(error)", at: loc) }
            guard a.metricsKernelInterval >= 0 && a.metricsKernelInterval <= 86400 else {
                throw ConfigError("[api] metrics_kernel_interval must be from 0 to 1d", at: loc)
            }
        }
        for (key, path) in [
            ("idle_timeout", \APISettings.idleTimeout), ("request_timeout", \APISettings.requestTimeout), ("events_keepalive", \APISettings.eventsKeepAlive),
        ] {
            if let (v, loc) = try value(key) {
                let seconds: Double
                do { seconds = try TimeExpression.seconds(v) } catch { throw ConfigError("[api] \(key): \(error)", at: loc) }
                guard seconds > 0 else { throw ConfigError("[api] \(key) must be positive", at: loc) }
                a[keyPath: path] = seconds
            }
        }
        return a
    }
}

/// The whole configuration, read and checked: settings, enabled jails with their compiled filters, and every
/// problem found. A jail with an error is left out; the others stay.
public struct LoadedConfig {
    public var settings = Settings()
    public var jails: [JailDefinition] = []
    public var diagnostics: [Diagnostic] = []
    public var hasErrors: Bool { diagnostics.contains { $0.severity == .error } }

    /// Only the daemon-wide settings (for the CLI client, which needs `[api] socket`); defaults where unreadable.
    public static func loadSettings(_ path: String) -> Settings {
        (try? Settings.read(ConfigDirectory(path)).0) ?? Settings()
    }

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
