public import Foundation
import Logging

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// Volumes (sparse raw files), instances and templates (issue 4).
public struct Volumes: LedgerBacked {
    let ledger: Ledger
    let pending: PendingSnapshots
    /// Where volume files live (`<data>/volumes`).
    public let volumesDirectory: String

    // MARK: - Volumes

    /// The path of a volume's raw file.
    public func volumePath(_ volume: VolumeRecord) -> String { "\(volumesDirectory)/\(volume.fileName)" }

    /// Creates a volume from a snapshot the caller may see: a sparse raw file byte-identical to the
    /// snapshot's disk (blocks verified on read), owned by the caller (the snapshot's owner when the
    /// operator creates it).
    /// - Parameters:
    ///   - output: also write the volume's bytes (sparse raw) to this file.
    ///   - clientToken: makes the call idempotent: the token is recorded with the volume in one batch, and a
    ///     later call of the same caller with the same token and parameters returns that volume (also when two
    ///     race: the catalog's unique key lets one win, the other returns the winner's volume).
    /// - Throws: ``ClientTokenMismatch`` when the token was used with other parameters; `.notFound` when the
    ///   token's volume has been deleted since.
    public func createVolume(
        from snapshotID: SnapshotID, caller: Caller, output: String? = nil, clientToken: VolumeRequestToken? = nil,
        now: Date = Date()
    ) async throws -> VolumeRecord {
        if let clientToken {
            guard clientToken.snapshotID == snapshotID else {
                throw SnapshotError(.invalidArgument, "the client token names another snapshot than the request")
            }
            if let known = try await sameToken(clientToken, caller) { return known }
        }
        let snapshot = try await visibleSnapshot(snapshotID, caller)
        try Self.requireAvailable(snapshot, "used for a volume")
        let owner: ProjectRef
        switch caller {
        case .operator: owner = snapshot.owner
        case .project(let project): owner = project
        }
        guard let manifest = try await catalog.manifest(snapshotID) else {
            throw SnapshotError(.catalog, "snapshot \(snapshotID) is available but has no manifest")
        }
        let temporary = "\(volumesDirectory)/.tmp-\(UUID().uuidString)"
        var targets = [temporary]
        if let output { targets.append(output) }
        do {
            try await writeDisk(manifest, snapshot: snapshot, to: targets)
        } catch {
            _ = try? POSIX.unlink(temporary)
            throw error
        }
        var attempt = 0
        while true {
            attempt += 1
            let id = VolumeID.random()
            let record = VolumeRecord(
                id: id, owner: owner, snapshotID: snapshotID, size: snapshot.virtualSize, fileName: "\(id).raw",
                attachedTo: nil, snapshotInProgress: nil, createdAt: Self.stamp(now), version: 1)
            let path = volumePath(record)
            guard try POSIX.stat(path) == nil else { continue }
            try POSIX.rename(temporary, path)
            var writes: [CatalogWrite] = [.insertVolume(record)]
            if let clientToken {
                writes.append(
                    .insertVolumeToken(
                        VolumeTokenRecord(
                            requester: caller, clientToken: clientToken.clientToken, snapshotID: snapshotID,
                            size: clientToken.size, volumeID: id, createdAt: Self.stamp(now))))
            }
            do {
                try await catalog.apply(writes)
                try? POSIX.fsync(path: volumesDirectory, directory: true)
                logger.info("volume created", metadata: ["volume": "\(id)", "snapshot": "\(snapshotID)"])
                return record
            } catch let error as SnapshotError where error.code == .conflict {
                // Another request with the same token may have won the race: answer its volume.
                let known: VolumeRecord?
                do {
                    known = if let clientToken { try await sameToken(clientToken, caller) } else { nil }
                } catch {
                    _ = try? POSIX.unlink(path)
                    throw error
                }
                if let known {
                    _ = try? POSIX.unlink(path)
                    return known
                }
                guard attempt < options.maxConflictRetries else {
                    _ = try? POSIX.unlink(path)
                    throw error
                }
                try POSIX.rename(path, temporary)
            } catch {
                _ = try? POSIX.unlink(path)
                throw error
            }
        }
    }

