import AlignAPI
import AlignServing
import AlignStore
import GRPCCore
import Synchronization

/// alignd.v1.Admin: feedback in and out, checkpoint rollout, status.
///
/// The feedback store and the checkpoint registry are not built yet: those RPCs answer
/// UNIMPLEMENTED naming what is missing, never a fake result. GetStatus is real.
struct AdminService: Alignd_V1_Admin.SimpleServiceProtocol {
  let status: ServingStatus
  let models: ModelHost
  let feedback: any FeedbackStore

  /// Most records committed in one transaction.
  static let maxCommitBatch = 64

  static func missing(_ what: String) -> RPCError {
    RPCError(code: .unimplemented, message: "\(what) is not implemented yet in this alignd build")
  }

  /// Records are validated one by one and committed in small batches: whatever arrived while the
  /// previous batch was committing goes into the next transaction, so a slow client gets one
  /// acknowledgement per record and a fast one gets batches. An acknowledgement is sent only after
  /// its transaction committed (WAL, synchronous FULL), so a client that resends everything after
  /// the last acknowledged sequence after a crash loses nothing and, thanks to idempotency keys,
  /// doubles nothing.
  func streamFeedback(
    request: RPCAsyncSequence<Alignd_V1_FeedbackRecord, any Error>,
    response: RPCWriter<Alignd_V1_FeedbackAck>, context: ServerContext
  ) async throws {
    let inbox = FeedbackInbox()
    let (wakeups, wake) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
    var stored: UInt64 = 0
    var duplicates: UInt64 = 0
    var committedThrough: UInt64 = 0

    func commit(_ batch: [Alignd_V1_FeedbackRecord]) async throws {
      guard !batch.isEmpty else { return }
      var rejected: [Alignd_V1_RejectedRecord] = []
      var accepted: [(Alignd_V1_FeedbackRecord, FeedbackItem)] = []
      for record in batch {
        if record.sequence != 0 && record.sequence <= committedThrough {
          rejected.append(.with {
            $0.sequence = record.sequence
            $0.idempotencyKey = record.idempotencyKey
            $0.reason = "sequence \(record.sequence) is not above the last acknowledged \(committedThrough)"
          })
          continue
        }
        switch FeedbackMapping.item(record) {
        case .success(let item): accepted.append((record, item))
        case .failure(let rejection):
          rejected.append(.with {
            $0.sequence = record.sequence
            $0.idempotencyKey = record.idempotencyKey
            $0.reason = rejection.reason
          })
        }
      }
      let outcomes: [AppendOutcome]
      do {
        outcomes = try await feedback.append(accepted.map(\.1))
      } catch {
        // Nothing of this batch is acknowledged; the client resends from its last acknowledgement.
        throw RPCError(code: .unavailable, message: "the feedback store failed; resend from the last acknowledgement: \(error)")
      }
      for ((record, _), outcome) in zip(accepted, outcomes) {
        switch outcome {
        case .stored: stored += 1
        case .duplicate: duplicates += 1
        case .rejected(let reason):
          rejected.append(.with {
            $0.sequence = record.sequence
            $0.idempotencyKey = record.idempotencyKey
            $0.reason = reason
          })
        }
      }
      committedThrough = max(committedThrough, batch.map(\.sequence).max() ?? 0)
      try await response.write(.with {
        $0.committedThrough = committedThrough
        $0.rejected = rejected
        $0.stored = stored
        $0.duplicates = duplicates
      })
    }

    try await withThrowingTaskGroup(of: Void.self) { group in
      group.addTask {
        defer { wake.finish() }
        for try await record in request {
          inbox.append(record)
          wake.yield()
        }
      }
      for await _ in wakeups {
        while case let batch = inbox.take(Self.maxCommitBatch), !batch.isEmpty {
          try await commit(batch)
        }
      }
      try await group.waitForAll()
      // Anything that arrived after the last wake-up.
      while case let batch = inbox.take(Self.maxCommitBatch), !batch.isEmpty {
        try await commit(batch)
      }
    }
  }

  func exportFeedback(
    request: Alignd_V1_ExportFeedbackRequest, response: RPCWriter<Alignd_V1_StoredFeedback>,
    context: ServerContext
  ) async throws {
    let filter = try FeedbackMapping.filter(request)
    for try await page in feedback.exportPages(filter, pageSize: 256) {
      if context.cancellation.isCancelled { return }
      for item in page { try await response.write(FeedbackMapping.record(item)) }
    }
  }

  func uploadCheckpoint(
    request: RPCAsyncSequence<Alignd_V1_UploadCheckpointRequest, any Error>, context: ServerContext
  ) async throws -> Alignd_V1_UploadCheckpointResponse {
    throw Self.missing("UploadCheckpoint (the checkpoint registry)")
  }

  func activateCheckpoint(
    request: Alignd_V1_ActivateCheckpointRequest, context: ServerContext
  ) async throws -> Alignd_V1_RoleState {
    throw Self.missing("ActivateCheckpoint (validated hot swap)")
  }

  func promoteCanary(
    request: Alignd_V1_PromoteCanaryRequest, context: ServerContext
  ) async throws -> Alignd_V1_RoleState {
    throw Self.missing("PromoteCanary (canary rollout)")
  }

  func rollback(request: Alignd_V1_RollbackRequest, context: ServerContext) async throws -> Alignd_V1_RoleState {
    throw Self.missing("Rollback (canary rollout)")
  }

  func listCheckpoints(
    request: Alignd_V1_ListCheckpointsRequest, context: ServerContext
  ) async throws -> Alignd_V1_ListCheckpointsResponse {
    throw Self.missing("ListCheckpoints (the checkpoint registry)")
  }

  func getStatus(request: Alignd_V1_GetStatusRequest, context: ServerContext) async throws -> Alignd_V1_GetStatusResponse {
    let phase = status.phase
    let versions = models.versions
    let counts = (try? await feedback.counts()) ?? [:]
    return .with { response in
      switch phase {
      case .loading, .failed: response.state = .loading
      case .serving: response.state = .serving
      case .draining: response.state = .draining
      }
      response.serverVersion = AlignServerApp.version
      response.uptimeSeconds = UInt64(max(0, status.uptime.components.seconds))
      if !versions.policy.isEmpty {
        response.roles.append(.with {
          $0.role = .policy
          $0.activeVersion = versions.policy
        })
      }
      response.loadedModelBytes = models.loadedBytes
      for (kind, count) in counts { response.feedbackCounts[kind.rawValue] = UInt64(count) }
      if let policy = models.policy {
        let stats = policy.loop.stats
        response.queues.append(.with {
          $0.model = policy.version
          $0.queued = UInt32(stats.queued)
          $0.capacity = UInt32(stats.capacity)
          $0.running = UInt32(stats.runningSequences)
        })
      }
    }
  }
}

/// Feedback records received but not yet committed, shared by a stream's reader and committer.
final class FeedbackInbox: Sendable {
  private let records = Mutex<[Alignd_V1_FeedbackRecord]>([])

  func append(_ record: Alignd_V1_FeedbackRecord) { records.withLock { $0.append(record) } }

  func take(_ limit: Int) -> [Alignd_V1_FeedbackRecord] {
    records.withLock { records in
      let batch = Array(records.prefix(limit))
      records.removeFirst(batch.count)
      return batch
    }
  }
}
