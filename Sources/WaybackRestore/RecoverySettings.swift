import WaybackCore

/// The recovery settings a restore appends to `postgresql.auto.conf`.
public enum RecoverySettings {
    /// Lines of an existing `postgresql.auto.conf` that these settings replace.
    public static func owns(_ line: Substring) -> Bool {
        let t = line.drop { $0 == " " || $0 == "\t" }
        return t.hasPrefix("restore_command") || t.hasPrefix("recovery_target") || t.hasPrefix(header)
            || t.hasPrefix(archiveComment) || t.hasSuffix(marker) || t.hasPrefix(promoteComment)
    }

    static let promoteComment = "# paused at the target: wayback restore --start promotes"

    static let header = "# Recovery settings written by wayback restore of backup "
    static let archiveComment = "# A restored copy must not archive"
    static let marker = "# set by wayback restore"

    /// The backup a restored directory came from and whether its archiving was switched off, read
    /// back from the settings (for `restore --advance`).
    public static func read(_ autoConf: String) -> (backup: BackupID, archiveMode: ArchiveMode)? {
        var backup: BackupID?
        var mode = ArchiveMode.preserve
        for line in autoConf.split(separator: "\n") {
            if line.hasPrefix(header) {
                backup = line.dropFirst(header.count).split(separator: ":").first.flatMap { BackupID(String($0)) }
            } else if line.hasPrefix("archive_mode") && line.hasSuffix(marker) {
                mode = .off
            }
        }
        return backup.map { ($0, mode) }
    }

    static func quote(_ s: String) -> String { "'" + s.split(separator: "'", omittingEmptySubsequences: false).joined(separator: "''") + "'" }

    /// - Parameter promoteAfterCheck: `restore --start` with a promote action: the settings say
    ///   `pause`, and `RestoredCluster` requests the promotion (during replay, or once it has checked
    ///   where recovery stopped), which PostgreSQL 15 carries out without the end-of-recovery
    ///   checkpoint.
    public static func text(plan: RecoveryPlan, request: RecoveryRequest, restoreCommand: String, archiveMode: ArchiveMode,
                            promoteAfterCheck: Bool = false) -> String {
        var lines = [header + "\(plan.backup): \(request.target)"]
        lines.append("restore_command = \(quote(restoreCommand))")
        // The timeline the plan follows, as a number: recovery does exactly what was planned.
        lines.append("recovery_target_timeline = \(quote(String(plan.timeline)))")
        switch request.target {
        case .latest: break
        case .backupEnd: lines.append("recovery_target = 'immediate'")
        case .time(let t): lines.append("recovery_target_time = \(quote(Format.postgresTimestamp(micros: t)))")
        case .lsn(let l): lines.append("recovery_target_lsn = \(quote(l.description))")
        case .xid(let x): lines.append("recovery_target_xid = \(quote(String(x)))")
        case .name(let n): lines.append("recovery_target_name = \(quote(n))")
        }
        if request.target.isPointInTime, request.exclusive {
            lines.append("recovery_target_inclusive = 'off'")
        }
        if request.target != .latest {
            if promoteAfterCheck && request.effectiveAction == .promote {
                lines.append(promoteComment + " (its fast path: requested during replay, or once the stop is checked)")
                lines.append("recovery_target_action = 'pause'")
            } else {
                lines.append("recovery_target_action = \(quote(request.effectiveAction.rawValue))")
            }
        }
        if archiveMode == .off {
            lines.append(archiveComment + " into the production archive (wayback restore --archive-mode preserve keeps archiving)")
            lines.append("archive_mode = 'off'  " + marker)
        }
        return lines.joined(separator: "\n") + "\n"
    }
}

extension RecoveryPlan {
    /// Throws when the plan lists problems: `.corrupt` when archived WAL is damaged, otherwise
    /// `.restoreTarget`.
    public func requireFeasible() throws {
        guard !problems.isEmpty else { return }
        let code: WaybackError.Code = wal.damaged.isEmpty && (damagedObjects ?? []).isEmpty ? .restoreTarget : .corrupt
        throw WaybackError(code, "the restore cannot reach its target: \(problems.joined(separator: "; ")); nothing was written")
    }
}

extension RecoveryPlan {
    /// The plan as `restore --dry-run` prints it.
    public var text: String {
        var l = [String]()
        l.append("target:    \(target)\(exclusive ? ", exclusive (stop just before it)" : "")")
        l.append("timeline:  \(timeline) (path \(timelinePath.map(String.init).joined(separator: " -> ")))")
        l.append("backup:    \(backup), ended \(Format.timestamp(backupStop)): \(backupReason)")
        if chain.count > 1 { l.append("chain:     \(chain.map(\.rawValue).joined(separator: " <- ")) (each file rebuilt from these in one pass)") }
        l.append("files:     \(files) files, \(Format.bytes(bytes))")
        var walLine = "WAL:       "
        if let first = wal.first, let last = wal.last {
            walLine += "\(wal.segments) segment(s) \(first) .. \(last)"
            if wal.inBackup > 0 { walLine += " (\(wal.inBackup) from the backup's own copies)" }
            walLine += wal.missing.isEmpty && wal.damaged.isEmpty ? ", all present and verified" : ""
        } else {
            walLine += "none"
        }
        l.append(walLine)
        if !wal.histories.isEmpty { l.append("history:   \(wal.histories.joined(separator: ", ")) present") }
        if let stop { l.append("stops:     \(stop.position) \(stop.record)\(stop.time.map { " (\(Format.timestamp($0)))" } ?? "")") }
        l.append("then:      \(action.rawValue)")
        l.append("estimate:  \(Format.seconds(estimate.seconds)) (files \(Format.seconds(estimate.filesSeconds)), WAL replay \(Format.seconds(estimate.replaySeconds))); from \(estimate.basis)")
        l.append("recoverable window:")
        for w in windows { l.append("  \(w.text)") }
        if problems.isEmpty {
            l.append("result:    the restore would succeed")
        } else {
            l.append("result:    the restore would FAIL:")
            for p in problems { l.append("  - \(p)") }
        }
        return l.joined(separator: "\n")
    }
}
