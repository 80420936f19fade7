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
            name: "SigV4",
            dependencies: [.product(name: "Crypto", package: "swift-crypto")],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "S3",
            dependencies: [
                "SigV4", "CCurl",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Crypto", package: "swift-crypto"),
            ],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "DiskImage",
            dependencies: ["CCompression", "CArchive"],
            swiftSettings: swiftSettings,
            linkerSettings: [.linkedLibrary("z")]
        ),
        .target(
            name: "SnapshotCore",
            dependencies: [
                "CFileSystem",
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Logging", package: "swift-log"),
            ],
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
            name: "Importer",
            dependencies: [
                "S3", "DiskImage", "SnapshotCore",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Crypto", package: "swift-crypto"),
            ],
            swiftSettings: swiftSettings
        ),

        // MARK: Executable
        .executableTarget(
            name: "snapimport",
            dependencies: [
                "S3", "DiskImage", "SnapshotCore", "SnapshotPostgres", "Importer",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
                .product(name: "TOMLKit", package: "TOMLKit"),
            ],
            swiftSettings: swiftSettings
        ),

        // MARK: Tests
        .testTarget(name: "SigV4Tests", dependencies: ["SigV4"], swiftSettings: swiftSettings),
        .testTarget(name: "S3Tests", dependencies: ["S3"], swiftSettings: swiftSettings),
        .testTarget(name: "DiskImageTests", dependencies: ["DiskImage"], swiftSettings: swiftSettings),
        .testTarget(
            name: "SnapshotCoreTests",
            dependencies: ["SnapshotCore", "SnapshotPostgres"],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "ImporterTests",
            dependencies: ["Importer", "S3", "DiskImage", "SnapshotCore", "SnapshotPostgres"],
            swiftSettings: swiftSettings
        ),
    ]
)
