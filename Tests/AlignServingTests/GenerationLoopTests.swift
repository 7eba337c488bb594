import AlignEngine
import AlignServing
import AlignTestSupport
import Foundation
import MetricsTestKit
import Testing

/// The engine loop in process on the default SmolLM2 policy (skipped when the model is absent).
@Suite("Generation loop on SmolLM2", .serialized)
struct GenerationLoopTests {
  static let modelPath = TestModels.defaultPolicy
  static var modelPresent: Bool { FileManager.default.fileExists(atPath: modelPath) }

  static func makeLoop(
    _ configuration: GenerationScheduler.Configuration = .init(maxRunningSequences: 8, kvCapacityTokens: 4096)
  ) throws -> (GenerationLoop, TestMetrics) {
    let metrics = TestMetrics()
    let model = try PolicyModel(ggufPath: modelPath, version: "smollm2-test")
    return (try GenerationLoop(model: model, configuration: configuration, metricsFactory: metrics), metrics)
  }

  struct Outcome {
    var texts: [Int: String] = [:]
    var tokens: [Int: [Int32]] = [:]
    var finishes: [Int: FinishReason] = [:]
  }

  static func collect(_ events: AsyncStream<GenerationEvent>) async -> Outcome {
    var outcome = Outcome()
    for await event in events {
      switch event {
      case .token(let sample, let text, let tokens):
        outcome.texts[sample, default: ""] += text
        outcome.tokens[sample, default: []] += tokens.map(\.token)
      case .finished(let sample, let reason, _):
        outcome.finishes[sample] = reason
      case .failed(let message):
        Issue.record("generation failed: \(message)")
      }
    }
    return outcome
  }

  func spec(_ loop: GenerationLoop, _ prompt: String, maxTokens: Int, samples: Int = 1, seed: UInt64 = 1,
            temperature: Float = 0.8, stops: [String] = []) -> GenerationSpec {
    GenerationSpec(
      promptTokens: loop.model.encodePrompt(prompt), maxTokens: maxTokens, samples: samples,
      sampling: SamplingParameters(temperature: temperature, seed: seed), stopStrings: stops, ignoreEOS: true)
  }

  @Test(.enabled(if: modelPresent, "the default model is not fetched (scripts/fetch-models.sh)"))
  func concurrentRequestsAreBatchedAndMetricsMove() async throws {
    let (loop, metrics) = try Self.makeLoop()
    defer { loop.shutdown() }
    let prompts = ["The ocean is", "My cat likes", "Swift is a language that", "Paris is"]
    let outcomes = await withTaskGroup(of: Outcome.self) { group in
      for (i, prompt) in prompts.enumerated() {
        let (_, events) = try! loop.submit(spec(loop, prompt, maxTokens: 12, seed: UInt64(i)))
        group.addTask { await Self.collect(events) }
      }
      var all: [Outcome] = []
      for await outcome in group { all.append(outcome) }
      return all
    }
    #expect(outcomes.count == 4)
    for outcome in outcomes {
      #expect(outcome.tokens[0]?.count == 12)
      #expect(outcome.finishes[0] == .length)
    }
    #expect(metrics.counterTotal(label: "alignd_generated_tokens_total") == 48)
    let ttft = try metrics.expectTimer("alignd_time_to_first_token_seconds", [("model", "smollm2-test")])
    #expect(ttft.values.count == 4)
    // The canary analysis' latency samples: one per request (TTFT) and one per completion (its
    // mean inter-token gap), not one per token.
    #expect(loop.latency.reading.ttft.count == 4 && loop.latency.reading.itl.count == 4)
    let batch = try metrics.expectRecorder("alignd_batch_sequences", [("model", "smollm2-test")])
    #expect((batch.values.max() ?? 0) >= 2, "requests submitted together must share forward steps")
    #expect(loop.stats.maxDecodeBatch >= 2)
  }

