import Glibc

/// This host's name (`gethostname`), as webhooks send it and as a fleet's node is named by default; nil when it
/// cannot be read or is empty.
public enum HostName {
    public static var current: String? {
        var name = [CChar](repeating: 0, count: 256)
        guard gethostname(&name, name.count) == 0 else { return nil }
        let text = String(decoding: name.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        return text.isEmpty ? nil : text
    }
}
