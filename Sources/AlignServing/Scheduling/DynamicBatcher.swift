import Synchronization

/// Collects independent requests into batches: a batch closes when it reaches `maxBatchSize`
/// requests or when its first request has waited `maxDelay`, then one call processes it.
///
/// For work whose cost per batch is dominated by one forward pass (scoring, classification,
/// teacher-forced log-probabilities), this turns many small passes into one. The queue is bounded:
/// beyond `queueCapacity` waiting requests, ``submit(_:)`` fails at once with
/// ``DynamicBatcherError/queueFull``.
public final class DynamicBatcher<Input: Sendable, Output: Sendable>: Sendable {
  public typealias Process = @Sendable ([Input]) async throws -> [Output]

  public struct Configuration: Sendable {
    public var maxBatchSize: Int
    public var maxDelay: Duration
    public var queueCapacity: Int

    public init(maxBatchSize: Int = 16, maxDelay: Duration = .milliseconds(5), queueCapacity: Int = 256) {
      self.maxBatchSize = max(1, maxBatchSize)
      self.maxDelay = maxDelay
      self.queueCapacity = max(1, queueCapacity)
    }
  }

  struct Pending {
    var input: Input
    var continuation: CheckedContinuation<Output, any Error>
  }

  enum SubmitAction { case refuse, flushNow, armTimer, wait }

  struct State {
    var pending: [Pending] = []
    var timerArmed = false
    var batches: UInt64 = 0
    var largestBatch = 0
    var processing = false
  }

  public let configuration: Configuration
  private let process: Process
  private let state = Mutex(State())

  public init(configuration: Configuration, process: @escaping Process) {
    self.configuration = configuration
    self.process = process
  }

  /// Batches run so far and the largest batch size seen.
  public var stats: (batches: UInt64, largestBatch: Int) {
    state.withLock { ($0.batches, $0.largestBatch) }
  }

  /// Requests waiting for a batch.
  public var queued: Int { state.withLock { $0.pending.count } }

  /// Adds one request and waits for its result.
  /// - Throws: ``DynamicBatcherError/queueFull`` when the queue is at capacity; whatever the
  ///   processing closure throws for the batch.
  public func submit(_ input: Input) async throws -> Output {
    try await withCheckedThrowingContinuation { continuation in
      let next: SubmitAction = state.withLock { state in
        guard state.pending.count < configuration.queueCapacity else { return .refuse }
        state.pending.append(Pending(input: input, continuation: continuation))
        if state.pending.count >= configuration.maxBatchSize && !state.processing { return .flushNow }
        if !state.timerArmed {
          state.timerArmed = true
          return .armTimer
        }
        return .wait
      }
      switch next {
      case .refuse:
        continuation.resume(throwing: DynamicBatcherError.queueFull(capacity: configuration.queueCapacity))
      case .flushNow:
        Task { await self.drain() }
      case .armTimer:
        let delay = configuration.maxDelay
        Task {
          try? await Task.sleep(for: delay)
          await self.drain()
        }
      case .wait:
        break
      }
    }
  }

  /// Processes batches until the queue is empty. Only one drain runs at a time.
  private func drain() async {
    while true {
      let batch: [Pending]? = state.withLock { state in
        guard !state.processing, !state.pending.isEmpty else {
          if state.pending.isEmpty { state.timerArmed = false }
          return nil
        }
        state.processing = true
        let count = min(configuration.maxBatchSize, state.pending.count)
        let batch = Array(state.pending.prefix(count))
        state.pending.removeFirst(count)
        state.batches += 1
        state.largestBatch = max(state.largestBatch, count)
        return batch
      }
      guard let batch else { return }
      do {
        let outputs = try await process(batch.map(\.input))
        if outputs.count == batch.count {
          for (pending, output) in zip(batch, outputs) { pending.continuation.resume(returning: output) }
        } else {
          for pending in batch {
            pending.continuation.resume(
              throwing: DynamicBatcherError.mismatchedOutputs(expected: batch.count, got: outputs.count))
          }
        }
      } catch {
        for pending in batch { pending.continuation.resume(throwing: error) }
      }
      let more = state.withLock { state -> Bool in
        state.processing = false
        if state.pending.isEmpty {
          state.timerArmed = false
          return false
        }
        return true
      }
      if !more { return }
    }
  }
}

public enum DynamicBatcherError: Error, Equatable {
  case queueFull(capacity: Int)
  case mismatchedOutputs(expected: Int, got: Int)
}
