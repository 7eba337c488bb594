/// Errors of the feedback store. Each names the store it concerns in `path`: the SQLite file, or
/// for PostgreSQL the URL without its password, followed by the schema (`postgres://u@h:5432/db#schema`).
public enum FeedbackStoreError: Error, Sendable, Equatable, CustomStringConvertible {
  /// The file exists but is not an SQLite database (or is encrypted, or its header is garbage).
  case notADatabase(path: String, detail: String)
  /// The file is an SQLite database, but damaged (failed the integrity check or a read).
  case corrupt(path: String, detail: String)
  /// The file or its folder could not be created or opened.
  case cannotOpen(path: String, detail: String)
  /// The database was written by a newer alignd whose schema this one does not know.
  case schemaTooNew(path: String, unknownMigrations: [String])
  /// The store was closed.
  case closed(path: String)
  /// An item could not be encoded for storage.
  case encoding(idempotencyKey: String, detail: String)
  /// A stored row could not be decoded.
  case decoding(path: String, id: Int64, detail: String)
  /// Any other database failure (disk full, I/O error, lock timeout, ...).
  case database(path: String, code: Int32, detail: String)
  /// The database server cannot be reached right now: the connection was refused or lost, no
  /// connection became free in time, or the server is shutting down. Nothing the caller sent is
  /// wrong: retry later. If it was thrown by `append`, the batch may or may not have been
  /// committed (a connection lost during COMMIT leaves that unknown); resending it is safe, since
  /// items are deduplicated by idempotency key.
  case unavailable(path: String, detail: String)

  /// Whether retrying the same call later may succeed (the server maps this to `UNAVAILABLE`).
  public var isRetryable: Bool {
    if case .unavailable = self { return true }
    return false
  }

  public var description: String {
    switch self {
    case .notADatabase(let path, let detail):
      "feedback store \(path): not an SQLite database (\(detail))"
    case .corrupt(let path, let detail):
      "feedback store \(path): database file is corrupt (\(detail))"
    case .cannotOpen(let path, let detail):
      "feedback store \(path): cannot open (\(detail))"
    case .schemaTooNew(let path, let unknown):
      "feedback store \(path): written by a newer version (unknown migrations: \(unknown.joined(separator: ", ")))"
    case .closed(let path):
      "feedback store \(path): closed"
    case .encoding(let key, let detail):
      "feedback item \(key): cannot encode (\(detail))"
    case .decoding(let path, let id, let detail):
      "feedback store \(path): row \(id) cannot be decoded (\(detail))"
    case .database(let path, let code, let detail):
      "feedback store \(path): database error \(code) (\(detail))"
    case .unavailable(let path, let detail):
      "feedback store \(path): unavailable, retry later (\(detail))"
    }
  }
}
