import CPCRE2
import Platform

/// A pattern PCRE2 refused to compile, with PCRE2's own message and the offset it points at.
public struct RegexCompileError: Error, CustomStringConvertible, Sendable {
    public let pattern: String
    public let message: String
    public let offset: Int
    /// PCRE2's error code (nil for a pattern refused before PCRE2 saw it).
    public var code: Int32? = nil

    public var description: String {
        "cannot compile regex at offset \(offset): \(message)\n  regex: \(pattern)"
    }
}

/// One pattern compiled twice by PCRE2 — for Unicode subjects and for pure-ASCII ones — plus the match data.
///
/// Matching works on raw bytes: the subject is never converted to `String`. The Unicode variant is compiled with
/// `PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF`, so `\w`, `\d`, `\s` and `\b` behave like Python's
/// Unicode-aware `re` (which fail2ban's filters are written for) while invalid UTF-8 never matches a character
/// instead of failing the match. On a pure-ASCII subject (nearly every log line) both variants match the same
/// things, and the byte-mode variant runs about twice as fast under the JIT, so callers that know a line is
/// ASCII pass `ascii: true`. Both are JIT-compiled when the platform allows.
///
/// Not thread-safe: the match data is reused by every `search`. Each filter instance owns its regexes and is
/// driven by one thread at a time.
public final class PCRE2Regex {
    public let pattern: String
    /// Named groups: name → group number.
    public let groupNumbers: [String: Int]
    /// Named groups in order of their group number.
    public let groupNames: [(name: String, number: Int)]
    public let captureCount: Int
    public let isJIT: Bool

    /// The compiled pattern, shared with every other regex of the same pattern and options (300 jails on the
    /// sshd filter compile it once); the match data and context below are this regex's own.
    private let code: PCRE2Code
    private var unicodeCode: OpaquePointer { code.unicode }
    private var asciiCode: OpaquePointer { code.ascii }
    private let matchData: OpaquePointer
    private let matchContext: OpaquePointer
    private var jitStack: OpaquePointer?
    private let ovector: UnsafeMutablePointer<Int>
    private var matchedOK = false
    /// PCRE2's error when the last search could not run to its end (a limit reached even after the retries in
    /// `searchHarder`); nil after a search that ran to completion, matched or not. Such a search returns false, and
    /// callers must say so rather than take it for "no match".
    public private(set) var lastError: Int32?

    public struct Options: OptionSet, Sendable {
        public let rawValue: UInt32
        public init(rawValue: UInt32) { self.rawValue = rawValue }
        public static let multiline = Options(rawValue: UInt32(PCRE2_MULTILINE))
        public static let caseless = Options(rawValue: UInt32(PCRE2_CASELESS))
        public static let anchored = Options(rawValue: UInt32(PCRE2_ANCHORED))
        public static let dotAll = Options(rawValue: UInt32(PCRE2_DOTALL))
    }

    fileprivate static func compile(_ pattern: String, _ flags: UInt32) throws(RegexCompileError) -> OpaquePointer {
        var errorCode: Int32 = 0
        var errorOffset = 0
        let compiled: OpaquePointer? = pattern.utf8CString.withUnsafeBufferPointer { buf in
            buf.baseAddress!.withMemoryRebound(to: UInt8.self, capacity: buf.count) { p in
                pcre2_compile_8(p, buf.count - 1, flags, &errorCode, &errorOffset, nil)
            }
        }
        guard let compiled else {
            throw RegexCompileError(pattern: pattern, message: PCRE2Regex.message(for: errorCode), offset: errorOffset, code: errorCode)
        }
        return compiled
    }

    /// Compiles `pattern` (PCRE2 syntax) and JIT-compiles it. The corresponding C functions are
    /// `pcre2_compile` and `pcre2_jit_compile`.
    public init(_ pattern: String, options: Options = []) throws(RegexCompileError) {
        self.pattern = pattern
        code = try PCRE2Code.shared(pattern, options.rawValue)
        let compiled = code.unicode
        isJIT = code.isJIT

        var count: UInt32 = 0
        pcre2_pattern_info_8(compiled, UInt32(PCRE2_INFO_CAPTURECOUNT), &count)
        captureCount = Int(count)

        var nameCount: UInt32 = 0
        var entrySize: UInt32 = 0
        var table: UnsafePointer<UInt8>? = nil
        pcre2_pattern_info_8(compiled, UInt32(PCRE2_INFO_NAMECOUNT), &nameCount)
        pcre2_pattern_info_8(compiled, UInt32(PCRE2_INFO_NAMEENTRYSIZE), &entrySize)
        pcre2_pattern_info_8(compiled, UInt32(PCRE2_INFO_NAMETABLE), &table)
        var numbers: [String: Int] = [:]
        var names: [(String, Int)] = []
        if let table, nameCount > 0 {
            for i in 0..<Int(nameCount) {
                let entry = table + i * Int(entrySize)
                let number = Int(entry[0]) << 8 | Int(entry[1])
                let end = (2..<Int(entrySize)).first { entry[$0] == 0 } ?? Int(entrySize)
                let name = String(decoding: UnsafeBufferPointer(start: entry + 2, count: end - 2), as: UTF8.self)
                numbers[name] = number
                names.append((name, number))
            }
        }
        names.sort { $0.1 < $1.1 }
        groupNumbers = numbers
        groupNames = names

        matchData = pcre2_match_data_create_from_pattern_8(compiled, nil)
        matchContext = pcre2_match_context_create_8(nil)
        // Backtracking bombs in a user's filter must not stall a jail: bound the work per match.
        pcre2_set_match_limit_8(matchContext, 5_000_000)
        pcre2_set_depth_limit_8(matchContext, 100_000)
        ovector = pcre2_get_ovector_pointer_8(matchData)
    }

