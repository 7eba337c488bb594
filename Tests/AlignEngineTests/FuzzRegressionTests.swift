import AlignEngine
import Foundation
import Testing

/// Inputs that crashed, hung or exhausted memory in the fuzz targets (Fuzz/, scripts/fuzz.sh), fed
/// back through the public API. Each file in Tests/Fixtures/fuzz-regressions/ is the fuzz input as
/// found, leading mode byte included (see the harness of the target named in the file name), so
/// `.build-cache/fuzz-build/release/fuzz-<target> <file>` replays it too.
@Suite("Fuzz regressions")
struct FuzzRegressionTests {
  static let folder = URL(fileURLWithPath: #filePath)
    .deletingLastPathComponent().deletingLastPathComponent()
    .appendingPathComponent("Fixtures/fuzz-regressions")

  /// The fuzz input `name` without its leading mode byte.
  static func input(_ name: String) throws -> Data {
    let data = try Data(contentsOf: folder.appendingPathComponent(name))
    return data.dropFirst()
  }

  enum Outcome: Sendable { case syntaxError, runtimeError, renders(String) }

  /// What each chat-template input must do now: fail cleanly (a limit or a checked overflow) or render.
  static let chatTemplateCases: [(String, Outcome)] = [
    // Integer overflow traps (Int.min cases, range() arithmetic, int() of a huge double).
    ("abs-int-min", .runtimeError),
    ("negate-int-min", .runtimeError),
    ("floordiv-overflow", .runtimeError),
    ("modulo-overflow", .renders("0")),
    ("range-overflow", .runtimeError),
    ("range-step-overflow", .runtimeError),
    ("int-filter-huge-double", .runtimeError),
    ("int-filter-nan-string", .renders("0")),
    // Stack overflow in the parser (deep nesting) or the interpreter (long operator chains).
    ("deep-parens", .syntaxError),
    ("deep-not", .syntaxError),
    ("deep-conditional", .syntaxError),
    ("long-chain", .syntaxError),
    ("long-attr-chain", .syntaxError),
    ("long-filter-chain", .syntaxError),
    ("nesting-loop", .runtimeError),
    // Hangs (work budget) and memory blow-ups (size limits).
    ("nested-loops", .runtimeError),
    ("loop-100k", .runtimeError),
    ("loop-1000x1000", .runtimeError),
    ("unique-quadratic", .runtimeError),
    ("in-big-list", .runtimeError),
    ("output-blowup", .runtimeError),
    ("string-doubling", .runtimeError),
    ("join-blowup", .runtimeError),
    ("join-separator", .runtimeError),
    ("replace-blowup", .runtimeError),
  ]

  @Test("Chat templates that trapped, hung or blew up memory now fail cleanly and quickly",
    arguments: chatTemplateCases.map(\.0))
  func chatTemplate(_ name: String) throws {
    let expected = try #require(Self.chatTemplateCases.first { $0.0 == name }?.1)
    let source = String(decoding: try Self.input("chat-template-\(name).bin"), as: UTF8.self)
    let messages = [ChatMessage(role: "system", content: "You are a helpful assistant"), ChatMessage(role: "user", content: "Hello")]
    let start = ContinuousClock.now
    var outcome: Result<String, ChatTemplateError>
    do throws(ChatTemplateError) {
      let template = try ChatTemplate(source: source)
      outcome = .success(try template.render(messages: messages, addGenerationPrompt: false, bosToken: "<s>", eosToken: "</s>"))
    } catch {
      outcome = .failure(error)
    }
    #expect(ContinuousClock.now - start < .seconds(5), "\(name) took too long")
    switch (expected, outcome) {
    case (.syntaxError, .failure(.syntax)), (.runtimeError, .failure(.runtime)): break
    case (.renders(let text), .success(let rendered)): #expect(rendered == text)
    default: Issue.record("\(name): expected \(expected), got \(outcome)")
    }
  }

  @Test("A safetensors shape whose byte size overflows is a malformed file, not a trap")
  func safetensorsByteSizeOverflow() throws {
    let url = FileManager.default.temporaryDirectory.appendingPathComponent("fuzz-regression-\(UUID()).safetensors")
    try Self.input("safetensors-shape-bytes-overflow.bin").write(to: url)
    defer { try? FileManager.default.removeItem(at: url) }
    #expect {
      try SafeTensorsFile(path: url.path)
    } throws: { error in
      guard case .malformedFile(_, let reason) = error as? EngineError else { return false }
      return reason.contains("needs more than")
    }
  }

  @Test("config.json with a head count whose query width overflows is rejected")
  func configHeadCountOverflow() throws {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("fuzz-regression-\(UUID())")
    try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: dir) }
    try Self.input("safetensors-config-head-count-overflow.bin").write(to: dir.appendingPathComponent("config.json"))
    #expect {
      try TransformerModel(huggingFaceDirectory: dir.path)
    } throws: { error in
      guard case .malformedFile(_, let reason) = error as? EngineError else { return false }
      return reason.contains("head count")
    }
  }
}
