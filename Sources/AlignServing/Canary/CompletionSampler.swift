import Foundation
import Synchronization

/// Scores a sampled fraction of served completions with the serving reward model (and checks
/// their safety when no output screen did), off the token path, feeding ``LiveSignals``.
///
/// Generation only calls ``offer(_:)``: a coin flip and, for a sampled completion, an append to a
/// bounded queue under a lock. When the queue is full the completion is dropped (and counted):
/// scoring never slows generation down, and under overload it simply samples less. ``run(models:)``
/// drains the queue in batches on its own task.
public final class CompletionSampler: Sendable {
  /// A served completion to judge.
  public struct Job: Sendable {
    public var version: String
    public var context: RewardInput.Context
    public var text: String
    /// True when the output screen already counted this completion's safety.
    public var screened: Bool

    public init(version: String, context: RewardInput.Context, text: String, screened: Bool) {
      self.version = version
      self.context = context
      self.text = text
      self.screened = screened
    }
  }

  /// Figures for status and tests.
  public struct Counters: Sendable, Equatable {
    public var offered: UInt64 = 0
    public var queued: Int = 0
    public var dropped: UInt64 = 0
    public var scored: UInt64 = 0
    public var failed: UInt64 = 0

    public init(offered: UInt64 = 0, queued: Int = 0, dropped: UInt64 = 0, scored: UInt64 = 0, failed: UInt64 = 0) {
      (self.offered, self.queued, self.dropped, self.scored, self.failed) = (offered, queued, dropped, scored, failed)
    }
  }

  /// Share of completed generations judged (0 = none, 1 = all).
  public let rate: Double
  /// Most completions waiting to be judged.
  public let capacity: Int
  public let signals: LiveSignals
  private let state = Mutex<(jobs: [Job], counters: Counters)>(([], Counters()))
  private let wake: AsyncStream<Void>.Continuation
  private let wakeups: AsyncStream<Void>

  public init(rate: Double, capacity: Int = 256, signals: LiveSignals) {
    self.rate = min(1, max(0, rate))
    self.capacity = max(1, capacity)
    self.signals = signals
    (wakeups, wake) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
  }

  /// Whether a generation's completions should be kept for judging (decided before collecting
  /// them, so an unsampled stream keeps no text).
  public func shouldSample() -> Bool {
    rate > 0 && (rate >= 1 || Double.random(in: 0..<1) < rate)
  }

  /// Queues completions for judging; drops them when the queue is full.
  public func offer(_ jobs: [Job]) {
    guard !jobs.isEmpty else { return }
    let accepted = state.withLock { state -> Bool in
      state.counters.offered += UInt64(jobs.count)
      guard state.jobs.count + jobs.count <= capacity else {
        state.counters.dropped += UInt64(jobs.count)
        return false
      }
      state.jobs += jobs
      state.counters.queued = state.jobs.count
      return true
    }
    if accepted { wake.yield() }
  }

  public var counters: Counters { state.withLock { $0.counters } }

  /// Takes up to `limit` queued jobs.
  func take(_ limit: Int) -> [Job] {
    state.withLock { state in
      let batch = Array(state.jobs.prefix(limit))
      state.jobs.removeFirst(batch.count)
      state.counters.queued = state.jobs.count
      return batch
    }
  }

  /// Judges queued completions until the task is cancelled: rewards from the active reward model
  /// (none while only the generative judge serves: it would run on the policy's engine, on the
  /// token path), safety from the active checker for completions no output screen checked.
  public func run(models: ModelHost) async {
    for await _ in wakeups {
      while !Task.isCancelled {
        let batch = take(16)
        if batch.isEmpty { break }
        // The active versions, never a canary: both policy arms must be judged by the same models.
        // Reward and safety snapshots stop nothing when retired, so holding one briefly is safe.
        await judge(batch, reward: models.rewards.active?.scorer, safety: models.safety.active?.checker)
      }
      if Task.isCancelled { return }
    }
  }

  /// Stops ``run(models:)`` once the queue is drained.
  public func finish() { wake.finish() }

  func judge(_ batch: [Job], reward: RewardScorer?, safety: SafetyChecker?) async {
    var failed = 0
    if let reward {
      do {
        let rewards = try await reward.score(batch.map { RewardInput(context: $0.context, response: $0.text) })
        for (job, value) in zip(batch, rewards) { signals.recordReward(version: job.version, reward: value) }
      } catch {
        failed += batch.count
      }
    }
    let unscreened = batch.filter { !$0.screened }
    if let safety, !unscreened.isEmpty {
      do {
        let verdicts = try await safety.check(
          unscreened.map { SafetyInput(text: $0.text, context: Self.promptText($0.context), role: .assistant) })
        for (job, verdict) in zip(unscreened, verdicts) {
          signals.recordSafety(version: job.version, flagged: !verdict.flaggedCategories.isEmpty)
        }
      } catch {
        failed += unscreened.count
      }
    }
    state.withLock {
      $0.counters.scored += UInt64(batch.count)
      $0.counters.failed += UInt64(failed)
    }
  }

  /// The last user turn or the prompt, as the guard model's context.
  static func promptText(_ context: RewardInput.Context) -> String {
    switch context {
    case .prompt(let prompt): return prompt
    case .messages(let messages): return messages.last { $0.role == "user" }?.content ?? ""
    }
  }
}
