import Foundation
import Logging
import PostgresNIO
import Synchronization

/// Runtime settings of `PostgresFeedbackStore`. Where to connect comes from the URL.
public struct PostgresFeedbackStoreConfiguration: Sendable {
  /// Most connections this store opens (per replica).
  public var maximumConnections: Int = 8
  /// How long a call waits for a pooled connection before failing with
  /// `FeedbackStoreError.unavailable`. While the server is down, every call fails after this.
  public var acquireTimeout: Duration = .seconds(10)
  /// The server-side `statement_timeout`: bounds one statement, including the wait for the
  /// append lock held by another replica. A statement that hits it fails with `unavailable`.
  public var statementTimeout: Duration = .seconds(30)
  /// Bounds for `FeedbackValidation` on append.
  public var limits: FeedbackLimits = .default
  /// The clock for received-at stamps, Unix milliseconds (this replica's clock). Tests replace it.
  public var now: @Sendable () -> Int64 = {
    Int64((Date().timeIntervalSince1970 * 1000).rounded(.down))
  }
  /// Where the connection pool logs its background events (connects, failures).
  public var logger = Logger(
    label: "AlignStore.postgres", factory: { _ in SwiftLogNoOpLogHandler() })

  /// The default settings.
  public init() {}
}

/// The feedback store for several replicas: tables in one PostgreSQL schema, reached through
/// postgres-nio's `PostgresClient` (a connection pool whose `run()` task the store owns: it is
/// started by `init` and ended by `close()`).
///
/// Semantics are those of `SQLiteFeedbackStore`:
/// - Each `append` is one transaction; when it returns, the batch is committed and flushed to
///   the server's WAL (the store sets `synchronous_commit = on` for its sessions, whatever the
///   server's default; `fsync` is the server's business).
/// - Duplicates by idempotency key (a unique index; inserts use `ON CONFLICT DO NOTHING`) are
///   reported as `.duplicate` with the stored id, also within one batch.
/// - Ids increase in commit order, so paging an export by `afterID` never skips a row. A
///   PostgreSQL sequence alone does not give that: two transactions can take ids 7 and 8 and
///   commit 8 first, and a reader paging past 8 would never see 7. Every append therefore first
///   takes a transaction-level advisory lock (one per schema) and holds it until its commit has
///   become visible; ids are drawn from the sequence only under that lock. So when a reader sees
///   id N, every transaction that drew an id below N has already ended. Appends from all
///   replicas are serialized by this lock; they are short (one round trip per item), and reads
///   never take it.
/// - Schema migrations run at start inside a transaction holding another advisory lock, so
///   replicas starting together migrate once, and a replica that finds migrations it does not
///   know stops with `schemaTooNew`.
///
/// Errors: a refused or lost connection, a server shutting down, a statement timeout or no
/// free connection within `acquireTimeout` are `FeedbackStoreError.unavailable` (retryable; the
/// server answers UNAVAILABLE and the client resends from its last acknowledgement). A wrong
/// password or a missing database is `cannotOpen`; other server errors are `database` with the
/// SQLSTATE in the detail. Connections the server has closed (after a restart, say) are not
/// reported while another works: reads and state writes run again on another connection, and
/// an append whose BEGIN fails does too. An append that loses its connection after BEGIN
/// fails with `unavailable`: whether it committed is then unknown, and the resend is
/// deduplicated.
public final class PostgresFeedbackStore: FeedbackStore, RolloutStateStore {
  /// The URL without its password, and the schema: what errors name.
  public let location: String
  /// The schema holding the tables.
  public let schema: String

  private let client: PostgresClient
  private let runTask: Task<Void, Never>
  private let configuration: PostgresFeedbackStoreConfiguration
  private let logger: Logger
  private let isClosed = Mutex(false)
  /// `"schema".feedback` and `"schema".registry_state`, quoted.
  private let feedbackTable: String
  private let stateTable: String

