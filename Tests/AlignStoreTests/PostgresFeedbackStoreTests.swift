import AlignStore
import Foundation
import PostgresNIO
import Synchronization
import Testing

@Suite("PostgresURL")
struct PostgresURLTests {
  @Test("parses user, password, host, port, database and parameters")
  func parses() throws {
    let url = try PostgresURL("postgresql://al%40ice:p%3Ass@db.example:6543/feed%20back")
    #expect(url.user == "al@ice")
    #expect(url.password == "p:ss")
    #expect(url.host == "db.example")
    #expect(url.port == 6543)
    #expect(url.database == "feed back")
    #expect(url.schema == "public")
    #expect(url.tlsMode == .prefer)
    #expect(!url.description.contains("p:ss"))

    let local = try PostgresURL(
      "postgres://bob@[::1]?sslmode=disable&schema=alignd_2&application_name=r1&connect_timeout=3")
    #expect(local.host == "::1")
    #expect(local.port == 5432)
    #expect(local.password == nil)
    #expect(local.database == "bob")
    #expect(local.tlsMode == .disable)
    #expect(local.schema == "alignd_2")
    #expect(local.applicationName == "r1")
    #expect(local.connectTimeoutSeconds == 3)
    #expect(local.description == "postgres://bob@[::1]:5432/bob#alignd_2")
  }

  @Test(
    "bad URLs fail with cannotOpen naming the problem, never the password",
    arguments: [
      ("mysql://u:secret@h/db", "scheme"),
      ("postgres://h/db", "no user"),
      ("postgres://u:secret@/db", "no host"),
      ("postgres://u:secret@h/db?sslmode=sometimes", "sslmode"),
      ("postgres://u:secret@h/db?schema=Bad-Name", "schema"),
      ("postgres://u:secret@h/db?schema=1abc", "schema"),
      ("postgres://u:secret@h/db?pool=3", "unknown parameter pool"),
      ("postgres://u:secret@h/db?connect_timeout=0", "connect_timeout"),
      ("postgres://u:secret@h:70000/db", "port"),
    ])
  func rejects(url: String, fragment: String) {
    do {
      _ = try PostgresURL(url)
      Issue.record("\(url) was accepted")
    } catch {
      guard case .cannotOpen = error as? FeedbackStoreError else {
        Issue.record("expected cannotOpen, got \(error)")
        return
      }
      let text = "\(error)"
      #expect(text.contains(fragment), "\(text)")
      #expect(!text.contains("secret"), "\(text)")
    }
  }
}

/// PostgreSQL-only behaviour: replicas, migrations, connection failures.
@Suite(
  "PostgresFeedbackStore: replicas, migrations, failures",
  .enabled(if: !PostgresTestDatabase.skipped), .timeLimit(.minutes(20)))
struct PostgresFeedbackStoreTests {
  static func open(_ url: String) async throws -> PostgresFeedbackStore {
    try await PostgresFeedbackStore(url: url, configuration: PostgresTestDatabase.configuration)
  }

  @Test("records and state survive close and reopen; a closed store says so")
  func closeAndReopen() async throws {
    try await PostgresTestDatabase.withSchema { url in
      let store = try await Self.open(url)
      let ids = try await store.append(Make.oneOfEach(prefix: "x")).storedIDs
      try await store.setState(key: "active.policy", value: "smol@7")
      let before = try await store.export(FeedbackFilter())
      await store.close()
      do {
        _ = try await store.counts()
        Issue.record("a closed store answered")
      } catch {
        #expect(error as? FeedbackStoreError == .closed(path: store.location))
      }

      let reopened = try await Self.open(url)
      #expect(try await reopened.export(FeedbackFilter()) == before)
      #expect(try await reopened.state(key: "active.policy") == "smol@7")
      let again = try await reopened.append([Make.comment("x-c"), Make.comment("y")])
      #expect(again[0] == .duplicate(existingID: ids[4]))
      #expect(again[1].id! > ids.max()!)
      await reopened.close()
    }
  }

