import AlignEngine
import AlignServing
import Foundation

/// The OpenAI request fields of `/v1/completions` and `/v1/chat/completions`, read into the
/// ``GenerationRequest`` that the serving pipeline validates and runs, as the gRPC service's
/// messages are. Range checks that the pipeline already makes (temperature, top_p, max_tokens
/// against the server limit, n, stop strings, logprobs) are left to it, so both surfaces answer
/// the same message.
public struct GenerationParameters: Sendable {
  public enum Endpoint: Sendable { case completions, chat }

  /// Everything but the input (prompt or messages) and the deadline.
  public var template = GenerationRequest()
  public var stream = false
  public var includeUsage = false
  /// Alternatives per token the client asked for (completions `logprobs`, chat `top_logprobs`);
  /// nil when it asked for no log-probabilities.
  public var logprobs: Int?
  public var model: String?
  /// Chat `tools` and `tool_choice` (nil: none, or `tool_choice: "none"`).
  public var tools: ToolCalling?
  /// Completions `echo`: each choice's text starts with the prompt, and with `logprobs` its
  /// log-probabilities start with the prompt tokens' (the first one null, as OpenAI answers).
  public var echo = false

  /// Fields OpenAI defines that alignd does not implement: a request using them gets a 400
  /// rather than an answer that silently ignores them.
  static let unsupported: [Endpoint: [String]] = [
    .completions: ["suffix"],
    .chat: ["functions", "function_call", "audio", "modalities", "prediction"],
  ]

  public init(_ body: JSONObject, endpoint: Endpoint) throws(GatewayError) {
    for key in Self.unsupported[endpoint] ?? [] {
      guard let value = body[key] else { continue }
      if case .object(let fields) = value, fields.isEmpty { continue }
      if case .array(let values) = value, values.isEmpty { continue }
      if case .string(let text) = value, text.isEmpty || text == "none" { continue }
      throw .invalid("\(key) is not supported by alignd", param: key)
    }
    model = try body.string("model")
    if endpoint == .chat { tools = try ToolCalling.parse(body) }
    template.responseFormat = try Self.responseFormat(body)
    if let forced = tools?.forcedSchema {
      guard case .text = template.responseFormat else {
        throw .invalid("response_format cannot be combined with a required or named tool_choice", param: "response_format")
      }
      // The whole completion is the call: constrained to the tool's arguments schema.
      template.responseFormat = .jsonSchema(forced)
    }
    template.logitBias = try Self.logitBias(body)

    // max_tokens: OpenAI's completions default is 16; chat has no default (the server's applies).
    let tokenRange = 0...Int64(UInt32.max)
    var maxTokens = try body.int("max_tokens", in: tokenRange)
    switch endpoint {
    case .chat:
      if let newer = try body.int("max_completion_tokens", in: tokenRange) { maxTokens = newer }
    case .completions:
      if maxTokens == nil { maxTokens = 16 }
    }
    if let maxTokens { template.maxTokens = Int(maxTokens) }
    if let value = try body.double("temperature") { template.temperature = Float(value) }
    if let value = try body.double("top_p") { template.topP = Float(value) }
    if let value = try body.int("top_k", in: -1...Int64(UInt32.max)) { template.topK = Int(max(0, value)) }
    if let value = try body.double("min_p") { template.minP = Float(value) }
    if let value = try body.double("repetition_penalty") { template.repetitionPenalty = Float(value) }
    if let value = try body.double("frequency_penalty") { template.frequencyPenalty = Float(value) }
    if let value = try body.double("presence_penalty") { template.presencePenalty = Float(value) }
    if let value = try body.int("seed") { template.seed = UInt64(bitPattern: value) }
    if let value = try body.int("n", in: 1...128) { template.n = Int(value) }
    if let stop = try body.strings("stop") { template.stop = stop }
    if let ids = try body.array("stop_token_ids") {
      template.stopTokenIDs = try ids.map { value throws(GatewayError) in
        guard case .int(let id) = value, let id32 = Int32(exactly: id) else {
          throw .invalid("stop_token_ids must be a list of token ids", param: "stop_token_ids")
        }
        return id32
      }
    }
    if let value = try body.bool("ignore_eos") { template.ignoreEOS = value }

    switch endpoint {
    case .completions:
      if let value = try body.int("best_of", in: 1...128) { template.bestOf = Int(value) }
      if let value = try body.int("logprobs", in: 0...Int64(UInt32.max)) { logprobs = Int(value) }
    case .chat:
      let wanted = try body.bool("logprobs") ?? false
      let top = try body.int("top_logprobs", in: 0...Int64(UInt32.max))
      if top != nil && !wanted {
        throw .invalid("top_logprobs needs logprobs: true", param: "top_logprobs")
      }
      if wanted { logprobs = Int(top ?? 0) }
    }
    // The service returns log-probabilities with at least one alternative; the gateway trims
    // them to the count asked for (0 keeps only the sampled token's).
    if let logprobs { template.logprobs = max(1, logprobs) }
    if endpoint == .completions, try body.bool("echo") == true {
      echo = true
      // The prompt is scored when its log-probabilities are asked for, and also with max_tokens
      // 0, which the pipeline accepts only for a scored prompt (an echo of the prompt alone).
      if let logprobs {
        template.promptLogprobs = logprobs
      } else if template.maxTokens == 0 {
        template.promptLogprobs = 0
      }
    }

    stream = try body.bool("stream") ?? false
    if let options = try body.object("stream_options") {
      guard stream else { throw .invalid("stream_options needs stream: true", param: "stream_options") }
      includeUsage = try options.bool("include_usage") ?? false
    }
    if stream && template.bestOf > max(1, template.n) {
      throw .invalid("best_of ranks whole candidates, so it cannot be streamed", param: "best_of")
    }
    // alignd extension: two completions for a person to rank ("samples" or "policies").
    if let comparison = try body.string("comparison") {
      guard let value = GenerationComparison(rawValue: comparison) else {
        throw .invalid("comparison must be none, samples or policies", param: "comparison")
      }
      if value == .policies && stream {
        throw .invalid("a comparison of the active and the canary policy cannot be streamed", param: "comparison")
      }
      template.comparison = value
    }
    let user = try body.string("user") ?? ""
    template.clientRequestID = user.isEmpty ? nil : user
    if let priority = try Self.priority(body) { template.priority = priority }
    (template.safetyMode, template.safetyProfile) = try Self.safetyOptions(body)
  }

