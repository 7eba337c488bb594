import AlignServing
import AlignShared
import Hummingbird

/// `POST /v1/moderations` (OpenAI's shape, on the pipeline's safety check) and `POST /v1/score`
/// (alignd's reward scoring, on the pipeline's Score).
extension HTTPGateway {
  /// OpenAI's moderation categories, always present in `categories` and `category_scores`
  /// (0 and false when no backend scored them). alignd's own categories (`pii/*`, `terms/*`,
  /// `guard/*`) follow when scored.
  static let moderationCategories = [
    "harassment", "harassment/threatening", "hate", "hate/threatening", "illicit", "illicit/violent",
    "self-harm", "self-harm/intent", "self-harm/instructions", "sexual", "sexual/minors", "violence",
    "violence/graphic",
  ]

  func moderations(_ request: Request) async throws -> Response {
    let deadline = try Self.deadline(request)
    let body = try await body(of: request)
    var texts: [String] = []
    switch body["input"] {
    case .string(let text): texts = [text]
    case .array(let values):
      for value in values {
        switch value {
        case .string(let text): texts.append(text)
        case .object:
          guard let part = JSONObject(value), try part.string("type") == "text", let text = try part.string("text")
          else {
            throw GatewayError.invalid("input: only text is supported", param: "input")
          }
          texts.append(text)
        default:
          throw GatewayError.invalid("input must be a string or a list of strings", param: "input")
        }
      }
    default:
      throw GatewayError.invalid("input must be a string or a list of strings", param: "input")
    }
    guard !texts.isEmpty else { throw GatewayError.invalid("input is empty", param: "input") }
    let profile = try body.string("profile") ?? ""
    var check = SafetyCheckRequest(texts: texts)
    (check.profile, check.deadline) = (profile.isEmpty ? nil : profile, deadline)
    let result = try await pipeline.checkSafety(check)
    return Self.json(Self.moderationBody(result))
  }

  /// OpenAI's moderation answer for a safety check, with alignd's `action`, `flagged_categories`
  /// and `versions`.
  public static func moderationBody(_ result: SafetyCheckResult) -> JSONValue {
    let results: [JSONValue] = result.verdicts.map { verdict in
      var flags: [(String, JSONValue)] = []
      var scores: [(String, JSONValue)] = []
      var types: [(String, JSONValue)] = []
      var byName: [String: CategoryScore] = [:]
      for category in verdict.scores {
        // Several backends may score one category: report the highest score, flagged if any flagged.
        let name = category.category.rawValue
        if var existing = byName[name] {
          existing.score = max(existing.score, category.score)
          existing.flagged = existing.flagged || category.flagged
          byName[name] = existing
        } else {
          byName[name] = category
        }
      }
      let extra = byName.keys.filter { !Self.moderationCategories.contains($0) }.sorted()
      for name in Self.moderationCategories + extra {
        let score = byName[name]
        flags.append((name, .bool(score?.flagged ?? false)))
        scores.append((name, .number(score?.score ?? 0)))
        types.append((name, .array(score == nil ? [] : [.string("text")])))
      }
      return .object([
        ("flagged", .bool(!verdict.flaggedCategories.isEmpty)),
        ("categories", .object(flags)),
        ("category_scores", .object(scores)),
        ("category_applied_input_types", .object(types)),
        ("action", .string(verdict.action.rawValue)),
        ("flagged_categories", .array(verdict.flaggedCategories.map { .string($0.rawValue) })),
      ])
    }
    return .object([
      ("id", .string(result.responseID)),
      ("model", .string(result.versions.safety)),
      ("results", .array(results)),
      ("versions", OpenAIShapes.versions(result.versions)),
    ])
  }

  /// `POST /v1/score`: rewards for responses to a prompt (or a conversation), and
  /// P(chosen ≻ rejected) for preference pairs. Docs/HTTP.md has the JSON.
  func score(_ request: Request) async throws -> Response {
    let deadline = try Self.deadline(request)
    var score = try Self.scoreRequest(try await body(of: request))
    score.deadline = deadline
    return Self.json(Self.scoreBody(try await pipeline.score(score)))
  }

  /// The Score request a `/v1/score` body asks for (Docs/HTTP.md has the JSON).
  public static func scoreRequest(_ body: JSONObject) throws(GatewayError) -> ScoreRequest {
    let prompt = try body.string("prompt") ?? ""
    let messages = try body["messages"] == nil ? [] : GenerationParameters.chatMessages(body)
    var request = ScoreRequest()
    for response in try body.strings("responses") ?? [] {
      request.items.append(ScoreItem(PromptContext(prompt: prompt, messages: messages), response))
    }
    for (i, item) in (try body.objects("items") ?? []).enumerated() {
      guard let response = try item.string("response") else {
        throw GatewayError.invalid("items[\(i)].response is missing", param: "items")
      }
      let itemPrompt = try item.string("prompt") ?? prompt
      let itemMessages = item["messages"] == nil ? messages : try GenerationParameters.chatMessages(item)
      request.items.append(ScoreItem(PromptContext(prompt: itemPrompt, messages: itemMessages), response))
    }
    let chosen = try body.string("chosen")
    let rejected = try body.string("rejected")
    if chosen != nil || rejected != nil {
      guard let chosen, let rejected else {
        throw GatewayError.invalid("give both chosen and rejected", param: chosen == nil ? "chosen" : "rejected")
      }
      request.pairs.append(ScorePair(PromptContext(prompt: prompt, messages: messages), chosen: chosen, rejected: rejected))
    }
    for (i, pair) in (try body.objects("pairs") ?? []).enumerated() {
      guard let chosen = try pair.string("chosen"), let rejected = try pair.string("rejected") else {
        throw GatewayError.invalid("pairs[\(i)] needs chosen and rejected", param: "pairs")
      }
      let pairMessages = pair["messages"] == nil ? messages : try GenerationParameters.chatMessages(pair)
      let pairPrompt = try pair.string("prompt") ?? prompt
      request.pairs.append(
        ScorePair(PromptContext(prompt: pairPrompt, messages: pairMessages), chosen: chosen, rejected: rejected))
    }
    if let priority = try GenerationParameters.priority(body) { request.priority = priority }
    return request
  }

  /// alignd's score answer.
  public static func scoreBody(_ result: ScoreResult) -> JSONValue {
    .object([
      ("id", .string(result.responseID)),
      ("object", .string("score")),
      ("model", .string(result.versions.reward)),
      ("rewards", .array(result.rewards.map(JSONValue.number))),
      (
        "pairs",
        .array(
          result.pairs.map {
            .object([
              ("chosen_reward", .number($0.chosen)),
              ("rejected_reward", .number($0.rejected)),
              ("p_chosen_preferred", .number($0.probabilityChosenPreferred)),
            ])
          })
      ),
      ("versions", OpenAIShapes.versions(result.versions)),
    ])
  }
}
