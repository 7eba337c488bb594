/// Size bounds for feedback items. Sizes are UTF-8 bytes.
public struct FeedbackLimits: Sendable, Hashable {
  /// Longest idempotency key, in characters (at least 1 is required).
  public var maxIdempotencyKeyCharacters: Int = 200
  /// Largest text field (prompt, completion, chosen, rejected, each ranked completion, text).
  public var maxTextBytes: Int = 256 * 1024
  /// Largest identifier field (response id, versions, annotator id, a category, a metadata key).
  public var maxIdentifierBytes: Int = 1024
  /// Most metadata entries.
  public var maxMetadataEntries: Int = 64
  /// Largest metadata value.
  public var maxMetadataValueBytes: Int = 4096
  /// Most completions in a ranking.
  public var maxRankingCompletions: Int = 64
  /// Most categories in a safety label.
  public var maxCategories: Int = 64
  /// Largest item, all text fields together.
  public var maxItemBytes: Int = 4 * 1024 * 1024

  /// The default bounds.
  public static let `default` = FeedbackLimits()

  /// Creates the default bounds; adjust fields as needed.
  public init() {}
}

/// Checks feedback items before they are stored.
public enum FeedbackValidation {
  /// Returns why `item` must be rejected, or nil if it is acceptable.
  ///
  /// - Parameters:
  ///   - item: the item to check.
  ///   - limits: size bounds.
  /// - Returns: a short human-readable reason, or nil.
  public static func validate(_ item: FeedbackItem, limits: FeedbackLimits = .default) -> String? {
    let key = item.idempotencyKey
    if key.isEmpty { return "idempotency_key is empty" }
    if key.count > limits.maxIdempotencyKeyCharacters {
      return "idempotency_key is longer than \(limits.maxIdempotencyKeyCharacters) characters"
    }
    if key.utf8.count > limits.maxIdentifierBytes {
      return "idempotency_key is longer than \(limits.maxIdentifierBytes) bytes"
    }
    if item.createdAtUnixMs < 0 { return "created_at_unix_ms is negative" }

    var total = 0
    func identifier(_ value: String, _ name: String) -> String? {
      total += value.utf8.count
      return value.utf8.count > limits.maxIdentifierBytes
        ? "\(name) is longer than \(limits.maxIdentifierBytes) bytes" : nil
    }
    func text(_ value: String, _ name: String, required: Bool) -> String? {
      total += value.utf8.count
      if required && value.isEmpty { return "\(name) is empty" }
      return value.utf8.count > limits.maxTextBytes
        ? "\(name) is longer than \(limits.maxTextBytes) bytes" : nil
    }

    for (value, name) in [
      (item.responseID, "response_id"), (item.policyVersion, "versions.policy"),
      (item.rewardVersion, "versions.reward"), (item.safetyVersion, "versions.safety"),
      (item.annotatorID, "annotator_id"),
    ] {
      if let reason = identifier(value, name) { return reason }
    }

    if item.metadata.count > limits.maxMetadataEntries {
      return "metadata has more than \(limits.maxMetadataEntries) entries"
    }
    for (name, value) in item.metadata.sorted(by: { $0.key < $1.key }) {
      if name.isEmpty { return "metadata has an empty key" }
      if let reason = identifier(name, "metadata key") { return reason }
      total += value.utf8.count
      if value.utf8.count > limits.maxMetadataValueBytes {
        return "metadata[\(name)] is longer than \(limits.maxMetadataValueBytes) bytes"
      }
    }

    let payloadReason: String?
    switch item.payload {
    case .rating(let r):
      payloadReason = validateRating(r, text: text)
    case .preference(let p):
      payloadReason =
        text(p.prompt, "preference.prompt", required: true)
        ?? text(p.chosen, "preference.chosen", required: true)
        ?? text(p.rejected, "preference.rejected", required: true)
        ?? (p.chosen == p.rejected ? "preference.chosen equals preference.rejected" : nil)
    case .ranking(let r):
      if r.completions.count < 2 {
        payloadReason = "ranking needs at least 2 completions, got \(r.completions.count)"
      } else if r.completions.count > limits.maxRankingCompletions {
        payloadReason = "ranking has more than \(limits.maxRankingCompletions) completions"
      } else {
        var reason = text(r.prompt, "ranking.prompt", required: true)
        for (i, completion) in r.completions.enumerated() where reason == nil {
          reason = text(completion, "ranking.completions[\(i)]", required: true)
        }
        payloadReason = reason
      }
    case .safetyLabel(let s):
      if s.categories.count > limits.maxCategories {
        payloadReason = "safety_label has more than \(limits.maxCategories) categories"
      } else {
        var reason = text(s.text, "safety_label.text", required: true)
        for (i, category) in s.categories.enumerated() where reason == nil {
          if category.isEmpty {
            reason = "safety_label.categories[\(i)] is empty"
          } else {
            reason = identifier(category, "safety_label.categories[\(i)]")
          }
        }
        payloadReason = reason
      }
    case .comment(let c):
      payloadReason = text(c.text, "comment.text", required: true)
    }
    if let payloadReason { return payloadReason }
    if total > limits.maxItemBytes {
      return "record is larger than \(limits.maxItemBytes) bytes in all"
    }
    return nil
  }

  private static func validateRating(
    _ r: FeedbackRating, text: (String, String, Bool) -> String?
  ) -> String? {
    if let reason = text(r.prompt, "rating.prompt", false) { return reason }
    if let reason = text(r.completion, "rating.completion", true) { return reason }
    guard r.value.isFinite, r.scaleMin.isFinite, r.scaleMax.isFinite else {
      return "rating value and scale must be finite numbers"
    }
    guard r.scaleMin < r.scaleMax else {
      return "rating.scale_min (\(r.scaleMin)) must be less than rating.scale_max (\(r.scaleMax))"
    }
    guard r.value >= r.scaleMin && r.value <= r.scaleMax else {
      return "rating.value \(r.value) is outside the scale [\(r.scaleMin), \(r.scaleMax)]"
    }
    return nil
  }
}
