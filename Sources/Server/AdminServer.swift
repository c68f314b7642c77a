import Dispatch
import Engine
import FoundationEssentials
import Glibc
import HTTP
import Platform

/// The admin API as the daemon runs it: listeners from `[api]`, the access policy from the token files, the HTTP
/// server on its event loop, and changes run on the daemon's control queue.
public final class AdminServer: Sendable {
    public let server: HTTPServer
    /// As bound (the port the kernel chose for port 0).
    public var addresses: [ListenAddress] { server.addresses }
    private let api: AdminAPI

    public struct SetupError: Error, CustomStringConvertible {
        public let description: String
    }

    /// Checks the settings and opens every listener; throws with a message naming the setting at fault.
    public init(daemon: Daemon, settings: APISettings, control: DispatchQueue, log: Logger) throws {
        var addresses: [ListenAddress] = []
        do {
            for text in settings.listen { addresses.append(try ListenAddress.tcp(text)) }
        } catch {
            throw SetupError(description: "[api] \(error)")
        }
        let access: AccessPolicy
        do {
            access = try AccessPolicy.load(readTokenFile: settings.readTokenFile, adminTokenFile: settings.adminTokenFile)
            try access.check(addresses)
        } catch {
            throw SetupError(description: error.description)
        }
        for w in access.warnings { log.warning(w) }
        if !settings.socket.isEmpty { addresses.append(ListenAddress(.unix(path: settings.socket))) }
        var options = HTTPServerOptions()
        options.maxConnections = settings.maxConnections
        options.maxConnectionsPerClient = settings.maxConnectionsPerClient
        options.idleTimeout = settings.idleTimeout
        options.requestTimeout = settings.requestTimeout
        options.streamKeepAlive = settings.eventsKeepAlive
        if settings.threads > 0 { options.threads = settings.threads }
        let counters = HTTPCounters()
        api = AdminAPI(
            daemon: daemon, access: access, counters: counters, log: log, streamBufferLimit: settings.eventsBuffer,
            setSizesMaxAge: settings.metricsKernelInterval)
        server = HTTPServer(options: options, handler: api, counters: counters, worker: control, log: log)
        guard !addresses.isEmpty else {
            log.warning("[api] neither listen nor socket is set: the API is off")
            return
        }
        // A listener that cannot open throws its own error (the address, the step, the errno as data).
        try server.start(addresses)
        let auth = access.hasTokens ? "bearer tokens" : "read-only over TCP (no tokens configured)"
        log.notice("API listening on \(server.addresses.map(\.description).joined(separator: ", ")); \(auth)")
    }

    /// After a reload by SIGHUP: the token files are read again. Call on the control queue.
    public func refreshAccess(log: Logger) {
        for problem in api.refreshAccess() { log.error(problem) }
    }

    /// Stops accepting and finishes the requests in flight.
    public func stop() { server.stop() }
}
