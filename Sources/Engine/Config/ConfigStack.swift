import FoundationEssentials
import Glibc
import Platform

/// Parsed files shared by every reader of one configuration tree: `common.conf` is read once for all filters.
public final class IniCache: @unchecked Sendable {
    // @unchecked: the dictionary is only touched under `lock`.
    private var files: [String: Result<IniFile, ConfigError>] = [:]
    private let lock = Lock()

    public init() {}

    /// nil when the file does not exist (fail2ban skips missing includes silently).
    func file(_ path: String) throws(ConfigError) -> IniFile? {
        lock.lock()
        defer { lock.unlock() }
        if let cached = files[path] { return try cached.get() }
        guard Path.exists(path), !Path.isDirectory(path) else { return nil }
        do {
            let parsed = try IniFile.load(path)
            files[path] = .success(parsed)
            return parsed
        } catch {
            files[path] = .failure(error)
            throw error
        }
    }
}

/// Several INI files merged the way fail2ban merges them: `[INCLUDES] before/after` (relative to the including
/// file), every `X.conf` followed by `X.local`, later files overriding earlier keys while the overridden values
/// stay reachable as `known/` (`%(known/failregex)s`), and `%(name)s` / `%(section/name)s` interpolation.
public struct ConfigStack: Sendable {
    public private(set) var defaults = IniSection()
    public private(set) var sections = OrderedMap<IniSection>()
    public private(set) var files: [String] = []
    public private(set) var warnings: [Diagnostic] = []

    /// Python's configparser limit, which fail2ban inherits.
    public static let maxInterpolationDepth = 10

    public init() {}

    /// Reads `paths` in order, each expanded with its includes and its `.local` overlay.
    /// The corresponding fail2ban code is `SafeConfigParserWithIncludes.read`.
    public static func read(_ paths: [String], cache: IniCache) throws(ConfigError) -> ConfigStack {
        var stack = ConfigStack()
        var ordered: [String] = []
        for path in expandWithLocal(paths) {
            ordered += try includes(of: path, seen: [], cache: cache)
        }
        for path in ordered {
            guard let file = try cache.file(path) else { continue }
            stack.merge(file)
        }
        return stack
    }

    /// `a.conf` → `a.conf, a.local` when the overlay exists and is not listed already.
    static func expandWithLocal(_ paths: [String]) -> [String] {
        var result: [String] = []
        for path in paths {
            result.append(path)
            let local = Path.deletingExtension(path) + ".local"
            if !paths.contains(local) && local != path && FileManager.default.fileExists(atPath: local) {
                result.append(local)
            }
        }
        return result
    }

    private static func includes(of path: String, seen: [String], cache: IniCache) throws(ConfigError) -> [String] {
        guard let file = try cache.file(path) else { return [] }
        let dir = Path.directory(of: path)
        var before: [String] = []
        var after: [String] = []
        if let inc = file.sections["INCLUDES"] {
            for (option, target) in [("before", 0), ("after", 1)] {
                guard let entry = inc[option] else { continue }
                // [INCLUDES] values may use the including file's own defaults.
                var single = ConfigStack()
                single.merge(file)
                let value = try single.get("INCLUDES", option) ?? entry.value
                for item in value.split(separator: "\n") {
                    let name = item.trimmingWhitespace()
                    if name.isEmpty { continue }
                    let resolved = name.hasPrefix("/") ? name : Path.appending(dir, name)
                    if seen.contains(resolved) || resolved == path { continue }
                    var found: [String] = []
                    for expanded in expandWithLocal([resolved]) {
                        found += try includes(of: expanded, seen: seen + [path], cache: cache)
                    }
                    if target == 0 { before += found } else { after += found }
                }
            }
        }
        return before + [path] + after
    }