  /// `response_format`: `{"type": "text"}`, `{"type": "json_object"}` or `{"type": "json_schema",
  /// "json_schema": {"name": ..., "schema": {...}, "strict": ...}}` (on completions too, as vLLM
  /// serves it). Whether the schema is supported is the pipeline's to say.
  static func responseFormat(_ body: JSONObject) throws(GatewayError) -> ResponseFormat {
    guard let format = try body.object("response_format") else { return .text }
    switch try format.string("type") {
    case "text"?: return .text
    case "json_object"?: return .jsonObject
    case "json_schema"?:
      guard let spec = try format.object("json_schema") else {
        throw .invalid("response_format json_schema needs a json_schema object", param: "response_format")
      }
      guard let schema = spec["schema"] else {
        throw .invalid("response_format.json_schema needs a schema", param: "response_format")
      }
      return .jsonSchema(schema)
    case let other:
      throw .invalid(
        "response_format.type must be text, json_object or json_schema; got \(other ?? "nothing")",
        param: "response_format")
    }
  }

  /// `logit_bias`: an object of token ids (as strings, the way JSON keys are) to biases in
  /// -100...100.
  static func logitBias(_ body: JSONObject) throws(GatewayError) -> [Int32: Float] {
    guard let value = body["logit_bias"] else { return [:] }
    guard case .object(let pairs) = value else {
      throw .invalid("logit_bias must be an object of token ids to biases", param: "logit_bias")
    }
    var biases: [Int32: Float] = [:]
    for (key, value) in pairs {
      guard let id = Int32(key), id >= 0 else {
        throw .invalid("logit_bias: key \(key.debugDescription) is not a token id", param: "logit_bias")
      }
      let bias: Double
      switch value {
      case .int(let number): bias = Double(number)
      case .double(let number): bias = number
      default: throw .invalid("logit_bias: the bias of token \(key) must be a number", param: "logit_bias")
      }
      guard bias >= -100 && bias <= 100 else {
        throw .invalid("logit_bias: the bias of token \(key) is \(bias); it must be in -100...100", param: "logit_bias")
      }
      biases[id] = Float(bias)
    }
    return biases
  }

