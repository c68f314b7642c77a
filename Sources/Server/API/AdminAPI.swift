import Dispatch
import Engine
import FoundationEssentials
import Glibc
import HTTP
import Platform

/// The admin API over a running daemon: routes, authorisation, and the JSON documents of openapi.yaml. Reads
/// are answered on the event loop (they take short locks); changes and reloads run on the daemon's control queue,
/// one at a time, after the change is committed to the store.
public final class AdminAPI: HTTPHandler {
    let daemon: Daemon
    private let access: Locked<AccessPolicy>
    let counters: HTTPCounters
    let log: Logger
    /// Bytes an event-feed subscriber may fall behind before it is dropped (`[api] events_buffer`).
    let streamBufferLimit: Int
    /// Seconds the kernel's set sizes (and the database's counts read with them) are kept for `/metrics`
    /// (`[api] metrics_kernel_interval`).
    let setSizesMaxAge: Double
    /// The last reading of them: when, for which jails, what.
    let kernelSizes = Locked<(at: Double, jails: [String], kernel: [String: [String: Int]]?, stored: [String: Int]?)?>(nil)

    public init(
        daemon: Daemon, access: AccessPolicy, counters: HTTPCounters, log: Logger, streamBufferLimit: Int = 1 << 20, setSizesMaxAge: Double = 60
    ) {
        self.daemon = daemon
        self.streamBufferLimit = streamBufferLimit
        self.setSizesMaxAge = setSizesMaxAge
        self.access = Locked(access)
        self.counters = counters
        self.log = log
    }

    public func handle(_ request: HTTPRequest, context: RequestContext) -> HandlerResult {
        // (Two Authorization, Content-Type or Host headers, or conflicting Content-Length ones, are refused by the
        // parser, which recognises them anyway.)
        let policy = access.withLock { $0 }
        // Without tokens, anything that reaches the TCP port may read: a page in a browser could too, through a
        // DNS name rebound to 127.0.0.1, unless the Host it names is a loopback one.
        if !context.isUnixSocket && !policy.hasTokens, let host = request.header("host"), !AdminAPI.isLoopbackHost(host) {
            return .response(
                .problem(
                    421,
                    "Host '\(host)' is not a loopback name or address: without tokens the API answers only requests for localhost, 127.0.0.1 or [::1] (set read_token_file to serve other names)"
                ))
        }
        let target: RequestTarget
        do { target = try RequestTarget(request.target) } catch {
            return .response(.problem(400, error.detail))
        }
        guard let route = Route(target.segments) else {
            return .response(
                .problem(404, "no such resource: \(target.segments.isEmpty ? "/" : "/" + target.segments.joined(separator: "/")) (see openapi.yaml)"))
        }
        guard route.methods.contains(request.method) else {
            return .response(
                .problem(
                    405, "\(request.method) is not allowed here; allowed: \(route.methods.joined(separator: ", "))",
                    headers: [("Allow", route.methods.joined(separator: ", "))]))
        }
        if !route.isPublic {
            switch policy.level(authorization: request.header("authorization"), context: context) {
            case .unauthenticated(let why):
                return .response(.problem(401, why, headers: [("WWW-Authenticate", "Bearer realm=\"portcullis\"")]))
            case .granted(let level):
                let mutation = request.method != "GET" && request.method != "HEAD"
                if mutation && level < .admin { return .response(.problem(403, policy.mutationRefusal(level))) }
            }
        }
        switch route {
        case .health: return .response(health())
        case .jails: return .response(jails())
        case .jail(let name): return .response(jail(name))
        case .bans: return .response(bans(target))
        case .ban(let text):
            let ip: IPNetwork
            do { ip = try AdminAPI.network(text) } catch { return .response(.problem(400, error.description)) }
            if request.method == "DELETE" { return .deferred { [self] in unbanEverywhere(ip, widen: !text.contains("/")) } }
            return .response(bans(of: ip))
        // Deferred: it reads the kernel's sets and counters and the database.
        case .metrics: return .deferred { [self] in metrics() }
        case .jailBans(let jail):
            return .deferred { [self] in ban(jail: jail, body: request.body, contentType: request.header("content-type")) }
        case .jailBan(let jail, let text):
            let ip: IPNetwork
            do { ip = try AdminAPI.network(text) } catch { return .response(.problem(400, error.description)) }
            return .deferred { [self] in unban(jail: jail, ip: ip, widen: !text.contains("/")) }
        case .reload:
            return .deferred { [self] in reload() }
        case .allowlist:
            if request.method == "POST" {
                return .deferred { [self] in addToAllowlist(body: request.body, contentType: request.header("content-type")) }
            }
            return .response(allowlist())
        case .allowlistEntry(let text):
            let ip: IPNetwork
            do { ip = try AdminAPI.network(text) } catch { return .response(.problem(400, error.description)) }
            return .deferred { [self] in removeFromAllowlist(ip, target: target) }
        case .jailFailures(let jail):
            return .response(failures(jail: jail, target: target))
        case .events:
            return events(request, target: target)
        case .cluster:
            return .response(cluster())
        }
    }

