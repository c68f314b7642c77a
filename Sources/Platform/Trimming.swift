/// Trimming without Foundation (whose `trimmingCharacters(in:)` comes with ICU): the same sets as Foundation's
/// `.whitespaces` (spaces and tabs, Unicode's included, not line breaks) and `.whitespacesAndNewlines`.
extension StringProtocol {
    /// Without leading and trailing spaces and tabs.
    public func trimmingWhitespace() -> String {
        trimming { $0.isWhitespace && !$0.isNewline }
    }

    /// Without leading and trailing whitespace, line breaks included.
    public func trimmingWhitespaceAndNewlines() -> String {
        trimming { $0.isWhitespace }
    }

    private func trimming(_ drop: (Character) -> Bool) -> String {
        guard let first = firstIndex(where: { !drop($0) }), let last = lastIndex(where: { !drop($0) }) else { return "" }
        return String(self[first...last])
    }
}
