import AdminClient
import ArgumentParser
import Engine
import FoundationEssentials
import Glibc
import HTTP
import Platform
import Server

/// Where the CLI finds the daemon, and how it proves who it is.
struct ClientOptions: ParsableArguments {
    @Option(name: [.customShort("c"), .long], help: "Configuration directory, read for [api] socket.")
    var config: String = "/etc/portcullis"

    @Option(help: "The daemon's Unix socket (default: [api] socket of the configuration, else /run/portcullis/portcullis.sock).")
    var socket: String?

    @Option(help: "Talk to the daemon over TCP instead, e.g. http://127.0.0.1:9191.")
    var url: String?

    @Option(name: .customLong("token-file"), help: "A file holding the bearer token (with --url).")
    var tokenFile: String?

    @Flag(help: "Print the daemon's JSON instead of text.")
    var json = false

    func client() throws -> APIClient {
        var token: String? = nil
        if let tokenFile {
            guard let data = FileManager.default.contents(atPath: tokenFile) else {
                try fail("--token-file \(tokenFile): the file cannot be read", code: ClientExit.usage)
            }
            token = String(decoding: data, as: UTF8.self).trimmingWhitespaceAndNewlines()
        }
        if let url {
            do { return APIClient(endpoint: try APIClient.endpoint(url: url), token: token) } catch {
                try fail(error.description, code: ClientExit.usage)
            }
        }
        return APIClient(endpoint: .unix(socket ?? configuredSocket()), token: token)
    }

    private func configuredSocket() -> String {
        let fallback = APISettings().socket
        guard FileManager.default.fileExists(atPath: config) else { return fallback }
        let s = LoadedConfig.loadSettings(config)
        return s.api.socket.isEmpty ? fallback : s.api.socket
    }
}

/// Exit codes of the client commands.
enum ClientExit {
    static let done: Int32 = 0
    /// Not found, not banned, or refused by the daemon.
    static let notDone: Int32 = 1
    static let usage: Int32 = 2
    static let unreachable: Int32 = 3

    static func code(for status: Int) -> Int32 {
        switch status {
        case 200..<300: done
        case 400, 401, 403, 405, 415: usage
        default: notDone
        }
    }
}

extension ClientOptions {
    /// Sends a request; an unreachable daemon ends the command with exit code 3.
    func call(_ method: String, _ path: String, body: String? = nil) throws -> APIClient.Response {
        let client = try client()
        do { return try client.request(method, path, body: body) } catch {
            switch error {
            case .unreachable: try fail(error.description, code: ClientExit.unreachable)
            case .usage: try fail(error.description, code: ClientExit.usage)
            case .protocolError: try fail(error.description, code: ClientExit.notDone)
            }
        }
    }

    /// Ends the command when the daemon refused (printing its reason); returns the JSON object otherwise.
    func object(_ r: APIClient.Response) throws -> JSONValue {
        guard (200..<300).contains(r.status) else { try fail(r.problemDetail, code: ClientExit.code(for: r.status)) }
        guard let o = try? JSONDecoder().decode(JSONValue.self, from: Data(r.body)), case .object = o else {
            try fail("the daemon's answer is not JSON: \(r.text.prefix(200))", code: ClientExit.notDone)
        }
        return o
    }
}

extension ClientOptions {
    /// One request per address, as fail2ban-client does: prints how many were done (or the answers, with --json),
    /// reports each refusal on stderr, and ends with the worst exit code. `request` returns the answer and whether
    /// a success counts.
    func forEachAddress(_ addresses: [String], _ request: (String) throws -> (APIClient.Response, Bool)) throws {
        var done = 0
        var worst: Int32 = ClientExit.done
        var results: [String] = []
        for ip in addresses {
            let (r, counts) = try request(ip)
            if (200..<300).contains(r.status) {
                if counts { done += 1 }
                results.append(r.text)
            } else {
                StandardError.write("portcullis: \(ip): \(r.problemDetail)\n")
                worst = max(worst, ClientExit.code(for: r.status))
            }
        }
        print(json ? JSONObject.array(results) : String(done))
        if worst != ClientExit.done { throw ExitCode(worst) }
    }
}

