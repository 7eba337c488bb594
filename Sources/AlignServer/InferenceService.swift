import AlignAPI
import AlignEngine
import AlignServing
import Foundation
import GRPCCore

/// alignd.v1.Inference: validate → schedule → map.
struct InferenceService: Alignd_V1_Inference.ServiceProtocol {
  let status: ServingStatus
  let models: ModelHost
  let limits: GenerationLimits
  /// Safety screening of generate requests that leave the mode unspecified (config `safety_mode`).
  let defaultSafetyMode: String

  /// A lease on the policy snapshot serving this request (the canary for its share of routing
  /// keys), held until the request ends so a swap never changes the weights under it;
  /// UNAVAILABLE while loading or draining.
  func policy(routingKey: String? = nil) throws -> SnapshotLease<PolicySnapshot> {
    switch status.phase {
    case .loading: throw RPCError(code: .unavailable, message: "alignd is loading its models; retry shortly")
    case .draining: throw RPCError(code: .unavailable, message: "alignd is shutting down")
    case .failed(let reason): throw RPCError(code: .unavailable, message: "alignd failed to start: \(reason)")
    case .serving: break
    }
    guard let lease = models.leasePolicy(routingKey: routingKey) else {
      throw RPCError(code: .unavailable, message: "no policy model is loaded")
    }
    return lease
  }

  static func responseID(_ prefix: String) -> String {
    var generator = SystemRandomNumberGenerator()
    return prefix + "-" + String(format: "%016llx", generator.next() as UInt64)
  }

  static func finishReason(_ reason: FinishReason) -> Alignd_V1_FinishReason {
    switch reason {
    case .stop: return .stop
    case .length: return .length
    case .cancelled: return .cancelled
    case .deadline: return .deadline
    case .safety: return .safety
    }
  }

  static func tokenLogprobs(_ tokens: some Sequence<ScoredToken>, tokenizer: Tokenizer) -> [Alignd_V1_TokenLogprob] {
    tokens.map { token in
      .with { entry in
        entry.tokenID = token.token
        entry.token = tokenizer.decode([token.token])
        entry.logprob = token.logprob
        entry.top = token.top.map { alternative in
          .with {
            $0.tokenID = alternative.token
            $0.token = tokenizer.decode([alternative.token])
            $0.logprob = alternative.logprob
          }
        }
      }
    }
  }

  /// Handles grpc-swift's RPC cancellation signal. It fires when the client cancels or disconnects,
  /// when the deadline passes, and also when the server begins a graceful shutdown (the transport's
  /// "quiesce" hint). Draining must let in-flight generations finish, so the hint is ignored then:
  /// the drain timeout still bounds the work, and a stream whose client is really gone stops at its
  /// next failed write.
  func cancelUnlessDraining(_ id: RequestID, on policy: PolicySnapshot) {
    if status.phase != .draining { policy.loop.cancel(id) }
  }

  /// Captures the policy snapshot for a request and validates the request against it.
  func prepare(_ request: ServerRequest<Alignd_V1_GenerateRequest>) throws -> (
    SnapshotLease<PolicySnapshot>, ValidatedGenerate
  ) {
    let clientID = request.message.clientRequestID
    let lease = try policy(routingKey: clientID.isEmpty ? nil : clientID)
    let validated = try RequestValidation.generate(
      request.message, model: lease.snapshot.model, limits: limits,
      deadline: RequestValidation.deadline(from: request.metadata))
    return (lease, validated)
  }

  /// A response whose prompt the safety policy blocked: no generation ran.
  static func blockedCompletions(_ count: Int, _ verdict: SafetyVerdict) -> [Alignd_V1_Completion] {
    (0..<count).map { index in
      .with {
        $0.index = UInt32(index)
        $0.finishReason = .safety
        $0.flaggedCategories = verdict.flaggedCategories.map(\.rawValue)
      }
    }
  }

  /// Queues a validated request on the policy's engine loop.
  func submit(_ spec: GenerationSpec, on policy: PolicySnapshot) throws -> (RequestID, AsyncStream<GenerationEvent>) {
    do {
      return try policy.loop.submit(spec)
    } catch {
      switch error {
      case .queueFull(let retryAfter):
        let milliseconds = max(1, Int((retryAfter * 1000).rounded(.up)))
        throw RPCError(
          code: .resourceExhausted,
          message: "the generation queue is full; retry in about \(milliseconds) ms",
          metadata: ["retry-after-ms": "\(milliseconds)"])
      case .tooLarge(let needed, let capacity):
        throw RPCError(
          code: .invalidArgument,
          message: "the request needs \(needed) KV cache tokens (prompt + n × max_tokens); the server has \(capacity)")
      }
    }
  }

