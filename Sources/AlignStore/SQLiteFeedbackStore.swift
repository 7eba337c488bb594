import Foundation
import GRDB

/// Runtime settings of `SQLiteFeedbackStore`.
public struct SQLiteFeedbackStoreConfiguration: Sendable {
  /// Run `PRAGMA quick_check` when opening, so a damaged file fails at start-up with
  /// `FeedbackStoreError.corrupt` instead of at some later read. Costs one pass over the file.
  public var checkIntegrityOnOpen: Bool = true
  /// How long a write waits for a lock held by another process before failing.
  public var busyTimeout: Duration = .seconds(5)
  /// Bounds for `FeedbackValidation` on append.
  public var limits: FeedbackLimits = .default
  /// The clock for received-at stamps, Unix milliseconds. Tests replace it.
  public var now: @Sendable () -> Int64 = {
    Int64((Date().timeIntervalSince1970 * 1000).rounded(.down))
  }

  /// The default settings.
  public init() {}
}

/// The embedded feedback store: one SQLite file, written through GRDB.
///
/// The database runs in WAL mode with `synchronous = FULL`: every committed transaction has
/// been fsynced to the WAL before `append` returns, so an acknowledged record survives SIGKILL
/// and power loss. Writes are serialized by GRDB's single writer connection, so ids increase in
/// commit order and an `afterID` export never skips an item committed later.
///
/// Only one process should open a given file at a time (the server); a second process works
/// but waits on locks.
public final class SQLiteFeedbackStore: FeedbackStore, RolloutStateStore {
  /// The file name used inside a data folder.
  public static let defaultFileName = "feedback.sqlite"

  /// The database file.
  public let path: String
  private let pool: DatabasePool
  private let configuration: SQLiteFeedbackStoreConfiguration

  /// Opens (creating if needed) `feedback.sqlite` inside `dataDirectory`, creating the folder.
  ///
  /// - Parameters:
  ///   - dataDirectory: the server's data folder.
  ///   - configuration: runtime settings.
  /// - Throws: `FeedbackStoreError` (`cannotOpen`, `notADatabase`, `corrupt`, `schemaTooNew`).
  public convenience init(
    dataDirectory: URL, configuration: SQLiteFeedbackStoreConfiguration = .init()
  ) throws {
    let file = dataDirectory.appendingPathComponent(Self.defaultFileName)
    do {
      try FileManager.default.createDirectory(at: dataDirectory, withIntermediateDirectories: true)
    } catch {
      throw FeedbackStoreError.cannotOpen(path: file.path, detail: "\(error)")
    }
    try self.init(fileURL: file, configuration: configuration)
  }

  /// Opens (creating if needed) the database file at `fileURL` and migrates its schema.
  ///
  /// - Parameters:
  ///   - fileURL: the database file; its folder must exist.
  ///   - configuration: runtime settings.
  /// - Throws: `FeedbackStoreError` (`cannotOpen`, `notADatabase`, `corrupt`, `schemaTooNew`).
  public init(fileURL: URL, configuration: SQLiteFeedbackStoreConfiguration = .init()) throws {
    let path = fileURL.path
    self.path = path
    self.configuration = configuration

    var config = Configuration()
    config.journalMode = .wal
    config.busyMode = .timeout(
      TimeInterval(configuration.busyTimeout.components.seconds)
        + TimeInterval(configuration.busyTimeout.components.attoseconds) / 1e18)
    config.label = "AlignStore.feedback"

    let pool: DatabasePool
    do {
      pool = try DatabasePool(path: path, configuration: config)
      // With WAL, FULL syncs the WAL on every commit: the durability the acknowledgements
      // promise (NORMAL only syncs at checkpoints and can lose the last commits on power loss).
      // Set after opening: DatabasePool's WAL setup itself sets NORMAL on the writer, after any
      // `prepareDatabase` hook. Only the writer commits, so only its setting matters.
      try pool.writeWithoutTransaction { db in
        try db.execute(sql: "PRAGMA synchronous = FULL")
      }
      if configuration.checkIntegrityOnOpen {
        let result = try pool.read { db in try String.fetchAll(db, sql: "PRAGMA quick_check") }
        if result != ["ok"] {
          throw FeedbackStoreError.corrupt(
            path: path, detail: "quick_check: " + result.prefix(5).joined(separator: "; "))
        }
      }
      let migrator = Self.migrator
      let unknown = try pool.read { db -> [String] in
        try migrator.appliedIdentifiers(db).subtracting(migrator.migrations).sorted()
      }
      if !unknown.isEmpty {
        throw FeedbackStoreError.schemaTooNew(path: path, unknownMigrations: unknown)
      }
      try migrator.migrate(pool)
    } catch let error as FeedbackStoreError {
      throw error
    } catch {
      throw Self.map(error, path: path)
    }
    self.pool = pool
  }

