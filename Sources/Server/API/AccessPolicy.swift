import FoundationEssentials
import Glibc
import HTTP
import Platform

/// Who may do what over the API. The Unix socket is guarded by its file permissions, so whoever can connect is an
/// admin; over TCP, bearer tokens decide. With no tokens configured, TCP serves reads only (and the server refuses
/// to listen anywhere but loopback, see `check`).
public struct AccessPolicy: Sendable {
    public enum Level: Int, Sendable, Comparable {
        case anonymous, read, admin
        public static func < (a: Level, b: Level) -> Bool { a.rawValue < b.rawValue }
    }

    let readToken: [UInt8]?
    let adminToken: [UInt8]?

    public init(readToken: String?, adminToken: String?) {
        self.readToken = readToken.map { Array($0.utf8) }
        self.adminToken = adminToken.map { Array($0.utf8) }
    }

    public var hasTokens: Bool { readToken != nil || adminToken != nil }
    /// What is wrong but not fatal about the token files (readable by others): logged at start and reload.
    public private(set) var warnings: [String] = []

    public struct SetupError: Error, CustomStringConvertible {
        public let description: String
    }

    /// Reads the token files named in `[api]`. A named file that is missing or empty stops the start: running
    /// without the protection the operator asked for would be worse than not running.
    public static func load(readTokenFile: String, adminTokenFile: String) throws(SetupError) -> AccessPolicy {
        func token(_ path: String, _ key: String, _ warnings: inout [String]) throws(SetupError) -> String? {
            guard !path.isEmpty else { return nil }
            guard let data = FileManager.default.contents(atPath: path) else {
                throw SetupError(description: "[api] \(key) = \(path): the file cannot be read")
            }
            let text = String(decoding: data, as: UTF8.self).trimmingWhitespaceAndNewlines()
            guard !text.isEmpty else { throw SetupError(description: "[api] \(key) = \(path): the file is empty") }
            // A control character (an escape sequence, a NUL) would end up in comparisons and in terminals.
            if let bad = text.unicodeScalars.first(where: { $0.value < 0x20 || $0.value == 0x7f || (0x80..<0xa0).contains($0.value) }) {
                throw SetupError(
                    description:
                        "[api] \(key) = \(path): the token holds a control character (U+\(TextFormat.hex(bad.value, width: 4))): write it as one line of printable characters"
                )
            }
            var st = stat()
            if stat(path, &st) == 0 && st.st_mode & 0o044 != 0 {
                warnings.append(
                    "[api] \(key) = \(path) can be read by \(st.st_mode & 0o004 != 0 ? "anyone on this machine" : "its group") (mode \(String(st.st_mode & 0o777, radix: 8))): chmod 600 it"
                )
            }
            guard text.count >= 16 else {
                throw SetupError(
                    description: "[api] \(key) = \(path): the token is shorter than 16 characters (make one with: head -c 32 /dev/urandom | base64)")
            }
            guard !text.contains(where: { $0.isWhitespace }) else {
                throw SetupError(description: "[api] \(key) = \(path): the token must be one word, without spaces")
            }
            return text
        }
        var warnings: [String] = []
        let read = try token(readTokenFile, "read_token_file", &warnings)
        let admin = try token(adminTokenFile, "admin_token_file", &warnings)
        if let read, read == admin {
            throw SetupError(description: "[api] read_token_file and admin_token_file hold the same token")
        }
        var policy = AccessPolicy(readToken: read, adminToken: admin)
        policy.warnings = warnings
        return policy
    }

    /// Refuses listeners that would expose the API without a token.
    public func check(_ addresses: [ListenAddress]) throws(SetupError) {
        guard !hasTokens else { return }
        for a in addresses where !a.isLoopback {
            throw SetupError(
                description:
                    "refusing to listen on \(a) without tokens: anyone who can reach it could read the ban lists. Set read_token_file and admin_token_file in [api] of portcullis.conf, or listen on 127.0.0.1 / [::1] only"
            )
        }
    }

    public enum Decision: Equatable {
        case granted(Level)
        /// 401: no credentials, or wrong ones.
        case unauthenticated(String)
    }

    /// The level a request's credentials give.
    public func level(authorization: String?, context: RequestContext) -> Decision {
        if context.isUnixSocket { return .granted(.admin) }
        guard hasTokens else { return .granted(.read) }
        guard let authorization else { return .unauthenticated("this endpoint needs a bearer token (Authorization: Bearer …)") }
        let parts = authorization.split(separator: " ", maxSplits: 1, omittingEmptySubsequences: true)
        guard parts.count == 2, parts[0].lowercased() == "bearer" else {
            return .unauthenticated("the Authorization header must be: Bearer <token>")
        }
        let given = Array(parts[1].utf8)
        // Both comparisons always run, each in time independent of where the bytes differ.
        let isAdmin = adminToken.map { AccessPolicy.constantTimeEqual($0, given) } ?? false
        let isRead = readToken.map { AccessPolicy.constantTimeEqual($0, given) } ?? false
        if isAdmin { return .granted(.admin) }
        if isRead { return .granted(.read) }
        return .unauthenticated("the token is not valid")
    }

    /// Why a level below admin may not change anything (the 403 detail).
    public func mutationRefusal(_ level: Level) -> String {
        if !hasTokens {
            return
                "changes over TCP need the admin token: set admin_token_file in [api] of portcullis.conf and send Authorization: Bearer <token> (or use the Unix socket)"
        }
        if adminToken == nil {
            return "no admin token is configured: set admin_token_file in [api] of portcullis.conf (or use the Unix socket)"
        }
        return "the read token may only read: send the admin token to change bans or reload"
    }

    static func constantTimeEqual(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        var diff: UInt8 = 0
        for i in 0..<a.count {
            diff |= a[i] ^ (i < b.count ? b[i] : 0)
        }
        return diff == 0 && a.count == b.count
    }
}
