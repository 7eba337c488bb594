import AlignEngine
import Foundation
import Synchronization

/// Generation: screen the prompt → submit → collect with output screening → rank best_of
/// candidates by reward → result stamped with versions.
extension InferencePipeline {
  /// Runs a generation request to its end.
  /// - Throws: ``InvalidRequest`` for bad input; ``ServingError`` when the server cannot serve it,
  ///   the deadline passes or the caller's task is cancelled;
  ///   ``GenerationScheduler/AdmissionError`` and ``DynamicBatcherError`` when a queue is full.
  public func generate(_ request: GenerationRequest) async throws -> GenerationResult {
    let started = ContinuousClock.now
    return try await RequestScheduling(request).run {
      if request.comparison == .policies { return try await generateComparison(request, started: started) }
      let (lease, validated) = try prepare(request)
      return try await generate(request, on: lease, validated: validated, started: started)
    }
  }

  /// One policy answers the whole request.
  private func generate(
    _ request: GenerationRequest, on lease: SnapshotLease<PolicySnapshot>, validated: ValidatedGenerate,
    started: ContinuousClock.Instant
  ) async throws -> GenerationResult {
    defer { withExtendedLifetime(lease) {} }
    let (result, firstToken) = try await counted(lease.snapshot.version) {
      try await generateCounted(request, policy: lease.snapshot, validated: validated, responseID: Self.responseID("gen"))
    }
    record(request, validated, result, started: started, firstToken: firstToken)
    return result.forClient(returnTokenIDs: validated.returnTokenIDs)
  }

  /// A comparison of the active and the canary policy: each answers the request once, at the same
  /// time (each in its own engine loop, counted in its own version's signals); the two completions
  /// come back in random order, so that a person ranking them cannot learn which side is which,
  /// each naming its version, and are logged as one response. While no canary serves, two samples
  /// of the active policy.
  private func generateComparison(_ request: GenerationRequest, started: ContinuousClock.Instant) async throws
    -> GenerationResult
  {
    let (active, canary) = try policyPair()
    guard let canary else {
      var samples = request
      samples.comparison = .samples
      return try await generate(
        samples, on: active, validated: try samples.validated(model: active.snapshot.model, limits: limits),
        started: started)
    }
    defer { withExtendedLifetime((active, canary)) {} }
    let validated = try request.validated(model: active.snapshot.model, limits: limits)
    var canaryValidated = try request.validated(model: canary.snapshot.model, limits: limits)
    // The prompt's log-probabilities come from the active policy (as in the merged answer below); the
    // canary arm does not score the prompt a second time.
    canaryValidated.promptLogprobs = nil
    let responseID = Self.responseID("gen")
    async let fromActive = counted(active.snapshot.version) {
      try await generateCounted(request, policy: active.snapshot, validated: validated, responseID: responseID)
    }
    async let fromCanary = counted(canary.snapshot.version) {
      try await generateCounted(request, policy: canary.snapshot, validated: canaryValidated, responseID: responseID)
    }
    let (a, c) = try await (fromActive, fromCanary)
    var arms = [(a.result, active.snapshot.version), (c.result, canary.snapshot.version)]
    if Bool.random() { arms.reverse() }
    var merged = GenerationResult(
      responseID: responseID, completions: [], usage: TokenUsage(promptTokens: a.result.usage.promptTokens),
      versions: a.result.versions)
    merged.promptLogprobs = a.result.promptLogprobs
    for (part, version) in arms {
      for var completion in part.completions {
        completion.index = merged.completions.count
        completion.policyVersion = version
        merged.completions.append(completion)
      }
      merged.usage.completionTokens += part.usage.completionTokens
    }
    let firstToken = [a.firstToken, c.firstToken].compactMap { $0 }.min()
    record(request, validated, merged, started: started, firstToken: firstToken)
    return merged.forClient(returnTokenIDs: validated.returnTokenIDs)
  }

