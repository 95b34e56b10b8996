import Foundation
import Testing
import WaybackCore
@testable import WaybackConfig

@Suite struct ConfigLoaderTests {
    let minimal = """
        cluster:
          name: main
          pgdata: /var/lib/postgresql/15/main
          connection: postgresql://postgres@localhost:5432/postgres
        repositories:
          - name: local
            type: local
            path: /var/backups/wayback
        compression: { algorithm: zstd, level: 1 }
        parallelism: 2
        """

    func parse(_ text: String, env: [String: String] = [:]) throws -> WaybackConfiguration {
        try ConfigLoader.parse(text, path: "w.yaml", environment: env)
    }

    func error(_ text: String, env: [String: String] = [:]) -> WaybackError? {
        do { _ = try parse(text, env: env); return nil } catch let e as WaybackError { return e } catch { return nil }
    }

    @Test func theMinimumFromTheIssueParses() throws {
        let c = try parse(minimal)
        #expect(c.cluster.name == "main")
        #expect(c.cluster.connection.host == "localhost" && c.cluster.connection.port == 5432 && c.cluster.connection.user == "postgres")
        #expect(c.repositories.map(\.name) == ["local"] && c.repositories[0].path == "/var/backups/wayback" && c.repositories[0].s3 == nil)
        #expect(c.repositories[0].walPush == .sync && c.archive.spoolPath == "/var/lib/postgresql/15/main/pg_wal/wayback-spool")
        #expect(c.compression == CompressionSettings(algorithm: .zstd, level: 1))
        #expect(c.parallelism == 2 && c.backup.archiveWaitSeconds == 120 && c.backup.fastCheckpoint)
    }

    @Test func incrementalPagesAreLZ4UnlessToldSameOrNothingIsCompressed() throws {
        #expect(try parse(minimal).pageCompression == CompressionSettings(algorithm: .lz4, level: 1))
        let same = minimal.replacingOccurrences(of: "{ algorithm: zstd, level: 1 }", with: "{ algorithm: zstd, level: 3, incremental: same }")
        #expect(try parse(same).pageCompression == CompressionSettings(algorithm: .zstd, level: 3))
        #expect(try parse(minimal, env: ["WAYBACK_COMPRESSION_ALGORITHM": "none"]).pageCompression.algorithm == .none)
        #expect(try parse(minimal, env: ["WAYBACK_COMPRESSION_INCREMENTAL": "same"]).pageCompression == CompressionSettings(algorithm: .zstd, level: 1))
        let wrong = minimal.replacingOccurrences(of: "level: 1 }", with: "level: 1, incremental: zstd }")
        #expect(error(wrong)?.message.contains("'compression.incremental' must be one of lz4, same, not 'zstd'") == true)
    }

    @Test func retentionHasDefaultsAndEachRepositoryMayOverrideIt() throws {
        #expect(try parse(minimal).retention == RetentionPolicy.default)
        let text = minimal.replacingOccurrences(of: "    path: /var/backups/wayback\n", with: "    path: /var/backups/wayback\n    retention: { daily: 7, weekly: 0, monthly: 0, quarterly: 0 }\n")
            + "\nretention:\n  quarterly: 40\n  pitr_window: 36h\n  timezone: Europe/Berlin\n"
        let c = try parse(text)
        #expect(c.retention.quarterly == 40 && c.retention.pitrWindow == 36 * 3600 && c.retention.timeZone == "Europe/Berlin")
        let local = c.repositories[0].retention
        #expect(local.daily == 7 && local.quarterly == 0 && local.pitrWindow == 36 * 3600 && local.hourly == 24)
        // Catalog defaults: the cluster's connection, schema wayback.
        #expect(c.catalog?.schema == "wayback" && c.catalog?.connection.host == "localhost")
        #expect(try parse(minimal + "\ncatalog: { enabled: false }\n").catalog == nil)
        for (bad, words) in [("retention: { pitr_window: 7 days }", "not a duration"), ("retention: { timezone: Mars/Olympus }", "IANA"),
                             ("retention: { hourly: 0, daily: 0, weekly: 0, monthly: 0, quarterly: 0, min_full: 0 }", "keeps nothing"),
                             ("retention: { daily: -1 }", "retention.daily"), ("catalog: { schema: Public }", "catalog.schema")] {
            let e = try #require(error(minimal + "\n" + bad + "\n"), "\(bad) was accepted")
            #expect(e.code == .config && e.message.contains(words), "\(bad): \(e.message)")
        }
    }

