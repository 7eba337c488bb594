import Foundation
import Synchronization

/// Count, sum and sum of squares of a stream of observations: enough for a mean and a variance,
/// and subtractable, so the figures of a time window are the difference of two readings.
public struct RunningStat: Sendable, Equatable, Codable {
  public var count: UInt64 = 0
  public var sum: Double = 0
  public var sumOfSquares: Double = 0

  public init() {}

  /// Builds the figures of a list of observations (tests, the quality gate).
  public init(_ values: some Sequence<Double>) {
    for value in values { add(value) }
  }

  public mutating func add(_ value: Double) {
    guard value.isFinite else { return }
    count += 1
    sum += value
    sumOfSquares += value * value
  }

  public var mean: Double { count == 0 ? 0 : sum / Double(count) }

  /// The sample variance (n − 1 in the denominator); 0 below two observations.
  public var variance: Double {
    guard count > 1 else { return 0 }
    let n = Double(count)
    return max(0, (sumOfSquares - sum * sum / n) / (n - 1))
  }

  /// The observations added since `earlier` was read.
  public func since(_ earlier: RunningStat) -> RunningStat {
    var delta = RunningStat()
    guard count >= earlier.count else { return self }
    delta.count = count - earlier.count
    delta.sum = sum - earlier.sum
    delta.sumOfSquares = sumOfSquares - earlier.sumOfSquares
    return delta
  }
}

/// A judgement of a served completion from feedback, as the canary analysis counts it.
public enum FeedbackOutcome: Sendable, Equatable {
  /// Preferred over the other version's completion in a head-to-head comparison.
  case won
  /// The other version's completion was preferred.
  case lost
  /// A rating mapped onto 0...1 (thumbs up = 1, down = 0; a 1..5 scale as (value − 1) / 4).
  case rating(Double)
}

/// What one serving version did, counted since the process loaded it: requests and errors,
/// latency, output safety flags, sampled rewards and feedback. The canary analysis compares two
/// versions on the difference of two readings (a window), never on lifetime totals.
public struct ArmSignals: Sendable, Equatable, Codable {
  /// Requests that ended (served or failed by the server; a client's cancellation is neither).
  public var requests: UInt64 = 0
  /// Requests the server failed: engine failures, deadlines, screen errors.
  public var errors: UInt64 = 0
  /// Submission to first token, seconds.
  public var timeToFirstToken = RunningStat()
  /// Gap between successive tokens of a sequence, seconds.
  public var interTokenLatency = RunningStat()
  /// Completions whose output was safety-checked (by the output screen, or the sampler), and how
  /// many of those were flagged.
  public var safetyChecked: UInt64 = 0
  public var safetyFlagged: UInt64 = 0
  /// Rewards of sampled completions, scored off the token path by the serving reward model.
  public var reward = RunningStat()
  /// Head-to-head feedback: comparisons this version won and lost.
  public var feedbackWins: UInt64 = 0
  public var feedbackLosses: UInt64 = 0
  /// Ratings of this version's completions, on 0...1.
  public var rating = RunningStat()

  public init() {}

  public var errorRate: Double { requests == 0 ? 0 : Double(errors) / Double(requests) }
  public var safetyFlagRate: Double { safetyChecked == 0 ? 0 : Double(safetyFlagged) / Double(safetyChecked) }

  /// What happened between reading `earlier` and this reading.
  public func since(_ earlier: ArmSignals) -> ArmSignals {
    var delta = ArmSignals()
    delta.requests = requests &- min(requests, earlier.requests)
    delta.errors = errors &- min(errors, earlier.errors)
    delta.timeToFirstToken = timeToFirstToken.since(earlier.timeToFirstToken)
    delta.interTokenLatency = interTokenLatency.since(earlier.interTokenLatency)
    delta.safetyChecked = safetyChecked &- min(safetyChecked, earlier.safetyChecked)
    delta.safetyFlagged = safetyFlagged &- min(safetyFlagged, earlier.safetyFlagged)
    delta.reward = reward.since(earlier.reward)
    delta.feedbackWins = feedbackWins &- min(feedbackWins, earlier.feedbackWins)
    delta.feedbackLosses = feedbackLosses &- min(feedbackLosses, earlier.feedbackLosses)
    delta.rating = rating.since(earlier.rating)
    return delta
  }
}

