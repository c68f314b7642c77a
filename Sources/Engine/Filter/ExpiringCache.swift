import Platform

/// fail2ban's `Utils.Cache`: bounded by count (oldest inserted evicted first) and by age.
struct ExpiringCache<Value> {
    let maxCount: Int
    let maxTime: Double
    private var order: [String] = []
    private var items: [String: (value: Value, expires: Double)] = [:]

    init(maxCount: Int, maxTime: Double) {
        self.maxCount = maxCount
        self.maxTime = maxTime
    }

    private static func now() -> Double { Clock.now() }

    mutating func get(_ key: String) -> Value? {
        guard let item = items[key] else { return nil }
        if item.expires > ExpiringCache.now() { return item.value }
        unset(key)
        return nil
    }

    mutating func set(_ key: String, _ value: Value) {
        let t = ExpiringCache.now()
        if items.count >= maxCount {
            while let first = order.first {
                order.removeFirst()
                let evicted = items.removeValue(forKey: first)
                if let evicted, evicted.expires > t, items.count < maxCount { break }
            }
        }
        if items[key] == nil { order.append(key) }
        items[key] = (value, t + maxTime)
    }

    mutating func unset(_ key: String) {
        if items.removeValue(forKey: key) != nil { order.removeAll { $0 == key } }
    }
}
