import Foundation
import GRDB

/// The generation log in the SQLite store: table `generation_log` beside `feedback`.
extension SQLiteFeedbackStore: GenerationLogStore {
  /// Migration `v2-generation-log`. AUTOINCREMENT: ids are never reused, so an export's
  /// `afterID` stays meaningful after pruning.
  static let generationLogSchema = """
    CREATE TABLE generation_log (
      id INTEGER PRIMARY KEY AUTOINCREMENT,
      completion_id TEXT NOT NULL UNIQUE,
      response_id TEXT NOT NULL,
      api_key_id TEXT NOT NULL,
      policy_version TEXT NOT NULL,
      created_at INTEGER NOT NULL,
      body TEXT NOT NULL
    );
    CREATE INDEX generation_log_created_at ON generation_log(created_at);
    CREATE INDEX generation_log_policy_version ON generation_log(policy_version, id);
    CREATE INDEX generation_log_api_key_id ON generation_log(api_key_id, id);
    """

  @discardableResult
  public func appendGenerations(_ entries: [GenerationLogEntry]) async throws -> Int {
    if entries.isEmpty { return 0 }
    // Encode outside the write lock.
    let rows = try entries.map { entry in
      (entry, try entry.bodyJSON())
    }
    return try await perform { db in
      let insert = try db.cachedStatement(
        sql: """
          INSERT INTO generation_log (completion_id, response_id, api_key_id, policy_version,
            created_at, body)
          VALUES (?, ?, ?, ?, ?, ?)
          ON CONFLICT(completion_id) DO NOTHING
          """)
      var written = 0
      for (entry, body) in rows {
        try insert.execute(arguments: [
          entry.completionID, entry.responseID, entry.apiKeyID, entry.policyVersion,
          entry.createdAtUnixMs, body,
        ])
        written += db.changesCount
      }
      return written
    }
  }

  public func generations(_ filter: GenerationLogFilter) async throws -> [StoredGeneration] {
    var sql = "SELECT id, body FROM generation_log WHERE id > ?"
    var arguments: StatementArguments = [filter.afterID]
    if filter.beforeID > 0 {
      sql += " AND id < ?"
      arguments += [filter.beforeID]
    }
    if let since = filter.sinceUnixMs {
      sql += " AND created_at >= ?"
      arguments += [since]
    }
    if let until = filter.untilUnixMs {
      sql += " AND created_at < ?"
      arguments += [until]
    }
    if let policy = filter.policyVersion, !policy.isEmpty {
      sql += " AND policy_version = ?"
      arguments += [policy]
    }
    if let key = filter.apiKeyID, !key.isEmpty {
      sql += " AND api_key_id = ?"
      arguments += [key]
    }
    sql += filter.newestFirst ? " ORDER BY id DESC" : " ORDER BY id"
    if let limit = filter.limit, limit > 0 {
      sql += " LIMIT ?"
      arguments += [limit]
    }
    let (query, queryArguments, path) = (sql, arguments, self.path)
    return try await read { db in
      try Row.fetchAll(db, sql: query, arguments: queryArguments).map { row in
        try GenerationLogEntry.decode(body: row["body"], id: row["id"], path: path)
      }
    }
  }

  public func generation(completionID: String) async throws -> StoredGeneration? {
    let path = self.path
    return try await read { db in
      guard
        let row = try Row.fetchOne(
          db, sql: "SELECT id, body FROM generation_log WHERE completion_id = ?",
          arguments: [completionID])
      else { return nil }
      return try GenerationLogEntry.decode(body: row["body"], id: row["id"], path: path)
    }
  }

  @discardableResult
  public func pruneGenerations(_ retention: GenerationLogRetention) async throws -> Int {
    try await perform { db in
      var removed = 0
      if let before = retention.olderThanUnixMs {
        try db.execute(sql: "DELETE FROM generation_log WHERE created_at < ?", arguments: [before])
        removed += db.changesCount
      }
      if let maxRows = retention.maxRows {
        // Everything below the id of the maxRows-th newest entry.
        try db.execute(
          sql: """
            DELETE FROM generation_log WHERE id <= COALESCE(
              (SELECT id FROM generation_log ORDER BY id DESC LIMIT 1 OFFSET ?), 0)
            """, arguments: [max(0, maxRows)])
        removed += db.changesCount
      }
      return removed
    }
  }
}
