import Console
import Importer
import Logging
import SnapshotCore

extension AppContext {
    /// The web console of `serve` (`/console/`): the same access keys as the API (looked up again on every
    /// request), the import tasks when `[s3]` is configured, `Secure` cookies under TLS.
    func console(service: SnapshotService, imports: ImportTasks?, secure: Bool, logger: Logger) throws
        -> ConsoleResponder
    {
        try ConsoleResponder(
            service: service, imports: imports,
            settings: ConsoleResponder.Settings(
                secureCookies: secure, defaultBucket: configuration.s3.bucket,
                maxDescriptionLength: service.options.maxDescriptionLength),
            logger: logger
        ) { id in
            try await service.accessKey(id).map { ConsoleResponder.Key(secret: $0.secret, caller: $0.caller) }
        }
    }
}
