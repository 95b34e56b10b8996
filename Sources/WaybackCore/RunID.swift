#if canImport(Glibc)
import Glibc
#endif

/// Names what one run of an operation leaves on disk or in a repository (a staging directory, a
/// restore record, a temporary file): the process id, so that leftovers of a dead process can be
/// told from those of a live one, and a random part, so that two runs in one long-lived process
/// (the daemon's restores and drills) never collide. `12345-9f3a01c7`.
public enum RunID {
    public static func make() -> String {
        let r = String(UInt32.random(in: 0...UInt32.max), radix: 16)
        return "\(getpid())-" + String(repeating: "0", count: 8 - r.count) + r
    }

    /// The process id a run id (or a bare pid, as older versions wrote) starts with.
    public static func processID(_ id: Substring) -> Int32? {
        Int32(id.prefix { $0 != "-" })
    }
}
