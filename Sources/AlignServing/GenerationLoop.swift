import AlignEngine
import Metrics
import Dispatch
import Foundation
import Synchronization

/// A validated generation request, ready for the scheduler.
public struct GenerationSpec: Sendable {
  public var promptTokens: [Int32]
  public var maxTokens: Int
  /// Completions sharing the prompt's prefill (n).
  public var samples: Int
  public var sampling: SamplingParameters
  /// Generation stops before any of these strings; the stop string is not returned.
  public var stopStrings: [String]
  /// Token ids that end a completion besides the model's own end tokens.
  public var extraStopTokenIDs: Set<Int32>
  public var ignoreEOS: Bool
  /// When set, every sampled token keeps the completion inside this JSON grammar, and the
  /// completion ends (with an end token) exactly when the document does.
  public var constraint: JSONTokenConstraint?
  public var priority: RequestPriority
  public var deadline: ContinuousClock.Instant?
  /// The server's own generation (the policy quality gate), not a client's: it is left out of the
  /// per-request serving measures (tokens, time to first token, inter-token latency, the canary's
  /// latency tallies) so that activating a checkpoint does not show up as traffic.
  public var isInternal = false

  public init(
    promptTokens: [Int32], maxTokens: Int, samples: Int = 1, sampling: SamplingParameters = .init(),
    stopStrings: [String] = [], extraStopTokenIDs: Set<Int32> = [], ignoreEOS: Bool = false,
    constraint: JSONTokenConstraint? = nil, priority: RequestPriority = .normal,
    deadline: ContinuousClock.Instant? = nil
  ) {
    self.constraint = constraint
    self.promptTokens = promptTokens
    self.maxTokens = maxTokens
    self.samples = samples
    self.sampling = sampling
    self.stopStrings = stopStrings
    self.extraStopTokenIDs = extraStopTokenIDs
    self.ignoreEOS = ignoreEOS
    self.priority = priority
    self.deadline = deadline
  }
}

/// What a request's event stream carries, in order per sample; the stream ends after every sample
/// has finished.
public enum GenerationEvent: Sendable, Equatable {
  /// New text of sample `sample` (never half a UTF-8 character) and the tokens that produced it.
  case token(sample: Int, text: String, tokens: [SampledToken])
  case finished(sample: Int, reason: FinishReason, completionTokens: Int)
  /// The engine failed; the request cannot continue.
  case failed(String)
}

/// A token of a given text with its log-probability under the model and the likeliest alternatives.
public struct ScoredToken: Sendable, Equatable {
  public var token: Int32
  public var logprob: Float
  public var top: [TokenLogprob]

  public init(token: Int32, logprob: Float, top: [TokenLogprob]) {
    self.token = token
    self.logprob = logprob
    self.top = top
  }

  public init(_ sampled: SampledToken) {
    self.init(token: sampled.token, logprob: sampled.logprob, top: sampled.topLogprobs)
  }
}

/// Live counters of the loop, for status and tests.
public struct GenerationLoopStats: Sendable, Equatable {
  public var queued: Int
  public var runningSequences: Int
  public var capacity: Int
  /// Forward steps run so far.
  public var steps: UInt64
  /// Sequences whose KV slot was released (finished, cancelled or expired).
  public var releasedSlots: UInt64
  /// Largest number of sequences decoded in one step.
  public var maxDecodeBatch: Int
  /// KV tokens only the prefix cache holds.
  public var prefixCachedTokens = 0
  /// Tokens prompt lookup proposed, and those kept.
  public var draftedTokens: UInt64 = 0
  public var acceptedDraftTokens: UInt64 = 0
}

/// One engine loop per loaded policy: continuous batching on a dedicated thread.
///
/// Every step it asks the ``GenerationScheduler`` what to run (decode tokens of running sequences
/// plus prefill chunks of new ones), runs one batched forward pass, samples, streams tokens out and
/// records them. Requests join between steps. The forward pass is CPU-bound work of tens of
/// milliseconds, so it runs on its own thread rather than on Swift's cooperative pool, where it
/// would starve the network event handlers.
///
/// Thread-safety: the scheduler and the request table live behind `shared` (a Mutex) and are
/// touched by submitters and the loop; `slots` (samplers, detokenizers) is touched only by the
/// loop thread, which is why the class is `@unchecked Sendable`.
public final class GenerationLoop: @unchecked Sendable {
  struct RequestContext {
    var spec: GenerationSpec
    var continuation: AsyncStream<GenerationEvent>.Continuation
    var finishedSamples: Set<Int> = []
    var submittedAt: ContinuousClock.Instant
    var firstTokenSeen = false
    /// Tokens generated so far per sample (for a finish event sent off the loop thread).
    var generated: [Int: Int] = [:]
    /// Leading prompt tokens reused from the prefix cache.
    var cachedTokens = 0
    /// Ends the request at its deadline even while a forward step runs (``expire(_:)``);
    /// cancelled once the request ends otherwise.
    var deadlineTimer: Task<Void, Never>?
  }

