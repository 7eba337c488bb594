import AlignServing
import Foundation

/// When the canary analysis promotes or rolls back a canary on its own (config `canary_*`,
/// Docs/CANARY.md). Thresholds say how much worse than the active version the canary may be;
/// a check passes only when a one-sided confidence bound says the canary is within it, and fails
/// only when the bound says it is beyond it.
public struct CanaryPolicy: Sendable, Equatable {
  /// Promote or roll back on the analysis' verdict; off = the comparison is shown, nothing acts.
  public var enabled: Bool = false
  /// Observations per arm a signal needs before it is judged (requests, latencies, sampled
  /// rewards, safety-checked completions).
  public var minSamples: Int = 100
  /// Feedback (head-to-head comparisons, ratings) per arm before it is judged.
  public var minFeedback: Int = 20
  /// A canary is promoted no sooner than this after the comparison started.
  public var minDurationSeconds: Double = 600
  /// A canary still undecided after this long is rolled back (0 = wait for ever).
  public var maxDurationSeconds: Double = 3600
  /// Seconds between comparisons.
  public var checkIntervalSeconds: Double = 30
  /// One-sided confidence of every bound (0.5 < c < 1).
  public var confidence: Double = 0.99
  /// Largest drop in mean reward (reward-model units) of sampled completions.
  public var maxRewardDrop: Double = 0.25
  /// Largest rise in the share of completions the safety check flags.
  public var maxSafetyFlagRise: Double = 0.02
  /// Largest rise in the share of requests the server failed.
  public var maxErrorRateRise: Double = 0.01
  /// Largest ratio of the canary's mean time to first token to the active one's (0: not checked).
  public var maxTTFTRatio: Double = 1.5
  /// Largest ratio of the canary's mean inter-token latency to the active one's (0: not checked).
  public var maxITLRatio: Double = 1.5
  /// Largest drop of the canary's head-to-head feedback win rate below one half.
  public var maxWinRateDrop: Double = 0.05
  /// Largest drop in mean rating (ratings on 0...1).
  public var maxRatingDrop: Double = 0.1

  public init() {}

  /// The standard normal quantile of ``confidence`` (bisection on erf; exact to 1e-9).
  public var z: Double {
    let target = min(0.999_999, max(0.5, confidence))
    var (low, high) = (0.0, 10.0)
    for _ in 0..<80 {
      let mid = (low + high) / 2
      if 0.5 * (1 + erf(mid / 2.0.squareRoot())) < target { low = mid } else { high = mid }
    }
    return (low + high) / 2
  }
}

/// One signal's comparison of the canary with the active version.
public struct CanaryCheck: Codable, Sendable, Equatable {
  public enum Status: String, Codable, Sendable {
    /// Confidently within the threshold.
    case pass
    /// Confidently beyond the threshold.
    case fail
    /// Measured, but the bounds straddle the threshold: more samples needed.
    case inconclusive
    /// Fewer observations than the minimum.
    case waiting
  }

  /// errors, safety_flags, reward, win_rate, rating, ttft, itl.
  public var signal: String
  public var status: Status
  /// Whether promotion waits for this signal to pass (optional signals only block when they fail).
  public var required: Bool
  public var active: Double
  public var canary: Double
  /// How much worse the canary is (positive = worse), as the threshold is expressed.
  public var degradation: Double
  public var lower: Double
  public var upper: Double
  public var threshold: Double
  public var activeSamples: UInt64
  public var canarySamples: UInt64
  /// One line with the figures, e.g. "mean reward 0.41 vs 1.20: drop 0.79 (≥ 0.62 at 99%) > 0.25".
  public var detail: String
}

/// What the analysis concludes now.
public enum CanaryVerdict: String, Codable, Sendable {
  case wait, promote, rollback
}

/// A comparison of a canary with the active version over a window of live traffic.
public struct CanaryComparison: Codable, Sendable, Equatable {
  public var role: CheckpointRoleName
  public var activeVersion: String
  public var canaryVersion: String
  public var elapsedSeconds: Double
  /// The two arms' signals over the window.
  public var active: ArmSignals
  public var canary: ArmSignals
  public var checks: [CanaryCheck]
  public var verdict: CanaryVerdict
  /// Why: the failing check's figures, what is still pending, or what passed.
  public var reason: String
  /// The check that decided a rollback (`inconclusive` at the time limit), or `passed`.
  public var reasonCode: String
}

/// The role name a comparison is about (the store's `CheckpointRole` raw value).
public typealias CheckpointRoleName = String

/// Which signals promotion waits for.
public struct CanaryRequirements: Sendable, Equatable {
  /// A reward model serves and completions are sampled: rewards are measured.
  public var reward: Bool
  /// Completions are safety-checked (sampled, or output screening): flag rates are measured.
  public var safety: Bool

  public init(reward: Bool, safety: Bool) {
    self.reward = reward
    self.safety = safety
  }
}

