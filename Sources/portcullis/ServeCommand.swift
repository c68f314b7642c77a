import ArgumentParser
import Engine
import Foundation
import Glibc

struct ServeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Run the daemon: watch the logs of every enabled jail and ban offenders.",
        discussion: """
            Runs in the foreground (no forking; fine as PID 1 in a container) and logs to stderr. \
            SIGTERM/SIGINT stop (removing the nftables table; bans return from the database at the next start), \
            SIGHUP reloads the configuration.
            """
    )

    @OptionGroup var configOptions: ConfigOptions

    func run() throws {
        Signals.block()
        let log = Logger(level: .info)
        let daemon = Daemon(configPath: configOptions.config, log: log)
        do {
            try daemon.start()
        } catch {
            // One clear line (the EPERM case says what capability is missing and how to grant it).
            log.critical("\(error)")
            daemon.stop()
            throw ExitCode(1)
        }
        while true {
            guard let s = Signals.wait(timeout: 5) else {
                daemon.periodic()
                continue
            }
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
