import AlignEngine

/// Identifies one generation request inside the scheduler.
public typealias RequestID = UInt64

/// Identifies one sequence (one sample of a request) in the engine's KV cache.
public typealias SlotID = Int

/// Why a sequence ended.
public enum FinishReason: String, Sendable, Equatable {
  case stop, length, cancelled, deadline, safety
}

/// The continuous-batching scheduler as a pure state machine: no threads, no I/O, no engine.
///
/// The engine loop calls ``schedule(now:)`` once per forward step and gets back what to run: one
/// decode token for every running sequence plus prefill chunks of admitted prompts under the
/// step's token budget. After the forward pass it reports each sampled token with
/// ``record(slot:token:finish:)``. New requests join between steps; no request waits for another
/// to finish before it starts. KV space is reserved at admission for the prompt and every sample's
/// `maxTokens`, so a running sequence never runs out of cache and nothing needs preempting.
public struct GenerationScheduler {
  public struct Configuration: Sendable, Equatable {
    /// Most sequences decoding at once (the batch size of a decode step).
    public var maxRunningSequences: Int
    /// Most tokens in one forward step (decode tokens plus prefill chunks).
    public var maxStepTokens: Int
    /// Most requests waiting in the queue; beyond it submissions are refused at once.
    public var queueCapacity: Int
    /// KV cache capacity in tokens, shared by every running sequence.
    public var kvCapacityTokens: Int
    /// Seconds of waiting that raise a queued request by one priority level.
    public var agingInterval: Double
    /// Tokens per KV cache block (reservations round up to whole blocks).
    public var kvBlockSize: Int
    /// KV tokens kept for prompt prefixes that later requests reuse, on top of
    /// `kvCapacityTokens` (0: no prefix cache). The engine loop owns them; the scheduler only
    /// starts a request's prefill after its reused prefix (``Request/cachedPrefix``).
    public var prefixCacheTokens: Int
    /// How the engine loop's KV cache stores keys and values. float32 here (results compare
    /// exactly with reference implementations); the server's `kv_cache_precision` defaults to
    /// float16 (half the memory, half the bytes attention reads per cached token).
    public var kvCachePrecision: KVCachePrecision
    /// Prompt-lookup speculation in the engine loop (`maxDraftTokens` 0: off). A decoding sequence
    /// feeds the tokens prompt lookup proposes with its last token and keeps those its sampler
    /// draws anyway, so completions are the same as without it; only forward passes are saved.
    /// The scheduler plans one token per decoding sequence either way (drafts ride on top).
    public var promptLookup: PromptLookup
    /// Draft only while at most this many sequences decode: a batched step is compute-bound, so
    /// rejected drafts there cost time that a lone, memory-bound sequence gets for free.
    public var lookupMaxSequences: Int

    public init(
      maxRunningSequences: Int = 32, maxStepTokens: Int = 256, queueCapacity: Int = 256,
      kvCapacityTokens: Int = 32 * 1024, agingInterval: Double = 2, kvBlockSize: Int = 1,
      prefixCacheTokens: Int = 0, kvCachePrecision: KVCachePrecision = .float32,
      promptLookup: PromptLookup = PromptLookup(maxDraftTokens: 0), lookupMaxSequences: Int = 4
    ) {
      self.promptLookup = promptLookup
      self.lookupMaxSequences = lookupMaxSequences
      self.prefixCacheTokens = prefixCacheTokens
      self.kvCachePrecision = kvCachePrecision
      self.maxRunningSequences = maxRunningSequences
      self.maxStepTokens = maxStepTokens
      self.queueCapacity = queueCapacity
      self.kvCapacityTokens = kvCapacityTokens
      self.agingInterval = agingInterval
      self.kvBlockSize = kvBlockSize
    }
  }

