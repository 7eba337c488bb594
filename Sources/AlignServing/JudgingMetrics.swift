import Metrics

/// Metrics of one reward model (one ``RewardScorer``): forward-batch sizes and the rewards
/// returned to clients, both labelled with the reward model's version.
///
/// The version label is bounded by the reward checkpoints a process activates, so the number of
/// series stays small.
public struct RewardMetrics: Sendable {
  /// Items per reward-model forward batch (`alignd_score_batch_size`).
  let batchSize: Recorder
  /// Rewards returned to clients (`alignd_reward_score`).
  let rewardScore: Recorder

  /// Creates the reward model's series through `factory` (the bootstrapped one by default).
  public init(rewardVersion: String, factory: any MetricsFactory = MetricsSystem.factory) {
    let labels = [("reward_version", rewardVersion)]
    batchSize = Recorder(label: MetricNames.scoreBatchSize, dimensions: labels, aggregate: true, factory: factory)
    rewardScore = Recorder(label: MetricNames.rewardScore, dimensions: labels, aggregate: true, factory: factory)
  }

  /// Records one forward batch of `size` items.
  public func recordBatch(size: Int) {
    batchSize.record(size)
  }

  /// Records rewards that are about to be returned to a client (Score, best-of-n ranking), so the
  /// histogram shows what clients see rather than gate evaluations.
  public func recordReturned(_ rewards: [Double]) {
    for reward in rewards where reward.isFinite { rewardScore.record(reward) }
  }
}

/// Counts the flagged categories of safety verdicts (`alignd_safety_flags_total`).
public enum SafetyMetrics {
  /// Where a verdict was reached.
  public enum Stage: String, Sendable, CaseIterable {
    /// An explicit check (CheckSafety, HTTP moderations).
    case check
    /// The prompt screen of a generation request.
    case prompt
    /// The output screen of a generation request (one verdict per generated sample).
    case output
  }

  /// Adds one to `{category, policy_version, stage}` for every flagged category of every verdict.
  /// - Parameters:
  ///   - flaggedCategories: the flagged categories of one verdict each.
  ///   - policyVersion: the safety policy's `name@version` (``SafetyPolicy/versionString``).
  public static func record(
    _ flaggedCategories: [[SafetyCategory]], policyVersion: String, stage: Stage,
    factory: any MetricsFactory = MetricsSystem.factory
  ) {
    for categories in flaggedCategories {
      for category in Set(categories) {
        Counter(
          label: MetricNames.safetyFlags,
          dimensions: [("category", category.rawValue), ("policy_version", policyVersion), ("stage", stage.rawValue)],
          factory: factory
        ).increment()
      }
    }
  }

  /// Records the flagged categories of each verdict.
  public static func record(
    _ verdicts: [SafetyVerdict], policyVersion: String, stage: Stage,
    factory: any MetricsFactory = MetricsSystem.factory
  ) {
    record(verdicts.map(\.flaggedCategories), policyVersion: policyVersion, stage: stage, factory: factory)
  }
}