  struct Shared {
    var scheduler: GenerationScheduler
    var requests: [RequestID: RequestContext] = [:]
    var nextID: RequestID = 1
    var stopped = false
    var stats: GenerationLoopStats
    var jobs: [TeacherForcingJob] = []
    /// Prompts kept for reuse (the loop thread owns their KV sequences).
    var prefixes: PrefixIndex
  }

  /// Teacher-forced forward passes (prompt log-probabilities), batched together between steps.
  struct TeacherForcingJob {
    var sequences: [[Int32]]
    var topLogprobs: Int
    var continuation: CheckedContinuation<[[ScoredToken]], any Error>
  }

  struct SlotContext {
    var request: RequestID
    /// The request's spec, kept with the slot so sampling needs no lock to read it.
    var spec: GenerationSpec
    var sample: Int
    var sampler: Sampler
    var detokenizer: StreamingDetokenizer
    /// Decoded text held back because it might begin a stop string.
    var held = ""
    var generated = 0
    var promptLength: Int
    var done = false
    var lastTokenAt: ContinuousClock.Instant? = nil
    /// Sum and count of this completion's inter-token gaps: the canary analysis takes one sample
    /// (their mean) per completion, since the gaps of one completion share its batch and stalls.
    var gapSeconds = 0.0
    var gaps = 0
    /// Where the completion stands in `spec.constraint`'s grammar.
    var grammarState: JSONGrammar.State?
    /// Its prompt was offered to the prefix cache (once, when its prefill ended).
    var prefixOffered = false
    /// The prompt and every token sampled since (what prompt lookup searches).
    var history: [Int32]
    /// Whether drafts have been paying for this completion, and a closed gate's proposed next
    /// token (checked against the one drawn).
    var draftGate = DraftGate()
    var shadowDraft: Int32? = nil
  }

  public let model: PolicyModel
  let metrics: ServingMetrics
  /// Time to first token and inter-token gaps of this loop's version (the canary analysis).
  public let latency = LatencyTally()
  private let shared: Mutex<Shared>
  /// Requests cancelled since the last step. `cancel` runs inside task-cancellation handlers,
  /// which hold the cancelled task's status lock, while the loop thread yields events (resuming
  /// that task takes the same status lock) under `shared`: taking `shared` there deadlocked both
  /// (found by CI). This lock is never held while resuming anything.
  private let pendingCancels = Mutex<[RequestID]>([])
  private let wake = DispatchSemaphore(value: 0)
  private let cache: KVCache
  private let origin = ContinuousClock.now
  /// Loop-thread only.
  private var slots: [SlotID: SlotContext] = [:]
  private let finishedThread = DispatchSemaphore(value: 0)
  /// KV tokens the prefix cache may hold on its own (0: off); loop-thread only from here on.
  private let prefixBudget: Int
  private var nextPrefixSequence = GenerationLoop.prefixSlotBase
  /// Prompt lookup (nil: off) and the most decoding sequences it drafts for.
  private let lookup: PromptLookup?
  private let lookupMaxSequences: Int

  /// Creates the loop and starts its thread.
  /// - Throws: when the KV cache cannot be allocated.
  public init(
    model: PolicyModel, configuration: GenerationScheduler.Configuration,
    metricsFactory: any MetricsFactory = MetricsSystem.factory
  ) throws {
    self.model = model
    self.metrics = ServingMetrics(model: model.version, factory: metricsFactory)
    // Room for the generation reservations, one context of teacher-forcing work and the prefix
    // cache's own blocks.
    self.prefixBudget = max(0, configuration.prefixCacheTokens)
    // Verified rows equal one-at-a-time decode rows only on the integer row-wise path (packed
    // weights, batch-invariant settings — the defaults); elsewhere drafting could change outputs.
    let lookupUsable =
      configuration.promptLookup.maxDraftTokens > 0 && model.engine.settings.batchInvariant
      && model.engine.model.decodesRowwise
    self.lookup = lookupUsable ? configuration.promptLookup : nil
    self.lookupMaxSequences = configuration.lookupMaxSequences
    self.cache = try model.engine.makeCache(
      capacityTokens: configuration.kvCapacityTokens + model.contextLength + prefixBudget,
      precision: configuration.kvCachePrecision)
    let stats = GenerationLoopStats(
      queued: 0, runningSequences: 0, capacity: configuration.queueCapacity, steps: 0, releasedSlots: 0,
      maxDecodeBatch: 0)
    // Reservations must count whole blocks of this cache, or sequences could outgrow it.
    var configuration = configuration
    configuration.kvBlockSize = cache.blockSize
    self.shared = Mutex(
      Shared(
        scheduler: GenerationScheduler(configuration: configuration), stats: stats,
        prefixes: PrefixIndex(blockSize: cache.blockSize)))
    // The thread holds the loop only for one step at a time: a loop that nobody references any more
    // (a snapshot dropped without `shutdown()`) is freed, with its KV cache, instead of running on.
    let finished = finishedThread
    let thread = Thread { [weak self] in
      ServingThreads.nameCurrent("alignd-gen-loop")
      var lastStepSeconds = 0.0
      while let loop = self, loop.step(lastStepSeconds: &lastStepSeconds) {}
      finished.signal()
    }
    thread.start()
  }

