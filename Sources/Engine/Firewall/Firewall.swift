/// A packet-filter backend. The ban manager calls it from one thread at a time; implementations are also safe
/// to call from others.
public protocol Firewall: AnyObject, Sendable {
    /// Replaces everything the backend holds with the layout for `jails` and the given bans, at once.
    func install(_ jails: [JailRules], bans: [BanEntry], now: Double) throws
    func add(_ bans: [BanEntry], now: Double) throws
    /// Removes bans; one that is no longer there is not an error.
    func remove(_ bans: [(jail: String, ip: IPAddress)]) throws
    /// Removes the whole layout (at shutdown).
    func uninstall() throws
}

extension NftablesFirewall: Firewall {}

/// `banaction = dry-run`: records what would be banned and touches nothing.
public final class DryRunFirewall: Firewall {
    private let state = Locked<(bans: [BanEntry], removed: [(String, IPAddress)], jails: [JailRules])>(([], [], []))

    public init() {}

    public func install(_ jails: [JailRules], bans: [BanEntry], now: Double) {
        state.withLock { $0.jails = jails; $0.bans = bans }
    }

    public func add(_ bans: [BanEntry], now: Double) {
        state.withLock { $0.bans += bans }
    }

    public func remove(_ bans: [(jail: String, ip: IPAddress)]) {
        state.withLock { s in
            for b in bans {
                s.removed.append((b.jail, b.ip))
                s.bans.removeAll { $0.jail == b.jail && $0.ip == b.ip }
            }
        }
    }

    public func uninstall() {
        state.withLock { $0.bans = []; $0.jails = [] }
    }

    /// What is "banned" now.
    public var bans: [BanEntry] { state.withLock { $0.bans } }
    public var removals: [(String, IPAddress)] { state.withLock { $0.removed } }
}
