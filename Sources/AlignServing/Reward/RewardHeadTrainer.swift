import AlignEngine
import Foundation

/// One human preference: for a context, `chosen` was preferred to `rejected`.
public struct PreferencePair: Sendable, Equatable {
  /// The prompt or conversation both responses answer.
  public var context: RewardInput.Context
  /// The preferred response.
  public var chosen: String
  /// The dispreferred response.
  public var rejected: String

  /// A prompt string with its two responses (TRL's `prompt`/`chosen`/`rejected`).
  public init(prompt: String, chosen: String, rejected: String) {
    self.init(context: .prompt(prompt), chosen: chosen, rejected: rejected)
  }

  /// A context with its two responses.
  public init(context: RewardInput.Context, chosen: String, rejected: String) {
    self.context = context
    self.chosen = chosen
    self.rejected = rejected
  }
}

/// Settings of a reward-head training run.
public struct RewardHeadTrainingOptions: Sendable, Equatable {
  /// Fraction of pairs held out for the accuracy in the manifest, in [0, 1). At least one pair is held
  /// out when the fraction is positive and there are two pairs or more.
  public var heldoutFraction: Double = 0.2
  /// L2 penalty on the weights of standardized features (keeps separable data from diverging).
  public var l2: Double = 1e-2
  /// Seed of the held-out split; the same seed and pairs give the same split and weights.
  public var seed: UInt64 = 0
  /// How text is rendered for the base model (recorded in the manifest).
  public var input: RewardHeadInputFormat = .chatTemplate
  /// Optimizer iteration limit.
  public var maxIterations: Int = 500
  /// Texts per feature-extraction forward pass.
  public var featureBatchSize: Int = 32

  /// Creates options; every field has a default.
  public init(
    heldoutFraction: Double = 0.2, l2: Double = 1e-2, seed: UInt64 = 0, input: RewardHeadInputFormat = .chatTemplate,
    maxIterations: Int = 500, featureBatchSize: Int = 32
  ) {
    self.heldoutFraction = heldoutFraction
    self.l2 = l2
    self.seed = seed
    self.input = input
    self.maxIterations = maxIterations
    self.featureBatchSize = featureBatchSize
  }
}

/// What a training run produced.
public struct RewardHeadTrainingResult: Sendable {
  /// The trained head, its manifest filled in.
  public var checkpoint: RewardHeadCheckpoint
  /// Fraction of training pairs ranked correctly.
  public var trainAccuracy: Double
  /// Fraction of held-out pairs ranked correctly (nil when none were held out).
  public var heldoutAccuracy: Double?
  /// Indices (into the input pairs) used for training, in split order.
  public var trainIndices: [Int]
  /// Indices (into the input pairs) held out.
  public var heldoutIndices: [Int]
  /// Final regularized mean loss on the training pairs.
  public var loss: Double
  /// Optimizer iterations run.
  public var iterations: Int
  /// Where the checkpoint was written, when it was.
  public var directory: String?

  /// A few lines for a person: split, accuracies, optimizer, where the checkpoint went.
  public var summary: String {
    func percent(_ x: Double) -> String { String(format: "%.1f%%", 100 * x) }
    var lines = [
      "pairs: \(trainIndices.count) train, \(heldoutIndices.count) held out",
      "train accuracy: \(percent(trainAccuracy))",
      "held-out accuracy: \(heldoutAccuracy.map(percent) ?? "n/a (nothing held out)")",
      "loss: \(String(format: "%.5f", loss)) after \(iterations) L-BFGS iterations",
      "base model: \(checkpoint.manifest.baseModel.name) (sha256 \(checkpoint.manifest.baseModel.sha256.prefix(12))…)",
    ]
    if let directory { lines.append("checkpoint: \(directory)") }
    return lines.joined(separator: "\n")
  }
}

/// Trains a Bradley–Terry linear reward head on frozen base-model features.
///
/// For each pair the feature is the base model's final normed hidden state at the last token of the
/// rendered (context, response). The head minimizes
/// mean −log σ(w·(f_chosen − f_rejected)) + (l2/2)·‖w‖² over standardized features with L-BFGS
/// (deterministic), then folds the standardization back into `weight`. Bradley–Terry is blind to
/// the bias, so it is set to centre the training rewards on zero.
public struct RewardHeadTrainer: Sendable {
  /// The frozen feature extractor.
  public let base: RewardBaseModel

