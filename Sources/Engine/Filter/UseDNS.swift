import Platform

/// fail2ban's `usedns`: whether `<HOST>` may match host names. Portcullis never resolves them (it bans addresses
/// only), so `no` is the one value that changes matching: `<HOST>` then accepts addresses alone.
public enum UseDNS: String, Sendable {
    case yes, warn, no, raw

    /// A setting's value (any letter case); nil when it is none of the four.
    public init?(setting: String) {
        self.init(rawValue: setting.trimmingWhitespace().lowercased())
    }
}
