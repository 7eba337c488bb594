import AlignServing
import AlignStore
import Foundation
import Logging
import Metrics
import ServiceLifecycle
import Synchronization

/// Settings of the generation log (config keys `generation_log*`).
public struct GenerationLogSettings: Sendable, Equatable {
  /// Record answered generations at all.
  public var enabled = true
  /// Share of requests recorded, 0...1 (decided per request).
  public var sampleRate = 1.0
  /// Remove entries older than this many days (0 = keep whatever their age).
  public var retentionDays = 30.0
  /// Keep at most this many entries (0 = no limit).
  public var retentionRows = 1_000_000
  /// Replace PII spans the rules scanner finds with `[REDACTED:<kind>]` (token ids and logprobs
  /// of a redacted completion are then not kept: they would spell the PII out).
  public var redactPII = false
  /// Most requests waiting to be written; beyond it new ones are dropped (and counted).
  public var queueCapacity = 4096
  /// Most requests written in one transaction.
  public var batchSize = 256
  /// Longest a recorded request waits before its batch is written.
  public var flushInterval: Duration = .milliseconds(200)
  /// How often the pruner runs.
  public var pruneInterval: Duration = .seconds(600)

  public init() {}
}

/// The generation log's writer: takes records from the request path without waiting and writes
/// them to the store in batches on its own task.
///
/// `record` only appends to a bounded in-memory queue under a lock: nothing on the request's
/// path waits for the database, and a full queue drops the record (counted and logged) rather
/// than slowing generation. `run` writes batches every `flushInterval` (sooner once a batch is
/// full), prunes past the retention every `pruneInterval`, and on graceful shutdown writes what
/// is still queued. A store failure loses that batch (counted, logged) and never reaches a
/// client. It is a `Service` in the server's group, listed before the listeners so it stops
/// after them and records their last answers.
public final class GenerationLogWriter: GenerationRecorder, Service {
  let store: any GenerationLogStore
  let settings: GenerationLogSettings
  let logger: Logger
  /// The clock for created-at stamps and retention (Unix ms); tests replace it.
  let now: @Sendable () -> Int64

  private struct Queue {
    var pending: [GenerationRecord] = []
    /// Batches taken but not yet written.
    var inFlight = 0
    /// Drops since the last warning (warnings are rate-limited to one per flush).
    var droppedSinceWarning = 0
  }

  private let queue = Mutex(Queue())
  private let wakeups: AsyncStream<Void>
  private let wake: AsyncStream<Void>.Continuation
  private let counters = Counters()

  /// Totals since start, for status and tests.
  public struct Totals: Sendable, Equatable {
    public var written: Int
    public var dropped: Int
    public var failed: Int
    public var sampledOut: Int
    public var pruned: Int
  }

  public var totals: Totals { counters.totals }

  /// Creates a writer; call `run` (it is a Service) to start writing.
  public init(
    store: any GenerationLogStore, settings: GenerationLogSettings, logger: Logger,
    now: @escaping @Sendable () -> Int64 = { Int64((Date().timeIntervalSince1970 * 1000).rounded(.down)) }
  ) {
    self.store = store
    self.settings = settings
    self.logger = logger
    self.now = now
    (wakeups, wake) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
  }

  // MARK: GenerationRecorder

  public func record(_ record: GenerationRecord) {
    guard settings.enabled else { return }
    if settings.sampleRate < 1, Double.random(in: 0..<1) >= settings.sampleRate {
      counters.add(\.sampledOut, outcome: "sampled_out")
      return
    }
    let (accepted, full) = queue.withLock { queue -> (Bool, Bool) in
      guard queue.pending.count < settings.queueCapacity else {
        queue.droppedSinceWarning += 1
        return (false, true)
      }
      queue.pending.append(record)
      return (true, queue.pending.count >= settings.batchSize)
    }
    if !accepted {
      counters.add(\.dropped, outcome: "dropped", count: record.result.completions.count)
    }
    if full { wake.yield() }
  }

  // MARK: Service

