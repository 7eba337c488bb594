import AlignServing
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
          } catch let error as DynamicBatcherError {
            return error == .queueFull(capacity: 2) ? "full" : "other"
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
}
