import FoundationEssentials
import Glibc
import Platform

/// One log path entry of a jail: a glob, and whether to start at its end (`tail`) or beginning (`head`).
public struct LogPath: Sendable, Equatable {
    public var pattern: String
    public var tail: Bool

    public init(pattern: String, tail: Bool = false) {
        self.pattern = pattern
        self.tail = tail
    }
}

/// How a jail watches its logs.
public enum Backend: String, Sendable {
    case inotify, polling
}

/// An `action` entry of a jail: fail2ban's action name with its bracket options.
public struct ActionSpec: Sendable {
    public var name: String
    public var options: OrderedMap<String>
}

/// fail2ban's `bantime.*` settings (applied by the ban manager).
public struct BanTimeIncrement: Sendable {
    public var enabled = false
    public var factor: Double = 1
    public var formula: String? = nil
    public var multipliers: [Double] = []
    public var maxTime: Double? = nil
    public var randomTime: Double? = nil
    public var overallJails = false

    public init() {}
}

/// A jail as configured, every option resolved and checked.
public struct JailDefinition: Sendable {
    public var name: String
    public var filter: FilterDefinition
    /// The filter as written (`dovecot[mode=aggressive]`).
    public var filterSpec: String
    public var logPaths: [LogPath]
    public var backend: Backend
    public var maxRetry: Int
    public var findTime: Double
    /// Seconds; negative for a permanent ban.
    public var banTime: BanTime
    public var increment = BanTimeIncrement()
    public var ports: [PortRange]
    public var portSpec: String
    public var `protocol`: String
    public var ignoreList: IgnoreList
    public var banAction: String
    /// `banaction = dry-run` (or `dryrun`): ban decisions are logged, the packet filter is not touched. The one
    /// place that reads `banAction` for it.
    public var dryRun: Bool { ["dry-run", "dryrun"].contains(banAction.trimmingWhitespace().lowercased()) }
    public var actions: [ActionSpec]
    /// The `webhook[...]` actions.
    public var webhooks: [WebhookSpec] = []
    public var logEncoding: String
    public var logTimeZone: Int?
    public var maxMatches: Int
    /// Cap on addresses whose failures are tracked (oldest evicted first).
    public var maxTracked: Int
    /// Log lines longer than this are cut there (and each cut is logged); fail2ban reads lines whole.
    public var maxLineLength = LineSplitter.defaultMaxLineLength
    /// Where the jail filters (fail2ban's `chain`): the input hook by default.
    public var hook = FilterHook.input
    /// `ignoregateway`: failures from this network namespace's default gateways are not counted (a proxy's
    /// address stands for every client behind it).
    public var ignoreGateway = true
    /// `banprefix4` / `banprefix6`: failures are counted, and bans made, per network of this many leading bits
    /// (an IPv6 attacker rotates through its /64). 32 and 128, one address, by default.
    public var banPrefix4 = 32
    public var banPrefix6 = 128
    public var location: SourceLocation?

    /// What a failure of `ip` counts against, and what its ban covers: the address, or its network of the jail's
    /// prefix length.
    public func banTarget(_ ip: IPAddress) -> IPNetwork { banTarget(IPNetwork(ip)) }

    /// A failure ID that is a network already (fail2ban's `<SUBNET>`), widened to the jail's prefix if that is shorter.
    public func banTarget(_ network: IPNetwork) -> IPNetwork {
        IPNetwork(address: network.address, prefix: min(network.prefix, network.isIPv4 ? banPrefix4 : banPrefix6))
    }