    // MARK: reads

    private func health() -> HTTPResponse {
        // Still 200 when degraded: the daemon runs and bans; restarting it (what a failed health check leads to)
        // would not bring the disk or a broken jail back.
        let problems = daemon.problems
        var o = JSONObject()
        o.string("status", problems.isEmpty ? "ok" : "degraded")
        o.string("version", PortcullisVersion.string)
        o.int("uptimeSeconds", Int(Clock.now() - daemon.startedAt))
        if !problems.isEmpty { o.strings("problems", problems) }
        return .json(200, o.text)
    }

    /// The fleet's link (`[cluster]`): `enabled` false when this node is on its own.
    private func cluster() -> HTTPResponse {
        var o = JSONObject()
        guard let link = daemon.cluster else {
            o.bool("enabled", false)
            return .json(200, o.text)
        }
        let s = link.status
        o.bool("enabled", true)
        o.string("node", link.node)
        o.bool("connected", s.connected)
        o.optionalString("since", s.since.map { RFC3339.format($0) })
        o.optionalString("error", s.error)
        if let id = s.lastID { o.int("lastId", Int(id)) } else { o.raw("lastId", "null") }
        o.int("queued", s.queued)
        o.int("sent", s.sent)
        o.int("received", s.received)
        o.int("applied", s.applied)
        o.int("skipped", s.skipped)
        o.int("dropped", s.dropped)
        o.string("share", link.settings.share.description)
        o.string("apply", link.settings.apply.description)
        let peers = s.peers.map { p -> String in
            var q = JSONObject()
            q.string("node", p.node)
            q.string("lastSeen", RFC3339.format(p.lastSeen))
            q.string("version", p.version)
            q.int("lastId", Int(p.lastID))
            return q.text
        }
        o.raw("peers", JSONObject.array(peers))
        return .json(200, o.text)
    }

    /// localhost, 127.0.0.0/8 or [::1], with or without a port.
    static func isLoopbackHost(_ value: String) -> Bool {
        var host = Substring(value.trimmingWhitespace().lowercased())
        if host.hasPrefix("[") {
            guard let end = host.firstIndex(of: "]") else { return false }
            let rest = host[host.index(after: end)...]
            guard rest.isEmpty || (rest.hasPrefix(":") && rest.dropFirst().allSatisfy(\.isNumber)) else { return false }
            return IPAddress(host[host.index(after: host.startIndex)..<end]) == .v6(0, 1)
        }
        if let colon = host.lastIndex(of: ":") {
            guard host[host.index(after: colon)...].allSatisfy(\.isNumber) else { return false }
            host = host[..<colon]
        }
        if host == "localhost" || host == "localhost." { return true }
        if case .v4(let a)? = IPAddress(host), a >> 24 == 127, host.split(separator: ".").count == 4 { return true }
        return false
    }

    func runtime(_ name: String) -> JailRuntime? { daemon.runningJail(named: name) }

    /// A jail's settings document changes only when a reload replaces the jail: made once per jail instance.
    private let settingsCache = Locked<[String: (runtime: JailRuntime, json: String)]>([:])

