import Synchronization

/// Collects independent requests into batches: a batch closes when it reaches `maxBatchSize`
/// requests or when its first request has waited `maxDelay`, then one call processes it.
///
/// For work whose cost per batch is dominated by one forward pass (scoring, classification,
/// teacher-forced log-probabilities), this turns many small passes into one. The queue keeps the
/// serving promises of generation: it is bounded (beyond `queueCapacity` waiting requests,
/// ``submit(_:scheduling:)`` fails at once with ``DynamicBatcherError/queueFull(queue:capacity:retryAfter:)``),
/// ordered by priority (with aging, so low priority waits a bounded time), and a request leaves
/// it when its deadline passes (``DynamicBatcherError/deadlineExceeded(queue:)``) or its task is
/// cancelled (`CancellationError`): its work is dropped, never processed. A request whose batch
/// is already running when its deadline passes or its task is cancelled gets its error at once;
/// the batch's result for it is discarded.
public final class DynamicBatcher<Input: Sendable, Output: Sendable>: Sendable {
  public typealias Process = @Sendable ([Input]) async throws -> [Output]

  public struct Configuration: Sendable, Equatable {
    public var maxBatchSize: Int
    public var maxDelay: Duration
    public var queueCapacity: Int
    /// Seconds of waiting that raise a queued request one priority level (bounds starvation).
    public var agingInterval: Double
    /// Names the queue in errors ("the reward queue is full").
    public var name: String

    public init(
      maxBatchSize: Int = 16, maxDelay: Duration = .milliseconds(5), queueCapacity: Int = 256,
      agingInterval: Double = 5, name: String = "batch"
    ) {
      self.maxBatchSize = max(1, maxBatchSize)
      self.maxDelay = maxDelay
      self.queueCapacity = max(1, queueCapacity)
      self.agingInterval = agingInterval
      self.name = name
    }
  }

  /// A request waiting in the queue or running in a batch, until it is answered.
  struct Waiting {
    var input: Input
    var continuation: CheckedContinuation<Output, any Error>
    var deadline: ContinuousClock.Instant?
    /// Fires at the deadline (cancelled once the request is answered).
    var expiry: Task<Void, Never>?
  }

  enum SubmitAction {
    case refuse(DynamicBatcherError)
    case cancelled
    case flushNow
    case armTimer
    case wait
  }

  struct State {
    var queue: RequestQueue<UInt64>
    var waiting: [UInt64: Waiting] = [:]
    var nextID: UInt64 = 0
    var timerArmed = false
    var processing = false
    var stats = DynamicBatcherStats()
    /// Running mean of a batch's processing time (seconds), for retry hints.
    var averageBatchSeconds: Double?
  }

  public let configuration: Configuration
  private let process: Process
  private let state: Mutex<State>
  private let epoch = ContinuousClock.now

  public init(configuration: Configuration, process: @escaping Process) {
    self.configuration = configuration
    self.process = process
    self.state = Mutex(
      State(queue: RequestQueue(capacity: configuration.queueCapacity, agingInterval: configuration.agingInterval)))
  }

  /// Batches run so far, the largest batch, and the requests processed or dropped.
  public var stats: DynamicBatcherStats {
    state.withLock { $0.stats }
  }

  /// Requests waiting for a batch.
  public var queued: Int { state.withLock { $0.queue.count } }

