import FoundationEssentials
import Glibc
import Platform

/// A filter with every `%(x)s` and `<tag>` resolved: what the regex layer compiles.
public struct FilterDefinition: Sendable {
    public var name: String
    /// The files it was read from, first the main one.
    public var files: [String]
    public var options: OrderedMap<String>
    public var prefregex: String?
    public var failregex: [String]
    public var ignoreregex: [String]
    public var maxlines: Int?
    public var datepattern: String?
    public var usedns: String?
    public var journalmatch: String?
    /// Where each option was written, for error messages.
    public var locations: [String: SourceLocation]

    public init(
        name: String, files: [String] = [], options: OrderedMap<String> = .init(), prefregex: String? = nil,
        failregex: [String] = [], ignoreregex: [String] = [], maxlines: Int? = nil, datepattern: String? = nil,
        usedns: String? = nil, journalmatch: String? = nil, locations: [String: SourceLocation] = [:]
    ) {
        self.name = name
        self.files = files
        self.options = options
        self.prefregex = prefregex
        self.failregex = failregex
        self.ignoreregex = ignoreregex
        self.maxlines = maxlines
        self.datepattern = datepattern
        self.usedns = usedns
        self.journalmatch = journalmatch
        self.locations = locations
    }
}

/// Reads a filter the way fail2ban's `FilterReader` does: `[Definition]` options interpolated with the jail's
/// options and the filter's own bracket options as variables, `[Init]` values available as tags, then `<tag>`
/// substitution (`<mdre-<mode>>`, `<lt_<logtype>/__prefix_line>`).
public final class FilterReader {
    public static let definitionOptions = [
        "usedns", "prefregex", "failregex", "ignoreregex", "maxlines",
        "datepattern", "journalmatch",
    ]

    public let name: String
    public let jail: String
    public private(set) var initOptions: OrderedMap<String>
    public private(set) var config = ConfigStack()
    private let files: [String]
    private var opts = OrderedMap<String>()
    private var pOpts: [String: String] = [:]
    private var combCache: [String: String?] = [:]

    /// A filter named in a configuration directory (`filter.d/<name>.conf` and its overlays).
    public init(name: String, jail: String, options: OrderedMap<String>, directory: ConfigDirectory) throws(ConfigError) {
        self.name = name
        self.jail = jail
        self.initOptions = options
        let found = directory.files(for: "filter.d/" + name)
        guard !found.isEmpty else {
            throw ConfigError("filter '\(name)' not found: no filter.d/\(name).conf or .local under \(directory.path)")
        }
        files = found
        config = try ConfigStack.read(found, cache: directory.cache)
    }

    /// A filter given as a file path (read with its includes and `.local` overlay).
    public init(file: String, jail: String, options: OrderedMap<String>, cache: IniCache) throws(ConfigError) {
        self.name = Path.deletingExtension(Path.lastComponent(file))
        self.jail = jail
        self.initOptions = options
        guard FileManager.default.fileExists(atPath: file) else { throw ConfigError("filter file \(file) does not exist") }
        files = [file]
        config = try ConfigStack.read([file], cache: cache)
    }

    /// `logtype` defaults to `file` (or `journal` for the systemd backend), unless the filter or its options set it.
    public func applyAutoOptions(backend: String) {
        if initOptions["logtype"] == nil && config.sections["Definition"]?["logtype"] == nil {
            initOptions["logtype"] = backend.hasPrefix("systemd") ? "journal" : "file"
        }
    }

    /// The corresponding fail2ban method is `DefinitionInitConfigReader.getOptions`.
    public func readOptions(_ jailOptions: [String: String], all: Bool) throws(ConfigError) {
        var p = jailOptions
        for (k, v) in initOptions { p[k.lowercased()] = v }
        guard config.hasSection("Definition") else {
            throw ConfigError("filter '\(name)' has no [Definition] section", at: SourceLocation(file: files[0], line: 0))
        }
        opts = OrderedMap()
        for option in FilterReader.definitionOptions where p[option] == nil {
            if let v = try config.get("Definition", option, vars: p) { opts[option] = v }
        }
        pOpts = p
        combCache = [:]
        if config.hasSection("Init") {
            for option in config.options("Init") {
                let v = try config.get("Init", option) ?? ""
                if !option.hasPrefix("known/") { initOptions["known/" + option] = v }
                if initOptions[option] == nil { initOptions[option] = v }
            }
        }
        if all {
            for option in config.options("Definition") where opts[option] == nil {
                opts[option] = try config.get("Definition", option) ?? ""
            }
        }
    }

    private func combinedOption(_ name: String) throws(ConfigError) -> String? {
        if let cached = combCache[name] { return cached }
        let v = try? config.getEx("Definition", name, vars: pOpts)
        combCache[name] = .some(v ?? nil)
        return v ?? nil
    }

    /// Definition options merged with the init options, all tags substituted.
    public func combined() throws(ConfigError) -> OrderedMap<String> {
        var merged = opts
        for (k, v) in initOptions { merged[k] = v }
        if merged.isEmpty { return merged }
        var ignore = Set<String>()
        for key in merged.keys {
            if let q = key.firstIndex(of: "?"), q != key.startIndex { ignore.insert(String(key[..<q])) }
        }
        do {
            return try TagSubstitution.substitute(merged, ignore: ignore) { name throws(ConfigError) in
                try self.combinedOption(name)
            }
        } catch {
            throw ConfigError("filter '\(name)': \(error.message)", at: SourceLocation(file: files[0], line: 0))
        }
    }

    /// The resolved filter.
    public func definition() throws(ConfigError) -> FilterDefinition {
        let opts = try combined()
        // The filter's own file first, then what it includes.
        let main = files[0]
        var def = FilterDefinition(name: name, files: [main] + config.files.filter { $0 != main }, options: initOptions)
        for option in FilterReader.definitionOptions {
            if let entry = config.rawEntry("Definition", option) { def.locations[option] = entry.location }
        }
        func lines(_ v: String?) -> [String] { (v ?? "").split(separator: "\n", omittingEmptySubsequences: true).map(String.init).filter { !$0.isEmpty } }
        def.failregex = lines(opts["failregex"])
        def.ignoreregex = lines(opts["ignoreregex"])
        if let p = opts["prefregex"], !p.isEmpty { def.prefregex = p }
        if let m = opts["maxlines"], !m.isEmpty {
            guard let n = Int(m.trimmingWhitespace()), n > 0 else {
                throw ConfigError(
                    "filter '\(name)': maxlines must be a whole number greater than zero, not '\(m)'",
                    at: def.locations["maxlines"])
            }
            def.maxlines = n
        }
        if let d = opts["datepattern"], !d.isEmpty { def.datepattern = d }
        if let u = opts["usedns"], !u.isEmpty { def.usedns = u }
        if let j = opts["journalmatch"], !j.isEmpty { def.journalmatch = j }
        return def
    }
}