  /// Closes the database. Later calls throw `FeedbackStoreError.closed`.
  ///
  /// Not required before exit: committed data is already durable.
  /// - Throws: `FeedbackStoreError` if the connections cannot be closed.
  public func close() throws {
    do {
      try pool.close()
    } catch {
      throw Self.map(error, path: path)
    }
  }

  /// The SQLite settings in force on the writer connection, for status pages and tests.
  public struct StorageSettings: Sendable, Equatable {
    /// `PRAGMA journal_mode`, e.g. "wal".
    public var journalMode: String
    /// `PRAGMA synchronous`: 0 OFF, 1 NORMAL, 2 FULL, 3 EXTRA.
    public var synchronous: Int
    /// The SQLite library version.
    public var sqliteVersion: String
  }

  /// Reads the SQLite settings in force on the writer connection.
  /// - Throws: `FeedbackStoreError` on a database failure.
  public func storageSettings() async throws -> StorageSettings {
    do {
      return try await pool.writeWithoutTransaction { db in
        StorageSettings(
          journalMode: try String.fetchOne(db, sql: "PRAGMA journal_mode") ?? "",
          synchronous: try Int.fetchOne(db, sql: "PRAGMA synchronous") ?? -1,
          sqliteVersion: try String.fetchOne(db, sql: "SELECT sqlite_version()") ?? "")
      }
    } catch {
      throw Self.map(error, path: path)
    }
  }

  /// Copies every committed page from the WAL into the main file and truncates the WAL.
  ///
  /// Not needed for durability (a commit is durable once in the WAL); useful before copying the
  /// main file alone, e.g. for a backup. Waits for readers to finish.
  /// - Throws: `FeedbackStoreError` on a database failure.
  public func checkpoint() async throws {
    do {
      _ = try await pool.writeWithoutTransaction { db in
        try db.checkpoint(.truncate)
      }
    } catch {
      throw Self.map(error, path: path)
    }
  }

  // MARK: - Schema

  private static var migrator: DatabaseMigrator {
    var migrator = DatabaseMigrator()
    migrator.registerMigration("v1-feedback") { db in
      // AUTOINCREMENT: ids are never reused, so a client's `afterID` stays meaningful forever.
      try db.execute(
        sql: """
          CREATE TABLE feedback (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            idempotency_key TEXT NOT NULL UNIQUE,
            kind TEXT NOT NULL,
            response_id TEXT NOT NULL,
            policy_version TEXT NOT NULL,
            reward_version TEXT NOT NULL,
            safety_version TEXT NOT NULL,
            annotator_id TEXT NOT NULL,
            created_at INTEGER NOT NULL,
            received_at INTEGER NOT NULL,
            metadata TEXT NOT NULL,
            payload TEXT NOT NULL
          );
          CREATE INDEX feedback_kind ON feedback(kind, id);
          CREATE INDEX feedback_received_at ON feedback(received_at);
          CREATE INDEX feedback_policy_version ON feedback(policy_version, id);
          CREATE INDEX feedback_reward_version ON feedback(reward_version, id);
          CREATE TABLE registry_state (
            key TEXT PRIMARY KEY NOT NULL,
            value TEXT NOT NULL,
            updated_at INTEGER NOT NULL
          );
          """)
    }
    migrator.registerMigration("v2-generation-log") { db in
      try db.execute(sql: SQLiteFeedbackStore.generationLogSchema)
    }
    return migrator
  }

