import Foundation
import Testing

import AlignEngine

/// all-MiniLM-L6-v2 (scripts/fetch-encoder.sh) against Hugging Face tokenizers and
/// sentence-transformers (Tests/Fixtures/encoder/make_encoder_fixtures.py).
enum EncoderFixtures {
  static let root = URL(fileURLWithPath: #filePath).resolvingSymlinksInPath()
    .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
  static let modelsDirectory =
    ProcessInfo.processInfo.environment["ALIGND_MODELS_DIR"] ?? root.appendingPathComponent("models").path
  static let encoderDirectory = modelsDirectory + "/all-MiniLM-L6-v2"
  static var available: Bool { FileManager.default.fileExists(atPath: encoderDirectory + "/model.safetensors") }

  struct Case: Decodable, Sendable, CustomTestStringConvertible {
    var text: String
    var tokens: [Int32]
    var embedding: [Float]
    var testDescription: String { String(text.prefix(40)) }
  }
  struct Hidden: Decodable { var text: String; var values: [[Float]] }
  struct Expected: Decodable {
    var max_seq_length: Int
    var cases: [Case]
    var hidden_first_tokens: [Hidden]
  }

  static let expected: Expected = {
    let url = root.appendingPathComponent("Tests/Fixtures/encoder/expected.json")
    // The fixture is committed; a decoding failure is a broken checkout and fails every test using it.
    return (try? JSONDecoder().decode(Expected.self, from: Data(contentsOf: url)))
      ?? Expected(max_seq_length: 0, cases: [], hidden_first_tokens: [])
  }()

  /// One encoder for the suite (loading maps 91 MB).
  static let encoder: SentenceEncoder? = try? SentenceEncoder(directory: encoderDirectory)
}

@Suite(.enabled(if: EncoderFixtures.available, "all-MiniLM-L6-v2 missing: run scripts/fetch-encoder.sh"))
struct SentenceEncoderTests {
  @Test func fixtureIsPresentAndCoversTheHardCases() throws {
    #expect(EncoderFixtures.expected.cases.count >= 30)
    #expect(EncoderFixtures.expected.max_seq_length == 256)
    // Some case is truncated (256 pieces), some has [UNK], some is empty.
    #expect(EncoderFixtures.expected.cases.contains { $0.tokens.count == 256 })
    #expect(EncoderFixtures.expected.cases.contains { $0.tokens.contains(100) })
    #expect(EncoderFixtures.expected.cases.contains { $0.tokens == [101, 102] })
  }

  @Test(arguments: EncoderFixtures.expected.cases)
  func tokenizesLikeHuggingFace(_ c: EncoderFixtures.Case) throws {
    let encoder = try #require(EncoderFixtures.encoder)
    #expect(encoder.maxSequenceLength == 256)
    #expect(encoder.tokens(c.text) == c.tokens)
  }

  @Test func embeddingsEqualSentenceTransformers() throws {
    let encoder = try #require(EncoderFixtures.encoder)
    let session = EncoderSession(encoder: encoder, threads: 2)
    let cases = EncoderFixtures.expected.cases
    let vectors = session.embed(cases.map(\.text))
    #expect(vectors.count == cases.count)
    for (c, v) in zip(cases, vectors) {
      #expect(v.count == 384)
      let diff = zip(c.embedding, v).map { abs($0 - $1) }.max() ?? .infinity
      #expect(diff < 2e-5, "\(c.testDescription): max |Δ| \(diff)")
    }
  }

  @Test func embeddingsDoNotDependOnTheBatch() throws {
    let encoder = try #require(EncoderFixtures.encoder)
    let session = EncoderSession(encoder: encoder, threads: 2, maxBatchTokens: 512)
    let texts = EncoderFixtures.expected.cases.map(\.text)
    let together = session.embed(texts)
    let alone = texts.map { session.embed([$0])[0] }
    let reversed = Array(session.embed(texts.reversed()).reversed())
    for i in texts.indices {
      let a = zip(together[i], alone[i]).map { abs($0 - $1) }.max() ?? .infinity
      let b = zip(together[i], reversed[i]).map { abs($0 - $1) }.max() ?? .infinity
      #expect(a <= 1e-6 && b <= 1e-6, "\(texts[i].prefix(30)): alone \(a), reversed \(b)")
    }
  }

  @Test func similarTextsAreCloserThanUnrelatedOnes() throws {
    let encoder = try #require(EncoderFixtures.encoder)
    let session = EncoderSession(encoder: encoder, threads: 1)
    let v = session.embed(["How do I bake bread?", "What is a simple bread recipe?", "The stock market fell today."])
    func dot(_ a: [Float], _ b: [Float]) -> Float { zip(a, b).reduce(0) { $0 + $1.0 * $1.1 } }
    #expect(abs(dot(v[0], v[0]) - 1) < 1e-5)
    #expect(dot(v[0], v[1]) > dot(v[0], v[2]) + 0.3)
  }

  @Test func refusesAFolderThatIsNotABertEncoder() throws {
    let smol = EncoderFixtures.root.appendingPathComponent("Tests/Fixtures/tiny-models/llama-f32").path
    #expect(throws: EngineError.self) { try SentenceEncoder(directory: smol) }
    #expect(throws: EngineError.self) { try SentenceEncoder(directory: "/nonexistent/folder") }
  }
}
