/// A strict reader for the API's small JSON bodies (RFC 8259, nothing more): duplicate keys, trailing commas,
/// comments, bare words and trailing garbage are errors, with the byte offset. Foundation's JSONSerialization
/// keeps the last of duplicate keys silently, so that `{"ip": "192.0.2.1", "ip": "203.0.113.9"}` would mean
/// whichever a reader happened to pick.
enum StrictJSON {
    indirect enum Value: Equatable {
        case string(String)
        case number(Double)
        case bool(Bool)
        case null
        case array([Value])
        case object([(String, Value)])

        static func == (a: Value, b: Value) -> Bool {
            switch (a, b) {
            case (.string(let x), .string(let y)): x == y
            case (.number(let x), .number(let y)): x == y
            case (.bool(let x), .bool(let y)): x == y
            case (.null, .null): true
            case (.array(let x), .array(let y)): x == y
            case (.object(let x), .object(let y)): x.map(\.0) == y.map(\.0) && x.map(\.1) == y.map(\.1)
            default: false
            }
        }
    }

    struct Failure: Error, CustomStringConvertible {
        let message: String
        let offset: Int
        var description: String { "\(message) at byte \(offset)" }
    }

    /// Parses a whole document (at most 64 levels deep).
    static func parse(_ bytes: [UInt8]) throws(Failure) -> Value {
        var p = Parser(b: bytes)
        p.space()
        let v = try p.value(depth: 0)
        p.space()
        guard p.i == bytes.count else { throw Failure(message: "unexpected data after the JSON value", offset: p.i) }
        return v
    }

    private struct Parser {
        let b: [UInt8]
        var i = 0

        mutating func space() { while i < b.count, [0x20, 0x09, 0x0a, 0x0d].contains(b[i]) { i += 1 } }

        func fail(_ m: String) -> Failure { Failure(message: m, offset: i) }

        mutating func value(depth: Int) throws(Failure) -> Value {
            guard depth < 64 else { throw fail("nested too deeply") }
            guard i < b.count else { throw fail("a value is missing") }
            switch b[i] {
            case UInt8(ascii: "{"): return try object(depth: depth)
            case UInt8(ascii: "["): return try array(depth: depth)
            case UInt8(ascii: "\""): return .string(try string())
            case UInt8(ascii: "t"): try word("true"); return .bool(true)
            case UInt8(ascii: "f"): try word("false"); return .bool(false)
            case UInt8(ascii: "n"): try word("null"); return .null
            default: return .number(try number())
            }
        }

        mutating func word(_ w: String) throws(Failure) {
            let u = Array(w.utf8)
            guard i + u.count <= b.count, Array(b[i..<(i + u.count)]) == u else { throw fail("not a JSON value") }
            i += u.count
        }

        mutating func object(depth: Int) throws(Failure) -> Value {
            i += 1
            var members: [(String, Value)] = []
            var keys = Set<String>()
            space()
            if i < b.count && b[i] == UInt8(ascii: "}") { i += 1; return .object([]) }
            while true {
                space()
                guard i < b.count, b[i] == UInt8(ascii: "\"") else { throw fail("a member name (a string) is expected") }
                let at = i
                let key = try string()
                guard keys.insert(key).inserted else { throw Failure(message: "the member \"\(key)\" appears twice", offset: at) }
                space()
                guard i < b.count, b[i] == UInt8(ascii: ":") else { throw fail("':' is expected") }
                i += 1
                space()
                members.append((key, try value(depth: depth + 1)))
                space()
                guard i < b.count else { throw fail("'}' is missing") }
                if b[i] == UInt8(ascii: ",") { i += 1; continue }
                if b[i] == UInt8(ascii: "}") { i += 1; return .object(members) }
                throw fail("',' or '}' is expected")
            }
        }