    /// The volume an earlier call with this token made, nil when the token is new.
    /// - Throws: ``ClientTokenMismatch`` when the earlier call had other parameters.
    private func sameToken(_ request: VolumeRequestToken, _ caller: Caller) async throws -> VolumeRecord? {
        guard let existing = try await catalog.volumeToken(requester: caller, clientToken: request.clientToken) else {
            return nil
        }
        guard existing.matches(request) else { throw ClientTokenMismatch(existing: existing) }
        return try await ownedVolume(existing.volumeID, caller)
    }

    /// Writes a snapshot's disk into every target file: only non-zero blocks, then the size (sparse).
    private func writeDisk(_ manifest: Manifest, snapshot: SnapshotRecord, to targets: [String]) async throws {
        var fds: [Int32] = []
        defer { for fd in fds { POSIX.close(fd) } }
        for target in targets { fds.append(try POSIX.open(target, O_WRONLY | O_CREAT | O_TRUNC, 0o644)) }
        let blockSize = UInt64(snapshot.blockSize)
        for entry in manifest.entries {
            let offset = entry.index * blockSize
            let expected = Int(min(blockSize, snapshot.virtualSize - min(offset, snapshot.virtualSize)))
            let bytes = try await blocks.get(entry.hash)
            guard bytes.count == expected, expected > 0 else {
                throw SnapshotError(
                    .corruptBlock,
                    "block \(entry.hash.hex) of snapshot \(snapshot.id) has \(bytes.count) bytes, not \(expected)")
            }
            for (fd, target) in zip(fds, targets) { try POSIX.pwriteAll(fd, bytes, at: offset, path: target) }
        }
        for (fd, target) in zip(fds, targets) {
            try POSIX.ftruncate(fd, snapshot.virtualSize, path: target)
            try POSIX.fsync(fd, path: target)
        }
    }

    /// Volumes the caller owns (all for the operator), oldest first.
    public func listVolumes(caller: Caller) async throws -> [VolumeRecord] {
        try await catalog.volumes().filter { Self.isOwner($0.owner, caller) }
    }

    /// One volume the caller owns. - Throws: `.notFound` otherwise.
    public func volume(_ id: VolumeID, caller: Caller) async throws -> VolumeRecord {
        try await ownedVolume(id, caller)
    }

    /// Attaches a volume to an instance of the same owner.
    /// - Throws: `.inUse` when attached elsewhere, or when a snapshot of it is being taken and the
    ///   instance runs.
    public func attachVolume(_ id: VolumeID, to instanceID: InstanceID, caller: Caller) async throws -> VolumeRecord {
        try await retrying("attach") {
            var volume = try await ownedVolume(id, caller)
            let instance = try await ownedInstance(instanceID, caller)
            guard instance.owner == volume.owner else { throw SnapshotError.notFound("instance \(instanceID)") }
            if volume.attachedTo == instanceID { return volume }
            if let other = volume.attachedTo {
                throw SnapshotError(.inUse, "volume \(id) is attached to instance \(other)")
            }
            if instance.state == .running, let snapshot = volume.snapshotInProgress {
                throw SnapshotError(.inUse, "snapshot \(snapshot) of volume \(id) is being taken")
            }
            volume.attachedTo = instanceID
            // Updating the instance row too makes membership changes conflict with a template in progress.
            try await catalog.apply([.updateVolume(volume), .updateInstance(instance)])
            volume.version += 1
            return volume
        }
    }

