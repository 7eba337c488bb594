import AlignStore
import Testing

/// One validation case: an item and the fragment its rejection reason must contain (nil = valid).
struct ValidationCase: Sendable, CustomTestStringConvertible {
  let name: String
  let item: FeedbackItem
  let reasonContains: String?

  var testDescription: String { name }

  static func payload(_ name: String, _ payload: FeedbackPayload, _ reason: String?)
    -> ValidationCase
  {
    ValidationCase(
      name: name, item: FeedbackItem(idempotencyKey: "k", payload: payload), reasonContains: reason)
  }

  static func rating(_ name: String, value: Double, min: Double, max: Double, _ reason: String?)
    -> ValidationCase
  {
    payload(
      name,
      .rating(
        FeedbackRating(prompt: "p", completion: "c", value: value, scaleMin: min, scaleMax: max)),
      reason)
  }

  static func withKey(_ name: String, _ key: String, _ reason: String?) -> ValidationCase {
    ValidationCase(
      name: name,
      item: FeedbackItem(idempotencyKey: key, payload: .comment(FeedbackComment(text: "t"))),
      reasonContains: reason)
  }
}

private let big = String(repeating: "x", count: 256 * 1024 + 1)
private let limit = String(repeating: "y", count: 256 * 1024)

let validationCases: [ValidationCase] = [
  .rating("rating inside scale", value: 3, min: 1, max: 5, nil),
  .rating("rating at the scale bounds", value: 1, min: 1, max: 5, nil),
  .rating("rating on a 0..1 scale", value: 0.75, min: 0, max: 1, nil),
  .rating("rating above the scale", value: 5.5, min: 1, max: 5, "outside the scale"),
  .rating("rating below the scale", value: 0, min: 1, max: 5, "outside the scale"),
  .rating("empty scale", value: 1, min: 1, max: 1, "must be less than"),
  .rating("inverted scale", value: 3, min: 5, max: 1, "must be less than"),
  .rating("NaN rating", value: .nan, min: 1, max: 5, "finite"),
  .rating("infinite scale", value: 3, min: 1, max: .infinity, "finite"),
  .payload(
    "rating without completion",
    .rating(FeedbackRating(prompt: "p", completion: "", value: 1, scaleMin: 0, scaleMax: 1)),
    "rating.completion is empty"),
  .payload(
    "preference", .preference(FeedbackPreference(prompt: "p", chosen: "a", rejected: "b")), nil),
  .payload(
    "preference without prompt",
    .preference(FeedbackPreference(prompt: "", chosen: "a", rejected: "b")),
    "preference.prompt is empty"),
  .payload(
    "preference without chosen",
    .preference(FeedbackPreference(prompt: "p", chosen: "", rejected: "b")),
    "preference.chosen is empty"),
  .payload(
    "preference without rejected",
    .preference(FeedbackPreference(prompt: "p", chosen: "a", rejected: "")),
    "preference.rejected is empty"),
  .payload(
    "preference chosen == rejected",
    .preference(FeedbackPreference(prompt: "p", chosen: "same", rejected: "same")), "equals"),
  .payload(
    "preference text at the size limit",
    .preference(FeedbackPreference(prompt: limit, chosen: "a", rejected: "b")), nil),
  .payload(
    "preference text over the size limit",
    .preference(FeedbackPreference(prompt: "p", chosen: big, rejected: "b")),
    "longer than 262144 bytes"),
  .payload("ranking of two", .ranking(FeedbackRanking(prompt: "p", completions: ["a", "b"])), nil),
  .payload(
    "ranking of one", .ranking(FeedbackRanking(prompt: "p", completions: ["a"])), "at least 2"),
  .payload(
    "ranking of none", .ranking(FeedbackRanking(prompt: "p", completions: [])), "at least 2"),
  .payload(
    "ranking with an empty completion",
    .ranking(FeedbackRanking(prompt: "p", completions: ["a", ""])),
    "ranking.completions[1] is empty"),
  .payload(
    "safety label, judged safe", .safetyLabel(FeedbackSafetyLabel(text: "t", categories: [])), nil),
  .payload(
    "safety label with an empty category",
    .safetyLabel(FeedbackSafetyLabel(text: "t", categories: ["pii", ""])), "categories[1] is empty"),
  .payload("comment", .comment(FeedbackComment(text: "nice")), nil),
  .payload("empty comment", .comment(FeedbackComment(text: "")), "comment.text is empty"),
  .withKey("empty idempotency key", "", "idempotency_key is empty"),
  .withKey("200-character idempotency key", String(repeating: "k", count: 200), nil),
  .withKey(
    "201-character idempotency key", String(repeating: "k", count: 201),
    "longer than 200 characters"),
  ValidationCase(
    name: "64 metadata entries",
    item: FeedbackItem(
      idempotencyKey: "k",
      metadata: Dictionary(uniqueKeysWithValues: (0..<64).map { ("m\($0)", "v") }),
      payload: .comment(FeedbackComment(text: "t"))),
    reasonContains: nil),
  ValidationCase(
    name: "65 metadata entries",
    item: FeedbackItem(
      idempotencyKey: "k",
      metadata: Dictionary(uniqueKeysWithValues: (0..<65).map { ("m\($0)", "v") }),
      payload: .comment(FeedbackComment(text: "t"))),
    reasonContains: "more than 64 entries"),
  ValidationCase(
    name: "negative created_at",
    item: FeedbackItem(
      idempotencyKey: "k", createdAtUnixMs: -1, payload: .comment(FeedbackComment(text: "t"))),
    reasonContains: "negative"),
  ValidationCase(
    name: "oversized annotator id",
    item: FeedbackItem(
      idempotencyKey: "k", annotatorID: String(repeating: "a", count: 1025),
      payload: .comment(FeedbackComment(text: "t"))),
    reasonContains: "annotator_id is longer"),
]

@Suite("FeedbackValidation")
struct FeedbackValidationTests {
  @Test("accepts valid items and names the reason for invalid ones", arguments: validationCases)
  func validate(_ testCase: ValidationCase) {
    let reason = FeedbackValidation.validate(testCase.item)
    if let expected = testCase.reasonContains {
      #expect(reason?.contains(expected) == true, "reason: \(reason ?? "nil")")
    } else {
      #expect(reason == nil, "unexpected rejection: \(reason ?? "")")
    }
  }

  @Test("the record as a whole is bounded")
  func totalSizeBound() {
    let item = FeedbackItem(
      idempotencyKey: "k",
      payload: .ranking(
        FeedbackRanking(prompt: "p", completions: Array(repeating: limit, count: 17))))
    #expect(FeedbackValidation.validate(item)?.contains("larger than") == true)
    var roomy = FeedbackLimits()
    roomy.maxItemBytes = 8 * 1024 * 1024
    #expect(FeedbackValidation.validate(item, limits: roomy) == nil)
  }
}
