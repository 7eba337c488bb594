import AlignServing
import AlignStore

extension LiveSignals {
  /// Metadata keys naming the policy versions of a preference's two completions (a preference
  /// record carries one set of versions; a comparison of two versions names both here).
  public static let chosenVersionKey = "chosen_policy_version"
  public static let rejectedVersionKey = "rejected_policy_version"

  /// Counts a stored feedback record for the canary analysis, when it names the policy versions
  /// it judges: a rating of a version's completion (mapped onto 0...1 by its scale), or a
  /// preference between two versions' completions (metadata ``chosenVersionKey`` and
  /// ``rejectedVersionKey``). Other feedback says nothing about a version and is ignored.
  public func record(_ item: FeedbackItem) {
    switch item.payload {
    case .rating(let rating):
      guard !item.policyVersion.isEmpty, rating.scaleMax > rating.scaleMin else { return }
      recordFeedback(
        version: item.policyVersion,
        outcome: .rating((rating.value - rating.scaleMin) / (rating.scaleMax - rating.scaleMin)))
    case .preference:
      guard let chosen = item.metadata[Self.chosenVersionKey], let rejected = item.metadata[Self.rejectedVersionKey],
        !chosen.isEmpty, !rejected.isEmpty
      else { return }
      recordPreference(chosen: chosen, rejected: rejected)
    case .ranking, .safetyLabel, .comment:
      return
    }
  }
}
