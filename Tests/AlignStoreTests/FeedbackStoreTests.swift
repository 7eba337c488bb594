import AlignStore
import Foundation
import Testing

/// The store contract, run against every backend (SQLite, and PostgreSQL unless skipped).
@Suite("FeedbackStore: append, dedupe, export, counts, state", .timeLimit(.minutes(20)))
struct FeedbackStoreTests {
  @Test("every kind round-trips exactly, ids increase", arguments: StoreBackend.enabled)
  func appendAndExportRoundTrip(backend: StoreBackend) async throws {
    let clock = ManualClock(1_000)
    try await TestStore.with(backend, clock: clock) { t in
      let store = t.store
      var items = Make.oneOfEach(prefix: "a")
      // Awkward content: quotes, newlines, non-ASCII, keys that a snake-case strategy would mangle,
      // and doubles that only an exact round trip preserves.
      items.append(
        FeedbackItem(
          idempotencyKey: "ключ-🔑", responseID: "r\"1", policyVersion: "smol@2",
          rewardVersion: "judge",
          safetyVersion: "policy=default@3;lexical=1.9.1", annotatorID: "ann/7",
          metadata: ["campaignID": "x", "snake_case": "y\nz"],
          createdAtUnixMs: 123,
          payload: .rating(
            FeedbackRating(
              prompt: "", completion: "line1\nline2 \"q\" \\ ü", value: 0.1 + 0.2, scaleMin: 1e-300,
              scaleMax: 1))))
      let outcomes = try await store.append(items)
      let ids = outcomes.storedIDs
      #expect(ids.count == items.count)
      #expect(ids == ids.sorted() && Set(ids).count == ids.count && ids.first! >= 1)

      let exported = try await store.export(FeedbackFilter())
      #expect(exported.map(\.id) == ids)
      #expect(exported.map(\.item) == items)
      #expect(exported.allSatisfy { $0.receivedAtUnixMs == 1_000 })
    }
  }

  @Test(
    "a duplicate key inside one batch is acknowledged with the first id and stored once",
    arguments: StoreBackend.enabled)
  func duplicateInsideBatch(backend: StoreBackend) async throws {
    try await TestStore.with(backend) { t in
      let store = t.store
      let first = Make.rating("k1", value: 2)
      let sameKeyOtherContent = Make.rating("k1", value: 5)
      let outcomes = try await store.append([first, Make.comment("k2"), sameKeyOtherContent, first])
      guard case .stored(let id1) = outcomes[0], case .stored(let id2) = outcomes[1] else {
        Issue.record("unexpected outcomes \(outcomes)")
        return
      }
      #expect(id1 != id2)
      #expect(outcomes[2] == .duplicate(existingID: id1))
      #expect(outcomes[3] == .duplicate(existingID: id1))
      let exported = try await store.export(FeedbackFilter())
      #expect(exported.count == 2)
      #expect(exported.first?.item == first)  // the first one wins; later content is ignored
    }
  }

  @Test("a resent batch is all duplicates with the original ids", arguments: StoreBackend.enabled)
  func duplicateAcrossCalls(backend: StoreBackend) async throws {
    try await TestStore.with(backend) { t in
      let store = t.store
      let batch = Make.oneOfEach(prefix: "b")
      let ids = try await store.append(batch).storedIDs
      #expect(ids.count == 5)
      let again = try await store.append(batch + [Make.comment("new")])
      #expect(Array(again.prefix(5)) == ids.map { .duplicate(existingID: $0) })
      guard case .stored(let newID) = again[5] else {
        Issue.record("expected the new item to be stored, got \(again[5])")
        return
      }
      #expect(newID > ids.max()!)
      #expect(try await store.export(FeedbackFilter()).count == 6)
    }
  }

