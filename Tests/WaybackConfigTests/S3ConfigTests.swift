import Foundation
import Testing
import WaybackConfig
import WaybackCore
import WaybackS3

@Suite struct S3ConfigTests {
    let head = """
        cluster:
          name: main
          pgdata: /pg
        repositories:
          - name: local
            type: local
            path: /var/backups/wayback
          - name: offsite
            type: s3
            bucket: wayback-backups
            region: eu-central-1
            prefix: prod
        """

    func parse(_ text: String, env: [String: String] = [:]) throws -> WaybackConfiguration {
        try ConfigLoader.parse(text, path: "w.yaml", environment: env)
    }

    func configError(_ text: String, env: [String: String] = [:]) -> String {
        do { _ = try parse(text, env: env); return "no error" } catch let e as WaybackError { return e.code == .config ? e.message : "\(e.code)" } catch { return "\(error)" }
    }

    @Test func keysFromTheStandardVariablesAndDefaults() throws {
        let c = try parse(head, env: ["AWS_ACCESS_KEY_ID": "AKIAENV", "AWS_SECRET_ACCESS_KEY": "s3cr3t", "AWS_SESSION_TOKEN": "tok"])
        let s3 = try #require(c.repositories[1].s3)
        #expect(s3.credentials.accessKeyID == "AKIAENV" && s3.credentials.secretAccessKey == "s3cr3t" && s3.credentials.sessionToken == "tok")
        #expect(s3.endpoint == "https://s3.eu-central-1.amazonaws.com" && s3.prefix == "prod/" && !s3.pathStyle)
        #expect(s3.partSize == 16 << 20 && s3.encryption == nil)
        #expect(c.repositories[1].walPush == .async && c.repositories[1].path == "s3://wayback-backups/prod/")
        #expect(!String(describing: s3.credentials).contains("s3cr3t"))
    }

    @Test func keysInTheConfigurationWinAndEncryptionParses() throws {
        let c = try parse(head + """

                endpoint: http://127.0.0.1:9000
                path_style: true
                access_key_id: AKIACONF
                secret_access_key: confsecret
                sse: aws:kms
                sse_kms_key_id: key-1
                storage_class: STANDARD_IA
                part_size_mb: 8
                wal_push: sync
            """, env: ["AWS_ACCESS_KEY_ID": "AKIAENV", "AWS_SECRET_ACCESS_KEY": "x"])
        let s3 = try #require(c.repositories[1].s3)
        #expect(s3.credentials.accessKeyID == "AKIACONF" && s3.pathStyle && s3.encryption == .kms(keyID: "key-1"))
        #expect(s3.storageClass == "STANDARD_IA" && s3.partSize == 8 << 20 && c.repositories[1].walPush == .sync)
    }

    @Test func sharedCredentialsFileWithProfile() throws {
        let file = NSTemporaryDirectory() + "wayback-creds-\(UUID().uuidString)"
        try "[backup]\naws_access_key_id = AKIAFILE\naws_secret_access_key = filesecret\n".write(toFile: file, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: file) }
        let c = try parse(head + "\n    credentials_file: \(file)\n    profile: backup")
        #expect(c.repositories[1].s3?.credentials.accessKeyID == "AKIAFILE")
        #expect(configError(head + "\n    credentials_file: \(file)\n    profile: nope").contains("has no profile 'nope'"))
    }

    @Test func badS3SettingsAreClearErrors() {
        #expect(configError(head, env: ["HOME": "/nonexistent"]).contains("has no S3 credentials"))
        let env = ["AWS_ACCESS_KEY_ID": "A", "AWS_SECRET_ACCESS_KEY": "B"]
        #expect(configError(head + "\n    sse: rot13", env: env).contains("'repositories.1.sse' must be one of none, AES256"))
        #expect(configError(head + "\n    endpoint: s3.example.com", env: env).contains("must start with https://"))
        #expect(configError(head + "\n    part_size_mb: 2", env: env).contains("'repositories.1.part_size_mb' must be from 5 to 5120, not '2'"))
        #expect(configError(head + "\n    access_key_id: A", env: env).contains("secret_access_key is not"))
        #expect(configError(head + "\n    path: /x", env: env).contains("an S3 repository has bucket and prefix"))
        #expect(configError(head.replacingOccurrences(of: "    path: /var/backups/wayback", with: "    path: /var/backups/wayback\n    bucket: b"), env: env)
            .contains("applies to S3 repositories only"))
        #expect(configError(head.replacingOccurrences(of: "    path: /var/backups/wayback", with: "    path: /var/backups/wayback\n    wal_push: async"), env: env)
            .contains("the first repository is always written"))
    }
}
