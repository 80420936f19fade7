public import Foundation
public import Logging
import BlockStoreFS
public import SnapshotCore
import SnapshotSQLite

/// Opens the embedded store of a data directory: `catalog.sqlite` (unless another catalog is given),
/// `blocks/` and `volumes/`.
public enum LocalStore {
    /// - Parameters:
    ///   - path: the data directory (`[store] path`), created when missing.
    ///   - blockSize: `[store] block_size`, default ``Blocks/defaultSize``.
    ///   - catalog: a catalog to use instead of the SQLite file (the PostgreSQL one).
    public static func open(
        path: String, blockSize: Int? = nil, catalog: (any Catalog)? = nil, options: SnapshotServiceOptions? = nil,
        logger: Logger
    ) throws -> SnapshotService {
        do {
            try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        } catch {
            throw SnapshotError(.storage, "cannot create the data directory \(path)", underlying: error)
        }
        let catalog = try catalog ?? SQLiteCatalog(path: "\(path)/catalog.sqlite")
        let blocks = try FileSystemBlockStore(root: "\(path)/blocks")
        var options = options ?? SnapshotServiceOptions()
        if let blockSize { options.blockSize = blockSize }
        guard options.blockSize >= 4096, options.blockSize <= 64 << 20, options.blockSize & (options.blockSize - 1) == 0
        else {
            throw SnapshotError(.invalidArgument, "block size must be a power of two from 4 KiB to 64 MiB")
        }
        return try SnapshotService(
            catalog: catalog, blocks: blocks, volumesDirectory: "\(path)/volumes", options: options, logger: logger)
    }
}
