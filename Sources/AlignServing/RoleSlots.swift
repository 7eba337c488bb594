import Foundation
import Synchronization

/// A loaded, immutable model checkpoint that serves one role (policy, reward or safety).
///
/// Snapshots are never changed once published. A swap publishes another snapshot; requests keep
/// the one they were admitted with (through a ``SnapshotLease``), and the replaced snapshot is
/// stopped when its last lease ends.
public protocol ServingSnapshot: AnyObject, Sendable {
  /// "name@<first 12 hex digits of the checkpoint's SHA-256>".
  var version: String { get }
  /// Bytes of model files this snapshot holds.
  var sizeBytes: UInt64 { get }
  /// Frees engine threads and caches. Called once, after the last request that used it ended;
  /// may block until in-progress work finishes.
  func stop()
}

/// Counts the requests holding a snapshot; stops it once it is retired and the count is zero.
final class TrackedSnapshot<Snapshot: ServingSnapshot>: Sendable {
  let snapshot: Snapshot
  private let state = Mutex<(leases: Int, retired: Bool, stopped: Bool)>((0, false, false))

  init(_ snapshot: Snapshot) { self.snapshot = snapshot }

  func acquire() { state.withLock { $0.leases += 1 } }

  func release() {
    let stop = state.withLock { state -> Bool in
      state.leases -= 1
      guard state.retired, state.leases == 0, !state.stopped else { return false }
      state.stopped = true
      return true
    }
    if stop { Self.stopInBackground(snapshot) }
  }

  /// No new leases will be taken; stop now if none is held.
  func retire() {
    let stop = state.withLock { state -> Bool in
      state.retired = true
      guard state.leases == 0, !state.stopped else { return false }
      state.stopped = true
      return true
    }
    if stop { Self.stopInBackground(snapshot) }
  }

  var leases: Int { state.withLock { $0.leases } }

  /// `stop()` may wait for an engine thread; never make the releasing request wait for it.
  private static func stopInBackground(_ snapshot: Snapshot) {
    let retired = RetiredSnapshot(snapshot)
    let thread = Thread {
      ServingThreads.nameCurrent("alignd-retire")
      retired.stopAndFree()
    }
    thread.start()
  }
}

/// A retired snapshot on its way out: stopped, freed, and its memory handed back to the system.
///
/// The heap allocator keeps freed memory for reuse instead of returning it, so without a trim
/// every swap would leave the replaced snapshot's weights and buffers counted in the process's
/// resident memory (hundreds of MB per policy, and more after swaps under load, when several
/// snapshots were alive at once).
final class RetiredSnapshot<Snapshot: ServingSnapshot>: @unchecked Sendable {
  // Safety: `snapshot` is touched only by the one retire thread after init.
  private var snapshot: Snapshot?

  init(_ snapshot: Snapshot) { self.snapshot = snapshot }

  /// Stops the snapshot, drops it once this is the last reference (the lease whose end triggered
  /// the stop may still be finishing; anything else holding it longer frees it later itself), then
  /// returns the freed memory to the system.
  func stopAndFree() {
    snapshot?.stop()
    var waits = 0
    while waits < 100, snapshot != nil, !isKnownUniquelyReferenced(&snapshot) {
      Thread.sleep(forTimeInterval: 0.01)
      waits += 1
    }
    snapshot = nil
    ServingThreads.releaseFreedMemory()
  }
}

/// Process-level helpers of the serving threads.
enum ServingThreads {
  /// Returns free heap memory to the system: glibc keeps freed memory in its arenas for reuse,
  /// `malloc_trim` gives back the free pages. Looked up at run time (the Glibc module does not
  /// declare it; other C libraries do not have it, and then this does nothing).
  static func releaseFreedMemory() {
    _ = mallocTrim?(0)
  }

  private static let mallocTrim: (@convention(c) (Int) -> Int32)? = {
    guard let symbol = dlsym(dlopen(nil, RTLD_NOW), "malloc_trim") else { return nil }
    return unsafeBitCast(symbol, to: (@convention(c) (Int) -> Int32).self)
  }()

