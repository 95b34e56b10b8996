import ArgumentParser
import WaybackCore
import WaybackRestore

/// Option values parsed into the domain's types (so that commands never force-unwrap a parsed
/// value). A value that does not parse is `wayback: error: The value 'x' is invalid for '--option
/// <option>': use ...`, exit 2.
enum Arguments {
    static func backupType(_ text: String) throws -> BackupType {
        guard let t = BackupType(rawValue: text) else { throw ValidationError("use full, diff or incr") }
        return t
    }

    static func backupID(_ text: String) throws -> BackupID {
        guard let id = BackupID(text) else {
            throw ValidationError("not a backup id (like 20261129-004100F); 'wayback status' lists them")
        }
        return id
    }

    static func targetAction(_ text: String) throws -> TargetAction {
        guard let a = TargetAction(rawValue: text) else { throw ValidationError("use pause, promote or shutdown") }
        return a
    }

    static func timeline(_ text: String) throws -> TimelineChoice {
        guard let t = TimelineChoice(text) else { throw ValidationError("use latest, current or a timeline number") }
        return t
    }

    static func archiveMode(_ text: String) throws -> ArchiveMode {
        guard let m = ArchiveMode(rawValue: text) else { throw ValidationError("use preserve or off") }
        return m
    }

    /// `--tablespace-map OID=/absolute/dir`.
    struct TablespaceMapping: Sendable {
        var oid: UInt32
        var directory: String
    }

    static func tablespaceMapping(_ text: String) throws -> TablespaceMapping {
        let p = text.split(separator: "=", maxSplits: 1)
        guard p.count == 2, let oid = UInt32(p[0]), p[1].hasPrefix("/") else {
            throw ValidationError("use OID=/absolute/dir")
        }
        return TablespaceMapping(oid: oid, directory: String(p[1]))
    }
}
