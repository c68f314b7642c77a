import CPostgres
import Glibc
import Platform

/// What libpq or the server said, in libpq's own words (they name the host, the role, the TLS problem).
public struct PostgresError: Error, CustomStringConvertible, Sendable, Equatable {
    public let message: String
    /// The SQLSTATE when the server answered (42P01: no such table; 42501: not allowed), nil otherwise.
    public let sqlState: String?

    public init(_ message: String, sqlState: String? = nil) {
        self.message = message
        self.sqlState = sqlState
    }

    public var description: String { message }
}

/// One connection to PostgreSQL through libpq, used by one thread (the cluster link's). Every wait is a poll of
/// the connection's socket beside the owner's wake-up, with a deadline: a server that stops answering costs a
/// timeout, and a stop never waits for it. Values always travel as parameters, in text form, never in the SQL.
final class PostgresConnection {
    /// libpq's connection, owned by this object: made by `connect`, closed (PQfinish) in deinit.
    private let conn: OpaquePointer
    private let thread: StoppableThread

    private init(conn: OpaquePointer, thread: StoppableThread) {
        self.conn = conn
        self.thread = thread
    }

    deinit { PQfinish(conn) }

    /// Connects without blocking the owner's thread beyond `timeout`. `parameters` are libpq's keywords; a
    /// `dbname` holding a connection string (`host=… sslmode=…` or a `postgresql://` URI) is expanded in place, and
    /// the parameters after it win over it.
    static func connect(_ parameters: [(String, String)], thread: StoppableThread, timeout: Double) throws(PostgresError) -> PostgresConnection {
        // strdup'ed copies, freed when this returns: libpq copies what it keeps during PQconnectStartParams.
        let keys = parameters.map { strdup($0.0) }
        let values = parameters.map { strdup($0.1) }
        defer {
            for p in keys { free(p) }
            for p in values { free(p) }
        }
        var keyPointers: [UnsafePointer<CChar>?] = keys.map { UnsafePointer($0) } + [nil]
        var valuePointers: [UnsafePointer<CChar>?] = values.map { UnsafePointer($0) } + [nil]
        guard let c = PQconnectStartParams(&keyPointers, &valuePointers, 1) else { throw PostgresError("libpq could not start a connection (out of memory)") }
        let connection = PostgresConnection(conn: c, thread: thread)
        if PQstatus(c) == CONNECTION_BAD { throw PostgresError(connection.lastError) }
        let deadline = Clock.monotonic() + timeout
        var state = PGRES_POLLING_WRITING
        while true {
            switch state {
            case PGRES_POLLING_OK:
                guard PQsetnonblocking(c, 1) == 0 else { throw PostgresError(connection.lastError) }
                return connection
            case PGRES_POLLING_FAILED:
                throw PostgresError(connection.lastError)
            case PGRES_POLLING_READING:
                try connection.wait(forReading: true, until: deadline, doing: "connecting")
            default:
                try connection.wait(forReading: false, until: deadline, doing: "connecting")
            }
            state = PQconnectPoll(c)
        }
    }

    /// libpq's message for the last failure, one line.
    var lastError: String {
        let text = PostgresConnection.oneLine(PQerrorMessage(conn))
        return text.isEmpty ? "the connection failed" : text
    }

    /// libpq's messages span lines (`FATAL: …`, `DETAIL: …`): one line for the log and the API.
    static func oneLine(_ message: UnsafePointer<CChar>?) -> String {
        let text = message.map { String(cString: $0) } ?? ""
        return text.split(whereSeparator: \.isNewline).map { $0.trimmingWhitespace() }.filter { !$0.isEmpty }.joined(separator: "; ")
    }

    /// The descriptor to watch for notifications.
    var socket: Int32 { PQsocket(conn) }

    /// The server process of this session (a notification from it is our own).
    var backendPID: Int32 { PQbackendPID(conn) }

    var isBroken: Bool { PQstatus(conn) == CONNECTION_BAD }

    /// The rows of a query's answer, as text (nil for SQL NULL).
    struct Rows {
        var rows: [[String?]] = []
        var count: Int { rows.count }
    }

    /// Runs one statement with `$1…` parameters (text form) and returns its rows.
    @discardableResult
    func query(_ sql: String, _ parameters: [String?] = [], timeout: Double = 30) throws(PostgresError) -> Rows {
        let copies = parameters.map { $0.flatMap { strdup($0) } }
        defer { for p in copies { if let p { free(p) } } }
        var pointers: [UnsafePointer<CChar>?] = copies.map { $0.map { UnsafePointer($0) } }
        let sent = pointers.withUnsafeMutableBufferPointer { PQsendQueryParams(conn, sql, Int32($0.count), nil, $0.baseAddress, nil, nil, 0) }
        guard sent == 1 else { throw PostgresError(lastError) }
        return try finish(timeout: timeout)
    }