  private func seconds(_ instant: ContinuousClock.Instant) -> Double {
    let elapsed = instant - epoch
    return Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) * 1e-18
  }

  /// Adds one request and waits for its result.
  /// - Parameter scheduling: its priority and deadline; by default the current request's
  ///   (``RequestScheduling/current``).
  /// - Throws: ``DynamicBatcherError/queueFull(queue:capacity:retryAfter:)`` when the queue is
  ///   at capacity; ``DynamicBatcherError/deadlineExceeded(queue:)`` when the deadline passes
  ///   first; `CancellationError` when the task is cancelled first; whatever the processing
  ///   closure throws for the batch.
  public func submit(_ input: Input, scheduling: RequestScheduling = .current) async throws -> Output {
    if let deadline = scheduling.deadline, deadline <= .now {
      throw DynamicBatcherError.deadlineExceeded(queue: configuration.name)
    }
    let id = state.withLock { state in
      defer { state.nextID += 1 }
      return state.nextID
    }
    return try await withTaskCancellationHandler {
      try await withCheckedThrowingContinuation { continuation in
        let now = seconds(.now)
        let next: SubmitAction = state.withLock { state in
          // Checked under the lock: a cancel after this point finds the request waiting.
          if Task.isCancelled { return .cancelled }
          guard state.queue.enqueue(id, priority: scheduling.priority, now: now) else {
            return .refuse(
              .queueFull(queue: configuration.name, capacity: configuration.queueCapacity, retryAfter: retryHint(state)))
          }
          state.waiting[id] = Waiting(input: input, continuation: continuation, deadline: scheduling.deadline)
          if state.queue.count >= configuration.maxBatchSize && !state.processing { return .flushNow }
          if !state.timerArmed {
            state.timerArmed = true
            return .armTimer
          }
          return .wait
        }
        switch next {
        case .refuse(let error):
          continuation.resume(throwing: error)
          return
        case .cancelled:
          continuation.resume(throwing: CancellationError())
          return
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
        if let deadline = scheduling.deadline {
          let expiry = Task {
            do {
              try await Task.sleep(until: deadline, clock: .continuous)
            } catch {
              return
            }
            self.end(id, with: DynamicBatcherError.deadlineExceeded(queue: self.configuration.name))
          }
          let answered = state.withLock { state -> Bool in
            guard state.waiting[id] != nil else { return true }
            state.waiting[id]?.expiry = expiry
            return false
          }
          if answered { expiry.cancel() }
        }
      }
    } onCancel: {
      end(id, with: CancellationError())
    }
  }

  /// Answers a request with `error` unless it was answered already; drops it from the queue if it
  /// is still there (its work is never processed).
  private func end(_ id: UInt64, with error: any Error) {
    let waiting: Waiting? = state.withLock { state in
      guard let waiting = state.waiting.removeValue(forKey: id) else { return nil }
      if !state.queue.removeAll(where: { $0 == id }).isEmpty {
        if error is CancellationError { state.stats.cancelled += 1 } else { state.stats.expired += 1 }
      }
      return waiting
    }
    waiting?.expiry?.cancel()
    waiting?.continuation.resume(throwing: error)
  }

  /// How long a refused caller should wait: the batches ahead of it at the recent batch time.
  private func retryHint(_ state: State) -> Duration {
    let batchSeconds = max(state.averageBatchSeconds ?? 0, Self.seconds(configuration.maxDelay), 0.001)
    let batchesAhead = Double(state.queue.count / configuration.maxBatchSize + 1)
    return .milliseconds(Int64((batchSeconds * batchesAhead * 1000).rounded(.up)))
  }

  private static func seconds(_ duration: Duration) -> Double {
    Double(duration.components.seconds) + Double(duration.components.attoseconds) * 1e-18
  }

  /// Processes batches until the queue is empty. Only one drain runs at a time.
  private func drain() async {
    while true {
      let now = ContinuousClock.now
      let (batch, expired) = state.withLock { state -> ([(id: UInt64, input: Input)], [Waiting]) in
        guard !state.processing, !state.queue.isEmpty else {
          if state.queue.isEmpty { state.timerArmed = false }
          return ([], [])
        }
        var batch: [(id: UInt64, input: Input)] = []
        var expired: [Waiting] = []
        let at = seconds(now)
        while batch.count < configuration.maxBatchSize, let id = state.queue.dequeue(now: at) {
          guard let waiting = state.waiting[id] else { continue }
          if let deadline = waiting.deadline, deadline <= now {
            state.waiting[id] = nil
            state.stats.expired += 1
            expired.append(waiting)
            continue
          }
          batch.append((id, waiting.input))
        }
        guard !batch.isEmpty else { return ([], expired) }
        state.processing = true
        state.stats.batches += 1
        state.stats.items += UInt64(batch.count)
        state.stats.largestBatch = max(state.stats.largestBatch, batch.count)
        return (batch, expired)
      }
      for waiting in expired {
        waiting.expiry?.cancel()
        waiting.continuation.resume(throwing: DynamicBatcherError.deadlineExceeded(queue: configuration.name))
      }
      guard !batch.isEmpty else {
        // Only expired requests were left: look again (the queue may be empty now).
        if !expired.isEmpty { continue }
        return
      }
      let started = ContinuousClock.now
      let outcome: Result<[Output], any Error>
      do {
        outcome = .success(try await process(batch.map(\.input)))
      } catch {
        outcome = .failure(error)
      }
      let elapsed = Self.seconds(ContinuousClock.now - started)
      let answered: [(Waiting, Result<Output, any Error>)] = state.withLock { state in
        state.processing = false
        state.averageBatchSeconds = state.averageBatchSeconds.map { 0.8 * $0 + 0.2 * elapsed } ?? elapsed
        var answered: [(Waiting, Result<Output, any Error>)] = []
        for (k, item) in batch.enumerated() {
          // A request that ended meanwhile (deadline, cancel) was answered already.
          guard let waiting = state.waiting.removeValue(forKey: item.id) else { continue }
          switch outcome {
          case .success(let outputs) where outputs.count == batch.count:
            answered.append((waiting, .success(outputs[k])))
          case .success(let outputs):
            answered.append(
              (waiting, .failure(DynamicBatcherError.mismatchedOutputs(expected: batch.count, got: outputs.count))))
          case .failure(let error):
            answered.append((waiting, .failure(error)))
          }
        }
        return answered
      }
      for (waiting, result) in answered {
        waiting.expiry?.cancel()
        waiting.continuation.resume(with: result)
      }
      let more = state.withLock { state -> Bool in
        if state.queue.isEmpty {
          state.timerArmed = false
          return false
        }
        return true
      }
      if !more { return }
    }
  }
}

/// Counters of a ``DynamicBatcher``.
public struct DynamicBatcherStats: Sendable, Equatable {
  /// Batches processed.
  public var batches: UInt64 = 0
  /// The most requests in one batch.
  public var largestBatch = 0
  /// Requests handed to the processing closure.
  public var items: UInt64 = 0
  /// Requests dropped from the queue because their deadline passed.
  public var expired: UInt64 = 0
  /// Requests dropped from the queue because their task was cancelled.
  public var cancelled: UInt64 = 0

  public init() {}
}

public enum DynamicBatcherError: Error, Equatable, CustomStringConvertible {
  /// The queue holds `capacity` requests; `retryAfter` estimates when one will have left.
  case queueFull(queue: String, capacity: Int, retryAfter: Duration)
  /// The request's deadline passed before its batch answered.
  case deadlineExceeded(queue: String)
  case mismatchedOutputs(expected: Int, got: Int)

  public var description: String {
    switch self {
    case .queueFull(let queue, let capacity, _):
      return "the \(queue) queue is full (\(capacity) waiting); retry shortly"
    case .deadlineExceeded(let queue):
      return "the deadline expired while the request waited in the \(queue) queue"
    case .mismatchedOutputs(let expected, let got):
      return "a batch of \(expected) requests got \(got) results"
    }
  }
}
