/// A request target split into decoded path segments and query parameters.
struct RequestTarget: Equatable {
    var segments: [String]
    var query: [(name: String, value: String)]

    static func == (a: RequestTarget, b: RequestTarget) -> Bool {
        a.segments == b.segments && a.query.map { $0.name + "=" + $0.value } == b.query.map { $0.name + "=" + $0.value }
    }

    struct Invalid: Error {
        let detail: String
    }

    /// Origin form (`/bans/2001:db8::1?x=y`) or absolute form (`http://host/bans`). Segments are decoded one by
    /// one, so an encoded slash stays inside its segment.
    init(_ target: String) throws(Invalid) {
        var t = Substring(target)
        if t.hasPrefix("http://") || t.hasPrefix("https://") {
            let afterScheme = t[t.index(t.firstIndex(of: ":")!, offsetBy: 3)...]
            t = afterScheme.firstIndex(of: "/").map { afterScheme[$0...] } ?? "/"
        }
        guard t.hasPrefix("/") else { throw Invalid(detail: "the request target must be a path starting with /") }
        if let hash = t.firstIndex(of: "#") { t = t[..<hash] }
        let pathPart: Substring
        var queryPart: Substring = ""
        if let q = t.firstIndex(of: "?") {
            pathPart = t[..<q]
            queryPart = t[t.index(after: q)...]
        } else {
            pathPart = t
        }
        var segments: [String] = []
        for raw in pathPart.split(separator: "/", omittingEmptySubsequences: true) {
            guard let s = RequestTarget.decode(raw, plusIsSpace: false) else {
                throw Invalid(detail: "invalid percent-encoding in the path")
            }
            segments.append(s)
        }
        var query: [(String, String)] = []
        for pair in queryPart.split(separator: "&", omittingEmptySubsequences: true) {
            let eq = pair.firstIndex(of: "=")
            let rawName = eq.map { pair[..<$0] } ?? pair
            let rawValue = eq.map { pair[pair.index(after: $0)...] } ?? ""
            guard let name = RequestTarget.decode(rawName, plusIsSpace: true),
                  let value = RequestTarget.decode(rawValue, plusIsSpace: true) else {
                throw Invalid(detail: "invalid percent-encoding in the query")
            }
            query.append((name, value))
        }
        self.segments = segments
        self.query = query
    }

    func parameter(_ name: String) -> String? { query.first { $0.name == name }?.value }

    /// Percent-decoding to UTF-8; nil for a broken escape or bytes that are not UTF-8.
    static func decode(_ s: Substring, plusIsSpace: Bool) -> String? {
        if !s.utf8.contains(UInt8(ascii: "%")) && !(plusIsSpace && s.utf8.contains(UInt8(ascii: "+"))) { return String(s) }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(s.utf8.count)
        var it = s.utf8.makeIterator()
        func hex(_ c: UInt8) -> UInt8? {
            switch c {
            case 48...57: c - 48
            case 65...70: c - 55
            case 97...102: c - 87
            default: nil
            }
        }
        while let c = it.next() {
            if c == UInt8(ascii: "%") {
                guard let h = it.next().flatMap(hex), let l = it.next().flatMap(hex) else { return nil }
                bytes.append(h << 4 | l)
            } else if plusIsSpace && c == UInt8(ascii: "+") {
                bytes.append(32)
            } else {
                bytes.append(c)
            }
        }
        return String(validating: bytes, as: UTF8.self)
    }
}
