import Synchronization

/// The connection count across loops, against `max_connections`.
final class ConnectionGate: Sendable {
    let limit: Int
    private let count = Atomic<Int>(0)

    init(limit: Int) { self.limit = limit }

    func tryEnter() -> Bool {
        if count.wrappingAdd(1, ordering: .relaxed).newValue > limit {
            count.wrappingSubtract(1, ordering: .relaxed)
            return false
        }
        return true
    }

    func leave() -> Int { count.wrappingSubtract(1, ordering: .relaxed).newValue }
    var current: Int { count.load(ordering: .relaxed) }
}
