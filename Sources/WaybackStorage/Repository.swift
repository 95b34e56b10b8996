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
}
