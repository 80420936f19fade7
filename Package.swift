// swift-tools-version:6.1
import PackageDescription

/// Settings every target shares (house style: Swift 6 mode, explicit imports).
let swiftSettings: [SwiftSetting] = [
    .swiftLanguageMode(.v6),
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("MemberImportVisibility"),
    .enableUpcomingFeature("InternalImportsByDefault"),
]

let package = Package(
    name: "snapimport",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "snapimport", targets: ["snapimport"]),
        .library(name: "SnapImportCLI", targets: ["SnapImportCLI"]),
        .library(name: "SnapshotCore", targets: ["SnapshotCore"]),
        .library(name: "DiskImage", targets: ["DiskImage"]),
        .library(name: "S3", targets: ["S3"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-crypto", from: "3.12.3"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        .package(url: "https://github.com/groue/GRDB.swift", from: "7.10.0"),
        .package(url: "https://github.com/vapor/postgres-nio", from: "1.33.2"),
        .package(url: "https://github.com/LebJe/TOMLKit", from: "0.6.0"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-async-algorithms", from: "1.1.4"),
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1"),
        .package(url: "https://github.com/apple/swift-nio-ssl", from: "2.37.6"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
        .package(url: "https://github.com/hummingbird-project/swift-mustache", from: "2.1.1"),
    ],
    targets: [
        // MARK: C shims
        .systemLibrary(
            name: "CCurl",
            pkgConfig: "libcurl",
            providers: [.apt(["libcurl4-openssl-dev"])]
        ),
        .systemLibrary(name: "CFileSystem"),
        .systemLibrary(
            name: "CCompression",
            pkgConfig: "libzstd",
            providers: [.apt(["libzstd-dev"])]
        ),
        .systemLibrary(
            name: "CArchive",
            pkgConfig: "libarchive",
            providers: [.apt(["libarchive-dev"])]
        ),

        // MARK: Libraries
        .target(
            name: "BlockingIO",
            dependencies: [
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOCore", package: "swift-nio"),
            ],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "SigV4",
            dependencies: [.product(name: "Crypto", package: "swift-crypto")],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "S3",
            dependencies: [
                "SigV4", "CCurl", "BlockingIO",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Crypto", package: "swift-crypto"),
            ],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "DiskImage",
            dependencies: ["CCompression", "CArchive", "BlockingIO"],
            swiftSettings: swiftSettings,
            linkerSettings: [.linkedLibrary("z")]
        ),
        // The domain, the rules and the protocols (catalog, block store) with in-memory implementations:
        // no database, no C shim, no transport.
        .target(
            name: "SnapshotCore",
            dependencies: [
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),

        // MARK: Adapters of SnapshotCore's protocols
        .target(
            name: "SnapshotSQLite",
            dependencies: ["SnapshotCore", "BlockingIO", .product(name: "GRDB", package: "GRDB.swift")],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "SnapshotPostgres",
            dependencies: [
                "SnapshotCore",
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "BlockStoreFS",
            dependencies: [
                "SnapshotCore", "SnapshotSQLite", "CFileSystem", "BlockingIO",
                .product(name: "GRDB", package: "GRDB.swift"),
            ],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "BlockStoreS3",
            dependencies: ["SnapshotCore", "S3", .product(name: "Logging", package: "swift-log")],
            swiftSettings: swiftSettings
        ),

        // MARK: Opening a store: the adapters wired together
        .target(
            name: "SnapshotStores",
            dependencies: [
                "SnapshotCore", "SnapshotSQLite", "BlockStoreFS",
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),

        // MARK: The worker
        .target(
            name: "Importer",
            dependencies: [
                "S3", "DiskImage", "SnapshotCore", "BlockingIO",
                .product(name: "AsyncAlgorithms", package: "swift-async-algorithms"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: swiftSettings
        ),

        // MARK: Operating the daemons: JSON logs, the metrics registry and its /metrics listener (shared by
        // `watch` and `serve`)
        .target(
            name: "Observability",
            dependencies: [
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: swiftSettings
        ),
        // MARK: The EC2-compatible API server
        .target(
            name: "API",
            dependencies: [
                "Importer", "SnapshotCore", "SigV4",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdCore", package: "hummingbird"),
                .product(name: "HummingbirdTLS", package: "hummingbird"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: swiftSettings
        ),
        // MARK: The web console of `snapimport serve` (/console/): sessions, pages, actions over SnapshotService
        .target(
            name: "Console",
            dependencies: [
                "Importer", "SnapshotCore",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "Mustache", package: "swift-mustache"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),
        // The version and the git commit of the build (`snapimport --version`): a prebuild command writes
        // the commit into a generated file on every build.
        .target(
            name: "BuildInfo",
            swiftSettings: swiftSettings,
            plugins: ["GitCommitPlugin"]
        ),
        .plugin(name: "GitCommitPlugin", capability: .buildTool()),

        // MARK: The command line: a library (the composition root) and a one-file executable
        .target(
            name: "SnapImportCLI",
            dependencies: [
                "S3", "DiskImage", "SnapshotCore", "SnapshotSQLite", "SnapshotPostgres", "BlockStoreFS",
                "BlockStoreS3", "SnapshotStores", "Importer", "BlockingIO", "API", "Console", "Observability",
                "BuildInfo",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
                .product(name: "TOMLKit", package: "TOMLKit"),
            ],
            swiftSettings: swiftSettings
        ),
        .executableTarget(
            name: "snapimport",
            dependencies: ["SnapImportCLI"],
            swiftSettings: swiftSettings
        ),

        // MARK: Tests (one target per module; servers come from environment variables, see scripts/test)
        .testTarget(
            name: "BlockingIOTests",
            dependencies: ["BlockingIO"],
            swiftSettings: swiftSettings
        ),
        .testTarget(name: "SigV4Tests", dependencies: ["SigV4"], swiftSettings: swiftSettings),
        .testTarget(name: "S3Tests", dependencies: ["S3", "BlockingIO", "S3TestSupport"], swiftSettings: swiftSettings),
        .testTarget(
            name: "DiskImageTests",
            dependencies: ["DiskImage", "BlockingIO"],
            swiftSettings: swiftSettings
        ),
        // Fixtures shared by the catalog and block-store suites: a catalog factory (SQLite, and PostgreSQL
        // when configured) and a service harness. A library so that several test targets can use it.
        .target(
            name: "CatalogTestSupport",
            dependencies: [
                "SnapshotCore", "SnapshotSQLite", "SnapshotPostgres", "BlockStoreFS",
                .product(name: "Logging", package: "swift-log"),
            ],
            path: "Tests/CatalogTestSupport",
            swiftSettings: swiftSettings
        ),
        // Child processes of the tests (the built snapimport, qemu-img, the aws CLI, python): one runner
        // for every test target that starts processes.
        .target(name: "ProcessTestSupport", path: "Tests/ProcessTestSupport", swiftSettings: swiftSettings),
        // A recording S3 transport: the requests an operation makes, counted and inspected on the wire.
        .target(name: "S3TestSupport", dependencies: ["S3"], path: "Tests/S3TestSupport", swiftSettings: swiftSettings),
        .testTarget(
            name: "SnapshotCoreTests",
            dependencies: ["SnapshotCore", "SnapshotSQLite", "SnapshotStores", "BlockStoreFS", "CatalogTestSupport"],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "SnapshotPostgresTests",
            dependencies: ["SnapshotCore", "SnapshotPostgres", "CatalogTestSupport"],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "BlockStoreFSTests",
            dependencies: ["SnapshotCore", "BlockStoreFS", "CatalogTestSupport"],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "BlockStoreS3Tests",
            dependencies: [
                "SnapshotCore", "BlockStoreS3", "S3", "S3TestSupport", .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "ImporterTests",
            dependencies: [
                "Importer", "S3", "DiskImage", "SnapshotCore", "SnapshotStores", "SnapshotPostgres", "BlockStoreS3",
                "BlockStoreFS", "SnapshotSQLite", "ProcessTestSupport", "S3TestSupport",
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "APITests",
            dependencies: [
                "API", "SnapImportCLI", "SnapshotCore", "SigV4", "Importer", "ProcessTestSupport",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdTesting", package: "hummingbird"),
            ],
            resources: [.copy("Fixtures")],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "ConsoleTests",
            dependencies: [
                "Console", "SnapshotCore", "Importer", "ProcessTestSupport",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdTesting", package: "hummingbird"),
            ],
            resources: [.copy("Fixtures")],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "SnapImportCLITests",
            dependencies: [
                "SnapImportCLI", "Importer", "S3", "SnapshotCore", "Observability", "BuildInfo", "ProcessTestSupport",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: swiftSettings
        ),
    ]
)
