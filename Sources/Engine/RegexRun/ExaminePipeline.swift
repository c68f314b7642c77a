import Platform

/// `portcullis regex` over a file, on two threads. A reader thread splits the file into lines and runs the half
/// of the filter's per-line work that depends only on earlier lines' dates (`LineExaminer.examine`: the UTF-8
/// check and date detection); the calling thread gets the lines in order, in batches, and runs the rest (the
/// screen, the regexes) and the statistics. Results are those of one thread doing both halves line after line:
/// `examine` never reads what `process` writes, and each line is examined before it is processed.
///
/// Memory stays bounded: a fixed number of batches circulate between the threads, each holding up to
/// `batchLines` lines (a batch grows past `batchBytes` only for a single long line).
final class ExaminePipeline: @unchecked Sendable {
    // @unchecked: `ready` and `free` (and the batches while they are in them) are touched only under `condition`; a
    // batch taken out of them belongs to the one thread that took it until it is handed back; the rest is
    // immutable after init.
    /// Lines read and examined, ready for `process`.
    final class Batch {
        struct Line {
            var offset: Int
            var length: Int
            /// What `examine` found; nil: a line the test skips unexamined.
            var facts: LineFacts?
        }
        /// The lines' bytes (a line with invalid UTF-8 as repaired by `examine`).
        let bytes = ByteBuffer(capacity: ExaminePipeline.batchBytes + 4096)
        /// Fixed storage for `batchLines` lines (appending to an array held by a class checks and retains it).
        private let storage = UnsafeMutablePointer<Line>.allocate(capacity: ExaminePipeline.batchLines)
        private(set) var count = 0
        /// Set on the last batch: the file could not be read to its end.
        var error: FileLines.OpenError?
        var isLast = false
        /// On the last batch: bytes of a final line without a newline (not passed on).
        var unterminatedBytes = 0
        /// On the last batch: how many lines were cut at the length cap, and the numbers of the first ones.
        var cutLines = 0
        var cutLineNumbers: [Int] = []

        deinit {
            storage.deinitialize(count: count)
            storage.deallocate()
        }

        var isFull: Bool { count == ExaminePipeline.batchLines }

        func append(_ line: UnsafeBufferPointer<UInt8>, facts: LineFacts?) {
            (storage + count).initialize(to: Line(offset: bytes.count, length: line.count, facts: facts))
            if facts != nil { bytes.append(line) }
            count += 1
        }

        func reset() {
            storage.deinitialize(count: count)
            count = 0
            bytes.reset()
        }

        subscript(i: Int) -> Line { storage[i] }

        func line(_ i: Int) -> UnsafeBufferPointer<UInt8> {
            UnsafeBufferPointer(start: bytes.base + storage[i].offset, count: storage[i].length)
        }
    }

    static let batchLines = 2048
    static let batchBytes = 256 << 10
    private static let batchCount = 3

    private let filter: LineFilter
    private let path: String
    private let now: Double
    private let maxLineLength: Int
    private let skip: @Sendable (UnsafeBufferPointer<UInt8>) -> Bool
    private let condition = Condition()
    private var ready: [Batch] = []
    private var free: [Batch]

    /// `skip`: lines the test does not examine (comments, blank lines); they are passed on without facts.
    init(
        filter: LineFilter, path: String, now: Double, maxLineLength: Int,
        skip: @escaping @Sendable (UnsafeBufferPointer<UInt8>) -> Bool
    ) {
        self.filter = filter
        self.path = path
        self.now = now
        self.maxLineLength = maxLineLength
        self.skip = skip
        free = (0..<ExaminePipeline.batchCount).map { _ in Batch() }
    }

    /// Runs the reader thread and calls `body` with each batch, in order, on the calling thread. Returns the
    /// last batch (its unterminated bytes and cut lines), once the reader thread has ended; nil, before any line,
    /// when no thread could be started (the caller reads on its own). Throws when the file could not be read
    /// (after passing on every line read before the error).
    func run(_ body: (Batch) -> Void) throws(FileLines.OpenError) -> Batch? {
        // The reader ends by itself, at the end of the file; joined after its last batch.
        guard let reader = try? StoppableThread(name: "portcullis-examine"), (try? reader.start({ [self] in read() })) != nil else { return nil }
        while true {
            let batch = take(from: \.ready)
            body(batch)
            if batch.isLast {
                // The last batch is the reader's last act.
                reader.join()
                if let error = batch.error { throw error }
                return batch
            }
            batch.reset()
            give(batch, to: \.free)
        }
    }

    private func take(from queue: ReferenceWritableKeyPath<ExaminePipeline, [Batch]>) -> Batch {
        condition.lock()
        defer { condition.unlock() }
        while self[keyPath: queue].isEmpty { condition.wait() }
        return self[keyPath: queue].removeFirst()
    }

    private func give(_ batch: Batch, to queue: ReferenceWritableKeyPath<ExaminePipeline, [Batch]>) {
        condition.lock()
        self[keyPath: queue].append(batch)
        condition.broadcast()
        condition.unlock()
    }

    /// The reader thread.
    private func read() {
        var batch = take(from: \.free)
        let examiner = filter.examiner
        let now = self.now
        let skip = self.skip
        var repaired: [UInt8]? = nil
        var unterminated = 0
        var cut = (count: 0, numbers: [Int]())
        var failure: FileLines.OpenError? = nil
        do {
            // fail2ban-regex waits for a line's newline, so a last line without one is not passed on.
            let splitter = try FileLines.forEach(path: path, maxLineLength: maxLineLength, includeUnterminated: false) { line in
                if batch.isFull || (batch.bytes.count + line.count > ExaminePipeline.batchBytes && batch.count > 0) {
                    give(batch, to: \.ready)
                    batch = take(from: \.free)
                }
                if skip(line) {
                    batch.append(line, facts: nil)
                    return
                }
                let facts = examiner.examine(line, now: now, repaired: &repaired)
                if let fixed = repaired {
                    fixed.withUnsafeBufferPointer { batch.append($0, facts: facts) }
                    repaired = nil
                } else {
                    batch.append(line, facts: facts)
                }
            }
            unterminated = splitter.pendingCount
            cut = (splitter.truncatedLines, splitter.cutLineNumbers)
        } catch {
            failure = error
        }
        batch.unterminatedBytes = unterminated
        (batch.cutLines, batch.cutLineNumbers) = cut
        batch.error = failure
        batch.isLast = true
        give(batch, to: \.ready)
    }
}