    /// Merges one file over what is there; overridden values are kept in `KNOWN/<section>`.
    public mutating func merge(_ file: IniFile) {
        files.append(file.path)
        warnings += file.warnings
        defaults.update(with: file.defaults)
        for (name, section) in file.sections {
            var name = name
            var section = section
            // Conditional sections ("[Init?family=inet6]") hold keys suffixed with the condition.
            if let q = name.firstIndex(of: "?"), q != name.startIndex,
                name[..<q].allSatisfy({ $0.isLetter || $0.isNumber || $0 == "_" })
            {
                let cond = String(name[q...])
                name = String(name[..<q])
                var renamed = IniSection()
                for (k, v) in section { renamed[k + cond] = v }
                section = renamed
            }
            if var existing = sections[name] {
                var known = sections["KNOWN/" + name] ?? IniSection()
                for (k, v) in existing where section.contains(k) { known[k] = v }
                sections["KNOWN/" + name] = known
                existing.update(with: section)
                sections[name] = existing
            } else {
                sections[name] = section
            }
        }
    }

    public mutating func setDefault(_ key: String, _ value: String) {
        defaults[key] = IniValue(value, at: SourceLocation(file: "<built-in>", line: 0))
    }

    /// Adds `options` to `section` with every key prefixed by `prefix` (fail2ban's `merge_section`).
    public mutating func mergeSection(
        _ section: String, _ options: OrderedMap<String>, prefix: String,
        location: SourceLocation
    ) {
        var target = sections[section] ?? IniSection()
        for (k, v) in options where !k.hasPrefix(prefix) && k != "__name__" {
            target[prefix + k] = IniValue(v, at: location)
        }
        sections[section] = target
    }

    public func hasSection(_ name: String) -> Bool { sections[name] != nil }

    /// Keys of a section, without the defaults.
    public func options(_ section: String) -> [String] { sections[section]?.keys ?? [] }

    /// The raw entry for `option` as `get` would see it: the section's own, else DEFAULT's.
    public func rawEntry(_ section: String, _ option: String) -> IniValue? {
        let key = option.lowercased()
        if section == IniFile.defaultSectionName { return defaults[key] }
        return sections[section]?[key] ?? defaults[key]
    }

    /// The interpolated value of `option` in `section`, looking in `vars`, then the section, then DEFAULT.
    /// nil when the option is not set anywhere. Throws for a missing section or a broken interpolation.
    public func get(_ section: String, _ option: String, vars: [String: String] = [:]) throws(ConfigError) -> String? {
        let key = option.lowercased()
        if section != IniFile.defaultSectionName && sections[section] == nil {
            throw ConfigError("no section [\(section)]")
        }
        let raw: String
        let location: SourceLocation?
        if let v = vars[key] {
            raw = v; location = nil
        } else if let entry = rawEntry(section, key) {
            raw = entry.value; location = entry.location
        } else {
            return nil
        }
        return try interpolate(raw, section: section, option: key, vars: vars, location: location)
    }

    /// fail2ban's `get_ex`: `section/option` names read from that section (`known/x` from the overridden values
    /// of the current section, falling back to the current section), anything else as `get`.
    public func getEx(_ section: String, _ option: String, vars: [String: String] = [:]) throws(ConfigError) -> String? {
        if let slash = option.firstIndex(of: "/") {
            let sec = String(option[..<slash])
            let opt = String(option[option.index(after: slash)...])
            let validSec = !sec.isEmpty && sec.allSatisfy { $0.isLetter || $0.isNumber || $0 == "_" || $0 == "-" }
            let validOpt = !opt.isEmpty && !opt.contains(where: { $0.isWhitespace || $0 == ">" })
            if validSec && validOpt {
                let candidates: [String]
                switch sec.lowercased() {
                case "known": candidates = ["KNOWN/" + section, section]
                case "default": candidates = [IniFile.defaultSectionName]
                default: candidates = [sec]
                }
                for candidate in candidates {
                    if candidate != IniFile.defaultSectionName && sections[candidate] == nil { continue }
                    if let v = try get(candidate, opt) { return v }
                }
            }
        }
        return try get(section, option, vars: vars)
    }

