import FoundationEssentials
import Glibc
import Platform

/// A configuration tree in fail2ban's layout (`jail.conf`, `jail.d/`, `filter.d/`, `*.local` overlays).
public struct ConfigDirectory: Sendable {
    public let path: String
    public let cache: IniCache

    public init(_ path: String, cache: IniCache = IniCache()) {
        var p = path
        while p.count > 1 && p.hasSuffix("/") { p.removeLast() }
        self.path = p
        self.cache = cache
    }

    public var exists: Bool {
        Path.isDirectory(path)
    }

    /// The files fail2ban reads for `name` ("jail", "filter.d/sshd"), in order:
    /// `name.conf`, `name.d/*.conf`, `name.local`, `name.d/*.local`.
    public func files(for name: String) -> [String] {
        let base = Path.appending(path, name)
        let d = base + ".d"
        let listing = ((try? FileManager.default.contentsOfDirectory(atPath: d)) ?? []).sorted()
        var result = [base + ".conf"]
        result += listing.filter { $0.hasSuffix(".conf") && !$0.hasPrefix(".") }.map { d + "/" + $0 }
        result.append(base + ".local")
        result += listing.filter { $0.hasSuffix(".local") && !$0.hasPrefix(".") }.map { d + "/" + $0 }
        return result.filter { FileManager.default.fileExists(atPath: $0) }
    }

    /// Reads `name` with all its overlays and includes. Throws when none of its files exists.
    public func read(_ name: String) throws(ConfigError) -> ConfigStack {
        guard exists else { throw ConfigError("configuration directory \(path) does not exist") }
        let found = files(for: name)
        guard !found.isEmpty else {
            throw ConfigError("no \(name).conf or \(name).local under \(path)")
        }
        return try ConfigStack.read(found, cache: cache)
    }
}
