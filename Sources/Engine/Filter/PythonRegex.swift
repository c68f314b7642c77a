/// Translates the few spots where Python's `re` dialect (the one fail2ban filters are written in) and PCRE2
/// disagree, leaving everything else byte-for-byte as the user wrote it.
///
/// - `\Z` is "end of subject" in Python and `\z` in PCRE2 (PCRE2's `\Z` also matches before a final newline).
/// - `{,n}` means `{0,n}` in Python; PCRE2 10.42 reads it as literal text.
/// - Python's inline flags `u`, `a` and `L` (`(?iu)`) do not exist in PCRE2; Unicode matching is always on here.
/// - `\uXXXX` and `\UXXXXXXXX` become `\x{…}`.
public enum PythonRegex {
    public static func toPCRE2(_ pattern: String) -> String {
        let s = Array(pattern.unicodeScalars)
        var out = String.UnicodeScalarView()
        var i = 0
        var inClass = false
        func append(_ str: String) { out.append(contentsOf: str.unicodeScalars) }
        while i < s.count {
            let c = s[i]
            if c == "\\" && i + 1 < s.count {
                let n = s[i + 1]
                if n == "Z" && !inClass {
                    append("\\z"); i += 2; continue
                }
                if n == "u" || n == "U" {
                    let width = n == "u" ? 4 : 8
                    let hex = s[(i + 2)..<min(s.count, i + 2 + width)]
                    if hex.count == width && hex.allSatisfy({ $0.properties.isASCIIHexDigit }) {
                        append("\\x{"); out.append(contentsOf: hex); append("}")
                        i += 2 + width; continue
                    }
                }
                out.append(c); out.append(n); i += 2; continue
            }
            if inClass {
                if c == "]" { inClass = false }
                out.append(c); i += 1; continue
            }
            if c == "[" {
                inClass = true
                out.append(c); i += 1
                // A ']' right after '[' or '[^' is a literal member of the class in both dialects.
                if i < s.count && s[i] == "^" { out.append(s[i]); i += 1 }
                if i < s.count && s[i] == "]" { out.append(s[i]); i += 1 }
                continue
            }
            if c == "{" && i + 1 < s.count && s[i + 1] == "," {
                var j = i + 2
                while j < s.count, ("0"..."9").contains(s[j]) { j += 1 }
                if j > i + 2, j < s.count, s[j] == "}" {
                    append("{0,"); out.append(contentsOf: s[(i + 2)..<j]); append("}")
                    i = j + 1; continue
                }
            }
            if c == "(" && i + 2 < s.count && s[i + 1] == "?" {
                // Inline flag group: (?flags) or (?flags-flags:...) or (?flags:...)
                var j = i + 2
                var flags = String.UnicodeScalarView()
                while j < s.count, "aiLmsuxn-".unicodeScalars.contains(s[j]) { flags.append(s[j]); j += 1 }
                if !flags.isEmpty, j < s.count, s[j] == ")" || s[j] == ":" {
                    let kept = flags.filter { !"uaL".unicodeScalars.contains($0) }
                    if kept.isEmpty || String(kept) == "-" {
                        if s[j] == ")" { i = j + 1; continue }  // "(?u)" alone: drop it
                        append("(?:"); i = j + 1; continue
                    }
                    append("(?"); out.append(contentsOf: kept); out.append(s[j])
                    i = j + 1; continue
                }
            }
            out.append(c); i += 1
        }
        return String(out)
    }
}
