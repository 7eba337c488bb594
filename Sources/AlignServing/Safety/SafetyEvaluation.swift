import Foundation

/// A labelled text to evaluate a safety checker on: its moderation categories, or none (benign).
public struct LabelledText: Sendable, Equatable {
  public var text: String
  /// Moderation categories the text belongs to; empty for a benign text.
  public var labels: [SafetyCategory]
  /// For benign texts, the topic (e.g. `medicine`, `idioms`), when the data names one.
  public var topic: String?
  /// For benign texts, whether they use a word a harmful text would (kill, shoot, drugs, …)
  /// harmlessly, when the data says.
  public var trigger: Bool

  public init(text: String, labels: [SafetyCategory], topic: String? = nil, trigger: Bool = false) {
    self.text = text
    self.labels = labels
    self.topic = topic
    self.trigger = trigger
  }

  /// JSONL rows with `text`, `labels` (a list of category names) and optionally `topic` and
  /// `trigger` (Tests/Fixtures/safety/heldout-test.jsonl, the safety gate's file).
  /// - Throws: ``PreferenceFileError`` naming the line and the problem.
  public static func read(path: String) throws(PreferenceFileError) -> [LabelledText] {
    guard let data = FileManager.default.contents(atPath: path) else { throw PreferenceFileError("cannot read \(path)") }
    var out: [LabelledText] = []
    for (i, line) in String(decoding: data, as: UTF8.self).split(separator: "\n").enumerated() {
      guard let row = (try? JSONSerialization.jsonObject(with: Data(line.utf8))) as? [String: Any],
        let text = row["text"] as? String, let labels = row["labels"] as? [String]
      else { throw PreferenceFileError("\(path) line \(i + 1): needs a string text and a list of labels") }
      let categories = labels.map { SafetyCategory(rawValue: $0) }
      guard categories.allSatisfy({ SafetyCategory.moderation.contains($0) }) else {
        throw PreferenceFileError("\(path) line \(i + 1): a label is not a moderation category: \(labels)")
      }
      out.append(
        LabelledText(
          text: text, labels: categories, topic: (row["topic"] as? String).flatMap { $0.isEmpty ? nil : $0 },
          trigger: row["trigger"] as? Bool ?? false))
    }
    return out
  }
}

/// How a safety checker does on labelled texts at its policy's thresholds: the share of harmful
/// texts flagged (in any moderation category), per labelled category, and the share of benign
/// texts flagged (false positives), overall and per topic.
public struct SafetyEvaluation: Sendable, Codable, Equatable {
  public struct Rate: Sendable, Codable, Equatable {
    public var count: Int
    public var flagged: Int
    public var rate: Double { count == 0 ? 0 : Double(flagged) / Double(count) }

    enum CodingKeys: String, CodingKey { case count, flagged, rate }
    public init(count: Int, flagged: Int) {
      self.count = count
      self.flagged = flagged
    }
    public init(from decoder: any Decoder) throws {
      let c = try decoder.container(keyedBy: CodingKeys.self)
      count = try c.decode(Int.self, forKey: .count)
      flagged = try c.decode(Int.self, forKey: .flagged)
    }
    public func encode(to encoder: any Encoder) throws {
      var c = encoder.container(keyedBy: CodingKeys.self)
      try c.encode(count, forKey: .count)
      try c.encode(flagged, forKey: .flagged)
      try c.encode(rate, forKey: .rate)
    }
  }

  /// Harmful texts flagged in any moderation category.
  public var harmfulRecall: Rate
  /// Per category: texts labelled with it that were flagged in any moderation category.
  public var recallByCategory: [String: Rate]
  /// Benign texts flagged in any moderation category.
  public var benignFalsePositives: Rate
  /// Benign texts that use a trigger word harmlessly.
  public var triggerFalsePositives: Rate
  /// Per topic of the benign texts that name one.
  public var falsePositivesByTopic: [String: Rate]

  enum CodingKeys: String, CodingKey {
    case harmfulRecall = "harmful_recall"
    case recallByCategory = "recall_by_category"
    case benignFalsePositives = "benign_false_positives"
    case triggerFalsePositives = "trigger_false_positives"
    case falsePositivesByTopic = "false_positives_by_topic"
  }

  /// Evaluates verdicts already computed (`flagged[i]`: whether `texts[i]` was flagged in a
  /// moderation category).
  public init(texts: [LabelledText], flagged: [Bool]) {
    precondition(texts.count == flagged.count)
    var harmful = Rate(count: 0, flagged: 0)
    var benign = Rate(count: 0, flagged: 0)
    var trigger = Rate(count: 0, flagged: 0)
    var byCategory: [String: Rate] = [:]
    var byTopic: [String: Rate] = [:]
    for (t, f) in zip(texts, flagged) {
      let hit = f ? 1 : 0
      if t.labels.isEmpty {
        benign.count += 1
        benign.flagged += hit
        if t.trigger {
          trigger.count += 1
          trigger.flagged += hit
        }
        if let topic = t.topic { byTopic[topic, default: Rate(count: 0, flagged: 0)].count += 1; byTopic[topic]!.flagged += hit }
      } else {
        harmful.count += 1
        harmful.flagged += hit
        for category in Set(t.labels) {
          byCategory[category.rawValue, default: Rate(count: 0, flagged: 0)].count += 1
          byCategory[category.rawValue]!.flagged += hit
        }
      }
    }
    harmfulRecall = harmful
    benignFalsePositives = benign
    triggerFalsePositives = trigger
    recallByCategory = byCategory
    falsePositivesByTopic = byTopic
  }

  /// Checks every text with `checker` (default profile), `chunk` texts per call.
  public static func evaluate(_ texts: [LabelledText], checker: SafetyChecker, chunk: Int = 64) async throws -> SafetyEvaluation {
    var flagged: [Bool] = []
    for start in stride(from: 0, to: texts.count, by: max(1, chunk)) {
      let batch = texts[start..<min(texts.count, start + max(1, chunk))]
      let verdicts = try await checker.check(batch.map { SafetyInput(text: $0.text) })
      flagged += verdicts.map { $0.flaggedCategories.contains(where: SafetyCategory.moderation.contains) }
    }
    return SafetyEvaluation(texts: texts, flagged: flagged)
  }

  /// One line: recall on harmful texts and false positives on benign ones.
  public var summary: String {
    String(
      format: "harmful flagged %.3f (%d/%d), benign false positives %.3f (%d/%d)", harmfulRecall.rate,
      harmfulRecall.flagged, harmfulRecall.count, benignFalsePositives.rate, benignFalsePositives.flagged,
      benignFalsePositives.count)
  }
}