  @Test(
    "invalid items are rejected with a reason and the rest of the batch is stored",
    arguments: StoreBackend.enabled)
  func rejectedInsideBatch(backend: StoreBackend) async throws {
    try await TestStore.with(backend) { t in
      let store = t.store
      let bad = Make.rating("bad", value: 9)
      let outcomes = try await store.append([Make.comment("ok1"), bad, Make.comment("ok2")])
      #expect(outcomes.storedIDs.count == 2)
      guard case .rejected(let reason) = outcomes[1] else {
        Issue.record("expected a rejection, got \(outcomes[1])")
        return
      }
      #expect(reason.contains("outside the scale"))
      let keys = try await store.export(FeedbackFilter()).map(\.item.idempotencyKey)
      #expect(keys == ["ok1", "ok2"])
      // A rejected key is not reserved: a corrected resend is stored.
      let fixed = try await store.append([Make.rating("bad", value: 3)])
      #expect(fixed.storedIDs.count == 1)
    }
  }

  @Test(
    "created_at 0 means the receive time; an empty batch does nothing",
    arguments: StoreBackend.enabled)
  func createdAtDefaultsToReceivedAt(backend: StoreBackend) async throws {
    let clock = ManualClock(42_000)
    try await TestStore.with(backend, clock: clock) { t in
      let store = t.store
      #expect(try await store.append([]).isEmpty)
      var item = Make.comment("c")
      item.createdAtUnixMs = 0
      _ = try await store.append([item])
      let stored = try await store.export(FeedbackFilter())
      #expect(stored.count == 1)
      #expect(stored.first?.item.createdAtUnixMs == 42_000)
      #expect(stored.first?.receivedAtUnixMs == 42_000)
    }
  }