  // MARK: Generate

  func generate(
    request: ServerRequest<Alignd_V1_GenerateRequest>, context: ServerContext
  ) async throws -> ServerResponse<Alignd_V1_GenerateResponse> {
    let (lease, validated) = try prepare(request)
    let policy = lease.snapshot
    defer { withExtendedLifetime(lease) {} }
    let tokenizer = policy.model.tokenizer
    let responseID = Self.responseID("gen")
    let screening = screening(request.message)
    let safety = try screening.map { _ in try safetyChecker() }
    defer { withExtendedLifetime(safety) {} }
    var versions = self.versions(policy: policy)
    if let safety { versions.safety = safety.snapshot.version }

    // A blocked prompt never reaches the policy.
    if let screening, let safety, let verdict = try await blockedPrompt(screening, checker: safety.snapshot.checker) {
      return ServerResponse(message: .with {
        $0.responseID = responseID
        $0.completions = Self.blockedCompletions(validated.returnCount, verdict)
        $0.usage = .init()
        $0.versions = versions
      })
    }
    // best_of: score the candidates with the reward model before choosing.
    let judging = validated.returnCount < validated.spec.samples ? try rewardScorer() : nil
    defer { withExtendedLifetime(judging?.hold) {} }
    if let judging { versions.reward = judging.versions.reward }

    let (id, events) = try submit(validated.spec, on: policy)
    let tally = try await collect(
      events, id: id, on: policy, samples: validated.spec.samples, screens: outputScreens(screening, safety, validated)
    ) { tally, sample, text, ids, logprobs in
      tally.completions[sample].text += text
      if validated.returnTokenIDs { tally.completions[sample].tokenIds += ids }
      if validated.logprobs > 0 { tally.completions[sample].logprobs += Self.tokenLogprobs(logprobs, tokenizer: tokenizer) }
    }
    if tally.completions.contains(where: { $0.finishReason == .deadline }) {
      throw RPCError(code: .deadlineExceeded, message: "the deadline expired before the completion finished")
    }
    if tally.completions.contains(where: { $0.finishReason == .cancelled }) {
      throw RPCError(code: .cancelled, message: "the request was cancelled")
    }
    var completions = tally.completions
    var candidateRewards: [Double] = []
    if let judging {
      // Rank the candidates by reward; blocked candidates rank last.
      let context: RewardInput.Context
      switch request.message.input {
      case .chat(let chat): context = .messages(chat.messages.map { ChatMessage(role: $0.role, content: $0.content) })
      case .prompt(let prompt): context = .prompt(prompt)
      case nil: context = .prompt("")
      }
      candidateRewards = try await Self.rewards(
        completions.map { RewardInput(context: context, response: $0.text) }, on: judging.scorer)
      let order = completions.indices.sorted { a, b in
        let (blockedA, blockedB) = (completions[a].finishReason == .safety, completions[b].finishReason == .safety)
        if blockedA != blockedB { return !blockedA }
        return candidateRewards[a] > candidateRewards[b]
      }
      completions = order.prefix(validated.returnCount).enumerated().map { rank, index in
        var completion = completions[index]
        completion.index = UInt32(rank)
        completion.reward = candidateRewards[index]
        return completion
      }
    }
    let response = Alignd_V1_GenerateResponse.with {
      $0.responseID = responseID
      $0.completions = completions
      $0.usage = tally.usage(promptTokens: validated.spec.promptTokens.count)
      $0.versions = versions
      $0.candidateRewards = candidateRewards
    }
    return ServerResponse(message: response)
  }

