import Glibc

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
        func two(_ v: Int32) -> String { v < 10 ? "0" + String(v) : String(v) }
        return days[Int(tm.tm_wday)] + ", " + two(tm.tm_mday) + " " + months[Int(tm.tm_mon)] + " " + String(tm.tm_year + 1900)
            + " " + two(tm.tm_hour) + ":" + two(tm.tm_min) + ":" + two(tm.tm_sec) + " GMT"
    }
}
