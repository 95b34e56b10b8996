import Foundation
import Testing
import WaybackCore
import WaybackPostgres
import WaybackStorage
import WaybackTesting

/// TLS to PostgreSQL against a real server: `ssl = on` with a certificate of a private CA, and a
/// `pg_hba.conf` that accepts TCP connections over TLS only (so a connection that works proves
/// that TLS was used), on 127.0.0.1.
@Suite("TLS to PostgreSQL (sslmode, sslrootcert, client certificates)", .serialized, .enabled(if: TestEnvironment.runIntegration))
struct TLSTests {
    /// A private CA, a server certificate for `localhost` (not for 127.0.0.1), a client
    /// certificate for the user `postgres`, and a second, unrelated CA; in `dir`.
    static func makeCertificates(in dir: String) throws {
        let script = """
            set -e
            cd '\(dir)'
            openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj '/CN=Wayback Test CA' -keyout ca.key -out ca.crt \
              -addext 'basicConstraints=critical,CA:TRUE' -addext 'keyUsage=critical,keyCertSign,cRLSign'
            openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj '/CN=Another CA' -keyout other.key -out other.crt \
              -addext 'basicConstraints=critical,CA:TRUE' -addext 'keyUsage=critical,keyCertSign,cRLSign'
            openssl req -newkey rsa:2048 -nodes -subj '/CN=localhost' -keyout server.key -out server.csr
            printf 'subjectAltName=DNS:localhost\\nextendedKeyUsage=serverAuth\\n' > server.ext
            openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 -out server.crt -extfile server.ext
            openssl req -newkey rsa:2048 -nodes -subj '/CN=postgres' -keyout client.key -out client.csr
            printf 'extendedKeyUsage=clientAuth\\n' > client.ext
            openssl x509 -req -in client.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 -out client.crt -extfile client.ext
            chmod 600 *.key
            """
        let r = try Command.run(["/bin/sh", "-c", script], check: false)
        guard r.status == 0 else { throw WaybackError(.internal, "openssl failed: \(r.stderr)") }
        for f in try FileSystem.list(dir) { try TestEnvironment.giveToTestUser(dir + "/" + f, mode: f.hasSuffix(".key") ? 0o600 : 0o644) }
    }

    static func hba(_ tcp: String) -> String {
        "local all all trust\nhostssl all all 127.0.0.1/32 \(tcp)\nhostssl all all ::1/128 \(tcp)\nhost all all 127.0.0.1/32 reject\nhost all all ::1/128 reject\n"
    }