    /// Runs statements without parameters (`BEGIN; …`), in one round trip; an error in any of them is thrown.
    func execute(_ sql: String, timeout: Double = 30) throws(PostgresError) {
        guard PQsendQuery(conn, sql) == 1 else { throw PostgresError(lastError) }
        _ = try finish(timeout: timeout)
    }

    /// Sends what is buffered and reads every result of the query sent; the first error is thrown once all are read
    /// (libpq wants them all taken before the next query).
    private func finish(timeout: Double) throws(PostgresError) -> Rows {
        let deadline = Clock.monotonic() + timeout
        while true {
            let f = PQflush(conn)
            if f == 0 { break }
            guard f == 1 else { throw PostgresError(lastError) }
            try wait(forReading: false, until: deadline, doing: "sending a query")
        }
        var rows = Rows()
        var failure: PostgresError?
        while true {
            while PQisBusy(conn) != 0 {
                try wait(forReading: true, until: deadline, doing: "waiting for an answer")
                guard PQconsumeInput(conn) == 1 else { throw PostgresError(lastError) }
            }
            guard let result = PQgetResult(conn) else { break }
            defer { PQclear(result) }
            let status = PQresultStatus(result)
            if status == PGRES_TUPLES_OK {
                rows = PostgresConnection.rows(of: result)
            } else if status != PGRES_COMMAND_OK && status != PGRES_EMPTY_QUERY && failure == nil {
                let state = PQresultErrorField(result, Int32(UInt8(ascii: "C"))).map { String(cString: $0) }
                failure = PostgresError(PostgresConnection.oneLine(PQresultErrorMessage(result)), sqlState: state)
            }
        }
        if let failure { throw failure }
        return rows
    }

    private static func rows(of result: OpaquePointer) -> Rows {
        let n = Int(PQntuples(result))
        let fields = Int(PQnfields(result))
        var rows = Rows()
        rows.rows.reserveCapacity(n)
        for r in 0..<n {
            var row: [String?] = []
            row.reserveCapacity(fields)
            for f in 0..<fields {
                if PQgetisnull(result, Int32(r), Int32(f)) != 0 {
                    row.append(nil)
                } else {
                    row.append(PQgetvalue(result, Int32(r), Int32(f)).map { String(cString: $0) })
                }
            }
            rows.rows.append(row)
        }
        return rows
    }

    /// Reads what the server sent meanwhile and returns the notifications that came from other sessions.
    func takeNotifications() throws(PostgresError) -> Int {
        guard PQconsumeInput(conn) == 1 else { throw PostgresError(lastError) }
        let own = backendPID
        var count = 0
        while let n = PQnotifies(conn) {
            if n.pointee.be_pid != own { count += 1 }
            PQfreemem(n)
        }
        return count
    }

    /// Waits until the socket is ready or the deadline passes; a wake-up of the owner's thread is taken here (its
    /// queue is looked at after this operation) and a stop ends the wait with an error.
    private func wait(forReading: Bool, until deadline: Double, doing what: String) throws(PostgresError) {
        while true {
            if thread.isStopping { throw PostgresError("stopping") }
            let left = deadline - Clock.monotonic()
            guard left > 0 else { throw PostgresError("PostgreSQL did not answer in time while \(what)") }
            var fds = [
                pollfd(fd: socket, events: Int16(forReading ? POLLIN : POLLOUT), revents: 0),
                pollfd(fd: thread.wakeDescriptor, events: Int16(POLLIN), revents: 0),
            ]
            let ms = Int32(min(left * 1000, 1000).rounded(.up))
            let n = poll(&fds, 2, ms)
            if n < 0 && errno != EINTR { throw PostgresError("poll: \(String(cString: strerror(errno)))") }
            if fds[1].revents != 0 { thread.drainWake() }
            if fds[0].revents != 0 { return }
        }
    }

    /// Checks a connection string with libpq's own parser: its error when it is malformed, and whether it holds a
    /// password (which belongs in `password_file`, not in the configuration).
    static func check(conninfo: String) -> (error: String?, hasPassword: Bool) {
        var message: UnsafeMutablePointer<CChar>?
        guard let options = PQconninfoParse(conninfo, &message) else {
            defer { if let message { PQfreemem(message) } }
            let text = message.map { String(cString: $0).trimmingWhitespaceAndNewlines() } ?? "out of memory"
            return (text, false)
        }
        defer { PQconninfoFree(options) }
        var p = options
        var hasPassword = false
        while let keyword = p.pointee.keyword {
            if String(cString: keyword) == "password", let v = p.pointee.val, v.pointee != 0 { hasPassword = true }
            p += 1
        }
        return (nil, hasPassword)
    }
}
