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

    init?(_ segments: [String]) {
        switch segments.count {
        case 1:
            switch segments[0] {
            case "health": self = .health
            case "jails": self = .jails
            case "bans": self = .bans
            case "metrics": self = .metrics
            case "reload": self = .reload
            case "allowlist": self = .allowlist
            default: return nil
            }
        case 2:
            switch segments[0] {
            case "jails": self = .jail(segments[1])
            case "bans": self = .ban(segments[1])
            case "allowlist": self = .allowlistEntry(segments[1])
            default: return nil
            }
        // A network may come with its slash unencoded: /bans/2001:db8::/64 (or encoded, %2F, in one segment).
        case 3 where segments[0] == "bans" && Route.isPrefixLength(segments[2]): self = .ban(segments[1] + "/" + segments[2])
        case 3 where segments[0] == "allowlist" && Route.isPrefixLength(segments[2]): self = .allowlistEntry(segments[1] + "/" + segments[2])
        case 3 where segments[0] == "jails" && segments[2] == "failures": self = .jailFailures(segments[1])
        case 3 where segments[0] == "jails" && segments[2] == "bans": self = .jailBans(segments[1])
        case 4 where segments[0] == "jails" && segments[2] == "bans": self = .jailBan(segments[1], segments[3])
        case 5 where segments[0] == "jails" && segments[2] == "bans" && Route.isPrefixLength(segments[4]):
            self = .jailBan(segments[1], segments[3] + "/" + segments[4])
        default: return nil
        }
    }

    /// A segment that can only be the prefix length of a network split at its slash (`64`, `129` too: refused
    /// later with the reason).
    static func isPrefixLength(_ s: String) -> Bool { (1...3).contains(s.utf8.count) && s.utf8.allSatisfy { (48...57).contains($0) } }

    var methods: [String] {
        switch self {
        case .health, .jails, .jail, .bans, .metrics, .jailFailures: ["GET", "HEAD"]
        case .allowlist: ["GET", "HEAD", "POST"]
        case .allowlistEntry: ["DELETE"]
        case .ban: ["GET", "HEAD", "DELETE"]
        case .jailBans, .reload: ["POST"]
        case .jailBan: ["DELETE"]
        }
    }

    /// Open to anyone who can connect (container health checks carry no token).
    var isPublic: Bool { self == .health }
}