  /// Advisory lock namespaces (first key of the two-int form; the second is the schema's hash).
  private static let appendLockNamespace: Int32 = 0x616C_6E01  // "aln" + 1
  private static let migrationLockNamespace: Int32 = 0x616C_6E02

  /// Connects to the database named by `url` and migrates the schema.
  ///
  /// - Parameters:
  ///   - url: `postgres://user:password@host:port/database?schema=...` (see `PostgresURL`).
  ///   - configuration: runtime settings.
  /// - Throws: `FeedbackStoreError`: `cannotOpen` (bad URL, authentication, no such database),
  ///   `unavailable` (server unreachable), `schemaTooNew`, `database`.
  public convenience init(
    url: String, configuration: PostgresFeedbackStoreConfiguration = .init()
  ) async throws {
    try await self.init(url: try PostgresURL(url), configuration: configuration)
  }

  /// Connects to the database named by `url` and migrates the schema.
  /// - Throws: see `init(url:configuration:)`.
  public init(url: PostgresURL, configuration: PostgresFeedbackStoreConfiguration = .init())
    async throws
  {
    location = url.description
    schema = url.schema
    self.configuration = configuration
    logger = configuration.logger
    feedbackTable = "\"\(url.schema)\".feedback"
    stateTable = "\"\(url.schema)\".registry_state"

    let statementMs = max(1, Int(configuration.statementTimeout / .milliseconds(1)))
    let startup = [
      ("application_name", url.applicationName),
      ("statement_timeout", "\(statementMs)"),
      ("synchronous_commit", "on"),
    ]
    var config = PostgresClient.Configuration(
      host: url.host, port: url.port, username: url.user, password: url.password,
      database: url.database, tls: try Self.clientTLS(url.tlsMode, location: url.description))
    config.options.connectTimeout = .seconds(url.connectTimeoutSeconds)
    config.options.maximumConnections = max(1, configuration.maximumConnections)
    config.options.additionalStartupParameters = startup
    let client = PostgresClient(configuration: config, backgroundLogger: configuration.logger)
    self.client = client

    // Connect once directly before starting the pool: the pool retries a failing connect in the
    // background and only reports that no connection came, while start-up should say why (wrong
    // password, no such database, nothing listening).
    var direct = PostgresConnection.Configuration(
      host: url.host, port: url.port, username: url.user, password: url.password,
      database: url.database,
      tls: try Self.connectionTLS(url.tlsMode, location: url.description))
    direct.options.connectTimeout = .seconds(Int64(url.connectTimeoutSeconds))
    direct.options.additionalStartupParameters = startup
    let connection: PostgresConnection
    do {
      connection = try await PostgresConnection.connect(
        configuration: direct, id: 0, logger: configuration.logger)
    } catch {
      throw Self.mapOne(error, location: url.description)
    }
    do {
      try await StatementWatchdog.$limit.withValue(configuration.statementTimeout + .seconds(10)) {
        try await Self.migrate(
          connection, schema: url.schema, location: url.description, now: configuration.now(),
          logger: configuration.logger)
      }
      try? await connection.close()
    } catch {
      try? await connection.close()
      let mapped = Self.map(error, location: url.description)
      throw (mapped as? TransactionBeginFailed)?.error ?? mapped
    }
    runTask = Task { await client.run() }
  }

  deinit {
    runTask.cancel()
  }

  /// Closes every connection. Later calls throw `FeedbackStoreError.closed`.
  ///
  /// Not required before exit: committed data is already durable.
  public func close() async {
    isClosed.withLock { $0 = true }
    runTask.cancel()
    await runTask.value
  }

  /// The NIOSSL settings for `mode`, nil for `disable`; `prefer` is only a preference.
  private static func tlsConfiguration(_ mode: PostgresURL.TLSMode) -> TLSConfiguration? {
    var tls = TLSConfiguration.makeClientConfiguration()
    switch mode {
    case .disable: return nil
    case .allow, .prefer, .verifyFull: break
    case .require: tls.certificateVerification = .none  // as libpq: encrypted, not verified
    case .verifyCA: tls.certificateVerification = .noHostnameVerification
    }
    return tls
  }