    private func settingsJSON(_ j: JailRuntime) -> String {
        if let cached = settingsCache.withLock({ $0[j.name] }), cached.runtime === j { return cached.json }
        let d = j.definition
        var settings = JSONObject()
        settings.int("maxretry", d.maxRetry)
        settings.double("findtime", d.findTime)
        settings.double("bantime", d.banTime.fail2banSeconds)
        settings.strings("ports", d.portSpec.split(whereSeparator: { $0 == "," || $0 == " " || $0 == "\t" || $0 == "\n" }).map(String.init))
        settings.string("protocol", d.protocol)
        settings.string("backend", j.usesPolling ? "polling" : "inotify")
        let json = settings.text
        settingsCache.withLock { $0[j.name] = (j, json) }
        return json
    }

    private func jails() -> HTTPResponse {
        let manager = daemon.banManager!
        let stats = manager.statistics
        let list = daemon.runningJails.map { j -> String in
            let c = j.counters
            var o = JSONObject()
            o.string("name", j.name)
            o.bool("enabled", true)
            o.int("currentlyFailed", c.currentlyFailed)
            o.int("totalFailed", c.totalFailed)
            o.int("currentlyBanned", manager.activeCount(jail: j.name))
            o.int("totalBanned", stats.bansTotal[j.name, default: 0])
            return o.text
        }
        var o = JSONObject()
        o.raw("jails", JSONObject.array(list))
        return .json(200, o.text)
    }

    /// Addresses listed in a jail's document at most (the oldest bans first); `/bans?jail=` pages through all.
    static let bannedIPsInJail = 1000

    private func jail(_ name: String) -> HTTPResponse {
        guard let j = runtime(name) else { return .problem(404, "no running jail named '\(name)'") }
        let manager = daemon.banManager!
        let c = j.counters
        var filter = JSONObject()
        filter.int("currentlyFailed", c.currentlyFailed)
        filter.int("totalFailed", c.totalFailed)
        filter.int("gatewayIgnored", c.gatewayIgnored)
        filter.strings("files", j.files)
        var actions = JSONObject()
        let banned = manager.bannedAddresses(jail: name)
        actions.int("currentlyBanned", banned.count)
        actions.int("totalBanned", manager.statistics.bansTotal[name, default: 0])
        // A status poll must stay small and fast with 100,000 bans: the first ones here, all of them in /bans.
        actions.strings("bannedIPs", banned.prefix(AdminAPI.bannedIPsInJail).map(\.description))
        actions.bool("bannedIPsComplete", banned.count <= AdminAPI.bannedIPsInJail)
        var o = JSONObject()
        o.string("name", name)
        o.raw("filter", filter.text)
        o.raw("actions", actions.text)
        o.raw("settings", settingsJSON(j))
        return .json(200, o.text)
    }

    static func banJSON(_ b: BanManager.ActiveBan) -> String {
        var o = JSONObject()
        o.string("ip", b.ip.description)
        o.string("jail", b.jail)
        o.string("bannedAt", RFC3339.format(b.bannedAt))
        o.optionalString("expiresAt", b.expiresAt.map(RFC3339.format))
        o.double("banTime", b.banTime.fail2banSeconds)
        o.int("banCount", b.banCount)
        o.int("failures", b.failures)
        return o.text
    }

    private func bans(_ target: RequestTarget) -> HTTPResponse {
        var limit = 100
        if let text = target.parameter("limit") {
            guard let n = Int(text), (1...1000).contains(n) else {
                return .problem(400, "limit must be a whole number from 1 to 1000, not '\(text)'")
            }
            limit = n
        }
        var jail: String? = nil
        if let j = target.parameter("jail"), !j.isEmpty {
            guard runtime(j) != nil else { return .problem(404, "no running jail named '\(j)'") }
            jail = j
        }
        let after = target.parameter("after")
        let page: BanManager.Page
        do { page = try daemon.banManager.page(cursor: after, limit: limit, jail: jail) } catch {
            return .problem(400, "after: '\(after ?? "")' is not a cursor this server returned (use the \"next\" value of the previous page)")
        }
        var o = JSONObject()
        o.raw("bans", JSONObject.array(page.bans.map(AdminAPI.banJSON)))
        o.optionalString("next", page.next)
        return .json(200, o.text)
    }