  /// Names the calling thread. `Thread.name` set before `start()` does not reach the kernel on
  /// Linux, so threads would show under their creator's name in `top -H` and /proc; set from the
  /// thread itself it does (the kernel keeps 15 bytes).
  static func nameCurrent(_ name: String) {
    Thread.current.name = name
  }
}

/// One request's hold on a snapshot: while it lives, the snapshot stays loaded even if a swap
/// replaced it. Keep it for the whole request (including a response stream).
public final class SnapshotLease<Snapshot: ServingSnapshot>: Sendable {
  public let snapshot: Snapshot
  /// True when the request was routed to the canary.
  public let isCanary: Bool
  private let tracked: TrackedSnapshot<Snapshot>

  init(_ tracked: TrackedSnapshot<Snapshot>, isCanary: Bool) {
    tracked.acquire()
    self.tracked = tracked
    self.snapshot = tracked.snapshot
    self.isCanary = isCanary
  }

  deinit { tracked.release() }
}

/// Which snapshots serve one role: the active one, and optionally a canary taking a percentage of
/// requests (sticky by routing key).
public struct RoleAssignment: Sendable, Equatable {
  public var activeVersion: String?
  public var canaryVersion: String?
  public var canaryPercent: Int
  public var previousVersion: String?

  public init(activeVersion: String? = nil, canaryVersion: String? = nil, canaryPercent: Int = 0, previousVersion: String? = nil) {
    self.activeVersion = activeVersion
    self.canaryVersion = canaryVersion
    self.canaryPercent = canaryPercent
    self.previousVersion = previousVersion
  }
}

/// The snapshots of one role and the atomic pointer flips between them.
public final class RoleSlots<Snapshot: ServingSnapshot>: Sendable {
  struct State {
    var active: TrackedSnapshot<Snapshot>?
    var canary: TrackedSnapshot<Snapshot>?
    var canaryPercent = 0
    var previousVersion: String?
    /// Replaced snapshots that still serve requests admitted before the swap. Held weakly: the
    /// requests' leases keep a replaced snapshot alive, and it must be freed when the last one
    /// ends, not when a later swap happens to prune this list.
    var draining: [Weak] = []
  }

  struct Weak {
    weak var tracked: TrackedSnapshot<Snapshot>?
  }

  private let state = Mutex(State())

  public init() {}

  /// Takes a lease on the snapshot that serves a request: the canary for `canaryPercent` percent
  /// of routing keys (the same key always lands on the same side; without a key the draw is
  /// random), the active snapshot otherwise. Nil when nothing is loaded.
  public func lease(routingKey: String? = nil) -> SnapshotLease<Snapshot>? {
    state.withLock { state in
      if let canary = state.canary, state.canaryPercent > 0 {
        let bucket = routingKey.map { Self.bucket($0) } ?? Int.random(in: 0..<100)
        if bucket < state.canaryPercent || state.active == nil {
          return SnapshotLease(canary, isCanary: true)
        }
      }
      return state.active.map { SnapshotLease($0, isCanary: false) }
    }
  }

  /// Leases on the active snapshot and the canary, when one serves (a comparison of the two);
  /// the canary alone stands in for a missing active one. Nil when nothing is loaded.
  public func leasePair() -> (SnapshotLease<Snapshot>, SnapshotLease<Snapshot>?)? {
    state.withLock { state in
      switch (state.active, state.canary) {
      case (let active?, let canary):
        return (SnapshotLease(active, isCanary: false), canary.map { SnapshotLease($0, isCanary: true) })
      case (nil, let canary?): return (SnapshotLease(canary, isCanary: true), nil)
      case (nil, nil): return nil
      }
    }
  }

  /// A stable bucket 0..<100 for a routing key (FNV-1a), so canary routing is sticky per key.
  public static func bucket(_ key: String) -> Int {
    var hash: UInt64 = 0xcbf2_9ce4_8422_2325
    for byte in key.utf8 {
      hash ^= UInt64(byte)
      hash &*= 0x0000_0100_0000_01b3
    }
    return Int(hash % 100)
  }