  private static func clientTLS(_ mode: PostgresURL.TLSMode, location: String) throws
    -> PostgresClient.Configuration.TLS
  {
    guard let tls = tlsConfiguration(mode) else { return .disable }
    return mode == .allow || mode == .prefer ? .prefer(tls) : .require(tls)
  }

  private static func connectionTLS(_ mode: PostgresURL.TLSMode, location: String) throws
    -> PostgresConnection.Configuration.TLS
  {
    guard let tls = tlsConfiguration(mode) else { return .disable }
    let context: NIOSSLContext
    do {
      context = try NIOSSLContext(configuration: tls)
    } catch {
      throw FeedbackStoreError.cannotOpen(path: location, detail: "TLS set-up failed: \(error)")
    }
    return mode == .allow || mode == .prefer ? .prefer(context) : .require(context)
  }

  // MARK: - Schema

  /// Migrations in order. Each entry is a list of statements (the extended protocol runs one
  /// statement per query). Never edit an applied migration; add a new one.
  private static func migrations(schema: String) -> [(id: String, statements: [String])] {
    let feedbackTable = "\"\(schema)\".feedback"
    let stateTable = "\"\(schema)\".registry_state"
    return [
      (
        "v1-feedback",
        [
          // COLLATE "C": keys compare and sort byte-wise, as in SQLite, whatever the database's
          // default collation is.
          """
          CREATE TABLE \(feedbackTable) (
            id BIGSERIAL PRIMARY KEY,
            idempotency_key TEXT COLLATE "C" NOT NULL,
            kind TEXT NOT NULL,
            response_id TEXT NOT NULL,
            policy_version TEXT NOT NULL,
            reward_version TEXT NOT NULL,
            safety_version TEXT NOT NULL,
            annotator_id TEXT NOT NULL,
            created_at BIGINT NOT NULL,
            received_at BIGINT NOT NULL,
            metadata TEXT NOT NULL,
            payload TEXT NOT NULL
          )
          """,
          "CREATE UNIQUE INDEX feedback_idempotency_key ON \(feedbackTable) (idempotency_key)",
          "CREATE INDEX feedback_kind ON \(feedbackTable) (kind, id)",
          "CREATE INDEX feedback_received_at ON \(feedbackTable) (received_at)",
          "CREATE INDEX feedback_policy_version ON \(feedbackTable) (policy_version, id)",
          "CREATE INDEX feedback_reward_version ON \(feedbackTable) (reward_version, id)",
          """
          CREATE TABLE \(stateTable) (
            key TEXT COLLATE "C" PRIMARY KEY,
            value TEXT NOT NULL,
            updated_at BIGINT NOT NULL
          )
          """,
        ]
      ),
      ("v2-generation-log", generationLogMigration(schema: schema)),
    ]
  }

  private static func migrate(
    _ connection: PostgresConnection, schema: String, location: String, now: Int64,
    logger: Logger
  ) async throws {
    let migrations = Self.migrations(schema: schema)
    let known = Set(migrations.map(\.id))
    let migrationsTable = "\"\(schema)\".alignd_migrations"
    try await Self.inTransaction(connection, logger: logger, location: location) {
      // Held until this transaction ends: replicas starting together migrate one after another,
      // and the later ones find everything applied.
      try await connection.rows(
        "SELECT pg_advisory_xact_lock(\(Self.migrationLockNamespace), hashtext(\(schema)))",
        logger: logger)
      // CREATE SCHEMA IF NOT EXISTS needs the CREATE privilege even when the schema exists.
      let exists = try await connection.rows(
        "SELECT 1 FROM pg_namespace WHERE nspname = \(schema)", logger: logger)
      if exists.isEmpty {
        try await connection.rows("CREATE SCHEMA \(unescaped: "\"\(schema)\"")", logger: logger)
      }
      try await connection.rows(
        """
        CREATE TABLE IF NOT EXISTS \(unescaped: migrationsTable) (
          id TEXT PRIMARY KEY, applied_at BIGINT NOT NULL)
        """, logger: logger)
      var applied: Set<String> = []
      for row in try await connection.rows(
        "SELECT id FROM \(unescaped: migrationsTable)", logger: logger)
      {
        applied.insert(try row.decode(String.self))
      }
      let unknown = applied.subtracting(known).sorted()
      if !unknown.isEmpty {
        throw FeedbackStoreError.schemaTooNew(path: location, unknownMigrations: unknown)
      }
      for migration in migrations where !applied.contains(migration.id) {
        for statement in migration.statements {
          try await connection.rows(PostgresQuery(unsafeSQL: statement), logger: logger)
        }
        try await connection.rows(
          "INSERT INTO \(unescaped: migrationsTable) (id, applied_at) VALUES (\(migration.id), \(now))",
          logger: logger)
      }
    }
  }

