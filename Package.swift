// swift-tools-version: 6.0
import PackageDescription

/// Settings every Swift target shares, so that the whole package is held to the same language rules.
let swiftSettings: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny")
]

let package = Package(
    name: "Portcullis",
    products: [
        .executable(name: "portcullis", targets: ["portcullis"])
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2")
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
        // The fleet's shared bans: PostgreSQL's own client library (libpq-dev), never a hand-written wire protocol.
        .systemLibrary(
            name: "CPostgres",
            pkgConfig: "libpq",
            providers: [.apt(["libpq-dev"])]
        ),
        // The Linux calls Swift's Glibc module does not export (epoll, eventfd, accept4, thread names, mallopt).
        .target(name: "CPlatform"),
        // The bottom layer every target stands on: file descriptors owned, errno as data, epoll/eventfd/inotify,
        // threads that stop and join, the lock, the logger, the clock, JSON text, the allocator's tuning.
        .target(name: "Platform", dependencies: ["CPlatform"], swiftSettings: swiftSettings),
        // Byte scanning the per-line path needs vectorised (SSE2), where Swift's SIMD types compile poorly.
        .target(name: "CFastScan"),
        // nftables transactions over libnftnl + libmnl (Debian: libnftnl-dev, libmnl-dev).
        .target(
            name: "CNetfilter",
            linkerSettings: [.linkedLibrary("nftnl"), .linkedLibrary("mnl")]
        ),
        // Webhooks: libcurl (with OpenSSL: libcurl4-openssl-dev) and HMAC-SHA256 from libcrypto (libssl-dev).
        .target(
            name: "CHTTPClient",
            linkerSettings: [.linkedLibrary("curl"), .linkedLibrary("crypto")]
        ),
        .target(
            name: "Engine",
            dependencies: ["Platform", "CPCRE2", "CFastScan", "CNetfilter", "CSQLite", "CHTTPClient", "CPostgres"],
            // The per-line path touches class properties millions of times a second; dynamic exclusivity checks
            // cost ~15% there. Debug builds (and so the tests) keep them on.
            swiftSettings: swiftSettings + [.unsafeFlags(["-enforce-exclusivity=unchecked"], .when(configuration: .release))]
        ),
        // An HTTP/1.1 server on POSIX sockets (no server framework): it knows requests and answers, not the engine.
        .target(
            name: "HTTP",
            dependencies: ["Platform"],
            path: "Sources/Server/HTTP",
            swiftSettings: swiftSettings
        ),
        // The admin API: the JSON endpoints over the engine, served by HTTP.
        .target(
            name: "Server",
            dependencies: ["Engine", "HTTP", "Platform"],
            exclude: ["HTTP"],
            swiftSettings: swiftSettings
        ),
        // The CLI's side of the API: a blocking HTTP/1.1 client over the Unix socket or TCP.
        .target(
            name: "AdminClient",
            dependencies: ["HTTP", "Platform"],
            swiftSettings: swiftSettings
        ),
        .executableTarget(
            name: "portcullis",
            dependencies: [
                "Platform",
                "Engine",
                "Server",
                "HTTP",
                "AdminClient",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: swiftSettings
        ),
        // Benchmarks that need the engine from inside (run by hand; figures go to BENCHMARKS.md).
        .executableTarget(
            name: "portcullis-bench",
            dependencies: ["Platform", "Engine"],
            swiftSettings: swiftSettings
        ),
        // What the test targets share (a scratch directory); not part of the product.
        .target(name: "TestSupport", path: "Tests/TestSupport", swiftSettings: swiftSettings),
        .testTarget(name: "PlatformTests", dependencies: ["Platform"], swiftSettings: swiftSettings),
        .testTarget(
            name: "EngineTests",
            dependencies: ["Platform", "Engine", "CHTTPClient", "TestSupport"],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "ServerTests",
            dependencies: ["Server", "HTTP", "AdminClient", "Platform", "Engine", "TestSupport"],
            swiftSettings: swiftSettings
        ),
        // Runs the built `portcullis` binary (hence the dependency on the executable target).
        .testTarget(
            name: "IntegrationTests",
            dependencies: ["Platform", "Engine", "portcullis", "TestSupport"],
            // Scripts the tests run (namespace scenarios, deployment checks), not sources.
            exclude: ["netns", "deploy", "differential", "docker", "events", "observability", "webhooks", "cluster"],
            swiftSettings: swiftSettings
        ),
    ]
)
