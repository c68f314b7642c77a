/// A Prometheus histogram: counts per upper bound (cumulative when exposed), their sum and count.
public struct Histogram: Sendable {
    public let bounds: [Double]
    /// Observations at most `bounds[i]` and above the bound before (the last: above every bound).
    public private(set) var counts: [Int]
    public private(set) var sum = 0.0
    public private(set) var count = 0

    public init(bounds: [Double]) {
        self.bounds = bounds.sorted()
        counts = [Int](repeating: 0, count: bounds.count + 1)
    }

    public mutating func observe(_ value: Double) {
        let i = bounds.firstIndex { value <= $0 } ?? bounds.count
        counts[i] += 1
        sum += value
        count += 1
    }

    /// (upper bound, observations at most it), ending with +Inf: what `_bucket{le=…}` says.
    public var cumulative: [(bound: Double, count: Int)] {
        var total = 0
        var out: [(Double, Int)] = []
        for (i, b) in bounds.enumerated() {
            total += counts[i]
            out.append((b, total))
        }
        out.append((.infinity, count))
        return out
    }
}
