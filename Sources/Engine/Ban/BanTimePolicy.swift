import FoundationEssentials
import Glibc

/// How long a ban lasts, with fail2ban's `bantime.increment`: a repeat offender's ban time grows with the number
/// of its previous bans, by `bantime.multipliers` or by `bantime.formula` (default
/// `ban.Time * (1<<(ban.Count if ban.Count<20 else 20)) * banFactor`), never below the base time, capped by
/// `bantime.maxtime`, plus up to `bantime.rndtime` of random time.
public struct BanTimePolicy: Sendable {
    public let base: BanTime
    public let increment: BanTimeIncrement
    private let formula: PythonExpression?

    public static let defaultFormula = "ban.Time * (1<<(ban.Count if ban.Count<20 else 20)) * banFactor"

    public init(base: BanTime, increment: BanTimeIncrement) throws(ConfigError) {
        self.base = base
        self.increment = increment
        if increment.enabled && increment.multipliers.isEmpty {
            let text = increment.formula ?? BanTimePolicy.defaultFormula
            do {
                formula = try PythonExpression(text)
            } catch {
                throw ConfigError("bantime.formula '\(text)': \(error)")
            }
        } else {
            formula = nil
        }
    }

    /// The longest ban the packet filter holds: nftables takes an element timeout below 2^64 ns in milliseconds
    /// (the kernel answers ERANGE past about 584.5 years). Longer ban times are cut to this; `-1` (permanent)
    /// is an element without a timeout and is not affected.
    public static let longest: Double = 584 * 365 * 86400

    /// `seconds` (fail2ban's: negative is permanent) cut to what the packet filter holds; permanent stays
    /// permanent, NaN (a formula gone wrong) becomes `fallback`.
    public static func capped(_ seconds: Double, fallback: BanTime) -> BanTime {
        if seconds.isNaN { return fallback }
        if seconds < 0 { return .permanent }
        return .seconds(min(seconds, longest))
    }

    /// The ban time for an address banned `previousBans` times before (0: first ban), at most `longest`.
    public func banTime(previousBans: Int, random: Double? = nil) -> BanTime {
        let t = uncappedBanTime(previousBans: previousBans, random: random)
        return BanTimePolicy.capped(t.fail2banSeconds, fallback: base)
    }

    /// The ban time before the packet filter's limit: the log says when a ban was cut.
    public func uncappedBanTime(previousBans: Int, random: Double? = nil) -> BanTime {
        guard increment.enabled, case .seconds(let base) = base, base > 0, previousBans > 0 else { return base }
        var t: Double
        if !increment.multipliers.isEmpty {
            let m = increment.multipliers
            t = base * increment.factor * m[min(previousBans, m.count - 1)]
        } else {
            let value = (try? formula?.evaluate(["ban.Time": base, "ban.Count": Double(previousBans), "banFactor": increment.factor])) ?? base
            t = max(base, value)
        }
        if let cap = increment.maxTime, cap > 0 { t = min(t, cap) }
        if let rnd = increment.randomTime, rnd > 0 { t += (random ?? Double.random(in: 0..<1)) * rnd }
        return BanTime(fail2banSeconds: t)
    }
}

/// The arithmetic subset of Python that fail2ban's `bantime.formula` values use: numbers, `ban.Time`,
/// `ban.Count`, `banFactor`, `+ - * / // % **`, `<< >>`, comparisons, `and or not`, `x if c else y`, and the
/// functions `min max abs int float round` and `math.exp math.log math.sqrt math.pow`.
public struct PythonExpression: Sendable {
    indirect enum Node: Sendable {
        case number(Double)
        case name(String)
        case unary(String, Node)
        case binary(String, Node, Node)
        case conditional(Node, Node, Node)
        case call(String, [Node])
    }

    public struct ParseError: Error, CustomStringConvertible {
        public let message: String
        public var description: String { message }
    }

    let root: Node

    public init(_ text: String) throws(ParseError) {
        var p = Parser(tokens: try PythonExpression.tokenize(text))
        root = try p.expression()
        guard p.i == p.tokens.count else { throw ParseError(message: "unexpected '\(p.tokens[p.i])'") }
    }

    static func tokenize(_ text: String) throws(ParseError) -> [String] {
        var tokens: [String] = []
        let s = Array(text)
        var i = 0
        while i < s.count {
            let c = s[i]
            if c.isWhitespace { i += 1; continue }
            if c.isNumber || (c == "." && i + 1 < s.count && s[i + 1].isNumber) {
                var j = i
                while j < s.count && (s[j].isNumber || s[j] == "." || s[j] == "e" || s[j] == "E") { j += 1 }
                tokens.append(String(s[i..<j])); i = j; continue
            }
            if c.isLetter || c == "_" {
                var j = i
                while j < s.count && (s[j].isLetter || s[j].isNumber || s[j] == "_" || s[j] == ".") { j += 1 }
                tokens.append(String(s[i..<j])); i = j; continue
            }
            let two = i + 1 < s.count ? String(s[i...i + 1]) : ""
            if ["**", "//", "<<", ">>", "<=", ">=", "==", "!="].contains(two) { tokens.append(two); i += 2; continue }
            if "+-*/%()<>,".contains(c) { tokens.append(String(c)); i += 1; continue }
            throw ParseError(message: "unexpected character '\(c)'")
        }
        return tokens
    }

    struct Parser {
        let tokens: [String]
        var i = 0

        var peek: String? { i < tokens.count ? tokens[i] : nil }
        mutating func take(_ t: String) -> Bool { if peek == t { i += 1; return true }; return false }