  deinit {
    // Only reached when no caller holds the loop, so nothing can be waiting on a job or stream
    // that a reference keeps alive; end whatever is left rather than leave it hanging.
    let jobs = shared.withLock { state -> [TeacherForcingJob] in
      defer { state.jobs.removeAll() }
      return state.jobs
    }
    for job in jobs { job.continuation.resume(throwing: InvalidRequest("the engine loop was released")) }
    failAll("the engine loop was released")
  }

  /// Queues a request. Returns its id (for ``cancel(_:)``) and its event stream.
  /// - Throws: ``GenerationScheduler/AdmissionError`` when the queue is full or the request can
  ///   never fit.
  public func submit(_ spec: GenerationSpec) throws(GenerationScheduler.AdmissionError) -> (
    id: RequestID, events: AsyncStream<GenerationEvent>
  ) {
    let (stream, continuation) = AsyncStream.makeStream(of: GenerationEvent.self)
    let now = seconds(ContinuousClock.now)
    let deadline = spec.deadline.map { seconds($0) }
    let submittedAt = ContinuousClock.now
    let id: RequestID
    do {
      id = try shared.withLock { (state: inout Shared) throws(GenerationScheduler.AdmissionError) -> RequestID in
        let id = state.nextID
        state.nextID += 1
        let cached = prefixBudget > 0 ? state.prefixes.pin(id, prompt: spec.promptTokens) : 0
        do throws(GenerationScheduler.AdmissionError) {
          try state.scheduler.submit(
            .init(
              id: id, promptTokens: spec.promptTokens, maxTokens: spec.maxTokens, samples: spec.samples,
              priority: spec.priority, deadline: deadline, cachedPrefix: cached),
            now: now)
        } catch {
          state.prefixes.unpin(id)
          throw error
        }
        var context = RequestContext(spec: spec, continuation: continuation, submittedAt: submittedAt)
        context.cachedTokens = cached
        if let deadline = spec.deadline {
          context.deadlineTimer = Task { [weak self] in
            do { try await Task.sleep(until: deadline, clock: .continuous) } catch { return }
            self?.expire(id)
          }
        }
        state.requests[id] = context
        state.stats.queued = state.scheduler.queuedCount
        return id
      }
    } catch {
      switch error {
      case .queueFull: metrics.queueFull.increment()
      case .tooLarge: metrics.tooLarge.increment()
      }
      throw error
    }
    if prefixBudget > 0 {
      let cached = shared.withLock { $0.requests[id]?.cachedTokens ?? 0 }
      metrics.prefixLookups(hit: cached > 0).increment()
      if cached > 0 { metrics.prefixCachedTokens.increment(by: cached) }
    }
    wake.signal()
    return (id, stream)
  }

  /// Leading prompt tokens of request `id` that the prefix cache supplies (0 when none, or when
  /// the request has ended).
  public func cachedTokens(of id: RequestID) -> Int {
    shared.withLock { $0.requests[id]?.cachedTokens ?? 0 }
  }

  /// Cancels a request; it ends and its KV slots are freed at the next step. Never blocks on the
  /// loop (safe in a task-cancellation handler).
  public func cancel(_ id: RequestID) {
    pendingCancels.withLock { $0.append(id) }
    wake.signal()
  }

  /// Ends a request whose deadline has come, from its timer: every unfinished sample finishes with
  /// reason deadline now, not after the forward step under way (a step on a loaded host can take
  /// longer than the margin ``RequestDeadline`` leaves before the client's own deadline). Text the
  /// step produces meanwhile, and text held back for stop-string matching, is dropped; the KV
  /// slots are freed at the next step. A request that already ended is left alone.
  func expire(_ id: RequestID) {
    let ended = shared.withLock { state -> Bool in
      guard let request = state.requests.removeValue(forKey: id) else { return false }
      state.scheduler.cancel(id)
      state.prefixes.unpin(id)
      for sample in 0..<request.spec.samples where !request.finishedSamples.contains(sample) {
        request.continuation.yield(
          .finished(sample: sample, reason: .deadline, completionTokens: request.generated[sample] ?? 0))
      }
      request.continuation.finish()
      return true
    }
    guard ended else { return }
    metrics.expired.increment()
    wake.signal()
  }

