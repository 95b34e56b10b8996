// swift-tools-version:6.2
import PackageDescription

let swiftSettings: [SwiftSetting] = [
    .swiftLanguageMode(.v6),
    .enableUpcomingFeature("ExistentialAny"),
]

let package = Package(
    name: "wayback",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "wayback", targets: ["wayback"]),
        .executable(name: "wayback-bench", targets: ["WaybackBench"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-crypto", from: "4.5.2"),
        .package(url: "https://github.com/vapor/postgres-nio", from: "1.33.2"),
        .package(url: "https://github.com/jpsim/Yams", from: "6.2.2"),
        .package(url: "https://github.com/swift-server/async-http-client", from: "1.37.0"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-nio-ssl", from: "2.37.6"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
    ],
    targets: [
        // C libraries: Debian's libzstd-dev, liblz4-dev and zlib1g-dev (scripts/setup installs them).
        .systemLibrary(name: "CZstd", pkgConfig: "libzstd", providers: [.apt(["libzstd-dev"])]),
        .systemLibrary(name: "CCodecs", providers: [.apt(["liblz4-dev", "zlib1g-dev"])]),

        // Layer 0: vocabulary, no I/O.
        .target(name: "WaybackCore", dependencies: [
            "CZstd", "CCodecs",
            .product(name: "Crypto", package: "swift-crypto"),
            .product(name: "Logging", package: "swift-log"),
        ], swiftSettings: swiftSettings),

        // Layer 1: storage drivers and PostgreSQL access.
        .target(name: "WaybackStorage", dependencies: [
            "WaybackCore",
            .product(name: "Crypto", package: "swift-crypto"),
            .product(name: "CryptoExtras", package: "swift-crypto"),
            .product(name: "Logging", package: "swift-log"),
        ], swiftSettings: swiftSettings),
        // The S3 driver: its own target, so that only what needs HTTP links it.
        .target(name: "WaybackS3", dependencies: [
            "WaybackCore", "WaybackStorage",
            .product(name: "AsyncHTTPClient", package: "async-http-client"),
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOHTTP1", package: "swift-nio"),
            .product(name: "NIOSSL", package: "swift-nio-ssl"),
            .product(name: "Logging", package: "swift-log"),
            .product(name: "Crypto", package: "swift-crypto"),
        ], swiftSettings: swiftSettings),
        .target(name: "WaybackPostgres", dependencies: [
            "WaybackCore",
            .product(name: "PostgresNIO", package: "postgres-nio"),
            .product(name: "NIOSSL", package: "swift-nio-ssl"),
            .product(name: "Logging", package: "swift-log"),
        ], swiftSettings: swiftSettings),

        // Layer 2: the repository catalog (the only place that knows where things live).
        .target(name: "WaybackCatalog", dependencies: [
            "WaybackCore", "WaybackStorage", "WaybackPostgres",
            .product(name: "Logging", package: "swift-log"),
        ], swiftSettings: swiftSettings),

        // The daemon's schedule: cron, the pure planner, the scheduler service.
        .target(name: "WaybackSchedule", dependencies: [
            "WaybackCore", "WaybackStorage",
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            .product(name: "Logging", package: "swift-log"),
        ], swiftSettings: swiftSettings),

        // Layer 3: operations (never import each other).
        .target(name: "WaybackArchive", dependencies: ["WaybackCore", "WaybackStorage", "WaybackCatalog", "WaybackPostgres",
                                                       .product(name: "Logging", package: "swift-log")], swiftSettings: swiftSettings),
        .target(name: "WaybackBackup", dependencies: ["WaybackCore", "WaybackStorage", "WaybackCatalog", "WaybackPostgres",
                                                      .product(name: "Logging", package: "swift-log")], swiftSettings: swiftSettings),
        .target(name: "WaybackRestore", dependencies: ["WaybackCore", "WaybackStorage", "WaybackCatalog", "WaybackPostgres",
                                                       .product(name: "Logging", package: "swift-log")], swiftSettings: swiftSettings),
        .target(name: "WaybackRetention", dependencies: ["WaybackCore", "WaybackStorage", "WaybackCatalog",
                                                         .product(name: "Logging", package: "swift-log")], swiftSettings: swiftSettings),
        .target(name: "WaybackVerify", dependencies: ["WaybackCore", "WaybackStorage", "WaybackCatalog", "WaybackPostgres",
                                                      .product(name: "Logging", package: "swift-log")], swiftSettings: swiftSettings),
        // Health (check), metrics, the status page, notifications and the daemon's HTTP listener.
        .target(name: "WaybackMonitor", dependencies: ["WaybackCore", "WaybackStorage", "WaybackCatalog", "WaybackS3",
                                                       .product(name: "AsyncHTTPClient", package: "async-http-client"),
                                                       .product(name: "NIOSSL", package: "swift-nio-ssl"),
                                                       .product(name: "Crypto", package: "swift-crypto"),
                                                       .product(name: "NIOCore", package: "swift-nio"),
                                                       .product(name: "NIOPosix", package: "swift-nio"),
                                                       .product(name: "NIOHTTP1", package: "swift-nio"),
                                                       .product(name: "Logging", package: "swift-log")], swiftSettings: swiftSettings),

        // Layer 4: configuration (read at the edge), the demo, the command line.
        .target(name: "WaybackConfig", dependencies: [
            "WaybackCore", "WaybackStorage", "WaybackS3", "WaybackPostgres", "WaybackMonitor",
            .product(name: "Yams", package: "Yams"),
            .product(name: "Logging", package: "swift-log"),
        ], swiftSettings: swiftSettings),
        .target(name: "WaybackDemo", dependencies: [
            "WaybackCore", "WaybackStorage", "WaybackS3", "WaybackCatalog", "WaybackPostgres",
            "WaybackArchive", "WaybackBackup", "WaybackRestore", "WaybackConfig",
            .product(name: "Logging", package: "swift-log"),
        ], swiftSettings: swiftSettings),
        .executableTarget(name: "wayback", dependencies: [
            "WaybackCore", "WaybackStorage", "WaybackS3", "WaybackCatalog", "WaybackPostgres",
            "WaybackArchive", "WaybackBackup", "WaybackRestore", "WaybackRetention", "WaybackSchedule", "WaybackVerify", "WaybackMonitor",
            "WaybackConfig", "WaybackDemo", .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            .product(name: "UnixSignals", package: "swift-service-lifecycle"),
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
            .product(name: "Logging", package: "swift-log"),
        ], swiftSettings: swiftSettings),

        // Benchmarks of pure steps (bench/expiry.sh); not shipped.
        .executableTarget(name: "WaybackBench", dependencies: ["WaybackCore", "WaybackStorage", "WaybackCatalog", "WaybackRetention", "WaybackConfig",
                                                             "WaybackMonitor"],
                          path: "Sources/WaybackBench", swiftSettings: swiftSettings),

        // Test-only helpers: in-memory storage, conformance suite, throwaway clusters.
        .target(name: "WaybackTesting", dependencies: ["WaybackCore", "WaybackStorage", "WaybackPostgres"], swiftSettings: swiftSettings),

        .testTarget(name: "WaybackMonitorTests", dependencies: ["WaybackMonitor", "WaybackCatalog", "WaybackCore"], swiftSettings: swiftSettings),
        .testTarget(name: "WaybackCoreTests", dependencies: ["WaybackCore"], swiftSettings: swiftSettings),
        .testTarget(name: "WaybackStorageTests", dependencies: ["WaybackStorage", "WaybackTesting", "WaybackCore", .product(name: "Logging", package: "swift-log")], swiftSettings: swiftSettings),
        .testTarget(name: "WaybackS3Tests", dependencies: ["WaybackS3", "WaybackStorage", "WaybackCore", "WaybackPostgres", "WaybackTesting"], swiftSettings: swiftSettings),
        .testTarget(name: "WaybackCatalogTests", dependencies: ["WaybackCatalog", "WaybackTesting", "WaybackCore", "WaybackStorage", "WaybackPostgres",
                                                                  .product(name: "Logging", package: "swift-log")], swiftSettings: swiftSettings),
        .testTarget(name: "WaybackConfigTests", dependencies: ["WaybackConfig", "WaybackCore", "WaybackS3"], swiftSettings: swiftSettings),
        .testTarget(name: "WaybackPostgresTests", dependencies: ["WaybackPostgres", "WaybackCore"], swiftSettings: swiftSettings),
        .testTarget(name: "WaybackArchiveTests", dependencies: ["WaybackArchive", "WaybackConfig", "WaybackCore", "WaybackStorage"], swiftSettings: swiftSettings),
        .testTarget(name: "WaybackBackupTests", dependencies: ["WaybackBackup", "WaybackStorage", "WaybackPostgres"], swiftSettings: swiftSettings),
        .testTarget(name: "WaybackRestoreTests", dependencies: ["WaybackRestore", "WaybackCatalog", "WaybackPostgres", "WaybackCore", "WaybackStorage", "WaybackTesting", .product(name: "Logging", package: "swift-log")], swiftSettings: swiftSettings),
        .testTarget(name: "WaybackScheduleTests", dependencies: ["WaybackSchedule", "WaybackCore", "WaybackStorage", "WaybackTesting"], swiftSettings: swiftSettings),
        .testTarget(name: "WaybackRetentionTests", dependencies: ["WaybackRetention", "WaybackCatalog", "WaybackCore"], swiftSettings: swiftSettings),
        .testTarget(name: "WaybackVerifyTests", dependencies: ["WaybackVerify", "WaybackCatalog", "WaybackCore"], swiftSettings: swiftSettings),
        .testTarget(name: "WaybackIntegrationTests", dependencies: ["WaybackCore", "WaybackCatalog", "WaybackStorage", "WaybackPostgres", "WaybackArchive", "WaybackTesting"], swiftSettings: swiftSettings),
    ]
)