/// Path segments as the API expects them (an address or jail name may hold characters a path may not).
func pathSegment(_ s: String) -> String {
    // RFC 3986 pchar without "/" (Foundation's urlPathAllowed less "/", "?", "#").
    percentEncoded(s) { isASCIIAlphanumeric($0) || "-._~!$&'()*+,;=:@".utf8.contains($0) }
}

func isASCIIAlphanumeric(_ b: UInt8) -> Bool {
    (b >= 0x61 && b <= 0x7A) || (b >= 0x41 && b <= 0x5A) || (b >= 0x30 && b <= 0x39)
}

/// `s` with every UTF-8 byte that `allowed` refuses written as %XX.
func percentEncoded(_ s: String, allowed: (UInt8) -> Bool) -> String {
    var out = ""
    for b in s.utf8 {
        if allowed(b) { out.unicodeScalars.append(Unicode.Scalar(b)) } else { out += "%" + TextFormat.hex(UInt32(b), width: 2) }
    }
    return out
}

struct StatusCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status",
        abstract: "Show the jails, or one jail's failures and bans (as fail2ban-client status)."
    )

    @OptionGroup var options: ClientOptions
    @Argument(help: "A jail name.") var jail: String?
    @Flag(help: "List the addresses (or networks) the jail is counting now, the latest failing first.") var failing = false

    func validate() throws {
        if failing && jail == nil { throw ValidationError("--failing needs a jail") }
    }

    func run() throws {
        if failing, let jail { return try printFailing(jail) }
        let r = try options.call("GET", jail.map { "/jails/" + pathSegment($0) } ?? "/jails")
        var o = try options.object(r)
        if options.json { print(r.text); return }
        if let jail {
            // fail2ban-client lists every banned address: past the first 1,000, they come page by page.
            if o["actions"]?["bannedIPsComplete"]?.bool == false {
                o["actions"]?["bannedIPs"] = .array(try allBanned(jail).map(JSONValue.string))
            }
            print(StatusText.jail(o))
        } else {
            // An older daemon has no /cluster: the tree without it.
            let cluster = (try? options.call("GET", "/cluster")).flatMap { try? options.object($0) }
            print(StatusText.jails(o, cluster: cluster))
        }
    }
}

extension StatusCommand {
    /// Every address banned in `jail`, from `/bans` a page at a time.
    func allBanned(_ jail: String) throws -> [String] {
        var ips: [String] = []
        var after: String? = nil
        repeat {
            let page = try options.object(try options.call("GET", "/bans?jail=\(pathSegment(jail))&limit=1000" + (after.map { "&after=" + $0 } ?? "")))
            ips += (page["bans"]?.array ?? []).compactMap { $0["ip"]?.string }
            after = page["next"]?.string
        } while after != nil
        return ips
    }
}

/// fail2ban-client's status trees, from the API's documents.
enum StatusText {
    static func jails(_ o: JSONValue, cluster: JSONValue? = nil) -> String {
        let names = (o["jails"]?.array ?? []).compactMap { $0["name"]?.string }
        let head = "Status\n|- Number of jail:\t\(names.count)\n"
        guard let cluster, cluster["enabled"]?.bool == true else { return head + "`- Jail list:\t\(names.joined(separator: ", "))" }
        return head + "|- Jail list:\t\(names.joined(separator: ", "))\n`- Cluster:\t" + clusterLine(cluster)
    }