  /// Log-probabilities of every token of each sequence given the tokens before it, computed in
  /// one batched forward pass with whatever other such requests arrived meanwhile (dynamic
  /// batching between generation steps). Returns, per sequence, one entry per token after the
  /// first, with the `topLogprobs` most likely alternatives at that position.
  /// - Throws: ``InvalidRequest`` when the sequences exceed the context; engine errors.
  public func teacherForce(_ sequences: [[Int32]], topLogprobs: Int = 0) async throws -> [[ScoredToken]] {
    let total = sequences.reduce(0) { $0 + $1.count }
    guard sequences.allSatisfy({ !$0.isEmpty }), total <= model.contextLength else {
      throw InvalidRequest(
        "the texts hold \(total) tokens in all; at most \(model.contextLength) fit one request")
    }
    return try await withCheckedThrowingContinuation { continuation in
      let accepted = shared.withLock { state -> Bool in
        guard !state.stopped else { return false }
        state.jobs.append(
          TeacherForcingJob(sequences: sequences, topLogprobs: topLogprobs, continuation: continuation))
        return true
      }
      if accepted {
        wake.signal()
      } else {
        continuation.resume(throwing: InvalidRequest("the server is shutting down"))
      }
    }
  }

  /// Current counters.
  public var stats: GenerationLoopStats { shared.withLock { $0.stats } }

  /// Stops the loop thread after the current step; queued and running requests fail.
  public func shutdown() {
    let wasRunning = shared.withLock { state -> Bool in
      defer { state.stopped = true }
      return !state.stopped
    }
    guard wasRunning else { return }
    wake.signal()
    finishedThread.wait()
  }

  private func seconds(_ instant: ContinuousClock.Instant) -> Double {
    Self.seconds(instant - origin)
  }

  static func seconds(_ d: Duration) -> Double {
    Double(d.components.seconds) + Double(d.components.attoseconds) * 1e-18
  }

  // MARK: The loop (loop thread only)

  /// One turn of the loop: teacher-forcing jobs, then one scheduled step (or a short wait when
  /// idle). Returns false once the loop is stopped. `lastStepSeconds` is the duration of the last
  /// forward step: requests whose deadline falls within the next one end before it (see
  /// GenerationScheduler.schedule).
  private func step(lastStepSeconds: inout Double) -> Bool {
    let now = seconds(ContinuousClock.now)
    let (step, stopped, admittedSpecs, jobs) = shared.withLock {
      state -> (GenerationScheduler.Step, Bool, [RequestID: GenerationSpec], [TeacherForcingJob]) in
      let jobs = state.jobs
      state.jobs.removeAll()
      for id in pendingCancels.withLock({ pending in defer { pending.removeAll() }; return pending }) {
        state.scheduler.cancel(id)
      }
      if state.stopped { return (GenerationScheduler.Step(), true, [:], jobs) }
      let step = state.scheduler.schedule(now: now, lookahead: lastStepSeconds)
      var specs: [RequestID: GenerationSpec] = [:]
      for id in step.admitted { specs[id] = state.requests[id]?.spec }
      state.stats.queued = state.scheduler.queuedCount
      state.stats.runningSequences = state.scheduler.runningSequenceCount
      metrics.queueDepth.record(state.scheduler.queuedCount)
      metrics.runningSequences.record(state.scheduler.runningSequenceCount)
      return (step, false, specs, jobs)
    }
    if stopped {
      for job in jobs { job.continuation.resume(throwing: InvalidRequest("the server is shutting down")) }
      failAll("the server is shutting down")
      return false
    }
    runTeacherForcing(jobs)
    apply(step, admittedSpecs: admittedSpecs)
    if step.isIdle {
      if jobs.isEmpty { _ = wake.wait(timeout: .now() + .milliseconds(50)) }
      return true
    }
    let started = ContinuousClock.now
    execute(step)
    lastStepSeconds = Self.seconds(ContinuousClock.now - started)
    return true
  }

