import AlignServing
import AlignShared
import Foundation
import HTTPTypes
import Hummingbird

/// `POST /v1/completions` and `POST /v1/chat/completions` on the serving pipeline's generation
/// (streamed for `stream: true`).
extension HTTPGateway {
  func completions(_ request: Request) async throws -> Response {
    try await generation(request, endpoint: .completions)
  }

  func chatCompletions(_ request: Request) async throws -> Response {
    try await generation(request, endpoint: .chat)
  }

  /// Reads the body while watching the connection: a client that disconnects cancels the
  /// generation (its KV slots are freed at the next step), as a gRPC client's cancel does.
  ///
  /// Watching consumes the HTTP/1.1 connection's inbound stream, so the connection cannot carry
  /// another request afterwards: the response says `Connection: close` so that clients do not
  /// reuse it. HTTP/2 requests (h2c or TLS; that header is forbidden there, and the connection
  /// carries other streams) are not watched; a stream still stops at its first failed write.
  private func generation(_ request: Request, endpoint: GenerationParameters.Endpoint) async throws -> Response {
    let deadline = try Self.deadline(request)
    // HTTP/2 requests share their connection with other streams: not watched.
    guard !Self.requestIsHTTP2 else {
      return try await generate(try await body(of: request), endpoint: endpoint, deadline: deadline)
    }
    let work = CancellableWork()
    var response: Response
    do {
      response = try await request.body.consumeWithInboundCloseHandler(
        { body in
          let bytes = try await body.collect(upTo: maxRequestBytes)
          let json = try JSONObject(body: Array(bytes.readableBytesView))
          return try await work.run { try await generate(json, endpoint: endpoint, deadline: deadline) }
        },
        onInboundClosed: { work.cancel() })
    } catch {
      // Errors too: the connection closes either way.
      response = GatewayError.from(error).response
    }
    response.headers[.connection] = "close"
    return response
  }

  private func generate(
    _ body: JSONObject, endpoint: GenerationParameters.Endpoint, deadline: ContinuousClock.Instant?
  ) async throws -> Response {
    let parameters = try GenerationParameters(body, endpoint: endpoint)
    try checkModel(parameters.model)
    let requests: [GenerationRequest]
    switch endpoint {
    case .chat:
      let messages = try GenerationParameters.chatMessages(body)
      requests = [parameters.request(.chat(parameters.tools?.messages(messages) ?? messages), deadline: deadline)]
    case .completions:
      guard let prompts = try body.strings("prompt"), !prompts.isEmpty else {
        throw GatewayError.invalid("prompt must be a string or a non-empty list of strings", param: "prompt")
      }
      requests = prompts.map { parameters.request(.prompt($0), deadline: deadline) }
    }
    if parameters.stream {
      guard requests.count == 1 else {
        throw GatewayError.invalid("stream: true takes one prompt", param: "prompt")
      }
      return try await stream(requests[0], endpoint: endpoint, parameters: parameters)
    }
    // Several prompts (completions only) run concurrently, as separate requests in the batch.
    let pipeline = self.pipeline
    let results = try await withThrowingTaskGroup(of: (Int, GenerationResult).self) { group in
      for (index, request) in requests.enumerated() {
        group.addTask { (index, try await pipeline.generate(request)) }
      }
      var results = [GenerationResult?](repeating: nil, count: requests.count)
      for try await (index, result) in group { results[index] = result }
      return results.compactMap { $0 }
    }
    let prompts = requests.map { request in
      if case .prompt(let prompt) = request.input { return prompt }
      return ""
    }
    return Self.json(Self.completionBody(results, endpoint: endpoint, parameters: parameters, prompts: prompts))
  }