    /// Detaches a volume from its instance (nothing to do when it is not attached).
    public func detachVolume(_ id: VolumeID, caller: Caller) async throws -> VolumeRecord {
        try await retrying("detach") {
            var volume = try await ownedVolume(id, caller)
            guard let instanceID = volume.attachedTo else { return volume }
            volume.attachedTo = nil
            var writes: [CatalogWrite] = [.updateVolume(volume)]
            if let instance = try await catalog.instance(instanceID) { writes.append(.updateInstance(instance)) }
            try await catalog.apply(writes)
            volume.version += 1
            return volume
        }
    }

    /// Deletes a volume and its file. - Throws: `.inUse` while attached or being snapshotted.
    public func deleteVolume(_ id: VolumeID, caller: Caller) async throws {
        let volume = try await retrying("delete volume") { () -> VolumeRecord in
            let volume = try await ownedVolume(id, caller)
            if let instance = volume.attachedTo {
                throw SnapshotError(.inUse, "volume \(id) is attached to instance \(instance); detach it first")
            }
            if let snapshot = volume.snapshotInProgress {
                throw SnapshotError(.inUse, "snapshot \(snapshot) of volume \(id) is being taken")
            }
            try await catalog.apply([.deleteVolume(id, version: volume.version)])
            return volume
        }
        _ = try? POSIX.unlink(volumePath(volume))
        logger.info("volume deleted", metadata: ["volume": "\(id)"])
    }

    /// Takes a snapshot of a volume (`snapshot create --volume`): reads its file; unchanged blocks
    /// deduplicate to nothing new. Refused (`InvalidState`) while the volume is attached to a running
    /// instance; the instance cannot start until the snapshot is committed.
    public func snapshotVolume(
        _ id: VolumeID, description: String = "", caller: Caller, now: Date = Date()
    ) async throws -> SnapshotRecord {
        try checkDescription(description)
        let token = UUID().uuidString
        let (record, volume) = try await retrying("snapshot volume") { () -> (SnapshotRecord, VolumeRecord) in
            var volume = try await ownedVolume(id, caller)
            var writes: [CatalogWrite] = []
            if let instanceID = volume.attachedTo, let instance = try await catalog.instance(instanceID) {
                guard instance.state != .running else {
                    throw SnapshotError(
                        .invalidState, "volume \(id) is attached to running instance \(instanceID); stop it first")
                }
                writes.append(.expectInstance(instanceID, version: instance.version))
            }
            if let other = volume.snapshotInProgress {
                throw SnapshotError(.inUse, "snapshot \(other) of volume \(id) is being taken")
            }
            let record = try await pendingRecord(
                owner: volume.owner, description: description, source: .volume(id), volume: volume, token: token,
                now: now)
            volume.snapshotInProgress = record.id
            writes += [.insertSnapshot(record), .updateVolume(volume)]
            try await catalog.apply(writes)
            return (record, volume)
        }
        let writer = SnapshotWriter(pending: pending, record: record, claim: nil, lease: options.writerLease)
        do {
            try await pending.whileRenewing([writer]) { try await copyVolume(volume, into: writer) }
            return try await writer.commit(now: now)
        } catch {
            await writer.abort(reason: "\(error)")
            throw error
        }
    }

    /// A pending snapshot record of a volume (bootable when its source snapshot was, or when the
    /// disk carries an MBR boot signature).
    func pendingRecord(
        owner: ProjectRef, description: String, source: SnapshotSource, volume: VolumeRecord, token: String, now: Date
    ) async throws -> SnapshotRecord {
        var bootable = false
        if let origin = volume.snapshotID, let snapshot = try await catalog.snapshot(origin) {
            bootable = snapshot.bootable
        }
        if !bootable {
            let path = volumePath(volume)
            let fd = try POSIX.open(path, O_RDONLY)
            defer { POSIX.close(fd) }
            let sector = try POSIX.preadFull(fd, count: 512, at: 0, path: path)
            bootable = sector[510] == 0x55 && sector[511] == 0xAA
        }
        return SnapshotRecord(
            id: .random(), owner: owner, description: description, state: .pending, visibility: .private,
            sharedWith: [], virtualSize: volume.size, storedBytes: 0, format: "raw", bootable: bootable, source: source,
            checksum: nil, blockSize: options.blockSize, createdAt: Self.stamp(now), writer: token,
            leaseExpiresAt: Self.stamp(now.addingTimeInterval(options.writerLease)), failure: nil, version: 1)
    }