  @Test(.enabled(if: modelPresent, "the default model is not fetched (scripts/fetch-models.sh)"))
  func samplesShareOnePrefill() async throws {
    let (loop, metrics) = try Self.makeLoop()
    defer { loop.shutdown() }
    let request = spec(loop, "List three fruits:", maxTokens: 6, samples: 3, seed: 9, temperature: 1.0)
    let outcome = await Self.collect(try loop.submit(request).events)
    #expect(outcome.tokens.count == 3)
    #expect(outcome.tokens.values.allSatisfy { $0.count == 6 })
    // The prompt was prefilled once, not three times.
    #expect(metrics.counterTotal(label: "alignd_prefill_tokens_total") == Int64(request.promptTokens.count))
    // Different samples draw different random streams.
    #expect(Set(outcome.tokens.values.map { $0.map(String.init).joined(separator: ",") }).count > 1)
  }

  @Test(.enabled(if: modelPresent, "the default model is not fetched (scripts/fetch-models.sh)"))
  func stopStringsCutTheCompletionBeforeTheStop() async throws {
    let (loop, _) = try Self.makeLoop()
    defer { loop.shutdown() }
    let free = await Self.collect(
      try loop.submit(spec(loop, "Once upon a time", maxTokens: 24, temperature: 0)).events)
    let text = try #require(free.texts[0])
    // Pick a stop string from the middle of what greedy decoding produces.
    let words = text.split(separator: " ")
    try #require(words.count >= 4)
    let stop = " " + words[2]
    let cut = try #require(text.range(of: stop))
    let stopped = await Self.collect(
      try loop.submit(spec(loop, "Once upon a time", maxTokens: 24, temperature: 0, stops: [stop])).events)
    #expect(stopped.finishes[0] == .stop)
    #expect(stopped.texts[0] == String(text[..<cut.lowerBound]))
  }

  @Test(.enabled(if: modelPresent, "the default model is not fetched (scripts/fetch-models.sh)"))
  func fullQueueIsRefusedAndCounted() async throws {
    let (loop, metrics) = try Self.makeLoop(.init(maxRunningSequences: 1, queueCapacity: 1, kvCapacityTokens: 4096))
    defer { loop.shutdown() }
    var accepted: [AsyncStream<GenerationEvent>] = []
    var refused = 0
    for i in 0..<6 {
      do {
        accepted.append(try loop.submit(spec(loop, "Count to ten:", maxTokens: 16, seed: UInt64(i))).events)
      } catch {
        refused += 1
      }
    }
    #expect(refused >= 4)
    #expect(metrics.counterTotal(label: "alignd_rejections_total") == Int64(refused))
    for events in accepted {
      let outcome = await Self.collect(events)
      #expect(outcome.finishes[0] == .length)
    }
  }

  @Test(.enabled(if: modelPresent, "the default model is not fetched (scripts/fetch-models.sh)"))
  func promptsWaitingForStepBudgetStillRun() async throws {
    // A step budget smaller than the prompts that arrive together: some requests are admitted
    // in a step that has no room for their first chunk.
    let (loop, _) = try Self.makeLoop(.init(maxRunningSequences: 8, maxStepTokens: 16, kvCapacityTokens: 4096))
    defer { loop.shutdown() }
    let prompts = ["The history of the Roman Empire begins", "Photosynthesis is the process by which plants",
                   "In computer science, a hash table is", "The quick brown fox jumps over the lazy dog and"]
    let outcomes = await withTaskGroup(of: Outcome.self) { group in
      for (i, prompt) in prompts.enumerated() {
        let (_, events) = try! loop.submit(spec(loop, prompt, maxTokens: 6, samples: i == 3 ? 2 : 1, seed: UInt64(i)))
        group.addTask { await Self.collect(events) }
      }
      var all: [Outcome] = []
      for await outcome in group { all.append(outcome) }
      return all
    }
    #expect(outcomes.count == 4)
    for outcome in outcomes {
      #expect(!outcome.finishes.isEmpty)
      #expect(outcome.finishes.values.allSatisfy { $0 == .length }, "\(outcome.finishes)")
    }
  }

