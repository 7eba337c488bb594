import AlignAPI
import Foundation

/// The OpenAI request fields of `/v1/completions` and `/v1/chat/completions`, read into the
/// alignd.v1 GenerateRequest that the gRPC service validates and runs. Range checks that the
/// service already makes (temperature, top_p, max_tokens against the server limit, n, stop
/// strings, logprobs) are left to it, so both surfaces answer the same message.
struct GenerationParameters: Sendable {
  enum Endpoint: Sendable { case completions, chat }

  var sampling = Alignd_V1_SamplingParams()
  var safety = Alignd_V1_SafetyOptions()
  var priority = Alignd_V1_Priority.unspecified
  var clientRequestID = ""
  var stream = false
  var includeUsage = false
  /// Alternatives per token the client asked for (completions `logprobs`, chat `top_logprobs`);
  /// nil when it asked for no log-probabilities.
  var logprobs: Int?
  var model: String?

  /// Fields OpenAI defines that alignd does not implement: a request using them gets a 400
  /// rather than an answer that silently ignores them.
  static let unsupported: [Endpoint: [String]] = [
    .completions: ["suffix", "logit_bias"],
    .chat: ["tools", "tool_choice", "functions", "function_call", "logit_bias", "audio", "modalities", "prediction"],
  ]

  init(_ body: JSONObject, endpoint: Endpoint) throws(GatewayError) {
    for key in Self.unsupported[endpoint] ?? [] {
      guard let value = body[key] else { continue }
      if case .object(let fields) = value, fields.isEmpty { continue }
      if case .array(let values) = value, values.isEmpty { continue }
      if case .string(let text) = value, text.isEmpty || text == "none" { continue }
      throw .invalid("\(key) is not supported by alignd", param: key)
    }
    if endpoint == .completions, try body.bool("echo") == true {
      throw .invalid("echo is not supported by alignd", param: "echo")
    }
    if endpoint == .chat, let format = try body.object("response_format"), try format.string("type") != "text" {
      throw .invalid("response_format other than {\"type\": \"text\"} is not supported by alignd", param: "response_format")
    }
    model = try body.string("model")

    // max_tokens: OpenAI's completions default is 16; chat has no default (the server's applies).
    let tokenRange = 0...Int64(UInt32.max)
    var maxTokens = try body.int("max_tokens", in: tokenRange)
    switch endpoint {
    case .chat:
      if let newer = try body.int("max_completion_tokens", in: tokenRange) { maxTokens = newer }
    case .completions:
      if maxTokens == nil { maxTokens = 16 }
    }
    if let maxTokens { sampling.maxTokens = UInt32(maxTokens) }
    if let value = try body.double("temperature") { sampling.temperature = Float(value) }
    if let value = try body.double("top_p") { sampling.topP = Float(value) }
    if let value = try body.int("top_k", in: -1...Int64(UInt32.max)) { sampling.topK = UInt32(max(0, value)) }
    if let value = try body.double("min_p") { sampling.minP = Float(value) }
    if let value = try body.double("repetition_penalty") { sampling.repetitionPenalty = Float(value) }
    if let value = try body.double("frequency_penalty") { sampling.frequencyPenalty = Float(value) }
    if let value = try body.double("presence_penalty") { sampling.presencePenalty = Float(value) }
    if let value = try body.int("seed") { sampling.seed = UInt64(bitPattern: value) }
    if let value = try body.int("n", in: 1...128) { sampling.n = UInt32(value) }
    if let stop = try body.strings("stop") { sampling.stop = stop }
    if let ids = try body.array("stop_token_ids") {
      sampling.stopTokenIds = try ids.map { value throws(GatewayError) in
        guard case .int(let id) = value, let id32 = Int32(exactly: id) else {
          throw .invalid("stop_token_ids must be a list of token ids", param: "stop_token_ids")
        }
        return id32
      }
    }
    if let value = try body.bool("ignore_eos") { sampling.ignoreEos = value }

    switch endpoint {
    case .completions:
      if let value = try body.int("best_of", in: 1...128) { sampling.bestOf = UInt32(value) }
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
    if let logprobs { sampling.logprobs = UInt32(max(1, logprobs)) }

    stream = try body.bool("stream") ?? false
    if let options = try body.object("stream_options") {
      guard stream else { throw .invalid("stream_options needs stream: true", param: "stream_options") }
      includeUsage = try options.bool("include_usage") ?? false
    }
    if stream && sampling.bestOf > max(1, sampling.n) {
      throw .invalid("best_of ranks whole candidates, so it cannot be streamed", param: "best_of")
    }
    clientRequestID = try body.string("user") ?? ""
    if let value = try body.string("priority") {
      switch value {
      case "low": priority = .low
      case "normal": priority = .normal
      case "high": priority = .high
      default: throw .invalid("priority must be low, normal or high", param: "priority")
      }
    }
    safety = try Self.safetyOptions(body)
  }

  /// The `safety` extension: a mode string, or `{"mode": ..., "profile": ...}`.
  static func safetyOptions(_ body: JSONObject) throws(GatewayError) -> Alignd_V1_SafetyOptions {
    var options = Alignd_V1_SafetyOptions()
    let mode: String?
    switch body["safety"] {
    case nil: return options
    case .string(let text): mode = text
    case .object:
      let object = try body.object("safety")!
      mode = try object.string("mode")
      options.profile = try object.string("profile") ?? ""
    default:
      throw .invalid("safety must be a mode string or {\"mode\": ..., \"profile\": ...}", param: "safety")
    }
    switch mode {
    case nil, "": options.mode = .unspecified
    case "off": options.mode = .off
    case "prompt": options.mode = .prompt
    case "output": options.mode = .output
    case "prompt_and_output": options.mode = .promptAndOutput
    case let other?:
      throw .invalid("safety mode \(other) is not one of off, prompt, output, prompt_and_output", param: "safety")
    }
    return options
  }

  /// The chat `messages`: text content only (a string, or a list of `{"type": "text"}` parts).
  static func chatMessages(_ body: JSONObject) throws(GatewayError) -> [Alignd_V1_ChatMessage] {
    guard let messages = try body.objects("messages"), !messages.isEmpty else {
      throw .invalid("messages must be a non-empty list", param: "messages")
    }
    var result: [Alignd_V1_ChatMessage] = []
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
      result.append(
        .with {
          // OpenAI's newer "developer" role plays the part of "system" in chat templates.
          $0.role = role == "developer" ? "system" : role
          $0.content = text
        })
    }
    return result
  }

  /// The GenerateRequest for one prompt (or conversation).
  func request(prompt: String? = nil, chat: [Alignd_V1_ChatMessage]? = nil) -> Alignd_V1_GenerateRequest {
    .with {
      if let chat {
        $0.chat = .with { $0.messages = chat }
      } else {
        $0.prompt = prompt ?? ""
      }
      $0.sampling = sampling
      $0.safety = safety
      $0.priority = priority
      $0.clientRequestID = clientRequestID
    }
  }
}
