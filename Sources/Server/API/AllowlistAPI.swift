import Engine
import HTTP
import Platform

/// `/allowlist` and `/jails/{jail}/failures`: the runtime allowlist (changes on the control queue, like bans) and
/// who is being counted now.
extension AdminAPI {
    static func allowlistJSON(_ e: AllowlistEntry) -> String {
        var o = JSONObject()
        o.string("ip", e.ip.description)
        o.optionalString("jail", e.jail)
        o.string("addedAt", RFC3339.format(e.addedAt))
        o.optionalString("expiresAt", e.expiresAt.map(RFC3339.format))
        o.string("comment", e.comment)
        return o.text
    }

    static func liftedJSON(_ lifted: [(jail: String, ip: IPNetwork)]) -> String {
        JSONObject.array(
            lifted.map { l in
                var e = JSONObject()
                e.string("jail", l.jail)
                e.string("ip", l.ip.description)
                return e.text
            })
    }

    /// The runtime entries, and beside them (read-only) what the configuration ignores: each running jail's
    /// `ignoreip` entries and, with `ignoreself`, this host's addresses.
    func allowlist() -> HTTPResponse {
        guard let list = daemon.banManager.allowlist else { return .problem(404, "the allowlist is not available") }
        var configured: [String] = []
        for j in daemon.runningJails {
            func add(_ ip: String, _ source: String) {
                var o = JSONObject()
                o.string("ip", ip)
                o.string("jail", j.name)
                o.string("source", source)
                configured.append(o.text)
            }
            for n in j.definition.ignoreList.entries { add(n.description, "ignoreip") }
            if j.definition.ignoreList.ignoreSelf { for a in SelfAddresses.current.sorted() { add(a.description, "ignoreself") } }
        }
        var o = JSONObject()
        o.raw("entries", JSONObject.array(list.list().map(AdminAPI.allowlistJSON)))
        o.raw("configured", JSONObject.array(configured))
        return .json(200, o.text)
    }

    /// Adds (or replaces) an entry, then lifts the bans it overlaps and says which.
    func addToAllowlist(body: [UInt8], contentType: String?) -> HTTPResponse {
        if let problem = AdminAPI.jsonBodyProblem(contentType) { return problem }
        let request: AllowlistRequest
        do { request = try AllowlistRequest(body) } catch { return .problem(400, error.detail) }
        if let jail = request.jail, runtime(jail) == nil { return .problem(404, "no running jail named '\(jail)'") }
        let manager = daemon.banManager!
        guard let list = manager.allowlist else { return .problem(404, "the allowlist is not available") }
        let now = Clock.now()
        let replacing = list.list(now: now).contains { $0.ip == request.ip && $0.jail == request.jail }
        let entry = AllowlistEntry(
            ip: request.ip, jail: request.jail, addedAt: now, expiresAt: request.duration.map { now + $0 }, comment: request.comment)
        do { try list.add(entry) } catch {
            return .problem(500, "the allowlist entry could not be stored: \(error)")
        }
        log.notice("Allowlist: \(entry.description) added\(entry.comment.isEmpty ? "" : ": \(entry.comment)")")
        var lifted: [(jail: String, ip: IPNetwork)] = []
        var failures: [String] = []
        for ban in manager.bans(overlapping: entry.ip, jail: entry.jail) {
            do {
                if try manager.unban(jail: ban.jail, ip: ban.ip, reason: "allowlisted by \(entry.ip)", kind: .allowlist) { lifted.append((ban.jail, ban.ip)) }
            } catch {
                failures.append("\(ban.ip) in \(ban.jail): \(error)")
            }
        }
        if !failures.isEmpty {
            return .problem(500, "the entry is stored, but lifting the bans it covers failed: \(failures.joined(separator: "; "))")
        }
        var o = JSONObject()
        o.raw("entry", AdminAPI.allowlistJSON(entry))
        o.raw("lifted", AdminAPI.liftedJSON(lifted))
        return .json(replacing ? 200 : 201, o.text, headers: [("Location", "/allowlist/\(entry.ip)")])
    }

    /// Removes the entries of a network (`?jail=` one jail's; `?jail=` empty: the one for every jail).
    func removeFromAllowlist(_ ip: IPNetwork, target: RequestTarget) -> HTTPResponse {
        guard let list = daemon.banManager.allowlist else { return .problem(404, "the allowlist is not available") }
        let scope = target.parameter("jail").map { Allowlist.Scope.entry(jail: $0.isEmpty ? nil : $0) } ?? .all
        let removed: [AllowlistEntry]
        do { removed = try list.remove(ip, scope: scope) } catch {
            return .problem(500, "the allowlist entry could not be removed: \(error)")
        }
        guard !removed.isEmpty else {
            return .problem(404, "\(ip) is not in the allowlist\(scope.description)")
        }
        for e in removed { log.notice("Allowlist: \(e.description) removed") }
        var o = JSONObject()
        o.raw("removed", JSONObject.array(removed.map(AdminAPI.allowlistJSON)))
        return .json(200, o.text)
    }