    @Test func theScheduleHasDefaultsAndBadCronOrZonesAreNamed() throws {
        let d = try parse(minimal).schedule
        #expect(d.full?.text == "0 2 * * *" && d.incr?.text == "0 * * * *" && d.diff == nil && d.expire == .afterBackup && d.retries == 2)
        let off = try parse(minimal + "\nschedule:\n  full: \"@daily\"\n  incr: null\n  expire: \"30 3 * * *\"\n  timezone: Europe/Berlin\n").schedule
        let expireAt = try CronExpression("30 3 * * *")
        #expect(off.full?.text == "@daily" && off.incr == nil && off.expire == .cron(expireAt) && off.timeZone == "Europe/Berlin")
        for (bad, words) in [("schedule: { full: \"61 * * * *\" }", "schedule.full: cron field 'minute' is '61'"),
                             ("schedule: { incr: \"0 * * *\" }", "schedule.incr"), ("schedule: { timezone: Mars/Olympus }", "schedule.timezone"),
                             ("schedule: { stop_timeout: soon }", "schedule.stop_timeout"),
                             ("monitor: { disk_warn_percent: 95, disk_critical_percent: 90 }", "monitor.disk_warn_percent")] {
            let e = try #require(error(minimal + "\n" + bad + "\n"), "\(bad) was accepted")
            #expect(e.code == .config && e.message.contains(words), "\(bad): \(e.message)")
        }
    }

    @Test func unknownKeysAreNamedWithTheirLine() throws {
        let e = try #require(error(minimal + "\ncolour: blue\n"))
        #expect(e.code == .config)
        #expect(e.message.contains("unknown key 'colour'") && e.message.contains("w.yaml:11"))
        let nested = try #require(error(minimal.replacingOccurrences(of: "  name: main", with: "  name: main\n  nmae: x")))
        #expect(nested.message.contains("'cluster.nmae'"))
        let repoKey = try #require(error(minimal.replacingOccurrences(of: "    type: local", with: "    type: local\n    buckett: b")))
        #expect(repoKey.message.contains("'repositories.0.buckett'"))
    }

    @Test func wrongTypesMissingKeysAndBadYAML() throws {
        #expect(error(minimal.replacingOccurrences(of: "parallelism: 2", with: "parallelism: two"))?.message.contains("'parallelism' must be a whole number") == true)
        #expect(error(minimal.replacingOccurrences(of: "  pgdata: /var/lib/postgresql/15/main\n", with: ""))?.message.contains("'cluster.pgdata' is missing") == true)
        #expect(error("cluster: [1, 2]\n")?.code == .config)
        #expect(error("cluster:\n  name: [unclosed\n")?.code == .config)
        #expect(error(minimal.replacingOccurrences(of: "level: 1", with: "level: 40"))?.message.contains("compression.level") == true)
        #expect(error(minimal.replacingOccurrences(of: "type: local", with: "type: ftp"))?.message.contains("'repositories.0.type' must be one of local, s3, not 'ftp'") == true)
    }

    @Test func environmentOverridesEveryKey() throws {
        let c = try parse(minimal, env: ["WAYBACK_PARALLELISM": "4", "WAYBACK_REPOSITORIES_0_PATH": "/elsewhere",
                                         "WAYBACK_CLUSTER_NAME": "other", "WAYBACK_BACKUP_ARCHIVE_WAIT_SECONDS": "5",
                                         "WAYBACK_COMPRESSION_ALGORITHM": "none"])
        #expect(c.parallelism == 4 && c.repositories[0].path == "/elsewhere" && c.cluster.name == "other")
        #expect(c.backup.archiveWaitSeconds == 5 && c.compression.algorithm == .none)
        #expect(error(minimal, env: ["WAYBACK_PARALELISM": "4"])?.message.contains("WAYBACK_PARALELISM") == true)
        #expect(error(minimal, env: ["WAYBACK_PARALLELISM": "x"])?.message.contains("WAYBACK_PARALLELISM") == true)
        #expect(ConfigKey.environmentName("repositories.0.path") == "WAYBACK_REPOSITORIES_0_PATH")
    }

