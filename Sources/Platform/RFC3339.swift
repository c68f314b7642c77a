import Glibc

/// Times in the API and the log: RFC 3339 in UTC.
public enum RFC3339 {
    /// Whole seconds (ban times are not finer than that): `2026-12-06T19:19:01Z`.
    public static func format(_ t: Double) -> String {
        format(seconds: Int(t.rounded(.down)), milliseconds: nil)
    }

    /// With milliseconds when given (the log's stamps): `2026-12-06T19:19:01.507Z`.
    public static func format(seconds: Int, milliseconds: Int?) -> String {
        var seconds = time_t(seconds)
        var tm = tm()
        gmtime_r(&seconds, &tm)
        // By hand: String(format:) costs more than the rest of a ban's JSON (a page holds 100 bans, two times each).
        var bytes = [UInt8](repeating: 0, count: milliseconds == nil ? 20 : 24)
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
        put(tm.tm_sec, 17, 2)
        if let milliseconds {
            bytes[19] = 46
            put(Int32(milliseconds), 20, 3)
        }
        bytes[bytes.count - 1] = 90
        return String(decoding: bytes, as: UTF8.self)
    }

    /// The IMF-fixdate of the Date header (RFC 9110 §5.6.7).
    public static func httpDate(_ t: Double) -> String {
        var seconds = time_t(t.rounded(.down))
        var tm = tm()
        gmtime_r(&seconds, &tm)
        let days = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"]
        let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
        func two(_ v: Int32) -> String { v < 10 ? "0" + String(v) : String(v) }
        return days[Int(tm.tm_wday)] + ", " + two(tm.tm_mday) + " " + months[Int(tm.tm_mon)] + " " + String(tm.tm_year + 1900)
            + " " + two(tm.tm_hour) + ":" + two(tm.tm_min) + ":" + two(tm.tm_sec) + " GMT"
    }
}
