import FoundationEssentials
import Glibc
import Platform

/// One entry of a jail's `port` list: a single port or a range, with the name it was written as.
public struct PortRange: Sendable, Equatable, CustomStringConvertible {
    public var first: UInt16
    public var last: UInt16
    /// As written in the configuration (`pop3`, `465`, `1000:2000`).
    public var name: String

    public init(first: UInt16, last: UInt16, name: String) {
        self.first = first
        self.last = last
        self.name = name
    }

    public var description: String { first == last ? "\(first)" : "\(first)-\(last)" }

    public func contains(_ port: UInt16) -> Bool { port >= first && port <= last }
}

/// Resolves `port = pop3,pop3s,imap,imaps,submission,465,sieve` (and `1000:2000` ranges) the way fail2ban's
/// actions do: names from /etc/services, with a built-in table for containers that lack that file.
public enum Ports {
    /// Well-known services, used when /etc/services has no entry (minimal container images ship without it).
    static let builtin: [String: UInt16] = [
        "ssh": 22, "ftp": 21, "ftp-data": 20, "ftps": 990, "telnet": 23, "smtp": 25, "submissions": 465, "smtps": 465,
        "urd": 465, "submission": 587, "domain": 53, "http": 80, "www": 80, "https": 443, "pop3": 110, "pop3s": 995,
        "imap": 143, "imap2": 143, "imaps": 993, "sieve": 4190, "managesieve": 4190, "ldap": 389, "ldaps": 636,
        "mysql": 3306, "postgresql": 5432, "ms-sql-s": 1433, "rsync": 873, "sip": 5060, "sip-tls": 5061,
        "openvpn": 1194, "webmin": 10000, "xmpp-client": 5222, "xmpp-server": 5269, "asterisk": 5038,
        "http-alt": 8080, "mongodb": 27017, "redis": 6379, "vnc": 5900, "rdp": 3389, "ms-wbt-server": 3389,
        "nntp": 119, "nntps": 563, "ntp": 123, "snmp": 161, "kerberos": 88, "imap3": 220, "pop2": 109,
        "svn": 3690, "git": 9418, "munin": 4949, "zabbix-agent": 10050, "zabbix-trapper": 10051, "radius": 1812,
        "ident": 113, "auth": 113, "finger": 79, "tftp": 69, "irc": 194, "ircs-u": 6697, "lmtp": 24,
    ]

    public struct ResolveError: Error, CustomStringConvertible {
        public let entry: String
        public let reason: String
        public var description: String { "port '\(entry)': \(reason)" }
    }

    /// One port: a number or a service name.
    public static func port(_ text: String, protocol proto: String = "tcp") throws(ResolveError) -> UInt16 {
        let t = text.trimmingWhitespace()
        if let n = Int(t) {
            guard n >= 0 && n <= 65535 else { throw ResolveError(entry: t, reason: "out of range 0-65535") }
            return UInt16(n)
        }
        if let entry = getservbyname(t, proto == "all" ? "tcp" : proto) {
            return UInt16(bigEndian: UInt16(truncatingIfNeeded: entry.pointee.s_port))
        }
        if let n = builtin[t.lowercased()] { return n }
        throw ResolveError(entry: t, reason: "unknown service name (not in /etc/services); write the port number")
    }

    /// A whole `port` value: entries separated by commas or spaces, ranges with `:` (or `-`).
    public static func parse(_ text: String, protocol proto: String = "tcp") throws(ResolveError) -> [PortRange] {
        var result: [PortRange] = []
        for raw in text.split(whereSeparator: { $0 == "," || $0 == " " || $0 == "\n" || $0 == "\t" }) {
            let entry = String(raw)
            if let sep = entry.firstIndex(where: { $0 == ":" || $0 == "-" }), entry.first?.isNumber == true {
                let a = try port(String(entry[..<sep]), protocol: proto)
                let b = try port(String(entry[entry.index(after: sep)...]), protocol: proto)
                guard a <= b else { throw ResolveError(entry: entry, reason: "range goes backwards") }
                result.append(PortRange(first: a, last: b, name: entry))
            } else {
                let p = try port(entry, protocol: proto)
                result.append(PortRange(first: p, last: p, name: entry))
            }
        }
        return result
    }
}
