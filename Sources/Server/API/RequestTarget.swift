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
    /// one, so an encoded slash stays inside its segment. Works on the bytes: this runs for every request.
    init(_ target: String) throws(Invalid) {
        var bytes = Array(target.utf8)[...]
        let slash = UInt8(ascii: "/"), question = UInt8(ascii: "?"), hash = UInt8(ascii: "#")
        if bytes.starts(with: "http://".utf8) || bytes.starts(with: "https://".utf8) {
            let afterScheme = bytes.dropFirst(bytes.starts(with: "http://".utf8) ? 7 : 8)
            bytes = afterScheme.firstIndex(of: slash).map { afterScheme[$0...] } ?? Array("/".utf8)[...]
        }
        guard bytes.first == slash else { throw Invalid(detail: "the request target must be a path starting with /") }
        if let h = bytes.firstIndex(of: hash) { bytes = bytes[..<h] }
        var pathPart = bytes
        var queryPart = bytes[bytes.endIndex...]
        if let q = bytes.firstIndex(of: question) {
            pathPart = bytes[..<q]
            queryPart = bytes[(q + 1)...]
        }
        var segments: [String] = []
        for raw in pathPart.split(separator: slash, omittingEmptySubsequences: true) {
            guard let s = RequestTarget.decode(raw, plusIsSpace: false) else {
                throw Invalid(detail: "invalid percent-encoding in the path")
            }
            segments.append(s)
        }
        var query: [(String, String)] = []
        for pair in queryPart.split(separator: UInt8(ascii: "&"), omittingEmptySubsequences: true) {
            let eq = pair.firstIndex(of: UInt8(ascii: "="))
            let rawName = eq.map { pair[..<$0] } ?? pair
            let rawValue = eq.map { pair[($0 + 1)...] } ?? pair[pair.endIndex...]
            guard let name = RequestTarget.decode(rawName, plusIsSpace: true),
                let value = RequestTarget.decode(rawValue, plusIsSpace: true)
            else {
                throw Invalid(detail: "invalid percent-encoding in the query")
            }
            query.append((name, value))
        }
        self.segments = segments
        self.query = query
    }

    func parameter(_ name: String) -> String? { query.first { $0.name == name }?.value }

    /// Percent-decoding to UTF-8; nil for a broken escape or bytes that are not UTF-8.
    static func decode(_ s: ArraySlice<UInt8>, plusIsSpace: Bool) -> String? {
        if !s.contains(UInt8(ascii: "%")) && !(plusIsSpace && s.contains(UInt8(ascii: "+"))) {
            return String(validating: s, as: UTF8.self)
        }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(s.count)
        var it = s.makeIterator()
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
