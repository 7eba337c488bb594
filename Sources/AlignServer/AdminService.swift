import AlignAPI
import AlignEngine
import AlignRollout
import AlignServing
import AlignStore
import GRPCCore
import Logging
import Synchronization

/// alignd.v1.Admin: feedback in and out, checkpoint rollout, status.
///
/// Admin operations on checkpoints run one at a time (``RolloutController`` is an actor) and are
/// idempotent by operation id.
struct AdminService: Alignd_V1_Admin.SimpleServiceProtocol {
  let status: ServingStatus
  let models: ModelHost
  let feedback: any FeedbackStore
  /// The generation log (same database as the feedback).
  let generations: any GenerationLogStore
  /// Writes the log writer's queue out, so admin reads see every answer given so far.
  let flushGenerationLog: @Sendable () async -> Void
  let registry: CheckpointRegistry
  let rollout: RolloutController
  let logger: Logger

  /// Most records committed in one transaction.
  static let maxCommitBatch = 64

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
        throw UncommittedFeedback(cause: error)
      }
      for ((record, item), outcome) in zip(accepted, outcomes) {
        switch outcome {
        case .stored:
          stored += 1
          FeedbackMetrics.committed(item)
          models.signals.record(item)
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

  /// Header first, then chunks, streamed to a staging file; verified (size, SHA-256), synced and
  /// moved into the registry only when complete. Any failure removes the staging file.
  func uploadCheckpoint(
    request: RPCAsyncSequence<Alignd_V1_UploadCheckpointRequest, any Error>, context: ServerContext
  ) async throws -> Alignd_V1_UploadCheckpointResponse {
    var upload: CheckpointUpload? = nil
    do {
      for try await message in request {
        switch message.part {
        case .header(let header):
          guard upload == nil else { throw InvalidRequest("the header must be the first message, and only the first") }
          upload = try registry.beginUpload(try CheckpointMapping.header(header))
        case .chunk(let bytes):
          guard let upload else { throw InvalidRequest("the first message must be the header") }
          try upload.append(bytes)
        case nil:
          throw InvalidRequest("a message holds neither header nor chunk")
        }
      }
      guard let upload else { throw InvalidRequest("no header was sent") }
      let record = try await Task.detached { try upload.finish() }.value
      logger.info("checkpoint uploaded", metadata: ["version": "\(record.version)", "bytes": "\(record.sizeBytes)"])
      return .with { $0.checkpoint = CheckpointMapping.info(record, state: .registered) }
    } catch {
      upload?.abort()
      throw error
    }
  }

  func activateCheckpoint(
    request: Alignd_V1_ActivateCheckpointRequest, context: ServerContext
  ) async throws -> Alignd_V1_RoleState {
    let role = try CheckpointMapping.role(request.role)
    guard !request.version.isEmpty else { throw InvalidRequest("version is empty") }
    return try await rolloutCall {
      try await rollout.activate(
        role: role, version: request.version, canaryPercent: Int(request.canaryPercent), operationID: request.operationID)
    }
  }

  func promoteCanary(
    request: Alignd_V1_PromoteCanaryRequest, context: ServerContext
  ) async throws -> Alignd_V1_RoleState {
    let role = try CheckpointMapping.role(request.role)
    return try await rolloutCall { try await rollout.promote(role: role, operationID: request.operationID) }
  }

  func rollback(request: Alignd_V1_RollbackRequest, context: ServerContext) async throws -> Alignd_V1_RoleState {
    let role = try CheckpointMapping.role(request.role)
    return try await rolloutCall {
      try await rollout.rollback(role: role, toVersion: request.toVersion, operationID: request.operationID)
    }
  }

  private func rolloutCall(_ operation: () async throws -> RolloutOutcome) async throws -> Alignd_V1_RoleState {
    guard status.phase == .serving else {
      throw ServingError.unavailable("checkpoints can be activated only while serving (not loading or draining)")
    }
    return CheckpointMapping.roleState(try await operation())
  }

  func listCheckpoints(
    request: Alignd_V1_ListCheckpointsRequest, context: ServerContext
  ) async throws -> Alignd_V1_ListCheckpointsResponse {
    let roles: [CheckpointRole] =
      request.role == .unspecified ? CheckpointRole.allCases : [try CheckpointMapping.role(request.role)]
    var infos: [Alignd_V1_CheckpointInfo] = []
    for role in roles {
      let records = try registry.checkpoints(role: role)
      let assignment = await rollout.assignment(role)
      for record in records {
        let state: Alignd_V1_CheckpointState
        var failure: String? = nil
        if record.version == assignment.activeVersion {
          state = .active
        } else if record.version == assignment.canaryVersion {
          state = .canary
        } else if let failed = await rollout.failure(of: record.version) {
          state = .failed
          failure = failed
        } else if record.version == assignment.previousVersion {
          state = .retired
        } else {
          state = .registered
        }
        let evaluation = await rollout.evaluation(of: record.version)
        var info = CheckpointMapping.info(record, state: state, failure: failure, evaluation: evaluation)
        if let decision = await rollout.canaryDecision(of: record.version) { info.canaryDecision = decision }
        infos.append(info)
      }
    }
    return .with { $0.checkpoints = infos }
  }

  func getStatus(request: Alignd_V1_GetStatusRequest, context: ServerContext) async throws -> Alignd_V1_GetStatusResponse {
    await statusResponse()
  }

  /// The server's status: serving state, versions and canary per role, queues, loaded bytes,
  /// feedback counts (GetStatus, and `GET /v1/admin/status` over HTTP).
  func statusResponse() async -> Alignd_V1_GetStatusResponse {
    let phase = status.phase
    let counts = (try? await feedback.counts()) ?? [:]
    let comparison = await rollout.lastComparison
    let decisions = await rollout.canaryDecisions()
    let automatic = rollout.canaryPolicy.enabled
    return .with { response in
      if let comparison { response.canaryAnalyses = [CanaryMapping.analysis(comparison, automatic: automatic)] }
      response.canaryDecisions = decisions.map(CanaryMapping.decision)
      response.completionSampling = CanaryMapping.sampling(models.sampler)
      switch phase {
      case .loading, .failed: response.state = .loading
      case .serving: response.state = .serving
      case .draining: response.state = .draining
      }
      response.serverVersion = AlignServerApp.version
      response.engineKernels = .with {
        $0.kernels = models.engineKernels.rawValue
        $0.supported = KernelSet.supported.map(\.rawValue)
        $0.cpu = CPUFeatures.current.summary
      }
      response.uptimeSeconds = UInt64(max(0, status.uptime.components.seconds))
      let assignments: [(Alignd_V1_ModelRole, RoleAssignment)] = [
        (.policy, models.policies.assignment), (.reward, models.rewards.assignment), (.safety, models.safety.assignment),
      ]
      let judge = models.policy.map { "judge:\($0.version)" }
      for (role, assignment) in assignments {
        guard let active = assignment.activeVersion ?? (role == .reward ? judge : nil) else { continue }
        response.roles.append(.with {
          $0.role = role
          $0.activeVersion = active
          $0.canaryVersion = assignment.canaryVersion ?? ""
          $0.canaryPercent = UInt32(assignment.canaryPercent)
          $0.previousVersion = assignment.previousVersion ?? ""
        })
      }
      response.loadedModelBytes = models.loadedBytes
      for (kind, count) in counts { response.feedbackCounts[kind.rawValue] = UInt64(count) }
      for snapshot in models.policies.loaded {
        let stats = snapshot.loop.stats
        let teacher = snapshot.teacherForcing.stats
        response.queues.append(.with {
          $0.model = snapshot.version
          $0.queued = UInt32(stats.queued)
          $0.capacity = UInt32(stats.capacity)
          $0.running = UInt32(stats.runningSequences)
          $0.batches = teacher.batches
          $0.largestBatch = UInt32(teacher.largestBatch)
        })
        if let judge = snapshot.judgeIfCreated {
          response.queues.append(Self.rewardQueue(judge))
        }
      }
      for snapshot in models.rewards.loaded { response.queues.append(Self.rewardQueue(snapshot.scorer)) }
      for snapshot in models.safety.loaded {
        for case let backend as any BatchedSafetyBackend in snapshot.checker.backends {
          let (queued, stats) = backend.batchQueue
          response.queues.append(.with {
            $0.model = "safety:\(backend.name):\(backend.version)"
            $0.queued = UInt32(queued)
            $0.batches = stats.batches
            $0.largestBatch = UInt32(stats.largestBatch)
            $0.items = stats.items
          })
        }
      }
    }
  }
}

extension AdminService {
  /// A reward scorer's dynamic-batching counters.
  static func rewardQueue(_ scorer: RewardScorer) -> Alignd_V1_QueueStatus {
    let stats = scorer.stats
    return .with {
      $0.model = "reward:\(scorer.version)"
      $0.queued = UInt32(scorer.queued)
      $0.batches = stats.batches
      $0.largestBatch = UInt32(stats.largestBatch)
      $0.items = stats.itemsScored
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