    /// `connected as mx1, last id 42, 0 queued; peers: mx2 (3s ago), mx3 (12s ago)`.
    static func clusterLine(_ c: JSONValue, now: Double = Clock.now()) -> String {
        let node = c["node"]?.string ?? "?"
        var text =
            c["connected"]?.bool == true
            ? "connected as \(node)" : "NOT connected as \(node)" + (c["error"]?.string.map { " (\($0))" } ?? "")
        text += ", last id \(c["lastId"]?.numberText ?? "none"), \(c["queued"]?.numberText ?? "0") queued"
        let peers = (c["peers"]?.array ?? []).map { p -> String in
            let seen = p["lastSeen"]?.string.flatMap { ISO8601.parse($0) }.map { " (\(TimeExpression.describe(max(0, (now - $0).rounded()))) ago)" } ?? ""
            return (p["node"]?.string ?? "?") + seen
        }
        return text + "; peers: " + (peers.isEmpty ? "none" : peers.joined(separator: ", "))
    }

    static func jail(_ o: JSONValue) -> String {
        let f = o["filter"] ?? .object([:])
        let a = o["actions"] ?? .object([:])
        func n(_ d: JSONValue, _ k: String) -> String { d[k]?.numberText ?? "0" }
        let files = (f["files"]?.strings ?? []).joined(separator: " ")
        let ips = (a["bannedIPs"]?.strings ?? []).joined(separator: " ")
        return """
            Status for the jail: \(o["name"]?.string ?? "")
            |- Filter
            |  |- Currently failed:\t\(n(f, "currentlyFailed"))
            |  |- Total failed:\t\(n(f, "totalFailed"))
            |  `- File list:\t\(files)
            `- Actions
               |- Currently banned:\t\(n(a, "currentlyBanned"))
               |- Total banned:\t\(n(a, "totalBanned"))
               `- Banned IP list:\t\(ips)
            """
    }
}

struct SetCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "set",
        abstract: "Ban or unban addresses, or trust them, in a jail (fail2ban-client set JAIL banip|unbanip|addignoreip|delignoreip IP…).",
        discussion: """
            Addresses or networks (198.51.100.0/24, 2001:db8::/64). Prints how many were banned, unbanned, added or \
            removed. Exit code 1 when an address was not banned (unbanip) or not in the allowlist (delignoreip). \
            addignoreip adds a runtime allowlist entry for the jail (kept in the database), lifts the bans it covers \
            and says which on stderr.
            """
    )

    enum Action: String, ExpressibleByArgument, CaseIterable {
        case banip, unbanip, addignoreip, delignoreip
    }

    @OptionGroup var options: ClientOptions
    @Argument(help: "The jail.") var jail: String
    @Argument(help: "banip, unbanip, addignoreip or delignoreip.") var action: Action
    @Argument(help: "IPv4 or IPv6 addresses or networks.") var addresses: [String]
    @Option(help: "Ban time for banip (e.g. 1h, 1d, -1 for permanent; default: the jail's).") var bantime: String?
    @Option(name: .customLong("for"), help: "How long an addignoreip entry lasts (e.g. 7d; default: until removed).") var duration: String?
    @Option(help: "A comment for an addignoreip entry.") var comment: String?

    func validate() throws {
        if addresses.isEmpty { throw ValidationError("name at least one address") }
        if bantime != nil && action != .banip { throw ValidationError("--bantime goes with banip only") }
        if (duration != nil || comment != nil) && action != .addignoreip { throw ValidationError("--for and --comment go with addignoreip only") }
    }

    func run() throws {
        // Any fail2ban time expression here ("1year-6mo", "2*3600"), sent as seconds.
        var seconds: Double? = nil
        if let bantime {
            do { seconds = try TimeExpression.seconds(bantime) } catch { throw ValidationError("--bantime: \(error)") }
        }
        try options.forEachAddress(addresses) { ip in
            switch action {
            case .banip:
                var body = JSONObject()
                body.string("ip", ip)
                if let seconds { body.double("bantime", seconds < 0 ? -1 : seconds) }
                let r = try options.call("POST", "/jails/\(pathSegment(jail))/bans", body: body.text)
                // 200 on banip: it was banned already (fail2ban does not count those).
                return (r, r.status == 201)
            case .unbanip:
                let r = try options.call("DELETE", "/jails/\(pathSegment(jail))/bans/\(pathSegment(ip))")
                return (r, true)
            case .addignoreip:
                return (try options.allow(ip, jail: jail, duration: duration, comment: comment), true)
            case .delignoreip:
                return (try options.call("DELETE", "/allowlist/\(pathSegment(ip))?jail=\(percentEncoded(jail, allowed: isASCIIAlphanumeric))"), true)
            }
        }
    }
}