        mutating func expression() throws(ParseError) -> Node {
            let value = try or()
            if take("if") {
                let cond = try or()
                guard take("else") else { throw ParseError(message: "'if' without 'else'") }
                let otherwise = try expression()
                return .conditional(cond, value, otherwise)
            }
            return value
        }

        mutating func or() throws(ParseError) -> Node {
            var l = try and()
            while take("or") { let r = try and(); l = .binary("or", l, r) }
            return l
        }

        mutating func and() throws(ParseError) -> Node {
            var l = try not()
            while take("and") { let r = try not(); l = .binary("and", l, r) }
            return l
        }

        mutating func not() throws(ParseError) -> Node {
            if take("not") { let r = try not(); return .unary("not", r) }
            return try comparison()
        }

        mutating func comparison() throws(ParseError) -> Node {
            var l = try shift()
            while let op = peek, ["<", ">", "<=", ">=", "==", "!="].contains(op) { i += 1; let r = try shift(); l = .binary(op, l, r) }
            return l
        }

        mutating func shift() throws(ParseError) -> Node {
            var l = try sum()
            while let op = peek, op == "<<" || op == ">>" { i += 1; let r = try sum(); l = .binary(op, l, r) }
            return l
        }

        mutating func sum() throws(ParseError) -> Node {
            var l = try product()
            while let op = peek, op == "+" || op == "-" { i += 1; let r = try product(); l = .binary(op, l, r) }
            return l
        }

        mutating func product() throws(ParseError) -> Node {
            var l = try unary()
            while let op = peek, ["*", "/", "//", "%"].contains(op) { i += 1; let r = try unary(); l = .binary(op, l, r) }
            return l
        }

        mutating func unary() throws(ParseError) -> Node {
            if take("-") { let r = try unary(); return .unary("-", r) }
            if take("+") { return try unary() }
            return try power()
        }

        mutating func power() throws(ParseError) -> Node {
            let base = try atom()
            if take("**") { let r = try unary(); return .binary("**", base, r) }
            return base
        }

        mutating func atom() throws(ParseError) -> Node {
            guard let t = peek else { throw ParseError(message: "the expression ends too early") }
            i += 1
            if t == "(" {
                let e = try expression()
                guard take(")") else { throw ParseError(message: "')' is missing") }
                return e
            }
            if let n = Double(t) { return .number(n) }
            if t.first!.isLetter || t.first == "_" {
                if take("(") {
                    var args: [Node] = []
                    if !take(")") {
                        repeat { let a = try expression(); args.append(a) } while take(",")
                        guard take(")") else { throw ParseError(message: "')' is missing after the arguments of \(t)") }
                    }
                    return .call(t, args)
                }
                return .name(t)
            }
            throw ParseError(message: "unexpected '\(t)'")
        }
    }

    public func evaluate(_ variables: [String: Double]) throws(ParseError) -> Double? {
        try eval(root, variables)
    }

    private func eval(_ n: Node, _ v: [String: Double]) throws(ParseError) -> Double {
        switch n {
        case .number(let d): return d
        case .name(let name):
            if let x = v[name] { return x }
            switch name {
            case "True": return 1
            case "False": return 0
            case "math.e": return M_E
            case "math.pi": return Double.pi
            default: throw ParseError(message: "unknown name '\(name)'")
            }
        case .unary(let op, let a):
            let x = try eval(a, v)
            return op == "-" ? -x : (x == 0 ? 1 : 0)
        case .conditional(let c, let a, let b):
            return try eval(c, v) != 0 ? eval(a, v) : eval(b, v)
        case .binary(let op, let a, let b):
            let x = try eval(a, v)
            if op == "and" { return x == 0 ? x : try eval(b, v) }
            if op == "or" { return x != 0 ? x : try eval(b, v) }
            let y = try eval(b, v)
            switch op {
            case "+": return x + y
            case "-": return x - y
            case "*": return x * y
            case "/": guard y != 0 else { throw ParseError(message: "division by zero") }; return x / y
            case "//": guard y != 0 else { throw ParseError(message: "division by zero") }; return (x / y).rounded(.down)
            case "%": guard y != 0 else { throw ParseError(message: "division by zero") }; return x - y * (x / y).rounded(.down)
            case "**": return pow(x, y)
            case "<<": return x * pow(2, y.rounded(.down))
            case ">>": return (x / pow(2, y.rounded(.down))).rounded(.down)
            case "<": return x < y ? 1 : 0
            case ">": return x > y ? 1 : 0
            case "<=": return x <= y ? 1 : 0
            case ">=": return x >= y ? 1 : 0
            case "==": return x == y ? 1 : 0
            case "!=": return x != y ? 1 : 0
            default: throw ParseError(message: "unknown operator \(op)")
            }
        case .call(let f, let args):
            let xs = try args.map { (a: Node) throws(ParseError) -> Double in try eval(a, v) }
            func one() throws(ParseError) -> Double {
                guard xs.count == 1 else { throw ParseError(message: "\(f) takes one argument") }
                return xs[0]
            }
            switch f {
            case "min": guard let m = xs.min() else { throw ParseError(message: "min() needs arguments") }; return m
            case "max": guard let m = xs.max() else { throw ParseError(message: "max() needs arguments") }; return m
            case "abs": return abs(try one())
            case "int": return try one().rounded(.towardZero)
            case "float": return try one()
            case "round": return try one().rounded(.toNearestOrEven)
            case "math.exp": return exp(try one())
            case "math.log": return xs.count == 2 ? log(xs[0]) / log(xs[1]) : log(try one())
            case "math.sqrt": return sqrt(try one())
            case "math.pow": guard xs.count == 2 else { throw ParseError(message: "math.pow takes two arguments") }; return pow(xs[0], xs[1])
            default: throw ParseError(message: "unknown function \(f)()")
            }
        }
    }
}
