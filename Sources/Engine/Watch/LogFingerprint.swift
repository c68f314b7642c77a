/// What the store keeps to recognise a log file: a fingerprint of its first line, not the line. A log path can
/// end up naming a file with secrets (made a symlink to /etc/shadow), and the database must not hold a copy.
/// Format: a version byte (1), the line's 64-bit FNV-1a hash and its length (both big-endian). Recognising a
/// file needs no more than that; the line cannot be read back from it.
public enum LogFingerprint {
    public static func of(_ line: [UInt8]) -> [UInt8] {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for b in line {
            hash ^= UInt64(b)
            hash = hash &* 0x100_0000_01b3
        }
        let length = UInt64(line.count)
        return [1] + (0..<8).map { UInt8(truncatingIfNeeded: hash >> (56 - 8 * $0)) }
            + (0..<8).map { UInt8(truncatingIfNeeded: length >> (56 - 8 * $0)) }
    }

    public static func isFingerprint(_ bytes: [UInt8]) -> Bool { bytes.count == 17 && bytes[0] == 1 }
}
