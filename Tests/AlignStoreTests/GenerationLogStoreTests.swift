import AlignStore
import Foundation
import Testing

/// The generation log's store contract, run against every backend (SQLite, and PostgreSQL
/// unless skipped).
@Suite("GenerationLogStore: append, lookup, filters, paging, pruning", .timeLimit(.minutes(20)))
struct GenerationLogStoreTests {
  static func entry(
    _ id: String, response: String = "gen-1", key: String = "app", policy: String = "smol@1", at: Int64 = 1_000,
    text: String = "hello"
  ) -> GenerationLogEntry {
    GenerationLogEntry(
      completionID: id, responseID: response, clientRequestID: "client-7", index: 1, apiKeyID: key,
      endpoint: "http.chat.completions", prompt: "<|im_start|>user\nhi<|im_end|>\n",
      messages: [LoggedMessage(role: "user", content: "hi")], text: text, tokenIDs: [1, 2, 32000],
      tokenLogprobs: [-0.1, -2.75, -1e-7], finishReason: "stop", samplingJSON: #"{"seed":"42","temperature":0.7}"#,
      policyVersion: policy, rewardVersion: "reward@2", safetyVersion: "policy=default@3", reward: 0.1 + 0.2,
      flaggedCategories: ["pii"], createdAtUnixMs: at, ttftMs: 12.5, durationMs: 80.25, promptTokens: 9,
      completionTokens: 3, redacted: false)
  }

  @Test("entries round-trip exactly, lookups find them by completion id", arguments: StoreBackend.enabled)
  func roundTrip(backend: StoreBackend) async throws {
    try await TestStore.with(backend) { t in
      let log = t.store
      // Awkward content: NUL (PostgreSQL text cannot hold it raw), quotes, newlines, non-ASCII.
      var awkward = Self.entry("cmpl-b", text: "a\u{0}b \"q\"\nü 🔑 \\u0000")
      awkward.reward = nil
      awkward.messages = []
      let entries = [Self.entry("cmpl-a"), awkward]
      #expect(try await log.appendGenerations(entries) == 2)
      let stored = try await log.generations(GenerationLogFilter())
      #expect(stored.map(\.entry) == entries)
      #expect(stored.map(\.id) == stored.map(\.id).sorted() && stored.first!.id >= 1)
      #expect(try await log.generation(completionID: "cmpl-b")?.entry == awkward)
      #expect(try await log.generation(completionID: "cmpl-missing") == nil)
    }
  }

  @Test("a rewritten completion id is skipped, so a retried batch writes nothing twice", arguments: StoreBackend.enabled)
  func duplicatesSkipped(backend: StoreBackend) async throws {
    try await TestStore.with(backend) { t in
      let log = t.store
      #expect(try await log.appendGenerations([Self.entry("c1"), Self.entry("c2")]) == 2)
      #expect(try await log.appendGenerations([Self.entry("c2", text: "other"), Self.entry("c3")]) == 1)
      let stored = try await log.generations(GenerationLogFilter())
      #expect(stored.map(\.entry.completionID) == ["c1", "c2", "c3"])
      #expect(stored[1].entry.text == "hello")  // the first write wins
    }
  }

  @Test("filters by time, policy and key; pages oldest first by afterID and newest first by beforeID",
    arguments: StoreBackend.enabled)
  func filtersAndPaging(backend: StoreBackend) async throws {
    try await TestStore.with(backend) { t in
      let log = t.store
      try await log.appendGenerations([
        Self.entry("c1", key: "a", policy: "p1", at: 100),
        Self.entry("c2", key: "b", policy: "p1", at: 200),
        Self.entry("c3", key: "a", policy: "p2", at: 300),
        Self.entry("c4", key: "a", policy: "p1", at: 400),
      ])
      func ids(_ filter: GenerationLogFilter) async throws -> [String] {
        try await log.generations(filter).map(\.entry.completionID)
      }
      #expect(try await ids(GenerationLogFilter(sinceUnixMs: 200, untilUnixMs: 400)) == ["c2", "c3"])
      #expect(try await ids(GenerationLogFilter(policyVersion: "p1")) == ["c1", "c2", "c4"])
      #expect(try await ids(GenerationLogFilter(apiKeyID: "a")) == ["c1", "c3", "c4"])
      #expect(try await ids(GenerationLogFilter(policyVersion: "p1", apiKeyID: "a")) == ["c1", "c4"])

      let first = try await log.generations(GenerationLogFilter(limit: 2))
      #expect(first.map(\.entry.completionID) == ["c1", "c2"])
      #expect(try await ids(GenerationLogFilter(afterID: first.last!.id)) == ["c3", "c4"])

      let newest = try await log.generations(GenerationLogFilter(newestFirst: true, limit: 3))
      #expect(newest.map(\.entry.completionID) == ["c4", "c3", "c2"])
      #expect(try await ids(GenerationLogFilter(beforeID: newest.last!.id, newestFirst: true, limit: 3)) == ["c1"])
    }
  }

  @Test("pruning removes entries past the age and beyond the row limit, newest kept", arguments: StoreBackend.enabled)
  func pruning(backend: StoreBackend) async throws {
    try await TestStore.with(backend) { t in
      let log = t.store
      try await log.appendGenerations((1...6).map { Self.entry("c\($0)", at: Int64($0) * 100) })
      #expect(try await log.pruneGenerations(GenerationLogRetention(olderThanUnixMs: 250)) == 2)
      #expect(try await log.generation(completionID: "c2") == nil)
      #expect(try await log.pruneGenerations(GenerationLogRetention(maxRows: 3)) == 1)
      #expect(try await log.generations(GenerationLogFilter()).map(\.entry.completionID) == ["c4", "c5", "c6"])
      #expect(try await log.pruneGenerations(GenerationLogRetention(olderThanUnixMs: 0, maxRows: 10)) == 0)
      // Ids are never reused after pruning: new entries sort after every earlier one.
      try await log.appendGenerations([Self.entry("c7", at: 700)])
      let all = try await log.generations(GenerationLogFilter())
      #expect(all.map(\.entry.completionID) == ["c4", "c5", "c6", "c7"])
      #expect(all.map(\.id) == all.map(\.id).sorted())
    }
  }
}