  private var columns: String {
    "id, idempotency_key, kind, response_id, policy_version, reward_version, safety_version, "
      + "annotator_id, created_at, received_at, metadata, payload"
  }

  // MARK: - FeedbackStore

  public func append(_ items: [FeedbackItem]) async throws -> [AppendOutcome] {
    if items.isEmpty { return [] }
    let limits = configuration.limits
    var prepared: [PreparedItem?] = []
    prepared.reserveCapacity(items.count)
    var outcomes: [AppendOutcome?] = Array(repeating: nil, count: items.count)
    for (index, item) in items.enumerated() {
      if let reason = FeedbackValidation.validate(item, limits: limits) ?? Self.nulCheck(item) {
        outcomes[index] = .rejected(reason: reason)
        prepared.append(nil)
      } else {
        prepared.append(try PreparedItem(item))
      }
    }
    let receivedAt = configuration.now()
    let toWrite = prepared
    let table = feedbackTable
    let schema = self.schema
    let written: [Int: AppendOutcome] = try await transaction { connection, logger in
      // Serializes appends of all replicas on this schema until commit: ids are drawn in
      // commit order (see the type's documentation).
      try await connection.rows(
        "SELECT pg_advisory_xact_lock(\(Self.appendLockNamespace), hashtext(\(schema)))",
        logger: logger)
      var result: [Int: AppendOutcome] = [:]
      var inBatch: [String: Int64] = [:]
      for (index, entry) in toWrite.enumerated() {
        guard let p = entry else { continue }
        if let id = inBatch[p.key] {
          result[index] = .duplicate(existingID: id)
          continue
        }
        let createdAt = p.createdAt == 0 ? receivedAt : p.createdAt
        let kind = p.kind.rawValue
        let inserted = try await connection.rows(
          """
          INSERT INTO \(unescaped: table) (idempotency_key, kind, response_id, policy_version,
            reward_version, safety_version, annotator_id, created_at, received_at, metadata, payload)
          VALUES (\(p.key), \(kind), \(p.responseID), \(p.policyVersion), \(p.rewardVersion),
            \(p.safetyVersion), \(p.annotatorID), \(createdAt), \(receivedAt), \(p.metadataJSON),
            \(p.payloadJSON))
          ON CONFLICT (idempotency_key) DO NOTHING
          RETURNING id
          """, logger: logger)
        if let row = inserted.first {
          let id = try row.decode(Int64.self)
          inBatch[p.key] = id
          result[index] = .stored(id: id)
          continue
        }
        let existing = try await connection.rows(
          "SELECT id FROM \(unescaped: table) WHERE idempotency_key = \(p.key)", logger: logger)
        guard let row = existing.first else {
          // Cannot happen while the row that conflicted is committed and rows are never deleted.
          throw FeedbackStoreError.database(
            path: self.location, code: -1,
            detail: "idempotency key \(p.key) conflicted but no row holds it")
        }
        let id = try row.decode(Int64.self)
        inBatch[p.key] = id
        result[index] = .duplicate(existingID: id)
      }
      return result
    }
    for (index, outcome) in written { outcomes[index] = outcome }
    return outcomes.map { $0 ?? .rejected(reason: "internal: no outcome") }
  }

