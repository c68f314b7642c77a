import Platform

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
