import AlignAPI
import AlignEngine
import AlignServing
import GRPCCore

/// alignd.v1.Inference: maps each message onto ``InferencePipeline`` and its answer back; the
/// pipeline does the work (validation, screening, scheduling, ranking, version stamping).
public struct InferenceService: Alignd_V1_Inference.ServiceProtocol {
  public let pipeline: InferencePipeline
  /// Feedback from apps on logged completions; nil answers SubmitFeedback with UNAVAILABLE.
  public let feedback: AppFeedback?

  public init(pipeline: InferencePipeline, feedback: AppFeedback? = nil) {
    self.pipeline = pipeline
    self.feedback = feedback
  }

  public func submitFeedback(
    request: ServerRequest<Alignd_V1_SubmitFeedbackRequest>, context: ServerContext
  ) async throws -> ServerResponse<Alignd_V1_SubmitFeedbackResponse> {
    guard let feedback else {
      throw RPCError(code: .unavailable, message: "app feedback needs the generation log (generation_log = true)")
    }
    let submission = FeedbackMapping.submission(request.message)
    let caller = CallerIdentity.apiKeyID
    let outcome = try await run(context) { try await feedback.submit(submission, apiKeyID: caller) }
    return ServerResponse(message: FeedbackMapping.submitResponse(outcome))
  }

  public func generate(
    request: ServerRequest<Alignd_V1_GenerateRequest>, context: ServerContext
  ) async throws -> ServerResponse<Alignd_V1_GenerateResponse> {
    var domain = try InferenceMapping.generateRequest(request.message, deadline: Self.deadline(request.metadata))
    (domain.apiKeyID, domain.endpoint) = (CallerIdentity.apiKeyID, "grpc.Generate")
    let result = try await run(context) { [domain] in try await pipeline.generate(domain) }
    return ServerResponse(message: InferenceMapping.generateResponse(result))
  }

  public func generateStream(
    request: ServerRequest<Alignd_V1_GenerateRequest>, context: ServerContext
  ) async throws -> StreamingServerResponse<Alignd_V1_GenerateStreamResponse> {
    var domain = try InferenceMapping.generateRequest(request.message, deadline: Self.deadline(request.metadata))
    (domain.apiKeyID, domain.endpoint) = (CallerIdentity.apiKeyID, "grpc.GenerateStream")
    let stream = try await run(context) { [domain] in try await pipeline.stream(domain) }
    return StreamingServerResponse { writer in
      let end = try await run(context) {
        try await stream.run { chunk in
          try await writer.write(InferenceMapping.streamChunk(chunk, responseID: stream.responseID))
        }
      }
      try await writer.write(InferenceMapping.streamEnd(end))
      return [:]
    }
  }

  public func score(
    request: ServerRequest<Alignd_V1_ScoreRequest>, context: ServerContext
  ) async throws -> ServerResponse<Alignd_V1_ScoreResponse> {
    try await unary(request, context, InferenceMapping.scoreRequest, pipeline.score, InferenceMapping.scoreResponse)
  }

  public func checkSafety(
    request: ServerRequest<Alignd_V1_CheckSafetyRequest>, context: ServerContext
  ) async throws -> ServerResponse<Alignd_V1_CheckSafetyResponse> {
    try await unary(request, context, InferenceMapping.safetyRequest, pipeline.checkSafety, InferenceMapping.safetyResponse)
  }

  public func tokenize(
    request: ServerRequest<Alignd_V1_TokenizeRequest>, context: ServerContext
  ) async throws -> ServerResponse<Alignd_V1_TokenizeResponse> {
    let message = request.message
    let result = try pipeline.tokenize(InferenceMapping.tokenizeInput(message), addSpecialTokens: message.addSpecialTokens)
    return ServerResponse(message: InferenceMapping.tokenizeResponse(result))
  }

  public func logprobs(
    request: ServerRequest<Alignd_V1_LogprobsRequest>, context: ServerContext
  ) async throws -> ServerResponse<Alignd_V1_LogprobsResponse> {
    try await unary(request, context, InferenceMapping.logprobsRequest, pipeline.logprobs, InferenceMapping.logprobsResponse)
  }

  /// A unary call: the message (with the client's deadline) onto a pipeline request, the
  /// pipeline's answer back onto a message.
  func unary<Message, Domain: Sendable, Result: Sendable, Answer>(
    _ request: ServerRequest<Message>, _ context: ServerContext,
    _ map: (Message, ContinuousClock.Instant?) -> Domain, _ call: @escaping @Sendable (Domain) async throws -> Result,
    _ answer: (Result) -> Answer
  ) async throws -> ServerResponse<Answer> {
    let domain = map(request.message, Self.deadline(request.metadata))
    let result = try await run(context) { try await call(domain) }
    return ServerResponse(message: answer(result))
  }

  /// The deadline the client set, from the `grpc-timeout` header ("100m", "5S", …), less a margin
  /// (``RequestDeadline/ending(after:from:)``).
  static func deadline(_ metadata: Metadata) -> ContinuousClock.Instant? {
    guard let raw = metadata[stringValues: "grpc-timeout"].first(where: { _ in true }) else { return nil }
    return GRPCTimeout.duration(raw).map { RequestDeadline.ending(after: $0) }
  }

  /// Runs pipeline work so that grpc-swift's RPC cancellation signal cancels it: the signal fires
  /// when the client cancels or disconnects, when the deadline passes, and also when the server
  /// begins a graceful shutdown (the transport's "quiesce" hint). Draining must let in-flight work
  /// finish, so the hint is ignored then: the drain timeout still bounds the work, and a stream
  /// whose client is really gone stops at its next failed write.
  func run<T: Sendable>(_ context: ServerContext, _ operation: @escaping @Sendable () async throws -> T) async throws -> T {
    let work = CancellableWork()
    let status = pipeline.status
    do {
      return try await withRPCCancellationHandler {
        try await work.run(operation)
      } onCancelRPC: {
        if status.phase != .draining { work.cancel() }
      }
    } catch {
      throw RPCError.from(error)
    }
  }
}

/// The `grpc-timeout` header's value: digits and a unit (H, M, S, m, u, n).
enum GRPCTimeout {
  static func duration(_ raw: String) -> Duration? {
    guard raw.count >= 2, let amount = Int64(raw.dropLast()) else { return nil }
    switch raw.last {
    case "H": return .seconds(amount * 3600)
    case "M": return .seconds(amount * 60)
    case "S": return .seconds(amount)
    case "m": return .milliseconds(amount)
    case "u": return .microseconds(amount)
    case "n": return .nanoseconds(amount)
    default: return nil
    }
  }
}
