import Platform

/// Something that happened, as the event feed (`GET /events`) tells it.
public struct FeedEvent: Sendable {
    public enum Kind: String, Sendable, CaseIterable {
        case ban, unban, failure, reload
    }

    /// Why a ban ended (the `reason` field of an unban event).
    public enum UnbanReason: String, Sendable {
        /// Its ban time was over.
        case expired
        /// Lifted through the API or the CLI.
        case request
        /// A reload stopped its jail: the packet filter no longer holds it (the store keeps it, and it is back if
        /// the jail comes back).
        case reload
        /// An allowlist entry that reaches it was added.
        case allowlist
        /// A wider ban of the same jail took its place.
        case network
        /// Lifted on another node of the fleet (`[cluster]`).
        case cluster
    }

    public enum Detail: Sendable {
        /// `matches`: the log lines that led to it (at most the jail's maxmatches); sent by webhooks, not on the feed.
        /// `origin`: the node of the fleet that made it, nil for a ban of this node.
        case ban(bannedAt: Double, banTime: BanTime, banCount: Int, failures: Int, reason: String, matches: [String], origin: String?)
        case unban(UnbanReason, text: String)
        /// `failures`: counted so far within findtime, this one included.
        case failure(failures: Int, user: String?)
        case reload(jails: [String], errors: [String])
    }

    /// Unique and increasing within a run of the daemon (see `EventFeed.base`).
    public let id: UInt64
    public let time: Double
    /// nil for a reload.
    public let jail: String?
    public let ip: IPNetwork?
    public let detail: Detail

    public var kind: Kind {
        switch detail {
        case .ban: .ban
        case .unban: .unban
        case .failure: .failure
        case .reload: .reload
        }
    }

    /// The event's JSON object (the `data:` line); `extra` members come first (a webhook's `host`), and `matches`
    /// only when asked for.
    public func json(matches withMatches: Bool = false, extra: [(String, String)] = []) -> String {
        var o = JSONObject()
        for (k, v) in extra { o.string(k, v) }
        o.string("type", kind.rawValue)
        o.string("time", RFC3339.format(time))
        if let jail { o.string("jail", jail) }
        if let ip { o.string("ip", ip.description) }
        switch detail {
        case .ban(let bannedAt, let banTime, let banCount, let failures, let reason, let matches, let origin):
            o.string("bannedAt", RFC3339.format(bannedAt))
            o.optionalString("expiresAt", banTime.isPermanent ? nil : RFC3339.format(bannedAt + banTime.fail2banSeconds))
            o.double("banTime", banTime.fail2banSeconds)
            o.int("banCount", banCount)
            o.int("failures", failures)
            o.string("reason", reason)
            if let origin { o.string("origin", origin) }
            if withMatches { o.strings("matches", matches) }
        case .unban(let reason, let text):
            o.string("reason", reason.rawValue)
            o.string("detail", text)
        case .failure(let failures, let user):
            o.int("failures", failures)
            o.optionalString("user", user)
        case .reload(let jails, let errors):
            o.strings("jails", jails)
            o.strings("errors", errors)
        }
        return o.text
    }

    /// The event as Server-Sent Events put it on the wire: `id`, `event` and one `data` line (JSON text holds no
    /// line break), ended by an empty line.
    public var frame: [UInt8] {
        var out: [UInt8] = []
        let data = json()
        out.reserveCapacity(data.utf8.count + 48)
        out.append(contentsOf: "id: \(id)\nevent: \(kind.rawValue)\ndata: ".utf8)
        out.append(contentsOf: data.utf8)
        out.append(contentsOf: "\n\n".utf8)
        return out
    }
}
