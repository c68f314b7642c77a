import Engine
import Foundation

/// A response before it is framed: the event loop adds the framing fields (Content-Length, Date, Connection).
public struct HTTPResponse: Sendable {
    public var status: Int
    public var headers: [(name: String, value: String)]
    public var body: [UInt8]

    public init(status: Int, headers: [(name: String, value: String)] = [], body: [UInt8] = []) {
        self.status = status
        self.headers = headers
        self.body = body
    }

    public static func json(_ status: Int, _ text: String, headers: [(name: String, value: String)] = []) -> HTTPResponse {
        HTTPResponse(status: status, headers: [("Content-Type", "application/json")] + headers, body: Array(text.utf8))
    }

    /// An RFC 9457 problem document. `type` stays `about:blank` (the status says what kind of problem it is);
    /// `detail` says what was wrong with this request.
    public static func problem(_ status: Int, _ detail: String, headers: [(name: String, value: String)] = []) -> HTTPResponse {
        var o = JSONObject()
        o.string("type", "about:blank")
        o.string("title", HTTPResponse.reason(status))
        o.int("status", status)
        o.string("detail", detail)
        return HTTPResponse(status: status, headers: [("Content-Type", "application/problem+json")] + headers, body: Array(o.text.utf8))
    }

    public static func reason(_ status: Int) -> String {
        switch status {
        case 100: "Continue"
        case 200: "OK"
        case 201: "Created"
        case 204: "No Content"
        case 400: "Bad Request"
        case 401: "Unauthorized"
        case 403: "Forbidden"
        case 404: "Not Found"
        case 405: "Method Not Allowed"
        case 408: "Request Timeout"
        case 409: "Conflict"
        case 411: "Length Required"
        case 413: "Content Too Large"
        case 414: "URI Too Long"
        case 415: "Unsupported Media Type"
        case 417: "Expectation Failed"
        case 422: "Unprocessable Content"
        case 431: "Request Header Fields Too Large"
        case 500: "Internal Server Error"
        case 501: "Not Implemented"
        case 503: "Service Unavailable"
        case 505: "HTTP Version Not Supported"
        default: "Status \(status)"
        }
    }

    /// The bytes on the wire. `head` leaves the body out but keeps its length (RFC 9110 §9.3.2).
    func serialize(date: String, keepAlive: Bool, http10: Bool, head: Bool, into out: inout [UInt8]) {
        out.append(contentsOf: "HTTP/1.1 \(status) \(HTTPResponse.reason(status))\r\n".utf8)
        for (name, value) in headers {
            out.append(contentsOf: name.utf8)
            out.append(contentsOf: ": ".utf8)
            out.append(contentsOf: value.utf8)
            out.append(contentsOf: "\r\n".utf8)
        }
        out.append(contentsOf: "Content-Length: \(body.count)\r\nDate: ".utf8)
        out.append(contentsOf: date.utf8)
        if !keepAlive {
            out.append(contentsOf: "\r\nConnection: close".utf8)
        } else if http10 {
            out.append(contentsOf: "\r\nConnection: keep-alive".utf8)
        }
        out.append(contentsOf: "\r\n\r\n".utf8)
        if !head { out.append(contentsOf: body) }
    }
}

/// A JSON object written field by field (the API's documents are small and flat; Foundation's encoder would
/// cost more than the rest of a request).
public struct JSONObject {
    private var out = "{"
    private var first = true

    public init() {}

    private mutating func key(_ k: String) {
        if !first { out += "," }
        first = false
        out += JSONText.quote(k)
        out += ":"
    }

    public mutating func string(_ k: String, _ v: String) { key(k); out += JSONText.quote(v) }
    public mutating func optionalString(_ k: String, _ v: String?) { key(k); out += v.map(JSONText.quote) ?? "null" }
    public mutating func int(_ k: String, _ v: Int) { key(k); out += String(v) }
    public mutating func double(_ k: String, _ v: Double) {
        key(k)
        out += v == v.rounded() && abs(v) < 1e15 ? String(Int64(v)) : String(v)
    }
    public mutating func bool(_ k: String, _ v: Bool) { key(k); out += v ? "true" : "false" }
    public mutating func raw(_ k: String, _ json: String) { key(k); out += json }
    public mutating func strings(_ k: String, _ v: [String]) { key(k); out += JSONObject.array(v.map(JSONText.quote)) }

    public var text: String { out + "}" }

    public static func array(_ elements: [String]) -> String { "[" + elements.joined(separator: ",") + "]" }
}

/// Times in the API: RFC 3339 in UTC, whole seconds (ban times are not finer than that).
public enum RFC3339 {
    public static func format(_ t: Double) -> String {
        var seconds = time_t(t.rounded(.down))
        var tm = tm()
        gmtime_r(&seconds, &tm)
        // By hand: String(format:) costs more than the rest of a ban's JSON (a page holds 100 bans, two times each).
        var bytes = [UInt8](repeating: 0, count: 20)
        func put(_ value: Int32, _ at: Int, _ digits: Int) {
            var v = value
            for i in stride(from: at + digits - 1, through: at, by: -1) {
                bytes[i] = UInt8(48 + v % 10)
                v /= 10
            }
        }
        put(tm.tm_year + 1900, 0, 4); bytes[4] = 45
        put(tm.tm_mon + 1, 5, 2); bytes[7] = 45
        put(tm.tm_mday, 8, 2); bytes[10] = 84
        put(tm.tm_hour, 11, 2); bytes[13] = 58
        put(tm.tm_min, 14, 2); bytes[16] = 58
        put(tm.tm_sec, 17, 2); bytes[19] = 90
        return String(decoding: bytes, as: UTF8.self)
    }

    /// The IMF-fixdate of the Date header (RFC 9110 §5.6.7).
    public static func httpDate(_ t: Double) -> String {
        var seconds = time_t(t.rounded(.down))
        var tm = tm()
        gmtime_r(&seconds, &tm)
        let days = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"]
        let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
        return days[Int(tm.tm_wday)] + String(format: ", %02d ", Int(tm.tm_mday)) + months[Int(tm.tm_mon)]
            + String(format: " %04d %02d:%02d:%02d GMT", Int(tm.tm_year) + 1900, Int(tm.tm_hour), Int(tm.tm_min), Int(tm.tm_sec))
    }
}
