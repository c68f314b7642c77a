import Glibc

/// Calendar arithmetic without Foundation: naive date-times are counted as seconds since 1970-01-01 00:00 of an
/// unnamed clock, which is how fail2ban's `datetime` values behave before a zone is applied.
public enum CivilTime {
    static let monthAbbrevs = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
    static let monthNames = [
        "january", "february", "march", "april", "may", "june", "july", "august", "september",
        "october", "november", "december",
    ]
    static let weekdayAbbrevs = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
    static let weekdayNames = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]

    static func isLeap(_ y: Int) -> Bool { y % 4 == 0 && (y % 100 != 0 || y % 400 == 0) }

    static func daysInMonth(_ y: Int, _ m: Int) -> Int {
        switch m {
        case 2: return isLeap(y) ? 29 : 28
        case 4, 6, 9, 11: return 30
        default: return 31
        }
    }

    /// Days since 1970-01-01 (Howard Hinnant's algorithm).
    static func daysFromCivil(_ y0: Int, _ m: Int, _ d: Int) -> Int {
        let y = m <= 2 ? y0 - 1 : y0
        let era = (y >= 0 ? y : y - 399) / 400
        let yoe = y - era * 400
        let mp = (m + 9) % 12
        let doy = (153 * mp + 2) / 5 + d - 1
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy
        return era * 146097 + doe - 719468
    }

    static func civilFromDays(_ z0: Int) -> (year: Int, month: Int, day: Int) {
        let z = z0 + 719468
        let era = (z >= 0 ? z : z - 146096) / 146097
        let doe = z - era * 146097
        let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365
        let y = yoe + era * 400
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100)
        let mp = (5 * doy + 2) / 153
        let d = doy - (153 * mp + 2) / 5 + 1
        let m = mp < 10 ? mp + 3 : mp - 9
        return (m <= 2 ? y + 1 : y, m, d)
    }

    /// Python's `datetime(...)` validity rules; nil for an impossible date.
    static func naive(_ y: Int, _ mo: Int, _ d: Int, _ h: Int, _ mi: Int, _ s: Int) -> Int? {
        guard (1...9999).contains(y), (1...12).contains(mo), d >= 1, d <= daysInMonth(y, mo),
            (0...23).contains(h), (0...59).contains(mi), (0...59).contains(s)
        else { return nil }
        return daysFromCivil(y, mo, d) * 86400 + h * 3600 + mi * 60 + s
    }

    static func fields(ofNaive n: Int) -> (year: Int, month: Int, day: Int, hour: Int, minute: Int, second: Int) {
        let days = n >= 0 ? n / 86400 : (n - 86399) / 86400
        let rest = n - days * 86400
        let (y, m, d) = civilFromDays(days)
        return (y, m, d, rest / 3600, rest % 3600 / 60, rest % 60)
    }

    /// The local wall-clock time of `epoch` as a naive value (the zone comes from `TZ`).
    public static func localNaive(_ epoch: Double) -> Int {
        var t = time_t(epoch.rounded(.down))
        var tmv = tm()
        localtime_r(&t, &tmv)
        return daysFromCivil(Int(tmv.tm_year) + 1900, Int(tmv.tm_mon) + 1, Int(tmv.tm_mday)) * 86400
            + Int(tmv.tm_hour) * 3600 + Int(tmv.tm_min) * 60 + Int(tmv.tm_sec)
    }

    /// A naive local time to epoch seconds, letting the C library decide daylight saving (`mktime`, isdst = -1).
    public static func epoch(fromLocalNaive n: Int) -> Double {
        let f = fields(ofNaive: n)
        var tmv = tm()
        tmv.tm_year = Int32(f.year - 1900)
        tmv.tm_mon = Int32(f.month - 1)
        tmv.tm_mday = Int32(f.day)
        tmv.tm_hour = Int32(f.hour)
        tmv.tm_min = Int32(f.minute)
        tmv.tm_sec = Int32(f.second)
        tmv.tm_isdst = -1
        return Double(mktime(&tmv))
    }

    public static func year(ofEpoch epoch: Double) -> Int {
        fields(ofNaive: localNaive(epoch)).year
    }
}