  /// The non-streamed OpenAI answer: one choice per completion, numbered across prompts.
  /// `prompts` (completions only) are the texts that `echo` puts before each prompt's choices.
  public static func completionBody(
    _ responses: [GenerationResult], endpoint: GenerationParameters.Endpoint, parameters: GenerationParameters,
    prompts: [String] = []
  ) -> JSONValue {
    let versions = responses[0].versions
    var choices: [JSONValue] = []
    var usage = TokenUsage()
    for (promptIndex, response) in responses.enumerated() {
      usage.promptTokens += response.usage.promptTokens
      usage.completionTokens += response.usage.completionTokens
      let perPrompt = response.completions.count
      for completion in response.completions {
        let index = JSONValue.int(Int64(promptIndex * perPrompt + completion.index))
        var logprobs = JSONValue.null
        if let top = parameters.logprobs {
          logprobs =
            endpoint == .chat
            ? OpenAIShapes.chatLogprobs(completion.logprobs, top: top)
            : OpenAIShapes.completionLogprobs(
              completion.logprobs, top: top, offset: 0, prompt: parameters.echo ? response.promptLogprobs : nil)
        }
        var fields: [(String, JSONValue)]
        var finish = OpenAIShapes.finishReason(completion.finishReason)
        switch endpoint {
        case .chat:
          var message: [(String, JSONValue)] = [("role", .string("assistant"))]
          if let tools = parameters.tools, case let (content, calls) = tools.calls(in: completion.text), !calls.isEmpty {
            message += [("content", .optional(content)), ("refusal", .null), ("tool_calls", OpenAIShapes.toolCalls(calls))]
            finish = .string("tool_calls")
          } else {
            message += [("content", .string(completion.text)), ("refusal", .null)]
          }
          fields = [("index", index), ("message", .object(message))]
        case .completions:
          let echoed = parameters.echo && promptIndex < prompts.count ? prompts[promptIndex] : ""
          fields = [("text", .string(echoed + completion.text)), ("index", index)]
        }
        fields += [("logprobs", logprobs), ("finish_reason", finish)]
        // alignd extension: the completion's own id, for feedback (POST /v1/feedback).
        fields.append(("completion_id", .string(completion.completionID)))
        fields.append(
          ("policy_version", .string(completion.policyVersion.isEmpty ? response.versions.policy : completion.policyVersion)))
        if let reward = completion.reward { fields.append(("reward", .number(reward))) }
        if !completion.flaggedCategories.isEmpty {
          fields.append(("flagged_categories", .array(completion.flaggedCategories.map { .string($0.rawValue) })))
        }
        choices.append(.object(fields))
      }
    }
    var fields: [(String, JSONValue)] = [
      ("id", .string(responses[0].responseID)),
      ("object", .string(endpoint == .chat ? "chat.completion" : "text_completion")),
      ("created", .int(Int64(Date().timeIntervalSince1970))),
      ("model", .string(versions.policy)),
      ("system_fingerprint", OpenAIShapes.fingerprint(versions)),
      ("choices", .array(choices)),
      ("usage", OpenAIShapes.usage(usage)),
      ("versions", OpenAIShapes.versions(versions)),
    ]
    if responses.count > 1 {
      // Every prompt's own response id, so feedback can name the one it judges.
      fields.append(("response_ids", .array(responses.map { .string($0.responseID) })))
    }
    if responses.contains(where: { !$0.candidateRewards.isEmpty }) {
      fields.append(("candidate_rewards", .array(responses.flatMap(\.candidateRewards).map(JSONValue.number))))
    }
    return .object(fields)
  }

  /// The request's `X-Request-Timeout` (seconds, e.g. `2.5`) as its deadline, so a request over
  /// HTTP ends by its deadline as a gRPC call does: 504 when nothing is sent yet, a last event
  /// with finish reason `deadline` in a stream.
  static func deadline(_ request: Request) throws(GatewayError) -> ContinuousClock.Instant? {
    guard let raw = request.headers[Self.requestTimeoutHeader] else { return nil }
    guard let seconds = Double(raw.trimmingCharacters(in: .whitespaces)), seconds > 0, seconds <= 86_400 else {
      throw GatewayError.invalid(
        "X-Request-Timeout must be a number of seconds greater than 0 and at most 86400, e.g. 2.5", param: nil)
    }
    return RequestDeadline.ending(after: .milliseconds(max(1, Int64((seconds * 1000).rounded()))))
  }

  static let requestTimeoutHeader = HTTPField.Name("X-Request-Timeout")!

  /// `stream: true`: validation, admission and queueing happen before the response starts, so
  /// their errors get their HTTP status; the tokens then flow as server-sent events, ending with
  /// `data: [DONE]` (or an `{"error": ...}` event if generation fails midway).
  private func stream(
    _ request: GenerationRequest, endpoint: GenerationParameters.Endpoint, parameters: GenerationParameters
  ) async throws -> Response {
    let stream = try await pipeline.stream(request)
    let transcoder = StreamTranscoder(
      endpoint: endpoint, choices: max(1, parameters.template.n), created: Int64(Date().timeIntervalSince1970),
      responseID: stream.responseID, versions: stream.versions, parameters: parameters)
    var headers = HTTPFields()
    headers[.contentType] = "text/event-stream"
    headers[.cacheControl] = "no-cache"
    let echoed: String? = if parameters.echo, case .prompt(let prompt) = request.input { prompt } else { nil }
    let body = ResponseBody { writer in
      let sink = EventSink(writer: writer)
      do {
        if let echoed {
          // The prompt (with its log-probabilities when asked for) opens each choice.
          let scores = try await stream.promptLogprobs()
          for event in transcoder.echo(echoed, scores: scores) { try await sink.send(event) }
        }
        let end = try await stream.run { chunk in
          for event in transcoder.events(for: chunk) { try await sink.send(event) }
        }
        for event in transcoder.events(forEnd: end) { try await sink.send(event) }
        try await sink.sendDone()
      } catch {
        if !sink.failed {
          try? await sink.send(GatewayError.from(error).json)
          try? await sink.sendDone()
        }
      }
      writer = sink.writer
      try await writer.finish(nil)
    }
    return Response(status: .ok, headers: headers, body: body)
  }
}
