/// What happened to one incoming object in a pass.
public enum ImportOutcome: Sendable, Equatable {
    /// A new snapshot was committed and the object moved to processed/.
    case imported(snapshotID: String)
    /// The catalog already knew the object as imported (an earlier pass or another worker): at
    /// most the interrupted move to processed/ was finished. No new snapshot.
    case alreadyImported(snapshotID: String)
    /// Rejected for good: moved to failed/ with its `.error.json`.
    case rejected(code: String, message: String)
    /// A transient failure: left in incoming/ for the next pass (`attempts` so far).
    case retried(code: String, message: String, attempts: Int)
    /// Not touched in this pass (another worker holds it, it changed since the listing …).
    case skipped(reason: String)
}

/// One object and its outcome.
public struct ImportResult: Sendable, Equatable {
    public var key: String
    public var etag: String
    public var owner: String
    public var outcome: ImportOutcome
    /// The snapshot is committed but the move to processed/ did not finish (a shutdown, an S3 failure):
    /// the object is still in incoming/ and the next pass finishes the move.
    public var movePending: Bool

    public init(key: String, etag: String, owner: String, outcome: ImportOutcome, movePending: Bool = false) {
        self.key = key
        self.etag = etag
        self.owner = owner
        self.outcome = outcome
        self.movePending = movePending
    }
}

/// The result of one pass over incoming/ (`snapimport run --json`).
public struct PassSummary: Sendable, Equatable {
    public var results: [ImportResult] = []
    /// Set when the pass could not even list the bucket.
    public var listingError: ImporterError?
    /// Catalog batches of this pass that lost an optimistic-version race and were retried (see
    /// `CatalogConflicts`): workers importing different objects should cause none.
    public var conflictsRetried = 0

    public init(results: [ImportResult] = [], listingError: ImporterError? = nil) {
        self.results = results
        self.listingError = listingError
    }

    /// Objects another worker held when this pass tried to claim them (each cost one statement).
    public var lostClaims: Int {
        results.count { if case .skipped(let reason) = $0.outcome { reason.hasPrefix("being imported by") } else { false } }
    }

    /// Objects another worker imported (and moves) while this pass ran: skipped at the cost of the claim.
    public var importedByOthers: Int {
        results.count {
            if case .skipped(let reason) = $0.outcome { reason == ImportPipeline.importedByAnotherWorker } else { false }
        }
    }

    /// True when nothing needs a person: every object imported, already imported or skipped.
    public var succeeded: Bool {
        listingError == nil
            && results.allSatisfy {
                switch $0.outcome {
                case .imported, .alreadyImported, .skipped: true
                case .rejected, .retried: false
                }
            }
    }

    public var imported: [ImportResult] { results.filter { if case .imported = $0.outcome { true } else { false } } }
    public var rejected: [ImportResult] { results.filter { if case .rejected = $0.outcome { true } else { false } } }
    public var retried: [ImportResult] { results.filter { if case .retried = $0.outcome { true } else { false } } }
    /// Skipped and already-imported objects.
    public var skipped: [ImportResult] {
        results.filter {
            switch $0.outcome {
            case .skipped, .alreadyImported: true
            default: false
            }
        }
    }

    /// The JSON summary printed by `snapimport run --json`:
    /// `{"ok", "imported":[{key,etag,owner,snapshot}], "rejected":[{…,code,message}],
    ///   "retried":[{…,code,message,attempts}], "skipped":[{…,reason[,snapshot]}], "error"?}`.
    public struct Document: Encodable, Sendable {
        public struct Item: Encodable, Sendable {
            public var key: String
            public var etag: String
            public var owner: String
            public var snapshot: String?
            public var code: String?
            public var message: String?
            public var attempts: Int?
            public var reason: String?
        }
        public struct Failure: Encodable, Sendable {
            public var code: String
            public var message: String
        }
        public var ok: Bool
        public var imported: [Item] = []
        public var rejected: [Item] = []
        public var retried: [Item] = []
        public var skipped: [Item] = []
        public var error: Failure?
        /// How the pass went against other workers: claims lost to them, catalog conflicts retried.
        public var statistics: Statistics
        public struct Statistics: Encodable, Sendable {
            public var lostClaims: Int
            public var importedByOthers: Int
            public var conflictsRetried: Int
        }
    }

    /// The summary as its JSON document.
    public var document: Document {
        var document = Document(
            ok: succeeded, statistics: .init(
                lostClaims: lostClaims, importedByOthers: importedByOthers, conflictsRetried: conflictsRetried))
        for result in results {
            var item = Document.Item(key: result.key, etag: result.etag, owner: result.owner)
            switch result.outcome {
            case .imported(let id):
                item.snapshot = id
                document.imported.append(item)
            case .alreadyImported(let id):
                item.snapshot = id
                item.reason = "already imported"
                document.skipped.append(item)
            case .rejected(let code, let message):
                (item.code, item.message) = (code, message)
                document.rejected.append(item)
            case .retried(let code, let message, let attempts):
                (item.code, item.message, item.attempts) = (code, message, attempts)
                document.retried.append(item)
            case .skipped(let reason):
                item.reason = reason
                document.skipped.append(item)
            }
        }
        if let listingError {
            document.error = Document.Failure(code: listingError.code.name, message: listingError.message)
        }
        return document
    }
}
