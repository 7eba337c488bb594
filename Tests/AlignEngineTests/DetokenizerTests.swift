import AlignEngine
import Foundation
import Testing

@Suite("Incremental detokenization")
struct DetokenizerTests {
  /// Streams each corpus string's reference ids one at a time: every piece is whole UTF-8 (no U+FFFD
  /// unless the full decode has one) and the pieces add up to the full decode.
  @Test(arguments: ["llama3-style", "qwen2-style", "llama2-style", "llama2-metaspace"])
  func streamingEqualsFullDecode(name: String) throws {
    let tokenizer = try TokenizerFixtures.huggingFace(name)
    var heldBack = 0
    for c in try TokenizerFixtures.expected(name) {
      var stream = StreamingDetokenizer(tokenizer: tokenizer)
      var text = ""
      for id in c.ids {
        let piece = stream.append(id)
        if stream.hasPendingBytes { heldBack += 1 }
        if !c.decoded.contains("\u{FFFD}") {
          #expect(!piece.contains("\u{FFFD}"), "half a character emitted for \(String(reflecting: c.text))")
        }
        text += piece
      }
      text += stream.finish()
      let full = String(decoding: tokenizer.decodeBytes(c.ids), as: UTF8.self)
      #expect(text == full, "stream of \(String(reflecting: c.text))")
    }
    // The corpus has emoji and CJK split over byte tokens, so some bytes must have been held back.
    #expect(heldBack > 0)
  }

  @Test func emojiSplitOverByteTokensIsHeldBack() throws {
    let tokenizer = try TokenizerFixtures.huggingFace("llama2-style")
    // 🦀 is not in this small vocabulary: byte fallback gives 4 tokens <0xF0> <0x9F> <0xA6> <0x80>.
    let ids = tokenizer.encode("🦀", addSpecialTokens: false)
    let bytes = ids.flatMap { tokenizer.bytes(of: $0) }
    #expect(bytes.suffix(4) == [0xF0, 0x9F, 0xA6, 0x80])
    var stream = StreamingDetokenizer(tokenizer: tokenizer, stripLeadingSpace: true)
    let pieces = ids.map { stream.append($0) }
    #expect(pieces.dropLast().allSatisfy { $0.isEmpty })
    #expect(pieces.last == "🦀")
    #expect(stream.finish() == "")
  }

  @Test func incompleteTailBecomesReplacementOnFinish() throws {
    let tokenizer = try TokenizerFixtures.huggingFace("llama2-style")
    let f0 = try #require(tokenizer.tokenID("<0xF0>"))
    let a = try #require(tokenizer.tokenID("a"))
    var stream = StreamingDetokenizer(tokenizer: tokenizer)
    #expect(stream.append(a) == "a")
    #expect(stream.append(f0) == "")
    #expect(stream.finish() == "\u{FFFD}")
  }

  @Test func skipsSpecialTokens() throws {
    let tokenizer = try TokenizerFixtures.huggingFace("qwen2-style")
    let ids = tokenizer.encode("hi<|im_end|>", addSpecialTokens: false)
    var stream = StreamingDetokenizer(tokenizer: tokenizer, skipSpecialTokens: true)
    #expect(stream.append(contentsOf: ids) + stream.finish() == "hi")
  }
}