  /// Creates a trainer on `base`.
  public init(base: RewardBaseModel) {
    self.base = base
  }

  /// Trains a head on `pairs`.
  /// - Parameters:
  ///   - progress: called after each feature batch with (texts done, texts in all).
  /// - Throws: ``InvalidRequest`` for bad options, no pairs, or an input the base model cannot take;
  ///   `EngineError` on internal failures.
  public func train(
    _ pairs: [PreferencePair], options: RewardHeadTrainingOptions = RewardHeadTrainingOptions(),
    progress: ((_ done: Int, _ total: Int) -> Void)? = nil
  ) throws -> RewardHeadTrainingResult {
    guard !pairs.isEmpty else { throw InvalidRequest("no preference pairs to train on") }
    guard options.heldoutFraction >= 0, options.heldoutFraction < 1 else {
      throw InvalidRequest("the held-out fraction must be in [0, 1), not \(options.heldoutFraction)")
    }
    guard options.l2.isFinite, options.l2 >= 0 else { throw InvalidRequest("l2 must be a finite value ≥ 0, not \(options.l2)") }
    guard options.maxIterations > 0, options.featureBatchSize > 0 else {
      throw InvalidRequest("maxIterations and featureBatchSize must be positive")
    }
    let split = Self.split(count: pairs.count, heldoutFraction: options.heldoutFraction, seed: options.seed)

    // Features of every chosen and rejected response, in batches.
    var inputs: [RewardInput] = []
    inputs.reserveCapacity(2 * pairs.count)
    for p in pairs {
      inputs.append(RewardInput(context: p.context, response: p.chosen))
      inputs.append(RewardInput(context: p.context, response: p.rejected))
    }
    var features: [[Float]] = []
    features.reserveCapacity(inputs.count)
    var start = 0
    while start < inputs.count {
      let end = min(inputs.count, start + options.featureBatchSize)
      features += try base.features(Array(inputs[start..<end]), format: options.input)
      start = end
      progress?(end, inputs.count)
    }

    let trainChosen = split.train.map { features[2 * $0] }
    let trainRejected = split.train.map { features[2 * $0 + 1] }
    let fit = Self.fit(
      chosen: trainChosen, rejected: trainRejected, l2: options.l2, maxIterations: options.maxIterations)

    let weight = fit.weight.map { Float($0) }
    let bias = Float(fit.bias)
    func accuracy(_ indices: [Int], _ head: RewardHeadCheckpoint) -> Double? {
      guard !indices.isEmpty else { return nil }
      let right = indices.filter { head.reward(feature: features[2 * $0]) > head.reward(feature: features[2 * $0 + 1]) }
      return Double(right.count) / Double(indices.count)
    }
    let provisional = RewardHeadManifest(
      baseModel: .init(name: base.name, sha256: base.sha256), hiddenSize: base.hiddenSize, input: options.input,
      metrics: .init(heldoutAccuracy: nil, trainPairs: split.train.count, heldoutPairs: split.heldout.count))
    var checkpoint = try RewardHeadCheckpoint(manifest: provisional, weight: weight, bias: bias)
    let heldoutAccuracy = accuracy(split.heldout, checkpoint)
    checkpoint.manifest.metrics.heldoutAccuracy = heldoutAccuracy
    return RewardHeadTrainingResult(
      checkpoint: checkpoint, trainAccuracy: accuracy(split.train, checkpoint) ?? 0, heldoutAccuracy: heldoutAccuracy,
      trainIndices: split.train, heldoutIndices: split.heldout, loss: fit.loss, iterations: fit.iterations,
      directory: nil)
  }

