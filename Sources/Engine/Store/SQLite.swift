import CSQLite
import FoundationEssentials
import Glibc

/// A failed SQLite call, with the statement that failed.
public struct SQLiteError: Error, CustomStringConvertible, Sendable {
    public let resultCode: Int32
    public let message: String
    public let sql: String?

    public var description: String {
        "SQLite error \(resultCode): \(message)" + (sql.map { " (in: \($0))" } ?? "")
    }
}

/// One SQLite connection. The corresponding C type is `sqlite3`; it is closed when this is released.
/// Not thread-safe: its owner serialises access.
final class SQLiteDatabase {
    let handle: OpaquePointer
    let path: String

    init(path: String) throws(SQLiteError) {
        var db: OpaquePointer? = nil
        let flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX
        let rc = sqlite3_open_v2(path, &db, flags, nil)
        guard rc == SQLITE_OK, let db else {
            let message = db.map { String(cString: sqlite3_errmsg($0)) } ?? "cannot open"
            if let db { sqlite3_close_v2(db) }
            throw SQLiteError(resultCode: rc, message: "\(message): \(path)", sql: nil)
        }
        handle = db
        self.path = path
        sqlite3_busy_timeout(db, 5000)
    }

    deinit {
        cache = [:]
        sqlite3_close_v2(handle)
    }

    func releaseMemory() { _ = sqlite3_db_release_memory(handle) }

    func error(_ rc: Int32, _ sql: String?) -> SQLiteError {
        SQLiteError(resultCode: rc, message: String(cString: sqlite3_errmsg(handle)), sql: sql)
    }

    func execute(_ sql: String) throws(SQLiteError) {
        let rc = sqlite3_exec(handle, sql, nil, nil, nil)
        guard rc == SQLITE_OK else { throw error(rc, sql) }
    }

    private var cache: [String: Statement] = [:]

    /// A prepared statement for `sql`, compiled once and reused (the connection is used by one thread at a time).
    func prepare(_ sql: String) throws(SQLiteError) -> Statement {
        if let s = cache[sql] { return s }
        let s = try compile(sql)
        cache[sql] = s
        return s
    }

    func compile(_ sql: String) throws(SQLiteError) -> Statement {
        var stmt: OpaquePointer? = nil
        let rc = sqlite3_prepare_v2(handle, sql, -1, &stmt, nil)
        guard rc == SQLITE_OK, let stmt else { throw error(rc, sql) }
        return Statement(stmt, database: self, sql: sql)
    }

    /// Runs `body` in one transaction, committed only if it returns.
    func transaction<T>(_ body: () throws -> T) throws -> T {
        try execute("BEGIN IMMEDIATE")
        do {
            let result = try body()
            try execute("COMMIT")
            return result
        } catch {
            try? execute("ROLLBACK")
            throw error
        }
    }

    var userVersion: Int {
        (try? compile("PRAGMA user_version").firstInt()) ?? 0
    }
}

/// A prepared statement; finalized when released. The corresponding C type is `sqlite3_stmt`.
final class Statement {
    let handle: OpaquePointer
    // unowned: the database owns its cached statements and outlives them.
    unowned let database: SQLiteDatabase
    let sql: String

    init(_ handle: OpaquePointer, database: SQLiteDatabase, sql: String) {
        self.handle = handle
        self.database = database
        self.sql = sql
    }

    deinit { sqlite3_finalize(handle) }

    /// A bind's result: SQLITE_RANGE (a wrong index), SQLITE_TOOBIG, SQLITE_NOMEM must not leave a parameter
    /// silently NULL.
    private func checked(_ rc: Int32) throws(SQLiteError) {
        if rc != SQLITE_OK { throw database.error(rc, sql) }
    }

    func bind(_ values: [SQLValue]) throws(SQLiteError) {
        sqlite3_reset(handle)
        sqlite3_clear_bindings(handle)
        for (i, v) in values.enumerated() {
            let index = Int32(i + 1)
            switch v {
            case .null: try checked(sqlite3_bind_null(handle, index))
            case .int(let n): try checked(sqlite3_bind_int64(handle, index, Int64(n)))
            case .double(let d): try checked(sqlite3_bind_double(handle, index, d))
            case .text(let s): try checked(sqlite3_bind_text(handle, index, s, -1, csqlite_transient()))
            case .blob(let b):
                let rc = b.withUnsafeBytes { raw in
                    sqlite3_bind_blob(handle, index, raw.baseAddress, Int32(raw.count), csqlite_transient())
                }
                try checked(rc)
            }
        }
    }