  public var active: Snapshot? { state.withLock { $0.active?.snapshot } }
  public var canary: Snapshot? { state.withLock { $0.canary?.snapshot } }

  public var assignment: RoleAssignment {
    state.withLock {
      RoleAssignment(
        activeVersion: $0.active?.snapshot.version, canaryVersion: $0.canary?.snapshot.version,
        canaryPercent: $0.canary == nil ? 0 : $0.canaryPercent, previousVersion: $0.previousVersion)
    }
  }

  /// Every loaded snapshot (active, canary, and replaced ones still finishing requests).
  public var loaded: [Snapshot] {
    state.withLock { state in
      Self.prune(&state)
      return [state.active, state.canary].compactMap { $0?.snapshot } + state.draining.compactMap { $0.tracked?.snapshot }
    }
  }

  /// Replaced snapshots still held by in-flight requests.
  public var drainingCount: Int {
    state.withLock { state in
      Self.prune(&state)
      return state.draining.count
    }
  }

  /// Makes `snapshot` serve all traffic. The replaced active snapshot and any canary are retired:
  /// they finish the requests they hold, then stop.
  public func activate(_ snapshot: Snapshot) {
    state.withLock { state in
      let old = [state.active, state.canary].compactMap { $0 }.filter { $0.snapshot !== snapshot }
      let keep = [state.active, state.canary].compactMap { $0 }.first { $0.snapshot === snapshot }
      if let previous = state.active?.snapshot, previous !== snapshot { state.previousVersion = previous.version }
      state.active = keep ?? TrackedSnapshot(snapshot)
      state.canary = nil
      state.canaryPercent = 0
      Self.retire(old, into: &state)
    }
  }

  /// Records the version a rollback returns to when none is known yet: at startup, the one the
  /// store remembers (activating the restored snapshot alone leaves it unset).
  public func restorePrevious(_ version: String?) {
    state.withLock { state in
      if state.previousVersion == nil, version != state.active?.snapshot.version { state.previousVersion = version }
    }
  }

  /// Routes `percent` (1...99) of requests to `snapshot`; a previous canary is retired.
  public func startCanary(_ snapshot: Snapshot, percent: Int) {
    state.withLock { state in
      if let old = state.canary, old.snapshot !== snapshot { Self.retire([old], into: &state) }
      if state.canary?.snapshot !== snapshot { state.canary = TrackedSnapshot(snapshot) }
      state.canaryPercent = min(99, max(1, percent))
    }
  }

  /// Makes the canary the active snapshot. Returns false when there is no canary.
  public func promoteCanary() -> Bool {
    state.withLock { state in
      guard let canary = state.canary else { return false }
      if let old = state.active {
        state.previousVersion = old.snapshot.version
        Self.retire([old], into: &state)
      }
      state.active = canary
      state.canary = nil
      state.canaryPercent = 0
      return true
    }
  }

  /// Sends all traffic back to the active snapshot. Returns the dropped canary's version.
  @discardableResult
  public func dropCanary() -> String? {
    state.withLock { state in
      guard let canary = state.canary else { return nil }
      state.canary = nil
      state.canaryPercent = 0
      Self.retire([canary], into: &state)
      return canary.snapshot.version
    }
  }

  /// Retires every snapshot (at shutdown).
  public func retireAll() {
    state.withLock { state in
      let all = [state.active, state.canary].compactMap { $0 }
      state.active = nil
      state.canary = nil
      Self.retire(all, into: &state)
    }
  }

  private static func retire(_ snapshots: [TrackedSnapshot<Snapshot>], into state: inout State) {
    for snapshot in snapshots {
      state.draining.append(Weak(tracked: snapshot))
      snapshot.retire()
    }
    prune(&state)
  }

  /// Forgets replaced snapshots that no request holds any more (freed, or stopping).
  private static func prune(_ state: inout State) {
    state.draining.removeAll { ($0.tracked?.leases ?? 0) == 0 }
  }
}