  /// A validated generation request as the scheduler sees it.
  public struct Request: Sendable, Equatable {
    public var id: RequestID
    public var promptTokens: [Int32]
    public var maxTokens: Int
    /// Samples sharing the prompt's prefill (n).
    public var samples: Int
    public var priority: RequestPriority
    /// Absolute deadline in the scheduler's clock (seconds), if any.
    public var deadline: Double?
    /// Leading prompt tokens whose keys and values the KV cache already holds (a reused prefix):
    /// prefill starts after them. Less than the prompt, so the last prompt token is always fed.
    public var cachedPrefix: Int

    public init(
      id: RequestID, promptTokens: [Int32], maxTokens: Int, samples: Int = 1,
      priority: RequestPriority = .normal, deadline: Double? = nil, cachedPrefix: Int = 0
    ) {
      self.cachedPrefix = max(0, min(cachedPrefix, promptTokens.count - 1))
      self.id = id
      self.promptTokens = promptTokens
      self.maxTokens = maxTokens
      self.samples = samples
      self.priority = priority
      self.deadline = deadline
    }

    /// KV tokens reserved while it runs, counted in whole cache blocks: each sample's sequence
    /// rounds up to a block, and a fork may copy the prompt's last, partly filled block.
    func reservation(blockSize: Int) -> Int {
      let block = max(1, blockSize)
      let perSample = (promptTokens.count + maxTokens + block - 1) / block * block
      return samples * perSample + (samples > 1 ? (samples - 1) * block : 0)
    }
  }

  public enum AdmissionError: Error, Equatable {
    /// The queue is at capacity; `retryAfter` estimates when to try again (seconds).
    case queueFull(retryAfter: Double)
    /// The request can never fit the KV cache.
    case tooLarge(needed: Int, capacity: Int)
  }

  /// One entry of a forward step.
  public struct StepItem: Sendable, Equatable {
    public var slot: SlotID
    public var request: RequestID
    /// Tokens to feed: a prefill chunk, or the one last-sampled token of a decoding sequence.
    public var tokens: [Int32]
    /// The slots that sample from this item's last logits (empty for a non-final prefill chunk;
    /// several when n > 1 samples share the prefill).
    public var sampleSlots: [SlotID]

    public init(slot: SlotID, request: RequestID, tokens: [Int32], sampleSlots: [SlotID]) {
      self.slot = slot
      self.request = request
      self.tokens = tokens
      self.sampleSlots = sampleSlots
    }
  }

  /// Everything the engine loop must do for one step, in order: release, run `items`, then
  /// `forks` (copy the prompt's KV into sibling slots) before sampling.
  public struct Step: Sendable, Equatable {
    /// Requests that ended without running further (cancelled or expired), with the reason.
    public var ended: [(request: RequestID, reason: FinishReason)] = []
    /// Sequences whose request finished or was cancelled: free their KV.
    public var releasedSlots: [SlotID] = []
    /// Requests that joined the running set in this step.
    public var admitted: [RequestID] = []
    /// The slots each admitted request holds, in sample order (slot 0 carries the prefill; the
    /// others become forks of it after the prompt's last chunk). A request may be admitted in a
    /// step that has no budget left for its first chunk: its sequence must exist from admission.
    public var admittedSlots: [RequestID: [SlotID]] = [:]
    public var items: [StepItem] = []
    /// KV copies to make after the forward pass: (from, to).
    public var forks: [(from: SlotID, to: SlotID)] = []

    public var isIdle: Bool { items.isEmpty }

    public static func == (a: Step, b: Step) -> Bool {
      a.ended.map { "\($0.request):\($0.reason)" } == b.ended.map { "\($0.request):\($0.reason)" }
        && a.releasedSlots == b.releasedSlots && a.admitted == b.admitted && a.admittedSlots == b.admittedSlots
        && a.items == b.items
        && a.forks.map { [$0.from, $0.to] } == b.forks.map { [$0.from, $0.to] }
    }
  }

  struct Running {
    var request: Request
    /// Slots of its samples; slot[0] carries the prefill.
    var slots: [SlotID]
    /// Prompt tokens already fed.
    var prefilled: Int = 0
    /// Last sampled token per live slot (decode input) and tokens generated per slot.
    var lastToken: [SlotID: Int32] = [:]
    var generated: [SlotID: Int] = [:]
    var finished: Set<SlotID> = []
    var cancelled = false

