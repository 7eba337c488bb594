import AlignEngine
import AlignServing
import AlignTestSupport
import Foundation
import Synchronization
import Testing

/// A snapshot that counts its instances, so a test can tell when a replaced one was freed.
final class CountedSnapshot: ServingSnapshot {
  static let live = Mutex(0)
  let version: String
  let sizeBytes: UInt64 = 1
  private let stops = Mutex(0)

  init(_ version: String) {
    self.version = version
    Self.live.withLock { $0 += 1 }
  }

  deinit { Self.live.withLock { $0 -= 1 } }

  func stop() { stops.withLock { $0 += 1 } }

  var stopCount: Int { stops.withLock { $0 } }
}

/// A weak reference, to watch an object be freed.
struct WeakReference: @unchecked Sendable {
  // Safety: only read (a weak load is atomic); never reassigned after init.
  weak var object: AnyObject?
  let label: String

  init(_ object: AnyObject, _ label: String) {
    self.object = object
    self.label = label
  }
}

/// Waits up to `seconds` until every reference is nil; returns the labels still alive.
func stillAlive(_ references: [WeakReference], within seconds: Double = 5) async -> [String] {
  let deadline = ContinuousClock.now + .milliseconds(Int(seconds * 1000))
  while ContinuousClock.now < deadline {
    if references.allSatisfy({ $0.object == nil }) { return [] }
    try? await Task.sleep(for: .milliseconds(20))
  }
  return references.filter { $0.object != nil }.map(\.label)
}

/// Replaced snapshots give their memory back: they are freed when their last request ends, and
/// nothing (the role slots, the engine loop's thread, the judge, the teacher-forcing batcher)
/// keeps one alive after that.
@Suite("Snapshot retirement frees memory", .serialized)
struct SnapshotRetirementTests {
  static let modelPath = TestModels.defaultPolicy
  static var modelPresent: Bool { FileManager.default.fileExists(atPath: modelPath) }

  @Test("a snapshot replaced while requests hold it is freed when the last one ends, not at the next swap")
  func replacedUnderLoadIsFreedAtLastLease() async {
    let slots = RoleSlots<CountedSnapshot>()
    var watched: [WeakReference] = []
    var lease: SnapshotLease<CountedSnapshot>?
    do {
      let old = CountedSnapshot("a@1")
      watched.append(WeakReference(old, "a@1"))
      slots.activate(old)
      lease = slots.lease()
      slots.activate(CountedSnapshot("b@2"))
      #expect(old.stopCount == 0, "a request still holds the replaced snapshot")
      #expect(slots.loaded.map(\.version) == ["b@2", "a@1"])
    }
    #expect(watched[0].object != nil)
    lease = nil
    #expect(await stillAlive(watched) == [], "the replaced snapshot outlived its last lease")
    #expect(slots.loaded.map(\.version) == ["b@2"])
    #expect(slots.drainingCount == 0)
    _ = lease
  }

  @Test("ten swaps with leases held across each leave only the active snapshot alive")
  func manySwapsLeaveOneSnapshot() async {
    let slots = RoleSlots<CountedSnapshot>()
    let before = CountedSnapshot.live.withLock { $0 }
    var watched: [WeakReference] = []
    do {
      var leases: [SnapshotLease<CountedSnapshot>] = []
      for i in 0..<10 {
        let snapshot = CountedSnapshot("v@\(i)")
        if i < 9 { watched.append(WeakReference(snapshot, snapshot.version)) }
        slots.activate(snapshot)
        if let lease = slots.lease() { leases.append(lease) }
        if i % 3 == 0 { leases.removeAll() }  // some requests end between swaps, some after the last
      }
      leases.removeAll()
    }
    #expect(await stillAlive(watched) == [])
    #expect(CountedSnapshot.live.withLock { $0 } - before == 1, "only the active snapshot is left")
    #expect(slots.assignment.activeVersion == "v@9")
  }

  @Test(
    "an engine loop nobody holds is freed with its KV cache, even without shutdown()",
    .enabled(if: modelPresent, "the default model is not fetched (scripts/fetch-models.sh)"))
  func unreferencedLoopIsFreed() async throws {
    var watched: [WeakReference] = []
    do {
      let model = try PolicyModel(ggufPath: Self.modelPath, version: "smollm2-test")
      let loop = try GenerationLoop(
        model: model, configuration: .init(maxRunningSequences: 2, kvCapacityTokens: 256))
      _ = try await loop.teacherForce([[1, 2, 3]])
      watched = [WeakReference(loop, "loop"), WeakReference(model, "model"), WeakReference(model.engine, "engine")]
    }
    #expect(await stillAlive(watched) == [], "the loop's own thread kept it alive")
  }

  @Test(
    "policy swaps through ModelHost free each replaced snapshot, its loop, model, engine and judge",
    .enabled(if: modelPresent, "the default model is not fetched (scripts/fetch-models.sh)"))
  func policySwapsFreeReplacedSnapshots() async throws {
    let host = ModelHost(scheduler: .init(maxRunningSequences: 2, kvCapacityTokens: 256))
    defer { host.shutdown() }
    try await host.loadPolicy(path: Self.modelPath, version: "p@0")
    var watched: [WeakReference] = []
    for i in 1...3 {
      var lease = try #require(host.leasePolicy())
      do {
        // Use what a serving snapshot holds: the teacher-forcing batcher and the generative judge.
        let current = lease.snapshot
        _ = try await current.teacherForcing.submit(TeacherForcingRequest(sequences: [[1, 2, 3]], topLogprobs: 1))
        let judge = try current.judge()
        watched += [
          WeakReference(current, "\(current.version) snapshot"), WeakReference(current.loop, "\(current.version) loop"),
          WeakReference(current.model, "\(current.version) model"),
          WeakReference(current.model.engine, "\(current.version) engine"),
          WeakReference(judge, "\(current.version) judge"),
        ]
      }
      // Replaced while a request still holds it; the request ends after the swap.
      host.policies.activate(try await host.loadPolicySnapshot(path: Self.modelPath, version: "p@\(i)"))
      #expect(host.policies.drainingCount == 1)
      lease = try #require(host.leasePolicy())
      #expect(lease.snapshot.version == "p@\(i)")
    }
    #expect(await stillAlive(watched) == [], "replaced snapshots outlived their requests")
    #expect(host.policies.loaded.map(\.version) == ["p@3"])
  }
}