  /// Runs pending teacher-forcing jobs in as few forward calls as the context budget allows.
  private func runTeacherForcing(_ jobs: [TeacherForcingJob]) {
    var index = 0
    while index < jobs.count {
      // Pack jobs while their tokens fit one context's worth of reserved cache.
      var group: [TeacherForcingJob] = []
      var tokens = 0
      while index < jobs.count {
        // Count whole KV blocks: each sequence occupies a multiple of the block size.
        let block = cache.blockSize
        let size = jobs[index].sequences.reduce(0) { $0 + ($1.count + block - 1) / block * block }
        if !group.isEmpty && tokens + size > model.contextLength { break }
        group.append(jobs[index])
        tokens += size
        index += 1
      }
      var items: [BatchItem] = []
      var nextSlot = Self.teacherForcingSlotBase
      for job in group {
        for sequence in job.sequences {
          items.append(BatchItem(sequence: SequenceID(nextSlot), tokens: sequence, logits: .all))
          nextSlot += 1
        }
      }
      // Registered before the sequences are added, so a failure half-way frees what was added.
      defer { for item in items where cache.contains(item.sequence) { cache.removeSequence(item.sequence) } }
      do {
        for item in items { try cache.addSequence(item.sequence) }
        let outputs = try model.engine.forward(items, cache: cache)
        var offset = 0
        for job in group {
          var results: [[ScoredToken]] = []
          for (k, sequence) in job.sequences.enumerated() {
            let output = outputs[offset + k]
            var scored: [ScoredToken] = []
            for i in 1..<max(1, sequence.count) {
              let row = output.row(i - 1)
              scored.append(
                ScoredToken(
                  token: sequence[i], logprob: logprob(of: sequence[i], in: row),
                  top: job.topLogprobs > 0 ? AlignEngine.topLogprobs(row, n: job.topLogprobs) : []))
            }
            results.append(scored)
          }
          offset += job.sequences.count
          job.continuation.resume(returning: results)
        }
      } catch {
        for job in group { job.continuation.resume(throwing: error) }
      }
    }
  }

  /// Sequence ids for teacher forcing start here, far above any generation slot.
  static let teacherForcingSlotBase = 1 << 30

  private func apply(_ step: GenerationScheduler.Step, admittedSpecs: [RequestID: GenerationSpec]) {
    for (request, reason) in step.ended {
      // A request its deadline timer ended was counted then.
      guard endRequest(request, reason: reason) else { continue }
      if reason == .deadline { metrics.expired.increment() } else { metrics.cancelled.increment() }
    }
    for slot in step.releasedSlots {
      cache.removeSequence(SequenceID(slot))
      slots[slot] = nil
    }
    if !step.releasedSlots.isEmpty {
      shared.withLock { $0.stats.releasedSlots += UInt64(step.releasedSlots.count) }
    }
    // Create the sampling state of newly admitted requests (slot order = sample order) and the
    // prefill slot's sequence, whether or not this step has budget for its first chunk.
    for (request, requestSlots) in step.admittedSlots {
      guard let spec = admittedSpecs[request], let first = requestSlots.first else { continue }
      for (sample, slot) in requestSlots.enumerated() {
        var parameters = spec.sampling
        // Distinct, reproducible streams per sample: sample i of seed s is the same whatever else runs.
        parameters.seed = spec.sampling.seed &+ UInt64(sample) &* 0x9E37_79B9_7F4A_7C15
        guard let sampler = try? Sampler(parameters: parameters, promptTokens: spec.promptTokens) else { continue }
        slots[slot] = SlotContext(
          request: request, spec: spec, sample: sample, sampler: sampler,
          detokenizer: StreamingDetokenizer(tokenizer: model.tokenizer), promptLength: spec.promptTokens.count,
          grammarState: spec.constraint?.grammar.initialState, history: lookup == nil ? [] : spec.promptTokens)
      }
      do {
        if let reuse = shared.withLock({ $0.prefixes.unpin(request) }) {
          // Start from the cached prompt: its whole blocks are shared, prefill resumes after them.
          try cache.fork(SequenceID(reuse.sequence), into: SequenceID(first))
          try cache.truncate(SequenceID(first), to: reuse.tokens)
        } else {
          try cache.addSequence(SequenceID(first))
        }
      } catch {
        failRequest(request, message: "the KV cache refused the sequence: \(error)")
      }
    }
    if prefixBudget > 0 && !step.releasedSlots.isEmpty { enforcePrefixBudget() }
  }

  /// Sequence ids of the prefix cache's entries start here, above any generation slot and below
  /// the teacher-forcing ones.
  static let prefixSlotBase = 1 << 29

