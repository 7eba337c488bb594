import AlignAPI
import AlignServing
import GRPCCore

/// alignd.v1.Admin: feedback in and out, checkpoint rollout, status.
///
/// The feedback store and the checkpoint registry are not built yet: those RPCs answer
/// UNIMPLEMENTED naming what is missing, never a fake result. GetStatus is real.
struct AdminService: Alignd_V1_Admin.SimpleServiceProtocol {
  let status: ServingStatus
  let models: ModelHost

  static func missing(_ what: String) -> RPCError {
    RPCError(code: .unimplemented, message: "\(what) is not implemented yet in this alignd build")
  }

  func streamFeedback(
    request: RPCAsyncSequence<Alignd_V1_FeedbackRecord, any Error>,
    response: RPCWriter<Alignd_V1_FeedbackAck>, context: ServerContext
  ) async throws {
    throw Self.missing("StreamFeedback (the durable feedback store: SQLite/PostgreSQL)")
  }

  func exportFeedback(
    request: Alignd_V1_ExportFeedbackRequest, response: RPCWriter<Alignd_V1_StoredFeedback>,
    context: ServerContext
  ) async throws {
    throw Self.missing("ExportFeedback (the durable feedback store: SQLite/PostgreSQL)")
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