  /// Runs a request on one policy snapshot: prompt screen, generation with output screening,
  /// best_of ranking. Returns the whole answer (token ids included, for the log) and when its
  /// first token came; the caller logs it and trims it for the client.
  private func generateCounted(
    _ request: GenerationRequest, policy: PolicySnapshot, validated: ValidatedGenerate, responseID: String
  ) async throws -> (result: GenerationResult, firstToken: ContinuousClock.Instant?) {
    let tokenizer = policy.model.tokenizer
    let screening = screening(request)
    let safety = screening == nil ? nil : try safetyChecker()
    defer { withExtendedLifetime(safety) {} }
    var versions = self.versions(policy: policy)
    if let safety { versions.safety = safety.snapshot.version }

    // A blocked prompt never reaches the policy.
    if let screening, let safety, let verdict = try await blockedPrompt(screening, checker: safety.snapshot.checker) {
      let result = GenerationResult(
        responseID: responseID, completions: Self.blockedCompletions(validated.returnCount, verdict), usage: .init(),
        versions: versions)
      return (result, nil)
    }
    // best_of: score the candidates with the reward model before choosing.
    let judging = validated.returnCount < validated.spec.samples ? try rewardScorer(routingKey: nil) : nil
    defer { withExtendedLifetime(judging?.hold) {} }
    if let judging { versions.reward = judging.versions.reward }

    try Self.checkNotCancelled()
    // The prompt's own log-probabilities when asked for: one teacher-forced pass, batched with
    // Logprobs work and run alongside the generation.
    async let promptScores = Self.scorePrompt(validated, on: policy)
    let completionIDs = Self.completionIDs(validated.spec.samples)
    var tally = GenerationTally(completionIDs: completionIDs)
    var cached = 0
    let screens = outputScreens(screening, safety, validated)
    if validated.spec.maxTokens == 0 {
      // Only the prompt is scored (echo with max_tokens 0): the completions are empty.
      tally.endEmpty()
    } else {
      let (id, events) = try policy.loop.submit(validated.spec)
      cached = policy.loop.cachedTokens(of: id)
      tally = try await collect(events, id: id, on: policy, completionIDs: completionIDs, screens: screens) {
        tally, sample, text, ids, logprobs in
        // Token ids are kept for the log whether or not the client asked for them.
        tally.place(
          sample, text: text, ids: ids,
          logprobs: validated.logprobs > 0 ? DecodedLogprob.decode(logprobs, tokenizer: tokenizer) : [])
      }
    }
    if tally.completions.contains(where: { $0.finishReason == .deadline }) {
      throw ServingError.deadlineExceeded("the deadline expired before the completion finished")
    }
    if tally.completions.contains(where: { $0.finishReason == .cancelled }) {
      throw ServingError.cancelled("the request was cancelled")
    }
    // Live signals (canary analysis, sampled judging) count generations; a scored prompt alone
    // (max_tokens 0) generated nothing.
    if validated.spec.maxTokens > 0 {
      observe(
        tally.completions, texts: models.sampler.shouldSample() ? tally.completions.map(\.text) : nil,
        version: policy.version, request: request, screened: screens != nil)
    }
    var result = GenerationResult(
      responseID: responseID, completions: tally.completions,
      usage: tally.usage(promptTokens: validated.spec.promptTokens.count, cachedTokens: cached), versions: versions)
    result.promptLogprobs = try await promptScores
    if let judging {
      let context = Self.rewardContext(request)
      let rewards = try await Self.rewards(
        result.completions.map { RewardInput(context: context, response: $0.text) }, on: judging.scorer)
      result.completions = Self.rank(result.completions, rewards: rewards, keep: validated.returnCount)
      result.candidateRewards = rewards
    }
    return (result, tally.firstTokenAt)
  }