    /// The bans that cover an address or network: its own, and those of wider networks around it.
    private func bans(of ip: IPNetwork) -> HTTPResponse {
        let list = daemon.banManager.bans(of: ip)
        guard !list.isEmpty else { return .problem(404, "\(ip) is not banned in any jail, by itself or by a network") }
        var o = JSONObject()
        o.string("ip", ip.description)
        o.raw("bans", JSONObject.array(list.map(AdminAPI.banJSON)))
        return .json(200, o.text)
    }

    // MARK: changes (on the control queue)

    private func unbanEverywhere(_ ip: IPNetwork, widen: Bool) -> HTTPResponse {
        do {
            let lifted = try daemon.banManager.unbanEverywhere(ip, widen: widen)
            guard !lifted.isEmpty else { return .problem(404, notBanned(ip, in: nil)) }
            return .json(200, AdminAPI.unbanJSON(ip, lifted))
        } catch {
            log.error("API: unban of \(ip) failed: \(error)")
            return .problem(500, "the unban of \(ip) failed: \(error)")
        }
    }

    /// What an unban that found nothing says: where a wider network covers the address, which one to lift.
    private func notBanned(_ ip: IPNetwork, in jail: String?) -> String {
        let covering = daemon.banManager.bans(of: ip).filter { jail == nil || $0.jail == jail }
        let place = jail.map { "in \($0)" } ?? "in any jail"
        guard let c = covering.first else { return "\(ip) is not banned \(place)" }
        return "\(ip) is not banned by itself \(place); it is covered by the ban of \(c.ip) in \(c.jail) (lift that one)"
    }

    static func unbanJSON(_ ip: IPNetwork, _ lifted: [(jail: String, ip: IPNetwork)]) -> String {
        var o = JSONObject()
        o.string("ip", ip.description)
        o.strings("unbannedFrom", lifted.map(\.jail))
        o.raw("lifted", AdminAPI.liftedJSON(lifted))
        return o.text
    }

    private func unban(jail: String, ip: IPNetwork, widen: Bool) -> HTTPResponse {
        guard runtime(jail) != nil else { return .problem(404, "no running jail named '\(jail)'") }
        do {
            let manager = daemon.banManager!
            guard let target = manager.liftTarget(jail: jail, ip: ip, widen: widen), try manager.unban(jail: jail, ip: target) else {
                return .problem(404, notBanned(ip, in: jail))
            }
            return .json(200, AdminAPI.unbanJSON(ip, [(jail, target)]))
        } catch {
            log.error("API: unban of \(ip) in \(jail) failed: \(error)")
            return .problem(500, "the unban of \(ip) in \(jail) failed: \(error)")
        }
    }

    private func ban(jail: String, body: [UInt8], contentType: String?) -> HTTPResponse {
        guard let j = runtime(jail) else { return .problem(404, "no running jail named '\(jail)'") }
        if let problem = AdminAPI.jsonBodyProblem(contentType) { return problem }
        let request: BanRequest
        do { request = try BanRequest(body) } catch { return .problem(400, error.detail) }
        // A bare address in a jail with a ban prefix bans its network, as a failure there would.
        let ip = request.hasPrefix ? request.ip : j.definition.banTarget(request.ip.address)
        if let why = AdminAPI.refusal(ip, jail: j) { return .problem(409, why) }
        let manager = daemon.banManager!
        if let existing = manager.bans(of: ip).first(where: { $0.jail == jail && $0.ip == ip }) {
            return .json(200, AdminAPI.banJSON(existing))
        }
        do {
            let ban = try manager.banManually(jail: jail, ip: ip, banTime: request.banTime)
            return .json(201, AdminAPI.banJSON(ban), headers: [("Location", "/bans/\(ban.ip)")])
        } catch let error as BanManager.ManualError {
            if case .coveredBy(let b, _) = error {
                return .problem(409, "\(error) (until \(b.expiresAt.map(RFC3339.format) ?? "lifted"))")
            }
            if case .allowlisted = error { return .problem(409, error.description) }
            log.error("API: ban of \(ip) in \(jail) failed: \(error)")
            return .problem(500, "the ban of \(ip) in \(jail) failed: \(error)")
        } catch {
            log.error("API: ban of \(request.ip) in \(jail) failed: \(error)")
            return .problem(500, "the ban of \(request.ip) in \(jail) failed: \(error)")
        }
    }