    deinit {
        pcre2_match_data_free_8(matchData)
        pcre2_match_context_free_8(matchContext)
        if let jitStack { pcre2_jit_stack_free_8(jitStack) }
    }

    static func message(for code: Int32) -> String {
        var buffer = [UInt8](repeating: 0, count: 256)
        let n = pcre2_get_error_message_8(code, &buffer, buffer.count)
        return n > 0 ? String(decoding: buffer[0..<Int(n)], as: UTF8.self) : "PCRE2 error \(code)"
    }

    /// Searches `subject[start..<length]` (lookbehind may see bytes before `start`, as Python's `pos` allows).
    /// `ascii`: the caller knows the subject holds no byte above 0x7F. Returns whether it matched; group ranges
    /// are then available through `range(_:)`. A search that cannot complete returns false with `lastError` set.
    @inline(__always)
    public func search(_ subject: UnsafePointer<UInt8>, length: Int, start: Int = 0, ascii: Bool = false) -> Bool {
        lastError = nil
        guard start <= length else { matchedOK = false; return false }
        let code = ascii ? asciiCode : unicodeCode
        var rc: Int32
        if isJIT {
            rc = pcre2_jit_match_8(code, subject, length, start, 0, matchData, matchContext)
        } else {
            rc = pcre2_match_8(code, subject, length, start, 0, matchData, matchContext)
        }
        if rc < PCRE2_ERROR_NOMATCH { rc = searchHarder(code, subject, length, start, after: rc) }
        matchedOK = rc > 0
        return matchedOK
    }

    /// The limits of a search on a long subject: PCRE2's defaults (5,000,000 steps, depth 100,000) bound the work a
    /// backtracking regex may do on an ordinary line, but a linear scan of a line of several MiB (fail2ban's sshd
    /// filter on a 1 MB line) needs more. Python's `re`, which fail2ban uses, has no limits at all.
    static func limits(forLength length: Int) -> (match: UInt32, depth: UInt32, heapKiB: UInt32) {
        (
            UInt32(min(max(5_000_000, length * 50), Int(UInt32.max))),
            UInt32(min(max(100_000, length * 2), Int(UInt32.max))),
            256 * 1024
        )
    }

    /// After an error (a limit reached): the JIT again with a larger stack (the default is 32 KiB of machine stack:
    /// a persistent 8 MiB one first, then one sized to the subject, freed after the search), then the interpreter
    /// with limits scaled to the subject's length and 256 MiB of heap at most. What still fails sets `lastError`.
    @inline(never)
    private func searchHarder(
        _ code: OpaquePointer, _ subject: UnsafePointer<UInt8>, _ length: Int, _ start: Int,
        after first: Int32
    ) -> Int32 {
        var rc = first
        if isJIT && rc == PCRE2_ERROR_JIT_STACKLIMIT && jitStack == nil {
            jitStack = pcre2_jit_stack_create_8(64 * 1024, 8 << 20, nil)
            pcre2_jit_stack_assign_8(matchContext, nil, UnsafeMutableRawPointer(jitStack))
            rc = pcre2_jit_match_8(code, subject, length, start, 0, matchData, matchContext)
        }
        if isJIT && rc == PCRE2_ERROR_JIT_STACKLIMIT, let stack = pcre2_jit_stack_create_8(64 * 1024, min(max(16 << 20, length * 32), 1 << 30), nil) {
            pcre2_jit_stack_assign_8(matchContext, nil, UnsafeMutableRawPointer(stack))
            rc = pcre2_jit_match_8(code, subject, length, start, 0, matchData, matchContext)
            pcre2_jit_stack_assign_8(matchContext, nil, UnsafeMutableRawPointer(jitStack))
            pcre2_jit_stack_free_8(stack)
        }
        if rc == PCRE2_ERROR_MATCHLIMIT || rc == PCRE2_ERROR_DEPTHLIMIT || rc == PCRE2_ERROR_JIT_STACKLIMIT || rc == PCRE2_ERROR_HEAPLIMIT,
            let context = pcre2_match_context_create_8(nil)
        {
            let limits = PCRE2Regex.limits(forLength: length)
            pcre2_set_match_limit_8(context, limits.match)
            pcre2_set_depth_limit_8(context, limits.depth)
            pcre2_set_heap_limit_8(context, limits.heapKiB)
            rc = pcre2_match_8(code, subject, length, start, UInt32(PCRE2_NO_JIT), matchData, context)
            pcre2_match_context_free_8(context)
        }
        lastError = rc < PCRE2_ERROR_NOMATCH ? rc : nil
        return rc
    }

