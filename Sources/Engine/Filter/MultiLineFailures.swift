import Platform

/// fail2ban's `_mergeFailure`: the lines of one connection (`<F-MLFID>`), seen one by one, joined into one
/// failure, with the markers fail2ban's filters set on them (`nofail`, `mlfgained`, `mlfforget`). Connections
/// are remembered for 5 minutes, 100 at most.
struct MultiLineFailures {
    final class Entry {
        var date: Double?
        var fail: FailData
        init(date: Double?, fail: FailData) { self.date = date; self.fail = fail }
    }

    /// What the line and the connection's record say (fail2ban keeps these as bits of one integer).
    private struct Marks: OptionSet {
        let rawValue: Int
        /// The line is no failure (yet): `nofail`, or `mlfgained` (which implies it).
        static let noFailure = Marks(rawValue: 1)
        /// `mlfforget`: the connection is over; its record is dropped.
        static let forget = Marks(rawValue: 2)
        /// The record carried `nofail` or `mlfgained` from an earlier line: its matches are kept.
        static let recordMarked = Marks(rawValue: 4)
        /// `mlfgained`: the connection gained access (a success): its lines are not this failure's matches.
        static let gained = Marks(rawValue: 8)
    }

    private var cache = ExpiringCache<Entry>(maxCount: 100, maxTime: 5 * 60)

    /// Joins `failIn` (what `failRegex` captured on `origin`) with the connection `mlfid`'s record. `lastDate`:
    /// the date a new record starts with.
    mutating func merge(
        _ mlfid: String, _ failIn: FailData, _ failRegex: FilterRegex, _ origin: [TupleLine],
        lastDate: Double?
    ) -> FailData {
        var fail = failIn
        var users: [String]? = nil
        var marks: Marks = []
        if fail.truthy("mlfgained") {
            marks.formUnion([.gained, .noFailure])
            if !fail.truthy("nofail") { fail.groups["nofail"] = fail.value("mlfgained") }
        } else if fail.truthy("nofail") {
            marks.insert(.noFailure)
        }
        if let forget = fail.pop("mlfforget"), !forget.isEmpty { marks.insert(.forget) }
        if let cached = cache.get(mlfid) {
            let record = cached.fail
            users = MultiLineFailures.updateUsers(record, fail.value("user"))
            if let v = record.pop("nofail"), !v.isEmpty { marks.insert(.recordMarked) }
            if let v = record.pop("mlfgained"), !v.isEmpty { marks.insert(.recordMarked) }
            if !marks.contains(.recordMarked) && !record.mlfpending { record.matches = [] }
            for (k, v) in fail.groups where v != nil { record.groups[k] = v }
            fail = record
            if marks.contains(.forget) { cache.unset(mlfid) }
        } else if !marks.contains(.forget) {
            users = MultiLineFailures.updateUsers(fail, fail.value("user"))
            cache.set(mlfid, Entry(date: lastDate, fail: fail))
        }
        let pending = fail.mlfpending
        fail.mlfpending = false
        if pending || (users?.count ?? 0) > 1 {
            fail.pop("nofail")
            fail.pop("mlfgained")
            marks.subtract([.gained, .noFailure])
        }
        if !marks.contains(.noFailure) {
            var m = fail.nofailMatches ?? []
            fail.nofailMatches = nil
            m += fail.matches
            if !marks.contains(.gained) { m += failRegex.matchedLines(origin) }
            fail.matches = m
        } else if !marks.contains(.forget) {
            fail.nofailMatches = (fail.nofailMatches ?? []) + failRegex.matchedLines(origin)
        }
        return fail
    }

    private static func updateUsers(_ fail: FailData, _ user: String?) -> [String]? {
        if let user, !user.isEmpty {
            if !fail.users.contains(user) { fail.users.append(user) }
            return fail.users
        }
        return fail.users.isEmpty ? nil : fail.users
    }
}