/// The canary analysis' decision rule: pure, no clock, no I/O (tested with synthetic signals).
public enum CanaryAnalysis {
  /// Compares the arms over a window `elapsedSeconds` long.
  public static func compare(
    role: CheckpointRoleName, activeVersion: String, canaryVersion: String, active: ArmSignals, canary: ArmSignals,
    elapsedSeconds: Double, policy: CanaryPolicy, requirements: CanaryRequirements
  ) -> CanaryComparison {
    let checks = self.checks(active: active, canary: canary, policy: policy, requirements: requirements)
    let (verdict, reason, code) = decide(checks, elapsedSeconds: elapsedSeconds, policy: policy)
    return CanaryComparison(
      role: role, activeVersion: activeVersion, canaryVersion: canaryVersion, elapsedSeconds: elapsedSeconds,
      active: active, canary: canary, checks: checks, verdict: verdict, reason: reason, reasonCode: code)
  }

  /// Every signal's check, in the order a failure is reported.
  public static func checks(
    active a: ArmSignals, canary c: ArmSignals, policy: CanaryPolicy, requirements: CanaryRequirements
  ) -> [CanaryCheck] {
    let z = policy.z
    let minimum = UInt64(max(1, policy.minSamples))
    let minimumFeedback = UInt64(max(1, policy.minFeedback))
    var checks: [CanaryCheck] = []
    checks.append(
      proportionRise(
        "errors", "error rate", a: (a.errors, a.requests), c: (c.errors, c.requests), threshold: policy.maxErrorRateRise,
        z: z, minimum: minimum, required: true))
    checks.append(
      proportionRise(
        "safety_flags", "safety-flag rate", a: (a.safetyFlagged, a.safetyChecked), c: (c.safetyFlagged, c.safetyChecked),
        threshold: policy.maxSafetyFlagRise, z: z, minimum: minimum, required: requirements.safety))
    checks.append(
      meanDrop(
        "reward", "mean reward", a: a.reward, c: c.reward, threshold: policy.maxRewardDrop, z: z, minimum: minimum,
        required: requirements.reward))
    // Head-to-head: the canary's wins over comparisons with the active version; even = 0.5.
    let games = c.feedbackWins + c.feedbackLosses
    let winRate = games == 0 ? 0.5 : Double(c.feedbackWins) / Double(games)
    checks.append(
      judge(
        "win_rate", active: 0.5, canary: winRate, degradation: 0.5 - winRate,
        standardError: games == 0 ? 0 : (smoothedVariance(c.feedbackWins, games) / Double(games)).squareRoot(),
        threshold: policy.maxWinRateDrop, z: z, samples: (games, games), minimum: minimumFeedback, required: false,
        describe: "feedback win rate"))
    checks.append(
      meanDrop(
        "rating", "mean rating", a: a.rating, c: c.rating, threshold: policy.maxRatingDrop, z: z,
        minimum: minimumFeedback, required: false))
    // A latency check can be turned off (ratio 0): with heavy-tailed latency on the active arm the
    // bound of mean_c − ratio·mean_a stays wide whatever the ratio, so such a check may never pass.
    if policy.maxTTFTRatio > 0 {
      checks.append(ratio("ttft", "mean time to first token", a: a.timeToFirstToken, c: c.timeToFirstToken,
                          ratio: policy.maxTTFTRatio, z: z, minimum: minimum))
    }
    if policy.maxITLRatio > 0 {
      checks.append(ratio("itl", "mean inter-token latency", a: a.interTokenLatency, c: c.interTokenLatency,
                          ratio: policy.maxITLRatio, z: z, minimum: minimum))
    }
    return checks
  }

  /// The verdict from the checks: any failure rolls back (as soon as that signal has its minimum
  /// samples); promotion needs every required check to pass, no check to fail, and the minimum
  /// duration; past the maximum duration an undecided canary is rolled back.
  static func decide(
    _ checks: [CanaryCheck], elapsedSeconds: Double, policy: CanaryPolicy
  ) -> (CanaryVerdict, String, String) {
    if let failed = checks.first(where: { $0.status == .fail }) {
      return (.rollback, failed.detail, failed.signal)
    }
    let pending = checks.filter { $0.required && $0.status != .pass }
    if pending.isEmpty {
      if elapsedSeconds < policy.minDurationSeconds {
        return (
          .wait, "every required signal passes; waiting for the minimum duration "
            + "(\(format(elapsedSeconds)) of \(format(policy.minDurationSeconds)) s)", "duration"
        )
      }
      let passed = checks.filter { $0.status == .pass }.map(\.detail).joined(separator: "; ")
      return (.promote, passed, "passed")
    }
    let summary = pending.map { "\($0.signal) \($0.status.rawValue) (\($0.canarySamples)/\($0.activeSamples) samples)" }
      .joined(separator: ", ")
    if policy.maxDurationSeconds > 0, elapsedSeconds >= policy.maxDurationSeconds {
      return (
        .rollback, "undecided after \(format(elapsedSeconds)) s (canary_max_seconds \(format(policy.maxDurationSeconds))): "
          + summary, "inconclusive"
      )
    }
    return (.wait, "waiting for " + summary, "pending")
  }

  // MARK: Checks

