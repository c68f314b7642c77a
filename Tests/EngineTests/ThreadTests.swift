import Foundation
import Platform
import Testing

@testable import Engine

@Suite("joinable thread")
struct ThreadTests {
    @Test func joinWaitsForTheBodyToEnd() throws {
        let state = Locked((started: false, ended: false))
        let t = try JoinableThread(name: "test-join") {
            state.withLock { $0.started = true }
            usleep(200_000)
            state.withLock { $0.ended = true }
        }
        t.join()
        #expect(state.withLock { $0.started && $0.ended })
        t.join()  // a second join returns at once
    }

    @Test func aThreadNeverJoinedIsDetachedAndItsBodyReleased() throws {
        final class Token: Sendable {}
        weak var weakToken: Token?
        let done = DispatchSemaphore(value: 0)
        do {
            let token = Token()
            weakToken = token
            _ = try JoinableThread(name: "test-detach") { [token] in
                _ = token
                done.signal()
            }
        }
        done.wait()
        // The body (and what it captured) is released when it returns, joined or not.
        var waited = 0
        while weakToken != nil && waited < 200 { usleep(5_000); waited += 1 }
        #expect(weakToken == nil)
    }
}
