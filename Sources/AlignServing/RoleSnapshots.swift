import AlignEngine
import Foundation
import Synchronization

/// A loaded reward model (sequence classifier or reward head) behind its dynamic batcher.
public final class RewardSnapshot: ServingSnapshot {
  public let version: String
  public let sizeBytes: UInt64
  public let scorer: RewardScorer

  public init(scorer: RewardScorer, sizeBytes: UInt64) {
    self.version = scorer.backend.version
    self.sizeBytes = sizeBytes
    self.scorer = scorer
  }

  /// The engine and its buffers are freed with the last reference; nothing runs in the background.
  public func stop() {}
}

/// The safety checker (policy file, lexical model, rules, optional guard model) serving CheckSafety
/// and guarded generation.
public final class SafetySnapshot: ServingSnapshot {
  public let version: String
  public let sizeBytes: UInt64
  public let checker: SafetyChecker

  /// - Parameter version: the registry version of a safety checkpoint; nil stamps the checker's
  ///   own version (`policy=…;classifier=…;rules=…`).
  public init(checker: SafetyChecker, sizeBytes: UInt64 = 0, version: String? = nil) {
    self.version = version ?? checker.version
    self.sizeBytes = sizeBytes
    self.checker = checker
  }

  public func stop() {}
}

extension PolicySnapshot {
  /// The judge, if a request has used it.
  public var judgeIfCreated: RewardScorer? { judgeSlot.withLock { $0 } }

  /// The generative judge on this policy (the reward model until one is activated), created on
  /// first use with its own engine over the policy's weights.
  public func judge() throws -> RewardScorer {
    try judgeSlot.withLock { slot in
      if let slot { return slot }
      let scorer = RewardScorer(
        backend: try GenerativeJudge(policy: model, policyVersion: version), batching: judgeBatching)
      slot = scorer
      return scorer
    }
  }
}
