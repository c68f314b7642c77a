import ArgumentParser
import Engine
import Foundation
import Glibc

struct ServeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Run the daemon: watch the logs of every enabled jail and ban offenders.",
        discussion: "Runs in the foreground (no forking; fine as PID 1 in a container). SIGTERM/SIGINT stop, SIGHUP reloads."
    )

    @OptionGroup var configOptions: ConfigOptions

    func run() throws {
        Signals.block()
        let log = Logger(level: .info)
        let daemon = Daemon(configPath: configOptions.config, log: log) { jail in
            try FirewallChoice.firewall(for: jail, log: log)
        }
        do {
            try daemon.start()
        } catch {
            log.critical("\(error)")
            throw ExitCode(1)
        }
        while true {
            guard let s = Signals.wait(timeout: 3600) else { continue }
            if s == SIGHUP {
                log.notice("SIGHUP: reloading the configuration")
                daemon.reload()
                continue
            }
            log.notice("\(Signals.name(s)): stopping")
            daemon.stop()
            log.notice("Portcullis stopped")
            return
        }
    }
}

/// Which packet-filter backend a jail's `banaction` selects.
enum FirewallChoice {
    struct Unsupported: Error, CustomStringConvertible {
        let description: String
    }

    static func firewall(for jail: JailDefinition, log: Logger) throws -> any Firewall {
        switch jail.banAction.lowercased() {
        case "dry-run", "dryrun":
            return DryRunFirewall(log: log)
        default:
            throw Unsupported(description: "banaction = \(jail.banAction): this build has no nftables backend yet; set banaction = dry-run to count failures and log ban decisions without touching the packet filter")
        }
    }
}
