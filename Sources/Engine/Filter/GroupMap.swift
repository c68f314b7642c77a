/// The named groups of a match (fail2ban's `groupdict()`): a handful of entries, kept in two small arrays
/// because a dictionary's hashing costs more than a linear scan at this size. A present name with a nil value is
/// a group that did not take part in the match, as in Python.
public struct GroupMap: Sequence, Sendable {
    private var names: [String] = []
    private var values: [String?] = []

    public init() {}

    init(capacity: Int) {
        names.reserveCapacity(capacity)
        values.reserveCapacity(capacity)
    }

    public var isEmpty: Bool { names.isEmpty }

    @inline(__always)
    private func index(of name: String) -> Int? {
        // Lengths first: comparing unequal strings takes Swift's slow path (~140 instructions).
        let n = name.utf8.count
        for i in names.indices where names[i].utf8.count == n && names[i] == name { return i }
        return nil
    }

    /// Adds a name known not to be present yet (the groups of one regex have distinct names).
    mutating func appendNew(_ name: String, _ value: String?) {
        names.append(name)
        values.append(value)
    }

    /// `map[name]` is nil when the name is absent, `.some(nil)` when present without a value.
    public subscript(name: String) -> String?? {
        get {
            guard let i = index(of: name) else { return nil }
            return .some(values[i])
        }
        set {
            if let i = index(of: name) {
                if let newValue { values[i] = newValue } else { names.remove(at: i); values.remove(at: i) }
            } else if let newValue {
                names.append(name)
                values.append(newValue)
            }
        }
    }

    @discardableResult
    mutating func removeValue(forKey name: String) -> String?? {
        guard let i = index(of: name) else { return nil }
        names.remove(at: i)
        return .some(values.remove(at: i))
    }

    public func makeIterator() -> AnyIterator<(key: String, value: String?)> {
        var i = 0
        return AnyIterator {
            guard i < names.count else { return nil }
            defer { i += 1 }
            return (names[i], values[i])
        }
    }
}
