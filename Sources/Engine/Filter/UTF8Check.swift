/// Invalid UTF-8 in log lines, repaired as fail2ban (Python) decodes it.
enum UTF8Check {
    /// The bytes with every invalid sequence replaced by U+FFFD (Python's `errors='replace'`).
    static func repaired(_ bytes: UnsafeBufferPointer<UInt8>) -> [UInt8] {
        Array(String(decoding: bytes, as: UTF8.self).utf8)
    }
}
