import Foundation
import Synchronization
import Testing
import WaybackCore
@testable import WaybackPostgres

/// The process runner against real child processes.
@Suite struct CommandTests {
    static func temporaryFile() -> String { NSTemporaryDirectory() + "wayback-cmd-\(UUID().uuidString)" }

    /// Whether `pid` is gone and reaped (a zombie still answers kill(pid, 0)).
    static func reaped(_ pid: pid_t, within seconds: Double = 5) -> Bool {
        let until = monotonicSeconds() + seconds
        while monotonicSeconds() < until {
            if kill(pid, 0) != 0 && errno == ESRCH { return true }
            usleep(10_000)
        }
        return false
    }

    @Test func streamsAllOfALargeOutputInBoundedChunks() async throws {
        // 40 MiB of output, handed over in chunks of at most 1 MiB.
        var hasher = SHA256Hasher()
        let maxChunk = Mutex(0), chunks = Mutex(0)
        let r = try await Command.stream(["/bin/sh", "-c", "head -c 41943040 /dev/zero | tr '\\0' 'w'; echo bye >&2"]) { bytes in
            maxChunk.withLock { $0 = max($0, bytes.count) }
            chunks.withLock { $0 += 1 }
            hasher.update(bytes)
        }
        #expect(r.status == 0 && r.bytes == 40 << 20 && r.stderr == "bye\n")
        #expect(maxChunk.withLock { $0 } <= 1 << 20 && chunks.withLock { $0 } >= 40)
        var expected = SHA256Hasher()
        expected.update([UInt8](repeating: UInt8(ascii: "w"), count: 40 << 20))
        #expect(hasher.finalizeHex() == expected.finalizeHex(), "every byte, in order")
    }

    /// A slow sink holds the child back: its output waits in the pipe, not in memory. Without
    /// back-pressure the child would write its 64 MiB and end while the sink still sleeps.
    @Test func aSlowSinkHoldsTheChildBack() async throws {
        let pidFile = Self.temporaryFile()
        defer { try? FileManager.default.removeItem(atPath: pidFile) }
        let running = Mutex<Bool?>(nil)
        _ = try await Command.stream(["/bin/sh", "-c", "echo $$ > \(pidFile); exec head -c 67108864 /dev/zero"], chunkSize: 1 << 20) { _ in
            if running.withLock({ $0 }) == nil {
                try await Task.sleep(nanoseconds: 700_000_000)
                let pid = pid_t((try? String(contentsOfFile: pidFile, encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines) ?? "") ?? 0
                running.withLock { $0 = pid > 0 && kill(pid, 0) == 0 && !Self.isZombie(pid) }
            }
        }
        #expect(running.withLock { $0 } == true, "the child finished while the sink had taken one chunk")
    }

    static func isZombie(_ pid: pid_t) -> Bool {
        ((try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8)) ?? "").contains(") Z ")
    }

    @Test func aFailingSinkEndsTheChildAndItsErrorComesBack() async throws {
        let pidFile = Self.temporaryFile()
        defer { try? FileManager.default.removeItem(atPath: pidFile) }
        struct Full: Error {}
        await #expect(throws: Full.self) {
            _ = try await Command.stream(["/bin/sh", "-c", "echo $$ > \(pidFile); exec yes"]) { _ in throw Full() }
        }
        let pid = try #require(pid_t(String(contentsOfFile: pidFile, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)))
        #expect(Self.reaped(pid, within: 0.5), "the child outlived the call, or was left a zombie")
    }

    @Test func cancellingTheTaskEndsASilentChild() async throws {
        let pidFile = Self.temporaryFile()
        defer { try? FileManager.default.removeItem(atPath: pidFile) }
        let task = Task { try await Command.stream(["/bin/sh", "-c", "echo $$ > \(pidFile); exec sleep 120"]) { _ in } }
        var pid: pid_t = 0
        // Long: under the full suite the task may wait a while for a cooperative thread to start.
        let until = monotonicSeconds() + 300
        while pid == 0 && monotonicSeconds() < until {
            pid = pid_t((try? String(contentsOfFile: pidFile, encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines) ?? "") ?? 0
            try await Task.sleep(nanoseconds: 20_000_000)
        }
        task.cancel()
        await #expect(throws: CancellationError.self) { _ = try await task.value }
        #expect(pid > 0 && Self.reaped(pid, within: 5), "the child outlived its cancelled task")
    }

    @Test func aFailingChildIsAnErrorNamingItAndItsLastWords() async throws {
        do {
            _ = try await Command.stream(["/bin/sh", "-c", "echo partial; echo 'pg_dump: error: permission denied for table secrets' >&2; exit 3"]) { _ in }
            Issue.record("a failing child was taken for a success")
        } catch let e as WaybackError {
            #expect(e.code == .io && e.message.contains("sh failed with status 3") && e.message.contains("permission denied"))
        }
        let r = try await Command.stream(["/bin/sh", "-c", "exit 4"], check: false) { _ in }
        #expect(r.status == 4 && r.bytes == 0)
    }

    /// A child spawned from a cooperative thread (which blocks most signals) starts with none
    /// blocked and none ignored: `pgbench -T` needs SIGALRM, and a child must obey SIGTERM.
    @Test func childrenStartWithNoSignalBlockedOrIgnored() async throws {
        let r = try await Task.detached {
            try Command.run(["/bin/sh", "-c", "grep -E '^Sig(Blk|Ign)' /proc/self/status"])
        }.value
        // The standard signals (1-31); glibc keeps its two internal real-time signals to itself.
        func mask(_ field: String, _ text: String) -> UInt64? {
            text.split(separator: "\n").first { $0.hasPrefix(field + ":") }.flatMap { UInt64($0.split(separator: "\t").last ?? "", radix: 16) }
        }
        #expect(mask("SigBlk", r.stdout) == 0, "\(r.stdout)")
        #expect(mask("SigIgn", r.stdout).map { $0 & 0x7FFF_FFFF } == 0, "\(r.stdout)")
        let streamed = Mutex([UInt8]())
        _ = try await Command.stream(["/bin/sh", "-c", "grep -E '^SigBlk' /proc/self/status"]) { bytes in streamed.withLock { $0 += bytes } }
        #expect(String(decoding: streamed.withLock { $0 }, as: UTF8.self).contains("SigBlk:\t0000000000000000"))
    }

    @Test func detachedHelpersAreReaped() throws {
        let pid = try Command.spawnDetached(["/bin/true"])
        #expect(Self.reaped(pid), "an ended detached child stayed a zombie")
    }

    @Test func executeRunsOffTheCooperativePool() async throws {
        let r = try await Command.execute(["/bin/sh", "-c", "cat; echo err >&2"], input: "hello")
        #expect(r.stdout == "hello" && r.stderr == "err\n" && r.status == 0)
    }

    @Test func statementNamesCarryNoValues() {
        #expect(PostgresSession.statementName("SELECT pg_backup_start('wayback 20261206', true)") == "pg_backup_start")
        #expect(PostgresSession.statementName("SELECT 'current_setting(x)' || current_setting('server_version_num')") == "current_setting")
        #expect(PostgresSession.statementName("SHOW data_directory") == "SHOW DATA_DIRECTORY")
        #expect(!PostgresSession.statementName("INSERT INTO t VALUES ('s3cret')").contains("s3cret"))
    }
}
