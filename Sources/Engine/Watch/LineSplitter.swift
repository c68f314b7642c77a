import Glibc

/// Splits a byte stream into lines with `memchr`, keeping an unfinished last line until its newline arrives.
/// Lines longer than `maxLineLength` are cut there (the rest of that line is dropped and counted), so a hostile
/// log cannot make memory grow without bound.
public struct LineSplitter {
    public let maxLineLength: Int
    private var partial: [UInt8] = []
    private var discarding = false
    /// Lines that were cut at `maxLineLength`.
    public private(set) var truncatedLines = 0

    public init(maxLineLength: Int = 4 << 20) {
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
            truncatedLines += 1
        } else {
            partial.append(contentsOf: UnsafeBufferPointer(start: p, count: n))
        }
    }

    @inline(__always)
    private mutating func emit(_ line: UnsafeBufferPointer<UInt8>, _ body: (UnsafeBufferPointer<UInt8>) -> Void) {
        var n = line.count
        while n > 0 && line[n - 1] == 13 { n -= 1 }
        if n > maxLineLength {
            truncatedLines += 1
            n = maxLineLength
        }
        body(UnsafeBufferPointer(rebasing: line[0..<n]))
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
    public static func forEach(path: String, bufferSize: Int = 1 << 20, includeUnterminated: Bool = true,
                               _ body: (UnsafeBufferPointer<UInt8>) -> Void) throws(OpenError) -> LineSplitter {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw OpenError(path: path, errno: errno) }
        defer { close(fd) }
        var splitter = LineSplitter()
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: bufferSize, alignment: 16)
        defer { buffer.deallocate() }
        while true {
            let n = read(fd, buffer.baseAddress, bufferSize)
            if n < 0 {
                if errno == EINTR { continue }
                throw OpenError(path: path, errno: errno)
            }
            if n == 0 { break }
            splitter.feed(UnsafeRawBufferPointer(rebasing: buffer[0..<n]), body)
        }
        if includeUnterminated { splitter.flush(body) }
        return splitter
    }
}