  private static let columns =
    "id, idempotency_key, kind, response_id, policy_version, reward_version, safety_version, "
    + "annotator_id, created_at, received_at, metadata, payload"

  // MARK: - FeedbackStore

  public func append(_ items: [FeedbackItem]) async throws -> [AppendOutcome] {
    if items.isEmpty { return [] }
    let limits = configuration.limits
    // Encode outside the write lock: the writer is the store's one serialized resource.
    var prepared: [PreparedItem?] = []
    prepared.reserveCapacity(items.count)
    var outcomes: [AppendOutcome?] = Array(repeating: nil, count: items.count)
    for (index, item) in items.enumerated() {
      if let reason = FeedbackValidation.validate(item, limits: limits) {
        outcomes[index] = .rejected(reason: reason)
        prepared.append(nil)
      } else {
        prepared.append(try PreparedItem(item))
      }
    }
    let receivedAt = configuration.now()
    let toWrite = prepared
    let written: [Int: AppendOutcome] = try await perform { db in
      let select = try db.cachedStatement(sql: "SELECT id FROM feedback WHERE idempotency_key = ?")
      let insert = try db.cachedStatement(
        sql: """
          INSERT INTO feedback (idempotency_key, kind, response_id, policy_version, reward_version,
            safety_version, annotator_id, created_at, received_at, metadata, payload)
          VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
          """)
      var result: [Int: AppendOutcome] = [:]
      var inBatch: [String: Int64] = [:]
      for (index, entry) in toWrite.enumerated() {
        guard let p = entry else { continue }
        if let id = inBatch[p.key] {
          result[index] = .duplicate(existingID: id)
          continue
        }
        if let id = try Int64.fetchOne(select, arguments: [p.key]) {
          inBatch[p.key] = id
          result[index] = .duplicate(existingID: id)
          continue
        }
        let createdAt = p.createdAt == 0 ? receivedAt : p.createdAt
        try insert.execute(arguments: [
          p.key, p.kind.rawValue, p.responseID, p.policyVersion, p.rewardVersion, p.safetyVersion,
          p.annotatorID, createdAt, receivedAt, p.metadataJSON, p.payloadJSON,
        ])
        let id = db.lastInsertedRowID
        inBatch[p.key] = id
        result[index] = .stored(id: id)
      }
      return result
    }
    for (index, outcome) in written { outcomes[index] = outcome }
    return outcomes.map { $0 ?? .rejected(reason: "internal: no outcome") }
  }

  public func export(_ filter: FeedbackFilter) async throws -> [StoredFeedbackItem] {
    var sql = "SELECT \(Self.columns) FROM feedback WHERE id > ?"
    var arguments: StatementArguments = [filter.afterID]
    if let since = filter.sinceUnixMs {
      sql += " AND received_at >= ?"
      arguments += [since]
    }
    if let until = filter.untilUnixMs {
      sql += " AND received_at < ?"
      arguments += [until]
    }
    if !filter.kinds.isEmpty {
      let kinds = filter.kinds.map(\.rawValue).sorted()
      sql +=
        " AND kind IN (" + Array(repeating: "?", count: kinds.count).joined(separator: ",") + ")"
      arguments += StatementArguments(kinds)
    }
    if let policy = filter.policyVersion, !policy.isEmpty {
      sql += " AND policy_version = ?"
      arguments += [policy]
    }
    if let reward = filter.rewardVersion, !reward.isEmpty {
      sql += " AND reward_version = ?"
      arguments += [reward]
    }
    sql += " ORDER BY id"
    if let limit = filter.limit, limit > 0 {
      sql += " LIMIT ?"
      arguments += [limit]
    }
    let query = sql
    let queryArguments = arguments
    let path = self.path
    return try await read { db in
      let rows = try Row.fetchAll(db, sql: query, arguments: queryArguments)
      return try rows.map { try Self.decode($0, path: path) }
    }
  }