    /// Feeds a volume file to a writer, block by block (reads past the file's end are zeros). Holes of
    /// the sparse file are skipped without reading (`SEEK_DATA`), so cost follows the data.
    func copyVolume(_ volume: VolumeRecord, into writer: SnapshotWriter) async throws {
        let path = volumePath(volume)
        let fd = try POSIX.open(path, O_RDONLY)
        defer { POSIX.close(fd) }
        let blockSize = UInt64(writer.blockSize)
        var index: UInt64 = 0
        while index < writer.blockCount {
            guard let data = POSIX.nextData(fd, from: index * blockSize) else { break }  // only holes remain
            let dataBlock = data / blockSize
            if dataBlock > index {
                index = dataBlock
                continue
            }
            let bytes = try POSIX.preadFull(fd, count: writer.blockLength(index), at: index * blockSize, path: path)
            try await writer.writeBlock(index: index, bytes: bytes)
            index += 1
        }
    }

    // MARK: - Instances

    /// Creates a stopped instance owned by `owner` (the caller's project, or any for the operator).
    public func createInstance(owner: ProjectRef, caller: Caller, now: Date = Date()) async throws -> InstanceRecord {
        guard Self.isOwner(owner, caller) else {
            throw SnapshotError(.accessDenied, "\(caller) cannot create instances for \(owner)")
        }
        return try await retrying("create instance") {
            let record = InstanceRecord(
                id: .random(), owner: owner, state: .stopped, createdAt: Self.stamp(now), version: 1)
            try await catalog.apply([.insertInstance(record)])
            return record
        }
    }

    /// Instances the caller owns (all for the operator).
    public func listInstances(caller: Caller) async throws -> [InstanceRecord] {
        try await catalog.instances().filter { Self.isOwner($0.owner, caller) }
    }

    /// One instance the caller owns. - Throws: `.notFound` otherwise.
    public func instance(_ id: InstanceID, caller: Caller) async throws -> InstanceRecord {
        try await ownedInstance(id, caller)
    }

    /// The volumes attached to an instance, by ID.
    public func attachedVolumes(_ id: InstanceID) async throws -> [VolumeRecord] {
        try await catalog.volumes().filter { $0.attachedTo == id }.sorted { $0.id < $1.id }
    }

    /// Starts an instance. - Throws: `.inUse` while a snapshot of one of its volumes is being taken.
    public func startInstance(_ id: InstanceID, caller: Caller) async throws -> InstanceRecord {
        try await retrying("start") {
            var instance = try await ownedInstance(id, caller)
            guard instance.state != .running else { return instance }
            var writes: [CatalogWrite] = []
            for volume in try await attachedVolumes(id) {
                if let snapshot = volume.snapshotInProgress {
                    throw SnapshotError(.inUse, "snapshot \(snapshot) of attached volume \(volume.id) is being taken")
                }
                writes.append(.expectVolume(volume.id, version: volume.version))
            }
            instance.state = .running
            writes.append(.updateInstance(instance))
            try await catalog.apply(writes)
            instance.version += 1
            return instance
        }
    }

    /// Stops an instance.
    public func stopInstance(_ id: InstanceID, caller: Caller) async throws -> InstanceRecord {
        try await retrying("stop") {
            var instance = try await ownedInstance(id, caller)
            guard instance.state != .stopped else { return instance }
            instance.state = .stopped
            try await catalog.apply([.updateInstance(instance)])
            instance.version += 1
            return instance
        }
    }

    // MARK: - Templates

