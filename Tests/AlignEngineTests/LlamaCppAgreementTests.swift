import AlignEngine
import AlignTestSupport
import Foundation
import Testing

/// The engine against llama.cpp on the default SmolLM2 Q4_1 policy: tokenization, chat rendering,
/// teacher-forced next-token predictions over a 2,238-token text and greedy continuations of 13
/// prompts. References: Tests/Fixtures/smollm2 (made by make_fixtures.py with llama.cpp; its
/// README measures how close any non-identical implementation can get).
@Suite("Agreement with llama.cpp on SmolLM2 Q4_1", .serialized)
struct LlamaCppAgreementTests {
  static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .deletingLastPathComponent()
  static let fixtures = root.appendingPathComponent("Tests/Fixtures/smollm2")
  static let modelPath = TestModels.defaultPolicy
  static var modelPresent: Bool { FileManager.default.fileExists(atPath: modelPath) }

  struct TeacherForced: Decodable {
    var tokens: [Int32]
    var top1: [Int32]
    var gap: [Double]
  }

  struct Greedy: Decodable {
    struct Case: Decodable {
      var name: String
      var kind: String
      var messages: [ChatMessage]?
      var prompt: String
      var prompt_ids: [Int32]
      var max_tokens: Int
      var ids: [Int32]
      var gap: [Double]
    }
    var cases: [Case]
  }

  static func load<T: Decodable>(_ name: String, as type: T.Type) throws -> T {
    try JSONDecoder().decode(T.self, from: Data(contentsOf: fixtures.appendingPathComponent(name)))
  }

  static func engine() throws -> (Engine, Tokenizer, ChatTemplate) {
    let model = try TransformerModel(ggufPath: modelPath)
    let description = try TokenizerDescription(gguf: try GGUFFile(path: modelPath))
    let template = try ChatTemplate(source: try #require(description.chatTemplate))
    return (try Engine(model: model, settings: EngineSettings(threads: 2)), try Tokenizer(description), template)
  }

  @Test(.enabled(if: modelPresent, "the default model is not fetched (scripts/fetch-models.sh)"))
  func tokenizationAndChatRenderingMatch() throws {
    let (_, tokenizer, template) = try Self.engine()
    let text = try String(contentsOf: Self.fixtures.appendingPathComponent("text.txt"), encoding: .utf8)
    let reference = try Self.load("teacher_forced.json", as: TeacherForced.self)
    #expect(tokenizer.encode(text, addSpecialTokens: true, parseSpecial: true) == reference.tokens)

    let greedy = try Self.load("greedy.json", as: Greedy.self)
    for test in greedy.cases {
      if let messages = test.messages {
        let rendered = try template.render(messages: messages, addGenerationPrompt: true)
        #expect(rendered == test.prompt, "\(test.name)")
      }
      #expect(tokenizer.encode(test.prompt, addSpecialTokens: true, parseSpecial: true) == test.prompt_ids, "\(test.name)")
    }
  }

  @Test(.enabled(if: modelPresent, "the default model is not fetched (scripts/fetch-models.sh)"))
  func teacherForcedTopOneAgrees() throws {
    let (engine, _, _) = try Self.engine()
    let reference = try Self.load("teacher_forced.json", as: TeacherForced.self)
    var agree = 0
    var clear = 0
    var clearAgree = 0
    try engine.forEachLogitsRow(tokens: reference.tokens) { position, row in
      let mine = Int32(argmax(row))
      let same = mine == reference.top1[position]
      if same { agree += 1 }
      if reference.gap[position] >= 0.2 {
        clear += 1
        if same { clearAgree += 1 }
      }
    }
    let overall = Double(agree) / Double(reference.tokens.count)
    let clearRate = Double(clearAgree) / Double(clear)
    // llama.cpp run token by token agrees with its own batched pass on 96.1% of positions, so
    // differences below the quantization noise of Q8 activations are expected: require 99% where
    // llama.cpp's top-1 leads by at least 0.2 logits, and 95% everywhere (see the fixture README).
    #expect(clearRate >= 0.99, "top-1 agreement at gap ≥ 0.2: \(clearRate) over \(clear) positions")
    #expect(overall >= 0.95, "top-1 agreement overall: \(overall)")
    print("teacher-forced top-1 agreement: overall \(overall), gap ≥ 0.2 \(clearRate) (\(clear) positions)")
  }

  @Test(.enabled(if: modelPresent, "the default model is not fetched (scripts/fetch-models.sh)"))
  func greedyContinuationsAgreeUntilANearTie() throws {
    let (engine, _, _) = try Self.engine()
    let greedy = try Self.load("greedy.json", as: Greedy.self)
    var identical = 0
    for test in greedy.cases {
      let mine = try engine.greedy(prompt: test.prompt_ids, maxTokens: test.max_tokens)
      // Compare token by token; a difference is allowed only where llama.cpp's own choice was a
      // near-tie (its top-1 led by less than 0.5 logits, within the Q8 activation noise), after
      // which the continuations legitimately diverge.
      var step = 0
      while step < min(mine.count, test.ids.count) && mine[step] == test.ids[step] { step += 1 }
      if step == test.ids.count && mine.count == test.ids.count {
        identical += 1
        continue
      }
      #expect(step < test.gap.count && test.gap[step] < 0.5,
        "\(test.name): differs at step \(step) where llama.cpp's gap is \(step < test.gap.count ? test.gap[step] : -1)")
    }
    print("greedy continuations identical to llama.cpp: \(identical) of \(greedy.cases.count)")
    #expect(identical >= 4)
  }
}