  public func counts() async throws -> [FeedbackKind: Int] {
    let rows = try await read { db in
      try Row.fetchAll(db, sql: "SELECT kind, COUNT(*) AS n FROM feedback GROUP BY kind")
        .map { (($0["kind"] as String?) ?? "", ($0["n"] as Int?) ?? 0) }
    }
    var counts: [FeedbackKind: Int] = [:]
    for kind in FeedbackKind.allCases { counts[kind] = 0 }
    for (name, count) in rows {
      if let kind = FeedbackKind(rawValue: name) { counts[kind] = count }
    }
    return counts
  }

  public func setState(key: String, value: String?) async throws {
    let now = configuration.now()
    try await perform { db in
      if let value {
        try db.execute(
          sql: """
            INSERT INTO registry_state (key, value, updated_at) VALUES (?, ?, ?)
            ON CONFLICT(key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at
            """,
          arguments: [key, value, now])
      } else {
        try db.execute(sql: "DELETE FROM registry_state WHERE key = ?", arguments: [key])
      }
    }
  }

  public func state(key: String) async throws -> String? {
    try await read { db in
      try String.fetchOne(
        db, sql: "SELECT value FROM registry_state WHERE key = ?", arguments: [key])
    }
  }

  /// Reads every registry state value whose key starts with `prefix`, ordered by key.
  /// - Throws: `FeedbackStoreError` on a database failure.
  public func states(prefix: String) async throws -> [(key: String, value: String)] {
    let rows = try await read { db in
      try Row.fetchAll(
        db, sql: "SELECT key, value FROM registry_state WHERE substr(key, 1, ?) = ? ORDER BY key",
        arguments: [prefix.unicodeScalars.count, prefix]
      ).map { (($0["key"] as String?) ?? "", ($0["value"] as String?) ?? "") }
    }
    return rows.map { (key: $0.0, value: $0.1) }
  }

  // MARK: - Plumbing

  func perform<T: Sendable>(_ body: @Sendable @escaping (Database) throws -> T) async throws
    -> T
  {
    do {
      return try await pool.write(body)
    } catch let error as FeedbackStoreError {
      throw error
    } catch {
      throw Self.map(error, path: path)
    }
  }

  func read<T: Sendable>(_ body: @Sendable @escaping (Database) throws -> T) async throws
    -> T
  {
    do {
      return try await pool.read(body)
    } catch let error as FeedbackStoreError {
      throw error
    } catch {
      throw Self.map(error, path: path)
    }
  }

  private static func map(_ error: any Error, path: String) -> FeedbackStoreError {
    guard let error = error as? DatabaseError else {
      return .database(path: path, code: -1, detail: "\(error)")
    }
    let detail = error.message ?? "\(error)"
    switch error.resultCode {
    case .SQLITE_NOTADB: return .notADatabase(path: path, detail: detail)
    case .SQLITE_CORRUPT: return .corrupt(path: path, detail: detail)
    case .SQLITE_CANTOPEN, .SQLITE_PERM, .SQLITE_READONLY:
      return .cannotOpen(path: path, detail: detail)
    case .SQLITE_MISUSE where detail.localizedCaseInsensitiveContains("closed"):
      return .closed(path: path)
    default: return .database(path: path, code: error.extendedResultCode.rawValue, detail: detail)
    }
  }

  private static func decode(_ row: Row, path: String) throws -> StoredFeedbackItem {
    let id: Int64 = row["id"]
    do {
      return try FeedbackRowColumns(
        id: id,
        idempotencyKey: row["idempotency_key"],
        kind: row["kind"],
        responseID: row["response_id"],
        policyVersion: row["policy_version"],
        rewardVersion: row["reward_version"],
        safetyVersion: row["safety_version"],
        annotatorID: row["annotator_id"],
        createdAt: row["created_at"],
        receivedAt: row["received_at"],
        metadataJSON: row["metadata"],
        payloadJSON: row["payload"]
      ).decode(path: path)
    } catch let error as FeedbackStoreError {
      throw error
    } catch {
      throw FeedbackStoreError.decoding(path: path, id: id, detail: "\(error)")
    }
  }
}
