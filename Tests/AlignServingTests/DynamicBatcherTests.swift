import AlignServing
import AlignTestSupport
import Synchronization
import Testing

@Suite("Dynamic batcher")
struct DynamicBatcherTests {
  final class Calls: Sendable {
    let sizes = Mutex<[Int]>([])
    func record(_ n: Int) { sizes.withLock { $0.append(n) } }
    var all: [Int] { sizes.withLock { $0 } }
  }

  @Test func concurrentRequestsShareOneCallAndGetTheirOwnResults() async throws {
    let calls = Calls()
    let batcher = DynamicBatcher<Int, Int>(configuration: .init(maxBatchSize: 8, maxDelay: .milliseconds(50))) {
      inputs in
      calls.record(inputs.count)
      return inputs.map { $0 * 10 }
    }
    let results = try await withThrowingTaskGroup(of: (Int, Int).self) { group in
      for i in 0..<8 { group.addTask { (i, try await batcher.submit(i)) } }
      var all: [Int: Int] = [:]
      for try await (i, r) in group { all[i] = r }
      return all
    }
    #expect(results == Dictionary(uniqueKeysWithValues: (0..<8).map { ($0, $0 * 10) }))
    #expect(calls.all.reduce(0, +) == 8)
    #expect(calls.all.count < 8, "eight concurrent requests must not take eight calls: \(calls.all)")
    #expect(batcher.stats.largestBatch > 1)
  }

  @Test(.timeLimit(.minutes(20)))
  func aLoneRequestRunsAfterTheDelay() async throws {
    let batcher = DynamicBatcher<String, Int>(configuration: .init(maxBatchSize: 100, maxDelay: .milliseconds(20))) {
      $0.map(\.count)
    }
    // A batch that never fills still runs once its first request has waited maxDelay.
    let result = try await batcher.submit("abc")
    #expect(result == 3)
    #expect(batcher.stats.batches == 1)
  }

  @Test func batchesNeverExceedTheMaximumSize() async throws {
    let calls = Calls()
    let batcher = DynamicBatcher<Int, Int>(configuration: .init(maxBatchSize: 3, maxDelay: .milliseconds(30))) {
      inputs in
      calls.record(inputs.count)
      try await Task.sleep(for: .milliseconds(10))
      return inputs
    }
    _ = try await withThrowingTaskGroup(of: Int.self) { group in
      for i in 0..<10 { group.addTask { try await batcher.submit(i) } }
      return try await group.reduce(0, +)
    }
    #expect(calls.all.allSatisfy { $0 <= 3 })
    #expect(calls.all.reduce(0, +) == 10)
  }

  @Test func aFullQueueRefusesAtOnceAndErrorsReachEveryRequestOfTheBatch() async throws {
    struct Boom: Error {}
    let batcher = DynamicBatcher<Int, Int>(
      configuration: .init(maxBatchSize: 10, maxDelay: .milliseconds(200), queueCapacity: 2)
    ) { _ in throw Boom() }
    let outcomes = await withTaskGroup(of: String.self) { group in
      for i in 0..<4 {
        group.addTask {
          do {
            _ = try await batcher.submit(i)
            return "ok"
          } catch DynamicBatcherError.queueFull(let queue, let capacity, let retryAfter) {
            return queue == "batch" && capacity == 2 && retryAfter > .zero ? "full" : "other"
          } catch {
            return error is Boom ? "boom" : "other"
          }
        }
      }
      var all: [String] = []
      for await outcome in group { all.append(outcome) }
      return all.sorted()
    }
    #expect(outcomes == ["boom", "boom", "full", "full"])
  }

  // MARK: Serving promises: priority, deadline, cancellation

  /// A batcher whose batches wait for `gate` to open, so a queue builds up behind the first batch.
  final class Gate: Sendable {
    let opened = Locked(false)
    func open() { opened.withLock { $0 = true } }
    func wait() async {
      while !opened.value { try? await Task.sleep(for: .milliseconds(2)) }
    }
  }

  static func waitUntil(_ condition: () -> Bool) async throws {
    // Generous: synchronous engine tests in parallel suites can hold the cooperative pool's threads
    // for a long time on 2 cores (seen at 30 s under load). The wait ends as soon as it holds.
    let deadline = ContinuousClock.now + .seconds(120)
    while !condition() {
      guard ContinuousClock.now < deadline else { throw CancellationError() }
      try await Task.sleep(for: .milliseconds(2))
    }
  }

