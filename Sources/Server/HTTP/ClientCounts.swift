import Platform

/// Connections from one client address, across loops, against `max_connections_per_client`.
final class ClientCounts: Sendable {
    let limit: Int
    private let counts = Locked<[PeerAddress: Int]>([:])

    init(limit: Int) { self.limit = limit }

    func tryEnter(_ peer: PeerAddress) -> Bool {
        counts.withLock { c in
            let n = c[peer, default: 0]
            guard n < limit else { return false }
            c[peer] = n + 1
            return true
        }
    }

    func leave(_ peer: PeerAddress) {
        counts.withLock { c in
            let n = c[peer, default: 1] - 1
            c[peer] = n > 0 ? n : nil
        }
    }
}
