import Foundation

/// A random number generator for tests that need random input: seeded, and the seed printed, so that a failure can
/// be repeated (`PORTCULLIS_TEST_SEED=N swift test --filter …`). SplitMix64.
public struct SeededGenerator: RandomNumberGenerator {
    public let seed: UInt64
    private var state: UInt64

    /// The seed is `PORTCULLIS_TEST_SEED` when set, else a new one each run (printed with `name`).
    public init(_ name: String) {
        let chosen =
            ProcessInfo.processInfo.environment["PORTCULLIS_TEST_SEED"].flatMap { UInt64($0) }
            ?? UInt64.random(in: 1...UInt64.max)
        self.init(seed: chosen)
        print("\(name): random seed \(chosen) (PORTCULLIS_TEST_SEED=\(chosen) repeats it)")
    }

    public init(seed: UInt64) {
        self.seed = seed
        state = seed
    }

    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