  @Test(
    "a deadline ends its request on time even while a long forward step holds the loop; it is counted once",
    .enabled(if: modelPresent, "the default model is not fetched (scripts/fetch-models.sh)"))
  func deadlineEndsARequestDuringALongStep() async throws {
    let (loop, metrics) = try Self.makeLoop()
    defer { loop.shutdown() }
    // A teacher-forced pass over 1024 tokens (every position's logits) keeps the loop thread busy
    // for seconds; a generation submitted meanwhile with a 300 ms deadline must end before it.
    let sentence = loop.model.encodePrompt("The ocean covers most of the planet and holds most of its water. ")
    let long = Array(Array(repeating: sentence, count: 1024 / sentence.count + 1).joined().prefix(1024))
    let order = Locked<[String]>([])
    async let forced: Void = {
      _ = try await loop.teacherForce([long])
      order.withLock { $0.append("teacher forcing") }
    }()
    try await Task.sleep(for: .milliseconds(50))
    var generation = spec(loop, "Tell me about rivers.", maxTokens: 512)
    generation.deadline = .now + .milliseconds(300)
    let outcome = await Self.collect(try loop.submit(generation).events)
    order.withLock { $0.append("generation") }
    try await forced
    #expect(outcome.finishes[0] == .deadline)
    #expect(order.withLock { $0 } == ["generation", "teacher forcing"])
    // Counted once as expired, not again as cancelled when the scheduler frees its slots.
    let next = await Self.collect(try loop.submit(spec(loop, "Paris is", maxTokens: 2)).events)
    #expect(next.finishes[0] == .length)
    #expect(metrics.counterTotal(label: "alignd_requests_ended_early_total") == 1)
  }

  @Test(
    "a prompt that begins like an earlier one reuses its cached KV blocks and decodes the same tokens",
    .enabled(if: modelPresent, "the default model is not fetched (scripts/fetch-models.sh)"))
  func prefixCacheReusesAPromptsBlocks() async throws {
    let system = String(repeating: "You answer questions about the sea, briefly and kindly. ", count: 30)
    func prompt(_ loop: GenerationLoop, _ question: String) -> [Int32] { loop.model.encodePrompt(system + question) }
    // Batch-invariant kernels (every row on the same path, however a prompt is chunked): the
    // reused blocks then give exactly the bits a full prefill gives. With the default GEMM path for
    // large chunks, a prompt chunked differently rounds differently, as any chunking does.
    let invariant = EngineSettings(gemmMinTokens: Int.max)
    let metrics = TestMetrics()
    let cached = try GenerationLoop(
      model: try PolicyModel(ggufPath: Self.modelPath, version: "smollm2-test", settings: invariant),
      configuration: .init(maxRunningSequences: 8, kvCapacityTokens: 4096, prefixCacheTokens: 2048),
      metricsFactory: metrics)
    defer { cached.shutdown() }
    let plain = try GenerationLoop(
      model: try PolicyModel(ggufPath: Self.modelPath, version: "smollm2-plain", settings: invariant),
      configuration: .init(maxRunningSequences: 8, kvCapacityTokens: 4096), metricsFactory: TestMetrics())
    defer { plain.shutdown() }
    var outcomes: [[Int32]] = []
    for question in [" Why is the sea salty?", " What lives in the deep sea?"] {
      let tokens = prompt(cached, question)
      let spec = GenerationSpec(
        promptTokens: tokens, maxTokens: 12, sampling: SamplingParameters(temperature: 0, seed: 1), ignoreEOS: true)
      let (id, events) = try cached.submit(spec)
      let reused = cached.cachedTokens(of: id)
      let outcome = await Self.collect(events)
      let reference = await Self.collect(try plain.submit(spec).events)
      // The same greedy tokens as a loop that prefills the whole prompt.
      #expect(outcome.tokens[0] == reference.tokens[0])
      outcomes.append(outcome.tokens[0] ?? [])
      if question.contains("salty") {
        #expect(reused == 0)
      } else {
        // Whole blocks of the shared system prompt, never the last prompt token.
        #expect(reused >= 256 && reused < tokens.count, "\(reused) of \(tokens.count)")
      }
    }
    #expect(outcomes.count == 2)
    #expect(metrics.counterTotal(label: "alignd_prefix_cache_lookups_total") == 2)
    #expect(metrics.counterTotal(label: "alignd_prefix_cache_tokens_total") >= 256)
    #expect(cached.stats.prefixCachedTokens > 0 && cached.stats.prefixCachedTokens <= 2048)
  }
}
