import AlignAPI
import AlignStore
import Foundation
import GRPCCore

/// Conversions between the Admin API's checkpoint messages and the registry's types.
enum CheckpointMapping {
  static func role(_ role: Alignd_V1_ModelRole, field: String = "role") throws -> CheckpointRole {
    switch role {
    case .policy: return .policy
    case .reward: return .reward
    case .safety: return .safety
    case .unspecified, .UNRECOGNIZED:
      throw RPCError(code: .invalidArgument, message: "\(field) must be POLICY, REWARD or SAFETY")
    }
  }

  static func role(_ role: CheckpointRole) -> Alignd_V1_ModelRole {
    switch role {
    case .policy: return .policy
    case .reward: return .reward
    case .safety: return .safety
    }
  }

  static func format(_ format: Alignd_V1_CheckpointFormat) throws -> CheckpointFormat {
    switch format {
    case .gguf: return .gguf
    case .hfSafetensorsTar: return .hfSafetensors
    case .rewardHead: return .rewardHead
    case .unspecified, .UNRECOGNIZED:
      throw RPCError(code: .invalidArgument, message: "format must be GGUF, HF_SAFETENSORS_TAR or REWARD_HEAD")
    }
  }

  static func format(_ format: CheckpointFormat) -> Alignd_V1_CheckpointFormat {
    switch format {
    case .gguf: return .gguf
    case .hfSafetensors: return .hfSafetensorsTar
    case .rewardHead: return .rewardHead
    }
  }

  static func header(_ header: Alignd_V1_CheckpointHeader) throws -> CheckpointHeader {
    CheckpointHeader(
      role: try role(header.role, field: "header.role"), name: header.name, format: try format(header.format),
      sizeBytes: header.sizeBytes, sha256: header.sha256, labels: header.labels)
  }

  static func info(_ record: CheckpointRecord, state: Alignd_V1_CheckpointState, failure: String? = nil) -> Alignd_V1_CheckpointInfo {
    .with {
      $0.version = record.version
      $0.role = role(record.role)
      $0.name = record.name
      $0.format = format(record.format)
      $0.sizeBytes = record.sizeBytes
      $0.sha256 = record.sha256
      $0.uploadedAtUnixMs = record.createdAtUnixMs
      $0.state = state
      $0.labels = record.labels
      if let failure { $0.failure = failure }
    }
  }

  static func roleState(_ outcome: RolloutOutcome) -> Alignd_V1_RoleState {
    .with {
      $0.role = role(outcome.role)
      $0.activeVersion = outcome.state.active ?? ""
      $0.canaryVersion = outcome.state.canary ?? ""
      $0.canaryPercent = UInt32(outcome.state.canaryPercent)
      $0.previousVersion = outcome.state.previous ?? ""
      $0.gates = outcome.gates.map { gate in
        .with {
          $0.name = gate.name
          $0.passed = gate.passed
          $0.detail = gate.detail
        }
      }
    }
  }

  /// The gRPC status for a registry error.
  static func rpcError(_ error: CheckpointRegistryError) -> RPCError {
    let code: RPCError.Code
    switch error.category {
    case .invalidArgument: code = .invalidArgument
    case .resourceExhausted: code = .resourceExhausted
    case .failedPrecondition: code = .failedPrecondition
    case .notFound: code = .notFound
    case .internal: code = .internalError
    }
    return RPCError(code: code, message: error.description)
  }

  /// The gRPC status for a rollout error (gate verdicts in the message).
  static func rpcError(_ error: RolloutError) -> RPCError {
    let code: RPCError.Code
    switch error.kind {
    case .notFound: code = .notFound
    case .invalidArgument: code = .invalidArgument
    case .failedPrecondition: code = .failedPrecondition
    case .unavailable: code = .unavailable
    }
    var message = error.description
    if !error.gates.isEmpty {
      message += " [gates: " + error.gates.map { "\($0.name) \($0.passed ? "passed" : "FAILED")" }.joined(separator: ", ") + "]"
    }
    return RPCError(code: code, message: message)
  }
}
