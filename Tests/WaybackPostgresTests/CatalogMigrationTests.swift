import Foundation
import Testing
import WaybackPostgres

/// The migrations Wayback applies are the files shipped in migrations/, in order, split into the
/// statements the files hold.
@Suite struct CatalogMigrationTests {
    static let directory = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("migrations").path

    @Test func theEmbeddedMigrationsAreTheShippedFilesInOrder() throws {
        let files = try FileManager.default.contentsOfDirectory(atPath: Self.directory).filter { $0.hasSuffix(".sql") }.sorted()
        #expect(files == CatalogMigration.all.map(\.file), "migrations/ and CatalogMigration.all differ")
        for m in CatalogMigration.all {
            let text = try String(contentsOfFile: Self.directory + "/" + m.file, encoding: .utf8)
            #expect(text == m.sql, "\(m.file) differs from its embedded copy")
            #expect(m.file.hasPrefix(String(format: "%03d_", m.version)))
        }
        #expect(CatalogMigration.all.map(\.version) == Array(1...CatalogMigration.all.count))
    }

    @Test func statementsAreSplitAtLineEndingSemicolonsWithoutComments() throws {
        let logs = try #require(CatalogMigration.all.first { $0.file == "002_create_backup_logs.sql" })
        let statements = logs.statements
        #expect(statements.count == 4)
        #expect(statements[0].hasPrefix("CREATE TABLE IF NOT EXISTS backup_logs (") && statements[0].hasSuffix(")"))
        #expect(statements.dropFirst().allSatisfy { $0.hasPrefix("CREATE INDEX IF NOT EXISTS idx_backup_logs_") })
        #expect(!statements.contains { $0.contains("--") || $0.hasSuffix(";") })
    }

    @Test func onlyPlainLowerCaseSchemasAreAccepted() {
        for good in ["wayback", "_w", "ops_2"] { #expect(CatalogStore.validSchema(good), "\(good)") }
        for bad in ["", "Wayback", "2x", "a-b", "x\"; DROP", String(repeating: "a", count: 64)] { #expect(!CatalogStore.validSchema(bad), "\(bad)") }
    }
}