  /// Keeps the prompt of `slot`'s request, once its prefill has ended, for later requests that
  /// begin with the same tokens (whole KV blocks shared, not copied).
  private func offerPrefix(slot: SlotID) {
    guard prefixBudget > 0, var context = slots[slot], !context.prefixOffered,
      cache.length(of: SequenceID(slot)) == context.promptLength
    else { return }
    context.prefixOffered = true
    slots[slot] = context
    let prompt = context.spec.promptTokens
    let length = shared.withLock { $0.prefixes.wants(prompt) }
    guard length > 0, length <= prefixBudget else { return }
    let sequence = nextPrefixSequence
    nextPrefixSequence = nextPrefixSequence >= Self.teacherForcingSlotBase - 1 ? Self.prefixSlotBase : sequence + 1
    do {
      try cache.fork(SequenceID(slot), into: SequenceID(sequence))
      try cache.truncate(SequenceID(sequence), to: length)
    } catch {
      cache.removeSequence(SequenceID(sequence))
      return
    }
    let dropped = shared.withLock { $0.prefixes.insert(prompt, length: length, sequence: sequence) }
    for old in dropped { cache.removeSequence(SequenceID(old)) }
    enforcePrefixBudget()
  }

  /// Drops least recently used entries while the blocks only the prefix cache holds exceed its
  /// budget (blocks a running request shares are that request's reservation).
  private func enforcePrefixBudget() {
    while true {
      let sequences = shared.withLock { $0.prefixes.entries.values.map(\.sequence) }
      let held = sequences.reduce(0) { $0 + cache.exclusiveBlocks(of: SequenceID($1)) } * cache.blockSize
      shared.withLock { $0.stats.prefixCachedTokens = held }
      guard held > prefixBudget, let victim = shared.withLock({ $0.prefixes.evictOne() }) else { return }
      cache.removeSequence(SequenceID(victim))
    }
  }

  private func execute(_ step: GenerationScheduler.Step) {
    let plainBatch = step.items.map { item in
      BatchItem(sequence: SequenceID(item.slot), tokens: item.tokens, logits: item.sampleSlots.isEmpty ? .none : .last)
    }
    var drafts = draftTokens(for: step)
    var batch = plainBatch
    for (index, draft) in drafts {
      batch[index].tokens += draft
      batch[index].logits = .each
    }
    let outputs: [ForwardOutput]
    let stepStart = ContinuousClock.now
    do {
      do {
        outputs = try model.engine.forward(batch, cache: cache)
      } catch EngineError.cacheFull where !drafts.isEmpty {
        // Drafts stay inside each sequence's reservation, so this should not happen; if it does,
        // run the step without them (a refused forward changes nothing).
        drafts = [:]
        batch = plainBatch
        outputs = try model.engine.forward(batch, cache: cache)
      }
      for fork in step.forks {
        try cache.fork(SequenceID(fork.from), into: SequenceID(fork.to))
      }
    } catch {
      for request in Set(step.items.map(\.request)) {
        failRequest(request, message: "the engine failed: \(error)")
      }
      return
    }
    let decodeCount = step.items.filter { $0.tokens.count == 1 && !$0.sampleSlots.isEmpty }.count
    let stepSeconds = Self.seconds(ContinuousClock.now - stepStart)
    let sampledCount = step.items.reduce(0) { $0 + $1.sampleSlots.count }
    metrics.batchSize.record(step.items.count)
    metrics.stepTokens.record(batch.reduce(0) { $0 + $1.tokens.count })
    metrics.prefillTokens.increment(by: step.items.filter { $0.tokens.count > 1 || $0.sampleSlots.isEmpty }.reduce(0) { $0 + $1.tokens.count })
    shared.withLock { state in
      state.stats.steps += 1
      state.stats.maxDecodeBatch = max(state.stats.maxDecodeBatch, decodeCount)
    }

    for item in step.items where !item.sampleSlots.isEmpty && item.tokens.count > 0 { offerPrefix(slot: item.slot) }
    var drafted = 0, accepted = 0
    for (index, item) in step.items.enumerated() where !item.sampleSlots.isEmpty {
      let output = outputs[index]
      guard output.rows > 0 else { continue }
      if let draft = drafts[index] {
        // Walk the verified rows in order, keeping drafted tokens while each is what the sampler
        // draws; the cache then drops the rejected ones (they were fed after the last kept one).
        var kept = 0
        for row in 0..<output.rows {
          guard let token = sampleAndEmit(slot: item.slot, logits: output.row(row)), row < draft.count,
            token == draft[row]
          else { break }
          kept += 1
        }
        drafted += draft.count
        accepted += kept
        slots[item.slot]?.draftGate.record(proposed: draft.count, kept: kept)
        if kept < draft.count, let length = cache.length(of: SequenceID(item.slot)) {
          try? cache.truncate(SequenceID(item.slot), to: length - (draft.count - kept))
        }
        continue
      }
      let logits = output.row(output.rows - 1)
      for slot in item.sampleSlots {
        sampleAndEmit(slot: slot, logits: logits)
        if var context = slots[slot], let shadow = context.shadowDraft {
          context.shadowDraft = nil
          context.draftGate.record(proposed: 1, kept: context.history.last == shadow ? 1 : 0)
          slots[slot] = context
        }
      }
    }
    // Tokens this step produced: one per sampling slot, plus the drafted tokens kept.
    if stepSeconds > 0 { metrics.tokensPerSecond.record(Double(sampledCount + accepted) / stepSeconds) }
    if drafted > 0 {
      metrics.draftedTokens.increment(by: drafted)
      metrics.acceptedDraftTokens.increment(by: accepted)
      shared.withLock { state in
        state.stats.draftedTokens += UInt64(drafted)
        state.stats.acceptedDraftTokens += UInt64(accepted)
      }
    }
  }

