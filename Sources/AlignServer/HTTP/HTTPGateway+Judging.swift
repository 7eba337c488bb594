import AlignAPI
import GRPCCore
import Hummingbird

/// `POST /v1/moderations` (OpenAI's shape, backed by CheckSafety) and `POST /v1/score` (alignd's
/// reward scoring, backed by Score).
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
    let response = try await withServerContextRPCCancellationHandle { handle in
      try await inference.checkSafety(
        request: ServerRequest(
          metadata: [:],
          message: .with {
            $0.texts = texts
            $0.profile = profile
          }),
        context: Self.context(Alignd_V1_Inference.Method.CheckSafety.descriptor, handle)
      ).message
    }
    let results: [JSONValue] = response.results.map { result in
      var flags: [(String, JSONValue)] = []
      var scores: [(String, JSONValue)] = []
      var types: [(String, JSONValue)] = []
      var byName: [String: Alignd_V1_CategoryScore] = [:]
      for category in result.categories {
        // Several backends may score one category: report the highest score, flagged if any flagged.
        if var existing = byName[category.category] {
          existing.score = max(existing.score, category.score)
          existing.flagged = existing.flagged || category.flagged
          byName[category.category] = existing
        } else {
          byName[category.category] = category
        }
      }
      let extra = byName.keys.filter { !Self.moderationCategories.contains($0) }.sorted()
      for name in Self.moderationCategories + extra {
        let score = byName[name]
        flags.append((name, .bool(score?.flagged ?? false)))
        scores.append((name, .number(score?.score ?? 0)))
        types.append((name, .array(score == nil ? [] : [.string("text")])))
      }
      let action: String
      switch result.action {
      case .block: action = "block"
      case .flag: action = "flag"
      default: action = "allow"
      }
      return .object([
        ("flagged", .bool(!result.flaggedCategories.isEmpty)),
        ("categories", .object(flags)),
        ("category_scores", .object(scores)),
        ("category_applied_input_types", .object(types)),
        ("action", .string(action)),
        ("flagged_categories", .array(result.flaggedCategories.map(JSONValue.string))),
      ])
    }
    return Self.json(
      .object([
        ("id", .string(response.responseID)),
        ("model", .string(response.versions.safety)),
        ("results", .array(results)),
        ("versions", OpenAIShapes.versions(response.versions)),
      ]))
  }

  /// `POST /v1/score`: rewards for responses to a prompt (or a conversation), and
  /// P(chosen ≻ rejected) for preference pairs. Docs/HTTP.md has the JSON.
  func score(_ request: Request) async throws -> Response {
    let body = try await body(of: request)
    let prompt = try body.string("prompt") ?? ""
    let messages = try body["messages"] == nil ? [] : GenerationParameters.chatMessages(body)
    var message = Alignd_V1_ScoreRequest()
    for response in try body.strings("responses") ?? [] {
      message.items.append(
        .with {
          $0.prompt = prompt
          $0.messages = messages
          $0.response = response
        })
    }
    for (i, item) in (try body.objects("items") ?? []).enumerated() {
      guard let response = try item.string("response") else {
        throw GatewayError.invalid("items[\(i)].response is missing", param: "items")
      }
      let itemPrompt = try item.string("prompt") ?? prompt
      let itemMessages = item["messages"] == nil ? messages : try GenerationParameters.chatMessages(item)
      message.items.append(
        .with {
          $0.prompt = itemPrompt
          $0.messages = itemMessages
          $0.response = response
        })
    }
    let chosen = try body.string("chosen")
    let rejected = try body.string("rejected")
    if chosen != nil || rejected != nil {
      guard let chosen, let rejected else {
        throw GatewayError.invalid("give both chosen and rejected", param: chosen == nil ? "chosen" : "rejected")
      }
      message.pairs.append(
        .with {
          $0.prompt = prompt
          $0.messages = messages
          $0.chosen = chosen
          $0.rejected = rejected
        })
    }
    for (i, pair) in (try body.objects("pairs") ?? []).enumerated() {
      guard let chosen = try pair.string("chosen"), let rejected = try pair.string("rejected") else {
        throw GatewayError.invalid("pairs[\(i)] needs chosen and rejected", param: "pairs")
      }
      let pairMessages = pair["messages"] == nil ? messages : try GenerationParameters.chatMessages(pair)
      let pairPrompt = try pair.string("prompt") ?? prompt
      message.pairs.append(
        .with {
          $0.prompt = pairPrompt
          $0.messages = pairMessages
          $0.chosen = chosen
          $0.rejected = rejected
        })
    }
    let request = message
    let response = try await withServerContextRPCCancellationHandle { handle in
      try await inference.score(
        request: ServerRequest(metadata: [:], message: request),
        context: Self.context(Alignd_V1_Inference.Method.Score.descriptor, handle)
      ).message
    }
    return Self.json(
      .object([
        ("id", .string(response.responseID)),
        ("object", .string("score")),
        ("model", .string(response.versions.reward)),
        ("rewards", .array(response.rewards.map(JSONValue.number))),
        (
          "pairs",
          .array(
            response.pairScores.map {
              .object([
                ("chosen_reward", .number($0.chosenReward)),
                ("rejected_reward", .number($0.rejectedReward)),
                ("p_chosen_preferred", .number($0.pChosenPreferred)),
              ])
            })
        ),
        ("versions", OpenAIShapes.versions(response.versions)),
      ]))
  }
}
