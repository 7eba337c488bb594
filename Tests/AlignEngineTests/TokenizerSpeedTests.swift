import AlignEngine
import AlignTestSupport
import Foundation
import Testing

@Suite("Tokenizer speed")
struct TokenizerSpeedTests {
  /// Prints encoding speed: "cold" is a fresh tokenizer (empty piece cache) on the corpus once (~12 KB),
  /// "warm" the corpus repeated to ~100 KB. The checks: the repeated text's ids are the corpus ids
  /// repeated (the cache changes nothing), and cold and warm runs agree.
  @Test(arguments: ["llama3-style", "qwen2-style", "llama2-style", "llama2-metaspace"])
  func encodeHundredKilobytes(name: String) throws {
    try Self.measure(name, cold: try TokenizerFixtures.huggingFace(name), warm: try TokenizerFixtures.huggingFace(name))
  }

  /// The same on SmolLM2's tokenizer, read from the default model's GGUF.
  @Test(.enabled(if: TestModels.defaultPolicyPresent, Comment(rawValue: TestModels.defaultPolicyMissing)))
  func encodeHundredKilobytesSmolLM2() throws {
    func make() throws -> Tokenizer {
      try Tokenizer(TokenizerDescription(gguf: try GGUFFile(path: TokenizerFixtures.smolLM2.path)))
    }
    try Self.measure("smollm2", cold: try make(), warm: try make())
  }

  static func measure(_ name: String, cold: Tokenizer, warm: Tokenizer) throws {
    // Joined with a separator that is its own piece in every pre-tokenizer and merges with nothing.
    let once = try TokenizerFixtures.expected(name).map(\.text).joined(separator: "\n\u{1}\n")
    var repeats = 1
    while once.utf8.count * repeats < 100_000 { repeats += 1 }
    let text = Array(repeating: once, count: repeats).joined(separator: "\n\u{1}\n")

    let clock = ContinuousClock()
    var coldIDs: [TokenID] = []
    let coldTime = clock.measure { coldIDs = cold.encode(once, addSpecialTokens: false) }
    var warmIDs: [TokenID] = []
    let warmTime = clock.measure { warmIDs = warm.encode(text, addSpecialTokens: false) }
    #expect(cold.encode(once, addSpecialTokens: false) == coldIDs)
    #expect(warmIDs.count > coldIDs.count * (repeats - 1))
    func seconds(_ d: Duration) -> Double { Double(d.components.seconds) + Double(d.components.attoseconds) * 1e-18 }
    print(
      "tokenizer speed \(name): cold \(once.utf8.count) bytes -> \(coldIDs.count) tokens in \(coldTime) "
        + "(\(Int(Double(coldIDs.count) / max(seconds(coldTime), 1e-9))) tok/s); "
        + "warm \(text.utf8.count) bytes -> \(warmIDs.count) tokens in \(warmTime) "
        + "(\(Int(Double(warmIDs.count) / max(seconds(warmTime), 1e-9))) tok/s)")
  }
}