  /// Trains a head and writes its checkpoint folder (what `alignctl train-reward` calls).
  /// - Throws: as ``train(_:options:progress:)``; ``RewardHeadError/outputExists(path:)`` when
  ///   `directory` is not empty; file system errors.
  public func train(
    _ pairs: [PreferencePair], options: RewardHeadTrainingOptions = RewardHeadTrainingOptions(),
    writeTo directory: String, progress: ((_ done: Int, _ total: Int) -> Void)? = nil
  ) throws -> RewardHeadTrainingResult {
    let target = URL(fileURLWithPath: directory).standardizedFileURL.path
    if let existing = try? FileManager.default.contentsOfDirectory(atPath: target), !existing.isEmpty {
      throw RewardHeadError.outputExists(path: target)
    }
    var result = try train(pairs, options: options, progress: progress)
    try result.checkpoint.write(to: target)
    result.directory = target
    return result
  }

  /// The deterministic held-out split: a seeded Fisher–Yates shuffle of the pair indices, the first
  /// `round(count × fraction)` held out (at least one when the fraction is positive and count ≥ 2),
  /// each part sorted.
  public static func split(count: Int, heldoutFraction: Double, seed: UInt64) -> (train: [Int], heldout: [Int]) {
    var order = Array(0..<count)
    var rng = Xoshiro256(seed: seed)
    if count > 1 {
      for i in stride(from: count - 1, to: 0, by: -1) {
        let j = Int(rng.next() % UInt64(i + 1))
        order.swapAt(i, j)
      }
    }
    var held = Int((Double(count) * heldoutFraction).rounded())
    if heldoutFraction > 0, count >= 2 { held = max(held, 1) }
    held = min(held, count - 1)
    held = max(held, 0)
    return (Array(order[held...]).sorted(), Array(order[..<held]).sorted())
  }

  /// Fits Bradley–Terry weights on feature pairs: standardizes features (mean and deviation over
  /// all training features), minimizes mean softplus(−w·(z_c − z_r)) + (l2/2)‖w‖² with L-BFGS, folds
  /// the standardization back (w_j / σ_j) and sets the bias so the training rewards average zero.
  /// - Returns: raw-feature weights, bias, the final objective and the iterations run.
  public static func fit(
    chosen: [[Float]], rejected: [[Float]], l2: Double, maxIterations: Int = 500
  ) -> (weight: [Double], bias: Double, loss: Double, iterations: Int) {
    let n = min(chosen.count, rejected.count)
    guard n > 0, let d = chosen.first?.count, d > 0 else { return ([], 0, 0, 0) }
    // Per-dimension deviation over the 2n training features (the mean cancels in differences).
    var mean = [Double](repeating: 0, count: d)
    for f in chosen.prefix(n) + rejected.prefix(n) { for j in 0..<d { mean[j] += Double(f[j]) } }
    for j in 0..<d { mean[j] /= Double(2 * n) }
    var scale = [Double](repeating: 0, count: d)
    for f in chosen.prefix(n) + rejected.prefix(n) {
      for j in 0..<d {
        let c = Double(f[j]) - mean[j]
        scale[j] += c * c
      }
    }
    for j in 0..<d {
      let s = (scale[j] / Double(2 * n)).squareRoot()
      scale[j] = s > 1e-8 ? s : 1
    }
    // (n, d) standardized differences.
    var x = [Double](repeating: 0, count: n * d)
    for i in 0..<n {
      for j in 0..<d { x[i * d + j] = (Double(chosen[i][j]) - Double(rejected[i][j])) / scale[j] }
    }
    let objective = BradleyTerryObjective(x: x, n: n, d: d, l2: l2)
    let (w, loss, iterations) = LBFGS.minimize(objective, start: [Double](repeating: 0, count: d), maxIterations: maxIterations)
    let weight = (0..<d).map { w[$0] / scale[$0] }
    var meanReward = 0.0
    for f in chosen.prefix(n) + rejected.prefix(n) {
      for j in 0..<d { meanReward += weight[j] * Double(f[j]) }
    }
    meanReward /= Double(2 * n)
    return (weight, -meanReward, loss, iterations)
  }
}

/// mean softplus(−w·x_i) + (l2/2)‖w‖² and its gradient.
struct BradleyTerryObjective {
  let x: [Double]  // (n, d)
  let n: Int
  let d: Int
  let l2: Double

