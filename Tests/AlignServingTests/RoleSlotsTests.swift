import AlignServing
import Foundation
import Synchronization
import Testing

/// A snapshot that records when it is stopped (the real ones stop an engine loop).
final class RecordingSnapshot: ServingSnapshot {
  let version: String
  let sizeBytes: UInt64 = 10
  private let stops = Mutex(0)
  private let stopped = DispatchSemaphore(value: 0)

  init(_ version: String) { self.version = version }

  func stop() {
    stops.withLock { $0 += 1 }
    stopped.signal()
  }

  var stopCount: Int { stops.withLock { $0 } }

  /// Waits up to a second for the background stop.
  func waitStopped() -> Bool { stopped.wait(timeout: .now() + 1) == .success }
}

@Suite("RoleSlots: leases, swaps and canary routing")
struct RoleSlotsTests {
  @Test("a replaced snapshot stops only after its last lease ends")
  func retireAfterLastLease() {
    let slots = RoleSlots<RecordingSnapshot>()
    let old = RecordingSnapshot("a@1")
    slots.activate(old)
    var first: SnapshotLease<RecordingSnapshot>? = slots.lease()
    var second: SnapshotLease<RecordingSnapshot>? = slots.lease()
    #expect(first?.snapshot === old)

    let new = RecordingSnapshot("b@2")
    slots.activate(new)
    #expect(slots.lease()?.snapshot === new)
    #expect(slots.assignment == RoleAssignment(activeVersion: "b@2", previousVersion: "a@1"))
    #expect(slots.drainingCount == 1)
    #expect(old.stopCount == 0)

    first = nil
    #expect(old.stopCount == 0, "one request still holds the old snapshot")
    second = nil
    #expect(old.waitStopped())
    #expect(old.stopCount == 1)
    #expect(slots.drainingCount == 0)
    #expect(new.stopCount == 0)
    _ = (first, second)
  }

  @Test("an unleased replaced snapshot stops at once; re-activating the active one is a no-op")
  func retireUnused() {
    let slots = RoleSlots<RecordingSnapshot>()
    let old = RecordingSnapshot("a@1")
    slots.activate(old)
    slots.activate(old)
    #expect(old.stopCount == 0)
    #expect(slots.assignment.previousVersion == nil)
    slots.activate(RecordingSnapshot("b@2"))
    #expect(old.waitStopped())
  }

  @Test("a 25% canary takes about a quarter of keys, the same key always lands on the same side")
  func canaryRouting() throws {
    let slots = RoleSlots<RecordingSnapshot>()
    let stable = RecordingSnapshot("a@1")
    let candidate = RecordingSnapshot("b@2")
    slots.activate(stable)
    slots.startCanary(candidate, percent: 25)
    var canaryHits = 0
    for i in 0..<2000 {
      let lease = try #require(slots.lease(routingKey: "request-\(i)"))
      let again = try #require(slots.lease(routingKey: "request-\(i)"))
      #expect(lease.snapshot === again.snapshot)
      #expect(lease.isCanary == (lease.snapshot === candidate))
      if lease.isCanary { canaryHits += 1 }
    }
    #expect((400...600).contains(canaryHits), "canary took \(canaryHits) of 2000")
    #expect(slots.assignment == RoleAssignment(activeVersion: "a@1", canaryVersion: "b@2", canaryPercent: 25))

    // Rollback: everything returns to the active snapshot; the canary stops.
    #expect(slots.dropCanary() == "b@2")
    for i in 0..<200 { #expect(slots.lease(routingKey: "request-\(i)")?.snapshot === stable) }
    #expect(candidate.waitStopped())
  }

  @Test("promoting the canary makes it active and retires the old active snapshot")
  func promote() {
    let slots = RoleSlots<RecordingSnapshot>()
    let stable = RecordingSnapshot("a@1")
    let candidate = RecordingSnapshot("b@2")
    #expect(!slots.promoteCanary())
    slots.activate(stable)
    slots.startCanary(candidate, percent: 10)
    #expect(slots.promoteCanary())
    #expect(slots.assignment == RoleAssignment(activeVersion: "b@2", previousVersion: "a@1"))
    #expect(stable.waitStopped())
    #expect(candidate.stopCount == 0)
    #expect(slots.lease(routingKey: "x")?.snapshot === candidate)
  }
}
