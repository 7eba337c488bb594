import AlignAPI
import AlignServing
import AlignStore

/// Converts between the Admin API's feedback messages and the store's plain types.
enum FeedbackMapping {
  /// The store item for a record, or the reason it cannot be one.
  static func item(_ record: Alignd_V1_FeedbackRecord) -> Result<FeedbackItem, FeedbackRejection> {
    let payload: FeedbackPayload
    switch record.kind {
    case .rating(let r):
      payload = .rating(
        FeedbackRating(prompt: r.prompt, completion: r.completion, value: r.value, scaleMin: r.scaleMin, scaleMax: r.scaleMax))
    case .preference(let p):
      payload = .preference(FeedbackPreference(prompt: p.prompt, chosen: p.chosen, rejected: p.rejected))
    case .ranking(let r):
      payload = .ranking(FeedbackRanking(prompt: r.prompt, completions: r.completions))
    case .safetyLabel(let s):
      payload = .safetyLabel(FeedbackSafetyLabel(text: s.text, categories: s.categories))
    case .comment(let c):
      payload = .comment(FeedbackComment(text: c.text))
    case nil:
      return .failure(FeedbackRejection(reason: "the record has no kind (rating, preference, ranking, safety_label or comment)"))
    }
    return .success(
      FeedbackItem(
        idempotencyKey: record.idempotencyKey, responseID: record.responseID,
        policyVersion: record.versions.policy, rewardVersion: record.versions.reward,
        safetyVersion: record.versions.safety, annotatorID: record.annotatorID, metadata: record.metadata,
        createdAtUnixMs: record.createdAtUnixMs, payload: payload))
  }

  static func record(_ stored: StoredFeedbackItem) -> Alignd_V1_StoredFeedback {
    let item = stored.item
    return .with { out in
      out.id = UInt64(stored.id)
      out.receivedAtUnixMs = stored.receivedAtUnixMs
      out.record = .with {
        $0.idempotencyKey = item.idempotencyKey
        $0.responseID = item.responseID
        $0.versions = .with { v in
          v.policy = item.policyVersion
          v.reward = item.rewardVersion
          v.safety = item.safetyVersion
        }
        $0.annotatorID = item.annotatorID
        $0.metadata = item.metadata
        $0.createdAtUnixMs = item.createdAtUnixMs
        switch item.payload {
        case .rating(let r):
          $0.rating = .with {
            $0.prompt = r.prompt
            $0.completion = r.completion
            $0.value = r.value
            $0.scaleMin = r.scaleMin
            $0.scaleMax = r.scaleMax
          }
        case .preference(let p):
          $0.preference = .with {
            $0.prompt = p.prompt
            $0.chosen = p.chosen
            $0.rejected = p.rejected
          }
        case .ranking(let r):
          $0.ranking = .with {
            $0.prompt = r.prompt
            $0.completions = r.completions
          }
        case .safetyLabel(let s):
          $0.safetyLabel = .with {
            $0.text = s.text
            $0.categories = s.categories
          }
        case .comment(let c):
          $0.comment = .with { $0.text = c.text }
        }
      }
    }
  }

  static func kind(_ kind: Alignd_V1_FeedbackKind) -> FeedbackKind? {
    switch kind {
    case .rating: return .rating
    case .preference: return .preference
    case .ranking: return .ranking
    case .safetyLabel: return .safetyLabel
    case .comment: return .comment
    default: return nil
    }
  }

  static func filter(_ request: Alignd_V1_ExportFeedbackRequest) throws -> FeedbackFilter {
    var kinds: Set<FeedbackKind> = []
    for kind in request.kinds {
      guard let mapped = Self.kind(kind) else {
        throw InvalidRequest("kinds: \(kind) is not a feedback kind")
      }
      kinds.insert(mapped)
    }
    return FeedbackFilter(
      sinceUnixMs: request.sinceUnixMs == 0 ? nil : request.sinceUnixMs,
      untilUnixMs: request.untilUnixMs == 0 ? nil : request.untilUnixMs,
      kinds: kinds,
      policyVersion: request.policyVersion.isEmpty ? nil : request.policyVersion,
      rewardVersion: request.rewardVersion.isEmpty ? nil : request.rewardVersion,
      afterID: Int64(clamping: request.afterID),
      limit: request.limit == 0 ? nil : Int(request.limit))
  }
}

struct FeedbackRejection: Error {
  var reason: String
}

extension FeedbackMapping {
  /// An app's SubmitFeedback request as a submission.
  static func submission(_ request: Alignd_V1_SubmitFeedbackRequest) -> AppFeedback.Submission {
    var submission = AppFeedback.Submission()
    submission.idempotencyKey = request.idempotencyKey
    submission.annotatorID = request.annotatorID
    submission.metadata = request.metadata
    switch request.feedback {
    case .rating(let r):
      submission.judgement = .rating(
        completionID: r.completionID, value: r.value, scaleMin: r.scaleMin, scaleMax: r.scaleMax)
    case .thumbs(let t): submission.judgement = .thumbs(completionID: t.completionID, up: t.up)
    case .preference(let p):
      submission.judgement = .preference(
        chosenCompletionID: p.chosenCompletionID, rejectedCompletionID: p.rejectedCompletionID)
    case .correction(let c):
      submission.judgement = .correction(completionID: c.completionID, correctedText: c.correctedText)
    case .safetyLabel(let s):
      submission.judgement = .safetyLabel(completionID: s.completionID, categories: s.categories)
    case nil: break
    }
    return submission
  }

  static func submitResponse(_ outcome: AppFeedback.Outcome) -> Alignd_V1_SubmitFeedbackResponse {
    .with {
      $0.feedbackID = UInt64(outcome.feedbackID)
      $0.duplicate = outcome.duplicate
      $0.versions = InferenceMapping.versions(outcome.versions)
    }
  }
}