struct UnbanCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "unban",
        abstract: "Unban addresses in every jail (fail2ban-client unban IP…).",
        discussion: "Prints how many addresses were unbanned. Exit code 1 when an address was banned nowhere."
    )

    @OptionGroup var options: ClientOptions
    @Argument(help: "IPv4 or IPv6 addresses.") var addresses: [String]

    func validate() throws {
        if addresses.isEmpty { throw ValidationError("name at least one address") }
    }

    func run() throws {
        try options.forEachAddress(addresses) { ip in (try options.call("DELETE", "/bans/\(pathSegment(ip))"), true) }
    }
}

struct BansCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bans",
        abstract: "List the bans in force (all pages), oldest first."
    )

    @OptionGroup var options: ClientOptions
    @Option(help: "Only this jail's bans.") var jail: String?

    func run() throws {
        var all: [JSONValue] = []
        var raw: [String] = []
        var cursor: String? = nil
        repeat {
            var path = "/bans?limit=1000"
            if let jail { path += "&jail=" + percentEncoded(jail, allowed: isASCIIAlphanumeric) }
            if let cursor { path += "&after=" + cursor }
            let o = try options.object(try options.call("GET", path))
            let page = o["bans"]?.array ?? []
            all += page
            if options.json {
                let encoder = JSONEncoder()
                encoder.outputFormatting = [.sortedKeys]
                for b in page { raw.append(String(decoding: (try? encoder.encode(b)) ?? Data(), as: UTF8.self)) }
            }
            cursor = o["next"]?.string
        } while cursor != nil
        if options.json {
            print("{\"bans\":" + JSONObject.array(raw) + "}")
            return
        }
        let rows = all.map { b -> [String] in
            [
                b["ip"]?.string ?? "", b["jail"]?.string ?? "", b["bannedAt"]?.string ?? "",
                b["expiresAt"]?.string ?? "permanent", b["banCount"]?.numberText ?? "",
                b["failures"]?.numberText ?? "",
            ]
        }
        let header = ["IP", "JAIL", "BANNED AT", "EXPIRES AT", "BANS", "FAILURES"]
        let widths = header.indices.map { i in ([header] + rows).map { $0[i].count }.max() ?? 0 }
        for row in [header] + rows {
            print(row.enumerated().map { i, c in i == row.count - 1 ? c : TextFormat.padded(c, to: widths[i]) }.joined(separator: "  "))
        }
    }
}

struct ReloadCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "reload",
        abstract: "Re-read the configuration (as SIGHUP); bans and log positions are kept.",
        discussion: "Prints OK, or the problems found (exit code 1)."
    )

    @OptionGroup var options: ClientOptions

    func run() throws {
        let r = try options.call("POST", "/reload")
        let o = try options.object(r)
        let errors = o["errors"]?.strings ?? []
        if options.json {
            print(r.text)
        } else if errors.isEmpty {
            print("OK")
        } else {
            for e in errors { StandardError.write("portcullis: \(e)\n") }
        }
        if !errors.isEmpty { throw ExitCode(ClientExit.notDone) }
    }
}

struct HealthCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "health",
        abstract: "Ask the daemon's GET /health (for container health checks).",
        discussion: "Exit code 0 when the daemon answers ok, 3 when it cannot be reached, 1 otherwise."
    )

    @OptionGroup var options: ClientOptions

    func run() throws {
        let r = try options.call("GET", "/health")
        let o = try options.object(r)
        guard o["status"]?.string == "ok" else { try fail("the daemon is not healthy: \(r.text)", code: ClientExit.notDone) }
        print(options.json ? r.text : "ok: Portcullis \(o["version"]?.string ?? "?"), up \(o["uptimeSeconds"]?.integer ?? 0) s")
    }
}