  func generateStream(
    request: ServerRequest<Alignd_V1_GenerateRequest>, context: ServerContext
  ) async throws -> StreamingServerResponse<Alignd_V1_GenerateStreamResponse> {
    let (lease, validated) = try prepare(request)
    guard validated.returnCount == validated.spec.samples else {
      throw RequestValidation.invalid("best_of ranks whole candidates, so it needs Generate, not GenerateStream")
    }
    let policy = lease.snapshot
    let responseID = Self.responseID("gen")
    let tokenizer = policy.model.tokenizer
    let screening = screening(request.message)
    let safety = try screening.map { _ in try safetyChecker() }
    var versions = self.versions(policy: policy)
    if let safety { versions.safety = safety.snapshot.version }
    if let screening, let safety, let verdict = try await blockedPrompt(screening, checker: safety.snapshot.checker) {
      let end = Alignd_V1_GenerateStreamResponse.with {
        $0.responseID = responseID
        $0.end = .with {
          $0.completions = Self.blockedCompletions(validated.returnCount, verdict)
          $0.usage = .init()
          $0.versions = versions
        }
      }
      return StreamingServerResponse { writer in
        try await writer.write(end)
        return [:]
      }
    }
    let (id, events) = try submit(validated.spec, on: policy)
    let finalVersions = versions
    return StreamingServerResponse { writer in
      // The lease lives until the stream ends: a swap meanwhile leaves this stream on its weights.
      defer { withExtendedLifetime((lease, safety)) {} }
      let tally = try await collect(
        events, id: id, on: policy, samples: validated.spec.samples,
        screens: outputScreens(screening, safety, validated)
      ) { _, sample, text, ids, logprobs in
        guard !text.isEmpty || !ids.isEmpty else { return }
        try await Self.write(cancelling: id, on: policy, to: writer,
          .with {
            $0.responseID = responseID
            $0.chunk = .with { chunk in
              chunk.index = UInt32(sample)
              chunk.text = text
              chunk.tokenIds = ids
              if validated.logprobs > 0 { chunk.logprobs = Self.tokenLogprobs(logprobs, tokenizer: tokenizer) }
            }
          })
      }
      try await writer.write(
        .with {
          $0.responseID = responseID
          $0.end = .with { end in
            end.completions = tally.completions
            end.usage = tally.usage(promptTokens: validated.spec.promptTokens.count)
            end.versions = finalVersions
          }
        })
      return [:]
    }
  }

  /// The output screens of a request that screens its output (nil otherwise).
  func outputScreens(
    _ screening: Screening?, _ safety: SnapshotLease<SafetySnapshot>?, _ validated: ValidatedGenerate
  ) -> OutputScreens? {
    guard let screening, screening.output, let safety else { return nil }
    return OutputScreens(
      count: validated.spec.samples, checker: safety.snapshot.checker, profile: screening.profile,
      prompt: screening.promptText)
  }

  /// Runs a request's generation events to their end, for Generate and GenerateStream alike.
  ///
  /// With output screening, text is held back until it is checked: `deliver` receives only what
  /// may be released (with the tally, to place it), a blocked sample is recorded as such, and the
  /// request stops once every sample is blocked. Cancelling the RPC cancels the request, unless
  /// the server is draining. An engine failure is an INTERNAL error.
  func collect(
    _ events: AsyncStream<GenerationEvent>, id: RequestID, on policy: PolicySnapshot, samples: Int,
    screens: OutputScreens?,
    deliver: (
      _ tally: inout GenerationTally, _ sample: Int, _ text: String, _ ids: [Int32], _ logprobs: [ScoredToken]
    ) async throws -> Void
  ) async throws -> GenerationTally {
    var tally = GenerationTally(samples: samples)
    var screens = screens
    try await withRPCCancellationHandler {
      for await event in events {
        switch event {
        case .token(let sample, let text, let tokens):
          guard var active = screens else {
            try await deliver(&tally, sample, text, tokens.map(\.token), tokens.map(ScoredToken.init))
            continue
          }
          let release = try await active.feed(sample, text: text, tokens: tokens)
          screens = active
          try await deliver(&tally, sample, release.text, release.ids, release.logprobs)
          if let verdict = release.blocked {
            tally.block(sample, verdict)
            if active.allBlocked { policy.loop.cancel(id) }
          }
        case .finished(let sample, _, _):
          tally.absorb(event)
          if var active = screens {
            let release = try await active.finish(sample)
            screens = active
            try await deliver(&tally, sample, release.text, release.ids, release.logprobs)
            if let verdict = release.blocked { tally.block(sample, verdict) }
          }
        case .failed:
          tally.absorb(event)
        }
      }
    } onCancelRPC: {
      cancelUnlessDraining(id, on: policy)
    }
    if let failure = tally.failure { throw RPCError(code: .internalError, message: failure) }
    return tally
  }

  /// Writes one stream message; if the client is gone, frees the request's KV slots at once.
  static func write(
    cancelling id: RequestID, on policy: PolicySnapshot, to writer: RPCWriter<Alignd_V1_GenerateStreamResponse>,
    _ message: Alignd_V1_GenerateStreamResponse
  ) async throws {
    do {
      try await writer.write(message)
    } catch {
      policy.loop.cancel(id)
      throw error
    }
  }

  // MARK: Tokenize and Logprobs