    // Binding without building arrays (the per-ban path). Indexes start at 1, as in SQLite.
    func reset() {
        sqlite3_reset(handle)
    }
    func bind(_ i: Int32, _ s: String) throws(SQLiteError) { try checked(sqlite3_bind_text(handle, i, s, -1, csqlite_transient())) }
    func bind(_ i: Int32, _ d: Double) throws(SQLiteError) { try checked(sqlite3_bind_double(handle, i, d)) }
    func bind(_ i: Int32, _ n: Int) throws(SQLiteError) { try checked(sqlite3_bind_int64(handle, i, Int64(n))) }

    /// Steps once; true while there is a row.
    func step() throws(SQLiteError) -> Bool {
        let rc = sqlite3_step(handle)
        if rc == SQLITE_ROW { return true }
        if rc == SQLITE_DONE { return false }
        throw database.error(rc, sql)
    }

    func run(_ values: [SQLValue] = []) throws(SQLiteError) {
        try bind(values)
        while try step() {}
    }

    func rows(_ values: [SQLValue] = []) throws(SQLiteError) -> [Row] {
        try bind(values)
        var result: [Row] = []
        while try step() { result.append(Row(statement: self)) }
        return result
    }

    /// The first column of the first row. The statement is reset before returning: one left on a row would keep
    /// its read transaction (and the snapshot) open.
    func firstInt(_ values: [SQLValue] = []) throws(SQLiteError) -> Int? {
        defer { sqlite3_reset(handle) }
        try bind(values)
        guard try step() else { return nil }
        return Int(sqlite3_column_int64(handle, 0))
    }

    // Column readers for the current row (fast paths that build no `Row`).
    func text(_ i: Int32) -> String {
        guard let p = sqlite3_column_text(handle, i) else { return "" }
        return String(cString: p)
    }
    func double(_ i: Int32) -> Double { sqlite3_column_double(handle, i) }
    func int(_ i: Int32) -> Int { Int(sqlite3_column_int64(handle, i)) }
    /// An address (parsed without making a String: 100,000 of them at a restart) or a network (`2001:db8::/64`).
    func ipNetwork(_ i: Int32) -> IPNetwork? {
        guard let p = sqlite3_column_text(handle, i) else { return nil }
        return p.withMemoryRebound(to: CChar.self, capacity: 1) { c in
            if strchr(c, 47) != nil { return IPNetwork(String(cString: c)) }  // '/'
            return IPAddress(cString: c).map { IPNetwork($0) }
        }
    }

    struct Row {
        let values: [SQLValue]
        init(statement: Statement) {
            let h = statement.handle
            values = (0..<sqlite3_column_count(h)).map { i in
                switch sqlite3_column_type(h, i) {
                case SQLITE_INTEGER: return .int(Int(sqlite3_column_int64(h, i)))
                case SQLITE_FLOAT: return .double(sqlite3_column_double(h, i))
                case SQLITE_TEXT: return .text(String(cString: sqlite3_column_text(h, i)))
                case SQLITE_BLOB:
                    let n = Int(sqlite3_column_bytes(h, i))
                    guard n > 0, let p = sqlite3_column_blob(h, i) else { return .blob([]) }
                    return .blob(Array(UnsafeRawBufferPointer(start: p, count: n)))
                default: return .null
                }
            }
        }
        func text(_ i: Int) -> String { if case .text(let s) = values[i] { return s }; return "" }
        func double(_ i: Int) -> Double {
            switch values[i] {
            case .double(let d): return d;
            case .int(let n): return Double(n);
            default: return 0
            }
        }
        func int(_ i: Int) -> Int {
            switch values[i] {
            case .int(let n): return n;
            case .double(let d): return Int(d);
            default: return 0
            }
        }
        func blob(_ i: Int) -> [UInt8] { if case .blob(let b) = values[i] { return b }; return [] }
        func isNull(_ i: Int) -> Bool { if case .null = values[i] { return true }; return false }
    }
}

enum SQLValue {
    case null
    case int(Int)
    case double(Double)
    case text(String)
    case blob([UInt8])
}