    var inPrefill: Bool { prefilled < request.promptTokens.count }
    var isDone: Bool { finished.count == slots.count }
  }

  public let configuration: Configuration
  private var queue: RequestQueue<Request>
  private var running: [Running] = []
  private var pendingCancels: Set<RequestID> = []
  private var freeSlots: [SlotID]
  private var reservedTokens = 0
  /// Recent seconds per finished request, for the retry hint.
  private var averageServiceSeconds: Double? = nil

  public init(configuration: Configuration) {
    self.configuration = configuration
    // The bound is on requests that must wait, which only the scheduler can tell (see submit).
    self.queue = RequestQueue(capacity: .max, agingInterval: configuration.agingInterval)
    // Each running sequence needs a slot; n > 1 requests take several.
    self.freeSlots = Array((0..<max(1, configuration.maxRunningSequences)).reversed())
  }

  // MARK: Observation

  public var queuedCount: Int { queue.count }
  public var runningRequestCount: Int { running.count }
  public var runningSequenceCount: Int { running.reduce(0) { $0 + $1.slots.count - $1.finished.count } }
  public var reservedKVTokens: Int { reservedTokens }
  public var hasWork: Bool { !queue.isEmpty || !running.isEmpty || !pendingCancels.isEmpty }

  // MARK: Transitions

  /// Queues a request, or refuses it at once. `queueCapacity` bounds the requests that must
  /// *wait*: a request the next step will admit (free slots and KV after the requests queued
  /// before it, counting sequences that finished and are released at that step) is always taken.
  /// So a capacity of 0 means "start at the next step or be refused", and the successors of a
  /// burst of finished requests are never refused for slots that are about to free.
  public mutating func submit(_ request: Request, now: Double) throws(AdmissionError) {
    let block = configuration.kvBlockSize
    let needed = request.reservation(blockSize: block)
    guard needed <= configuration.kvCapacityTokens, request.samples <= configuration.maxRunningSequences else {
      throw .tooLarge(needed: needed, capacity: configuration.kvCapacityTokens)
    }
    var slots = freeSlots.count
    var tokens = configuration.kvCapacityTokens - reservedTokens
    for entry in running where entry.isDone || entry.cancelled || pendingCancels.contains(entry.request.id) {
      slots += entry.slots.count
      tokens += entry.request.reservation(blockSize: block)
    }
    var waiting = 0
    for queued in queue.elements {
      slots -= queued.samples
      tokens -= queued.reservation(blockSize: block)
      if slots < 0 || tokens < 0 { waiting += 1 }
    }
    let startsNextStep = slots >= request.samples && tokens >= needed
    guard startsNextStep || waiting < configuration.queueCapacity else {
      // Rough wait: the queue drains about maxRunning requests per average service time.
      let perBatch = Double(max(1, configuration.maxRunningSequences))
      let retry = max(0.05, (averageServiceSeconds ?? 1) * Double(waiting + 1) / perBatch)
      throw .queueFull(retryAfter: retry)
    }
    queue.enqueue(request, priority: request.priority, now: now)
  }

  /// Cancels a request: a queued one ends at the next step, a running one frees its slots then.
  public mutating func cancel(_ id: RequestID) {
    pendingCancels.insert(id)
  }

