import Foundation
import Synchronization

/// The long-running part of Portcullis: every enabled jail watching its logs, ban decisions going to the
/// jail's firewall backend.
public final class Daemon: @unchecked Sendable {
    // @unchecked: `jails` is only changed by start/stop/reload, which the main thread calls one at a time;
    // readers on other threads go through `snapshot`, a Mutex.
    public let configPath: String
    public let log: Logger
    private var jails: [String: JailRuntime] = [:]
    private let snapshot = Mutex<[String: JailRuntime]>([:])
    private let firewallFor: (JailDefinition) throws -> any Firewall
    /// Bans in force, so that an address is not banned twice.
    private let activeBans = ActiveBans()
    public private(set) var settings = Settings()

    public struct StartError: Error, CustomStringConvertible {
        public let message: String
        public var description: String { message }
    }

    /// - Parameter firewallFor: the backend for a jail's `banaction` (thrown errors leave the jail out).
    public init(configPath: String, log: Logger, firewallFor: @escaping (JailDefinition) throws -> any Firewall) {
        self.configPath = configPath
        self.log = log
        self.firewallFor = firewallFor
    }

    public var runningJails: [JailRuntime] { snapshot.withLock { Array($0.values) }.sorted { $0.name < $1.name } }

    /// Reads the configuration and starts every enabled jail that loads. Throws when none can run.
    public func start() throws {
        let config = LoadedConfig.load(configPath)
        settings = config.settings
        log.setLevel(config.settings.logLevel)
        for d in config.diagnostics { report(d) }
        for definition in config.jails { startJail(definition) }
        guard !jails.isEmpty else {
            throw StartError(message: "no jail could start (enable one with \"enabled = true\" in jail.d/*.local; `portcullis check` shows the problems)")
        }
        log.notice("Portcullis \(PortcullisVersion.string) started with \(jails.count) jail(s): \(jails.keys.sorted().joined(separator: ", "))")
    }

    private func report(_ d: Diagnostic) {
        switch d.severity {
        case .error: log.error(d.description)
        case .warning: log.warning(d.description)
        case .note: log.info(d.description)
        }
    }

    private func startJail(_ definition: JailDefinition) {
        do {
            let firewall = try firewallFor(definition)
            let logger = log
            let banTime = definition.banTime
            let active = activeBans
            let runtime = try JailRuntime(definition, log: log) { decision in
                if !active.claim(jail: decision.jail, ip: decision.ip, banTime: banTime) {
                    logger.notice("[\(decision.jail)] \(decision.ip) already banned")
                    return
                }
                do {
                    try firewall.ban(decision, banTime: banTime)
                } catch {
                    active.release(jail: decision.jail, ip: decision.ip)
                    logger.error("[\(decision.jail)] ban of \(decision.ip) failed: \(error)")
                }
            }
            runtime.start()
            jails[definition.name] = runtime
            snapshot.withLock { $0[definition.name] = runtime }
            log.info("[\(definition.name)] Jail started: \(definition.logPaths.map(\.pattern).joined(separator: ", ")), maxretry \(definition.maxRetry), findtime \(Duration.describe(definition.findTime)), bantime \(Duration.describe(definition.banTime)), \(definition.backend.rawValue)")
        } catch {
            log.error("[\(definition.name)] jail not started: \(error)")
        }
    }

    /// Stops every jail (their threads finish the line at hand).
    public func stop() {
        for (name, runtime) in jails {
            runtime.stop()
            log.info("[\(name)] Jail stopped")
        }
        jails = [:]
        snapshot.withLock { $0 = [:] }
    }

    /// Re-reads the configuration: jails that disappeared stop, new ones start, changed ones restart.
    public func reload() {
        let config = LoadedConfig.load(configPath)
        for d in config.diagnostics { report(d) }
        log.setLevel(config.settings.logLevel)
        settings = config.settings
        let wanted = Dictionary(uniqueKeysWithValues: config.jails.map { ($0.name, $0) })
        for (name, runtime) in jails where wanted[name] == nil {
            runtime.stop()
            jails[name] = nil
            snapshot.withLock { $0[name] = nil }
            log.info("[\(name)] Jail stopped (no longer enabled)")
        }
        for (name, definition) in wanted {
            if let running = jails[name] {
                running.stop()
                jails[name] = nil
                snapshot.withLock { $0[name] = nil }
            }
            startJail(definition)
        }
        log.notice("Configuration reloaded: \(jails.count) jail(s)")
    }
}

/// The bans in force per jail and address (end time, nil for permanent).
final class ActiveBans: Sendable {
    private let bans = Mutex<[String: Double?]>([:])

    /// Records a ban unless one is in force; returns whether the caller should ban.
    func claim(jail: String, ip: IPAddress, banTime: Double, now: Double = Clock.now()) -> Bool {
        let key = "\(jail) \(ip)"
        return bans.withLock { bans in
            if let end = bans[key], end == nil || end! > now { return false }
            bans[key] = banTime < 0 ? .some(nil) : now + banTime
            return true
        }
    }

    func release(jail: String, ip: IPAddress) {
        bans.withLock { _ = $0.removeValue(forKey: "\(jail) \(ip)") }
    }
}
