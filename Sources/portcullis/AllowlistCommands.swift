import AdminClient
import ArgumentParser
import Engine
import Platform

extension ClientOptions {
    /// POST /allowlist; the bans it lifted are said on stderr.
    func allow(_ ip: String, jail: String?, duration: String?, comment: String?) throws -> APIClient.Response {
        var body = JSONObject()
        body.string("ip", ip)
        body.optionalString("jail", jail)
        if let duration {
            // Any fail2ban time expression here ("1w 2d", "2*3600"), sent as seconds.
            let seconds: Double
            do { seconds = try TimeExpression.seconds(duration) } catch { try fail("--for: \(error)", code: ClientExit.usage) }
            guard seconds > 0 else { try fail("--for: an entry lasts a positive time (leave --for out for until removed)", code: ClientExit.usage) }
            body.double("expires", seconds)
        }
        if let comment { body.string("comment", comment) }
        let r = try call("POST", "/allowlist", body: body.text)
        if (200..<300).contains(r.status), !json, let o = try? object(r) {
            for l in o["lifted"]?.array ?? [] {
                StandardError.write("portcullis: \(ip): lifted the ban of \(l["ip"]?.string ?? "?") in \(l["jail"]?.string ?? "?")\n")
            }
        }
        return r
    }

    /// The allowlist document, as lines: `2001:db8::/64 (allowlist, every jail, until …: comment)`.
    func allowlistLines(jail: String?) throws -> [String] {
        let o = try object(try call("GET", "/allowlist"))
        var lines: [String] = []
        for c in o["configured"]?.array ?? [] where jail == nil || c["jail"]?.string == jail {
            let line = "\(c["ip"]?.string ?? "") (\(c["source"]?.string ?? "")\(jail == nil ? ", jail \(c["jail"]?.string ?? "")" : ""))"
            if !lines.contains(line) { lines.append(line) }
        }
        for e in o["entries"]?.array ?? [] {
            let entryJail = e["jail"]?.string
            guard jail == nil || entryJail == nil || entryJail == jail else { continue }
            var what = "allowlist, " + (entryJail.map { "jail \($0)" } ?? "every jail")
            if let until = e["expiresAt"]?.string { what += ", until \(until)" }
            if let c = e["comment"]?.string, !c.isEmpty { what += ": \(c)" }
            lines.append("\(e["ip"]?.string ?? "") (\(what))")
        }
        return lines
    }
}

/// fail2ban-client's tree of a list: `|- a`, `` `- b``.
func treeLines(_ lines: [String]) -> String {
    lines.enumerated().map { i, l in (i == lines.count - 1 ? "`- " : "|- ") + l }.joined(separator: "\n")
}

struct GetCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "get",
        abstract: "Show what a jail ignores (fail2ban-client get JAIL ignoreip): its ignoreip, ignoreself and allowlist entries."
    )

    enum Key: String, ExpressibleByArgument, CaseIterable { case ignoreip }

    @OptionGroup var options: ClientOptions
    @Argument(help: "The jail.") var jail: String
    @Argument(help: "ignoreip.") var key: Key

    func run() throws {
        if options.json {
            print(try options.call("GET", "/allowlist").text)
            return
        }
        let lines = try options.allowlistLines(jail: jail)
        print(lines.isEmpty ? "No IP address/network is ignored" : "These IP addresses/networks are ignored:\n" + treeLines(lines))
    }
}

struct AllowlistCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "allowlist",
        abstract: "The runtime allowlist for every jail: list it, add to it, remove from it.",
        subcommands: [List.self, Add.self, Remove.self],
        defaultSubcommand: List.self
    )

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(commandName: "list", abstract: "Every entry, with what the configuration ignores.")
        @OptionGroup var options: ClientOptions

        func run() throws {
            if options.json {
                print(try options.call("GET", "/allowlist").text)
                return
            }
            let lines = try options.allowlistLines(jail: nil)
            print(lines.isEmpty ? "The allowlist is empty" : treeLines(lines))
        }
    }

    struct Add: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "add",
            abstract: "Trust addresses or networks in every jail (or one, --jail); lifts the bans they cover.",
            discussion: "Prints how many entries were added; the bans lifted are said on stderr.")
        @OptionGroup var options: ClientOptions
        @Argument(help: "IPv4 or IPv6 addresses or networks.") var addresses: [String]
        @Option(help: "Only in this jail.") var jail: String?
        @Option(name: .customLong("for"), help: "How long the entries last (e.g. 7d; default: until removed).") var duration: String?
        @Option(help: "A comment.") var comment: String?

        func validate() throws { if addresses.isEmpty { throw ValidationError("name at least one address") } }

        func run() throws {
            try options.forEachAddress(addresses) { ip in (try options.allow(ip, jail: jail, duration: duration, comment: comment), true) }
        }
    }

    struct Remove: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "del",
            abstract: "Remove the entries of addresses or networks (of every jail, or of one with --jail).",
            discussion: "Prints how many addresses had entries removed. Exit code 1 when one had none.")
        @OptionGroup var options: ClientOptions
        @Argument(help: "IPv4 or IPv6 addresses or networks.") var addresses: [String]
        @Option(help: "Only the entry of this jail.") var jail: String?

        func validate() throws { if addresses.isEmpty { throw ValidationError("name at least one address") } }

        func run() throws {
            let query = jail.map { "?jail=" + percentEncoded($0, allowed: isASCIIAlphanumeric) } ?? ""
            try options.forEachAddress(addresses) { ip in (try options.call("DELETE", "/allowlist/\(pathSegment(ip))" + query), true) }
        }
    }
}

extension StatusCommand {
    /// `status JAIL --failing`: every page of `/jails/{jail}/failures`, as a table.
    func printFailing(_ jail: String) throws {
        var rows: [[String]] = []
        var raw: [String] = []
        var after: String? = nil
        var maxRetry = ""
        repeat {
            let r = try options.call("GET", "/jails/\(pathSegment(jail))/failures?limit=1000" + (after.map { "&after=" + $0 } ?? ""))
            let page = try options.object(r)
            raw.append(r.text)
            maxRetry = page["maxretry"]?.numberText ?? ""
            for f in page["failures"]?.array ?? [] {
                rows.append([
                    f["ip"]?.string ?? "", f["failures"]?.numberText ?? "", f["firstFailure"]?.string ?? "",
                    f["lastFailure"]?.string ?? "", (f["users"]?.strings ?? []).joined(separator: ","),
                ])
            }
            after = page["next"]?.string
        } while after != nil
        if options.json {
            print(raw.count == 1 ? raw[0] : JSONObject.array(raw))
            return
        }
        guard !rows.isEmpty else {
            print("No address is failing in \(jail) now")
            return
        }
        let header = ["IP", "FAILURES/\(maxRetry)", "FIRST FAILURE", "LAST FAILURE", "USERS"]
        let widths = header.indices.map { i in ([header] + rows).map { $0[i].count }.max() ?? 0 }
        for row in [header] + rows {
            print(row.enumerated().map { i, c in i == row.count - 1 ? c : TextFormat.padded(c, to: widths[i]) }.joined(separator: "  "))
        }
    }
}
