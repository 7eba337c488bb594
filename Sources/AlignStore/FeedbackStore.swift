/// A durable store of feedback records.
///
/// Implementations: `SQLiteFeedbackStore` (embedded, one process) and `PostgresFeedbackStore`
/// (shared by several replicas); one test suite runs against both. Both also keep the rollout's
/// state (``RolloutStateStore``).
///
/// Durability contract: when `append` returns, every item it reported as `.stored` is committed
/// durably (it survives a process kill or power loss), so the server may acknowledge it.
public protocol FeedbackStore: Sendable {
  /// Stores a batch of items in one transaction.
  ///
  /// Each item is validated (`FeedbackValidation.validate`) and deduplicated by idempotency key
  /// against the store and against earlier items of the same batch. Either the whole batch is
  /// committed or, if this throws, none of it is.
  /// - Parameter items: the items, in client order.
  /// - Returns: one outcome per item, in the same order.
  /// - Throws: `FeedbackStoreError` if the batch could not be committed.
  func append(_ items: [FeedbackItem]) async throws -> [AppendOutcome]

  /// Returns stored items that match `filter`, ordered by id.
  ///
  /// - Parameter filter: what to select; `afterID` and `limit` page through the results.
  /// - Throws: `FeedbackStoreError` on a database failure or an undecodable row.
  func export(_ filter: FeedbackFilter) async throws -> [StoredFeedbackItem]

  /// Counts stored items per kind; every kind is present (0 when none is stored).
  /// - Throws: `FeedbackStoreError` on a database failure.
  func counts() async throws -> [FeedbackKind: Int]
}

/// Durable key-value state of the checkpoint rollout: the versions serving each role, operation
/// outcomes by id, gate failures. Kept where feedback is kept, so a restart (and every replica on
/// a shared PostgreSQL store) serves the same versions.
public protocol RolloutStateStore: Sendable {
  /// Durably sets (or, with `nil`, removes) one state value.
  /// - Throws: `FeedbackStoreError` on a database failure.
  func setState(key: String, value: String?) async throws

  /// Reads one state value, or nil if it is not set.
  /// - Throws: `FeedbackStoreError` on a database failure.
  func state(key: String) async throws -> String?
}

extension FeedbackStore {
  /// Streams every item that matches `filter` in pages of at most `pageSize`, ordered by id.
  ///
  /// Pages are read one at a time with `afterID` paging, so memory stays bounded and items
  /// committed while the export runs are included if they match. `filter.limit` bounds the
  /// total number of items.
  /// - Parameters:
  ///   - filter: what to select.
  ///   - pageSize: the largest page (at least 1).
  public func exportPages(
    _ filter: FeedbackFilter, pageSize: Int = 256
  ) -> AsyncThrowingStream<[StoredFeedbackItem], any Error> {
    let pageSize = max(1, pageSize)
    let store = self
    return AsyncThrowingStream { continuation in
      let task = Task {
        var page = filter
        var remaining = (filter.limit ?? 0) > 0 ? filter.limit : nil
        do {
          while true {
            try Task.checkCancellation()
            let want = min(pageSize, remaining ?? pageSize)
            if want == 0 { break }
            page.limit = want
            let items = try await store.export(page)
            if items.isEmpty { break }
            continuation.yield(items)
            if let last = items.last { page.afterID = last.id }
            if let left = remaining { remaining = left - items.count }
            if items.count < want { break }
          }
          continuation.finish()
        } catch {
          continuation.finish(throwing: error)
        }
      }
      continuation.onTermination = { _ in task.cancel() }
    }
  }
}
