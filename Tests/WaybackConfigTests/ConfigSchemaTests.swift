import Foundation
import Testing
import WaybackCore
@testable import WaybackConfig

@Suite struct ConfigSchemaTests {
    static let docs = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("docs/configuration.md").path

    /// The rows of the table under "## Every key" in docs/configuration.md.
    static func documentedRows() throws -> [[String]] {
        let text = try String(contentsOfFile: docs, encoding: .utf8)
        guard let start = text.range(of: "\n## Every key\n") else { return [] }
        let section = text[start.upperBound...].prefix { _ in true }
        var rows = [[String]]()
        var inTable = false
        for line in section.split(separator: "\n", omittingEmptySubsequences: false) {
            if line.hasPrefix("## ") { break }
            guard line.hasPrefix("|") else { if inTable { break }; continue }
            inTable = true
            let cells = line.split(separator: "|", omittingEmptySubsequences: false).dropFirst().dropLast()
                .map { $0.trimmingCharacters(in: .whitespaces) }
            if cells.first == "key" || cells.allSatisfy({ $0.allSatisfy { $0 == "-" } }) { continue }
            rows.append(cells)
        }
        return rows
    }

    @Test func theDocsListEveryKeyWithItsTypeDefaultAndSecrecy() throws {
        let expected = ConfigSchema.keys.map(\.docRow)
        let documented = try Self.documentedRows()
        let table = (["| key | type | default | secret |", "|---|---|---|---|"] + expected.map { "| " + $0.joined(separator: " | ") + " |" })
            .joined(separator: "\n")
        #expect(documented == expected, "docs/configuration.md, \"## Every key\", must be exactly:\n\(table)")
    }

    @Test func everyKeyHasOneEnvironmentNameAndListsComeFromTheSchema() {
        let names = ConfigSchema.keys.map { ConfigKey.environmentName($0.path) }
        #expect(Set(names).count == names.count)
        #expect(ConfigSchema.isList("repositories") && !ConfigSchema.isList("compression") && !ConfigSchema.isList("repositories.0"))
        #expect(ConfigSchema.sections == ["cluster", "repositories", "compression", "backup", "restore", "archive", "retention", "schedule", "check", "monitor", "notifications", "catalog", "verify", "drill", "dump", "report"])
        #expect(ConfigSchema.key("repositories.3.secret_access_key")?.secret == true && ConfigSchema.key("repositories.x.path") == nil)
    }

    @Test func aKeyReadForItsDefaultWithoutOneIsAnInternalErrorNotACrash() throws {
        let empty = ConfigValues(file: "w.yaml")
        #expect(try empty.defaulted("parallelism", ConfigValues.int) == 2)
        #expect(try empty.defaulted("log_level", as: LogLevel.self) == .info)
        #expect { try empty.defaulted("cluster.name", ConfigValues.string) } throws: {
            ($0 as? WaybackError)?.code == .internal && ($0 as? WaybackError)?.message.contains("'cluster.name'") == true
        }
    }

    @Test func typesAndRangesAreCheckedInOnePlace() throws {
        func error(_ yaml: String) -> String? {
            do { _ = try ConfigLoader.parse(yaml, path: "w.yaml", environment: [:]); return nil } catch let e as WaybackError { return e.message } catch { return "\(error)" }
        }
        let base = "cluster: { name: main, pgdata: /pg }\nrepositories:\n  - path: /r\n"
        #expect(error(base) == nil)
        #expect(error(base + "parallelism: 65\n") == "w.yaml:4: 'parallelism' must be from 1 to 64, not '65'")
        #expect(error(base + "backup: { max_chain_length: 0 }\n") == "w.yaml:4: 'backup.max_chain_length' must be at least 1, not '0'")
        #expect(error(base + "backup: { fast_checkpoint: maybe }\n") == "w.yaml:4: 'backup.fast_checkpoint' must be true or false, not 'maybe'")
        #expect(error(base + "log_level: loud\n")?.contains("'log_level' must be one of trace, debug, info, notice, warning, error") == true)
        #expect(error(base + "lock_path: relative/dir\n")?.contains("'lock_path' must be an absolute path") == true)
        #expect(error(base + "compression: [zstd]\n") == "w.yaml:4: 'compression' must not be a list")
        #expect(error("cluster: { name: main, pgdata: /pg }\nrepositories:\n  - /r\n")?.contains("each entry of 'repositories' must be a mapping") == true)
        // Defaults come from the table.
        let c = try ConfigLoader.parse(base, path: "w.yaml", environment: [:])
        #expect(c.parallelism == 2 && c.lockPath == "/tmp/wayback" && c.logLevel == .info && c.backup.maxChainLength == 30)
        #expect(c.backup.packSizeBytes == 256 << 20 && c.backup.maxRateBytes == nil && c.restore.prefetchSegments == 8 && c.archive.spoolLimitBytes == 4096 << 20)
        #expect(c.repositories[0].type == .local && c.repositories[0].walPush == .sync && c.backup.pageChecksumFailures == .warn)
    }
}
