import Foundation
import NIOSSL
import PostgresNIO
import WaybackCore

/// The TLS of a connection, as libpq's `sslmode` says (see `ConnectionSettings.SSLMode`).
enum ConnectionTLS {
    /// The postgres-nio TLS setting for `settings` (TCP; a unix socket never uses TLS). Files that
    /// cannot be read are `.config` errors naming the parameter.
    static func make(_ settings: ConnectionSettings) throws -> PostgresConnection.Configuration.TLS {
        if settings.sslMode == .disable { return .disable }
        var tls = TLSConfiguration.makeClientConfiguration()
        switch settings.sslMode {
        case .verifyFull: tls.certificateVerification = .fullVerification
        case .verifyCA: tls.certificateVerification = .noHostnameVerification
        default: tls.certificateVerification = .none
        }
        if settings.sslMode.verifiesCertificate {
            tls.trustRoots = try trustRoots(settings)
        }
        if let cert = settings.sslCert, let key = settings.sslKey {
            do {
                tls.certificateChain = try NIOSSLCertificate.fromPEMFile(cert).map { .certificate($0) }
            } catch {
                throw WaybackError(.config, "cluster.connection: sslcert \(cert) cannot be read as a PEM certificate (\(error)); check the path and that this OS user may read it")
            }
            try requirePrivate(key)
            do {
                tls.privateKey = .privateKey(try NIOSSLPrivateKey(file: key, format: .pem))
            } catch {
                throw WaybackError(.config, "cluster.connection: sslkey \(key) cannot be read as a PEM private key (\(error)); check the path and its passphrase (none is supported)")
            }
        }
        let context: NIOSSLContext
        do { context = try NIOSSLContext(configuration: tls) } catch {
            throw WaybackError(.config, "cluster.connection: the TLS settings cannot be used (\(error)); check sslrootcert, sslcert and sslkey")
        }
        return settings.sslMode == .allow || settings.sslMode == .prefer ? .prefer(context) : .require(context)
    }

    /// `sslrootcert`: a PEM file or `system` (the configuration fills in libpq's default,
    /// `~/.postgresql/root.crt`, where there is one).
    static func trustRoots(_ settings: ConnectionSettings) throws -> NIOSSLTrustRoots {
        let mode = settings.sslMode.rawValue
        if settings.sslRootCert == "system" { return .default }
        guard let path = settings.sslRootCert else {
            throw WaybackError(.config, "cluster.connection: sslmode=\(mode) needs sslrootcert, the CA certificate (PEM) that signed the server's certificate, or sslrootcert=system for the system's CAs")
        }
        do {
            let certificates = try NIOSSLCertificate.fromPEMFile(path)
            guard !certificates.isEmpty else { throw WaybackError(.config, "no certificate") }
            return .certificates(certificates)
        } catch {
            throw WaybackError(.config, "cluster.connection: sslrootcert \(path) cannot be read as PEM certificates; check the path and that this OS user may read it")
        }
    }

    /// A client key must be readable by its owner only, as libpq requires.
    static func requirePrivate(_ key: String) throws {
        var st = stat()
        guard stat(key, &st) == 0 else {
            throw WaybackError(.config, "cluster.connection: sslkey \(key) does not exist or cannot be read by this user")
        }
        guard st.st_mode & 0o077 == 0 else {
            throw WaybackError(.config, "cluster.connection: sslkey \(key) can be read by others (mode \(String(st.st_mode & 0o777, radix: 8))); run 'chmod 600 \(key)'")
        }
    }

    /// Words for a TLS failure, naming the setting to check; nil when `error` is not one.
    static func reason(_ error: any Error, settings: ConnectionSettings) -> String? {
        let text = String(describing: error)
        let root = settings.sslRootCert ?? "~/.postgresql/root.crt"
        if text.contains("failedToValidateHostname") || text.contains("HOSTNAME") {
            return "the server's certificate is not issued for \(settings.host) (sslmode=verify-full); connect with a name its certificate lists, or use sslmode=verify-ca"
        }
        if text.contains("CERTIFICATE_VERIFY_FAILED") || text.contains("certificate verify failed") || text.contains("unable to get local issuer")
            || text.contains("self signed") || text.contains("self-signed") {
            return "the server's certificate does not verify against sslrootcert (\(root)); set sslrootcert to the CA that signed it"
        }
        if text.contains("NIOSSL") || text.contains("handshake") {
            return "the TLS handshake failed (\(text.prefix(160))); check sslmode, sslrootcert, sslcert and sslkey"
        }
        return nil
    }
}
