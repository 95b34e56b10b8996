import Foundation
import WaybackCore
import WaybackPostgres
import WaybackStorage

/// A real S3 server process for tests: moto (`scripts/s3/moto-server.py`) on 127.0.0.1 on a free
/// port, with buckets, an IAM user's keys and (by default) SigV4 checking on. `stop()` ends it.
public final class S3TestServer: @unchecked Sendable {
    public let endpoint: String
    public let accessKeyID: String
    public let secretAccessKey: String
    public let buckets: [String]
    public let port: Int
    private let process: Process
    let stateDirectory: String

    /// The package's root directory (for scripts/).
    public static var packageRoot: String {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path
    }

    /// moto is importable by `python3` (scripts/setup installs it).
    public static var available: Bool {
        (try? Command.run(["python3", "-c", "import moto.server, boto3"], check: false))?.status == 0
    }

    /// Starts the server. Without moto this throws, so a missing S3 server fails the test (in CI
    /// and everywhere else) instead of skipping it.
    /// - Parameter tls: a server certificate and key (PEM) to serve HTTPS with.
    public init(buckets: [String] = ["wayback-test"], auth: Bool = true, tls: (certificate: String, key: String)? = nil) throws {
        stateDirectory = try TestEnvironment.makeTemporaryDirectory("s3")
        let stateFile = stateDirectory + "/state.json"
        var lastError = ""
        for _ in 0..<5 {
            let port = Int.random(in: 20000...29999)
            let p = Process()
            p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
            var args = ["python3", Self.packageRoot + "/scripts/s3/moto-server.py", String(port), stateFile]
            if auth { args.append("--auth") }
            if let tls { args += ["--cert", tls.certificate, "--key", tls.key] }
            for b in buckets { args += ["--bucket", b] }
            p.arguments = args
            let log = FileHandle(forWritingAtPath: "/dev/null")
            p.standardOutput = log
            let errPath = stateDirectory + "/server.log"
            FileManager.default.createFile(atPath: errPath, contents: nil)
            p.standardError = FileHandle(forWritingAtPath: errPath)
            try p.run()
            let deadline = monotonicSeconds() + 30
            while monotonicSeconds() < deadline && p.isRunning && !FileManager.default.fileExists(atPath: stateFile) { usleep(50_000) }
            if let data = FileManager.default.contents(atPath: stateFile),
               let json = try JSONSerialization.jsonObject(with: data) as? [String: Any] {
                endpoint = json["endpoint"] as! String
                accessKeyID = json["access_key_id"] as! String
                secretAccessKey = json["secret_access_key"] as! String
                self.buckets = buckets
                self.port = port
                process = p
                return
            }
            if p.isRunning { p.terminate() }
            p.waitUntilExit()
            lastError = (try? String(contentsOfFile: errPath, encoding: .utf8))?.split(separator: "\n").suffix(3).joined(separator: " | ") ?? ""
        }
        throw WaybackError(.io, "the moto S3 server did not start (\(lastError)); run scripts/setup to install moto")
    }

    public func stop() {
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        process.waitUntilExit()
        try? FileSystem.removeTree(stateDirectory)
    }

    /// A `repositories:` entry for a Wayback configuration, keys in the configuration.
    public func repositoryYAML(name: String = "offsite", bucket: String? = nil, prefix: String, extra: String = "") -> String {
        """
          - name: \(name)
            type: s3
            bucket: \(bucket ?? buckets[0])
            region: us-east-1
            endpoint: \(endpoint)
            path_style: true
            prefix: \(prefix)
            access_key_id: \(accessKeyID)
            secret_access_key: \(secretAccessKey)
        \(extra)
        """
    }

    /// Starts `scripts/s3/fault-proxy.py` in front of this server: a share `faults` of requests get
    /// a 500/503/SlowDown answer, a delay, or a connection reset (before or in the middle of the
    /// answer).
    public func faultProxy(faults: Double, seed: Int = 1) throws -> FaultProxy {
        try FaultProxy(upstreamPort: port, faults: faults, seed: seed, directory: stateDirectory)
    }
}

public final class FaultProxy: @unchecked Sendable {
    public let endpoint: String
    private let process: Process
    private let statsFile: String

    init(upstreamPort: Int, faults: Double, seed: Int, directory: String) throws {
        // A random port can be taken (by another server, or as the local port of a live
        // connection): a proxy that exits before it is ready is started again on another one.
        var tried = [Int]()
        while tried.count < 8 {
            let port = Int.random(in: 30000...32700)  // below the ephemeral ports (32768-), above moto's
            tried.append(port)
            let stats = directory + "/proxy-\(port).json"
            let p = Process()
            p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
            p.arguments = ["python3", S3TestServer.packageRoot + "/scripts/s3/fault-proxy.py", String(port), String(upstreamPort), stats,
                           "--faults", String(faults), "--seed", String(seed)]
            p.standardOutput = FileHandle(forWritingAtPath: "/dev/null")
            try p.run()
            let deadline = monotonicSeconds() + 20
            while monotonicSeconds() < deadline && p.isRunning && !FileManager.default.fileExists(atPath: stats) { usleep(50_000) }
            if p.isRunning, FileManager.default.fileExists(atPath: stats) {
                statsFile = stats
                endpoint = "http://127.0.0.1:\(port)"
                process = p
                return
            }
            if p.isRunning { kill(p.processIdentifier, SIGKILL) }
            p.waitUntilExit()
        }
        throw WaybackError(.io, "the fault proxy did not start on any of the ports \(tried)")
    }

    /// What the proxy did so far: requests, forwarded, error, delay, reset_before, reset_during.
    public var stats: [String: Int] {
        guard let data = FileManager.default.contents(atPath: statsFile),
              let json = try? JSONSerialization.jsonObject(with: data) as? [String: Int] else { return [:] }
        return json
    }

    public func stop() {
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        process.waitUntilExit()
    }
}
