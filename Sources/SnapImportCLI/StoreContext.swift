import Foundation
import Importer
import Logging
import S3
import SnapshotCore
import SnapshotPostgres
import SnapshotSQLite
import SnapshotStores
import BlockStoreS3

/// Opens the snapshot service that the configuration's `[store]` section names, for every command:
/// the catalog (SQLite in `path`, or PostgreSQL at `catalog`) and the block store (the filesystem under
/// `path`, or an S3 prefix at `blocks`, which needs the `[s3]` section for its client).
enum StoreContext {
    /// Opens the service, runs `body`, closes the catalog. Opening failures end the command with exit 2;
    /// errors thrown by `body` propagate.
    /// - Parameters:
    ///   - s3: an S3 client the caller already has; made from `config` when nil and `blocks` needs one.
    ///   - create: whether a missing store may be created. Only the commands that put snapshots into a
    ///     store (`run`, `watch`, `import`) create one; any other command on a missing store fails with
    ///     `NotFound` naming the path, rather than answering from a new, empty store (a wrong working
    ///     directory or config would otherwise look like "no snapshots").
    static func withService<R: Sendable>(
        _ config: Configuration, s3: S3Client? = nil, json: Bool, verbose: Bool = false, logger: Logger,
        create: Bool = false, environment: [String: String] = ProcessInfo.processInfo.environment,
        _ body: (SnapshotService) async throws -> R
    ) async throws -> R {
        // A SQLite catalog is the store's mark (a PostgreSQL catalog lives on its server).
        let catalogFile = "\(config.store.path)/catalog.sqlite"
        if !create, config.store.catalog == nil, !FileManager.default.fileExists(atPath: catalogFile) {
            throw CommandOutput.failure(
                code: "NotFound",
                message: "no snapimport store at \(config.store.path) (no \(catalogFile)); check [store] path "
                    + "(a relative path is taken from the configuration file's folder) or import something first",
                json: json, exit: 2)
        }
        func open(_ catalog: (any Catalog)?) throws -> SnapshotService {
            do {
                guard let blocks = config.store.blocks else {
                    return try LocalStore.open(
                        path: config.store.path, blockSize: config.store.blockSize, catalog: catalog, logger: logger)
                }
                let client = try s3 ?? S3Context.make(config: config, verbose: verbose, environment: environment).client
                try FileManager.default.createDirectory(atPath: config.store.path, withIntermediateDirectories: true)
                var options = SnapshotServiceOptions()
                if let size = config.store.blockSize { options.blockSize = size }
                return try SnapshotService(
                    catalog: try catalog ?? SQLiteCatalog(path: "\(config.store.path)/catalog.sqlite"),
                    blocks: try S3BlockStore(client: client, location: blocks, logger: logger),
                    volumesDirectory: "\(config.store.path)/volumes", options: options, logger: logger)
            } catch {
                throw CommandOutput.failure(
                    code: "InvalidConfiguration", message: "cannot open the store: \(error)", json: json, exit: 2)
            }
        }
        if let url = config.store.catalog {
            let catalog: PostgresCatalog
            do {
                catalog = try PostgresCatalog(url: url, logger: logger)
            } catch {
                throw CommandOutput.failure(code: "InvalidConfiguration", message: "\(error)", json: json, exit: 2)
            }
            return try await withPostgresCatalog(catalog) { catalog in try await body(try open(catalog)) }
        }
        let service = try open(nil)
        do {
            let result = try await body(service)
            try? await service.catalog.close()
            return result
        } catch {
            try? await service.catalog.close()
            throw error
        }
    }
}