  @Test("replicas starting at once migrate the schema once")
  func concurrentMigrations() async throws {
    try await PostgresTestDatabase.withSchema { url in
      let stores = try await withThrowingTaskGroup(of: PostgresFeedbackStore.self) { group in
        for _ in 0..<6 { group.addTask { try await Self.open(url) } }
        var stores: [PostgresFeedbackStore] = []
        for try await store in group { stores.append(store) }
        return stores
      }
      #expect(stores.count == 6)
      let schema = stores[0].schema
      let applied = try await PostgresTestDatabase.withAdminConnection { connection, logger in
        var ids: [String] = []
        for try await id in try await connection.query(
          PostgresQuery(unsafeSQL: "SELECT id FROM \"\(schema)\".alignd_migrations"),
          logger: logger
        ).decode(String.self) {
          ids.append(id)
        }
        return ids
      }
      #expect(applied.sorted() == ["v1-feedback", "v2-generation-log"])
      _ = try await stores[0].append([Make.comment("a")])
      #expect(try await stores[5].counts()[.comment] == 1)
      for store in stores { await store.close() }
    }
  }

  @Test("a schema migrated by a newer alignd is refused with schemaTooNew")
  func schemaTooNew() async throws {
    try await PostgresTestDatabase.withSchema { url in
      let store = try await Self.open(url)
      let schema = store.schema
      await store.close()
      try await PostgresTestDatabase.withAdminConnection { connection, logger -> Void in
        try await connection.query(
          PostgresQuery(
            unsafeSQL:
              "INSERT INTO \"\(schema)\".alignd_migrations (id, applied_at) VALUES ('v9-future', 0)"
          ),
          logger: logger)
      }
      do {
        _ = try await Self.open(url)
        Issue.record("a newer schema was accepted")
      } catch {
        guard case .schemaTooNew(_, let unknown) = error as? FeedbackStoreError else {
          Issue.record("expected schemaTooNew, got \(error)")
          return
        }
        #expect(unknown == ["v9-future"])
      }
    }
  }

  @Test("a server that does not answer is unavailable (retryable) after the acquire timeout")
  func unreachable() async throws {
    var configuration = PostgresTestDatabase.configuration
    configuration.acquireTimeout = .seconds(2)
    let started = ContinuousClock.now
    do {
      // Port 1 on loopback: nothing listens, connections are refused at once.
      _ = try await PostgresFeedbackStore(
        url: "postgres://nobody:pw@127.0.0.1:1/none?sslmode=disable", configuration: configuration)
      Issue.record("connected to nothing")
    } catch {
      guard let storeError = error as? FeedbackStoreError, case .unavailable = storeError else {
        Issue.record("expected unavailable, got \(error)")
        return
      }
      #expect(storeError.isRetryable)
      #expect(!"\(storeError)".contains("pw"))
    }
    #expect(ContinuousClock.now - started < .seconds(15))
  }

  @Test("a wrong password or a missing database is cannotOpen, not retryable")
  func wrongCredentials() async throws {
    let base = try PostgresURL(try PostgresTestDatabase.baseURL())
    let host = "\(base.host):\(base.port)"
    for url in [
      "postgres://\(base.user):wrong-password@\(host)/\(base.database)?sslmode=disable",
      "postgres://\(base.user):\(base.password ?? "")@\(host)/no_such_db_42?sslmode=disable",
    ] {
      do {
        _ = try await Self.open(url)
        Issue.record("opened \(url)")
      } catch {
        guard let storeError = error as? FeedbackStoreError, case .cannotOpen = storeError else {
          Issue.record("expected cannotOpen, got \(error)")
          continue
        }
        #expect(!storeError.isRetryable)
        #expect(!"\(storeError)".contains("wrong-password"))
      }
    }
  }

