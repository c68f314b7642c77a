/// Parses the ISO 8601 times the command line accepts: `2026-11-28T07:00:00Z`, with an optional fraction and
/// an optional offset (`+01:00`); without an offset the time is local (`TZ`). A bare number is epoch seconds.
public enum ISO8601 {
    public static func parse(_ text: String) -> Double? {
        if let epoch = Double(text), !text.contains("-") { return epoch }
        let s = Array(text.utf8)
        func num(_ from: Int, _ count: Int) -> Int? {
            guard from + count <= s.count else { return nil }
            var v = 0
            for i in from..<(from + count) {
                guard s[i] >= 48 && s[i] <= 57 else { return nil }
                v = v * 10 + Int(s[i] - 48)
            }
            return v
        }
        guard let y = num(0, 4), s.count >= 10, s[4] == 45, let mo = num(5, 2), s[7] == 45, let d = num(8, 2) else { return nil }
        var h = 0, mi = 0, sec = 0
        var fraction = 0.0
        var i = 10
        if i < s.count && (s[i] == 84 || s[i] == 32) {
            guard let hh = num(i + 1, 2), s.count > i + 3, s[i + 3] == 58, let mm = num(i + 4, 2) else { return nil }
            h = hh; mi = mm; i += 6
            if i < s.count && s[i] == 58 {
                guard let ss = num(i + 1, 2) else { return nil }
                sec = ss; i += 3
            }
            if i < s.count && (s[i] == 46 || s[i] == 44) {
                var j = i + 1
                var digits = "0."
                while j < s.count && s[j] >= 48 && s[j] <= 57 { digits.append(Character(UnicodeScalar(s[j]))); j += 1 }
                fraction = Double(digits) ?? 0
                i = j
            }
        }
        guard let naive = CivilTime.naive(y, mo, d, h, mi, sec) else { return nil }
        if i == s.count { return CivilTime.epoch(fromLocalNaive: naive) + fraction }
        if s[i] == 90 && i + 1 == s.count { return Double(naive) + fraction }
        let rest = String(decoding: s[i...], as: UTF8.self)
        guard rest.first == "+" || rest.first == "-", let offset = ZoneOffsets.offset(rest) else { return nil }
        return Double(naive - offset * 60) + fraction
    }
}