  /// Hands an answered request to the generation log, if one is configured (never blocks).
  func record(
    _ request: GenerationRequest, _ validated: ValidatedGenerate, _ result: GenerationResult,
    started: ContinuousClock.Instant, firstToken: ContinuousClock.Instant?
  ) {
    guard let recorder else { return }
    let now = ContinuousClock.now
    recorder.record(
      GenerationRecord(
        request: request, renderedPrompt: validated.renderedPrompt, sampling: validated.spec.sampling,
        maxTokens: validated.spec.maxTokens, result: result, timeToFirstToken: firstToken.map { $0 - started },
        duration: now - started, finishedAt: Date()))
  }

  /// A fresh id per completion: `cmpl-` and 16 random hex digits.
  static func completionIDs(_ count: Int) -> [String] {
    (0..<count).map { _ in responseID("cmpl") }
  }

  /// The best `keep` candidates by reward, renumbered by rank and carrying their rewards; a
  /// candidate the safety screen blocked ranks below every other.
  public static func rank(_ candidates: [GeneratedCompletion], rewards: [Double], keep: Int) -> [GeneratedCompletion] {
    let order = candidates.indices.sorted { a, b in
      let (blockedA, blockedB) = (candidates[a].finishReason == .safety, candidates[b].finishReason == .safety)
      if blockedA != blockedB { return !blockedA }
      return rewards[a] > rewards[b]
    }
    return order.prefix(keep).enumerated().map { rank, index in
      var completion = candidates[index]
      completion.index = rank
      completion.reward = rewards[index]
      return completion
    }
  }

  /// Validates and admits a streamed generation: errors (bad input, a full queue, a blocked
  /// prompt's screen failing) come from here, before any output; the tokens then flow from
  /// ``GenerationStream/run(_:)``.
  public func stream(_ request: GenerationRequest) async throws -> GenerationStream {
    let started = ContinuousClock.now
    return try await RequestScheduling(request).run {
      try await streamScheduled(request, started: started)
    }
  }

  private func streamScheduled(_ request: GenerationRequest, started: ContinuousClock.Instant) async throws
    -> GenerationStream
  {
    guard request.comparison != .policies else {
      throw InvalidRequest(
        "a comparison of the active and the canary policy is answered whole: use Generate (HTTP: stream false)")
    }
    let (lease, validated) = try prepare(request)
    guard validated.returnCount == validated.spec.samples else {
      throw InvalidRequest("best_of ranks whole candidates, so it needs Generate, not GenerateStream")
    }
    let policy = lease.snapshot
    let screening = screening(request)
    let safety = screening == nil ? nil : try safetyChecker()
    var versions = self.versions(policy: policy)
    if let safety { versions.safety = safety.snapshot.version }
    let responseID = Self.responseID("gen")
    let origin = GenerationStream.Origin(request: request, validated: validated, started: started)
    if let screening, let safety, let verdict = try await blockedPrompt(screening, checker: safety.snapshot.checker) {
      return GenerationStream(
        responseID: responseID, versions: versions, scheduling: RequestScheduling(request), pipeline: self,
        origin: origin, body: .answered(Self.blockedCompletions(validated.returnCount, verdict)))
    }
    try Self.checkNotCancelled()
    // The prompt's log-probabilities, when asked for, computed alongside the generation (the
    // task inherits the request's priority and deadline).
    let promptScores =
      validated.promptLogprobs == nil ? nil : Task { try await Self.scorePrompt(validated, on: policy) }
    if validated.spec.maxTokens == 0 {
      var tally = GenerationTally(completionIDs: Self.completionIDs(validated.spec.samples))
      tally.endEmpty()
      return GenerationStream(
        responseID: responseID, versions: versions, scheduling: RequestScheduling(request), pipeline: self,
        origin: origin, body: .answered(tally.completions), promptScores: promptScores)
    }
    let (id, events) = try policy.loop.submit(validated.spec)
    let cached = policy.loop.cachedTokens(of: id)
    return GenerationStream(
      responseID: responseID, versions: versions, scheduling: RequestScheduling(request), pipeline: self,
      origin: origin,
      body: .running(
        GenerationStream.Running(
          lease: lease, safety: safety, id: id, events: events, cachedTokens: cached,
          screens: outputScreens(screening, safety, validated))),
      promptScores: promptScores)
  }

