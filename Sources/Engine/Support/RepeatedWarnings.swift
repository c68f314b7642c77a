/// Keeps a problem met over and over (at every poll of a file) from flooding the log: the first occurrence is
/// said, the same one again at most once per `interval` with how many times it was met meanwhile, and its end is
/// said once. Not thread-safe: its owner's thread uses it.
struct RepeatedWarnings {
    let interval: Double
    private var state: [String: (message: String, saidAt: Double, since: Double, suppressed: Int)] = [:]

    init(interval: Double) { self.interval = interval }

    mutating func report(_ message: String, key: String, now: Double, say: (String) -> Void) {
        if var s = state[key], s.message == message {
            if now - s.saidAt < interval {
                s.suppressed += 1
                state[key] = s
                return
            }
            say(
                message
                    + " (again \(s.suppressed + 1) time(s) since \(TimeExpression.describe(now - s.since)) ago; said every \(TimeExpression.describe(interval)) at most)"
            )
            state[key] = (message, now, s.since, 0)
            return
        }
        say(message)
        state[key] = (message, now, now, 0)
    }

    /// The problem of `key` is over.
    mutating func clear(key: String, now: Double, say: (String) -> Void) {
        guard let s = state.removeValue(forKey: key) else { return }
        say("resolved after \(TimeExpression.describe(max(1, now - s.since))): \(s.message)")
    }

    /// The number of problems currently remembered (tests).
    var count: Int { state.count }
}
