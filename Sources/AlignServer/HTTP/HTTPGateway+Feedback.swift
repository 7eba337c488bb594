import AlignServing
import AlignShared
import Hummingbird

/// `POST /v1/feedback` (infer role): app feedback on logged completions, the HTTP face of
/// Inference.SubmitFeedback. The body mirrors `SubmitFeedbackRequest` in proto JSON with the
/// proto field names: exactly one of `rating`, `thumbs`, `preference`, `correction`,
/// `safety_label`, plus optional `idempotency_key`, `annotator_id` and `metadata`. The answer is
/// `{"id", "object": "feedback", "duplicate", "versions"}`; errors are OpenAI-shaped: 400 bad
/// body, 403 another key's completion, 404 unknown or expired completion id, 429 rate limit.
extension HTTPGateway {
  func submitFeedback(_ request: Request) async throws -> Response {
    guard let feedback else {
      throw GatewayError(
        .serviceUnavailable, "app feedback needs the generation log (generation_log = true)", type: "server_error",
        code: "unavailable")
    }
    let submission = try Self.feedbackSubmission(try await body(of: request))
    let outcome = try await feedback.submit(submission, apiKeyID: CallerIdentity.apiKeyID)
    return Self.json(
      .object([
        ("id", .int(outcome.feedbackID)), ("object", .string("feedback")), ("duplicate", .bool(outcome.duplicate)),
        ("versions", OpenAIShapes.versions(outcome.versions)),
      ]))
  }

  /// The submission a `POST /v1/feedback` body asks for.
  static func feedbackSubmission(_ body: JSONObject) throws(GatewayError) -> AppFeedback.Submission {
    var submission = AppFeedback.Submission()
    submission.idempotencyKey = try body.string("idempotency_key") ?? ""
    submission.annotatorID = try body.string("annotator_id") ?? ""
    if let metadata = try body.object("metadata") {
      for (key, value) in metadata.fields {
        guard case .string(let text) = value else {
          throw .invalid("metadata values must be strings (metadata.\(key) is not)", param: "metadata")
        }
        submission.metadata[key] = text
      }
    }
    let kinds = ["rating", "thumbs", "preference", "correction", "safety_label"]
    let given = kinds.filter { body[$0] != nil }
    guard given.count == 1, let kind = given.first, let object = try body.object(kind) else {
      throw .invalid("give exactly one of " + kinds.joined(separator: ", "), param: given.count > 1 ? given[1] : nil)
    }
    func id(_ key: String) throws(GatewayError) -> String {
      guard let value = try object.string(key), !value.isEmpty else {
        throw .invalid("\(kind).\(key) is required", param: "\(kind).\(key)")
      }
      return value
    }
    switch kind {
    case "rating":
      guard let value = try object.double("value") else {
        throw .invalid("rating.value is required", param: "rating.value")
      }
      submission.judgement = .rating(
        completionID: try id("completion_id"), value: value, scaleMin: try object.double("scale_min") ?? 0,
        scaleMax: try object.double("scale_max") ?? 0)
    case "thumbs":
      guard let up = try object.bool("up") else { throw .invalid("thumbs.up is required", param: "thumbs.up") }
      submission.judgement = .thumbs(completionID: try id("completion_id"), up: up)
    case "preference":
      submission.judgement = .preference(
        chosenCompletionID: try id("chosen_completion_id"), rejectedCompletionID: try id("rejected_completion_id"))
    case "correction":
      submission.judgement = .correction(
        completionID: try id("completion_id"), correctedText: try object.string("corrected_text") ?? "")
    default:
      submission.judgement = .safetyLabel(
        completionID: try id("completion_id"), categories: try object.strings("categories") ?? [])
    }
    return submission
  }
}