  public func run() async throws {
    let clock = ContinuousClock()
    var nextPrune = clock.now
    await withGracefulShutdownHandler {
      // Ticks: the wake-up stream plus a timer, so a half-full batch waits at most flushInterval.
      await withTaskGroup(of: Void.self) { group in
        group.addTask { [wake, settings] in
          while (try? await Task.sleep(for: settings.flushInterval)) != nil { wake.yield() }
        }
        for await _ in wakeups {
          await flush()
          if clock.now >= nextPrune {
            await prune()
            nextPrune = clock.now + settings.pruneInterval
          }
        }
        group.cancelAll()
      }
    } onGracefulShutdown: { [wake] in
      wake.finish()
    }
    // Shutdown: whatever the listeners recorded last.
    await flush()
  }

  /// Writes everything queued now and waits for batches already being written, so an entry
  /// recorded before the call can be read from the store once it returns (unless its write
  /// failed). Feedback on a just-answered completion calls this when the store lacks the id.
  public func flush() async {
    while true {
      if let batch = take() {
        await write(batch)
        continue
      }
      let busy = queue.withLock { $0.inFlight > 0 }
      if !busy { return }
      try? await Task.sleep(for: .milliseconds(5))
    }
  }

  private func take() -> [GenerationRecord]? {
    queue.withLock { queue in
      guard !queue.pending.isEmpty else { return nil }
      let batch = Array(queue.pending.prefix(settings.batchSize))
      queue.pending.removeFirst(batch.count)
      queue.inFlight += 1
      return batch
    }
  }

  private func write(_ batch: [GenerationRecord]) async {
    defer { queue.withLock { $0.inFlight -= 1 } }
    let dropped = queue.withLock { queue in
      defer { queue.droppedSinceWarning = 0 }
      return queue.droppedSinceWarning
    }
    if dropped > 0 {
      logger.warning(
        "generation log queue full: requests not logged",
        metadata: ["dropped": "\(dropped)", "capacity": "\(settings.queueCapacity)"])
    }
    let createdAt = now()
    let entries = batch.flatMap { GenerationLogMapping.entries($0, redactPII: settings.redactPII, createdAt: createdAt) }
    do {
      try await store.appendGenerations(entries)
      counters.add(\.written, outcome: "written", count: entries.count)
    } catch {
      counters.add(\.failed, outcome: "failed", count: entries.count)
      logger.error(
        "generation log: a batch could not be written (generation is not affected)",
        metadata: ["completions": "\(entries.count)", "error": "\(error)"])
    }
  }

  /// Removes entries past the retention (age and row count).
  func prune() async {
    var retention = GenerationLogRetention()
    if settings.retentionDays > 0 {
      retention.olderThanUnixMs = now() - Int64(settings.retentionDays * 86_400_000)
    }
    if settings.retentionRows > 0 { retention.maxRows = settings.retentionRows }
    guard retention.olderThanUnixMs != nil || retention.maxRows != nil else { return }
    do {
      let removed = try await store.pruneGenerations(retention)
      if removed > 0 {
        counters.addPruned(removed)
        logger.info("generation log pruned", metadata: ["removed": "\(removed)"])
      }
    } catch {
      logger.error("generation log: pruning failed", metadata: ["error": "\(error)"])
    }
  }
}

/// The writer's totals, also exported as metrics.
private final class Counters: Sendable {
  private let values = Mutex(GenerationLogWriter.Totals(written: 0, dropped: 0, failed: 0, sampledOut: 0, pruned: 0))

  var totals: GenerationLogWriter.Totals { values.withLock { $0 } }

  func add(_ field: WritableKeyPath<GenerationLogWriter.Totals, Int> & Sendable, outcome: String, count: Int = 1) {
    values.withLock { $0[keyPath: field] += count }
    Counter(label: MetricNames.generationLogRecords, dimensions: [("outcome", outcome)]).increment(by: count)
  }

  func addPruned(_ count: Int) {
    values.withLock { $0.pruned += count }
    Counter(label: MetricNames.generationLogPruned).increment(by: count)
  }
}