  func tokenize(
    request: ServerRequest<Alignd_V1_TokenizeRequest>, context: ServerContext
  ) async throws -> ServerResponse<Alignd_V1_TokenizeResponse> {
    let lease = try policy()
    let policy = lease.snapshot
    defer { withExtendedLifetime(lease) {} }
    let model = policy.model
    let message = request.message
    var rendered = ""
    let ids: [Int32]
    switch message.input {
    case .text(let text):
      ids = model.tokenizer.encode(text, addSpecialTokens: message.addSpecialTokens, parseSpecial: true)
    case .chat(let chat):
      rendered = try RequestValidation.promptText(prompt: nil, chat: chat, model: model)
      ids = model.tokenizer.encode(rendered, addSpecialTokens: message.addSpecialTokens, parseSpecial: true)
    case nil:
      throw RequestValidation.invalid("give text or chat messages")
    }
    return ServerResponse(
      message: .with {
        $0.tokenIds = ids
        $0.tokens = ids.map { model.tokenizer.tokenText($0) ?? "" }
        $0.rendered = rendered
        $0.versions = versions(policy: policy)
      })
  }

  func logprobs(
    request: ServerRequest<Alignd_V1_LogprobsRequest>, context: ServerContext
  ) async throws -> ServerResponse<Alignd_V1_LogprobsResponse> {
    let lease = try policy()
    let policy = lease.snapshot
    defer { withExtendedLifetime(lease) {} }
    let model = policy.model
    let message = request.message
    guard !message.items.isEmpty else { throw RequestValidation.invalid("items is empty") }
    guard message.topLogprobs <= UInt32(GenerationLimits.maxLogprobs) else {
      throw RequestValidation.invalid("top_logprobs must be at most \(GenerationLimits.maxLogprobs)")
    }
    // Tokenize context and continuation separately so the scored span is exact.
    var sequences: [[Int32]] = []
    var contextLengths: [Int] = []
    for (i, item) in message.items.enumerated() {
      var contextText = item.context
      if !item.messages.isEmpty {
        contextText = try RequestValidation.promptText(
          prompt: nil, chat: .with { $0.messages = item.messages }, model: model)
      }
      guard !item.continuation.isEmpty || !contextText.isEmpty else {
        throw RequestValidation.invalid("items[\(i)] has no text")
      }
      let input = model.teacherForcingInput(
        context: contextText, contextIsRendered: !item.messages.isEmpty, continuation: item.continuation)
      sequences.append(input.tokens)
      contextLengths.append(input.contextLength)
    }
    let scored: [[ScoredToken]]
    do {
      scored = try await policy.teacherForcing.submit(
        TeacherForcingRequest(sequences: sequences, topLogprobs: Int(message.topLogprobs)))
    } catch let error as InvalidRequest {
      throw RequestValidation.invalid(error.description)
    } catch DynamicBatcherError.queueFull(let capacity) {
      throw RPCError(
        code: .resourceExhausted, message: "the log-probability queue is full (\(capacity) waiting); retry shortly",
        metadata: ["retry-after-ms": "100"])
    }
    let tokenizer = model.tokenizer
    return ServerResponse(
      message: .with { response in
        response.responseID = Self.responseID("lp")
        response.versions = versions(policy: policy)
        for (k, tokens) in scored.enumerated() {
          let kept = PolicyModel.continuationScores(tokens, contextLength: contextLengths[k])
          response.items.append(
            .with { item in
              item.contextTokens = UInt32(contextLengths[k])
              item.tokens = Self.tokenLogprobs(kept, tokenizer: tokenizer)
              item.totalLogprob = kept.reduce(0) { $0 + Double($1.logprob) }
            })
        }
      })
  }

}

/// Finish reasons, token counts and failures of a request's completions, gathered from its events.
struct GenerationTally {
  var completions: [Alignd_V1_Completion]
  var completionTokens = 0
  var failure: String? = nil

  init(samples: Int) {
    completions = (0..<samples).map { index in Alignd_V1_Completion.with { $0.index = UInt32(index) } }
  }

  /// Marks a sample as stopped by the output safety screen.
  mutating func block(_ sample: Int, _ verdict: SafetyVerdict) {
    completions[sample].finishReason = .safety
    completions[sample].flaggedCategories = verdict.flaggedCategories.map(\.rawValue)
  }

  /// Records a finish or failure event (token events carry text the caller places).
  mutating func absorb(_ event: GenerationEvent) {
    switch event {
    case .token: break
    case .finished(let sample, let reason, let count):
      // A sample the safety screen blocked keeps finish reason SAFETY.
      if completions[sample].finishReason != .safety {
        completions[sample].finishReason = InferenceService.finishReason(reason)
      }
      completionTokens += count
    case .failed(let message):
      failure = message
    }
  }

  func usage(promptTokens: Int) -> Alignd_V1_Usage {
    .with {
      $0.promptTokens = UInt32(promptTokens)
      $0.completionTokens = UInt32(completionTokens)
      $0.totalTokens = $0.promptTokens + $0.completionTokens
    }
  }
}
