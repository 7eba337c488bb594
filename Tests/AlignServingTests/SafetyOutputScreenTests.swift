import AlignServing
import Testing

@Suite("OutputScreen")
struct SafetyOutputScreenTests {
  static func checker() throws -> SafetyChecker {
    let policy = try SafetyFixtures.policy(
      """
      {"format": "alignd.safety-policy", "format_version": 1, "name": "screen", "version": "1",
       "backends": ["rules"], "default_profile": "default",
       "profiles": {"default": {"categories": {"pii/email": {"threshold": 0.5, "action": "flag"}}},
                    "lenient": {"categories": {"terms/secret": {"threshold": 0.5, "action": "flag"}}}},
       "term_lists": {"secret": {"action": "block", "terms": ["operation nightjar"]}}}
      """)
    return try SafetyChecker(policy: policy, backends: [RulesBackend(termLists: policy.termLists)])
  }

  /// Feeds deltas and collects what the screen lets through.
  static func run(_ screen: inout OutputScreen, _ deltas: [String]) async throws -> (sent: String, blocked: SafetyVerdict?) {
    var sent = ""
    for delta in deltas {
      switch try await screen.feed(delta) {
      case .release(let text): sent += text
      case .block(let verdict): return (sent, verdict)
      }
    }
    switch try await screen.finish() {
    case .release(let text): sent += text
    case .block(let verdict): return (sent, verdict)
    }
    return (sent, nil)
  }

  static func deltas(_ text: String, size: Int) -> [String] {
    var out: [String] = []
    var rest = Substring(text)
    while !rest.isEmpty {
      out.append(String(rest.prefix(size)))
      rest = rest.dropFirst(size)
    }
    return out
  }

  @Test("benign text is released in full, in order, with nothing held back at the end")
  func benign() async throws {
    var screen = OutputScreen(checker: try Self.checker(), chunkCharacters: 10, overlapCharacters: 30)
    let text = "The weather is lovely today and the trains run on time. Have a nice trip!"
    let (sent, blocked) = try await Self.run(&screen, Self.deltas(text, size: 3))
    #expect(blocked == nil)
    #expect(sent == text)
    #expect(screen.windowsChecked >= text.count / 10)
  }

  @Test("a blocked term split across deltas and chunks is caught; the blocked text is never released")
  func blocksSplitTerm() async throws {
    let text = "Here is the plan for Operation Nightjar, step one is to"
    for chunk in [1, 5, 16, 64] {
      var screen = OutputScreen(checker: try Self.checker(), chunkCharacters: chunk, overlapCharacters: 40)
      let (sent, blocked) = try await Self.run(&screen, Self.deltas(text, size: 4))
      let verdict = try #require(blocked, "chunk \(chunk)")
      #expect(verdict.flaggedCategories == [.terms("secret")])
      #expect(!sent.lowercased().contains("operation nightjar"), "chunk \(chunk): \(sent)")
      #expect(text.hasPrefix(sent))
      #expect(screen.isBlocked)
      // Once blocked, it stays blocked.
      #expect(try await screen.feed("more") == .block(verdict))
      #expect(try await screen.finish() == .block(verdict))
    }
  }

  @Test("without overlap a term split across two windows is missed, which is why overlap exists")
  func overlapMatters() async throws {
    let deltas = ["aaaa Operation ", "Nightjar bbbb"]
    var withOverlap = OutputScreen(checker: try Self.checker(), chunkCharacters: 10, overlapCharacters: 20)
    #expect(try await Self.run(&withOverlap, deltas).blocked != nil)
    var without = OutputScreen(checker: try Self.checker(), chunkCharacters: 10, overlapCharacters: 0)
    #expect(try await Self.run(&without, deltas).blocked == nil)
  }

  @Test("flagged categories do not stop the stream but are reported; the profile decides")
  func flagsAccumulate() async throws {
    var screen = OutputScreen(checker: try Self.checker(), chunkCharacters: 8)
    let text = "Write to a@example.com for details."
    let (sent, blocked) = try await Self.run(&screen, Self.deltas(text, size: 6))
    #expect(blocked == nil)
    #expect(sent == text)
    #expect(screen.flaggedCategories == [.piiEmail])

    var lenient = OutputScreen(checker: try Self.checker(), profile: "lenient", chunkCharacters: 8)
    let (all, none) = try await Self.run(&lenient, ["Operation Nightjar ", "is fine here"])
    #expect(none == nil)
    #expect(all == "Operation Nightjar is fine here")
    #expect(lenient.flaggedCategories == [.terms("secret")])
  }

  @Test("an unknown profile fails the first check with InvalidRequest")
  func unknownProfile() async throws {
    var screen = OutputScreen(checker: try Self.checker(), profile: "nope", chunkCharacters: 1)
    await #expect(throws: InvalidRequest.self) { _ = try await screen.feed("hello") }
  }
}