    public init(
        name: String, filter: FilterDefinition, filterSpec: String, logPaths: [LogPath], backend: Backend,
        maxRetry: Int, findTime: Double, banTime: BanTime, increment: BanTimeIncrement = BanTimeIncrement(),
        ports: [PortRange], portSpec: String, protocol: String, ignoreList: IgnoreList, banAction: String,
        actions: [ActionSpec], logEncoding: String, logTimeZone: Int?, maxMatches: Int, maxTracked: Int,
        location: SourceLocation?
    ) {
        self.name = name
        self.filter = filter
        self.filterSpec = filterSpec
        self.logPaths = logPaths
        self.backend = backend
        self.maxRetry = maxRetry
        self.findTime = findTime
        self.banTime = banTime
        self.increment = increment
        self.ports = ports
        self.portSpec = portSpec
        self.protocol = `protocol`
        self.ignoreList = ignoreList
        self.banAction = banAction
        self.actions = actions
        self.logEncoding = logEncoding
        self.logTimeZone = logTimeZone
        self.maxMatches = maxMatches
        self.maxTracked = maxTracked
        self.location = location
    }

    /// The files the log path globs match now.
    public var files: [String] { logPaths.flatMap { Glob.expand($0.pattern) } }
}

/// Reads every jail of a configuration tree (`jail.conf`, `jail.d/*.conf`, `jail.local`, `jail.d/*.local`) with the
/// semantics of fail2ban's `JailsReader` and `JailReader`: `[DEFAULT]` inheritance, the filter read with the jail's
/// options, the filter's values visible to the jail as `known/…`. A jail whose configuration is wrong is reported
/// and left out; the others load.
public struct JailsReader {
    public let directory: ConfigDirectory
    public private(set) var diagnostics: [Diagnostic] = []

    public init(directory: ConfigDirectory) {
        self.directory = directory
    }

    static let firstOptions = ["enabled", "backend", "filter"]
    static let jailOptions = [
        "enabled", "backend", "maxretry", "maxmatches", "findtime", "bantime", "bantime.increment", "bantime.factor",
        "bantime.formula", "bantime.multipliers", "bantime.maxtime", "bantime.rndtime", "bantime.overalljails",
        "ignorecommand", "ignoreself", "ignoreip", "ignorecache", "filter", "logtimezone", "logencoding", "logpath",
        "action", "usedns", "prefregex", "failregex", "ignoreregex", "maxlines", "datepattern", "journalmatch",
        "port", "protocol", "banaction", "banaction_allports", "maxtracked", "maxlinelength", "chain", "ignoregateway",
        "banprefix4", "banprefix6",
    ]

    /// The longest jail name, in UTF-8 bytes: NFT_NAME_MAXLEN (256, with the NUL) less "-v4" (or "-n4").
    public static let longestName = 252

    /// Names of all jail sections, enabled or not, in file order.
    public static func jailNames(_ stack: ConfigStack) -> [String] {
        stack.sections.keys.filter { !$0.hasPrefix("KNOWN/") && $0 != "INCLUDES" }
    }

    /// The enabled jails. Problems are collected in `diagnostics`.
    public mutating func read(only: Set<String>? = nil) throws(ConfigError) -> [JailDefinition] {
        var stack = try directory.read("jail")
        diagnostics += stack.warnings
        stack.setDefault("fail2ban_version", "1.0.2")
        stack.setDefault("fail2ban_confpath", directory.path)
        stack.setDefault("portcullis_confpath", directory.path)
        var jails: [JailDefinition] = []
        for name in JailsReader.jailNames(stack) {
            if let only, !only.contains(name) { continue }
            do {
                if let jail = try readJail(name, stack: &stack) { jails.append(jail) }
            } catch {
                diagnostics.append(Diagnostic(.error, error.message + " — jail skipped", at: error.location, jail: name))
            }
        }
        return jails
    }