    /// Who the jail is counting now, the latest failing first.
    func failures(jail name: String, target: RequestTarget) -> HTTPResponse {
        guard let j = runtime(name) else { return .problem(404, "no running jail named '\(name)'") }
        var limit = 100
        if let text = target.parameter("limit") {
            guard let n = Int(text), (1...1000).contains(n) else { return .problem(400, "limit must be a whole number from 1 to 1000, not '\(text)'") }
            limit = n
        }
        var after: UInt64? = nil
        if let text = target.parameter("after") {
            guard let g = AdminAPI.failureCursor(text) else {
                return .problem(400, "after: '\(text)' is not a cursor this server returned (use the \"next\" value of the previous page)")
            }
            after = g
        }
        let (list, next) = j.failing(limit: limit, after: after)
        let rows = list.map { f -> String in
            var o = JSONObject()
            o.string("ip", f.ip.description)
            o.int("failures", f.failures)
            o.string("firstFailure", RFC3339.format(f.firstFailure))
            o.string("lastFailure", RFC3339.format(f.lastFailure))
            o.strings("users", f.users)
            return o.text
        }
        var o = JSONObject()
        o.string("jail", name)
        o.int("maxretry", j.definition.maxRetry)
        o.raw("failures", JSONObject.array(rows))
        o.optionalString("next", next.map { "f" + String($0, radix: 36) })
        return .json(200, o.text)
    }

    /// Exactly what `failures` writes as `next` (openapi.yaml: ^f[0-9a-z]{1,12}$; twelve base-36 digits always fit
    /// 64 bits, thirteen may not, and a generation needs 4.7 × 10^18 failures to reach them).
    static func failureCursor(_ text: String) -> UInt64? {
        let digits = text.utf8.dropFirst()
        guard text.utf8.first == UInt8(ascii: "f"), (1...12).contains(digits.count),
            digits.allSatisfy({ (48...57).contains($0) || (97...122).contains($0) })
        else { return nil }
        return UInt64(text.dropFirst(), radix: 36)
    }
}

/// The body of `POST /allowlist`: `{"ip": "2001:db8::/64", "jail": null, "expires": "7d", "comment": "office"}`.
struct AllowlistRequest {
    let ip: IPNetwork
    let jail: String?
    /// Seconds from now; nil: until removed.
    let duration: Double?
    let comment: String

    static let fields = ["ip", "jail", "expires", "comment"]
    static let longestComment = 200

    init(_ body: [UInt8]) throws(BanRequest.Invalid) {
        let members = try BanRequest.object(body, allowed: AllowlistRequest.fields, example: "{\"ip\": \"203.0.113.7\", \"expires\": \"7d\"}")
        guard case .string(let text)? = members["ip"] else {
            throw .init(detail: "ip: a string with an IPv4 or IPv6 address or network is required")
        }
        do { ip = try AdminAPI.network(text) } catch { throw .init(detail: "ip: \(error)") }
        switch members["jail"] {
        case nil, .null?: jail = nil
        case .string(let j)? where !j.isEmpty: jail = j
        default: throw .init(detail: "jail: a jail name, or null for every jail")
        }
        switch members["expires"] {
        case nil, .null?:
            duration = nil
        case .string(let s)?:
            guard s != "-1", BanRequest.matchesPattern(s), let seconds = try? TimeExpression.Parser.unchecked(s), seconds > 0 else {
                throw .init(detail: "expires: '\(s)' is not a duration (seconds, or fail2ban's units such as 1h, 7d, 12w; null: until removed)")
            }
            duration = min(seconds, BanRequest.maxBanTime)
        case .number(let n)?:
            guard n.isFinite, n >= 1, n <= BanRequest.maxBanTime else {
                throw .init(detail: "expires: a number of seconds from 1 to 18417024000, a duration such as \"7d\", or null")
            }
            duration = n
        default:
            throw .init(detail: "expires: a duration such as \"7d\", a number of seconds, or null")
        }
        switch members["comment"] {
        case nil, .null?: comment = ""
        // Counted in code points, as openapi.yaml's maxLength counts.
        case .string(let c)?
        where c.unicodeScalars.count <= AllowlistRequest.longestComment && !c.unicodeScalars.contains(where: { $0.value < 32 || $0.value == 127 }):
            comment = c
        default: throw .init(detail: "comment: a string of at most \(AllowlistRequest.longestComment) characters without control characters")
        }
    }
}
