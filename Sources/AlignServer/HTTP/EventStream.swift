import AlignServing
import AlignShared
import Hummingbird

/// Server-sent events on a Hummingbird response body: `data: {json}\n\n` per event.
///
/// Used only from the one task that writes the response body (the gRPC stream producer runs
/// inline in it), hence `@unchecked Sendable`.
final class EventSink: @unchecked Sendable {
  var writer: any ResponseBodyWriter
  /// Set once a write failed: the client is gone and nothing more can be sent.
  private(set) var failed = false

  init(writer: any ResponseBodyWriter) { self.writer = writer }

  func send(_ event: JSONValue) async throws {
    var bytes = Array("data: ".utf8)
    event.write(into: &bytes)
    bytes += Array("\n\n".utf8)
    try await sendRaw(bytes)
  }

  /// OpenAI's end-of-stream marker.
  func sendDone() async throws { try await sendRaw(Array("data: [DONE]\n\n".utf8)) }

  private func sendRaw(_ bytes: [UInt8]) async throws {
    guard !failed else { throw CancellationError() }
    do {
      try await writer.write(ByteBuffer(bytes: bytes))
    } catch {
      failed = true
      throw error
    }
  }
}

/// Turns a streamed generation's chunks and end into OpenAI stream chunks (`text_completion` or
/// `chat.completion.chunk`). Used from the one task that writes the response body.
final class StreamTranscoder: @unchecked Sendable {
  let endpoint: GenerationParameters.Endpoint
  let choices: Int
  let created: Int64
  let model: String
  let fingerprint: JSONValue
  let logprobs: Int?
  let includeUsage: Bool
  /// Characters sent so far per choice (completions `text_offset`).
  private var sent: [Int: Int] = [:]
  /// The response id (feedback refers to it).
  private let id: String
  private var opened = false
  /// With tools, a completion's text is held until its end, when it is known to be a call (sent as
  /// tool-call deltas) or text (sent as one content delta).
  private let tools: ToolCalling?
  private var held: [Int: String] = [:]

  init(
    endpoint: GenerationParameters.Endpoint, choices: Int, created: Int64, responseID: String,
    versions: ModelVersions, parameters: GenerationParameters
  ) {
    self.endpoint = endpoint
    self.choices = choices
    self.created = created
    self.id = responseID
    self.model = versions.policy
    self.fingerprint = OpenAIShapes.fingerprint(versions)
    self.logprobs = parameters.logprobs
    self.includeUsage = parameters.includeUsage
    self.tools = endpoint == .chat ? parameters.tools : nil
  }

  private func chunk(_ choices: [JSONValue], usage: JSONValue? = nil) -> JSONValue {
    var fields: [(String, JSONValue)] = [
      ("id", .string(id)),
      ("object", .string(endpoint == .chat ? "chat.completion.chunk" : "text_completion")),
      ("created", .int(created)),
      ("model", .string(model)),
      ("system_fingerprint", fingerprint),
      ("choices", .array(choices)),
    ]
    if let usage { fields.append(("usage", usage)) }
    return .object(fields)
  }

  /// The chat stream's opening chunk (the assistant role for each choice), before its first event.
  private func opening() -> [JSONValue] {
    defer { opened = true }
    guard endpoint == .chat, !opened else { return [] }
    return [
      chunk(
        (0..<choices).map { index in
          .object([
            ("index", .int(Int64(index))),
            ("delta", .object([("role", .string("assistant")), ("content", .string(""))])),
            ("logprobs", .null),
            ("finish_reason", .null),
          ])
        })
    ]
  }

  /// Completions `echo`: a chunk per choice holding the prompt (and, when log-probabilities are
  /// asked for, its tokens'), before any generated text.
  func echo(_ prompt: String, scores: PromptLogprobs?) -> [JSONValue] {
    (0..<choices).map { index in
      var logprobsValue = JSONValue.null
      if let top = logprobs, let scores {
        logprobsValue = OpenAIShapes.completionLogprobs([], top: top, offset: 0, prompt: scores)
      }
      sent[index] = prompt.count
      return chunk([
        .object([
          ("text", .string(prompt)), ("index", .int(Int64(index))), ("logprobs", logprobsValue),
          ("finish_reason", .null),
        ])
      ])
    }
  }

  /// The events for one released chunk (the chat stream's opening chunk first).
  func events(for piece: GenerationChunk) -> [JSONValue] {
    if tools != nil {
      held[piece.sample, default: ""] += piece.text
      return opening()
    }
    var logprobsValue = JSONValue.null
    if let top = logprobs {
      let offset = sent[piece.sample, default: 0]
      logprobsValue =
        endpoint == .chat
        ? OpenAIShapes.chatLogprobs(piece.logprobs, top: top)
        : OpenAIShapes.completionLogprobs(piece.logprobs, top: top, offset: offset)
    }
    sent[piece.sample, default: 0] += piece.text.count
    let choice: JSONValue =
      endpoint == .chat
      ? .object([
        ("index", .int(Int64(piece.sample))), ("delta", .object([("content", .string(piece.text))])),
        ("logprobs", logprobsValue), ("finish_reason", .null),
      ])
      : .object([
        ("text", .string(piece.text)), ("index", .int(Int64(piece.sample))), ("logprobs", logprobsValue),
        ("finish_reason", .null),
      ])
    return opening() + [chunk([choice])]
  }

  /// The events that end the stream: every choice's finish reason with the exact versions, then
  /// usage when asked for.
  func events(forEnd end: GenerationResult) -> [JSONValue] {
    var released: [JSONValue] = []
    var finishes: [Int: JSONValue] = [:]
    if let tools {
      for completion in end.completions {
        let text = held[completion.index, default: ""]
        let (content, calls) = tools.calls(in: text)
        var delta: [(String, JSONValue)] = []
        if let content, !content.isEmpty { delta.append(("content", .string(content))) }
        if !calls.isEmpty {
          delta.append(("tool_calls", OpenAIShapes.toolCalls(calls, delta: true)))
          finishes[completion.index] = .string("tool_calls")
        }
        guard !delta.isEmpty else { continue }
        released.append(
          chunk([
            .object([
              ("index", .int(Int64(completion.index))), ("delta", .object(delta)), ("logprobs", .null),
              ("finish_reason", .null),
            ])
          ]))
      }
    }
    let finals: [JSONValue] = end.completions.map { completion in
      var fields: [(String, JSONValue)] =
        endpoint == .chat
        ? [("index", .int(Int64(completion.index))), ("delta", .object([]))]
        : [("text", .string("")), ("index", .int(Int64(completion.index)))]
      fields += [
        ("logprobs", .null),
        ("finish_reason", finishes[completion.index] ?? OpenAIShapes.finishReason(completion.finishReason)),
      ]
      // alignd extension: the completion's own id, for feedback (POST /v1/feedback).
      fields.append(("completion_id", .string(completion.completionID)))
      if !completion.flaggedCategories.isEmpty {
        fields.append(("flagged_categories", .array(completion.flaggedCategories.map { .string($0.rawValue) })))
      }
      return .object(fields)
    }
    var final = chunk(finals)
    if case .object(var fields) = final {
      // The exact versions that produced the stream (a canary may differ from the active ones).
      fields.append(("versions", OpenAIShapes.versions(end.versions)))
      final = .object(fields)
    }
    var events = opening() + released + [final]
    if includeUsage { events.append(chunk([], usage: OpenAIShapes.usage(end.usage))) }
    return events
  }
}
