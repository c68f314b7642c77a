/// A dictionary that remembers insertion order, as Python's `dict` does: fail2ban's configuration semantics
/// (which file defined a key first, which jail comes first) depend on it.
public struct OrderedMap<Value>: Sequence {
    public private(set) var keys: [String] = []
    private var storage: [String: Value] = [:]

    public init() {}

    public subscript(key: String) -> Value? {
        get { storage[key] }
        set {
            if let newValue {
                if storage.updateValue(newValue, forKey: key) == nil { keys.append(key) }
            } else if storage.removeValue(forKey: key) != nil {
                keys.removeAll { $0 == key }
            }
        }
    }

    public var count: Int { keys.count }
    public var isEmpty: Bool { keys.isEmpty }
    public func contains(_ key: String) -> Bool { storage[key] != nil }

    /// Python's `dict.update`: existing keys keep their position, new keys are appended.
    public mutating func update(with other: OrderedMap<Value>) {
        for key in other.keys { self[key] = other.storage[key] }
    }

    public func makeIterator() -> AnyIterator<(key: String, value: Value)> {
        var index = 0
        return AnyIterator {
            while index < keys.count {
                let key = keys[index]
                index += 1
                if let value = storage[key] { return (key, value) }
            }
            return nil
        }
    }

    public func mapValues<T>(_ transform: (Value) throws -> T) rethrows -> OrderedMap<T> {
        var result = OrderedMap<T>()
        for key in keys { result[key] = try transform(storage[key]!) }
        return result
    }
}

extension OrderedMap: Sendable where Value: Sendable {}
