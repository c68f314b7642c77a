import FoundationEssentials
import Glibc
import Platform

/// `[cluster]` in portcullis.conf: bans shared with the other nodes of a fleet through PostgreSQL. Without
/// `conninfo` the node is on its own.
public struct ClusterSettings: Sendable, Equatable {
    /// libpq's connection string (`host=db.example port=5432 dbname=portcullis user=portcullis sslmode=verify-full`
    /// or a `postgresql://` URI), without a password.
    public var conninfo = ""
    /// The file holding the role's password (its first line); empty: none (peer, certificate or `.pgpass`).
    public var passwordFile = ""
    /// This node's name in the shared table and the other nodes' logs; by default the host name.
    public var node = HostName.current ?? "portcullis"
    /// Jails whose bans this node shares.
    public var share = JailSelection.all
    /// Jails whose bans from other nodes this node applies.
    public var apply = JailSelection.all
    /// Changes waiting to be sent (PostgreSQL unreachable) at most; beyond, the oldest are dropped and counted.
    public var queue = 100_000
    /// Where the `[cluster]` options were read (for messages).
    public var source: String?

    public var enabled: Bool { !conninfo.isEmpty }

    public init() {}

    public enum JailSelection: Sendable, Equatable, CustomStringConvertible {
        case all
        case none
        case jails([String])

        public func contains(_ jail: String) -> Bool {
            switch self {
            case .all: true
            case .none: false
            case .jails(let list): list.contains(jail)
            }
        }

        public var description: String {
            switch self {
            case .all: "all"
            case .none: "none"
            case .jails(let list): list.joined(separator: " ")
            }
        }

        static func parse(_ text: String) -> JailSelection {
            let words = text.split(whereSeparator: { $0 == "," || $0.isWhitespace }).map(String.init)
            if words.count == 1 && words[0].lowercased() == "all" { return .all }
            if words.isEmpty || words.count == 1 && words[0].lowercased() == "none" { return .none }
            return .jails(words)
        }
    }

    /// A node name: letters, digits, `.`, `_`, `-`, at most 64 (it appears in logs, metrics labels and the table).
    static func isNodeName(_ s: String) -> Bool {
        (1...64).contains(s.utf8.count)
            && s.utf8.allSatisfy { c in (c >= 48 && c <= 57) || (c | 0x20 >= 97 && c | 0x20 <= 122) || c == 46 || c == 95 || c == 45 }
    }

    static func read(_ stack: ConfigStack, file: String) throws(ConfigError) -> ClusterSettings {
        var c = ClusterSettings()
        c.source = file
        func value(_ key: String) throws(ConfigError) -> (String, SourceLocation?)? {
            guard let v = try stack.get("cluster", key) else { return nil }
            return (v.trimmingWhitespaceAndNewlines(), stack.rawEntry("cluster", key)?.location)
        }
        if let (v, loc) = try value("conninfo"), !v.isEmpty {
            let (error, hasPassword) = PostgresConnection.check(conninfo: v)
            if let error { throw ConfigError("[cluster] conninfo is not a connection string libpq accepts: \(error)", at: loc) }
            if hasPassword {
                throw ConfigError("[cluster] conninfo holds a password: put it in a file of its own and name it with password_file", at: loc)
            }
            c.conninfo = v
        }
        if let (v, _) = try value("password_file") { c.passwordFile = v }
        if let (v, loc) = try value("node"), !v.isEmpty {
            guard isNodeName(v) else {
                throw ConfigError("[cluster] node '\(v)' is not a node name (letters, digits, '.', '_' and '-', at most 64)", at: loc)
            }
            c.node = v
        }
        if let (v, _) = try value("share") { c.share = JailSelection.parse(v) }
        if let (v, _) = try value("apply") { c.apply = JailSelection.parse(v) }
        if let (v, loc) = try value("queue") {
            guard let n = Int(v), (1...10_000_000).contains(n) else {
                throw ConfigError("[cluster] queue must be a number of changes from 1 to 10000000, not '\(v)'", at: loc)
            }
            c.queue = n
        }
        if !isNodeName(c.node) {
            throw ConfigError("[cluster] this host's name '\(c.node)' cannot name the node: set node = … in [cluster]", at: nil)
        }
        return c
    }

    /// The password, from `password_file` (its first line); nil when none is configured.
    public func readPassword() throws(ConfigError) -> String? {
        guard !passwordFile.isEmpty else { return nil }
        guard let data = FileManager.default.contents(atPath: passwordFile) else {
            throw ConfigError("[cluster] password_file \(passwordFile) cannot be read (\(String(cString: strerror(errno))))")
        }
        // The first line, without its end ("\r\n" is one Character to Swift, a newline too).
        let password = String(String(decoding: data, as: UTF8.self).prefix { !$0.isNewline })
        guard !password.isEmpty else { throw ConfigError("[cluster] password_file \(passwordFile) is empty") }
        return password
    }
}
