import Glibc
import Platform

/// Splits a byte stream into lines with `memchr`, keeping an unfinished last line until its newline arrives.
/// Lines longer than `maxLineLength` are cut there (the rest of that line is dropped and counted), so a hostile
/// log cannot make memory grow without bound.
public struct LineSplitter {
    public let maxLineLength: Int
    private var partial: [UInt8] = []
    private var discarding = false
    /// Lines that were cut at `maxLineLength`.
    public private(set) var truncatedLines = 0
    /// Lines emitted so far.
    public private(set) var emittedLines = 0
    /// The ordinals (1-based, among emitted lines) of the first lines that were cut, for reports.
    public private(set) var cutLineNumbers: [Int] = []

    /// 4 MiB: longer lines are cut (fail2ban reads them whole; see docs/running.md).
    public static let defaultMaxLineLength = 4 << 20

    public init(maxLineLength: Int = LineSplitter.defaultMaxLineLength) {
        self.maxLineLength = maxLineLength
    }

    /// Bytes of an unfinished line held back.
    public var pendingCount: Int { partial.count }

    /// Feeds `chunk`; calls `body` with each complete line, its `\n` and trailing `\r`s removed.
    public mutating func feed(_ chunk: UnsafeRawBufferPointer, _ body: (UnsafeBufferPointer<UInt8>) -> Void) {
        guard let base = chunk.baseAddress?.assumingMemoryBound(to: UInt8.self), chunk.count > 0 else { return }
        var start = 0
        let end = chunk.count
        while start < end {
            guard let nl = memchr(base + start, 10, end - start) else {
                appendPartial(base + start, end - start)
                return
            }
            let pos = base.distance(to: nl.assumingMemoryBound(to: UInt8.self))
            if partial.isEmpty && !discarding {
                emit(UnsafeBufferPointer(start: base + start, count: pos - start), body)
            } else {
                appendPartial(base + start, pos - start)
                let line = partial
                partial.removeAll(keepingCapacity: true)
                discarding = false
                line.withUnsafeBufferPointer { emit($0, body) }
            }
            start = pos + 1
        }
    }

    /// Emits the unfinished last line, if any (end of a file that lacks a final newline).
    public mutating func flush(_ body: (UnsafeBufferPointer<UInt8>) -> Void) {
        guard !partial.isEmpty else { discarding = false; return }
        let line = partial
        partial.removeAll(keepingCapacity: true)
        discarding = false
        line.withUnsafeBufferPointer { emit($0, body) }
    }

    /// Forgets an unfinished line (the file was truncated or replaced).
    public mutating func reset() {
        partial.removeAll()
        discarding = false
    }

    private mutating func appendPartial(_ p: UnsafePointer<UInt8>, _ n: Int) {
        if discarding { return }
        let room = maxLineLength - partial.count
        if n > room {
            partial.append(contentsOf: UnsafeBufferPointer(start: p, count: max(0, room)))
            discarding = true
            noteCut(emittedLines + 1)
        } else {
            partial.append(contentsOf: UnsafeBufferPointer(start: p, count: n))
        }
    }

    @inline(__always)
    private mutating func emit(_ line: UnsafeBufferPointer<UInt8>, _ body: (UnsafeBufferPointer<UInt8>) -> Void) {
        var n = line.count
        while n > 0 && line[n - 1] == 13 { n -= 1 }
        emittedLines += 1
        if n > maxLineLength {
            noteCut(emittedLines)
            n = maxLineLength
        }
        body(UnsafeBufferPointer(rebasing: line[0..<n]))
    }

    private mutating func noteCut(_ ordinal: Int) {
        truncatedLines += 1
        if cutLineNumbers.count < 100 { cutLineNumbers.append(ordinal) }
    }
}

/// Reads a whole file through a fixed buffer, line by line (never the whole file in memory).
public enum FileLines {
    public struct OpenError: Error, CustomStringConvertible {
        public let path: String
        public let errno: Int32
        public var description: String { "cannot read \(path): \(String(cString: strerror(errno)))" }
    }

    /// Calls `body` for each line of `path`. A last line without a final newline is passed only when
    /// `includeUnterminated` is set; otherwise its length is in the returned splitter's `pendingCount`.
    @discardableResult
    public static func forEach(
        path: String, bufferSize: Int = 1 << 20, maxLineLength: Int = LineSplitter.defaultMaxLineLength,
        includeUnterminated: Bool = true,
        _ body: (UnsafeBufferPointer<UInt8>) -> Void
    ) throws(OpenError) -> LineSplitter {
        let file: FileDescriptor
        do { file = try FileDescriptor.open(path, O_RDONLY) } catch { throw OpenError(path: path, errno: error.rawValue) }
        var splitter = LineSplitter(maxLineLength: maxLineLength)
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: bufferSize, alignment: 16)
        defer { buffer.deallocate() }
        while true {
            let n: Int
            do { n = try file.read(into: buffer) } catch { throw OpenError(path: path, errno: error.rawValue) }
            if n == 0 { break }
            splitter.feed(UnsafeRawBufferPointer(rebasing: buffer[0..<n]), body)
        }
        if includeUnterminated { splitter.flush(body) }
        return splitter
    }
}

/// Sizes as settings and options write them: bytes, or with a K, M or G suffix (powers of 1024).
public enum ByteSize {
    /// The size in bytes, nil when malformed or outside 1 KiB ... 1 GiB (a line cap outside that is a mistake).
    public static func parse(_ text: String) -> Int? {
        var digits = Substring(text.trimmingWhitespace())
        var unit = 1
        if let last = digits.last, let shift = ["k": 10, "m": 20, "g": 30][last.lowercased()] {
            unit = 1 << shift
            digits = digits.dropLast()
        }
        guard let n = Int(digits), n > 0, n <= (1 << 30) / unit else { return nil }
        let bytes = n * unit
        return bytes >= 1024 ? bytes : nil
    }
}
