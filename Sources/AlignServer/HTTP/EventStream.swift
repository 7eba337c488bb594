import AlignAPI
import GRPCCore
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

/// Turns GenerateStream messages into OpenAI stream chunks (`text_completion` or
/// `chat.completion.chunk`).
final class StreamTranscoder: @unchecked Sendable {
  let endpoint: GenerationParameters.Endpoint
  let choices: Int
  let created: Int64
  let model: String
  let fingerprint: JSONValue
  let logprobs: Int?
  let includeUsage: Bool
  /// Characters sent so far per choice (completions `text_offset`).
  private var sent: [UInt32: Int] = [:]
  /// The response id of the RPC (taken from its first message: feedback refers to it).
  private var id = ""
  private var opened = false

  init(
    endpoint: GenerationParameters.Endpoint, choices: Int, created: Int64, versions: Alignd_V1_ModelVersions,
    parameters: GenerationParameters
  ) {
    self.endpoint = endpoint
    self.choices = choices
    self.created = created
    self.model = versions.policy
    self.fingerprint = OpenAIShapes.fingerprint(versions)
    self.logprobs = parameters.logprobs
    self.includeUsage = parameters.includeUsage
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

  /// The chat stream's opening chunk: the assistant role for each choice.
  private func opening() -> [JSONValue] {
    guard endpoint == .chat else { return [] }
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

  func chunks(for message: Alignd_V1_GenerateStreamResponse) -> [JSONValue] {
    var events: [JSONValue] = []
    if !opened {
      opened = true
      id = message.responseID
      events = opening()
    }
    return events + transcode(message)
  }

  private func transcode(_ message: Alignd_V1_GenerateStreamResponse) -> [JSONValue] {
    switch message.event {
    case .chunk(let piece):
      var logprobsValue = JSONValue.null
      if let top = logprobs {
        let offset = sent[piece.index, default: 0]
        logprobsValue =
          endpoint == .chat
          ? OpenAIShapes.chatLogprobs(piece.logprobs, top: top)
          : OpenAIShapes.completionLogprobs(piece.logprobs, top: top, offset: offset)
      }
      sent[piece.index, default: 0] += piece.text.count
      let choice: JSONValue =
        endpoint == .chat
        ? .object([
          ("index", .int(Int64(piece.index))), ("delta", .object([("content", .string(piece.text))])),
          ("logprobs", logprobsValue), ("finish_reason", .null),
        ])
        : .object([
          ("text", .string(piece.text)), ("index", .int(Int64(piece.index))), ("logprobs", logprobsValue),
          ("finish_reason", .null),
        ])
      return [chunk([choice])]
    case .end(let end):
      let finals: [JSONValue] = end.completions.map { completion in
        var fields: [(String, JSONValue)] =
          endpoint == .chat
          ? [("index", .int(Int64(completion.index))), ("delta", .object([]))]
          : [("text", .string("")), ("index", .int(Int64(completion.index)))]
        fields += [("logprobs", .null), ("finish_reason", OpenAIShapes.finishReason(completion.finishReason))]
        if !completion.flaggedCategories.isEmpty {
          fields.append(("flagged_categories", .array(completion.flaggedCategories.map(JSONValue.string))))
        }
        return .object(fields)
      }
      var final = chunk(finals)
      if case .object(var fields) = final {
        // The exact versions that produced the stream (a canary may differ from `model`).
        fields.append(("versions", OpenAIShapes.versions(end.versions)))
        final = .object(fields)
      }
      var events = [final]
      if includeUsage { events.append(chunk([], usage: OpenAIShapes.usage(end.usage))) }
      return events
    case nil:
      return []
    }
  }
}

/// The RPC writer handed to `InferenceService.generateStream`'s producer: each message becomes
/// OpenAI chunks on the event stream. A failed write (the client went away) cancels the RPC so
/// the request's KV slots are freed at the next step.
struct EventStreamRPCWriter: RPCWriterProtocol {
  typealias Element = Alignd_V1_GenerateStreamResponse
  let sink: EventSink
  let transcoder: StreamTranscoder
  let handle: ServerContext.RPCCancellationHandle

  func write(_ element: Element) async throws {
    for event in transcoder.chunks(for: element) {
      do {
        try await sink.send(event)
      } catch {
        handle.cancel()
        throw error
      }
    }
  }

  func write(contentsOf elements: some Sequence<Element>) async throws {
    for element in elements { try await write(element) }
  }
}