    /// The longest value an interpolation may produce: the largest of Debian's filters expands to a few KiB,
    /// while references doubling at each of 10 levels reach gigabytes (a 20-line jail.local took 1.2 GB).
    public static let maxExpandedSize = 1 << 20

    /// Python's `BasicInterpolation` with fail2ban's `%(section/option)s` extension.
    func interpolate(
        _ value: String, section: String, option: String, vars: [String: String],
        location: SourceLocation?, depth: Int = 1
    ) throws(ConfigError) -> String {
        var expanded: [String: String] = [:]
        return try interpolate(value, section: section, option: option, vars: vars, location: location, depth: depth, expanded: &expanded)
    }

    /// `expanded`: each name's expansion, made once per top-level value (a name referred to a thousand times
    /// is expanded once).
    private func interpolate(
        _ value: String, section: String, option: String, vars: [String: String],
        location: SourceLocation?, depth: Int, expanded: inout [String: String]
    ) throws(ConfigError) -> String {
        guard value.contains("%") else { return value }
        if depth > ConfigStack.maxInterpolationDepth {
            throw ConfigError(
                "interpolation of '\(option)' in [\(section)] nests deeper than \(ConfigStack.maxInterpolationDepth) levels (a reference loop?)", at: location)
        }
        var out = ""
        var rest = Substring(value)
        while let p = rest.firstIndex(of: "%") {
            out += rest[..<p]
            rest = rest[p...]
            let next = rest.dropFirst().first
            if next == "%" {
                out += "%"
                rest = rest.dropFirst(2)
            } else if next == "(" {
                guard let close = rest.firstIndex(of: ")"),
                    rest[rest.index(after: close)...].first == "s",
                    rest.distance(from: rest.startIndex, to: close) > 2
                else {
                    throw ConfigError(
                        "bad interpolation in '\(option)' of [\(section)]: '\(rest.prefix(40))' (write %(name)s, or %% for a literal %)", at: location)
                }
                let name = String(rest[rest.index(rest.startIndex, offsetBy: 2)..<close])
                rest = rest[rest.index(close, offsetBy: 2)...]
                if let done = expanded[name] {
                    out += done
                } else {
                    guard let v = lookup(name, section: section, vars: vars) else {
                        throw ConfigError("'\(option)' in [\(section)] refers to %(\(name))s, which is not defined", at: location)
                    }
                    let done = try interpolate(v, section: section, option: option, vars: vars, location: location, depth: depth + 1, expanded: &expanded)
                    expanded[name] = done
                    out += done
                }
                if out.utf8.count > ConfigStack.maxExpandedSize {
                    throw ConfigError(
                        "'\(option)' in [\(section)] expands to more than \(ConfigStack.maxExpandedSize >> 20) MiB (references that repeat each other, %(a)s%(a)s…?)",
                        at: location)
                }
            } else {
                throw ConfigError(
                    "'%' must be followed by '%' or '(' in '\(option)' of [\(section)], found '\(rest.prefix(20))' (write %% for a literal %)", at: location)
            }
        }
        out += rest
        return out
    }

    private func lookup(_ name: String, section: String, vars: [String: String]) -> String? {
        let key = name.lowercased()
        if key == "__name__" { return vars[key] ?? section }
        if let v = vars[key] { return v }
        if section != IniFile.defaultSectionName, let v = sections[section]?[key] { return v.value }
        if let v = defaults[key] { return v.value }
        // %(section/option)s
        if let slash = name.firstIndex(of: "/") {
            let sec = String(name[..<slash])
            let opt = String(name[name.index(after: slash)...]).lowercased()
            switch sec.lowercased() {
            case "default":
                return defaults[opt]?.value
            case "known":
                return sections["KNOWN/" + section]?[opt]?.value ?? defaults[opt]?.value
            default:
                guard let s = sections[sec] else { return nil }
                return s[opt]?.value ?? defaults[opt]?.value
            }
        }
        return nil
    }
}
