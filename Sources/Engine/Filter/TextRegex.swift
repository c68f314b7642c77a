import FoundationEssentials
import Glibc
import Platform

/// A regex used on configuration text (rewriting date patterns) from any thread, never on the hot path.
final class SharedRegex: @unchecked Sendable {
    // @unchecked: the PCRE2Regex (and its match data) is only used while `lock` is held.
    private let regex: PCRE2Regex
    private let lock = Lock()

    init(_ pattern: String) {
        // The patterns passed here are constants of this module; failing to compile one is a programming error.
        do { regex = try PCRE2Regex(pattern) } catch { fatalError("internal regex: \(error)") }
    }

    func search(_ text: String) -> Bool {
        lock.lock(); defer { lock.unlock() }
        return regex.search(Array(text.utf8))
    }

    /// Replaces up to `count` matches (0: all); `replacement` gets the match's groups as strings.
    func sub(_ text: String, count: Int = 0, _ replacement: (_ group: (Int) -> String?) -> String) -> String {
        lock.lock(); defer { lock.unlock() }
        let bytes = Array(text.utf8)
        var out: [UInt8] = []
        var pos = 0
        var done = 0
        while pos <= bytes.count, regex.search(bytes, start: pos), let whole = regex.range(0) {
            out += bytes[pos..<whole.lowerBound]
            let groups = (0...regex.captureCount).map { regex.range($0).map { String(decoding: bytes[$0], as: UTF8.self) } }
            out += Array(replacement { n in n < groups.count ? groups[n] : nil }.utf8)
            done += 1
            if whole.isEmpty {
                if whole.upperBound < bytes.count { out.append(bytes[whole.upperBound]) }
                pos = whole.upperBound + 1
            } else {
                pos = whole.upperBound
            }
            if count > 0 && done >= count { break }
        }
        if pos < bytes.count { out += bytes[pos...] }
        return String(decoding: out, as: UTF8.self)
    }
}
