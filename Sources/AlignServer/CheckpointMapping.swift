import AlignAPI
import AlignRollout
import AlignServing
import AlignStore
import Foundation

/// Conversions between the Admin API's checkpoint messages and the registry's types.
enum CheckpointMapping {
  /// The roles and formats of the wire and of the registry, side by side.
  static let roles: [(Alignd_V1_ModelRole, CheckpointRole)] = [(.policy, .policy), (.reward, .reward), (.safety, .safety)]
  static let formats: [(Alignd_V1_CheckpointFormat, CheckpointFormat)] = [
    (.gguf, .gguf), (.hfSafetensorsTar, .hfSafetensors), (.rewardHead, .rewardHead), (.embeddingHead, .embeddingHead),
  ]

  static func role(_ role: Alignd_V1_ModelRole, field: String = "role") throws -> CheckpointRole {
    guard let match = roles.first(where: { $0.0 == role }) else {
      throw InvalidRequest("\(field) must be POLICY, REWARD or SAFETY")
    }
    return match.1
  }

  static func role(_ role: CheckpointRole) -> Alignd_V1_ModelRole {
    roles.first { $0.1 == role }?.0 ?? .unspecified
  }

  static func format(_ format: Alignd_V1_CheckpointFormat) throws -> CheckpointFormat {
    guard let match = formats.first(where: { $0.0 == format }) else {
      throw InvalidRequest("format must be GGUF, HF_SAFETENSORS_TAR, REWARD_HEAD or EMBEDDING_HEAD")
    }
    return match.1
  }

  static func format(_ format: CheckpointFormat) -> Alignd_V1_CheckpointFormat {
    formats.first { $0.1 == format }?.0 ?? .unspecified
  }

  static func header(_ header: Alignd_V1_CheckpointHeader) throws -> CheckpointHeader {
    CheckpointHeader(
      role: try role(header.role, field: "header.role"), name: header.name, format: try format(header.format),
      sizeBytes: header.sizeBytes, sha256: header.sha256, labels: header.labels)
  }

  static func info(
    _ record: CheckpointRecord, state: Alignd_V1_CheckpointState, failure: String? = nil, evaluation: String? = nil
  ) -> Alignd_V1_CheckpointInfo {
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
      if let evaluation { $0.evaluation = evaluation }
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
}
