import ArgumentParser
import Engine
import FoundationEssentials
import Glibc

struct CheckCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "check",
        abstract: "Validate the configuration and show what each jail will do.",
        discussion: "Exits 1 when there are errors. Warns when none of a jail's ports is one anything listens on."
    )

    @OptionGroup var configOptions: ConfigOptions

    func run() throws {
        let config = LoadedConfig.load(configOptions.config)
        let listening = ListeningPorts.current()
        var lines: [String] = []
        var extra: [Diagnostic] = []
        lines.append("Configuration: \(configOptions.config)" + (config.settings.source.map { " (settings from \($0).conf)" } ?? ""))
        lines.append("Database:      \(config.settings.dbFile)")
        lines.append("Jails enabled: \(config.jails.count)")
        for jail in config.jails {
            lines.append("")
            lines.append("[\(jail.name)]")
            lines.append(
                "  filter:    \(jail.filterSpec) — \(jail.filter.failregex.count) failregex, \(jail.filter.ignoreregex.count) ignoreregex (\(jail.filter.files.first ?? ""))"
            )
            let files = jail.files
            for p in jail.logPaths {
                let found = Glob.expand(p.pattern)
                lines.append(
                    "  logpath:   \(p.pattern)"
                        + (found.isEmpty ? "  (not found yet; followed when it appears)" : found == [p.pattern] ? "" : "  → \(found.joined(separator: ", "))"))
            }
            if files.isEmpty {
                extra.append(
                    Diagnostic(
                        .warning, "no log file exists yet for \(jail.logPaths.map(\.pattern).joined(separator: ", "))", at: jail.location, jail: jail.name))
            }
            lines.append("  backend:   \(jail.backend.rawValue)")
            lines.append(
                "  ban:       after \(jail.maxRetry) failure\(jail.maxRetry == 1 ? "" : "s") within \(TimeExpression.describe(jail.findTime)), for \(jail.banTime.isPermanent ? "ever" : jail.banTime.description)"
                    + (jail.increment.enabled ? " (bantime.increment on)" : ""))
            if jail.banPrefix4 < 32 || jail.banPrefix6 < 128 {
                lines.append(
                    "  counted:   per network: IPv4 /\(jail.banPrefix4), IPv6 /\(jail.banPrefix6) (banprefix4, banprefix6; the ban covers the network)")
            }
            let portText = jail.ports.map { $0.name == $0.description ? $0.name : "\($0.name)=\($0.description)" }.joined(separator: ", ")
            lines.append("  ports:     \(portText) (\(jail.protocol))")
            let ignore = jail.ignoreList.entries.map(\.description)
            lines.append(
                "  ignoreip:  \(ignore.isEmpty ? "-" : ignore.joined(separator: " "))" + (jail.ignoreList.ignoreSelf ? " + this host (ignoreself)" : ""))
            let gateways = Gateways.shared.current().sorted().map(\.description)
            if gateways.isEmpty {
                lines.append("  gateway:   none here (no default route)")
            } else {
                let list = gateways.joined(separator: ", ")
                lines.append(
                    jail.ignoreGateway
                        ? "  gateway:   \(list): failures from it are not counted (ignoregateway; it is the address of every client behind a proxy)"
                        : "  gateway:   \(list): banned like any address (ignoregateway = false)")
            }
            let dry = jail.dryRun
            let (rules, warning) = JailRules.forJail(jail)
            if dry {
                lines.append("  banaction: dry-run (ban decisions are logged, the packet filter is not touched)")
            } else {
                let what = rules.drop ? "drop" : (rules.l4proto == 6 ? "reject with tcp reset" : "reject")
                let scope =
                    rules.ports.isEmpty
                    ? "all ports"
                    : "ports \(rules.ports.map { $0.lowerBound == $0.upperBound ? "\($0.lowerBound)" : "\($0.lowerBound)-\($0.upperBound)" }.joined(separator: ","))"
                lines.append(
                    "  banaction: \(jail.banAction) → nftables: \(jail.protocol) \(scope), sets \(rules.v4Set)/\(rules.v6Set) (networks \(rules.v4NetworkSet)/\(rules.v6NetworkSet)), \(what)"
                )
                lines.append("  filters:   chain \(rules.hook.chainName) of table inet \(NftablesFirewall.table): \(rules.hook.description)")
                if let warning { extra.append(Diagnostic(.warning, warning, at: jail.location, jail: jail.name)) }
                for a in jail.actions where !a.name.isEmpty && a.name.lowercased() != jail.banAction.lowercased() {
                    extra.append(Diagnostic(.warning, "action '\(a.name)' is not supported by Portcullis and is ignored", at: jail.location, jail: jail.name))
                }
            }
            // Regexes whose backtracking can explode: PCRE2 would give up on some lines (they count as not matched).
            for (kind, list) in [("failregex", jail.filter.failregex), ("ignoreregex", jail.filter.ignoreregex)] {
                for (n, regex) in list.enumerated() {
                    if let part = QuantifierCheck.nestedRepetition(in: regex) {
                        extra.append(
                            Diagnostic(
                                .warning,
                                "\(kind) \(n + 1) repeats a repetition (\(part)): on some lines its backtracking may exceed PCRE2's limits, and such a line counts as not matched (the log then says so)",
                                at: jail.filter.locations[kind] ?? jail.location, jail: jail.name))
                    }
                }
            }
            if jail.increment.enabled {
                do { _ = try BanTimePolicy(base: jail.banTime, increment: jail.increment) } catch {
                    extra.append(Diagnostic(.error, error.message, at: jail.location, jail: jail.name))
                }
            }
            let everything = jail.ports.count == 1 && jail.ports[0].first == 0 && jail.ports[0].last == 65535
            // Only the input hook guards what listens here; forward and prerouting guard other hosts' ports.
            if !everything && jail.protocol != "all" && jail.hook == .input {
                let open = jail.protocol == "udp" ? listening.udp : listening.tcp
                if !open.isEmpty && !open.contains(where: { p in jail.ports.contains { $0.contains(p) } }) {
                    let listeningList = open.sorted().prefix(20).map(String.init).joined(separator: ", ")
                    extra.append(
                        Diagnostic(
                            .warning,
                            "none of the ports \(portText) is one anything listens on here (listening: \(listeningList)); a ban would not block the service",
                            at: jail.location, jail: jail.name))
                }
            }
        }
        print(lines.joined(separator: "\n"))
        let all = config.diagnostics + extra
        if !all.isEmpty {
            print("")
            for d in all { print(d.description) }
        }
        let errors = all.filter { $0.severity == .error }.count
        let warnings = all.filter { $0.severity == .warning }.count
        print("")
        print(errors == 0 ? "OK: \(config.jails.count) jail(s), \(warnings) warning(s)" : "FAILED: \(errors) error(s), \(warnings) warning(s)")
        if errors > 0 { throw ExitCode(1) }
    }
}