    @Test func libpqVariablesAreDefaultsTheURLOverrides() throws {
        let noURL = minimal.replacingOccurrences(of: "  connection: postgresql://postgres@localhost:5432/postgres\n", with: "")
        let c = try parse(noURL, env: ["PGHOST": "/run/pg", "PGPORT": "5444", "PGUSER": "backup", "PGPASSWORD": "pw", "PGDATABASE": "app"])
        #expect(c.cluster.connection.host == "/run/pg" && c.cluster.connection.port == 5444 && c.cluster.connection.user == "backup")
        #expect(c.cluster.connection.password == "pw" && c.cluster.connection.database == "app")
        let d = try parse(minimal, env: ["PGPASSWORD": "pw", "PGPORT": "6000"])
        #expect(d.cluster.connection.port == 5432 && d.cluster.connection.password == "pw")
        #expect(!d.cluster.connection.redacted.contains("pw"))
        // libpq's TLS variables are defaults too; the URL wins.
        let t = try parse(noURL, env: ["PGSSLMODE": "verify-ca", "PGSSLROOTCERT": "/etc/ca.pem"])
        #expect(t.cluster.connection.sslMode == .verifyCA && t.cluster.connection.sslRootCert == "/etc/ca.pem")
        #expect(try parse(minimal + "\n", env: ["PGSSLMODE": "verify-ca"]).cluster.connection.sslMode == .verifyCA)
        let url = minimal.replacingOccurrences(of: "localhost:5432/postgres", with: "localhost:5432/postgres?sslmode=require")
        #expect(try parse(url, env: ["PGSSLMODE": "verify-ca"]).cluster.connection.sslMode == .require)
        #expect(error(noURL, env: ["PGSSLMODE": "sometimes"])?.message.contains("PGSSLMODE") == true)
        // libpq's default CA file, read at the edge: ~/.postgresql/root.crt when it exists.
        let home = FileManager.default.temporaryDirectory.appendingPathComponent("wayback-home-\(getpid())").path
        try FileManager.default.createDirectory(atPath: home + "/.postgresql", withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: home) }
        #expect(try parse(noURL, env: ["PGSSLMODE": "verify-full", "HOME": home]).cluster.connection.sslRootCert == nil)
        FileManager.default.createFile(atPath: home + "/.postgresql/root.crt", contents: Data())
        #expect(try parse(noURL, env: ["PGSSLMODE": "verify-full", "HOME": home]).cluster.connection.sslRootCert == home + "/.postgresql/root.crt")
        #expect(try parse(noURL, env: ["PGSSLMODE": "require", "HOME": home]).cluster.connection.sslRootCert == nil)
    }

    @Test func secretsInTheFileAreNamedAndAReadableFileIsWarnedAbout() throws {
        #expect(try parse(minimal).secretKeysInFile.isEmpty)
        let withPassword = minimal.replacingOccurrences(of: "postgresql://postgres@localhost", with: "postgresql://postgres:hunter2@localhost")
        #expect(try parse(withPassword).secretKeysInFile == ["the password in cluster.connection"])
        #expect(try parse(withPassword, env: ["PGPASSWORD": "x"]).secretKeysInFile.count == 1)
        // PGPASSWORD is not in the file.
        #expect(try parse(minimal, env: ["PGPASSWORD": "x"]).secretKeysInFile.isEmpty)

        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("wayback-cfg-\(getpid())").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let path = dir + "/w.yaml"
        try withPassword.write(toFile: path, atomically: true, encoding: .utf8)
        _ = chmod(path, 0o644)
        let loose = try ConfigLoader.load(path: path, environment: [:])
        #expect(loose.warnings.count == 1 && loose.warnings[0].contains("chmod 600") && !loose.warnings[0].contains("hunter2"))
        _ = chmod(path, 0o600)
        #expect(try ConfigLoader.load(path: path, environment: [:]).warnings.isEmpty)
        // The variables that are not keys, and those named by passphrase_env.
        #expect(try parse(minimal, env: ["WAYBACK_CONFIG": "/x", "WAYBACK_PG_BIN": "/usr/lib/postgresql/15/bin", "WAYBACK_ENCRYPTION_PASSPHRASE": "p"]).parallelism == 2)
    }

    @Test func yamlErrorsAreOneLineWithTheLine() {
        let dup = error("cluster:\n  name: main\n  name: again\n")
        #expect(dup?.message.contains("'name' more than once") == true && dup?.message.contains("Context") == false, "\(dup?.message ?? "")")
        #expect(error("cluster:\n  name: [unclosed\n")?.message.contains("line 3") == true)
    }

    @Test func noWayOfPrintingTheConfigurationShowsASecret() throws {
        let text = minimal.replacingOccurrences(of: "postgresql://postgres@localhost", with: "postgresql://postgres:pw-Secret-1@localhost") + """

            repositories:
              - name: local
                type: local
                path: /var/backups/wayback
                encryption:
                  passphrase_env: MY_PASSPHRASE
              - name: offsite
                type: s3
                bucket: b
                access_key_id: AKIDEXAMPLE
                secret_access_key: s3-Secret-2
                session_token: token-Secret-3
            """
        let c = try parse(text.replacingOccurrences(of: "repositories:\n  - name: local\n    type: local\n    path: /var/backups/wayback\ncompression", with: "compression"),
                          env: ["MY_PASSPHRASE": "passphrase-Secret-4"])
        #expect(c.cluster.connection.password == "pw-Secret-1" && c.repositories.count == 2)
        var dumped = ""
        dump(c, to: &dumped)
        for printed in [String(describing: c), String(reflecting: c), "\(c.cluster.connection)", String(reflecting: c.cluster.connection),
                        String(describing: c.repositories), dumped] {
            for secret in ["pw-Secret-1", "s3-Secret-2", "token-Secret-3", "passphrase-Secret-4"] {
                #expect(!printed.contains(secret), "\(secret) printed in: \(printed.prefix(300))")
            }
        }
        #expect(String(describing: c.cluster.connection).contains("postgresql://postgres@localhost:5432/postgres"))
    }
}