  func value(_ w: [Double], gradient g: inout [Double]) -> Double {
    var loss = 0.0
    for j in 0..<d { g[j] = l2 * w[j] }
    x.withUnsafeBufferPointer { xb in
      for i in 0..<n {
        let row = xb.baseAddress! + i * d
        var m = 0.0
        for j in 0..<d { m += w[j] * row[j] }
        // softplus(−m) = log(1 + e^(−m)), stable for both signs; its derivative in m is −σ(−m).
        loss += m > 0 ? log1p(exp(-m)) : -m + log1p(exp(m))
        let s = m > 0 ? exp(-m) / (1 + exp(-m)) : 1 / (1 + exp(m))
        let coef = -s / Double(n)
        for j in 0..<d { g[j] += coef * row[j] }
      }
    }
    var norm = 0.0
    for j in 0..<d { norm += w[j] * w[j] }
    return loss / Double(n) + 0.5 * l2 * norm
  }
}

/// Limited-memory BFGS with a backtracking (Armijo) line search; deterministic.
enum LBFGS {
  static func minimize(
    _ f: BradleyTerryObjective, start: [Double], maxIterations: Int, memory: Int = 10
  ) -> (x: [Double], value: Double, iterations: Int) {
    let d = start.count
    var x = start
    var g = [Double](repeating: 0, count: d)
    var fx = f.value(x, gradient: &g)
    var sHist: [[Double]] = []
    var yHist: [[Double]] = []
    var rhoHist: [Double] = []
    func dot(_ a: [Double], _ b: [Double]) -> Double {
      var s = 0.0
      for i in 0..<a.count { s += a[i] * b[i] }
      return s
    }
    var iterations = 0
    while iterations < maxIterations {
      if g.map(abs).max() ?? 0 < 1e-9 { break }
      // Two-loop recursion: direction = −H·g.
      var q = g
      var alphas = [Double](repeating: 0, count: sHist.count)
      for k in stride(from: sHist.count - 1, through: 0, by: -1) {
        alphas[k] = rhoHist[k] * dot(sHist[k], q)
        for i in 0..<d { q[i] -= alphas[k] * yHist[k][i] }
      }
      if let s = sHist.last, let y = yHist.last {
        let gamma = dot(s, y) / dot(y, y)
        for i in 0..<d { q[i] *= gamma }
      } else {
        let gn = dot(g, g).squareRoot()
        for i in 0..<d { q[i] /= max(gn, 1) }
      }
      for k in 0..<sHist.count {
        let beta = rhoHist[k] * dot(yHist[k], q)
        for i in 0..<d { q[i] += sHist[k][i] * (alphas[k] - beta) }
      }
      var direction = q.map { -$0 }
      var slope = dot(g, direction)
      if slope >= 0 {
        // Not a descent direction (numerical trouble): restart from steepest descent.
        direction = g.map { -$0 }
        slope = -dot(g, g)
        sHist.removeAll()
        yHist.removeAll()
        rhoHist.removeAll()
      }
      var step = 1.0
      var xNew = x
      var gNew = g
      var fNew = fx
      var accepted = false
      for _ in 0..<40 {
        for i in 0..<d { xNew[i] = x[i] + step * direction[i] }
        fNew = f.value(xNew, gradient: &gNew)
        if fNew <= fx + 1e-4 * step * slope {
          accepted = true
          break
        }
        step *= 0.5
      }
      iterations += 1
      if !accepted { break }
      let s = (0..<d).map { xNew[$0] - x[$0] }
      let y = (0..<d).map { gNew[$0] - g[$0] }
      let sy = dot(s, y)
      let improvement = fx - fNew
      x = xNew
      g = gNew
      fx = fNew
      if sy > 1e-12 {
        sHist.append(s)
        yHist.append(y)
        rhoHist.append(1 / sy)
        if sHist.count > memory {
          sHist.removeFirst()
          yHist.removeFirst()
          rhoHist.removeFirst()
        }
      }
      if improvement <= 1e-12 * max(1, abs(fx)) { break }
    }
    return (x, fx, iterations)
  }
}
