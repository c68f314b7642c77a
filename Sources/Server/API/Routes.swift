/// The API's resources (the paths of openapi.yaml) and the methods each allows.
enum Route: Equatable {
    case health
    case jails
    case jail(String)
    case jailBans(String)
    case jailBan(String, String)
    case bans
    case ban(String)
    case metrics
    case reload
    case allowlist
    case allowlistEntry(String)
    case jailFailures(String)
    case events
    case cluster

    init?(_ path: [String]) {
        let segments = Route.joiningPrefixLength(path)
        switch segments.count {
        case 1:
            switch segments[0] {
            case "health": self = .health
            case "jails": self = .jails
            case "bans": self = .bans
            case "metrics": self = .metrics
            case "reload": self = .reload
            case "allowlist": self = .allowlist
            case "events": self = .events
            case "cluster": self = .cluster
            default: return nil
            }
        case 2:
            switch segments[0] {
            case "jails": self = .jail(segments[1])
            case "bans": self = .ban(segments[1])
            case "allowlist": self = .allowlistEntry(segments[1])
            default: return nil
            }
        case 3 where segments[0] == "jails" && segments[2] == "failures": self = .jailFailures(segments[1])
        case 3 where segments[0] == "jails" && segments[2] == "bans": self = .jailBans(segments[1])
        case 4 where segments[0] == "jails" && segments[2] == "bans": self = .jailBan(segments[1], segments[3])
        default: return nil
        }
    }

    /// A network may come with its slash unencoded (`/bans/2001:db8::/64`; encoded, `%2F`, it is one segment
    /// already): a last segment that can only be a prefix length (`64`, `129` too: refused later with the reason),
    /// after one that holds an address, is joined to it.
    static func joiningPrefixLength(_ segments: [String]) -> [String] {
        guard segments.count >= 3, let last = segments.last, (1...3).contains(last.utf8.count),
            last.utf8.allSatisfy({ (48...57).contains($0) }),
            segments[segments.count - 2].utf8.contains(where: { $0 == UInt8(ascii: ":") || $0 == UInt8(ascii: ".") })
        else { return segments }
        return segments.dropLast(2) + [segments[segments.count - 2] + "/" + last]
    }

    var methods: [String] {
        switch self {
        case .health, .jails, .jail, .bans, .metrics, .jailFailures, .cluster: ["GET", "HEAD"]
        case .allowlist: ["GET", "HEAD", "POST"]
        case .allowlistEntry: ["DELETE"]
        case .ban: ["GET", "HEAD", "DELETE"]
        case .jailBans, .reload: ["POST"]
        case .jailBan: ["DELETE"]
        case .events: ["GET"]
        }
    }

    /// Open to anyone who can connect (container health checks carry no token).
    var isPublic: Bool { self == .health }
}
