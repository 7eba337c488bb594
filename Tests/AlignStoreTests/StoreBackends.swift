import AlignStore
import AlignTestSupport
import Foundation
import Logging
import PostgresNIO
import Testing

/// The stores one suite runs against.
enum StoreBackend: String, Sendable, CaseIterable, CustomTestStringConvertible {
  case sqlite
  case postgres

  var testDescription: String { rawValue }

  /// Every backend, less PostgreSQL when `ALIGND_SKIP_POSTGRES=1`.
  static let enabled: [StoreBackend] =
    PostgresTestDatabase.skipped ? [.sqlite] : [.sqlite, .postgres]
}

/// A store under test and how to clean up after it.
struct TestStore: Sendable {
  let backend: StoreBackend
  let store: any FeedbackStore & RolloutStateStore & GenerationLogStore

  /// `states(prefix:)`, which both stores offer outside the protocol.
  func states(prefix: String) async throws -> [(key: String, value: String)] {
    switch store {
    case let sqlite as SQLiteFeedbackStore: try await sqlite.states(prefix: prefix)
    case let postgres as PostgresFeedbackStore: try await postgres.states(prefix: prefix)
    default: throw TestSetupError("unknown store \(type(of: store))")
    }
  }

  /// Opens a fresh, empty store (its own folder, or its own PostgreSQL schema), runs `body`,
  /// then closes and removes it, whether `body` threw or not.
  static func with<T>(
    _ backend: StoreBackend, clock: ManualClock? = nil,
    _ body: (TestStore) async throws -> T
  ) async throws -> T {
    switch backend {
    case .sqlite:
      let folder = try TemporaryFolder()
      defer { folder.remove() }
      let store = try SQLiteFeedbackStore(
        dataDirectory: folder.url,
        configuration: clock?.configuration ?? SQLiteFeedbackStoreConfiguration())
      defer { try? store.close() }
      return try await body(TestStore(backend: backend, store: store))
    case .postgres:
      return try await PostgresTestDatabase.withSchema { url in
        let store = try await PostgresFeedbackStore(
          url: url,
          configuration: clock?.postgresConfiguration ?? PostgresTestDatabase.configuration)
        do {
          let result = try await body(TestStore(backend: backend, store: store))
          await store.close()
          return result
        } catch {
          await store.close()
          throw error
        }
      }
    }
  }
}

struct TestSetupError: Error, CustomStringConvertible {
  var description: String
  init(_ description: String) { self.description = description }
}

/// The PostgreSQL server the tests use: `ALIGND_TEST_POSTGRES_URL`, started by
/// `scripts/start-test-postgres.sh`. Every test gets a schema of its own, dropped afterwards,
/// so tests run in parallel against one database.
enum PostgresTestDatabase {
  static let environment = ProcessInfo.processInfo.environment

  /// `ALIGND_SKIP_POSTGRES=1` leaves the PostgreSQL variants out.
  static var skipped: Bool { TestEnvironment.skipPostgres }

  /// Small pools: many tests share one server. The whole suite runs in parallel on two cores,
  /// so statements (and advisory-lock waits) get far more time than in production, and so does
  /// waiting for one of the pool's few connections: eight concurrent clients on a pool of three,
  /// while every other suite competes for the cores, waited more than the production 10 s.
  static var configuration: PostgresFeedbackStoreConfiguration {
    var configuration = PostgresFeedbackStoreConfiguration()
    configuration.maximumConnections = 3
    configuration.statementTimeout = .seconds(300)
    configuration.acquireTimeout = .seconds(300)
    return configuration
  }

  /// The server URL: `ALIGND_TEST_POSTGRES_URL`, else the one scripts/start-test-postgres.sh
  /// starts, so a bare `swift test` after the set-up finds it.
  static func baseURL() throws -> String { TestEnvironment.postgresURL }

  /// `base` with `schema=NAME` added to its query.
  static func url(_ base: String, schema: String) -> String {
    base + (base.contains("?") ? "&" : "?") + "schema=\(schema)"
  }

  /// A new schema name, unique per call.
  static func freshSchemaName() -> String {
    "t_" + UUID().uuidString.lowercased().replacingOccurrences(of: "-", with: "")
  }

  /// Runs `body` with the URL of a fresh schema (created by the store), then drops the schema.
  static func withSchema<T>(_ body: (String) async throws -> T) async throws -> T {
    let base = try baseURL()
    do {
      try await withAdminConnection(base: base) { _, _ in }
    } catch {
      throw TestSetupError("no PostgreSQL test server at \(base) (\(error)): \(TestEnvironment.postgresHint)")
    }
    let schema = freshSchemaName()
    do {
      let result = try await body(url(base, schema: schema))
      try await dropSchema(schema, base: base)
      return result
    } catch {
      try? await dropSchema(schema, base: base)
      throw error
    }
  }

  static func dropSchema(_ schema: String, base: String) async throws {
    try await withAdminConnection(base: base) { connection, logger -> Void in
      try await connection.query(
        PostgresQuery(unsafeSQL: "DROP SCHEMA IF EXISTS \"\(schema)\" CASCADE"), logger: logger)
    }
  }

  /// A direct connection (outside any store) for set-up and inspection.
  static func withAdminConnection<T>(
    base: String? = nil, _ body: (PostgresConnection, Logger) async throws -> T
  ) async throws -> T {
    let parsed = try PostgresURL(try base ?? baseURL())
    let logger = Logger(label: "tests", factory: { _ in SwiftLogNoOpLogHandler() })
    let connection = try await PostgresConnection.connect(
      configuration: PostgresConnection.Configuration(
        host: parsed.host, port: parsed.port, username: parsed.user, password: parsed.password,
        database: parsed.database, tls: .disable),
      id: 1, logger: logger)
    do {
      let result = try await body(connection, logger)
      try await connection.close()
      return result
    } catch {
      try? await connection.close()
      throw error
    }
  }
}
