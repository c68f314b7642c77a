/// fail2ban's regex tags (`<HOST>`, `<ADDR>`, `<F-USER>…</F-USER>`, `<SKIPLINES>`) expanded into named groups,
/// as `Regex._resolveHostTag` does, so that a fail2ban filter means the same thing here.
public enum FilterTags {
    static let ip4 = #"(?:\d{1,3}\.){3}\d{1,3}"#
    static let ip6 = #"(?:[0-9a-fA-F]{1,4}::?|::){1,7}(?:[0-9a-fA-F]{1,4}|(?<=:):)"#

    static let hostIP4 = #"(?:::f{4,6}:)?(?P<ip4>"# + ip4 + ")"
    static let hostIP6 = "(?P<ip6>" + ip6 + ")"
    static let hostDNS = #"(?P<dns>[\w\-.^_]*\w)"#
    static let hostAddr = #"\[?(?:"# + hostIP4 + "|" + hostIP6 + #")\]?"#
    static let hostAny = "(?:" + hostAddr + "|" + hostDNS + ")"
    static let hostCIDR = #"(?P<cidr>\d+)"#
    static let hostSubnet = #"\[?(?:"# + hostIP4 + "|" + hostIP6 + ")(?:/" + hostCIDR + #")?\]?"#

    static let staticTags: [String: String] = [
        "IP4": hostIP4, "F-IP4/": hostIP4,
        "IP6": hostIP6, "F-IP6/": hostIP6,
        "ADDR": hostAddr, "F-ADDR/": hostAddr,
        "CIDR": hostCIDR, "F-CIDR/": hostCIDR,
        "SUBNET": hostSubnet, "F-SUBNET/": hostSubnet,
        "DNS": hostDNS, "F-DNS/": hostDNS,
        "F-ID/": #"(?P<fid>\S+)"#,
        "F-PORT/": #"(?P<fport>\w+)"#,
    ]

    /// Group names fail2ban renames: `<F-ID>` captures into `fid`, `<F-PORT>` into `fport`.
    static func groupName(forTag tag: String) -> String {
        let lower = tag.lowercased()
        switch lower {
        case "id": return "fid"
        case "port": return "fport"
        default: return lower
        }
    }

    /// Expands the tags in `regex`. With `useDNS == .no`, `<HOST>` accepts addresses only.
    public static func expand(_ regex: String, useDNS: UseDNS = .yes) -> String {
        var out = ""
        var openTags = Set<String>()
        var skipLines = 0
        var i = regex.startIndex
        while i < regex.endIndex {
            let c = regex[i]
            guard c == "<", let close = regex[i...].firstIndex(of: ">") else {
                out.append(c); i = regex.index(after: i); continue
            }
            // A tag is </?[\w\-]+/?> (fail2ban's FTAG_CRE).
            let inner = regex[regex.index(after: i)..<close]
            var body = inner
            if body.hasPrefix("/") { body = body.dropFirst() }
            if body.hasSuffix("/") { body = body.dropLast() }
            let valid =
                !body.isEmpty && body.allSatisfy { $0 == "_" || $0 == "-" || $0.isLetter || $0.isNumber }
                && !inner.dropFirst().dropLast().contains("/")
            guard valid else { out.append(c); i = regex.index(after: i); continue }
            let tag = String(inner)
            out += replacement(for: tag, useDNS: useDNS, openTags: &openTags, skipLines: &skipLines) ?? "<\(tag)>"
            i = regex.index(after: close)
        }
        return out
    }

    private static func replacement(
        for tag: String, useDNS: UseDNS, openTags: inout Set<String>,
        skipLines: inout Int
    ) -> String? {
        if tag == "HOST" { return useDNS == .no ? hostAddr : hostAny }
        if tag == "SKIPLINES" {
            defer { skipLines += 1 }
            return #"\n(?P<skiplines"# + String(skipLines) + #">(?:(?:.*\n)*?))"#
        }
        if let fixed = staticTags[tag] { return fixed }
        // <F-NAME> … </F-NAME>: custom captures, upper case names only.
        var name = Substring(tag)
        let closing = name.hasPrefix("/")
        if closing { name = name.dropFirst() }
        guard name.hasPrefix("F-") else { return nil }
        name = name.dropFirst(2)
        guard !name.isEmpty, name.allSatisfy({ ($0.isUppercase && $0.isASCII) || $0.isNumber || $0 == "_" || $0 == "-" }) else {
            return nil
        }
        let key = String(name)
        if closing {
            return openTags.contains(key) ? ")" : nil
        }
        openTags.insert(key)
        return "(?P<" + groupName(forTag: key) + ">"
    }

    /// fail2ban turns a global flag group at the start of a group into a local one: `((?i)x)` → `(?i:x)`.
    public static func localizeFlags(_ regex: String) -> String {
        let chars = Array(regex)
        var out = ""
        var i = 0
        while i < chars.count {
            if chars[i] == "(" && (i == 0 || chars[i - 1] != "\\") {
                var j = i + 1
                if j + 1 < chars.count && chars[j] == "?" && chars[j + 1] == ":" { j += 2 }
                if j + 2 < chars.count && chars[j] == "(" && chars[j + 1] == "?" {
                    var k = j + 2
                    while k < chars.count && chars[k] >= "a" && chars[k] <= "z" { k += 1 }
                    if k > j + 2 && k < chars.count && chars[k] == ")" {
                        out += "(?" + String(chars[(j + 2)..<k]) + ":"
                        i = k + 1
                        continue
                    }
                }
            }
            out.append(chars[i])
            i += 1
        }
        return out
    }
}
