import AlignEngine
import AlignServing
import AlignTestSupport
import Foundation
import MetricsTestKit
import Testing

/// Prompt-lookup speculation in the engine loop: served completions are the same with it on or off.
@Suite("Speculative decoding in the generation loop", .serialized)
struct SpeculativeGenerationTests {
  static func editingPrompts(_ tokenizer: Tokenizer) throws -> [(id: String, tokens: [Int32])] {
    try EditingPrompts.load().map { prompt in
      let messages = prompt.messages.map { ChatMessage(role: $0["role"] ?? "user", content: $0["content"] ?? "") }
      return (prompt.id, try #require(try tokenizer.encodeChat(messages)))
    }
  }

  /// Every request's events, per sample: texts, tokens with their log-probabilities, finishes.
  struct Outcome: Equatable {
    var texts: [Int: String] = [:]
    var tokens: [Int: [SampledToken]] = [:]
    var finishes: [Int: String] = [:]
  }

  static func collect(_ events: AsyncStream<GenerationEvent>) async -> Outcome {
    var outcome = Outcome()
    for await event in events {
      switch event {
      case .token(let sample, let text, let tokens):
        outcome.texts[sample, default: ""] += text
        outcome.tokens[sample, default: []] += tokens
      case .finished(let sample, let reason, let count):
        outcome.finishes[sample] = "\(reason.rawValue) \(count)"
      case .failed(let message):
        Issue.record("generation failed: \(message)")
      }
    }
    return outcome
  }

  /// Runs `specs` on a fresh loop, all at once (`together`) or one after another.
  static func run(
    _ specs: [GenerationSpec], lookup: PromptLookup, together: Bool
  ) async throws -> (outcomes: [Outcome], stats: GenerationLoopStats, metrics: TestMetrics) {
    let metrics = TestMetrics()
    // As the server runs it (batch_invariant): prompt chunks too take the row-wise path, so a
    // prompt split differently under load gives the same first token.
    let model = try PolicyModel(
      ggufPath: TestModels.defaultPolicy, version: "smollm2-test", settings: EngineSettings(gemmMinTokens: .max))
    let loop = try GenerationLoop(
      model: model,
      configuration: .init(
        maxRunningSequences: 8, kvCapacityTokens: 8192, promptLookup: lookup, lookupMaxSequences: 8),
      metricsFactory: metrics)
    defer { loop.shutdown() }
    var outcomes: [Outcome] = []
    if together {
      let streams = try specs.map { try loop.submit($0).events }
      for stream in streams { outcomes.append(await collect(stream)) }
    } else {
      for spec in specs { outcomes.append(await collect(try loop.submit(spec).events)) }
    }
    return (outcomes, loop.stats, metrics)
  }

  @Test(
    "editing prompts: the same texts, tokens, log-probabilities and finishes with drafting, alone or batched",
    .enabled(if: TestModels.defaultPolicyPresent, Comment(rawValue: TestModels.defaultPolicyMissing)))
  func sameCompletions() async throws {
    let model = try PolicyModel(ggufPath: TestModels.defaultPolicy, version: "smollm2-test")
    let prompts = try Self.editingPrompts(model.tokenizer)
    var specs: [GenerationSpec] = []
    for (i, prompt) in prompts.prefix(6).enumerated() {
      var spec = GenerationSpec(promptTokens: prompt.tokens, maxTokens: 40 + 8 * i)
      switch i % 3 {
      case 0: spec.sampling = SamplingParameters(temperature: 0, topLogprobs: 2)
      case 1: spec.sampling = SamplingParameters(temperature: 0.7, topP: 0.9, seed: UInt64(i))
      default:
        spec.sampling = SamplingParameters(temperature: 1, topK: 20, frequencyPenalty: 0.3, seed: UInt64(i))
        spec.samples = 2
      }
      if i == 4 { spec.stopStrings = ["."] }
      specs.append(spec)
    }
    let plain = try await Self.run(specs, lookup: PromptLookup(maxDraftTokens: 0), together: false)
    let drafted = try await Self.run(specs, lookup: PromptLookup(), together: true)
    for (i, prompt) in prompts.prefix(6).enumerated() {
      #expect(drafted.outcomes[i] == plain.outcomes[i], "\(prompt.id): \(drafted.outcomes[i].texts) vs \(plain.outcomes[i].texts)")
      #expect(!(plain.outcomes[i].texts[0] ?? "").isEmpty)
    }
    #expect(plain.stats.draftedTokens == 0)
    // Drafting ran and saved forward passes: editing answers copy their prompt.
    #expect(drafted.stats.acceptedDraftTokens > 0 && drafted.stats.draftedTokens >= drafted.stats.acceptedDraftTokens)
    #expect(
      drafted.metrics.counterTotal(label: "alignd_speculative_accepted_tokens_total")
        == Int64(drafted.stats.acceptedDraftTokens))
    #expect(
      drafted.metrics.counterTotal(label: "alignd_generated_tokens_total")
        == plain.metrics.counterTotal(label: "alignd_generated_tokens_total"))
  }
}
