extension Array {
    /// Appends `items`, then drops the oldest elements beyond `limit` (a queue bounded by dropping its oldest, as
    /// the webhook and cluster queues are); returns what was dropped, oldest first.
    @discardableResult
    public mutating func append(contentsOf items: [Element], keepingAtMost limit: Int) -> [Element] {
        append(contentsOf: items)
        let over = count - Swift.max(0, limit)
        guard over > 0 else { return [] }
        let dropped = Array(prefix(over))
        removeFirst(over)
        return dropped
    }
}