  public func export(_ filter: FeedbackFilter) async throws -> [StoredFeedbackItem] {
    let since = filter.sinceUnixMs
    let until = filter.untilUnixMs
    let kinds = filter.kinds.map(\.rawValue).sorted()
    let policy = filter.policyVersion ?? ""
    let reward = filter.rewardVersion ?? ""
    let limit: Int64? = filter.limit.flatMap { $0 > 0 ? Int64($0) : nil }
    // One static statement: PostgreSQL plans an unnamed statement with its actual parameters,
    // so the disabled conditions cost nothing.
    let query: PostgresQuery = """
      SELECT \(unescaped: columns) FROM \(unescaped: feedbackTable)
      WHERE id > \(filter.afterID)
        AND (\(since)::BIGINT IS NULL OR received_at >= \(since))
        AND (\(until)::BIGINT IS NULL OR received_at < \(until))
        AND (cardinality(\(kinds)::TEXT[]) = 0 OR kind = ANY(\(kinds)))
        AND (\(policy) = '' OR policy_version = \(policy))
        AND (\(reward) = '' OR reward_version = \(reward))
      ORDER BY id
      LIMIT \(limit)
      """
    let location = self.location
    return try await withConnection { connection, logger in
      var items: [StoredFeedbackItem] = []
      for row in try await connection.rows(query, logger: logger) {
        let (
          id, key, kind, response, policy, reward, safety, annotator, created, received, metadata,
          payload
        ) = try row.decode(
          (
            Int64, String, String, String, String, String, String, String, Int64, Int64, String,
            String
          ).self)
        items.append(
          try FeedbackRowColumns(
            id: id, idempotencyKey: key, kind: kind, responseID: response, policyVersion: policy,
            rewardVersion: reward, safetyVersion: safety, annotatorID: annotator,
            createdAt: created,
            receivedAt: received, metadataJSON: metadata, payloadJSON: payload
          ).decode(path: location))
      }
      return items
    }
  }

  public func counts() async throws -> [FeedbackKind: Int] {
    let table = feedbackTable
    let rows = try await withConnection { connection, logger in
      var rows: [(String, Int64)] = []
      for row in try await connection.rows(
        "SELECT kind, COUNT(*) FROM \(unescaped: table) GROUP BY kind", logger: logger)
      {
        rows.append(try row.decode((String, Int64).self))
      }
      return rows
    }
    var counts: [FeedbackKind: Int] = [:]
    for kind in FeedbackKind.allCases { counts[kind] = 0 }
    for (name, count) in rows {
      if let kind = FeedbackKind(rawValue: name) { counts[kind] = Int(count) }
    }
    return counts
  }

  public func setState(key: String, value: String?) async throws {
    let now = configuration.now()
    let table = stateTable
    try await withConnection { connection, logger -> Void in
      if let value {
        try await connection.rows(
          """
          INSERT INTO \(unescaped: table) (key, value, updated_at) VALUES (\(key), \(value), \(now))
          ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, updated_at = EXCLUDED.updated_at
          """, logger: logger)
      } else {
        try await connection.rows(
          "DELETE FROM \(unescaped: table) WHERE key = \(key)", logger: logger)
      }
    }
  }

  public func state(key: String) async throws -> String? {
    let table = stateTable
    return try await withConnection { connection, logger in
      try await connection.rows(
        "SELECT value FROM \(unescaped: table) WHERE key = \(key)", logger: logger
      ).first?.decode(String.self)
    }
  }

  /// Reads every registry state value whose key starts with `prefix`, ordered by key (byte-wise).
  /// - Throws: `FeedbackStoreError` on a database failure.
  public func states(prefix: String) async throws -> [(key: String, value: String)] {
    let table = stateTable
    let rows = try await withConnection { connection, logger in
      var rows: [(String, String)] = []
      for row in try await connection.rows(
        "SELECT key, value FROM \(unescaped: table) WHERE starts_with(key, \(prefix)) ORDER BY key",
        logger: logger)
      {
        rows.append(try row.decode((String, String).self))
      }
      return rows
    }
    return rows.map { (key: $0.0, value: $0.1) }
  }