  @Test("a connection lost in the middle of an append is unavailable; the resend is stored")
  func lostConnectionMidAppend() async throws {
    try await PostgresTestDatabase.withSchema { url in
      let application = "alignd-test-\(UUID().uuidString.prefix(8).lowercased())"
      let store = try await Self.open(url + "&application_name=\(application)")
      let schema = store.schema
      _ = try await store.append([Make.comment("before")])
      let batch = [Make.comment("lost-1"), Make.comment("lost-2")]

      // Hold a lock that the append's INSERT waits for, kill the append's connection while it
      // waits, then let go.
      let outcome = try await PostgresTestDatabase.withAdminConnection { admin, logger in
        try await admin.query("BEGIN", logger: logger)
        try await admin.query(
          PostgresQuery(unsafeSQL: "LOCK TABLE \"\(schema)\".feedback IN EXCLUSIVE MODE"),
          logger: logger)
        let append = Task { try await store.append(batch) }
        var waiting = false
        for _ in 0..<200 where !waiting {
          try await Task.sleep(for: .milliseconds(25))
          let rows = try await admin.query(
            "SELECT 1 FROM pg_stat_activity WHERE application_name = \(application) AND wait_event_type = 'Lock'",
            logger: logger
          ).collect()
          waiting = !rows.isEmpty
        }
        #expect(waiting, "the append never waited for the lock")
        try await admin.query(
          "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = \(application)",
          logger: logger)
        let result = await append.result
        try await admin.query("COMMIT", logger: logger)
        return result
      }
      switch outcome {
      case .success(let outcomes):
        Issue.record("the append survived its connection: \(outcomes)")
      case .failure(let error):
        guard let storeError = error as? FeedbackStoreError, case .unavailable = storeError else {
          Issue.record("expected unavailable, got \(error)")
          break
        }
        #expect(storeError.isRetryable)
      }
      // The lost batch was rolled back: the resend stores it, on a new connection.
      let resent = try await store.append(batch)
      #expect(resent.storedIDs.count == 2, "\(resent)")
      #expect(try await store.counts()[.comment] == 3)
      await store.close()
    }
  }

  @Test("two replicas appending concurrently: an exporter paging by id sees every row once")
  func replicasAndPagingExporter() async throws {
    try await PostgresTestDatabase.withSchema { url in
      let replicas = [try await Self.open(url), try await Self.open(url)]
      let reader = try await Self.open(url)
      let writers = 4
      let batches = 25
      let perBatch = 8
      let total = writers * batches * perBatch
      let writersDone = DoneFlag()
      // The exporter pages while the writers run, as ExportFeedback on a third replica would.
      // Once the writers are done, one empty page means it has read to the end.
      let exporter = Task {
        var seen: [String] = []
        var afterID: Int64 = 0
        while true {
          let done = writersDone.value.load(ordering: .sequentiallyConsistent)
          let page = try await reader.export(FeedbackFilter(afterID: afterID, limit: 7))
          if page.isEmpty {
            if done { break }
            try await Task.sleep(for: .milliseconds(2))
            continue
          }
          for row in page {
            #expect(row.id > afterID)
            afterID = row.id
            seen.append(row.item.idempotencyKey)
          }
        }
        return seen
      }
      let appended = try await withThrowingTaskGroup(of: [String].self) { group in
        for writer in 0..<writers {
          let store = replicas[writer % 2]
          group.addTask {
            var keys: [String] = []
            for b in 0..<batches {
              let items = (0..<perBatch).map { Make.comment("w\(writer)-b\(b)-\($0)") }
              let outcomes = try await store.append(items)
              #expect(outcomes.storedIDs.count == perBatch)
              keys += items.map(\.idempotencyKey)
            }
            return keys
          }
        }
        var all: [String] = []
        for try await part in group { all += part }
        return all
      }
      writersDone.value.store(true, ordering: .sequentiallyConsistent)
      let seen = try await exporter.value
      #expect(appended.count == total)
      #expect(seen.count == total, "the exporter saw \(seen.count) of \(total) rows")
      #expect(Set(seen).count == seen.count, "the exporter saw a row twice")
      let skipped = Set(appended).subtracting(seen)
      #expect(
        skipped.isEmpty, "the exporter skipped \(skipped.count) rows: \(skipped.sorted().prefix(5))"
      )
      for store in replicas + [reader] { await store.close() }
    }
  }
}

/// Set when the writers of a test are done.
final class DoneFlag: Sendable {
  let value = Atomic<Bool>(false)
}