    private mutating func readJail(_ name: String, stack: inout ConfigStack) throws(ConfigError) -> JailDefinition? {
        let location = stack.sections[name]?.makeIterator().next()?.value.location
        var locations: [String: SourceLocation] = [:]
        for o in JailsReader.jailOptions { if let l = stack.rawEntry(name, o)?.location { locations[o] = l } }
        func get(_ option: String) throws(ConfigError) -> String? {
            do { return try stack.get(name, option) } catch {
                throw ConfigError(error.message, at: error.location ?? stack.rawEntry(name, option)?.location)
            }
        }
        guard JailsReader.bool(try get("enabled") ?? "false") else { return nil }
        // The jail's nftables sets are "<name>-v4" and "<name>-v6"; the kernel takes set names of up to 255 bytes.
        if name.utf8.count > JailsReader.longestName {
            throw ConfigError(
                "the jail name is \(name.utf8.count) bytes long; nftables holds at most \(JailsReader.longestName) (its sets are named <jail>-v4, <jail>-v6, <jail>-n4 and <jail>-n6)",
                at: location)
        }
        let backendText = (try get("backend") ?? "auto").trimmingWhitespace()
        let backend = try JailsReader.backend(backendText, at: locations["backend"])
        var firstOpts: [String: String] = [:]
        for o in JailsReader.firstOptions { if let v = try get(o) { firstOpts[o] = v } }

        // The filter, read with the jail's first options, then visible to the jail as known/….
        let filterSpec = (try get("filter") ?? "").trimmingWhitespaceAndNewlines()
        guard !filterSpec.isEmpty else { throw ConfigError("no filter set", at: locations["filter"]) }
        let (filterName, filterOptions) = try OptionSyntax.extract(filterSpec)
        let reader: FilterReader
        do {
            reader = try FilterReader(name: filterName, jail: name, options: filterOptions, directory: directory)
        } catch {
            throw ConfigError(error.message, at: error.location ?? locations["filter"])
        }
        reader.applyAutoOptions(backend: backendText)
        try reader.readOptions(firstOpts, all: true)
        stack.mergeSection(
            name, try reader.combined(), prefix: "known/",
            location: SourceLocation(file: reader.config.files.first ?? filterName, line: 0))

        var values: [String: String] = [:]
        for o in JailsReader.jailOptions { if let v = try get(o) { values[o] = v } }
        let opts = JailOptions(jail: name, values: values, locations: locations)
        try reader.readOptions(values, all: false)
        let filter = try jailFilter(
            reader.definition(), opts, filterName: filterName,
            filterFile: reader.config.files.first ?? filterName, setInSection: { stack.sections[name]?[$0] != nil })
        let maxRetry = try opts.integer("maxretry", default: 5)
        guard maxRetry >= 1 else { throw ConfigError("maxretry must be at least 1, not \(maxRetry)", at: opts.location("maxretry")) }
        let findTime = try opts.duration("findtime", default: "10m")
        guard findTime > 0 else { throw ConfigError("findtime must be positive", at: opts.location("findtime")) }
        let (banTime, increment) = try banTimes(opts)
        let proto = (opts["protocol"] ?? "tcp").trimmingWhitespace().lowercased()
        guard ["tcp", "udp", "all", "sctp"].contains(proto) else {
            throw ConfigError("protocol must be tcp, udp, sctp or all, not '\(proto)'", at: opts.location("protocol"))
        }
        let portSpec = (opts["port"] ?? "0:65535").trimmingWhitespaceAndNewlines()
        let ports: [PortRange]
        do { ports = try Ports.parse(portSpec, protocol: proto) } catch { throw ConfigError(error.description, at: opts.location("port")) }
        let ignoreList = ignoreList(opts)
        let logs = try logs(opts)
        let (actions, hook) = try actions(opts)
        let maxTracked = try opts.integer("maxtracked", default: 100_000)
        guard maxTracked >= 1 else { throw ConfigError("maxtracked must be at least 1", at: opts.location("maxtracked")) }

        var definition = JailDefinition(
            name: name, filter: filter, filterSpec: filterSpec, logPaths: logs.paths, backend: backend,
            maxRetry: maxRetry, findTime: findTime, banTime: banTime, increment: increment, ports: ports,
            portSpec: portSpec, protocol: proto, ignoreList: ignoreList,
            banAction: (opts["banaction"] ?? "").trimmingWhitespace(), actions: actions,
            logEncoding: logs.encoding, logTimeZone: logs.zone, maxMatches: try opts.integer("maxmatches", default: maxRetry),
            maxTracked: maxTracked, location: location)
        definition.maxLineLength = logs.maxLineLength
        for a in actions where a.name.lowercased() == WebhookSpec.actionName {
            do throws(ConfigError) {
                let spec = try WebhookSpec(a, index: definition.webhooks.count + 1)
                _ = try spec.readSecret()
                if let ca = spec.cafile, !FileManager.default.isReadableFile(atPath: ca) {
                    throw ConfigError("webhook: cannot read cafile \(ca)")
                }
                definition.webhooks.append(spec)
            } catch {
                throw ConfigError(error.message, at: opts.location("action"))
            }
        }
        definition.hook = hook
        definition.ignoreGateway = JailsReader.bool(opts["ignoregateway"] ?? "true")
        definition.banPrefix4 = try opts.prefixLength("banprefix4", max: 32)
        definition.banPrefix6 = try opts.prefixLength("banprefix6", max: 128)
        return definition
    }

