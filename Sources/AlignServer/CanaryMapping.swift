import AlignAPI
import AlignRollout
import AlignServing
import AlignStore

/// The canary analysis' comparisons and decisions as Admin API messages (GetStatus).
enum CanaryMapping {
  static func arm(_ version: String, _ signals: ArmSignals) -> Alignd_V1_CanaryArm {
    .with {
      $0.version = version
      $0.requests = signals.requests
      $0.errors = signals.errors
      $0.errorRate = signals.errorRate
      $0.ttftMeanSeconds = signals.timeToFirstToken.mean
      $0.itlMeanSeconds = signals.interTokenLatency.mean
      $0.rewardSamples = signals.reward.count
      $0.rewardMean = signals.reward.mean
      $0.safetyChecked = signals.safetyChecked
      $0.safetyFlagRate = signals.safetyFlagRate
      $0.feedbackWins = signals.feedbackWins
      $0.feedbackLosses = signals.feedbackLosses
      $0.ratings = signals.rating.count
      $0.ratingMean = signals.rating.mean
    }
  }

  static func role(_ name: String) -> Alignd_V1_ModelRole {
    CheckpointRole(rawValue: name).map(CheckpointMapping.role) ?? .unspecified
  }

  static func analysis(_ comparison: CanaryComparison, automatic: Bool) -> Alignd_V1_CanaryAnalysis {
    .with {
      $0.role = role(comparison.role)
      $0.active = arm(comparison.activeVersion, comparison.active)
      $0.canary = arm(comparison.canaryVersion, comparison.canary)
      $0.verdict = comparison.verdict.rawValue
      $0.reason = comparison.reason
      $0.elapsedSeconds = comparison.elapsedSeconds
      $0.automatic = automatic
      $0.checks = comparison.checks.map { check in
        .with {
          $0.signal = check.signal
          $0.status = check.status.rawValue
          $0.required = check.required
          $0.degradation = check.degradation
          $0.lower = check.lower
          $0.upper = check.upper
          $0.threshold = check.threshold
          $0.detail = check.detail
        }
      }
    }
  }

  static func decision(_ decision: CanaryDecision) -> Alignd_V1_CanaryDecision {
    .with {
      $0.role = role(decision.role)
      $0.canaryVersion = decision.canaryVersion
      $0.activeVersion = decision.activeVersion
      $0.verdict = decision.verdict.rawValue
      $0.reason = decision.reason
      $0.reasonCode = decision.reasonCode
      $0.decidedAtUnixMs = decision.decidedAtUnixMs
      $0.active = arm(decision.activeVersion, decision.comparison.active)
      $0.canary = arm(decision.canaryVersion, decision.comparison.canary)
    }
  }

  static func sampling(_ sampler: CompletionSampler) -> Alignd_V1_CompletionSampling {
    let counters = sampler.counters
    return .with {
      $0.rate = sampler.rate
      $0.offered = counters.offered
      $0.queued = UInt64(counters.queued)
      $0.dropped = counters.dropped
      $0.scored = counters.scored
      $0.failed = counters.failed
    }
  }
}
