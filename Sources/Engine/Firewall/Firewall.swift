import Platform

/// A packet-filter backend. The ban manager calls it from one thread at a time; implementations are also safe
/// to call from others.
public protocol Firewall: AnyObject, Sendable {
    /// Replaces everything the backend holds with the layout for `jails` and the given bans, at once.
    func install(_ jails: [JailRules], bans: [BanEntry], now: Double) throws
    /// Adds bans and, in the same step, removes the narrower ones they cover (`replacing`; one no longer there is
    /// not an error).
    func add(_ bans: [BanEntry], replacing: [(jail: String, ip: IPNetwork)], now: Double) throws
    /// Removes bans; one that is no longer there is not an error.
    func remove(_ bans: [(jail: String, ip: IPNetwork)]) throws
    /// Removes the whole layout (at shutdown).
    func uninstall() throws
}

extension Firewall {
    public func add(_ bans: [BanEntry], now: Double) throws { try add(bans, replacing: [], now: now) }
}

extension NftablesFirewall: Firewall {}

/// Where a jail filters: the netfilter hook of its base chain in Portcullis' table, from fail2ban's `chain` key.
/// Docker's published ports are DNAT'ed in prerouting and forwarded to the container, so they never reach the
/// input hook of the host: a host-wide Portcullis filters them in the forward hook (`FORWARD`, or `DOCKER-USER` as
/// fail2ban users write for Docker), matching the port the client sent to (`ct original proto-dst`), or before
/// the DNAT in prerouting (`PREROUTING`).
public enum FilterHook: String, Sendable, CaseIterable {
    case input, forward, prerouting

    public struct Unknown: Error { public let message: String }

    /// fail2ban's `chain` value. Empty and fail2ban's unresolved default (`<known/chain>`) mean INPUT.
    public init(chain: String) throws(Unknown) {
        let value = chain.trimmingWhitespace()
        switch value.uppercased() {
        case "", "INPUT", "<KNOWN/CHAIN>": self = .input
        case "FORWARD", "DOCKER-USER": self = .forward
        case "PREROUTING": self = .prerouting
        default:
            throw Unknown(
                message:
                    "chain = \(value): Portcullis filters in its own table; chain is one of INPUT (this host's services), FORWARD or DOCKER-USER (traffic forwarded to containers: published ports), PREROUTING (before Docker's DNAT)"
            )
        }
    }

    /// The base chain in table inet portcullis.
    public var chainName: String { rawValue }

    /// Priority filter - 1 on input and forward (before the usual filter chains); in prerouting, dstnat - 10: after
    /// conntrack, before Docker's DNAT rewrites the destination.
    public var priority: Int32 { self == .prerouting ? -110 : -1 }

    /// How `portcullis check` and the nft comments describe it.
    public var description: String {
        switch self {
        case .input: return "hook input (connections to services of this network namespace: the host's, or a sidecar's container's)"
        case .forward: return "hook forward (traffic routed to containers; ports as the client sent them, ct original proto-dst)"
        case .prerouting: return "hook prerouting, priority dstnat - 10 (every packet, before Docker's DNAT)"
        }
    }
}

/// `banaction = dry-run`: records what would be banned and touches nothing.
public final class DryRunFirewall: Firewall {
    private let state = Locked<(bans: [BanEntry], jails: [JailRules])>(([], []))

    public init() {}

    public func install(_ jails: [JailRules], bans: [BanEntry], now: Double) {
        state.withLock {
            $0.jails = jails; $0.bans = bans
        }
    }

    public func add(_ bans: [BanEntry], replacing: [(jail: String, ip: IPNetwork)], now: Double) {
        remove(replacing)
        state.withLock { $0.bans += bans }
    }

    public func remove(_ bans: [(jail: String, ip: IPNetwork)]) {
        state.withLock { s in
            for b in bans {
                s.bans.removeAll { $0.jail == b.jail && $0.ip == b.ip }
            }
        }
    }

    public func uninstall() {
        state.withLock {
            $0.bans = []; $0.jails = []
        }
    }

    /// What is "banned" now.
    public var bans: [BanEntry] { state.withLock { $0.bans } }
}