  // MARK: - Plumbing

  /// PostgreSQL text cannot hold U+0000 (SQLite can); such items are rejected, not failed.
  private static func nulCheck(_ item: FeedbackItem) -> String? {
    for (value, name) in [
      (item.idempotencyKey, "idempotency_key"), (item.responseID, "response_id"),
      (item.policyVersion, "versions.policy"), (item.rewardVersion, "versions.reward"),
      (item.safetyVersion, "versions.safety"), (item.annotatorID, "annotator_id"),
    ] where value.utf8.contains(0) {
      return "\(name) contains a NUL character"
    }
    return nil
  }

  /// Runs `body` on a pooled connection. Fails with `unavailable` if no connection is handed
  /// out within `acquireTimeout` (the pool itself would wait for up to a minute while the server
  /// is down); once `body` runs, only the server's `statement_timeout` bounds it.
  /// Runs `body` on a pooled connection, on another one if the connection turns out to be lost.
  ///
  /// After the server restarts or drops connections, the pool may still hold closed ones it has
  /// not noticed yet. With `idempotent`, a `body` that fails because its connection was lost is
  /// run again on another connection, as many times as the pool has connections plus one; the
  /// error is only returned when a fresh connection fails too.
  func withConnection<T: Sendable>(
    idempotent: Bool = true,
    _ body: @escaping @Sendable (PostgresConnection, Logger) async throws -> T
  ) async throws -> T {
    let attempts = idempotent ? max(1, configuration.maximumConnections) + 1 : 1
    var attempt = 0
    while true {
      attempt += 1
      do {
        return try await withConnectionOnce(body)
      } catch let error as FeedbackStoreError where attempt < attempts && error.isConnectionLoss {
        continue
      }
    }
  }

  private func withConnectionOnce<T: Sendable>(
    _ body: @escaping @Sendable (PostgresConnection, Logger) async throws -> T
  ) async throws -> T {
    if isClosed.withLock({ $0 }) { throw FeedbackStoreError.closed(path: location) }
    let client = self.client
    let logger = self.logger
    let timeout = configuration.acquireTimeout
    let watchdog = configuration.statementTimeout + .seconds(10)
    let location = self.location
    let leased = LeaseFlag()
    do {
      return try await withThrowingTaskGroup(of: T?.self) { group in
        group.addTask {
          try await client.withConnection { connection in
            leased.value.store(true, ordering: .sequentiallyConsistent)
            return try await StatementWatchdog.$limit.withValue(watchdog) {
              try await body(connection, logger)
            }
          }
        }
        group.addTask {
          try await Task.sleep(for: timeout)
          if !leased.value.load(ordering: .sequentiallyConsistent) {
            throw FeedbackStoreError.unavailable(
              path: location, detail: "no database connection within \(timeout)")
          }
          return nil
        }
        while let result = try await group.next() {
          if let result {
            group.cancelAll()
            return result
          }
        }
        throw CancellationError()
      }
    } catch {
      if isClosed.withLock({ $0 }) { throw FeedbackStoreError.closed(path: location) }
      throw Self.map(error, location: location)
    }
  }

  /// Runs `body` in one transaction on a pooled connection.
  ///
  /// A failure of BEGIN itself (typically a pooled connection the server has since closed) is
  /// retried on another connection (as many times as the pool has connections plus one):
  /// nothing was sent yet, so that is always safe. Later failures are not retried: the caller
  /// decides (for an append, a resend is safe because of the idempotency keys).
  func transaction<T: Sendable>(
    _ body: @escaping @Sendable (PostgresConnection, Logger) async throws -> T
  ) async throws -> T {
    let location = self.location
    let attempts = max(1, configuration.maximumConnections) + 1
    var attempt = 0
    while true {
      attempt += 1
      do {
        return try await withConnection(idempotent: false) { connection, logger in
          try await Self.inTransaction(connection, logger: logger, location: location) {
            try await body(connection, logger)
          }
        }
      } catch let error as TransactionBeginFailed where attempt < attempts {
        _ = error
        continue
      } catch let error as TransactionBeginFailed {
        throw error.error
      }
    }
  }

