import ArgumentParser
import Dispatch
import Engine
import FoundationEssentials
import Glibc
import Platform
import Server

struct ServeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Run the daemon: watch the logs of every enabled jail and ban offenders.",
        discussion: """
            Runs in the foreground (no forking; fine as PID 1 in a container) and logs to stderr. \
            SIGTERM/SIGINT stop (removing the nftables table; bans return from the database at the next start), \
            SIGHUP reloads the configuration. Exits with status 75 when its network namespace is orphaned (a \
            sidecar whose container restarted: see orphanexit in portcullis.conf), for the restart policy to \
            start it again in the current one.
            """
    )

    @OptionGroup var configOptions: ConfigOptions

    func run() throws {
        Signals.block()
        Allocator.tuneForDaemon()
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
        // Reloads, periodic work and the API's changes run here one at a time: the daemon's state has one writer.
        let control = DispatchQueue(label: "portcullis.control")
        let api: AdminServer
        do {
            api = try AdminServer(daemon: daemon, settings: daemon.settings.api, control: control, log: log)
        } catch {
            log.critical("\(error)")
            daemon.stop()
            throw ExitCode(1)
        }
        var lastPeriodic = Clock.now()
        // What the namespace has at start (a loss within the first second must count).
        var namespace = control.sync { daemon.settings.orphanExit }.map { NamespaceWatch(grace: $0) }
        _ = namespace?.check(now: lastPeriodic)
        while true {
            guard let s = Signals.wait(timeout: 1) else {
                let now = Clock.now()
                // orphanexit as the last (re)load set it (SIGHUP or the API's reload, on the control queue).
                let grace = control.sync { daemon.settings.orphanExit }
                if grace != namespace?.grace {
                    namespace = grace.map { NamespaceWatch(grace: $0) }
                }
                if let why = namespace?.check(now: now) {
                    log.critical(
                        "\(why). Exiting with status 75 so that the restart policy starts Portcullis again in the current namespace; the bans come back from the database (orphanexit = no turns this off)"
                    )
                    api.stop()
                    control.sync { daemon.stop() }
                    throw ExitCode(75)
                }
                if now - lastPeriodic >= 5 {
                    lastPeriodic = now
                    control.sync { daemon.periodic() }
                }
                continue
            }
            if s == SIGHUP {
                log.notice("SIGHUP: reloading the configuration")
                control.sync {
                    _ = daemon.reload()
                    api.refreshAccess(log: log)
                }
                continue
            }
            log.notice("\(Signals.name(s)): stopping")
            // Requests in flight finish first (a ban being committed is answered), then the jails stop.
            api.stop()
            control.sync { daemon.stop() }
            log.notice("Portcullis stopped")
            return
        }
    }
}
