import AlignEngine
import Foundation

/// A preference file that cannot be read, with the line and the reason.
public struct PreferenceFileError: Error, CustomStringConvertible, Equatable {
  public var description: String
  public init(_ description: String) { self.description = description }
}

/// TRL preference JSONL, as `alignctl feedback upload` reads it and `feedback export --format trl`
/// writes it: one JSON object per line with
/// - the standard form: `prompt`, `chosen`, `rejected` strings, or
/// - the conversational form: `prompt` a list of `{role, content}` messages, `chosen` and `rejected`
///   each a list holding the assistant's message (or a string);
/// and an optional `source` string (figures are reported per source; another string field can stand
/// in for it, e.g. the `kind` of the default reward model's splits). Blank lines are skipped.
public enum PreferenceFile {
  /// The examples of the file at `path`.
  /// - Throws: ``PreferenceFileError`` naming the file, the line and what is wrong.
  public static func read(path: String, sourceField: String = "source") throws(PreferenceFileError) -> [PreferenceExample] {
    guard let data = FileManager.default.contents(atPath: path) else {
      throw PreferenceFileError("cannot read \(path)")
    }
    return try parse(String(decoding: data, as: UTF8.self), name: path, sourceField: sourceField)
  }

  /// The examples of JSONL text (`name` labels errors).
  public static func parse(_ text: String, name: String, sourceField: String = "source") throws(PreferenceFileError)
    -> [PreferenceExample]
  {
    var examples: [PreferenceExample] = []
    for (index, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
      let trimmed = line.trimmingCharacters(in: .whitespaces)
      if trimmed.isEmpty { continue }
      func bad(_ reason: String) -> PreferenceFileError { PreferenceFileError("\(name) line \(index + 1): \(reason)") }
      guard let row = (try? JSONSerialization.jsonObject(with: Data(trimmed.utf8))) as? [String: Any] else {
        throw bad("not a JSON object")
      }
      let context: RewardInput.Context
      switch row["prompt"] {
      case let prompt as String: context = .prompt(prompt)
      case let messages as [Any]: context = .messages(try Self.messages(messages, bad))
      default: throw bad("prompt must be a string or a list of messages")
      }
      func response(_ key: String) throws(PreferenceFileError) -> String {
        switch row[key] {
        case let text as String: return text
        case let messages as [Any]:
          let turns = try Self.messages(messages, bad)
          guard let last = turns.last, last.role == "assistant" else {
            throw bad("\(key) must end with an assistant message")
          }
          return last.content
        default: throw bad("\(key) must be a string or a list of messages")
        }
      }
      let source: String?
      switch row[sourceField] {
      case nil, is NSNull: source = nil
      case let s as String: source = s
      default: throw bad("\(sourceField) must be a string")
      }
      examples.append(PreferenceExample(context: context, chosen: try response("chosen"), rejected: try response("rejected"), source: source))
    }
    return examples
  }

  private static func messages(_ list: [Any], _ bad: (String) -> PreferenceFileError) throws(PreferenceFileError) -> [ChatMessage] {
    var out: [ChatMessage] = []
    for item in list {
      guard let m = item as? [String: Any], let role = m["role"] as? String, let content = m["content"] as? String else {
        throw bad("a message must be an object with string role and content")
      }
      out.append(ChatMessage(role: role, content: content))
    }
    guard !out.isEmpty else { throw bad("empty message list") }
    return out
  }

  /// At most `limit` examples spread evenly over `examples` (every k-th), so a subset keeps the
  /// file's mix of sources.
  public static func evenlySpaced<Example>(_ examples: [Example], limit: Int) -> [Example] {
    guard limit > 0, examples.count > limit else { return examples }
    return (0..<limit).map { examples[$0 * examples.count / limit] }
  }
}

extension RewardEvaluation {
  /// Scores both responses of every example through `scorer` (its batcher), `chunk` pairs at a
  /// time, and evaluates them.
  public static func evaluate(_ examples: [PreferenceExample], scorer: RewardScorer, chunk: Int = 32) async throws
    -> RewardEvaluation
  {
    try await scored(examples, scorer: scorer, chunk: chunk, skippingRefused: false).evaluation
  }

  /// ``evaluate(_:scorer:chunk:)`` over the pairs `scorer` can take: a chunk the model refuses
  /// (``InvalidRequest``, e.g. a text longer than its context) is scored pair by pair and the
  /// pairs it refuses are left out. Returns the evaluation and the pairs it covers, so a second
  /// model can be compared on exactly those.
  public static func evaluateSkippingRefused(_ examples: [PreferenceExample], scorer: RewardScorer, chunk: Int = 32) async throws
    -> (evaluation: RewardEvaluation, kept: [PreferenceExample])
  {
    try await scored(examples, scorer: scorer, chunk: chunk, skippingRefused: true)
  }

  private static func scored(
    _ examples: [PreferenceExample], scorer: RewardScorer, chunk: Int, skippingRefused: Bool
  ) async throws -> (evaluation: RewardEvaluation, kept: [PreferenceExample]) {
    var kept: [PreferenceExample] = []
    var chosen: [Double] = []
    var rejected: [Double] = []
    func score(_ batch: ArraySlice<PreferenceExample>) async throws {
      let rewards = try await scorer.score(
        batch.flatMap { [RewardInput(context: $0.context, response: $0.chosen), RewardInput(context: $0.context, response: $0.rejected)] })
      kept += batch
      for i in stride(from: 0, to: rewards.count, by: 2) {
        chosen.append(rewards[i])
        rejected.append(rewards[i + 1])
      }
    }
    for start in stride(from: 0, to: examples.count, by: max(1, chunk)) {
      let batch = examples[start..<min(examples.count, start + max(1, chunk))]
      do {
        try await score(batch)
      } catch is InvalidRequest where skippingRefused {
        for i in batch.indices {
          do { try await score(batch[i...i]) } catch is InvalidRequest {}
        }
      }
    }
    return (RewardEvaluation(examples: kept, chosen: chosen, rejected: rejected), kept)
  }

  /// One line: accuracy, margin and ECE overall, e.g. `accuracy 0.812 (325/400), mean margin 1.21, ECE 0.031`.
  public var summary: String {
    String(
      format: "accuracy %.3f (%d/%d), mean margin %.2f, ECE %.3f", overall.accuracy, overall.correct, overall.pairs,
      overall.meanMargin, overall.calibrationError)
  }

  /// The figures as compact JSON (sorted keys), as recorded on a checkpoint.
  public var json: String {
    let encoder = JSONEncoder()
    encoder.outputFormatting = .sortedKeys
    return String(decoding: (try? encoder.encode(self)) ?? Data(), as: UTF8.self)
  }
}