  /// BEGIN, `body`, COMMIT; ROLLBACK if `body` or COMMIT throws.
  ///
  /// Not postgres-nio's `withTransaction`: that sends ROLLBACK even on a connection the server
  /// has just closed, and such a query never completes (see `PostgresConnection.rows`).
  private static func inTransaction<T>(
    _ connection: PostgresConnection, logger: Logger, location: String,
    _ body: () async throws -> T
  ) async throws -> T {
    do {
      try await connection.rows("BEGIN", logger: logger)
    } catch {
      let mapped = mapOne(error, location: location)
      throw mapped.isRetryable ? TransactionBeginFailed(error: mapped) : mapped
    }
    do {
      let result = try await body()
      try await connection.rows("COMMIT", logger: logger)
      return result
    } catch {
      if !connection.isClosed {
        // Leaves the connection clean for the pool; if even this fails, the server has closed
        // the connection or will roll back when it does.
        _ = try? await connection.rows("ROLLBACK", logger: logger, watchClose: true)
      }
      throw error
    }
  }

  /// Wraps a failed BEGIN so `transaction` can retry it.
  private struct TransactionBeginFailed: Error {
    var error: FeedbackStoreError
  }

  private static func map(_ error: any Error, location: String) -> any Error {
    if let error = error as? FeedbackStoreError { return error }
    if let error = error as? TransactionBeginFailed { return error }
    return mapOne(error, location: location)
  }

  private static func mapOne(_ error: any Error, location: String) -> FeedbackStoreError {
    if let error = error as? FeedbackStoreError { return error }
    if error is ConnectionLost {
      return .unavailable(path: location, detail: "\(error)")
    }
    if error is CancellationError {
      return .unavailable(path: location, detail: "cancelled")
    }
    // The pool's own error type lives in a module postgres-nio does not export; it only says
    // the pool gave up connecting (the circuit breaker), which is a retryable condition.
    if String(reflecting: type(of: error)).hasSuffix("ConnectionPoolError") {
      return .unavailable(
        path: location, detail: "cannot connect to the database server (\(error))")
    }
    guard let error = error as? PSQLError else {
      return .database(path: location, code: -1, detail: "\(error)")
    }
    if let info = error.serverInfo, let state = info[.sqlState] {
      let message = info[.message] ?? ""
      let detail = "SQLSTATE \(state): \(message)"
      // Authentication failed, the role or database does not exist.
      if ["28000", "28P01", "3D000"].contains(state) {
        return .cannotOpen(path: location, detail: detail)
      }
      // Connection exceptions (class 08), admin/crash shutdown, cannot connect now, too many
      // connections, statement timeout, serialization failure, deadlock: try again later.
      if state.hasPrefix("08")
        || ["57P01", "57P02", "57P03", "53300", "57014", "40001", "40P01"].contains(state)
      {
        return .unavailable(path: location, detail: detail)
      }
      return .database(path: location, code: -1, detail: detail)
    }
    switch error.code {
    case .connectionError, .serverClosedConnection, .uncleanShutdown, .queryCancelled:
      let cause = error.underlying.map { " (\($0))" } ?? ""
      return .unavailable(path: location, detail: FeedbackStoreError.lostPrefix + cause)
    case .clientClosedConnection:
      // postgres-nio also closes a connection itself when the server announces its shutdown
      // (SQLSTATE 57P01 during a restart) and fails the query in flight with this code: a lost
      // connection, so retryable. A store closed by close() is caught before (isClosed).
      return .unavailable(path: location, detail: FeedbackStoreError.lostPrefix + " (closed after the server went away)")
    case .poolClosed:
      return .closed(path: location)
    case .sslUnsupported:
      return .cannotOpen(
        path: location, detail: "the server does not support TLS (use sslmode=prefer or disable)")
    case .authMechanismRequiresPassword, .unsupportedAuthMechanism, .saslError:
      return .cannotOpen(path: location, detail: "authentication failed (\(error.code))")
    default:
      return .database(
        path: location, code: -1, detail: "\(error.code): \(String(reflecting: error))")
    }
  }
}