    @Test("sslmode require and verify-full: backup and restore over TLS only; no TLS, a wrong CA, a wrong host name and a missing client certificate are clear errors")
    func tlsModes() throws {
        let t = try TestCluster()
        let restoredDir = t.root + "/restored"
        let restored = t.restoredCluster(at: restoredDir)
        defer { t.cleanup(extra: [restored]) }
        let tls = t.root + "/tls"
        try FileManager.default.createDirectory(atPath: tls, withIntermediateDirectories: false)
        try TestEnvironment.giveToTestUser(tls, mode: 0o755)
        try Self.makeCertificates(in: tls)
        let data = t.cluster.dataDirectory
        for f in ["server.crt", "server.key", "ca.crt"] {
            try FileManager.default.copyItem(atPath: tls + "/" + f, toPath: data + "/" + f)
            try TestEnvironment.giveToTestUser(data + "/" + f, mode: 0o600)
        }
        try t.cluster.configure(["ssl": "on", "ssl_cert_file": "server.crt", "ssl_key_file": "server.key", "ssl_ca_file": "ca.crt"])
        try Data(Self.hba("trust").utf8).write(to: URL(fileURLWithPath: data + "/pg_hba.conf"))
        try t.cluster.stop()
        try t.cluster.start(extraOptions: "-c listen_addresses=127.0.0.1")
        try t.waybackOK(["init"])

        let socket = "connection: postgresql://postgres@/postgres?host=\(t.root)&port=\(t.cluster.port)"
        func config(_ name: String, _ url: String) throws -> String {
            try t.configVariant(name, replace: [(socket, "connection: \(url)")])
        }
        let tcp = "postgresql://postgres@localhost:\(t.cluster.port)/postgres"

        // Without TLS the server refuses: every TCP connection that works below used TLS.
        let plain = try t.wayback(["backup"], config: try config("plain.yaml", tcp + "?sslmode=disable"))
        #expect(plain.status == WaybackError.Code.connection.rawValue, "\(plain.status) \(plain.stderr)")
        #expect(plain.stderr.contains("no encryption") || plain.stderr.contains("pg_hba.conf"), "\(plain.stderr)")

        // require: encrypted, certificate not checked.
        _ = try t.psql("CREATE TABLE over_tls AS SELECT g FROM generate_series(1, 500) g")
        let required = try t.wayback(["backup"], config: try config("require.yaml", tcp + "?sslmode=require"))
        #expect(required.status == 0, "\(required.stderr)")
        // verify-full against the private CA: the backup, then a restore of it, with the data.
        let full = try config("full.yaml", tcp + "?sslmode=verify-full&sslrootcert=\(tls)/ca.crt")
        let id = try t.wayback(["backup"], config: full)
        #expect(id.status == 0, "\(id.stderr)")
        _ = try t.psql("INSERT INTO over_tls SELECT g FROM generate_series(501, 600) g")
        try t.switchAndWaitForArchive()
        let restore = try t.wayback(["restore", "--target-dir", restoredDir], config: full)
        #expect(restore.status == 0, "\(restore.stderr)")
        try t.startRestored(restored)
        #expect(try restored.psql("SELECT count(*) FROM over_tls") == "600")

        // Another CA: refused, naming sslrootcert.
        let wrongCA = try t.wayback(["backup"], config: try config("wrong-ca.yaml", tcp + "?sslmode=verify-full&sslrootcert=\(tls)/other.crt"))
        #expect(wrongCA.status == WaybackError.Code.connection.rawValue, "\(wrongCA.status) \(wrongCA.stderr)")
        #expect(wrongCA.stderr.contains("does not verify against sslrootcert (\(tls)/other.crt)"), "\(wrongCA.stderr)")
        // A name the certificate does not list (it is for localhost): verify-full refuses, verify-ca accepts.
        let ip = "postgresql://postgres@127.0.0.1:\(t.cluster.port)/postgres?sslrootcert=\(tls)/ca.crt&sslmode="
        let wrongHost = try t.wayback(["backup"], config: try config("wrong-host.yaml", ip + "verify-full"))
        #expect(wrongHost.status == WaybackError.Code.connection.rawValue, "\(wrongHost.status) \(wrongHost.stderr)")
        #expect(wrongHost.stderr.contains("not issued for 127.0.0.1"), "\(wrongHost.stderr)")
        let ca = try t.wayback(["backup"], config: try config("verify-ca.yaml", ip + "verify-ca"))
        #expect(ca.status == 0, "\(ca.stderr)")
        // verify-full without a CA to check against: a configuration error, before connecting.
        let noRootConfig = try config("no-root.yaml", tcp + "?sslmode=verify-full")
        let noRoot = try t.wayback(["backup"], environment: ["HOME": t.root], config: noRootConfig)
        #expect(noRoot.status == WaybackError.Code.config.rawValue && noRoot.stderr.contains("sslrootcert"), "\(noRoot.stderr)")

        // Client certificates: the server asks for one; without it refused, with it accepted.
        try Data(Self.hba("cert").utf8).write(to: URL(fileURLWithPath: data + "/pg_hba.conf"))
        _ = try t.psql("SELECT pg_reload_conf()")
        usleep(300_000)
        let noCert = try t.wayback(["backup"], config: full)
        #expect(noCert.status == WaybackError.Code.connection.rawValue, "\(noCert.status) \(noCert.stderr)")
        #expect(noCert.stderr.contains("certificate"), "\(noCert.stderr)")
        let withCert = try config("cert.yaml", tcp + "?sslmode=verify-full&sslrootcert=\(tls)/ca.crt&sslcert=\(tls)/client.crt&sslkey=\(tls)/client.key")
        let cert = try t.wayback(["backup"], config: withCert)
        #expect(cert.status == 0, "\(cert.stderr)")
        // A client key others can read is refused, as libpq does.
        _ = chmod(tls + "/client.key", 0o644)
        let loose = try t.wayback(["backup"], config: withCert)
        #expect(loose.status == WaybackError.Code.config.rawValue && loose.stderr.contains("chmod 600"), "\(loose.stderr)")
    }
}
