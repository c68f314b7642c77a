/// A static look for the regexes that make backtracking explode: a group with an unbounded quantifier inside,
/// itself repeated without bound, as in `(a+)+`, `(\w+\s*)*` or `(.*)*` ("star height" two), where nothing
/// fixed separates one repetition from the next. PCRE2 gives up on such a pattern at its match limit, and the
/// line then counts as not matched: `portcullis check` warns before a log does it at run time.
///
/// A group whose every branch holds a literal that must appear (`(?:[^|]*\|)*`, `(?:, arg\d+=\S*)*`, fail2ban's
/// own filters' shapes) is taken as safe. It looks at the text only: a warning, never an error.
public enum QuantifierCheck {
    private struct Group {
        let start: Int
        /// An unbounded quantifier somewhere inside.
        var unbounded = false
        /// The current branch has a literal that must match; every earlier branch had one.
        var branchHasLiteral = false
        var earlierBranchesHaveLiteral = true
    }

    /// The first nested unbounded repetition in `pattern` without a separator, as written, or nil.
    public static func nestedRepetition(in pattern: String) -> String? {
        let c = Array(pattern)
        var stack: [Group] = []
        var i = 0

        /// The length of the quantifier at `j` and whether it is unbounded and whether it allows zero.
        func quantifier(at j: Int) -> (length: Int, unbounded: Bool, optional: Bool)? {
            guard j < c.count else { return nil }
            var n: Int
            var unbounded = false, optional = false
            switch c[j] {
            case "*": n = 1; unbounded = true; optional = true
            case "+": n = 1; unbounded = true
            case "?": n = 1; optional = true
            case "{":
                guard let close = c[j...].firstIndex(of: "}") else { return nil }
                let parts = String(c[(j + 1)..<close]).split(separator: ",", omittingEmptySubsequences: false)
                guard (1...2).contains(parts.count), parts.allSatisfy({ $0.allSatisfy(\.isNumber) }), !parts[0].isEmpty else { return nil }
                n = close - j + 1
                unbounded = parts.count == 2 && parts[1].isEmpty
                optional = parts[0] == "0"
            default: return nil
            }
            // Lazy or possessive suffix.
            if j + n < c.count && (c[j + n] == "?" || c[j + n] == "+") { n += 1 }
            return (n, unbounded, optional)
        }

        /// After an atom: its quantifier, and what it means for the enclosing group.
        func atom(literal: Bool) {
            let q = quantifier(at: i)
            if let q { i += q.length }
            guard !stack.isEmpty else { return }
            if q?.unbounded == true { stack[stack.count - 1].unbounded = true }
            // A separator: a literal that must appear, a bounded number of times (`a+` absorbs its neighbours).
            if literal && q?.optional != true && q?.unbounded != true { stack[stack.count - 1].branchHasLiteral = true }
        }

        while i < c.count {
            switch c[i] {
            case "\\":
                let e = i + 1 < c.count ? c[i + 1] : " "
                i += 2
                // \w \s \d \S and the like match classes; \b \A… match nothing; \. \[ \| match themselves.
                atom(literal: !"wsdWSDbBAzZGhHvVRXNpPkgQE".contains(e) && !e.isNumber)
            case "[":
                var j = i + 1
                if j < c.count && c[j] == "^" { j += 1 }
                if j < c.count && c[j] == "]" { j += 1 }
                while j < c.count && c[j] != "]" { j += c[j] == "\\" ? 2 : 1 }
                i = j + 1
                atom(literal: false)
            case "(":
                stack.append(Group(start: i))
                i += 1
                // (?:, (?P<name>, (?=, (?!…: the group's own syntax is not content.
                if i < c.count && c[i] == "?" {
                    i += 1
                    if i < c.count && (c[i] == "=" || c[i] == "!" || c[i] == "<" && i + 1 < c.count && (c[i + 1] == "=" || c[i + 1] == "!")) {
                        // A lookaround: skip it whole; it consumes nothing.
                        var depth = 1
                        var j = i
                        while j < c.count && depth > 0 {
                            if c[j] == "\\" { j += 2; continue }
                            if c[j] == "(" { depth += 1 } else if c[j] == ")" { depth -= 1 }
                            j += 1
                        }
                        stack.removeLast()
                        i = j
                        continue
                    }
                    while i < c.count && c[i] != ":" && c[i] != ">" && c[i] != ")" { i += 1 }
                    if i < c.count && c[i] != ")" { i += 1 }
                }
            case "|":
                if !stack.isEmpty {
                    stack[stack.count - 1].earlierBranchesHaveLiteral =
                        stack[stack.count - 1].earlierBranchesHaveLiteral && stack[stack.count - 1].branchHasLiteral
                    stack[stack.count - 1].branchHasLiteral = false
                }
                i += 1
            case ")":
                guard let g = stack.popLast() else { i += 1; continue }
                i += 1
                let separated = g.earlierBranchesHaveLiteral && g.branchHasLiteral
                let q = quantifier(at: i)
                if let q, q.unbounded, g.unbounded, !separated { return String(c[g.start..<(i + q.length)]) }
                if let q { i += q.length }
                if !stack.isEmpty {
                    if g.unbounded || q?.unbounded == true { stack[stack.count - 1].unbounded = true }
                    if separated && q?.optional != true { stack[stack.count - 1].branchHasLiteral = true }
                }
            case ".", "^", "$":
                i += 1
                atom(literal: false)
            default:
                i += 1
                atom(literal: true)
            }
        }
        return nil
    }
}