/// Fixed-offset time zones as fail2ban understands them (`logtimezone`, `%z`, `%Z`): `UTC`, `+0100`, `CET`,
/// `EST-0500`. Offsets are in minutes east of UTC.
public enum ZoneOffsets {
    static let table: [String: Int] = {
        let spec = """
            -12 Y
            -11 X NUT SST
            -10 W CKT HAST HST TAHT TKT
            -9 V AKST GAMT GIT HADT HNY
            -8 U AKDT CIST HAY HNP PST PT
            -7 T HAP HNR MST PDT
            -6 S CST EAST GALT HAR HNC MDT
            -5 R CDT COT EASST ECT EST ET HAC HNE PET
            -4 Q AST BOT CLT COST EDT FKT GYT HAE HNA PYT
            -3 P ADT ART BRT CLST FKST GFT HAA PMST PYST SRT UYT WGT
            -2 O BRST FNT PMDT UYST WGST
            -1 N AZOT CVT EGT
            0 Z EGST GMT UTC WET WT
            1 A CET DFT WAT WEDT WEST
            2 B CAT CEDT CEST EET SAST WAST
            3 C EAT EEDT EEST IDT MSK
            4 D AMT AZT GET GST KUYT MSD MUT RET SAMT SCT
            5 E AMST AQTT AZST HMT MAWT MVT PKT TFT TJT TMT UZT YEKT
            6 F ALMT BIOT BTT IOT KGT NOVT OMST YEKST
            7 G CXT DAVT HOVT ICT KRAT NOVST OMSST THA WIB
            8 H ACT AWST BDT BNT CAST HKT IRKT KRAST MYT PHT SGT ULAT WITA WST
            9 I AWDT IRKST JST KST PWT TLT WDT WIT YAKT
            10 K AEST ChST PGT VLAT YAKST YAPT
            11 L AEDT LHDT MAGT NCT PONT SBT VLAST VUT
            12 M ANAST ANAT FJT GILT MAGST MHT NZST PETST PETT TVT WFT
            13 FJST NZDT
            11.5 NFT
            10.5 ACDT LHST
            9.5 ACST
            6.5 CCT MMT
            5.75 NPT
            5.5 SLT
            4.5 AFT IRDT
            3.5 IRST
            -2.5 HAT NDT
            -3.5 HNT NST NT
            -4.5 HLV VET
            -9.5 MART MIT
            """
        var t: [String: Int] = ["": 0]
        for line in spec.split(separator: "\n") {
            let parts = line.split(separator: " ")
            guard let hours = Double(parts[0]) else { continue }
            for name in parts.dropFirst() { t[String(name)] = Int(hours * 60) }
        }
        return t
    }()

    /// Minutes east of UTC for `text`, nil when fail2ban would reject it. The accepted form is
    /// `[ABBR][+-]hh[[:]mm]` (fail2ban's `FIXED_OFFSET_TZ_RE`).
    public static func offset(_ text: some StringProtocol) -> Int? {
        Array(text.utf8).withUnsafeBufferPointer { offset(bytes: $0) }
    }

    static func offset(bytes s: UnsafeBufferPointer<UInt8>) -> Int? {
        // The common cases first, without building a key string.
        if s.count == 1 && s[0] == 90 { return 0 }
        var i = 0
        var abbr = ""
        if i < s.count, s[i] >= 65, s[i] <= 90 {
            var j = i + 1
            while j < s.count, s[j] >= 65, s[j] <= 90, j - i < 5 { j += 1 }
            // One letter, or three to five.
            let n = j - i
            if n == 2 { j = i + 1 }
            abbr = String(decoding: s[i..<j], as: UTF8.self)
            i = j
        }
        guard let base = abbr.isEmpty ? 0 : table[abbr] else { return nil }
        if i == s.count { return base }
        guard s[i] == 43 || s[i] == 45 else { return nil }
        let sign = s[i] == 45 ? -1 : 1
        let d = UnsafeBufferPointer(rebasing: s[(i + 1)...])
        func num(_ a: Int, _ b: Int) -> Int? {
            guard d[a] >= 48 && d[a] <= 57 && d[b] >= 48 && d[b] <= 57 else { return nil }
            return Int(d[a] - 48) * 10 + Int(d[b] - 48)
        }
        guard d.count >= 2, d[0] == 48 || d[0] == 49, let hh = num(0, 1) else { return nil }
        switch d.count {
        case 2: return base + sign * hh * 60
        case 4:
            guard let mm = num(2, 3) else { return nil }
            return base + sign * (hh * 60 + mm)
        case 5:
            guard d[2] == 58, let mm = num(3, 4) else { return nil }
            return base + sign * (hh * 60 + mm)
        default: return nil
        }
    }
}

/// The strptime fields a date regex can capture (the named groups of fail2ban's time codes).
enum TimeField: UInt8 {
    case y, Y, m, B, b, d, H, I, p, M, S, A, a, w, j, U, W, z, Z

    init?(groupName: String) {
        switch groupName {
        case "y": self = .y
        case "Y": self = .Y
        case "m": self = .m
        case "B": self = .B
        case "b": self = .b
        case "d": self = .d
        case "H": self = .H
        case "I": self = .I
        case "p": self = .p
        case "M": self = .M
        case "S": self = .S
        case "A": self = .A
        case "a": self = .a
        case "w": self = .w
        case "j": self = .j
        case "U": self = .U
        case "W": self = .W
        case "z": self = .z
        case "Z": self = .Z
        default: return nil
        }
    }
}

/// Byte-level helpers for date fields: no `String` is made for the common numeric fields.
enum FieldBytes {
    /// The decimal value of `b` (leading spaces allowed, as Python's `int()` allows), nil if not a number.
    @inline(__always)
    static func int(_ b: UnsafeBufferPointer<UInt8>) -> Int? {
        var i = 0
        while i < b.count && b[i] == 32 { i += 1 }
        guard i < b.count else { return nil }
        var v = 0
        while i < b.count {
            let c = b[i]
            guard c >= 48 && c <= 57 else { return nil }
            v = v &* 10 &+ Int(c - 48)
            i += 1
        }
        return v
    }