  @Test(
    "export filters by time range, kind, policy and reward version", arguments: StoreBackend.enabled
  )
  func exportFilters(backend: StoreBackend) async throws {
    let clock = ManualClock(100)
    try await TestStore.with(backend, clock: clock) { t in
      let store = t.store
      _ = try await store.append([
        Make.rating("t100-r", policy: "p1", reward: "r1"),
        Make.preference("t100-p", policy: "p2", reward: "r1"),
      ])
      clock.set(200)
      _ = try await store.append([
        Make.rating("t200-r", policy: "p2", reward: "r2"), Make.comment("t200-c"),
      ])
      clock.set(300)
      _ = try await store.append([
        Make.preference("t300-p", policy: "p1", reward: "r2"), Make.ranking("t300-k", policy: "p1"),
      ])

      func keys(_ filter: FeedbackFilter) async throws -> [String] {
        try await store.export(filter).map(\.item.idempotencyKey)
      }
      #expect(
        try await keys(FeedbackFilter(sinceUnixMs: 200)) == [
          "t200-r", "t200-c", "t300-p", "t300-k",
        ])
      #expect(try await keys(FeedbackFilter(untilUnixMs: 200)) == ["t100-r", "t100-p"])
      #expect(
        try await keys(FeedbackFilter(sinceUnixMs: 150, untilUnixMs: 300)) == ["t200-r", "t200-c"])
      #expect(try await keys(FeedbackFilter(kinds: [.preference])) == ["t100-p", "t300-p"])
      #expect(
        try await keys(FeedbackFilter(kinds: [.rating, .ranking])) == [
          "t100-r", "t200-r", "t300-k",
        ])
      #expect(
        try await keys(FeedbackFilter(policyVersion: "p1")) == ["t100-r", "t300-p", "t300-k"])
      #expect(try await keys(FeedbackFilter(policyVersion: "")).count == 6)
      #expect(try await keys(FeedbackFilter(rewardVersion: "r2")) == ["t200-r", "t300-p"])
      #expect(
        try await keys(
          FeedbackFilter(kinds: [.preference], policyVersion: "p1", rewardVersion: "r2"))
          == ["t300-p"])
      #expect(try await keys(FeedbackFilter(kinds: [.safetyLabel])) == [])
    }
  }

  @Test(
    "after_id and limit page through the export in id order", arguments: StoreBackend.enabled,
    [1, 3, 7, 50])
  func exportPaging(backend: StoreBackend, pageSize: Int) async throws {
    try await TestStore.with(backend) { t in
      let store = t.store
      var all: [Int64] = []
      for batch in 0..<4 {
        all += try await store.append((0..<5).map { Make.comment("k\(batch)-\($0)") }).storedIDs
      }
      #expect(all.count == 20)

      var paged: [Int64] = []
      var filter = FeedbackFilter(limit: pageSize)
      while true {
        let page = try await store.export(filter)
        #expect(page.count <= pageSize)
        if page.isEmpty { break }
        paged += page.map(\.id)
        filter.afterID = page.last!.id
      }
      #expect(paged == all)

      var streamed: [Int64] = []
      for try await page in store.exportPages(FeedbackFilter(), pageSize: pageSize) {
        #expect(!page.isEmpty && page.count <= pageSize)
        streamed += page.map(\.id)
      }
      #expect(streamed == all)

      // An overall limit and a starting point bound the stream too.
      var bounded: [Int64] = []
      for try await page in store.exportPages(
        FeedbackFilter(afterID: all[2], limit: 9), pageSize: pageSize)
      {
        bounded += page.map(\.id)
      }
      #expect(bounded == Array(all[3..<12]))
    }
  }

  @Test(
    "concurrent appends of overlapping keys store each key once", arguments: StoreBackend.enabled)
  func concurrentAppends(backend: StoreBackend) async throws {
    try await TestStore.with(backend) { t in
      let store = t.store
      // 8 clients each send keys 0..<100 in batches of 10, in different orders.
      let results = try await withThrowingTaskGroup(of: [(String, AppendOutcome)].self) { group in
        for client in 0..<8 {
          group.addTask {
            var seen: [(String, AppendOutcome)] = []
            let keys = (0..<100).map { "k\(($0 * (client + 1) * 37) % 100)" }
            for start in stride(from: 0, to: 100, by: 10) {
              let items = keys[start..<(start + 10)].map { Make.comment($0) }
              seen += zip(items.map(\.idempotencyKey), try await store.append(items))
            }
            return seen
          }
        }
        var all: [(String, AppendOutcome)] = []
        for try await part in group { all += part }
        return all
      }
      let stored = try await store.export(FeedbackFilter())
      #expect(stored.count == 100)
      let idByKey = Dictionary(uniqueKeysWithValues: stored.map { ($0.item.idempotencyKey, $0.id) })
      #expect(idByKey.count == 100)
      var storedOutcomes = 0
      for (key, outcome) in results {
        #expect(outcome.id == idByKey[key])
        if case .stored = outcome { storedOutcomes += 1 }
      }
      #expect(storedOutcomes == 100)
    }
  }

  @Test("counts has every kind, zero when absent", arguments: StoreBackend.enabled)
  func counts(backend: StoreBackend) async throws {
    try await TestStore.with(backend) { t in
      let store = t.store
      #expect(
        try await store.counts()
          == Dictionary(uniqueKeysWithValues: FeedbackKind.allCases.map { ($0, 0) }))
      _ = try await store.append(
        [
          Make.rating("r1"), Make.rating("r2"), Make.rating("r1"), Make.preference("p1"),
          Make.comment("c1"), Make.comment("c2"), Make.comment("c3"),
        ])
      #expect(
        try await store.counts() == [
          .rating: 2, .preference: 1, .ranking: 0, .safetyLabel: 0, .comment: 3,
        ])
    }
  }

  @Test("registry state: set, overwrite, remove, prefix listing", arguments: StoreBackend.enabled)
  func registryState(backend: StoreBackend) async throws {
    try await TestStore.with(backend) { t in
      let store = t.store
      #expect(try await store.state(key: "active.policy") == nil)
      try await store.setState(key: "active.policy", value: "smol@1")
      try await store.setState(key: "active.reward", value: "judge@1")
      try await store.setState(
        key: "canary.policy", value: "{\"version\":\"smol@2\",\"percent\":25}")
      #expect(try await store.state(key: "active.policy") == "smol@1")
      try await store.setState(key: "active.policy", value: "smol@2")
      #expect(try await store.state(key: "active.policy") == "smol@2")
      let active = try await t.states(prefix: "active.")
      #expect(active.map(\.key) == ["active.policy", "active.reward"])
      #expect(active.map(\.value) == ["smol@2", "judge@1"])
      try await store.setState(key: "canary.policy", value: nil)
      #expect(try await store.state(key: "canary.policy") == nil)
    }
  }
}
