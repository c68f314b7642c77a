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

    init?(_ segments: [String]) {
        switch segments.count {
        case 1:
            switch segments[0] {
            case "health": self = .health
            case "jails": self = .jails
            case "bans": self = .bans
            case "metrics": self = .metrics
            case "reload": self = .reload
            default: return nil
            }
        case 2:
            switch segments[0] {
            case "jails": self = .jail(segments[1])
            case "bans": self = .ban(segments[1])
            default: return nil
            }
        case 3 where segments[0] == "jails" && segments[2] == "bans": self = .jailBans(segments[1])
        case 4 where segments[0] == "jails" && segments[2] == "bans": self = .jailBan(segments[1], segments[3])
        default: return nil
        }
    }

    var methods: [String] {
        switch self {
        case .health, .jails, .jail, .bans, .metrics: ["GET", "HEAD"]
        case .ban: ["GET", "HEAD", "DELETE"]
        case .jailBans, .reload: ["POST"]
        case .jailBan: ["DELETE"]
        }
    }

    /// Open to anyone who can connect (container health checks carry no token).
    var isPublic: Bool { self == .health }
}
