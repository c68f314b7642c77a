/// What a failregex captured about one failure, fail2ban's `fail` dictionary. A class, because fail2ban's
/// multi-line failures (`<F-MLFID>`) share one such record between the connection cache and the result.
public final class FailData {
    /// Captured groups by name; a present key with a nil value is a group that did not take part.
    public var groups = GroupMap()
    /// The lines that make up the failure (with their dates).
    public var matches: [TupleLine] = []
    var nofailMatches: [TupleLine]? = nil
    /// User names seen over one multi-line failure.
    public var users: [String] = []
    var mlfpending = false

    init() {}

    func copy() -> FailData {
        let c = FailData()
        c.groups = groups
        c.matches = matches
        c.nofailMatches = nofailMatches
        c.users = users
        c.mlfpending = mlfpending
        return c
    }

    public func value(_ name: String) -> String? { groups[name] ?? nil }

    func truthy(_ name: String) -> Bool { !(value(name) ?? "").isEmpty }

    @discardableResult
    func pop(_ name: String) -> String? {
        let v = groups[name] ?? nil
        groups[name] = nil
        return v
    }

    /// Every capture that has a value, for reports (internal bookkeeping groups left out).
    public var reportedFields: [(String, String)] {
        groups.compactMap { k, v -> (String, String)? in
            guard let v, !k.hasPrefix("skiplines"), k != "content", k != "_sep" else { return nil }
            return (k, v)
        }.sorted { $0.0 < $1.0 }
    }
}

/// One failure found in a line.
public struct Failure {
    /// Index of the failregex that matched.
    public let regexIndex: Int
    /// The failure ID: normally the address as written in the log (raw, never resolved), or an `<F-ID>` value.
    /// nil while a multi-line failure still waits for its address.
    public let id: String?
    /// The address to ban when it differs from the ID.
    public let ip: String?
    /// Log time in epoch seconds, nil when the line has none.
    public let time: Double?
    public let data: FailData

    public var isNoFail: Bool { data.truthy("nofail") }
}