  @Test("a HIGH-priority request overtakes a queue of LOW ones")
  func priorityOrdersTheQueue() async throws {
    let gate = Gate()
    let order = Locked<[String]>([])
    let batcher = DynamicBatcher<String, String>(configuration: .init(maxBatchSize: 1, maxDelay: .zero)) { inputs in
      await gate.wait()
      order.withLock { $0 += inputs }
      return inputs
    }
    try await withThrowingTaskGroup(of: Void.self) { group in
      // The first request occupies the batcher; the LOW ones queue behind it, then one HIGH.
      group.addTask { _ = try await batcher.submit("first") }
      try await Self.waitUntil { batcher.stats.batches == 1 }
      for i in 0..<5 {
        group.addTask { _ = try await batcher.submit("low\(i)", scheduling: .init(priority: .low)) }
      }
      try await Self.waitUntil { batcher.queued == 5 }
      group.addTask { _ = try await batcher.submit("high", scheduling: .init(priority: .high)) }
      try await Self.waitUntil { batcher.queued == 6 }
      gate.open()
      try await group.waitForAll()
    }
    let processed = order.value
    #expect(processed.first == "first")
    #expect(processed.dropFirst().first == "high", "\(processed)")
    #expect(processed.count == 7)
  }

  @Test("a request whose deadline passes while queued ends with deadlineExceeded and is never processed")
  func deadlineDropsQueuedWork() async throws {
    let gate = Gate()
    let processed = Locked<[Int]>([])
    let batcher = DynamicBatcher<Int, Int>(configuration: .init(maxBatchSize: 1, maxDelay: .zero, name: "reward")) {
      inputs in
      await gate.wait()
      processed.withLock { $0 += inputs }
      return inputs
    }
    async let first = batcher.submit(1)
    try await Self.waitUntil { batcher.stats.batches == 1 }
    // The gate is still closed: only the deadline can end this wait.
    let error = await #expect(throws: DynamicBatcherError.self) {
      try await batcher.submit(2, scheduling: .init(deadline: .now + .milliseconds(50)))
    }
    #expect(error == .deadlineExceeded(queue: "reward"))
    #expect(batcher.queued == 0)
    #expect(batcher.stats.expired == 1)
    gate.open()
    _ = try await first
    #expect(processed.value == [1], "the expired request's work was dropped")
    #expect(batcher.stats.items == 1)
  }

  @Test("a deadline that passes while the batch runs ends the request at once; the batch's result is discarded")
  func deadlineEndsARunningRequest() async throws {
    let gate = Gate()
    let batcher = DynamicBatcher<Int, Int>(configuration: .init(maxBatchSize: 4, maxDelay: .zero)) { inputs in
      await gate.wait()
      return inputs
    }
    // The batch waits for the gate, which opens only afterwards: the deadline ended the request.
    await #expect(throws: DynamicBatcherError.deadlineExceeded(queue: "batch")) {
      try await batcher.submit(7, scheduling: .init(deadline: .now + .milliseconds(50)))
    }
    gate.open()
    // The batcher still works after the discarded result.
    #expect(try await batcher.submit(8) == 8)
  }

  @Test("a past deadline is refused before queueing")
  func pastDeadline() async throws {
    let batcher = DynamicBatcher<Int, Int>(configuration: .init()) { $0 }
    await #expect(throws: DynamicBatcherError.deadlineExceeded(queue: "batch")) {
      try await batcher.submit(1, scheduling: .init(deadline: .now - .milliseconds(1)))
    }
    #expect(batcher.stats.items == 0)
  }

  @Test("cancelling the caller's task drops its queued work")
  func cancellationDropsQueuedWork() async throws {
    let gate = Gate()
    let processed = Locked<[Int]>([])
    let batcher = DynamicBatcher<Int, Int>(configuration: .init(maxBatchSize: 1, maxDelay: .zero)) { inputs in
      await gate.wait()
      processed.withLock { $0 += inputs }
      return inputs
    }
    async let first = batcher.submit(1)
    try await Self.waitUntil { batcher.stats.batches == 1 }
    let queued = Task { try await batcher.submit(2) }
    try await Self.waitUntil { batcher.queued == 1 }
    queued.cancel()
    await #expect(throws: CancellationError.self) { try await queued.value }
    #expect(batcher.queued == 0)
    #expect(batcher.stats.cancelled == 1)
    gate.open()
    _ = try await first
    #expect(processed.value == [1])
  }

  @Test("the current request's scheduling reaches the batcher without being passed along")
  func taskLocalScheduling() async throws {
    let gate = Gate()
    let batcher = DynamicBatcher<Int, Int>(configuration: .init(maxBatchSize: 1, maxDelay: .zero)) { inputs in
      await gate.wait()
      return inputs
    }
    async let first = batcher.submit(1)
    try await Self.waitUntil { batcher.stats.batches == 1 }
    await #expect(throws: DynamicBatcherError.self) {
      try await RequestScheduling(deadline: .now + .milliseconds(30)).run { try await batcher.submit(2) }
    }
    gate.open()
    _ = try await first
    #expect(batcher.stats.expired == 1)
  }
}
