import Glibc

/// File paths as text, with NSString's path rules (trailing slashes ignored, "/" kept), without Foundation.
public enum Path {
    private static func stripped(_ path: String) -> Substring {
        var p = Substring(path)
        while p.count > 1 && p.hasSuffix("/") { p = p.dropLast() }
        return p
    }

    /// "/a/b.conf" → "/a"; "/a" → "/"; "b.conf" → "".
    public static func directory(of path: String) -> String {
        let p = stripped(path)
        guard let slash = p.lastIndex(of: "/") else { return "" }
        if slash == p.startIndex { return "/" }
        return stripped(String(p[..<slash])).description
    }

    /// "/a/b.conf" → "b.conf"; "/" → "/".
    public static func lastComponent(_ path: String) -> String {
        let p = stripped(path)
        if p == "/" { return "/" }
        guard let slash = p.lastIndex(of: "/") else { return String(p) }
        return String(p[p.index(after: slash)...])
    }

    /// "/a/b.conf" → "/a/b"; a leading dot does not start an extension (".hidden" stays).
    public static func deletingExtension(_ path: String) -> String {
        let p = stripped(path)
        let nameStart = p.lastIndex(of: "/").map { p.index(after: $0) } ?? p.startIndex
        guard let dot = p[nameStart...].lastIndex(of: "."), dot != nameStart else { return String(p) }
        return String(p[..<dot])
    }

    /// `base` + "/" + `name`, with one slash between them.
    public static func appending(_ base: String, _ name: String) -> String {
        if base.isEmpty { return name }
        return String(stripped(base)) + (base == "/" ? "" : "/") + name
    }

    public static func exists(_ path: String) -> Bool { access(path, F_OK) == 0 }

    /// Whether `path` names a directory (a symlink to one included).
    public static func isDirectory(_ path: String) -> Bool {
        var st = stat()
        return stat(path, &st) == 0 && st.st_mode & S_IFMT == S_IFDIR
    }
}