    private func reload() -> HTTPResponse {
        // Everything in [api] but the token files is fixed when the listeners open.
        func fixedPart(_ a: APISettings) -> APISettings {
            var a = a
            a.readTokenFile = ""
            a.adminTokenFile = ""
            return a
        }
        let apiBefore = fixedPart(daemon.settings.api)
        let summary = daemon.reload()
        var errors = summary.errors
        if fixedPart(daemon.settings.api) != apiBefore {
            errors.append("[api] listeners and limits changed: they take effect at the next start (the token files were read again)")
        }
        errors += refreshAccess()
        var o = JSONObject()
        o.strings("jails", summary.jails)
        o.strings("errors", errors)
        return .json(200, o.text)
    }

    /// Reads the token files again (after a reload: tokens can be rotated without a restart). Returns problems;
    /// on a problem the tokens in force stay.
    func refreshAccess() -> [String] {
        do {
            let policy = try AccessPolicy.load(
                readTokenFile: daemon.settings.api.readTokenFile,
                adminTokenFile: daemon.settings.api.adminTokenFile)
            if policy.hasTokens || !access.withLock({ $0.hasTokens }) {
                access.withLock { $0 = policy }
                for w in policy.warnings { log.warning(w) }
                return []
            }
            return ["[api] the tokens were removed from the configuration; the old ones stay in force until a restart"]
        } catch {
            return ["\(error) (the previous tokens stay in force)"]
        }
    }

    /// Why a ban of `ip` by hand in jail `j` is refused (409), nil when it may be made.
    static func refusal(_ ip: IPNetwork, jail j: JailRuntime) -> String? {
        let jail = j.name
        if let why = ip.neverASource { return "\(ip) cannot be banned: \(why)" }
        if let own = [IPAddress.v4(0x7f00_0001), .v6(0, 1)].first(where: { ip.contains($0) }) {
            return ip.isSingleAddress
                ? "\(ip) is not banned: it is this host's own loopback address, from which its local clients (the CLI, health checks) come"
                : "\(ip) is not banned: it contains \(own), this host's own loopback address, from which its local clients (the CLI, health checks) come"
        }
        if let reason = j.definition.ignoreList.reason(covering: ip) {
            return "\(ip) is not banned in \(jail): it is ignored (\(reason))"
        }
        if j.definition.ignoreGateway, let gateway = Gateways.shared.current().sorted().first(where: { ip.contains($0) }) {
            return ip.isSingleAddress
                ? "\(ip) is not banned in \(jail): it is the default gateway of this network namespace, the address every client coming through a proxy (Docker's userland proxy) has; set ignoregateway = false in the jail to ban it anyway"
                : "\(ip) is not banned in \(jail): it contains \(gateway), the default gateway of this network namespace, the address every client coming through a proxy (Docker's userland proxy) has; set ignoregateway = false in the jail to ban it anyway"
        }
        return nil
    }

    // MARK: helpers

    /// 400 or 415 unless the body is declared application/json.
    static func jsonBodyProblem(_ contentType: String?) -> HTTPResponse? {
        guard let contentType else { return .problem(400, "Content-Type is missing: the body must be application/json") }
        if let type = contentType.split(separator: ";").first?.trimmingWhitespace().lowercased(), type != "application/json" {
            return .problem(415, "the body must be application/json, not \(type)")
        }
        return nil
    }

    /// An address or network from a path segment or a body: digits, hex, dots, colons and one slash only (no
    /// zone, no NUL tricks); see `IPNetwork(parsing:)`.
    static func network(_ text: String) throws(IPNetwork.ParseError) -> IPNetwork {
        guard !text.isEmpty, text.utf8.count <= 49,
            text.utf8.allSatisfy({ $0 == 46 || $0 == 47 || $0 == 58 || (48...57).contains($0) || (65...70).contains($0) || (97...102).contains($0) })
        else {
            throw .notAnAddress(text)
        }
        return try IPNetwork(parsing: text)
    }
}

/// The body of `POST /jails/{jail}/bans`: `{"ip": "203.0.113.7", "bantime": "1h"}` (or `"198.51.100.0/24"`).
struct BanRequest {
    let ip: IPNetwork
    /// The address was written with a prefix length (`/128` included): the jail's ban prefix does not widen it.
    let hasPrefix: Bool
    /// nil: the jail's own ban time (with bantime.increment).
    let banTime: BanTime?