/// Set once a pooled connection was handed out (see `withConnection`).
private final class LeaseFlag: Sendable {
  let value = Atomic<Bool>(false)
}

/// How long `PostgresConnection.rows` waits for a statement before giving the connection up.
enum StatementWatchdog {
  /// Set by the store around its work: its `statement_timeout` plus a margin, so the server
  /// always ends a statement first unless the connection itself is stuck.
  @TaskLocal static var limit: Duration = .seconds(60)
}

extension PostgresConnection {
  /// Runs one statement and returns all its rows.
  ///
  /// postgres-nio 1.33.2 writes a query to the channel without a write promise: on a connection
  /// that is closing at that moment, the result never arrives and a plain `query` waits forever.
  /// So the wait also ends, with `ConnectionLost` (mapped to `unavailable`), when the connection
  /// is already closed, when `StatementWatchdog.limit` passes (the connection is then closed),
  /// or, with `watchClose`, as soon as the connection closes. `watchClose` adds a callback to
  /// the connection's close future that stays until the connection closes, so it is only for
  /// rare statements (ROLLBACK after a failure).
  @discardableResult
  func rows(
    _ query: PostgresQuery, logger: Logger, watchClose: Bool = false
  ) async throws -> [PostgresRow] {
    if isClosed { throw ConnectionLost() }
    let limit = StatementWatchdog.limit
    return try await withCheckedThrowingContinuation { continuation in
      let once = ResumeOnce(continuation)
      let watchdog = Task {
        guard (try? await Task.sleep(for: limit)) != nil else { return }
        if once.resume(with: .failure(ConnectionLost())) {
          logger.warning("no answer to a statement within \(limit): closing the connection")
          try? await self.close()
        }
      }
      if watchClose {
        self.closeFuture.whenComplete { _ in
          if once.resume(with: .failure(ConnectionLost())) { watchdog.cancel() }
        }
      }
      Task {
        let result: Result<[PostgresRow], any Error>
        do {
          result = .success(try await self.query(query, logger: logger).collect())
        } catch {
          result = .failure(error)
        }
        once.resume(with: result)
        watchdog.cancel()
      }
    }
  }
}

/// The connection closed, or stopped answering, while a statement was running.
struct ConnectionLost: Error, CustomStringConvertible {
  static let message = "the connection to the database server was lost"
  var description: String { Self.message }
}

/// Resumes a continuation once; later calls do nothing.
private final class ResumeOnce: Sendable {
  private let continuation: Mutex<CheckedContinuation<[PostgresRow], any Error>?>

  init(_ continuation: CheckedContinuation<[PostgresRow], any Error>) {
    self.continuation = Mutex(continuation)
  }

  /// Resumes with `result` unless already resumed; returns whether this call resumed.
  @discardableResult
  func resume(with result: Result<[PostgresRow], any Error>) -> Bool {
    let continuation = self.continuation.withLock { value in
      defer { value = nil }
      return value
    }
    continuation?.resume(with: result)
    return continuation != nil
  }
}

extension FeedbackStoreError {
  /// Whether this is a lost or closed connection (as opposed to a timeout or a server error).
  fileprivate var isConnectionLoss: Bool {
    guard case .unavailable(_, let detail) = self else { return false }
    return detail.hasPrefix(ConnectionLost.message) || detail.hasPrefix(Self.lostPrefix)
  }

  fileprivate static let lostPrefix = "connection lost or refused"
}
