import AlignServing
import Testing

@Suite("Continuous-batching scheduler (state machine, no threads)")
struct GenerationSchedulerTests {
  typealias Scheduler = GenerationScheduler

  func request(
    _ id: RequestID, prompt: Int = 4, maxTokens: Int = 8, samples: Int = 1,
    priority: RequestPriority = .normal, deadline: Double? = nil
  ) -> Scheduler.Request {
    Scheduler.Request(
      id: id, promptTokens: (0..<prompt).map { Int32($0 + 100) }, maxTokens: maxTokens, samples: samples,
      priority: priority, deadline: deadline)
  }

  @Test func newRequestsJoinBetweenStepsWithoutWaitingForOthers() throws {
    var scheduler = Scheduler(configuration: .init(maxRunningSequences: 4, maxStepTokens: 64, queueCapacity: 8))
    try scheduler.submit(request(1, prompt: 5), now: 0)
    var step = scheduler.schedule(now: 0)
    #expect(step.admitted == [1])
    #expect(step.items.count == 1)
    #expect(step.items[0].tokens.count == 5)  // whole prompt fits the budget
    #expect(step.items[0].sampleSlots == [step.items[0].slot])
    let slot1 = step.items[0].slot
    scheduler.record(slot: slot1, token: 7, finish: nil)

    // Request 2 arrives while 1 is decoding: the next step decodes 1 and prefills 2 together.
    try scheduler.submit(request(2, prompt: 3), now: 0.1)
    step = scheduler.schedule(now: 0.1)
    #expect(step.admitted == [2])
    #expect(step.items.count == 2)
    #expect(step.items[0] == .init(slot: slot1, request: 1, tokens: [7], sampleSlots: [slot1]))
    #expect(step.items[1].request == 2 && step.items[1].tokens.count == 3)
  }

  @Test func prefillIsChunkedUnderTheStepBudgetAndDecodesGoFirst() throws {
    var scheduler = Scheduler(configuration: .init(maxRunningSequences: 4, maxStepTokens: 8))
    try scheduler.submit(request(1, prompt: 2), now: 0)
    let first = scheduler.schedule(now: 0)
    scheduler.record(slot: first.items[0].slot, token: 1, finish: nil)

    try scheduler.submit(request(2, prompt: 20), now: 0)
    var chunks: [Int] = []
    var sampled = false
    for _ in 0..<10 where !sampled {
      let step = scheduler.schedule(now: 0)
      // Request 1's decode token always comes first and counts against the budget.
      #expect(step.items.first?.request == 1)
      #expect(step.items.reduce(0) { $0 + $1.tokens.count } <= 8)
      for item in step.items where item.request == 1 {
        scheduler.record(slot: item.slot, token: 1, finish: nil)
      }
      if let prefill = step.items.first(where: { $0.request == 2 }) {
        chunks.append(prefill.tokens.count)
        if !prefill.sampleSlots.isEmpty {
          sampled = true
          scheduler.record(slot: prefill.slot, token: 9, finish: nil)
        }
      }
    }
    #expect(chunks == [7, 7, 6])  // 20 prompt tokens in budget-sized chunks; sampling only after the last
    #expect(sampled)
  }

  @Test func samplesShareThePromptPrefillThroughForks() throws {
    var scheduler = Scheduler(configuration: .init(maxRunningSequences: 8, maxStepTokens: 64))
    try scheduler.submit(request(1, prompt: 6, samples: 3), now: 0)
    let step = scheduler.schedule(now: 0)
    #expect(step.items.count == 1)  // one prefill for all three samples
    let item = step.items[0]
    #expect(item.sampleSlots.count == 3 && item.sampleSlots[0] == item.slot)
    #expect(step.forks.map(\.from) == [item.slot, item.slot])
    #expect(Set(step.forks.map(\.to)) == Set(item.sampleSlots.dropFirst()))
    for slot in item.sampleSlots { scheduler.record(slot: slot, token: 5, finish: nil) }
    let decode = scheduler.schedule(now: 0)
    #expect(Set(decode.items.map(\.slot)) == Set(item.sampleSlots))
  }

  @Test func finishedSequencesFreeTheirSlotsForQueuedRequests() throws {
    var scheduler = Scheduler(configuration: .init(maxRunningSequences: 1, maxStepTokens: 64))
    try scheduler.submit(request(1, maxTokens: 2), now: 0)
    try scheduler.submit(request(2), now: 0)
    var step = scheduler.schedule(now: 0)
    #expect(step.admitted == [1])
    #expect(scheduler.queuedCount == 1)
    let slot = step.items[0].slot
    scheduler.record(slot: slot, token: 1, finish: nil)
    step = scheduler.schedule(now: 0)
    #expect(step.admitted.isEmpty)
    scheduler.record(slot: slot, token: 2, finish: nil)  // reaches maxTokens = 2
    step = scheduler.schedule(now: 0)
    #expect(step.releasedSlots == [slot])
    #expect(step.admitted == [2])  // the freed slot is reused in the same step
    #expect(step.items.map(\.request) == [2])
  }