    /// A jail's options as read (interpolated), with the place each was set: what the parts of `readJail` read.
    private struct JailOptions {
        let jail: String
        let values: [String: String]
        let locations: [String: SourceLocation]

        subscript(_ option: String) -> String? { values[option] }
        func location(_ option: String) -> SourceLocation? { locations[option] }

        func duration(_ option: String, default def: String) throws(ConfigError) -> Double {
            let text = values[option] ?? def
            do { return try TimeExpression.seconds(text) } catch { throw ConfigError("\(option): \(error)", at: locations[option]) }
        }

        func integer(_ option: String, default def: Int) throws(ConfigError) -> Int {
            guard let text = values[option]?.trimmingWhitespace(), !text.isEmpty else { return def }
            guard let v = Int(text) else { throw ConfigError("\(option) must be a whole number, not '\(text)'", at: locations[option]) }
            return v
        }

        /// `banprefix4 = 24`, `banprefix6 = 64` (a leading slash is allowed: `/64`).
        func prefixLength(_ option: String, max: Int) throws(ConfigError) -> Int {
            guard var text = values[option]?.trimmingWhitespace(), !text.isEmpty else { return max }
            if text.hasPrefix("/") { text.removeFirst() }
            guard let v = Int(text), (0...max).contains(v) else {
                throw ConfigError("\(option) must be a prefix length from 0 to \(max), not '\(values[option]!.trimmingWhitespace())'", at: locations[option])
            }
            return v
        }
    }

    private static func backend(_ text: String, at location: SourceLocation?) throws(ConfigError) -> Backend {
        switch text.lowercased() {
        case "auto", "inotify", "pyinotify", "gamin": return .inotify
        case "polling": return .polling
        case let b where b.hasPrefix("systemd"):
            throw ConfigError(
                "backend = \(text): there is no systemd journal in a container. Have the service log to a file (dovecot: log_path = /var/log/mail.log; sshd: rsyslog or 'sshd -E /var/log/auth.log'), set logpath to it and backend = auto",
                at: location)
        default:
            throw ConfigError("unknown backend '\(text)' (auto, inotify or polling)", at: location)
        }
    }

    /// The filter with the jail's own regexes and settings added, as fail2ban adds them after the filter's.
    private mutating func jailFilter(
        _ base: FilterDefinition, _ opts: JailOptions, filterName: String, filterFile: String,
        setInSection: (String) -> Bool
    ) throws(ConfigError) -> FilterDefinition {
        var filter = base
        func lines(_ v: String?) -> [String] { (v ?? "").split(separator: "\n").map(String.init).filter { !$0.isEmpty } }
        filter.failregex += lines(opts["failregex"])
        filter.ignoreregex += lines(opts["ignoreregex"])
        if let v = opts["prefregex"], !v.isEmpty { filter.prefregex = v }
        if let v = opts["datepattern"], !v.isEmpty { filter.datepattern = v }
        if let v = opts["usedns"], !v.isEmpty { filter.usedns = v }
        if let v = opts["maxlines"], !v.isEmpty {
            guard let n = Int(v), n > 0 else { throw ConfigError("maxlines must be a whole number above zero, not '\(v)'", at: opts.location("maxlines")) }
            filter.maxlines = n
        }
        for key in ["failregex", "ignoreregex", "prefregex", "datepattern", "maxlines", "usedns"] where setInSection(key) {
            filter.locations[key] = opts.location(key)
        }
        if filter.failregex.isEmpty {
            throw ConfigError("filter '\(filterName)' has no failregex", at: SourceLocation(file: filterFile, line: 0))
        }
        if let u = filter.usedns?.lowercased(), UseDNS(setting: u) == nil {
            diagnostics.append(Diagnostic(.warning, "usedns = \(u) is not one of yes, warn, no, raw; using no", at: opts.location("usedns"), jail: opts.jail))
            filter.usedns = "no"
        }
        return filter
    }