  /// Leases on the active policy and, when one serves, the canary (a comparison of the two).
  func policyPair() throws(ServingError) -> (SnapshotLease<PolicySnapshot>, SnapshotLease<PolicySnapshot>?) {
    try checkServing()
    guard let pair = models.policies.leasePair() else { throw .unavailable("no policy model is loaded") }
    return pair
  }

  /// Captures the policy snapshot for a request and validates the request against it.
  func prepare(_ request: GenerationRequest) throws -> (SnapshotLease<PolicySnapshot>, ValidatedGenerate) {
    let clientID = request.clientRequestID ?? ""
    let lease = try policy(routingKey: clientID.isEmpty ? nil : clientID)
    return (lease, try request.validated(model: lease.snapshot.model, limits: limits))
  }

  /// The completions of a request whose prompt the safety policy blocked: no generation ran.
  static func blockedCompletions(_ count: Int, _ verdict: SafetyVerdict) -> [GeneratedCompletion] {
    completionIDs(count).enumerated().map { index, completionID in
      var completion = GeneratedCompletion(index: index)
      completion.completionID = completionID
      completion.finishReason = .safety
      completion.flaggedCategories = verdict.flaggedCategories
      return completion
    }
  }

  /// A task cancelled before its request reaches the engine does not submit it: otherwise a short
  /// generation can run to its end before the cancellation handler sees the request.
  static func checkNotCancelled() throws(ServingError) {
    if Task.isCancelled { throw ServingError.cancelled("the request was cancelled") }
  }