  @Test func stopFinishesASequenceEarly() throws {
    var scheduler = Scheduler(configuration: .init(maxRunningSequences: 2, maxStepTokens: 64))
    try scheduler.submit(request(1, maxTokens: 100), now: 0)
    let step = scheduler.schedule(now: 0)
    scheduler.record(slot: step.items[0].slot, token: 2, finish: .stop)
    let next = scheduler.schedule(now: 0)
    #expect(next.releasedSlots == [step.items[0].slot])
    #expect(next.items.isEmpty)
    #expect(!scheduler.hasWork)
  }

  @Test func fullQueueIsRefusedAtOnceWithARetryHint() throws {
    // queue_capacity bounds the requests that must wait; one the next step admits is not waiting.
    var scheduler = Scheduler(configuration: .init(maxRunningSequences: 1, queueCapacity: 2))
    try scheduler.submit(request(1), now: 0)  // starts at the next step
    try scheduler.submit(request(2), now: 0)  // waits (1 of 2)
    try scheduler.submit(request(3), now: 0)  // waits (2 of 2)
    do {
      try scheduler.submit(request(4), now: 0)
      Issue.record("a third waiting request was queued")
    } catch {
      guard case .queueFull(let retry) = error else {
        Issue.record("expected queueFull, got \(error)")
        return
      }
      #expect(retry > 0)
    }
    // A finished sequence frees a place for a waiting request, even before the next step
    // releases its slot.
    let step = scheduler.schedule(now: 0)
    let slot = try #require(step.admittedSlots[1]?.first)
    scheduler.record(slot: slot, token: 7, finish: .stop)
    try scheduler.submit(request(4), now: 0)
  }

  @Test func zeroQueueCapacityAdmitsOnlyWhatStartsAtTheNextStep() throws {
    var scheduler = Scheduler(configuration: .init(maxRunningSequences: 2, queueCapacity: 0))
    try scheduler.submit(request(1), now: 0)
    try scheduler.submit(request(2), now: 0)
    #expect(throws: Scheduler.AdmissionError.self) { try scheduler.submit(request(3), now: 0) }
    let step = scheduler.schedule(now: 0)
    #expect(step.admitted == [1, 2])
    #expect(throws: Scheduler.AdmissionError.self) { try scheduler.submit(request(3), now: 0) }
    // The successor of a finished sequence is taken before the next step releases its slot.
    let slot = try #require(step.admittedSlots[1]?.first)
    scheduler.record(slot: slot, token: 7, finish: .stop)
    try scheduler.submit(request(3), now: 0)
    #expect(throws: Scheduler.AdmissionError.self) { try scheduler.submit(request(4), now: 0) }
    #expect(scheduler.schedule(now: 0).admitted == [3])
  }

  @Test func kvSpaceLimitsWhatStartsAtTheNextStep() throws {
    // Slots are free but the KV reservation of a second request does not fit: it would wait.
    var scheduler = Scheduler(configuration: .init(maxRunningSequences: 4, queueCapacity: 0, kvCapacityTokens: 20))
    try scheduler.submit(request(1, prompt: 4, maxTokens: 8), now: 0)
    #expect(throws: Scheduler.AdmissionError.self) { try scheduler.submit(request(2, prompt: 4, maxTokens: 8), now: 0) }
  }