    struct Invalid: Error {
        let detail: String
    }

    /// The members of a JSON object body, each one of `allowed`.
    static func object(_ body: [UInt8], allowed: [String], example: String) throws(Invalid) -> [String: StrictJSON.Value] {
        guard !body.isEmpty else { throw Invalid(detail: "the body is empty: send \(example)") }
        let document: StrictJSON.Value
        do { document = try StrictJSON.parse(body) } catch {
            throw Invalid(detail: "the body is not valid JSON: \(error)")
        }
        guard case .object(let members) = document else { throw Invalid(detail: "the body must be a JSON object") }
        var fields: [String: StrictJSON.Value] = [:]
        for (key, value) in members {
            guard allowed.contains(key) else { throw Invalid(detail: "unknown field '\(key)' (allowed: \(allowed.joined(separator: ", ")))") }
            fields[key] = value
        }
        return fields
    }

    init(_ body: [UInt8]) throws(Invalid) {
        let fields = try BanRequest.object(body, allowed: ["ip", "bantime"], example: "{\"ip\": \"203.0.113.7\"}")
        guard case .string(let text)? = fields["ip"] else {
            throw Invalid(detail: "ip: a string with an IPv4 or IPv6 address or network is required")
        }
        do { self.ip = try AdminAPI.network(text) } catch { throw Invalid(detail: "ip: \(error)") }
        hasPrefix = text.contains("/")
        switch fields["bantime"] {
        case nil:
            banTime = nil
        case .null?:
            throw Invalid(detail: "bantime: null is not a duration (leave bantime out for the jail's own)")
        case .string(let s)?:
            // A string of openapi.yaml's pattern is always a duration; one longer than the packet filter holds is
            // cut to that, as in the configuration.
            guard BanRequest.matchesPattern(s), let seconds = try? TimeExpression.Parser.unchecked(s) else {
                throw Invalid(detail: "bantime: '\(s)' is not a duration (seconds, or fail2ban's units such as 1h, 1d, 12w, 1h30m; -1 for permanent)")
            }
            banTime = seconds < 0 ? .permanent : .seconds(min(seconds, BanRequest.maxBanTime))
        case .number(let n)?:
            banTime = try BanRequest.checked(n)
        default:
            throw Invalid(detail: "bantime: a duration such as \"1h\" or a number of seconds is expected")
        }
    }

    /// The string form openapi.yaml allows (its `pattern`, kept the same): -1, or numbers each with an optional
    /// unit (s m h d w mo y), written together or with spaces: "3600", "1h", "1h30m", "1d 12h".
    static func matchesPattern(_ s: String) -> Bool {
        if s == "-1" { return true }
        let units = ["mo", "s", "m", "h", "d", "w", "y"]
        var rest = Substring(s)
        var terms = 0
        var hadUnit = false
        while !rest.isEmpty {
            if terms > 0 {
                // After a bare number, a space must come before the next one ("1 2"; "12" is one number).
                let spaces = rest.prefix { $0 == " " }.count
                guard hadUnit || spaces > 0 else { return false }
                rest = rest.dropFirst(spaces)
            }
            let digits = rest.prefix { $0.isASCII && $0.isNumber }
            guard !digits.isEmpty, digits.count <= 12, digits.first != "0" else { return false }
            rest = rest.dropFirst(digits.count)
            hadUnit = false
            if let u = units.first(where: { rest.hasPrefix($0) }) { rest = rest.dropFirst(u.count); hadUnit = true }
            terms += 1
            guard terms <= 8 else { return false }
        }
        return terms > 0
    }

    /// What nftables holds (openapi.yaml says the same).
    static let maxBanTime: Double = BanTimePolicy.longest

    private static func checked(_ seconds: Double) throws(Invalid) -> BanTime {
        guard seconds.isFinite, seconds < 0 ? seconds == -1 : (seconds >= 1 && seconds <= BanRequest.maxBanTime) else {
            throw Invalid(detail: "bantime: must be -1 (permanent) or from 1 second to 584 years (18417024000 s, the most nftables holds)")
        }
        return BanTime(fail2banSeconds: seconds)
    }
}