  /// The `priority` extension: `low`, `normal` or `high`.
  static func priority(_ body: JSONObject) throws(GatewayError) -> RequestPriority? {
    switch try body.string("priority") {
    case nil: return nil
    case "low": return .low
    case "normal": return .normal
    case "high": return .high
    default: throw .invalid("priority must be low, normal or high", param: "priority")
    }
  }

  /// The `safety` extension: a mode string, or `{"mode": ..., "profile": ...}`; nil mode for the
  /// server's default.
  static func safetyOptions(_ body: JSONObject) throws(GatewayError) -> (mode: SafetyMode?, profile: String?) {
    let mode: String?
    var profile: String? = nil
    switch body["safety"] {
    case nil: return (nil, nil)
    case .string(let text): mode = text
    case .object:
      let object = try body.object("safety")!
      mode = try object.string("mode")
      profile = try object.string("profile").flatMap { $0.isEmpty ? nil : $0 }
    default:
      throw .invalid("safety must be a mode string or {\"mode\": ..., \"profile\": ...}", param: "safety")
    }
    switch mode {
    case nil, "": return (nil, profile)
    case let name?:
      guard let known = SafetyMode(rawValue: name) else {
        throw .invalid("safety mode \(name) is not one of off, prompt, output, prompt_and_output", param: "safety")
      }
      return (known, profile)
    }
  }

  /// The chat `messages`: text content only (a string, or a list of `{"type": "text"}` parts).
  static func chatMessages(_ body: JSONObject) throws(GatewayError) -> [ChatMessage] {
    guard let messages = try body.objects("messages"), !messages.isEmpty else {
      throw .invalid("messages must be a non-empty list", param: "messages")
    }
    var result: [ChatMessage] = []
    for (i, message) in messages.enumerated() {
      guard let role = try message.string("role"), !role.isEmpty else {
        throw .invalid("messages[\(i)].role must be a non-empty string", param: "messages")
      }
      var text = ""
      switch message["content"] {
      case nil: text = ""
      case .string(let content): text = content
      case .array(let parts):
        for part in parts {
          guard let fields = JSONObject(part) else {
            throw .invalid("messages[\(i)].content parts must be objects", param: "messages")
          }
          guard try fields.string("type") == "text", let partText = try fields.string("text") else {
            throw .invalid("messages[\(i)].content: only text parts are supported", param: "messages")
          }
          text += partText
        }
      default:
        throw .invalid("messages[\(i)].content must be a string or a list of text parts", param: "messages")
      }
      // An assistant turn's earlier tool calls, written back the way the model writes them.
      if let calls = try message.array("tool_calls"), !calls.isEmpty {
        var written: [(name: String, arguments: String)] = []
        for call in calls {
          guard let function = try JSONObject(call)?.object("function"), let name = try function.string("name") else {
            throw .invalid("messages[\(i)].tool_calls entries need function.name", param: "messages")
          }
          written.append((name, try function.string("arguments") ?? "{}"))
        }
        text += (text.isEmpty ? "" : "\n") + ToolCalling.render(written)
      }
      // OpenAI's newer "developer" role plays the part of "system" in chat templates.
      result.append(ChatMessage(role: role == "developer" ? "system" : role, content: text))
    }
    return result
  }

  /// The request for one prompt (or conversation).
  public func request(_ input: GenerationRequest.Input, deadline: ContinuousClock.Instant?) -> GenerationRequest {
    var request = template
    request.input = input
    request.deadline = deadline
    request.apiKeyID = CallerIdentity.apiKeyID
    if case .chat = input { request.endpoint = "http.chat.completions" } else { request.endpoint = "http.completions" }
    return request
  }
}
