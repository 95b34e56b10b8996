import Logging
import WaybackCore

/// A named repository as configured: the facade callers use, wrapping one storage driver.
public struct Repository: Sendable {
    public var name: String
    public var driver: any StorageDriver

    public init(name: String, driver: any StorageDriver) {
        self.name = name
        self.driver = driver
    }

    public var description: String { "repository '\(name)' (\(driver.description))" }

    /// One repository as it is, several as one `ReplicatedStorage` named `a+b`.
    public static func combined(_ list: [Repository], events: EventLog) -> Repository {
        if list.count == 1 { return list[0] }
        return Repository(name: list.map(\.name).joined(separator: "+"), driver: ReplicatedStorage(list, events: events))
    }

    /// The repositories this one stands for: its replicas, or itself.
    public var members: [Repository] { (driver as? ReplicatedStorage)?.replicas ?? [self] }
}
