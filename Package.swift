// swift-tools-version: 6.0
import PackageDescription

/// Settings every Swift target shares, so that the whole package is held to the same language rules.
let swiftSettings: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
]

let package = Package(
    name: "Portcullis",
    products: [
        .executable(name: "portcullis", targets: ["portcullis"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
    ],
    targets: [
        .systemLibrary(
            name: "CPCRE2",
            pkgConfig: "libpcre2-8",
            providers: [.apt(["libpcre2-dev"])]
        ),
        .systemLibrary(
            name: "CSQLite",
            pkgConfig: "sqlite3",
            providers: [.apt(["libsqlite3-dev"])]
        ),
        // Byte scanning the per-line path needs vectorised (SSE2), where Swift's SIMD types compile poorly.
        .target(name: "CFastScan"),
        // nftables transactions over libnftnl + libmnl (Debian: libnftnl-dev, libmnl-dev).
        .target(
            name: "CNetfilter",
            linkerSettings: [.linkedLibrary("nftnl"), .linkedLibrary("mnl")]
        ),
        .target(
            name: "Engine",
            dependencies: ["CPCRE2", "CFastScan", "CNetfilter", "CSQLite"],
            // The per-line path touches class properties millions of times a second; dynamic exclusivity checks
            // cost ~15% there. Debug builds (and so the tests) keep them on.
            swiftSettings: swiftSettings + [.unsafeFlags(["-enforce-exclusivity=unchecked"], .when(configuration: .release))]
        ),
        // epoll, eventfd and accept4, which Swift's Glibc module does not export.
        .target(name: "CServerSupport"),
        // The admin API: an HTTP/1.1 server on POSIX sockets (no server framework) and the JSON endpoints.
        .target(
            name: "Server",
            dependencies: ["Engine", "CServerSupport"],
            swiftSettings: swiftSettings
        ),
        .executableTarget(
            name: "portcullis",
            dependencies: [
                "Engine",
                "Server",
                "CFastScan",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: swiftSettings
        ),
        // Benchmarks that need the engine from inside (run by hand; figures go to BENCHMARKS.md).
        .executableTarget(
            name: "portcullis-bench",
            dependencies: ["Engine"],
            swiftSettings: swiftSettings
        ),
        // What the test targets share (a scratch directory); not part of the product.
        .target(name: "TestSupport", path: "Tests/TestSupport", swiftSettings: swiftSettings),
        .testTarget(
            name: "EngineTests",
            dependencies: ["Engine", "TestSupport"],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "ServerTests",
            dependencies: ["Server", "Engine", "TestSupport"],
            swiftSettings: swiftSettings
        ),
        // Runs the built `portcullis` binary (hence the dependency on the executable target).
        .testTarget(
            name: "IntegrationTests",
            dependencies: ["Engine", "portcullis", "TestSupport"],
            // Scripts the tests run (namespace scenarios, deployment checks), not sources.
            exclude: ["netns", "deploy", "differential", "docker"],
            swiftSettings: swiftSettings
        ),
    ]
)