    /// `bantime` and the `bantime.*` options; warns of times longer than the packet filter holds.
    private mutating func banTimes(_ opts: JailOptions) throws(ConfigError) -> (BanTime, BanTimeIncrement) {
        let banTime = BanTime(fail2banSeconds: try opts.duration("bantime", default: "10m"))
        var increment = BanTimeIncrement()
        increment.enabled = JailsReader.bool(opts["bantime.increment"] ?? "false")
        if let f = opts["bantime.factor"] {
            guard let v = Double(f.trimmingWhitespace()) else {
                throw ConfigError("bantime.factor must be a number, not '\(f)'", at: opts.location("bantime.factor"))
            }
            increment.factor = v
        }
        increment.formula = opts["bantime.formula"]
        if let m = opts["bantime.multipliers"] {
            var values: [Double] = []
            for part in m.split(whereSeparator: { $0 == " " || $0 == "," || $0 == "\n" }) {
                guard let v = Double(part) else {
                    throw ConfigError("bantime.multipliers: '\(part)' is not a number", at: opts.location("bantime.multipliers"))
                }
                values.append(v)
            }
            increment.multipliers = values
        }
        if opts["bantime.maxtime"] != nil { increment.maxTime = try opts.duration("bantime.maxtime", default: "0") }
        if opts["bantime.rndtime"] != nil { increment.randomTime = try opts.duration("bantime.rndtime", default: "0") }
        increment.overallJails = JailsReader.bool(opts["bantime.overalljails"] ?? "false")
        // nftables holds an element for at most ~584 years: say so here, not at the first ban.
        let longest = TimeExpression.describe(BanTimePolicy.longest)
        if case .seconds(let seconds) = banTime, seconds > BanTimePolicy.longest {
            diagnostics.append(
                Diagnostic(
                    .warning, "bantime \(TimeExpression.describe(seconds)) is longer than the packet filter holds: bans last \(longest) (use -1 for permanent)",
                    at: opts.location("bantime"), jail: opts.jail))
        }
        if increment.enabled, let m = increment.maxTime, m > BanTimePolicy.longest {
            diagnostics.append(
                Diagnostic(
                    .warning, "bantime.maxtime \(TimeExpression.describe(m)) is longer than the packet filter holds: bans last at most \(longest)",
                    at: opts.location("bantime.maxtime"), jail: opts.jail))
        }
        return (banTime, increment)
    }

    /// `ignoreip` and `ignoreself` (and a word on `ignorecommand`, which Portcullis does not run).
    private mutating func ignoreList(_ opts: JailOptions) -> IgnoreList {
        let ignoreSelf = JailsReader.bool(opts["ignoreself"] ?? "true")
        let (ignoreList, ignoreProblems) = IgnoreList.parse(opts["ignoreip"] ?? "", ignoreSelf: ignoreSelf)
        for p in ignoreProblems { diagnostics.append(Diagnostic(.warning, p, at: opts.location("ignoreip"), jail: opts.jail)) }
        if let cmd = opts["ignorecommand"], !cmd.trimmingWhitespace().isEmpty {
            diagnostics.append(
                Diagnostic(
                    .warning, "ignorecommand is not supported (Portcullis runs no external commands); it is ignored", at: opts.location("ignorecommand"),
                    jail: opts.jail))
        }
        return ignoreList
    }

