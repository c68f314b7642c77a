/// What the server counts for /metrics (kept in `HTTPCounters`).
public struct HTTPStats: Sendable {
    /// Answers by status, 100...599 (an array: this is counted on every request).
    var statusCounts = [Int](repeating: 0, count: 500)
    public var requestsByStatus: [Int: Int] {
        var d: [Int: Int] = [:]
        for (i, n) in statusCounts.enumerated() where n > 0 { d[i + 100] = n }
        return d
    }
    mutating func count(_ status: Int) {
        if (100...599).contains(status) { statusCounts[status - 100] += 1 }
    }
    public var openConnections = 0
    public var acceptedConnections = 0
    public var refusedConnections = 0
    /// Streamed answers open now, and those ended by the server because the client read too slowly.
    public var openStreams = 0
    public var droppedStreams = 0
}