  /// A rate where a rise is worse (errors, safety flags): the difference of two proportions with a
  /// normal-approximation bound (proportions smoothed by half an observation, so that zero events
  /// on a few samples do not look certain).
  static func proportionRise(
    _ signal: String, _ name: String, a: (events: UInt64, trials: UInt64), c: (events: UInt64, trials: UInt64),
    threshold: Double, z: Double, minimum: UInt64, required: Bool
  ) -> CanaryCheck {
    let pa = a.trials == 0 ? 0 : Double(a.events) / Double(a.trials)
    let pc = c.trials == 0 ? 0 : Double(c.events) / Double(c.trials)
    let se =
      (a.trials == 0 || c.trials == 0)
      ? 0
      : (smoothedVariance(a.events, a.trials) / Double(a.trials) + smoothedVariance(c.events, c.trials) / Double(c.trials))
        .squareRoot()
    return judge(
      signal, active: pa, canary: pc, degradation: pc - pa, standardError: se, threshold: threshold, z: z,
      samples: (a.trials, c.trials), minimum: minimum, required: required, describe: name)
  }

  /// A mean where a drop is worse (reward, rating): Welch's standard error of the difference.
  static func meanDrop(
    _ signal: String, _ name: String, a: RunningStat, c: RunningStat, threshold: Double, z: Double, minimum: UInt64,
    required: Bool
  ) -> CanaryCheck {
    let se = (a.count == 0 || c.count == 0) ? 0 : (a.variance / Double(a.count) + c.variance / Double(c.count)).squareRoot()
    return judge(
      signal, active: a.mean, canary: c.mean, degradation: a.mean - c.mean, standardError: se, threshold: threshold,
      z: z, samples: (a.count, c.count), minimum: minimum, required: required, describe: name)
  }

  /// A latency where the canary may be at most `ratio` times the active one: the linear
  /// combination mean_c − ratio·mean_a against 0 (Fieller-style, no division by a noisy mean).
  static func ratio(
    _ signal: String, _ name: String, a: RunningStat, c: RunningStat, ratio: Double, z: Double, minimum: UInt64
  ) -> CanaryCheck {
    let se =
      (a.count == 0 || c.count == 0)
      ? 0 : (c.variance / Double(c.count) + ratio * ratio * a.variance / Double(a.count)).squareRoot()
    var check = judge(
      signal, active: a.mean, canary: c.mean, degradation: c.mean - ratio * a.mean, standardError: se, threshold: 0,
      z: z, samples: (a.count, c.count), minimum: minimum, required: true, describe: name)
    let observed = a.mean > 0 ? c.mean / a.mean : 0
    check.detail =
      "\(name) \(format(c.mean * 1000)) ms vs \(format(a.mean * 1000)) ms: ratio \(format(observed)) "
      + verdictText(check.status, bound: check.status == .fail ? check.lower : check.upper, limit: "\(format(ratio))×",
                    unit: "(canary − \(format(ratio))×active, s)")
    return check
  }

  /// The common rule: with enough samples, fail when the lower bound of the degradation exceeds
  /// the threshold, pass when the upper bound does not.
  static func judge(
    _ signal: String, active: Double, canary: Double, degradation: Double, standardError: Double, threshold: Double,
    z: Double, samples: (UInt64, UInt64), minimum: UInt64, required: Bool, describe name: String
  ) -> CanaryCheck {
    let lower = degradation - z * standardError
    let upper = degradation + z * standardError
    let status: CanaryCheck.Status
    if min(samples.0, samples.1) < minimum {
      status = .waiting
    } else if lower > threshold {
      status = .fail
    } else if upper <= threshold {
      status = .pass
    } else {
      status = .inconclusive
    }
    let detail =
      "\(name) \(format(canary)) vs \(format(active)) (n=\(samples.1)/\(samples.0)): worse by \(format(degradation)) "
      + verdictText(status, bound: status == .fail ? lower : upper, limit: format(threshold), unit: "")
    return CanaryCheck(
      signal: signal, status: status, required: required, active: active, canary: canary, degradation: degradation,
      lower: lower, upper: upper, threshold: threshold, activeSamples: samples.0, canarySamples: samples.1, detail: detail)
  }

  static func verdictText(_ status: CanaryCheck.Status, bound: Double, limit: String, unit: String) -> String {
    let unitText = unit.isEmpty ? "" : " " + unit
    switch status {
    case .fail: return "(lower bound \(format(bound))\(unitText) > \(limit))"
    case .pass: return "(upper bound \(format(bound))\(unitText) ≤ \(limit))"
    case .inconclusive: return "(upper bound \(format(bound))\(unitText) > \(limit), not yet conclusive)"
    case .waiting: return "(too few samples)"
    }
  }

  /// p(1 − p) with p smoothed by half an event: never 0, so a bound on few samples stays wide.
  static func smoothedVariance(_ events: UInt64, _ trials: UInt64) -> Double {
    let p = (Double(events) + 0.5) / (Double(trials) + 1)
    return p * (1 - p)
  }

  static func format(_ value: Double) -> String { String(format: "%.4g", value) }
}
