import Platform

/// A compiled fail2ban regex (`failregex`, `ignoreregex` or `prefregex`) and what its last search found,
/// including which lines of a multi-line buffer it covered (fail2ban's `Regex.search`).
final class FilterRegex {
    /// The regex as configured, tags unexpanded (what `portcullis regex` shows).
    let source: String
    let regex: PCRE2Regex
    /// `alt_user1` → `user`: alternative names merged into the main one when that is empty.
    let altValues: [(group: String, target: String)]
    let hasFailureIDGroup: Bool
    let contentGroup: Int?
    /// Whether a prefregex captures anything besides `<F-CONTENT>` (most do not).
    let hasGroupsBesidesContent: Bool

    // Results of the last search, relative to the lines it was given.
    private(set) var matched = false
    private var lineCount1 = 0
    private var lineCount2 = 0
    private var skippedLines: [[UInt8]] = []
    private var multiLineOrigin = false

    static let failureIDGroups = ["fid", "ip4", "ip6", "dns"]

    /// The pattern as compiled (tags expanded, translated to PCRE2).
    let compiled: String

    init(_ source: String, useDNS: UseDNS, multiline: Bool) throws(RegexCompileError) {
        self.source = source
        var expanded = FilterTags.expand(source, useDNS: useDNS)
        if expanded.trimmingWhitespace().isEmpty {
            throw RegexCompileError(pattern: source, message: "cannot add an empty regex", offset: 0)
        }
        expanded = FilterTags.localizeFlags(expanded)
        compiled = PythonRegex.toPCRE2(expanded)
        regex = try PCRE2Regex(compiled, options: multiline ? .multiline : [])
        var alts: [(String, String)] = []
        for (name, _) in regex.groupNames where name.hasPrefix("alt_") && name.count > 4 {
            var base = String(name.dropFirst(4))
            // alt_user1 / alt_user_1 → user
            while let last = base.last, last.isNumber { base.removeLast() }
            if base.hasSuffix("_") { base.removeLast() }
            alts.append((name, FilterTags.groupName(forTag: base)))
        }
        altValues = alts.sorted { $0.0 < $1.0 }
        hasFailureIDGroup = regex.groupNumbers.keys.contains { FilterRegex.failureIDGroups.contains($0) || $0 == "mlfid" }
        contentGroup = regex.groupNumbers["content"]
        hasGroupsBesidesContent = regex.groupNames.contains { $0.name != "content" }
    }

    /// Called when a search cannot complete (PCRE2 reached a limit): with PCRE2's error code and the subject's
    /// length. The search then counts as no match; whoever set this says so.
    var onError: ((FilterRegex, Int32, Int) -> Void)?
    /// What the filter calls this regex in messages ("failregex 2").
    var label = ""

    /// Searches `buffer` (the lines of `origin` as the regex should see them).
    func search(_ buffer: UnsafeBufferPointer<UInt8>, originCount: Int, ascii: Bool = false) -> Bool {
        matched = regex.search(buffer.baseAddress!, length: buffer.count, ascii: ascii)
        if let code = regex.lastError { onError?(self, code, buffer.count) }
        multiLineOrigin = originCount > 1
        guard matched, multiLineOrigin, let whole = regex.range(0) else { return matched }
        // Which lines of the buffer the match touches.
        var lineStart = 0
        var i = min(whole.lowerBound, buffer.count - 1)
        while i >= 0 { if buffer[i] == 10 { lineStart = i + 1; break }; i -= 1 }
        var lineEnd = buffer.count
        var j = max(0, whole.upperBound - 1)
        while j < buffer.count { if buffer[j] == 10 { lineEnd = j + 1; break }; j += 1 }
        lineCount1 = 0
        lineCount2 = 0
        for k in 0..<lineEnd where buffer[k] == 10 {
            if k < lineStart { lineCount1 += 1 }
            lineCount2 += 1
        }
        skippedLines = []
        for (name, number) in regex.groupNames where name.hasPrefix("skiplines") {
            guard let r = regex.range(number) else { continue }
            for line in buffer[r].split(separator: 10, omittingEmptySubsequences: false) { skippedLines.append(Array(line)) }
            if skippedLines.last?.isEmpty == true { skippedLines.removeLast() }
        }
        return matched
    }

    func search(_ buffer: [UInt8], originCount: Int) -> Bool {
        buffer.withUnsafeBufferPointer { search($0, originCount: originCount) }
    }

    /// Where `<F-CONTENT>` matched in the last search.
    var contentRange: Range<Int>? { contentGroup.flatMap { regex.range($0) } }

    /// The lines of `origin` the last match covered (skipped lines excluded).
    func matchedLines(_ origin: [TupleLine]) -> [TupleLine] {
        guard matched else { return [] }
        if !multiLineOrigin { return origin }
        return split(origin).matched
    }

    /// The lines of `origin` the last match did not cover.
    func unmatchedLines(_ origin: [TupleLine]) -> [TupleLine] {
        guard matched else { return [] }
        if !multiLineOrigin { return [] }
        return split(origin).unmatched
    }

    private func split(_ origin: [TupleLine]) -> (matched: [TupleLine], unmatched: [TupleLine]) {
        let a = min(lineCount1, origin.count), b = min(max(lineCount2, a), origin.count)
        var matched = Array(origin[a..<b])
        var unmatched = Array(origin[..<a])
        var n = 0
        for skipped in skippedLines {
            var m = 0
            while n + m < matched.count {
                if matched[n + m].withoutDate == skipped {
                    unmatched.append(matched.remove(at: n + m))
                    n += m
                    break
                }
                m += 1
            }
        }
        unmatched += origin[b...]
        return (matched, unmatched)
    }

    /// fail2ban's `groupdict()` of the last match, alternative names merged. Values are decoded text;
    /// groups that did not take part are present with nil, as in Python.
    func groups(_ buffer: UnsafeBufferPointer<UInt8>) -> GroupMap {
        var result = GroupMap(capacity: regex.groupNames.count)
        for (name, number) in regex.groupNames {
            result.appendNew(name, regex.range(number).map { String(decoding: UnsafeBufferPointer(rebasing: buffer[$0]), as: UTF8.self) })
        }
        for (group, target) in altValues {
            if let v = result[group] ?? nil, !v.isEmpty, (result[target] ?? nil)?.isEmpty ?? true {
                result[target] = v
            }
        }
        return result
    }
}
