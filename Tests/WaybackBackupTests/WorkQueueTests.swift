import Synchronization
import Testing
@testable import WaybackBackup

@Suite struct WorkQueueTests {
    static func item(_ path: String, _ size: Int64) -> DataDirectoryScan.FileItem {
        DataDirectoryScan.FileItem(path: path, absolutePath: "/pgdata/" + path, size: size, mode: 0o600, mtime: 0)
    }

    @Test("files go largest first and pg_control last; readsDone runs once, when the last of the workers finds nothing left")
    func readsDoneAfterEveryWorker() {
        let calls = Atomic<Int>(0)
        let queue = WorkQueue([Self.item("global/pg_control", 8192), Self.item("base/5/1", 10), Self.item("base/5/2", 99)], workers: 2,
                              readsDone: { calls.add(1, ordering: .relaxed) })
        #expect(queue.next(worker: 0)?.path == "base/5/2")
        #expect(queue.next(worker: 1)?.path == "base/5/1")
        #expect(queue.next(worker: 0)?.path == "global/pg_control")
        // Worker 1 is done; worker 0 is still reading pg_control.
        #expect(queue.next(worker: 1) == nil)
        #expect(queue.next(worker: 1) == nil)
        #expect(calls.load(ordering: .relaxed) == 0)
        #expect(queue.next(worker: 0) == nil)
        #expect(calls.load(ordering: .relaxed) == 1)
        #expect(queue.next(worker: 0) == nil)
        #expect(calls.load(ordering: .relaxed) == 1)
    }
}