  @Test func requestsThatCanNeverFitAreRefused() {
    var scheduler = Scheduler(configuration: .init(kvCapacityTokens: 100))
    #expect(throws: Scheduler.AdmissionError.tooLarge(needed: 150, capacity: 100)) {
      try scheduler.submit(request(1, prompt: 50, maxTokens: 100), now: 0)
    }
  }

  @Test func kvReservationsLimitAdmission() throws {
    var scheduler = Scheduler(configuration: .init(maxRunningSequences: 8, kvCapacityTokens: 30))
    try scheduler.submit(request(1, prompt: 10, maxTokens: 10), now: 0)  // reserves 20
    try scheduler.submit(request(2, prompt: 10, maxTokens: 10), now: 0)  // would need 40 in all
    let step = scheduler.schedule(now: 0)
    #expect(step.admitted == [1])
    #expect(scheduler.reservedKVTokens == 20)
    #expect(scheduler.queuedCount == 1)
  }

  @Test func cancellationEndsQueuedAndRunningRequests() throws {
    var scheduler = Scheduler(configuration: .init(maxRunningSequences: 1))
    try scheduler.submit(request(1), now: 0)
    try scheduler.submit(request(2), now: 0)
    let step = scheduler.schedule(now: 0)
    let slot = step.items[0].slot
    scheduler.record(slot: slot, token: 1, finish: nil)
    scheduler.cancel(2)  // queued
    scheduler.cancel(1)  // running
    let next = scheduler.schedule(now: 0)
    #expect(Set(next.ended.map(\.request)) == [1, 2])
    #expect(next.ended.allSatisfy { $0.reason == .cancelled })
    #expect(next.releasedSlots == [slot])  // the slot is free within one step
    #expect(next.items.isEmpty)
    #expect(!scheduler.hasWork)
  }

  @Test func deadlinesEndQueuedAndRunningRequests() throws {
    var scheduler = Scheduler(configuration: .init(maxRunningSequences: 1))
    try scheduler.submit(request(1, deadline: 5), now: 0)
    try scheduler.submit(request(2, deadline: 2), now: 0)
    let step = scheduler.schedule(now: 0)
    scheduler.record(slot: step.items[0].slot, token: 1, finish: nil)
    var next = scheduler.schedule(now: 3)  // request 2 expired while queued
    #expect(next.ended.map(\.request) == [2])
    #expect(next.ended.first?.reason == .deadline)
    #expect(next.items.count == 1)
    scheduler.record(slot: next.items[0].slot, token: 1, finish: nil)
    next = scheduler.schedule(now: 6)  // request 1 expired mid-decode
    #expect(next.ended.map(\.request) == [1])
    #expect(next.ended.first?.reason == .deadline)
    #expect(next.releasedSlots.count == 1)
  }

  @Test func prioritiesReorderTheQueueAndAgingBoundsStarvation() throws {
    var scheduler = Scheduler(
      configuration: .init(maxRunningSequences: 1, maxStepTokens: 64, queueCapacity: 16, agingInterval: 10))
    try scheduler.submit(request(1, maxTokens: 1), now: 0)  // occupies the only slot
    var step = scheduler.schedule(now: 0)
    try scheduler.submit(request(2, maxTokens: 1, priority: .low), now: 0)
    try scheduler.submit(request(3, maxTokens: 1, priority: .normal), now: 0)
    try scheduler.submit(request(4, maxTokens: 1, priority: .high), now: 0)

    var order: [RequestID] = []
    var now = 0.0
    for _ in 0..<3 {
      for item in step.items { scheduler.record(slot: item.slot, token: 1, finish: .stop) }
      step = scheduler.schedule(now: now)
      order += step.admitted
      now += 1
    }
    #expect(order == [4, 3, 2])

    // Aging: a low request that waited 2 aging intervals outranks a fresh high one.
    var aging = Scheduler(configuration: .init(maxRunningSequences: 1, queueCapacity: 16, agingInterval: 10))
    try aging.submit(request(10, maxTokens: 1), now: 0)
    var s = aging.schedule(now: 0)
    try aging.submit(request(11, maxTokens: 1, priority: .low), now: 0)
    try aging.submit(request(12, maxTokens: 1, priority: .high), now: 20.5)
    for item in s.items { aging.record(slot: item.slot, token: 1, finish: .stop) }
    s = aging.schedule(now: 21)
    #expect(s.admitted == [11])
  }

  @Test func requestsAdmittedWithoutBudgetForTheirFirstChunkStillGetTheirSlots() throws {
    var scheduler = Scheduler(configuration: .init(maxRunningSequences: 4, maxStepTokens: 8))
    try scheduler.submit(request(1, prompt: 8), now: 0)
    try scheduler.submit(request(2, prompt: 8, samples: 2), now: 0)
    let step = scheduler.schedule(now: 0)
    #expect(step.admitted == [1, 2])
    #expect(step.items.map(\.request) == [1])  // the budget is spent on request 1's prompt
    // Request 2 holds its slots from admission on, so the engine can create its sequence now.
    #expect(step.admittedSlots[2]?.count == 2)
    #expect(Set(step.admittedSlots.values.flatMap { $0 }).count == 3)
    let next = scheduler.schedule(now: 0)
    #expect(next.items.first(where: { $0.request == 2 })?.slot == step.admittedSlots[2]?.first)
  }

  @Test func reservationsCountWholeKVBlocks() throws {
    // 10 + 10 tokens round up to two 16-token blocks; with 2 samples one more block for the fork.
    var scheduler = Scheduler(configuration: .init(maxRunningSequences: 8, kvCapacityTokens: 96, kvBlockSize: 16))
    try scheduler.submit(request(1, prompt: 10, maxTokens: 10, samples: 2), now: 0)
    _ = scheduler.schedule(now: 0)
    #expect(scheduler.reservedKVTokens == 2 * 32 + 16)
    #expect(throws: Scheduler.AdmissionError.tooLarge(needed: 112, capacity: 96)) {
      try scheduler.submit(request(2, prompt: 50, maxTokens: 50, samples: 1), now: 0)  // 100 -> 112
    }
  }
}
