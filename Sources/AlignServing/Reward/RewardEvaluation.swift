import Foundation

/// One preference to evaluate a reward model on: a context, the response people preferred, the one
/// they did not, and where the pair came from.
public struct PreferenceExample: Sendable, Equatable {
  public var context: RewardInput.Context
  public var chosen: String
  public var rejected: String
  /// The dataset or feedback source (reported separately); nil groups under "unknown".
  public var source: String?

  public init(context: RewardInput.Context, chosen: String, rejected: String, source: String? = nil) {
    self.context = context
    self.chosen = chosen
    self.rejected = rejected
    self.source = source
  }
}

/// How well rewards rank preference pairs: pairwise accuracy, mean margin and calibration, overall
/// and per source. The reward gate of a checkpoint rollout and `alignctl eval-reward` both use it.
public struct RewardEvaluation: Sendable, Codable, Equatable {
  /// Figures over a set of pairs.
  public struct Figures: Sendable, Codable, Equatable {
    public var pairs: Int
    /// Pairs with r_chosen > r_rejected (a tie counts as wrong).
    public var correct: Int
    public var accuracy: Double
    /// Mean of r_chosen − r_rejected.
    public var meanMargin: Double
    /// Expected calibration error of P(chosen ≻ rejected) = σ(r_c − r_r), ten bins (see
    /// ``RewardEvaluation/calibrationError(_:)``).
    public var calibrationError: Double

    enum CodingKeys: String, CodingKey {
      case pairs, correct, accuracy
      case meanMargin = "mean_margin"
      case calibrationError = "ece"
    }
  }

  public var overall: Figures
  /// Figures per `source`, sorted by name when encoded.
  public var bySource: [String: Figures]

  enum CodingKeys: String, CodingKey {
    case overall
    case bySource = "by_source"
  }

  /// Evaluates rewards already computed: `chosen[i]` and `rejected[i]` are the rewards of
  /// `examples[i]`'s two responses.
  public init(examples: [PreferenceExample], chosen: [Double], rejected: [Double]) {
    precondition(examples.count == chosen.count && chosen.count == rejected.count)
    let margins = zip(chosen, rejected).map { $0 - $1 }
    overall = Self.figures(margins)
    var groups: [String: [Double]] = [:]
    for (e, m) in zip(examples, margins) { groups[e.source ?? "unknown", default: []].append(m) }
    bySource = groups.mapValues(Self.figures)
  }

  /// Scores both responses of every example with `backend` (in batches of `batchSize` pairs) and
  /// evaluates them.
  /// - Throws: whatever the backend throws.
  public static func evaluate(_ examples: [PreferenceExample], with backend: any RewardBackend, batchSize: Int = 32) throws
    -> RewardEvaluation
  {
    var chosen: [Double] = []
    var rejected: [Double] = []
    var start = 0
    while start < examples.count {
      let batch = examples[start..<min(start + max(1, batchSize), examples.count)]
      var inputs: [RewardInput] = []
      for e in batch {
        inputs.append(RewardInput(context: e.context, response: e.chosen))
        inputs.append(RewardInput(context: e.context, response: e.rejected))
      }
      let rewards = try backend.rewards(inputs)
      for i in stride(from: 0, to: rewards.count, by: 2) {
        chosen.append(rewards[i])
        rejected.append(rewards[i + 1])
      }
      start += batch.count
    }
    return RewardEvaluation(examples: examples, chosen: chosen, rejected: rejected)
  }

  static func figures(_ margins: [Double]) -> Figures {
    let n = margins.count
    let correct = margins.filter { $0 > 0 }.count
    return Figures(
      pairs: n, correct: correct, accuracy: n == 0 ? 0 : Double(correct) / Double(n),
      meanMargin: n == 0 ? 0 : margins.reduce(0, +) / Double(n),
      calibrationError: calibrationError(margins.map { preferenceProbability(chosen: $0, rejected: 0) }))
  }

  /// Expected calibration error of pairwise probabilities p_i = P(chosen ≻ rejected), symmetrized:
  /// every pair counts once as (p, chosen won) and once as (1 − p, rejected lost), so that a model
  /// is judged on both orders; the 2n predictions fall into ten equal bins over [0, 1] and
  /// ECE = Σ_b (n_b / 2n) · |mean outcome_b − mean prediction_b|. This equals the usual
  /// confidence-based ECE over max(p, 1 − p) with five bins over [0.5, 1].
  public static func calibrationError(_ probabilities: [Double]) -> Double {
    if probabilities.isEmpty { return 0 }
    var count = [Int](repeating: 0, count: 10)
    var predicted = [Double](repeating: 0, count: 10)
    var observed = [Double](repeating: 0, count: 10)
    for p in probabilities {
      for (prediction, outcome) in [(p, 1.0), (1 - p, 0.0)] {
        let b = min(9, max(0, Int(prediction * 10)))
        count[b] += 1
        predicted[b] += prediction
        observed[b] += outcome
      }
    }
    let total = Double(2 * probabilities.count)
    var ece = 0.0
    for b in 0..<10 where count[b] > 0 {
      let n = Double(count[b])
      ece += n / total * abs(observed[b] / n - predicted[b] / n)
    }
    return ece
  }
}
