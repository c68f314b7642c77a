import Synchronization

/// Where ban decisions go. The nftables implementation drives the kernel; `DryRunFirewall` only records.
public protocol Firewall: Sendable {
    /// Applies a ban for `banTime` seconds (negative: permanent).
    func ban(_ decision: BanDecision, banTime: Double) throws
    func unban(jail: String, ip: IPAddress) throws
}

/// Records decisions and logs them, touching nothing: `banaction = dry-run`, and the engine's tests.
public final class DryRunFirewall: Firewall {
    public struct Record: Sendable {
        public let decision: BanDecision
        public let banTime: Double
    }

    private let records = Mutex<[Record]>([])
    private let unbans = Mutex<[(String, IPAddress)]>([])
    private let log: Logger?

    public init(log: Logger? = nil) {
        self.log = log
    }

    public func ban(_ decision: BanDecision, banTime: Double) {
        records.withLock { $0.append(Record(decision: decision, banTime: banTime)) }
        log?.notice("[\(decision.jail)] Ban \(decision.ip) (dry-run: no packet filter change) after \(decision.failures) failures, bantime \(Duration.describe(banTime))")
    }

    public func unban(jail: String, ip: IPAddress) {
        unbans.withLock { $0.append((jail, ip)) }
        log?.notice("[\(jail)] Unban \(ip) (dry-run)")
    }

    public var decisions: [Record] { records.withLock { $0 } }
}
