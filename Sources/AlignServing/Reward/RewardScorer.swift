import Dispatch
import Synchronization

/// Rewards for a chosen and a rejected response and the Bradley–Terry preference probability.
public struct PairwiseScore: Sendable, Equatable {
  /// Reward of the preferred response.
  public var chosen: Double
  /// Reward of the dispreferred response.
  public var rejected: Double
  /// P(chosen ≻ rejected) = σ(chosen − rejected).
  public var probabilityChosenPreferred: Double

  /// Computes the probability from the two rewards.
  public init(chosen: Double, rejected: Double) {
    self.chosen = chosen
    self.rejected = rejected
    self.probabilityChosenPreferred = preferenceProbability(chosen: chosen, rejected: rejected)
  }
}

/// Batch counters of a ``RewardScorer``, for metrics and tests.
public struct RewardBatchStats: Sendable, Equatable {
  /// Batched backend calls made.
  public var batches: UInt64 = 0
  /// The largest number of inputs scored in one call.
  public var largestBatch: Int = 0
  /// Inputs scored in all.
  public var itemsScored: UInt64 = 0
  /// Shared batches refused for bad input and rescored input by input (so only the request that
  /// sent the bad input fails).
  public var splitBatches: UInt64 = 0

  /// Creates zeroed counters.
  public init() {}
}

/// Scores reward inputs for concurrent callers, pooling them through a ``DynamicBatcher`` so that
/// concurrent Score requests share forward passes.
///
/// The backend runs on a serial dispatch queue of the scorer's own: a forward pass blocks for
/// milliseconds to seconds, which must not happen on the cooperative thread pool that serves RPCs.
public final class RewardScorer: Sendable {
  /// Batch size, wait and queue bound of the scorer's dynamic batcher.
  public typealias Batching = DynamicBatcher<RewardInput, Result<Double, any Error>>.Configuration

  /// The backend answering.
  public let backend: any RewardBackend
  private let batcher: DynamicBatcher<RewardInput, Result<Double, any Error>>
  private let counters: Counters
  /// Batch sizes and returned rewards, labelled with the backend's version.
  public let metrics: RewardMetrics

  /// The version of the backend, stamped on every answer.
  public var version: String { backend.version }

  /// Wraps `backend`.
  /// - Parameters:
  ///   - batching: batch size, wait and queue bound (16 inputs, 5 ms, 256 waiting by default;
  ///     config `reward_batch_size`, `reward_batch_wait_ms`).
  ///   - metrics: where batch sizes go; by default the bootstrapped metrics system, labelled with
  ///     the backend's version.
  public init(backend: any RewardBackend, batching: Batching = JudgingBatching().reward, metrics: RewardMetrics? = nil) {
    self.backend = backend
    let counters = Counters()
    self.counters = counters
    let metrics = metrics ?? RewardMetrics(rewardVersion: backend.version)
    self.metrics = metrics
    let queue = DispatchQueue(label: "alignd.reward.\(backend.kind.rawValue)")
    self.batcher = DynamicBatcher(configuration: batching) { inputs in
      try await withCheckedThrowingContinuation { (c: CheckedContinuation<[Result<Double, any Error>], any Error>) in
        queue.async {
          c.resume(with: Result { try Self.run(backend, inputs, counters, metrics) })
        }
      }
    }
  }

  /// Scores one batch. Inputs of several requests share it, so when the batch is refused for bad
  /// input, each input is scored alone: only the request that sent the bad input fails.
  private static func run(
    _ backend: any RewardBackend, _ inputs: [RewardInput], _ counters: Counters, _ metrics: RewardMetrics
  ) throws -> [Result<Double, any Error>] {
    func count(_ n: Int) {
      metrics.recordBatch(size: n)
      counters.state.withLock {
        $0.batches += 1
        $0.largestBatch = max($0.largestBatch, n)
        $0.itemsScored += UInt64(n)
      }
    }
    do {
      let rewards = try backend.rewards(inputs)
      count(inputs.count)
      return rewards.map { .success($0) }
    } catch is InvalidRequest where inputs.count > 1 {
      counters.state.withLock { $0.splitBatches += 1 }
      return inputs.map { input in
        Result {
          let r = try backend.rewards([input])[0]
          count(1)
          return r
        }
      }
    }
  }

  /// Batches run, the largest batch and inputs scored so far (successful batches only).
  public var stats: RewardBatchStats { counters.state.withLock { $0 } }

  /// Inputs waiting for a batch.
  public var queued: Int { batcher.queued }

  /// The reward of one input, queued with the current request's priority and deadline
  /// (``RequestScheduling/current``).
  /// - Throws: ``DynamicBatcherError`` under overload or past the deadline, ``InvalidRequest`` for
  ///   bad input, the backend's errors otherwise.
  public func score(_ input: RewardInput) async throws -> Double {
    try await batcher.submit(input).get()
  }

  /// The rewards of several inputs, submitted together so they share batches with each other and
  /// with concurrent callers.
  /// - Throws: the first error any input met (the others' queued work is then dropped).
  public func score(_ inputs: [RewardInput]) async throws -> [Double] {
    try await withThrowingTaskGroup(of: (Int, Double).self) { group in
      for (i, input) in inputs.enumerated() {
        group.addTask { (i, try await self.batcher.submit(input).get()) }
      }
      var out = [Double](repeating: 0, count: inputs.count)
      for try await (i, r) in group { out[i] = r }
      return out
    }
  }

  /// Rewards of a chosen and a rejected response to the same context, and P(chosen ≻ rejected).
  /// - Throws: as ``score(_:)-([RewardInput])``.
  public func pairwise(context: RewardInput.Context, chosen: String, rejected: String) async throws -> PairwiseScore {
    let r = try await score([
      RewardInput(context: context, response: chosen), RewardInput(context: context, response: rejected),
    ])
    return PairwiseScore(chosen: r[0], rejected: r[1])
  }
}

/// The scorer's counters, shared with its batch closure.
private final class Counters: Sendable {
  let state = Mutex(RewardBatchStats())
}
