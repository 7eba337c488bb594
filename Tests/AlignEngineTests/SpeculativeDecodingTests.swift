import AlignEngine
import AlignTestSupport
import Foundation
import Testing

extension EditingPrompts {
  static func tokens(_ entry: Entry, _ tokenizer: Tokenizer) throws -> [Int32] {
    let messages = entry.messages.map { ChatMessage(role: $0["role"] ?? "user", content: $0["content"] ?? "") }
    return try #require(try tokenizer.encodeChat(messages))
  }
}

@Suite("Prompt lookup drafts")
struct PromptLookupTests {
  @Test("the tokens after the most recent earlier occurrence of the longest matching suffix")
  func drafts() {
    let lookup = PromptLookup(maxDraftTokens: 3, maxNgram: 3, minNgram: 1)
    // Suffix [7, 8] occurs at 1 and 5; the most recent earlier one (5) is followed by 9, 7, 8.
    #expect(lookup.draft([6, 7, 8, 1, 2, 7, 8, 9, 7, 8]) == [9, 7, 8])
    // Only the 1-gram [4] matches (at 1): its followers, cut at the history's end.
    #expect(lookup.draft([3, 4, 5, 4]) == [5, 4])
    // The 3-gram [1, 2, 3] matches at 0 and wins over the more recent 1-gram [3] at 4.
    #expect(lookup.draft([1, 2, 3, 9, 3, 5, 1, 2, 3]) == [9, 3, 5])
    #expect(lookup.draft([1, 2, 3, 9, 3, 5, 1, 2, 3], limit: 2) == [9, 3])
    #expect(lookup.draft([1, 2, 3, 4]).isEmpty)
    #expect(lookup.draft([5]).isEmpty)
    #expect(PromptLookup(maxDraftTokens: 0).draft([1, 1, 1, 1]).isEmpty)
    // minNgram 2: a lone repeated token proposes nothing.
    #expect(PromptLookup(maxDraftTokens: 3, maxNgram: 3, minNgram: 2).draft([3, 4, 5, 4]).isEmpty)
  }
}

@Suite("Speculative decoding with prompt lookup")
struct SpeculativeDecodingTests {
  @Test(
    "`.each` rows are bitwise the rows of decoding the same tokens one at a time",
    arguments: ["gguf/llama-q4_1.gguf", "gguf/llama-q8_0.gguf"])
  func eachRowsEqualStepByStep(name: String) throws {
    let path = EngineFixtures.tiny(name)
    let engine = try Engine(model: TransformerModel(ggufPath: path))
    #expect(engine.model.decodesRowwise)
    let vocab = Int32(engine.model.hyperparameters.vocabSize)
    let prompt: [Int32] = (0..<11).map { ($0 * 37 + 5) % vocab }
    let fed: [Int32] = (0..<9).map { ($0 * 53 + 2) % vocab }
    for precision in [KVCachePrecision.float32, .float16] {
      func run(_ chunks: [[Int32]], _ request: LogitsRequest) throws -> [Float] {
        let cache = try engine.makeCache(capacityTokens: 128, precision: precision)
        try cache.addSequence(0)
        try cache.addSequence(1)
        _ = try engine.forward([BatchItem(sequence: 0, tokens: prompt)], cache: cache)
        var rows: [Float] = []
        for chunk in chunks {
          // Another sequence shares every step, as in a served batch.
          let out = try engine.forward(
            [BatchItem(sequence: 1, tokens: [3, 4, 5]), BatchItem(sequence: 0, tokens: chunk, logits: request)],
            cache: cache)
          rows += out[1].logits
        }
        return rows
      }
      let stepwise = try run(fed.map { [$0] }, .last)
      let verified = try run([Array(fed[0..<2]), Array(fed[2...])], .each)
      #expect(stepwise.count == fed.count * engine.model.hyperparameters.outputWidth)
      #expect(verified.map(\.bitPattern) == stepwise.map(\.bitPattern), "\(name) \(precision)")
    }
  }

  @Test(
    "SmolLM2 on the editing prompts: the same tokens with and without drafting, greedy and seeded",
    .enabled(if: TestModels.defaultPolicyPresent, Comment(rawValue: TestModels.defaultPolicyMissing)))
  func smolLM2SameTokens() throws {
    let engine = try Engine(model: TransformerModel(ggufPath: EngineFixtures.smolLM2))
    let tokenizer = try Tokenizer(TokenizerDescription(gguf: try GGUFFile(path: EngineFixtures.smolLM2)))
    let prompts = try EditingPrompts.load()
    #expect(prompts.count >= 10)
    let samplings = [
      SamplingParameters(temperature: 0),
      SamplingParameters(temperature: 0.8, topP: 0.95, seed: 7),
      SamplingParameters(temperature: 1, topK: 40, repetitionPenalty: 1.1, seed: 11),
    ]
    var drafted = 0, accepted = 0, plainPasses = 0, lookupPasses = 0
    for (i, entry) in prompts.prefix(4).enumerated() {
      let prompt = try EditingPrompts.tokens(entry, tokenizer)
      let sampling = samplings[i % samplings.count]
      let precision: KVCachePrecision = i % 2 == 0 ? .float16 : .float32
      let plain = try engine.decode(prompt: prompt, maxTokens: 48, sampling: sampling, kvCachePrecision: precision)
      let fast = try engine.decode(
        prompt: prompt, maxTokens: 48, sampling: sampling, lookup: PromptLookup(), kvCachePrecision: precision)
      #expect(fast.tokens == plain.tokens, "\(entry.id): \(tokenizer.decode(fast.tokens)) vs \(tokenizer.decode(plain.tokens))")
      #expect(plain.draftedTokens == 0 && plain.decodePasses == plain.tokens.count - 1)
      drafted += fast.draftedTokens
      accepted += fast.acceptedTokens
      plainPasses += plain.decodePasses
      lookupPasses += fast.decodePasses
      #expect(fast.decodePasses + fast.acceptedTokens == plain.decodePasses, "\(entry.id)")
    }
    // Drafting happened and paid off: editing answers copy spans of their prompt.
    #expect(accepted > 0 && drafted >= accepted)
    #expect(lookupPasses < plainPasses, "\(lookupPasses) passes with lookup vs \(plainPasses)")
  }
}