  /// Runs a request's generation events to their end, for unary and streamed generation alike.
  ///
  /// With output screening, text is held back until it is checked: `deliver` receives only what
  /// may be released (with the tally, to place it), a blocked sample is recorded as such, and the
  /// request stops once every sample is blocked. Cancelling the calling task cancels the request;
  /// a failing `deliver` (the client is gone) frees its KV slots at once. An engine failure is
  /// ``ServingError/internalError(_:)``.
  func collect(
    _ events: AsyncStream<GenerationEvent>, id: RequestID, on policy: PolicySnapshot, completionIDs: [String],
    screens: OutputScreens?,
    deliver: (
      _ tally: inout GenerationTally, _ sample: Int, _ text: String, _ ids: [Int32], _ logprobs: [ScoredToken]
    ) async throws -> Void
  ) async throws -> GenerationTally {
    var tally = GenerationTally(completionIDs: completionIDs)
    var screens = screens
    let loop = policy.loop
    do {
      try await withTaskCancellationHandler {
        for await event in events {
          switch event {
          case .token(let sample, let text, let tokens):
            if tally.firstTokenAt == nil { tally.firstTokenAt = .now }
            guard var active = screens else {
              try await deliver(&tally, sample, text, tokens.map(\.token), tokens.map(ScoredToken.init))
              continue
            }
            let release = try await active.feed(sample, text: text, tokens: tokens)
            screens = active
            try await deliver(&tally, sample, release.text, release.ids, release.logprobs)
            if let verdict = release.blocked {
              tally.block(sample, verdict)
              if active.allBlocked { loop.cancel(id) }
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
      } onCancel: {
        loop.cancel(id)
      }
    } catch {
      loop.cancel(id)
      throw error
    }
    if let failure = tally.failure { throw ServingError.internalError(failure) }
    // A cancelled task's event stream ends early, before the finish events.
    if Task.isCancelled && tally.completions.contains(where: { $0.finishReason == nil }) {
      throw ServingError.cancelled("the request was cancelled")
    }
    return tally
  }
}

/// A streamed generation, admitted and running: ``run(_:)`` delivers its output and returns the
/// end (finish reasons, usage, versions). The snapshots it runs on stay loaded until it is
/// released; a stream released without running cancels its request.
public final class GenerationStream: Sendable {
  struct Running: Sendable {
    let lease: SnapshotLease<PolicySnapshot>
    let safety: SnapshotLease<SafetySnapshot>?
    let id: RequestID
    let events: AsyncStream<GenerationEvent>
    /// Prompt tokens the prefix cache supplied.
    let cachedTokens: Int
    let screens: OutputScreens?
  }

  /// What the stream answers, for its end and the generation log.
  struct Origin: Sendable {
    let request: GenerationRequest
    let validated: ValidatedGenerate
    let started: ContinuousClock.Instant
  }

  enum Body: Sendable {
    /// No generation runs: the prompt was blocked (the end says why), or only the prompt is
    /// scored (max_tokens 0).
    case answered([GeneratedCompletion])
    case running(Running)
  }

  public let responseID: String
  /// The versions that produce this stream (a canary's when routed to one).
  public let versions: ModelVersions
  /// Each completion's id, by index (chunks and the end carry them too).
  public let completionIDs: [String]
  let scheduling: RequestScheduling
  let pipeline: InferencePipeline
  let origin: Origin
  let body: Body
  /// The prompt's log-probabilities, when the request asked for them.
  let promptScores: Task<PromptLogprobs?, any Error>?
  private let started = Atomic<Bool>(false)

  init(
    responseID: String, versions: ModelVersions, scheduling: RequestScheduling, pipeline: InferencePipeline,
    origin: Origin, body: Body, promptScores: Task<PromptLogprobs?, any Error>? = nil
  ) {
    self.responseID = responseID
    self.versions = versions
    self.scheduling = scheduling
    self.pipeline = pipeline
    self.origin = origin
    self.body = body
    self.promptScores = promptScores
    switch body {
    case .answered(let completions): completionIDs = completions.map(\.completionID)
    case .running: completionIDs = InferencePipeline.completionIDs(origin.validated.spec.samples)
    }
  }

  deinit {
    if case .running(let running) = body, !started.load(ordering: .relaxed) {
      running.lease.snapshot.loop.cancel(running.id)
    }
    promptScores?.cancel()
  }

  /// The prompt's tokens and log-probabilities (nil unless the request asked for them), once
  /// computed: a client that echoes the prompt awaits them before its first chunk. Cancelling
  /// the waiting task cancels the computation.
  public func promptLogprobs() async throws -> PromptLogprobs? {
    guard let promptScores else { return nil }
    return try await withTaskCancellationHandler {
      try await promptScores.value
    } onCancel: {
      promptScores.cancel()
    }
  }

  /// Delivers every released chunk, in order, then returns the end of the stream: completions with
  /// finish reasons and flagged categories (no text: that went out in chunks), usage and versions.
  /// Call once.
  /// - Throws: whatever `deliver` throws (the request is cancelled then); ``ServingError`` for an
  ///   engine failure or a cancelled task; the safety screen's errors.
  public func run(_ deliver: (GenerationChunk) async throws -> Void) async throws -> GenerationResult {
    let running: Running
    switch body {
    case .answered(let completions):
      let usage = TokenUsage(promptTokens: promptScores == nil ? 0 : origin.validated.spec.promptTokens.count)
      return end(completions, usage: usage, firstToken: nil, prompt: try await promptLogprobs())
    case .running(let value): running = value
    }
    guard !started.exchange(true, ordering: .relaxed) else {
      throw ServingError.internalError("a generation stream runs once")
    }
    let policy = running.lease.snapshot
    let tokenizer = policy.model.tokenizer
    let validated = origin.validated
    let completionIDs = self.completionIDs
    let pipeline = self.pipeline
    // The whole completion is kept when the generation log or the canary's sampled judging (off
    // the token path) needs it; the end carries none of it.
    let sampled = pipeline.models.sampler.shouldSample()
    let keepText = sampled || pipeline.recorder != nil
    let tally = try await pipeline.counted(policy.version) {
      try await scheduling.run {
        try await pipeline.collect(
          running.events, id: running.id, on: policy, completionIDs: completionIDs, screens: running.screens
        ) { tally, sample, text, ids, logprobs in
          guard !text.isEmpty || !ids.isEmpty else { return }
          let decoded = validated.logprobs > 0 ? DecodedLogprob.decode(logprobs, tokenizer: tokenizer) : []
          if keepText { tally.place(sample, text: text, ids: ids, logprobs: decoded) }
          try await deliver(
            GenerationChunk(
              sample: sample, completionID: completionIDs[sample], text: text, tokenIDs: ids, logprobs: decoded))
        }
      }
    }
    pipeline.observe(
      tally.completions, texts: sampled ? tally.completions.map(\.text) : nil, version: policy.version,
      request: origin.request, screened: running.screens != nil)
    return end(
      tally.completions,
      usage: tally.usage(promptTokens: validated.spec.promptTokens.count, cachedTokens: running.cachedTokens),
      firstToken: tally.firstTokenAt, prompt: try await promptLogprobs())
  }

  /// The end of the stream: finish reasons, usage, versions and ids, but no text (that went out
  /// in chunks). The whole answer goes to the generation log first.
  private func end(
    _ completions: [GeneratedCompletion], usage: TokenUsage, firstToken: ContinuousClock.Instant?,
    prompt: PromptLogprobs?
  ) -> GenerationResult {
    var result = GenerationResult(responseID: responseID, completions: completions, usage: usage, versions: versions)
    result.promptLogprobs = prompt
    pipeline.record(origin.request, origin.validated, result, started: origin.started, firstToken: firstToken)
    var end = result
    for index in end.completions.indices {
      end.completions[index].text = ""
      end.completions[index].tokenIDs = []
      end.completions[index].logprobs = []
    }
    return end
  }
}

/// Finish reasons, token counts and failures of a request's completions, gathered from its events.
struct GenerationTally {
  var completions: [GeneratedCompletion]
  var completionTokens = 0
  var failure: String? = nil
  /// When the engine produced the first token of any sample.
  var firstTokenAt: ContinuousClock.Instant? = nil

  init(completionIDs: [String]) {
    completions = completionIDs.enumerated().map { index, completionID in
      var completion = GeneratedCompletion(index: index)
      completion.completionID = completionID
      return completion
    }
  }

  /// Appends released output to a sample's completion.
  mutating func place(_ sample: Int, text: String, ids: [Int32], logprobs: [DecodedLogprob]) {
    completions[sample].text += text
    completions[sample].tokenIDs += ids
    completions[sample].logprobs += logprobs
  }

  /// Ends every sample without output (max_tokens 0: only the prompt is scored).
  mutating func endEmpty() {
    for index in completions.indices { completions[index].finishReason = .length }
  }

  /// Marks a sample as stopped by the output safety screen.
  mutating func block(_ sample: Int, _ verdict: SafetyVerdict) {
    completions[sample].finishReason = .safety
    completions[sample].flaggedCategories = verdict.flaggedCategories
  }

  /// Records a finish or failure event (token events carry text the caller places).
  mutating func absorb(_ event: GenerationEvent) {
    switch event {
    case .token: break
    case .finished(let sample, let reason, let count):
      // A sample the safety screen blocked keeps finish reason SAFETY.
      if completions[sample].finishReason != .safety {
        completions[sample].finishReason = reason
      }
      completionTokens += count
    case .failed(let message):
      failure = message
    }
  }

  func usage(promptTokens: Int, cachedTokens: Int = 0) -> TokenUsage {
    var usage = TokenUsage(promptTokens: promptTokens, completionTokens: completionTokens)
    usage.cachedPromptTokens = cachedTokens
    return usage
  }
}