    /// Creates a template from a stopped instance: one snapshot of every attached volume, committed
    /// together with the template row (all or nothing).
    /// - Throws: `.invalidState` when the instance runs (or starts, or its volumes change meanwhile),
    ///   `.invalidArgument` when it has no volume, `.inUse` when a volume is being snapshotted.
    public func createTemplate(instance instanceID: InstanceID, caller: Caller, now: Date = Date()) async throws
        -> (template: TemplateRecord, snapshots: [SnapshotRecord])
    {
        let token = UUID().uuidString
        let (instance, templateID, pairs) = try await retrying("begin template") {
            () -> (InstanceRecord, TemplateID, [(VolumeRecord, SnapshotRecord)]) in
            let instance = try await ownedInstance(instanceID, caller)
            guard instance.state == .stopped else {
                throw SnapshotError(
                    .invalidState, "instance \(instanceID) is running; stop it before making a template")
            }
            let volumes = try await attachedVolumes(instanceID)
            guard !volumes.isEmpty else {
                throw SnapshotError(.invalidArgument, "instance \(instanceID) has no attached volume")
            }
            var templateID = TemplateID.random()
            while try await catalog.template(templateID) != nil { templateID = .random() }
            var writes: [CatalogWrite] = [.expectInstance(instanceID, version: instance.version)]
            var pairs: [(VolumeRecord, SnapshotRecord)] = []
            for var volume in volumes {
                if let other = volume.snapshotInProgress {
                    throw SnapshotError(.inUse, "snapshot \(other) of volume \(volume.id) is being taken")
                }
                let record = try await pendingRecord(
                    owner: instance.owner,
                    description: "template \(templateID): instance \(instanceID) volume \(volume.id)",
                    source: .template(templateID), volume: volume, token: token, now: now)
                volume.snapshotInProgress = record.id
                writes += [.insertSnapshot(record), .updateVolume(volume)]
                volume.version += 1
                pairs.append((volume, record))
            }
            try await catalog.apply(writes)
            return (instance, templateID, pairs)
        }
        let writers = pairs.map { SnapshotWriter(pending: pending, record: $0.1, claim: nil, lease: options.writerLease) }
        do {
            try await pending.whileRenewing(writers) {
                for (writer, pair) in zip(writers, pairs) { try await copyVolume(pair.0, into: writer) }
            }
            let template = TemplateRecord(
                id: templateID, owner: instance.owner, instanceID: instanceID, snapshots: pairs.map(\.1.id),
                createdAt: Self.stamp(now), version: 1)
            let snapshots = try await pending.commit(
                writers,
                extra: {
                    guard let current = try await catalog.instance(instanceID), current.version == instance.version
                    else {
                        throw SnapshotError(
                            .invalidState, "instance \(instanceID) changed while its template was being made")
                    }
                    return [.expectInstance(instanceID, version: instance.version), .insertTemplate(template)]
                }, now: now)
            logger.info("template created", metadata: ["template": "\(templateID)", "instance": "\(instanceID)"])
            return (template, snapshots)
        } catch {
            for writer in writers { await writer.abort(reason: "\(error)") }
            throw error
        }
    }

    /// Deletes a template (owner or operator). Its snapshots stay, and are no longer `InUse`: they can be
    /// deleted like any other.
    /// - Throws: `.notFound` when absent or another project's.
    public func deleteTemplate(_ id: TemplateID, caller: Caller) async throws {
        try await retrying("delete template") {
            guard let template = try await catalog.template(id), Self.isOwner(template.owner, caller) else {
                throw SnapshotError.notFound("template \(id)")
            }
            try await catalog.apply([.deleteTemplate(id, version: template.version)])
        }
        logger.info("template deleted", metadata: ["template": "\(id)"])
    }

    /// Templates the caller owns (all for the operator).
    public func listTemplates(caller: Caller) async throws -> [TemplateRecord] {
        try await catalog.templates().filter { Self.isOwner($0.owner, caller) }
    }
}