    public func search(_ bytes: [UInt8], start: Int = 0) -> Bool {
        // PCRE2 (before 10.43) refuses a null subject even when it is empty: an empty array is searched as one NUL
        // byte of which none is read.
        (bytes.isEmpty ? [0] : bytes).withUnsafeBufferPointer { buf in
            search(buf.baseAddress!, length: bytes.count, start: start, ascii: !bytes.contains { $0 >= 0x80 })
        }
    }

    /// The byte range group `n` matched in the last successful search, nil when it did not participate.
    @inline(__always)
    public func range(_ n: Int) -> Range<Int>? {
        guard matchedOK, n <= captureCount else { return nil }
        let s = ovector[2 * n], e = ovector[2 * n + 1]
        if s == cpcre2_unset() { return nil }
        return s..<e
    }

    public func range(named name: String) -> Range<Int>? {
        guard let n = groupNumbers[name] else { return nil }
        return range(n)
    }
}

/// A pattern compiled and JIT-compiled in both variants (Unicode, and bytes for ASCII subjects), shared by every
/// `PCRE2Regex` of the same pattern and options. PCRE2 lets one compiled pattern, JIT code included, serve several
/// threads at once, each with its own match data (which `PCRE2Regex` keeps).
///
/// Owner: this object owns both `pcre2_code` handles and frees them in `deinit`; the regexes hold it strongly; the
/// cache holds it weakly, so that it goes with its last regex.
final class PCRE2Code: @unchecked Sendable {
    // @unchecked: immutable after init; the C objects are only read (matched against) after that.
    let unicode: OpaquePointer
    let ascii: OpaquePointer
    let isJIT: Bool

    private init(_ pattern: String, _ options: UInt32) throws(RegexCompileError) {
        let flags = UInt32(PCRE2_UTF) | UInt32(PCRE2_UCP) | UInt32(PCRE2_MATCH_INVALID_UTF) | options
        let compiled = try PCRE2Regex.compile(pattern, flags)
        // The pattern itself may hold non-ASCII text, which byte mode would read differently: then only the
        // Unicode variant is used.
        let asciiPattern = pattern.utf8.allSatisfy { $0 < 0x80 }
        let bytes = asciiPattern ? ((try? PCRE2Regex.compile(pattern, options)) ?? compiled) : compiled
        unicode = compiled
        ascii = bytes
        isJIT =
            pcre2_jit_compile_8(compiled, UInt32(PCRE2_JIT_COMPLETE)) == 0
            && (bytes == compiled || pcre2_jit_compile_8(bytes, UInt32(PCRE2_JIT_COMPLETE)) == 0)
    }

    deinit {
        if ascii != unicode { pcre2_code_free_8(ascii) }
        pcre2_code_free_8(unicode)
    }

    private struct Key: Hashable {
        let pattern: String
        let options: UInt32
    }

    private final class WeakEntry {
        weak var code: PCRE2Code?
        init(_ code: PCRE2Code) { self.code = code }
    }

    private static let cache = Locked<(entries: [Key: WeakEntry], added: Int)>(([:], 0))

    /// The compiled pattern for `pattern` and `options`, compiled now or shared with a regex that has it already.
    static func shared(_ pattern: String, _ options: UInt32) throws(RegexCompileError) -> PCRE2Code {
        let key = Key(pattern: pattern, options: options)
        if let code = cache.withLock({ $0.entries[key]?.code }) { return code }
        // Compiled outside the lock (a large filter takes milliseconds); two threads racing here each compile,
        // and the first one stored is kept.
        let fresh = try PCRE2Code(pattern, options)
        return cache.withLock { c in
            if let existing = c.entries[key]?.code { return existing }
            c.entries[key] = WeakEntry(fresh)
            c.added += 1
            // Entries whose regexes are all gone are dropped from time to time.
            if c.added % 1024 == 0 { c.entries = c.entries.filter { $0.value.code != nil } }
            return fresh
        }
    }
}