  /// Prompt-lookup drafts for this step's decoding sequences, by item index: only while at most
  /// `lookupMaxSequences` sequences decode, never past a completion's `maxTokens` or the context,
  /// and only for completions whose drafts have been paying (`DraftGate`; the others get their
  /// proposal checked in the shadow).
  private func draftTokens(for step: GenerationScheduler.Step) -> [Int: [Int32]] {
    guard let lookup else { return [:] }
    let decoding = step.items.indices.filter { step.items[$0].tokens.count == 1 && step.items[$0].sampleSlots.count == 1 }
    guard !decoding.isEmpty, decoding.count <= lookupMaxSequences else { return [:] }
    var drafts: [Int: [Int32]] = [:]
    for index in decoding {
      let item = step.items[index]
      guard item.sampleSlots[0] == item.slot, let context = slots[item.slot], !context.done,
        context.history.last == item.tokens[0]
      else { continue }
      // A pass yields at most drafts + 1 tokens; the drafted ones are written to the cache after the
      // fed token, inside the sequence's reservation (prompt + maxTokens).
      let room = min(
        context.spec.maxTokens - context.generated, model.contextLength - context.promptLength - context.generated) - 1
      let draft = lookup.draft(context.history, limit: room)
      guard let first = draft.first else { continue }
      if context.draftGate.isOpen {
        drafts[index] = draft
      } else {
        slots[item.slot]?.shadowDraft = first
      }
    }
    return drafts
  }

  /// Samples the next token of `slot` from `logits` and emits it; returns the token when the
  /// completion goes on after it (nil when it ended, failed or had ended before).
  @discardableResult
  private func sampleAndEmit(slot: SlotID, logits: ArraySlice<Float>) -> Int32? {
    guard var context = slots[slot], !context.done else { return nil }
    let spec = context.spec
    let sampled: SampledToken
    do {
      if let constraint = spec.constraint, let state = context.grammarState {
        let maskStart = ContinuousClock.now
        let mask = constraint.mask(for: state)
        metrics.constraintMask.record(duration: ContinuousClock.now - maskStart)
        sampled = try context.sampler.sample(logits, mask: mask)
        // An end token carries no bytes of the document: the completion stops on it.
        if !constraint.endTokens.contains(sampled.token) {
          context.grammarState = constraint.grammar.advance(state, by: model.tokenizer.bytes(of: sampled.token))
        }
      } else {
        sampled = try context.sampler.sample(logits)
      }
    } catch {
      failRequest(context.request, message: "sampling failed: \(error)")
      return nil
    }
    let token = sampled.token
    if lookup != nil { context.history.append(token) }
    var finish: FinishReason? = nil
    var text = ""
    var emittedTokens: [SampledToken] = []
    // A constraint lets an end token through only where the document is complete: it always ends.
    let endsOnEOS = !spec.ignoreEOS || spec.constraint != nil
    let isEnd = spec.extraStopTokenIDs.contains(token) || (endsOnEOS && model.stopTokenIDs.contains(token))
    if isEnd {
      // The end token itself is not part of the completion; release held-back text.
      text = context.held + context.detokenizer.finish()
      context.held = ""
      finish = .stop
    } else {
      context.generated += 1
      emittedTokens = [sampled]
      context.held += context.detokenizer.append(token)
      if let (prefix, matched) = Self.findStop(in: context.held, stops: spec.stopStrings), matched {
        text = prefix
        context.held = ""
        finish = .stop
      } else {
        let keep = Self.heldSuffixLength(context.held, stops: spec.stopStrings)
        let cut = context.held.index(context.held.endIndex, offsetBy: -keep)
        text = String(context.held[..<cut])
        context.held = String(context.held[cut...])
      }
      if finish == nil
        && (context.generated >= spec.maxTokens || context.promptLength + context.generated >= model.contextLength)
      {
        text += context.held + context.detokenizer.finish()
        context.held = ""
        finish = .length
      }
    }
    context.done = finish != nil
    if context.done && !spec.isInternal { latency.completed(gapSeconds: context.gapSeconds, gaps: context.gaps) }
    let emittedAt = ContinuousClock.now
    if !emittedTokens.isEmpty && !spec.isInternal {
      metrics.generatedTokens.increment()
      if let last = context.lastTokenAt {
        metrics.interTokenLatency.record(duration: emittedAt - last)
        context.gapSeconds += LatencyTally.seconds(emittedAt - last)
        context.gaps += 1
      }
      context.lastTokenAt = emittedAt
    }
    slots[slot] = context

    let sample = context.sample
    let generated = context.generated
    shared.withLock { state in
      state.scheduler.record(slot: slot, token: token, finish: finish)
      guard var request = state.requests[context.request] else { return }
      if !request.firstTokenSeen && !emittedTokens.isEmpty {
        request.firstTokenSeen = true
        if !spec.isInternal {
          metrics.timeToFirstToken.record(duration: emittedAt - request.submittedAt)
          latency.firstToken(after: emittedAt - request.submittedAt)
        }
      }
      if !text.isEmpty || !emittedTokens.isEmpty {
        request.continuation.yield(.token(sample: sample, text: text, tokens: emittedTokens))
      }
      request.generated[sample] = generated
      if let finish {
        request.continuation.yield(.finished(sample: sample, reason: finish, completionTokens: generated))
        request.finishedSamples.insert(sample)
        if request.finishedSamples.count == request.spec.samples {
          request.continuation.finish()
          request.deadlineTimer?.cancel()
          // Feeds the retry-after-ms hint of refused requests (never fed before: it stayed at 1 s).
          state.scheduler.observeServiceTime(Self.seconds(emittedAt - request.submittedAt))
          state.requests[context.request] = nil
          return
        }
      }
      state.requests[context.request] = request
    }
    return context.done ? nil : token
  }