/// Time to first token and inter-token latency of one engine loop (one version), recorded on the
/// engine thread: one uncontended lock per request's first token and per completion.
///
/// Both are one sample per completion (the inter-token latency is the mean gap of a completion):
/// the gaps of one completion share its batches and any stall of the machine, so counting each
/// gap as a sample would pass a handful of completions off as hundreds of independent
/// observations, and a single stall could fail the canary's latency check.
public final class LatencyTally: Sendable {
  private let state = Mutex<(ttft: RunningStat, itl: RunningStat)>((RunningStat(), RunningStat()))

  public init() {}

  func firstToken(after duration: Duration) { state.withLock { $0.ttft.add(Self.seconds(duration)) } }
  /// A completion ended after `gaps` inter-token gaps summing to `gapSeconds` (none: no sample).
  func completed(gapSeconds: Double, gaps: Int) {
    guard gaps > 0 else { return }
    state.withLock { $0.itl.add(gapSeconds / Double(gaps)) }
  }

  /// The figures so far.
  public var reading: (ttft: RunningStat, itl: RunningStat) { state.withLock { $0 } }

  static func seconds(_ duration: Duration) -> Double {
    Double(duration.components.seconds) + Double(duration.components.attoseconds) * 1e-18
  }
}

/// Live signals per serving version (requests, errors, safety flags, sampled rewards, feedback),
/// fed by the inference pipeline, the completion sampler and feedback, read by the canary
/// analysis. Latency lives with each version's engine loop (``LatencyTally``). Versions are keyed
/// by their version string, which names one checkpoint of one role.
public final class LiveSignals: Sendable {
  private let arms = Mutex<[String: ArmSignals]>([:])

  public init() {}

  /// A request served by `version` ended; `failed` when the server failed it.
  public func recordRequest(version: String, failed: Bool) {
    update(version) {
      $0.requests += 1
      if failed { $0.errors += 1 }
    }
  }

  /// A completion of `version` was safety-checked.
  public func recordSafety(version: String, flagged: Bool) {
    update(version) {
      $0.safetyChecked += 1
      if flagged { $0.safetyFlagged += 1 }
    }
  }

  /// The serving reward model scored a sampled completion of `version`.
  public func recordReward(version: String, reward: Double) {
    update(version) { $0.reward.add(reward) }
  }

  /// Feedback about a completion `version` served: a comparison won or lost, or a rating.
  /// Ratings outside 0...1 are clamped.
  public func recordFeedback(version: String, outcome: FeedbackOutcome) {
    guard !version.isEmpty else { return }
    update(version) {
      switch outcome {
      case .won: $0.feedbackWins += 1
      case .lost: $0.feedbackLosses += 1
      case .rating(let value): $0.rating.add(min(1, max(0, value)))
      }
    }
  }

  /// A preference between completions of two versions: `chosen` won, `rejected` lost. A
  /// preference between two completions of one version says nothing about versions and is ignored.
  public func recordPreference(chosen: String, rejected: String) {
    guard chosen != rejected else { return }
    recordFeedback(version: chosen, outcome: .won)
    recordFeedback(version: rejected, outcome: .lost)
  }

  /// Everything recorded for `version` so far (latency excepted).
  public func reading(_ version: String) -> ArmSignals {
    arms.withLock { $0[version] ?? ArmSignals() }
  }

  private func update(_ version: String, _ change: (inout ArmSignals) -> Void) {
    arms.withLock { change(&$0[version, default: ArmSignals()]) }
  }
}