    /// How the jail's logs are read: `logpath` (with fail2ban's `tail`/`head`), `logtimezone`, `logencoding`,
    /// `maxlinelength`.
    private mutating func logs(_ opts: JailOptions) throws(ConfigError) -> (paths: [LogPath], zone: Int?, encoding: String, maxLineLength: Int) {
        var paths: [LogPath] = []
        for line in (opts["logpath"] ?? "").split(separator: "\n") {
            var entry = line.trimmingWhitespace()
            if entry.isEmpty { continue }
            var tail = false
            for suffix in [" tail", " head"] where entry.hasSuffix(suffix) {
                tail = suffix == " tail"
                entry = String(entry.dropLast(suffix.count)).trimmingWhitespace()
            }
            paths.append(LogPath(pattern: entry, tail: tail))
        }
        guard !paths.isEmpty else { throw ConfigError("no logpath set", at: opts.location("logpath")) }
        var zone: Int? = nil
        if let tz = opts["logtimezone"], !tz.trimmingWhitespace().isEmpty {
            guard let z = ZoneOffsets.offset(tz.trimmingWhitespace()) else {
                throw ConfigError("logtimezone '\(tz)' is not a fixed offset or zone abbreviation (UTC, +0100, CET …)", at: opts.location("logtimezone"))
            }
            zone = z
        }
        let encoding = (opts["logencoding"] ?? "auto").trimmingWhitespace().lowercased()
        if !["auto", "utf-8", "utf8", "ascii", "us-ascii"].contains(encoding) {
            diagnostics.append(
                Diagnostic(
                    .warning,
                    "logencoding = \(encoding): Portcullis reads logs as UTF-8 (invalid bytes are replaced), as fail2ban does with 'auto' on a UTF-8 system",
                    at: opts.location("logencoding"), jail: opts.jail))
        }
        var maxLineLength = LineSplitter.defaultMaxLineLength
        if let text = opts["maxlinelength"] {
            guard let n = ByteSize.parse(text) else {
                throw ConfigError(
                    "maxlinelength = \(text): a size from 1K to 1G is needed (bytes, or with a K or M suffix; default 4M)",
                    at: opts.location("maxlinelength"))
            }
            maxLineLength = n
        }
        return (paths, zone, encoding, maxLineLength)
    }

    /// `action` entries, and the hook the jail's chain (or one an action names, `iptables-multiport[chain=DOCKER-USER]`)
    /// stands for.
    private func actions(_ opts: JailOptions) throws(ConfigError) -> ([ActionSpec], FilterHook) {
        var actions: [ActionSpec] = []
        for entry in OptionSyntax.splitEntries(opts["action"] ?? "") {
            do {
                let (n, o) = try OptionSyntax.extract(entry)
                actions.append(ActionSpec(name: n, options: o))
            } catch {
                throw ConfigError("action '\(entry)': \(error.message)", at: opts.location("action"))
            }
        }
        let actionChain = actions.compactMap { $0.options["chain"] }.last
        do {
            return (actions, try FilterHook(chain: actionChain ?? opts["chain"] ?? ""))
        } catch {
            throw ConfigError(error.message, at: opts.location(actionChain != nil ? "action" : "chain"))
        }
    }

    /// fail2ban's boolean values: 1, on, true, yes (any case).
    public static func bool(_ text: String) -> Bool {
        ["1", "on", "true", "yes"].contains(text.trimmingWhitespace().lowercased())
    }
}

/// Shell-style globbing for `logpath` (`/var/log/nginx/*error.log`). The corresponding C function is `glob`.
public enum Glob {
    public static func expand(_ pattern: String) -> [String] {
        guard pattern.contains(where: { "*?[".contains($0) }) else {
            return FileManager.default.fileExists(atPath: pattern) ? [pattern] : []
        }
        var g = glob_t()
        defer { globfree(&g) }
        guard glob(pattern, 0, nil, &g) == 0 else { return [] }
        var result: [String] = []
        for i in 0..<Int(g.gl_pathc) {
            if let p = g.gl_pathv[i] {
                let path = String(cString: p)
                // A dangling symlink is skipped, as fail2ban does.
                if FileManager.default.fileExists(atPath: path) { result.append(path) }
            }
        }
        return result.sorted()
    }
}