    /// Index of `b` (case-insensitive ASCII) in `names`.
    static func index(_ b: UnsafeBufferPointer<UInt8>, in names: [String]) -> Int? {
        let lower = String(decoding: b, as: UTF8.self).lowercased()
        return names.firstIndex(of: lower)
    }
}

/// The fields one date match captured, as integers.
struct ParsedTime: Equatable {
    var year: Int? = nil, month: Int? = nil, day: Int? = nil
    var hour = 0, minute = 0, second = 0
    var zone: Int? = nil
    var weekday: Int? = nil, julian: Int? = nil, weekOfYear: Int? = nil
    var weekStartsMonday = true
    var invalid = false
}

/// fail2ban's `reGroupDictStrptime`: captured strptime fields turned into epoch seconds. Missing years are
/// inferred from `now` and rolled back a year when the result would lie more than a day ahead; a time without a
/// date is today's, or yesterday's when it would be in the future.
///
/// Keeps two small caches, which is why it is a class owned by one date detector: the local wall-clock value of
/// `now`, and the local UTC offset of the last quarter hour converted (zone changes happen on quarter hours).
final class TimeConverter {
    private var cachedNow = Double.nan
    private var cachedNowNaive = 0
    private var cachedBucket = Int.min
    private var cachedOffset = 0

    func nowNaive(_ now: Double) -> Int {
        if now != cachedNow {
            cachedNow = now
            cachedNowNaive = CivilTime.localNaive(now)
        }
        return cachedNowNaive
    }

    func epoch(fromLocalNaive n: Int) -> Double {
        let bucket = n >= 0 ? n / 900 : (n - 899) / 900
        if bucket != cachedBucket {
            cachedBucket = bucket
            cachedOffset = n - Int(CivilTime.epoch(fromLocalNaive: n))
        }
        return Double(n - cachedOffset)
    }

    private var lastParsed = ParsedTime(invalid: true)
    private var lastZone: Int? = nil
    private var lastNow = Double.nan
    private var lastResult: Double? = nil

    /// Consecutive lines mostly carry the same second: the last conversion is reused when nothing differs.
    func epoch(_ p: ParsedTime, now: Double, defaultZone: Int?) -> Double? {
        if p.invalid { return nil }
        if p == lastParsed && defaultZone == lastZone && now == lastNow { return lastResult }
        let result = convert(p, now: now, defaultZone: defaultZone)
        lastParsed = p
        lastZone = defaultZone
        lastNow = now
        lastResult = result
        return result
    }

    private func convert(_ p: ParsedTime, now: Double, defaultZone: Int?) -> Double? {
        var year = p.year, month = p.month, day = p.day
        var julian = p.julian
        let nowNaive = nowNaive(now)
        var assumeYear = false
        if year == nil {
            year = CivilTime.fields(ofNaive: nowNaive).year
            assumeYear = true
        }
        if month == nil || day == nil {
            if julian == nil, let week = p.weekOfYear, let wd = p.weekday {
                julian = TimeConverter.julian(year: year!, week: week, weekday: wd, weekStartsMonday: p.weekStartsMonday)
            }
            if let j = julian {
                let c = CivilTime.civilFromDays(CivilTime.daysFromCivil(year!, 1, 1) + j - 1)
                (year, month, day) = (c.year, c.month, c.day)
            }
        }
        var assumeToday = false
        if month == nil && day == nil {
            let f = CivilTime.fields(ofNaive: nowNaive)
            month = f.month; day = f.day
            assumeToday = true
        }
        guard let y = year, let mo = month, let d = day,
            var result = CivilTime.naive(y, mo, d, p.hour, p.minute, p.second)
        else { return nil }
        let zone = p.zone ?? defaultZone
        if let zone { result -= zone * 60 }
        if assumeToday && result > nowNaive { result -= 86400 }
        if assumeYear && result > nowNaive + 86400 {
            let f = CivilTime.fields(ofNaive: result)
            guard let earlier = CivilTime.naive(y - 1, mo, d, f.hour, f.minute, f.second) else { return nil }
            result = earlier
        }
        if zone != nil { return Double(result) }
        return epoch(fromLocalNaive: result)
    }

    /// Python's `_calc_julian_from_U_or_W`.
    static func julian(year: Int, week: Int, weekday: Int, weekStartsMonday: Bool) -> Int {
        // 1970-01-01 was a Thursday (weekday 3 with Monday = 0).
        var firstWeekday = ((CivilTime.daysFromCivil(year, 1, 1) % 7) + 7 + 3) % 7
        var dayOfWeek = weekday
        if !weekStartsMonday {
            firstWeekday = (firstWeekday + 1) % 7
            dayOfWeek = (dayOfWeek + 1) % 7
        }
        let week0Length = (7 - firstWeekday) % 7
        if week == 0 { return 1 + dayOfWeek - firstWeekday }
        return 1 + week0Length + 7 * (week - 1) + dayOfWeek
    }
}