  /// Plans the next forward step.
  ///
  /// `lookahead` is how long the step about to run is expected to take (the loop passes the last
  /// step's duration): a request whose deadline falls before the step would end ends now, so its
  /// answer reaches the client before the client's own deadline fires, however slow steps are.
  public mutating func schedule(now: Double, lookahead: Double = 0) -> Step {
    var step = Step()
    let horizon = now + max(0, lookahead)

    // 1. Cancellations and deadlines of queued requests.
    let cancels = pendingCancels
    pendingCancels.removeAll()
    let dropped = queue.removeAll { request in
      cancels.contains(request.id) || (request.deadline.map { horizon >= $0 } ?? false)
    }
    for request in dropped {
      step.ended.append((request.id, cancels.contains(request.id) ? .cancelled : .deadline))
    }

    // 2. Cancellations and deadlines of running requests; retire finished ones.
    var kept: [Running] = []
    for var entry in running {
      if cancels.contains(entry.request.id) {
        entry.cancelled = true
        step.ended.append((entry.request.id, .cancelled))
      } else if let deadline = entry.request.deadline, horizon >= deadline, !entry.isDone {
        step.ended.append((entry.request.id, .deadline))
        entry.cancelled = true
      }
      if entry.cancelled || entry.isDone {
        step.releasedSlots += entry.slots
        freeSlots += entry.slots
        reservedTokens -= entry.request.reservation(blockSize: configuration.kvBlockSize)
        continue
      }
      kept.append(entry)
    }
    running = kept

    // 3. Admission: highest effective priority first, while slots and KV reservations allow.
    while let next = queue.peek(now: now),
      freeSlots.count >= next.samples,
      reservedTokens + next.reservation(blockSize: configuration.kvBlockSize) <= configuration.kvCapacityTokens
    {
      _ = queue.dequeue(now: now)
      var slots: [SlotID] = []
      for _ in 0..<next.samples { slots.append(freeSlots.removeLast()) }
      reservedTokens += next.reservation(blockSize: configuration.kvBlockSize)
      running.append(Running(request: next, slots: slots, prefilled: next.cachedPrefix))
      step.admitted.append(next.id)
      step.admittedSlots[next.id] = slots
    }

    // 4. Decode tokens first (one per live sequence), then prefill chunks under the budget.
    var budget = configuration.maxStepTokens
    for entry in running where !entry.inPrefill {
      for slot in entry.slots where !entry.finished.contains(slot) {
        guard let token = entry.lastToken[slot] else { continue }
        step.items.append(StepItem(slot: slot, request: entry.request.id, tokens: [token], sampleSlots: [slot]))
        budget -= 1
      }
    }
    for index in running.indices where running[index].inPrefill {
      // Always let one prefill chunk through so a step full of decodes cannot starve prompts.
      let chunkBudget = max(budget, step.items.isEmpty ? configuration.maxStepTokens : 0)
      guard chunkBudget > 0 else { break }
      let entry = running[index]
      let remaining = entry.request.promptTokens.count - entry.prefilled
      let take = min(remaining, chunkBudget)
      let chunk = Array(entry.request.promptTokens[entry.prefilled..<(entry.prefilled + take)])
      let isLast = take == remaining
      let first = entry.slots[0]
      step.items.append(
        StepItem(slot: first, request: entry.request.id, tokens: chunk, sampleSlots: isLast ? entry.slots : []))
      if isLast {
        for sibling in entry.slots.dropFirst() { step.forks.append((first, sibling)) }
      }
      running[index].prefilled += take
      budget -= take
    }
    return step
  }

  /// Records the token sampled for `slot` (after the step that fed it) and whether that sequence
  /// finished with it. Unknown slots (already released) are ignored.
  public mutating func record(slot: SlotID, token: Int32, finish: FinishReason?) {
    guard let index = running.firstIndex(where: { $0.slots.contains(slot) }) else { return }
    running[index].lastToken[slot] = token
    running[index].generated[slot, default: 0] += 1
    if finish != nil || running[index].generated[slot, default: 0] >= running[index].request.maxTokens {
      running[index].finished.insert(slot)
    }
  }

  /// Marks a sequence finished without a new token (e.g. a stop string found in text already out).
  public mutating func finish(slot: SlotID) {
    guard let index = running.firstIndex(where: { $0.slots.contains(slot) }) else { return }
    running[index].finished.insert(slot)
  }

  /// Feeds the service-time estimate behind the retry hint.
  public mutating func observeServiceTime(_ seconds: Double) {
    averageServiceSeconds = averageServiceSeconds.map { 0.9 * $0 + 0.1 * max(0, seconds) } ?? max(0, seconds)
  }
}
