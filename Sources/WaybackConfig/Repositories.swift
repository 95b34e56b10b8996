import Logging
import WaybackCore
import WaybackS3
import WaybackStorage

/// The drivers of the configured repositories, built at the edge from their settings.
extension WaybackConfiguration {
    /// The configured repositories (those named in `only`, when given), in priority order, each
    /// with its own driver; S3 drivers send through `http`, which the caller owns.
    public func repositoryList(logger: Logger, http: HTTPClientPool, only: Set<String>? = nil) throws -> [Repository] {
        try repositories.filter { only?.contains($0.name) ?? true }.map { r in
            let driver: any StorageDriver = try r.s3.map { try S3Storage(settings: $0, clients: http, logger: logger) } ?? LocalStorage(root: r.path)
            guard let key = r.encryption else { return Repository(name: r.name, driver: driver) }
            return Repository(name: r.name, driver: EncryptedStorage(inner: driver, source: key, repositoryName: r.name))
        }
    }

    /// What one job reads and writes: the one repository, or all of them as one
    /// (`ReplicatedStorage`: writes to every repository, reads in priority order with fallback).
    /// Made anew for each job, so that a repository dropped in one job is written in the next.
    public func repository(logger: Logger, http: HTTPClientPool, events: EventLog) throws -> Repository {
        Repository.combined(try repositoryList(logger: logger, http: http), events: events)
    }
}
