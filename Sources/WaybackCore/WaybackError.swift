import Foundation

/// The one error type of Wayback.
///
/// Every failure that reaches a user is a `WaybackError`: a stable `code` (whose number is the
/// process exit status), a one-line `message` saying what happened and what to do, and an optional
/// `cause` for logs. Messages never contain secrets (passwords, keys, full connection strings).
public struct WaybackError: Error, CustomStringConvertible, Sendable {
    /// Stable error codes. The raw value is the exit status of the `wayback` process and is part of
    /// the public contract (docs/exit-codes.md). Never renumber; only add.
    public enum Code: Int32, Sendable, CaseIterable {
        /// The requested object (WAL file, backup) is not in the repository. For `wal-fetch` this
        /// is the normal end of recovery, which is why it is 1.
        case notFound = 1
        /// Bad command-line arguments.
        case usage = 2
        /// The configuration file is missing, malformed, has an unknown key or a wrong type.
        case config = 3
        /// The database cannot be reached or refused the login.
        case connection = 4
        /// The cluster does not meet a requirement (wal_level, version, running as root, ...).
        case cluster = 5
        /// The repository is missing, not initialised, bound to another cluster, or of an
        /// unsupported format version.
        case repository = 6
        /// An object in the repository failed its checksum or cannot be decoded.
        case corrupt = 7
        /// The operation would overwrite something it must not (different WAL content under an
        /// existing name, a non-empty restore target, a running cluster's directory).
        case conflict = 8
        /// Another Wayback command holds the lock for this cluster.
        case locked = 9
        /// WAL needed by a backup did not reach the archive in time.
        case archiveTimeout = 10
        /// A file-system or storage I/O error.
        case io = 11
        /// PostgreSQL returned an error during an operation.
        case postgres = 12
        /// The restore target cannot be reached with the backups and WAL in the repository.
        case restoreTarget = 13
        /// Object storage refused the credentials or the access (wrong key, expired token, missing
        /// permission in the bucket policy).
        case access = 14
        /// The operation completed in some repositories but failed in at least one other; the
        /// copies that completed are valid (`wayback repo sync` catches the others up).
        case replica = 15
        /// Data pages failed their checksum while being backed up: the source cluster has
        /// corruption. The backup is complete (unless configured to fail) and lists the pages.
        case pageChecksum = 16
        /// An expiry would remove more than half of a repository's complete backups (a policy
        /// typo?); nothing was removed there. `--force` applies it by hand; the daemon never does.
        case expiryRefused = 17
        /// A backup's expected size does not fit in the free space of a local repository;
        /// nothing was written (`--force` tries anyway).
        case noSpace = 18
        /// A restore drill's check failed (an assertion false, amcheck or pg_checksums errors, the
        /// restored files not as the manifest says); the scratch copy is kept for inspection.
        case drillFailed = 19
        /// A restore drill passed its checks but missed an objective: the recovery time over
        /// `drill.rto_seconds`, or the recovery point older than `drill.rpo_seconds`.
        case objectiveMissed = 20
        /// Something Wayback waited on (a repository, the server) did not answer in time.
        case timeout = 21
        /// A restored dump's tables do not hold the rows the dump recorded in its snapshot.
        case mismatch = 22
        /// A bug: an invariant did not hold.
        case `internal` = 70
    }

    /// What lay under a failure, for logs and `--json`: structured, so that no path can put a
    /// statement's text, a connection string or a key into it.
    public enum Cause: Sendable, Equatable, CustomStringConvertible {
        /// A statement sent to PostgreSQL, named by what it does (the function it calls or its
        /// first words), never by its text, which can carry values.
        case query(String)
        /// A system call and the `errno` it failed with.
        case system(call: String, errno: Int32)
        /// A codec's own reason (zstd, lz4, gzip), or why content does not decode.
        case decoding(String)
        /// Another error, by its description: used only for errors whose description carries no
        /// secret (this package's own types redact themselves; see `Redacted`).
        case underlying(String)

        public var description: String {
            switch self {
            case .query(let name): return "query \(name)"
            case .system(let call, let errno): return "\(call): \(String(cString: strerror(errno))) (errno \(errno))"
            case .decoding(let why): return why
            case .underlying(let text): return text
            }
        }
    }

    public var code: Code
    public var message: String
    public var cause: Cause?

    public init(_ code: Code, _ message: String, cause: Cause? = nil) {
        self.code = code
        self.message = message
        self.cause = cause
    }

    public var exitStatus: Int32 { code.rawValue }

    public var description: String {
        if let cause { return "\(message) (\(cause))" }
        return message
    }
}

extension WaybackError {
    /// Wraps any error as a `WaybackError`, keeping one that already is.
    public static func wrap(_ error: any Error, as code: Code = .internal, _ message: @autoclosure () -> String) -> WaybackError {
        if let wb = error as? WaybackError { return wb }
        return WaybackError(code, message(), cause: .underlying(String(describing: error)))
    }

    /// An error of a system call, with its `errno` kept as data.
    public static func system(_ code: Code, _ message: String, call: String, errno: Int32) -> WaybackError {
        WaybackError(code, message, cause: .system(call: call, errno: errno))
    }
}
