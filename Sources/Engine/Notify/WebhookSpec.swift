import FoundationEssentials

/// A jail's `webhook[...]` action: where to POST its events, signed with a secret.
///
///     action = %(action_)s
///              webhook[url="https://hooks.example.com/ban", secret_file=/run/secrets/hook, events="ban,unban"]
public struct WebhookSpec: Sendable, Equatable {
    public var url: String
    /// The URL's host, for logs and metrics (the URL itself may carry a token: never shown).
    public var host: String
    public var secretFile: String
    public var events: Set<FeedEvent.Kind>
    public var timeout: Double
    public var cafile: String?
    /// Deliveries waiting at most; beyond, the oldest is dropped.
    public var queue: Int
    /// Attempts of one delivery at most (the first included) on 5xx answers and connection errors.
    public var attempts: Int
    /// The first retry's delay; each one doubles it (at most 10 minutes), with jitter.
    public var backoff: Double
    /// 1-based position among the jail's webhooks (`webhook="dovecot/1"` in metrics).
    public var index: Int

    public static let actionName = "webhook"

    /// Reads the action's options; throws the message for the first one at fault.
    public init(_ action: ActionSpec, index: Int) throws(ConfigError) {
        let o = action.options
        self.index = index
        guard let url = o["url"]?.trimmingWhitespace(), !url.isEmpty else { throw ConfigError("webhook: url is missing") }
        let lower = url.lowercased()
        guard lower.hasPrefix("http://") || lower.hasPrefix("https://"), !url.contains(where: { $0.isWhitespace }) else {
            throw ConfigError("webhook: url must be an http:// or https:// URL without spaces")
        }
        self.url = url
        var rest = url.drop { $0 != "/" }.dropFirst(2)
        if let at = rest.firstIndex(of: "@"), rest[..<at].firstIndex(of: "/") == nil { rest = rest[rest.index(after: at)...] }
        host = String(rest.prefix { $0 != "/" && $0 != "?" && $0 != "#" })
        guard !host.isEmpty else { throw ConfigError("webhook: url has no host") }
        guard let secret = o["secret_file"]?.trimmingWhitespace(), !secret.isEmpty else {
            throw ConfigError("webhook: secret_file is missing (every delivery is signed; the receiver checks X-Portcullis-Signature)")
        }
        secretFile = secret
        var kinds: Set<FeedEvent.Kind> = []
        for word in (o["events"] ?? "ban").split(whereSeparator: { $0 == "," || $0.isWhitespace }) {
            guard let k = FeedEvent.Kind(rawValue: String(word)), k == .ban || k == .unban else {
                throw ConfigError("webhook: events: '\(word)' is not ban or unban")
            }
            kinds.insert(k)
        }
        guard !kinds.isEmpty else { throw ConfigError("webhook: events is empty (ban, unban)") }
        events = kinds
        timeout = try WebhookSpec.seconds(o["timeout"], name: "timeout", default: 10, range: 0.1...300)
        backoff = try WebhookSpec.seconds(o["backoff"], name: "backoff", default: 1, range: 0.01...3600)
        cafile = o["cafile"]?.trimmingWhitespace()
        if cafile?.isEmpty == true { cafile = nil }
        queue = try WebhookSpec.integer(o["queue"], name: "queue", default: 1000, range: 1...1_000_000)
        attempts = try WebhookSpec.integer(o["attempts"], name: "attempts", default: 10, range: 1...100)
    }

    private static func seconds(_ text: String?, name: String, default value: Double, range: ClosedRange<Double>) throws(ConfigError) -> Double {
        guard let text else { return value }
        let s: Double
        do { s = try TimeExpression.seconds(text) } catch { throw ConfigError("webhook: \(name): \(error)") }
        guard range.contains(s) else { throw ConfigError("webhook: \(name) must be from \(range.lowerBound) to \(range.upperBound) s, not '\(text)'") }
        return s
    }

    private static func integer(_ text: String?, name: String, default value: Int, range: ClosedRange<Int>) throws(ConfigError) -> Int {
        guard let text else { return value }
        guard let n = Int(text.trimmingWhitespace()), range.contains(n) else {
            throw ConfigError("webhook: \(name) must be a whole number from \(range.lowerBound) to \(range.upperBound), not '\(text)'")
        }
        return n
    }

    /// The secret: the file's first line (a trailing newline is not part of it).
    public func readSecret() throws(ConfigError) -> [UInt8] {
        guard let data = FileManager.default.contents(atPath: secretFile) else {
            throw ConfigError("webhook: cannot read secret_file \(secretFile)")
        }
        let secret = Array(data.prefix { $0 != 10 && $0 != 13 })
        guard !secret.isEmpty else { throw ConfigError("webhook: secret_file \(secretFile) is empty") }
        return secret
    }
}
