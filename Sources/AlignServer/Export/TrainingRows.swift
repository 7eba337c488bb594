import AlignAPI
import Foundation

/// Training rows from stored records, in the shapes trainers read (Docs/EXPORTS.md): TRL
/// preference pairs (standard and conversational), KTO unpaired examples, SFT prompt-completion
/// pairs from corrections, and on-policy rollouts from the generation log.
///
/// Every row carries, besides the trainer's columns, the versions that produced its texts and the
/// ids it came from (trainers ignore extra columns). Conversational rows take the prompt's chat
/// messages from the generation log when the feedback names a logged completion; otherwise the
/// stored prompt text becomes one user message.
public enum TrainingRows {
  public typealias Row = [String: Any]
  public typealias Messages = [[String: String]]

  /// Where a feedback record came from: `app` (POST /v1/feedback, SubmitFeedback) or `admin`.
  public static func source(_ record: Alignd_V1_FeedbackRecord) -> String {
    record.metadata["source"] == "app" ? "app" : "admin"
  }

  /// The record's feedback type: the app's judgement (rating, thumbs, preference, correction,
  /// safety_label), or the stored kind for admin records.
  public static func feedbackType(_ record: Alignd_V1_FeedbackRecord) -> String {
    if let type = record.metadata["feedback_type"], !type.isEmpty { return type }
    switch record.kind {
    case .preference: return "preference"
    case .rating: return "rating"
    case .ranking: return "ranking"
    case .safetyLabel: return "safety_label"
    case .comment: return "comment"
    case nil: return "unspecified"
    }
  }

  /// The logged completion whose conversation a record's conversational rows take their prompt
  /// from (app feedback names it).
  public static func loggedCompletionID(_ record: Alignd_V1_FeedbackRecord) -> String? {
    record.metadata["chosen_completion_id"] ?? record.metadata["completion_id"]
  }

  public static func messages(_ logged: [Alignd_V1_ChatMessage]) -> Messages {
    logged.map { ["role": $0.role, "content": $0.content] }
  }

  public static func assistant(_ text: String) -> Messages { [["role": "assistant", "content": text]] }

  /// The prompt as chat messages: the logged conversation, or the stored prompt as one user turn.
  public static func conversation(_ prompt: String, logged: Messages?) -> Messages {
    if let logged, !logged.isEmpty { return logged }
    return [["role": "user", "content": prompt]]
  }

  /// The provenance columns of a feedback row.
  public static func provenance(_ stored: Alignd_V1_StoredFeedback) -> Row {
    let record = stored.record
    var row: Row = [
      "policy_version": record.versions.policy, "reward_version": record.versions.reward,
      "feedback_id": Int(clamping: stored.id), "feedback_type": feedbackType(record), "source": source(record),
    ]
    for key in [
      "chosen_policy_version", "rejected_policy_version", "chosen_completion_id", "rejected_completion_id",
      "completion_id",
    ] {
      if let value = record.metadata[key] { row[key] = value }
    }
    return row
  }

  /// Preference pairs: one per preference (a correction is one: corrected over original), one
  /// per ordered pair of a ranking (a > b > c gives a/b, a/c, b/c).
  public static func preference(_ stored: Alignd_V1_StoredFeedback, chat: Bool, logged: Messages?) -> [Row] {
    let pairs: [(prompt: String, chosen: String, rejected: String)]
    switch stored.record.kind {
    case .preference(let p): pairs = [(p.prompt, p.chosen, p.rejected)]
    case .ranking(let r):
      pairs = r.completions.indices.flatMap { i in
        r.completions.indices.filter { $0 > i }.map { j in (r.prompt, r.completions[i], r.completions[j]) }
      }
    default: pairs = []
    }
    let base = provenance(stored)
    return pairs.map { pair in
      var row = base
      if chat {
        row["prompt"] = conversation(pair.prompt, logged: logged)
        row["chosen"] = assistant(pair.chosen)
        row["rejected"] = assistant(pair.rejected)
      } else {
        (row["prompt"], row["chosen"], row["rejected"]) = (pair.prompt, pair.chosen, pair.rejected)
      }
      return row
    }
  }

  /// KTO's unpaired examples from ratings and thumbs: label true above the scale's midpoint,
  /// false below it; a rating at the midpoint says neither and yields no row.
  public static func kto(_ stored: Alignd_V1_StoredFeedback, chat: Bool, logged: Messages?) -> [Row] {
    guard case .rating(let rating) = stored.record.kind, rating.scaleMax > rating.scaleMin else { return [] }
    let position = (rating.value - rating.scaleMin) / (rating.scaleMax - rating.scaleMin)
    guard position != 0.5 else { return [] }
    var row = provenance(stored)
    row["label"] = position > 0.5
    row["rating"] = rating.value
    if chat {
      row["prompt"] = conversation(rating.prompt, logged: logged)
      row["completion"] = assistant(rating.completion)
    } else {
      (row["prompt"], row["completion"]) = (rating.prompt, rating.completion)
    }
    return [row]
  }

  /// SFT examples from corrections: the prompt and the corrected text (the original it replaced
  /// is kept as `rejected_completion` for reference).
  public static func sft(_ stored: Alignd_V1_StoredFeedback, chat: Bool, logged: Messages?) -> [Row] {
    guard feedbackType(stored.record) == "correction", case .preference(let p) = stored.record.kind else { return [] }
    var row = provenance(stored)
    row["rejected_completion"] = p.rejected
    if chat {
      row["messages"] = conversation(p.prompt, logged: logged) + assistant(p.chosen)
    } else {
      (row["prompt"], row["completion"]) = (p.prompt, p.chosen)
    }
    return [row]
  }

  /// An on-policy rollout: the prompt as the policy saw it, the completion's sampled token ids
  /// and their log-probabilities (empty when the request did not compute them), the reward when
  /// one was computed (null otherwise) and the versions.
  public static func rollout(_ logged: Alignd_V1_LoggedCompletion) -> Row {
    var row: Row = [
      "prompt": logged.prompt,
      "completion": logged.text,
      "completion_id": logged.completionID,
      "response_id": logged.responseID,
      "completion_token_ids": logged.tokenIds.map { Int($0) },
      "completion_logprobs": logged.tokenLogprobs.map { Double($0) },
      "reward": logged.hasReward ? logged.reward as Any : NSNull(),
      "finish_reason": logged.finishReason,
      "policy_version": logged.versions.policy,
      "reward_version": logged.versions.reward,
      "safety_version": logged.versions.safety,
      "sampling": logged.samplingJson,
      "created_at_unix_ms": Int(logged.createdAtUnixMs),
      "redacted": logged.redacted,
    ]
    row["messages"] = logged.messages.isEmpty ? NSNull() : messages(logged.messages)
    return row
  }

  /// One row as a JSON line (sorted keys, so equal rows are equal text).
  public static func json(_ row: Row) throws -> String {
    let data = try JSONSerialization.data(withJSONObject: row, options: [.sortedKeys, .withoutEscapingSlashes])
    return String(decoding: data, as: UTF8.self)
  }
}