  /// Finds the earliest stop string in `text`: the text before it and whether one matched.
  static func findStop(in text: String, stops: [String]) -> (String, Bool)? {
    var best: String.Index? = nil
    for stop in stops where !stop.isEmpty {
      if let range = text.range(of: stop), best == nil || range.lowerBound < best! {
        best = range.lowerBound
      }
    }
    guard let best else { return nil }
    return (String(text[..<best]), true)
  }

  /// Length (in characters) of the longest suffix of `text` that is a proper prefix of a stop string.
  static func heldSuffixLength(_ text: String, stops: [String]) -> Int {
    var longest = 0
    for stop in stops where !stop.isEmpty {
      var length = min(stop.count - 1, text.count)
      while length > longest {
        if text.hasSuffix(stop.prefix(length)) {
          longest = length
          break
        }
        length -= 1
      }
    }
    return longest
  }

  /// Ends a request the scheduler ended (cancelled, deadline). Returns false when it had ended
  /// already (its deadline timer).
  @discardableResult
  private func endRequest(_ id: RequestID, reason: FinishReason) -> Bool {
    let counts: [Int: Int] = Dictionary(
      slots.values.filter { $0.request == id }.map { ($0.sample, $0.generated) }, uniquingKeysWith: { a, _ in a })
    // Flush text held back for stop-string matching: it was generated and belongs to the answer.
    var flushed: [Int: String] = [:]
    for (slot, var context) in slots where context.request == id && !context.done {
      flushed[context.sample] = context.held + context.detokenizer.finish()
      context.held = ""
      context.done = true
      if !context.spec.isInternal { latency.completed(gapSeconds: context.gapSeconds, gaps: context.gaps) }
      slots[slot] = context
    }
    return shared.withLock { state in
      state.prefixes.unpin(id)
      guard let request = state.requests.removeValue(forKey: id) else { return false }
      request.deadlineTimer?.cancel()
      for sample in 0..<request.spec.samples where !request.finishedSamples.contains(sample) {
        if let text = flushed[sample], !text.isEmpty {
          request.continuation.yield(.token(sample: sample, text: text, tokens: []))
        }
        request.continuation.yield(.finished(sample: sample, reason: reason, completionTokens: counts[sample] ?? 0))
      }
      request.continuation.finish()
      return true
    }
  }

  private func failRequest(_ id: RequestID, message: String) {
    shared.withLock { state in
      state.scheduler.cancel(id)
      state.prefixes.unpin(id)
      guard let request = state.requests.removeValue(forKey: id) else { return }
      request.deadlineTimer?.cancel()
      request.continuation.yield(.failed(message))
      request.continuation.finish()
    }
    for (slot, var context) in slots where context.request == id {
      context.done = true
      slots[slot] = context
    }
  }

  private func failAll(_ message: String) {
    let requests = shared.withLock { state -> [RequestContext] in
      defer { state.requests.removeAll() }
      return Array(state.requests.values)
    }
    for request in requests {
      request.deadlineTimer?.cancel()
      request.continuation.yield(.failed(message))
      request.continuation.finish()
    }
  }
}
