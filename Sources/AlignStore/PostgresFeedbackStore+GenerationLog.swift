import Foundation
import Logging
import PostgresNIO

/// The generation log in the PostgreSQL store: table `generation_log` in the store's schema.
///
/// Unlike feedback appends, log writes take no advisory lock: exports page by `afterID` over a
/// log that is best-effort by design (sampled, pruned), and serializing every replica's log
/// writes behind the feedback lock would slow acknowledged feedback for no guarantee anyone needs.
extension PostgresFeedbackStore: GenerationLogStore {
  /// Migration `v2-generation-log`.
  static func generationLogMigration(schema: String) -> [String] {
    let table = "\"\(schema)\".generation_log"
    return [
      """
      CREATE TABLE \(table) (
        id BIGSERIAL PRIMARY KEY,
        completion_id TEXT COLLATE "C" NOT NULL,
        response_id TEXT NOT NULL,
        api_key_id TEXT NOT NULL,
        policy_version TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        body TEXT NOT NULL
      )
      """,
      "CREATE UNIQUE INDEX generation_log_completion_id ON \(table) (completion_id)",
      "CREATE INDEX generation_log_created_at ON \(table) (created_at)",
      "CREATE INDEX generation_log_policy_version ON \(table) (policy_version, id)",
      "CREATE INDEX generation_log_api_key_id ON \(table) (api_key_id, id)",
    ]
  }

  private var generationTable: String { "\"\(schema)\".generation_log" }

  @discardableResult
  public func appendGenerations(_ entries: [GenerationLogEntry]) async throws -> Int {
    if entries.isEmpty { return 0 }
    // JSON escapes U+0000 (which PostgreSQL text cannot hold) in the body; the plain columns
    // are the server's own ids and versions.
    let rows = try entries.map { entry in (entry, try entry.bodyJSON()) }
    let table = generationTable
    return try await transaction { connection, logger in
      var written = 0
      for (entry, body) in rows {
        let inserted = try await connection.rows(
          """
          INSERT INTO \(unescaped: table) (completion_id, response_id, api_key_id, policy_version,
            created_at, body)
          VALUES (\(entry.completionID), \(entry.responseID), \(entry.apiKeyID), \(entry.policyVersion),
            \(entry.createdAtUnixMs), \(body))
          ON CONFLICT (completion_id) DO NOTHING
          RETURNING id
          """, logger: logger)
        written += inserted.count
      }
      return written
    }
  }

  public func generations(_ filter: GenerationLogFilter) async throws -> [StoredGeneration] {
    let since = filter.sinceUnixMs
    let until = filter.untilUnixMs
    let policy = filter.policyVersion ?? ""
    let key = filter.apiKeyID ?? ""
    let before = filter.beforeID
    let limit: Int64? = filter.limit.flatMap { $0 > 0 ? Int64($0) : nil }
    let order = filter.newestFirst ? "id DESC" : "id"
    let query: PostgresQuery = """
      SELECT id, body FROM \(unescaped: generationTable)
      WHERE id > \(filter.afterID)
        AND (\(before) = 0 OR id < \(before))
        AND (\(since)::BIGINT IS NULL OR created_at >= \(since))
        AND (\(until)::BIGINT IS NULL OR created_at < \(until))
        AND (\(policy) = '' OR policy_version = \(policy))
        AND (\(key) = '' OR api_key_id = \(key))
      ORDER BY \(unescaped: order)
      LIMIT \(limit)
      """
    let location = self.location
    return try await withConnection { connection, logger in
      try await connection.rows(query, logger: logger).map { row in
        let (id, body) = try row.decode((Int64, String).self)
        return try GenerationLogEntry.decode(body: body, id: id, path: location)
      }
    }
  }

  public func generation(completionID: String) async throws -> StoredGeneration? {
    let table = generationTable
    let location = self.location
    if completionID.utf8.contains(0) { return nil }
    return try await withConnection { connection, logger in
      guard
        let row = try await connection.rows(
          "SELECT id, body FROM \(unescaped: table) WHERE completion_id = \(completionID)",
          logger: logger
        ).first
      else { return nil }
      let (id, body) = try row.decode((Int64, String).self)
      return try GenerationLogEntry.decode(body: body, id: id, path: location)
    }
  }

  @discardableResult
  public func pruneGenerations(_ retention: GenerationLogRetention) async throws -> Int {
    let table = generationTable
    return try await transaction { connection, logger in
      var removed = 0
      if let before = retention.olderThanUnixMs {
        removed += try await connection.rows(
          "DELETE FROM \(unescaped: table) WHERE created_at < \(before) RETURNING id", logger: logger
        ).count
      }
      if let maxRows = retention.maxRows {
        let offset = Int64(max(0, maxRows))
        removed += try await connection.rows(
          """
          DELETE FROM \(unescaped: table) WHERE id <= COALESCE(
            (SELECT id FROM \(unescaped: table) ORDER BY id DESC LIMIT 1 OFFSET \(offset)), 0)
          RETURNING id
          """, logger: logger
        ).count
      }
      return removed
    }
  }
}