        mutating func array(depth: Int) throws(Failure) -> Value {
            i += 1
            var items: [Value] = []
            space()
            if i < b.count && b[i] == UInt8(ascii: "]") { i += 1; return .array([]) }
            while true {
                space()
                items.append(try value(depth: depth + 1))
                space()
                guard i < b.count else { throw fail("']' is missing") }
                if b[i] == UInt8(ascii: ",") { i += 1; continue }
                if b[i] == UInt8(ascii: "]") { i += 1; return .array(items) }
                throw fail("',' or ']' is expected")
            }
        }

        mutating func string() throws(Failure) -> String {
            i += 1
            var out: [UInt8] = []
            while true {
                guard i < b.count else { throw fail("the string is not closed") }
                let c = b[i]
                if c == UInt8(ascii: "\"") { i += 1; break }
                guard c >= 0x20 else { throw fail("a control character in a string") }
                if c != UInt8(ascii: "\\") { out.append(c); i += 1; continue }
                i += 1
                guard i < b.count else { throw fail("the string is not closed") }
                let e = b[i]
                i += 1
                switch e {
                case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"): out.append(e)
                case UInt8(ascii: "b"): out.append(8)
                case UInt8(ascii: "f"): out.append(12)
                case UInt8(ascii: "n"): out.append(10)
                case UInt8(ascii: "r"): out.append(13)
                case UInt8(ascii: "t"): out.append(9)
                case UInt8(ascii: "u"):
                    var code = try hex4()
                    if (0xD800..<0xDC00).contains(code) {
                        guard i + 1 < b.count, b[i] == UInt8(ascii: "\\"), b[i + 1] == UInt8(ascii: "u") else { throw fail("a lone surrogate") }
                        i += 2
                        let low = try hex4()
                        guard (0xDC00..<0xE000).contains(low) else { throw fail("a lone surrogate") }
                        code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00)
                    } else if (0xDC00..<0xE000).contains(code) {
                        throw fail("a lone surrogate")
                    }
                    out.append(contentsOf: Array(String(Character(Unicode.Scalar(code)!)).utf8))
                default: throw fail("an unknown escape")
                }
            }
            guard let s = String(validating: out, as: UTF8.self) else { throw fail("the string is not UTF-8") }
            return s
        }

        mutating func hex4() throws(Failure) -> UInt32 {
            guard i + 4 <= b.count else { throw fail("a \\u escape needs four hex digits") }
            var v: UInt32 = 0
            for _ in 0..<4 {
                let c = b[i]
                let d: UInt32
                switch c {
                case 0x30...0x39: d = UInt32(c - 0x30)
                case 0x41...0x46: d = UInt32(c - 0x41 + 10)
                case 0x61...0x66: d = UInt32(c - 0x61 + 10)
                default: throw fail("a \\u escape needs four hex digits")
                }
                v = v << 4 | d
                i += 1
            }
            return v
        }

        mutating func number() throws(Failure) -> Double {
            let start = i
            if i < b.count && b[i] == UInt8(ascii: "-") { i += 1 }
            guard i < b.count, (0x30...0x39).contains(b[i]) else { throw fail("not a JSON value") }
            if b[i] == 0x30 { i += 1 } else { while i < b.count, (0x30...0x39).contains(b[i]) { i += 1 } }
            if i < b.count && b[i] == UInt8(ascii: ".") {
                i += 1
                guard i < b.count, (0x30...0x39).contains(b[i]) else { throw fail("a digit is expected after '.'") }
                while i < b.count, (0x30...0x39).contains(b[i]) { i += 1 }
            }
            if i < b.count && (b[i] == UInt8(ascii: "e") || b[i] == UInt8(ascii: "E")) {
                i += 1
                if i < b.count && (b[i] == UInt8(ascii: "+") || b[i] == UInt8(ascii: "-")) { i += 1 }
                guard i < b.count, (0x30...0x39).contains(b[i]) else { throw fail("a digit is expected in the exponent") }
                while i < b.count, (0x30...0x39).contains(b[i]) { i += 1 }
            }
            guard let v = Double(String(decoding: b[start..<i], as: UTF8.self)) else { throw Failure(message: "not a number", offset: start) }
            return v
        }
    }
}
