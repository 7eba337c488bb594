import Foundation

/// The serving role a checkpoint is uploaded for. The raw value names the role's folder in the
/// registry and its spelling in `checkpoint.json`.
public enum CheckpointRole: String, Sendable, Hashable, CaseIterable, Codable {
  case policy
  case reward
  case safety

  /// The formats a checkpoint of this role may have.
  public var allowedFormats: [CheckpointFormat] {
    switch self {
    case .policy: [.gguf, .hfSafetensors]
    case .reward: [.hfSafetensors, .rewardHead, .embeddingHead]
    case .safety: [.gguf, .hfSafetensors, .embeddingHead]
    }
  }

  /// Parses a role name ("policy", "reward", "safety").
  ///
  /// - Throws: `CheckpointRegistryError.unknownRole` for any other string.
  public init(parsing name: String) throws(CheckpointRegistryError) {
    guard let role = CheckpointRole(rawValue: name) else { throw .unknownRole(name) }
    self = role
  }
}

/// How the uploaded bytes are laid out.
public enum CheckpointFormat: String, Sendable, Hashable, CaseIterable, Codable {
  /// A single GGUF (v2 or v3) file, stored as `model.gguf`.
  case gguf
  /// A tar of a Hugging Face model folder (config.json, *.safetensors, tokenizer files),
  /// extracted into the folder `model/`.
  case hfSafetensors = "hf-safetensors"
  /// A tar of a reward-head folder (`reward-head.safetensors` and `manifest.json`), extracted
  /// into the folder `model/`.
  case rewardHead = "reward-head"
  /// A tar of a trained judge's folder (`alignd.embedding-head`: `manifest.json`,
  /// `weights.safetensors`, for safety optionally `safety-policy.json`), extracted into `model/`.
  case embeddingHead = "embedding-head"

  /// Whether the upload is a tar archive that the registry extracts.
  public var isArchive: Bool { self != .gguf }

  /// Parses a format name ("gguf", "hf-safetensors", "reward-head", "embedding-head").
  ///
  /// - Throws: `CheckpointRegistryError.unknownFormat` for any other string.
  public init(parsing name: String) throws(CheckpointRegistryError) {
    guard let format = CheckpointFormat(rawValue: name) else { throw .unknownFormat(name) }
    self = format
  }
}

/// What a client declares before sending a checkpoint's bytes (the proto's `CheckpointHeader`,
/// without protobuf types).
public struct CheckpointHeader: Sendable, Hashable {
  /// The role the checkpoint serves.
  public var role: CheckpointRole
  /// A plain name: 1–100 characters of `A–Z a–z 0–9 . _ -`, not starting with '.', without "..".
  public var name: String
  /// The layout of the bytes.
  public var format: CheckpointFormat
  /// The exact number of bytes that will follow.
  public var sizeBytes: UInt64
  /// The lower-case hex SHA-256 of all the bytes (upper-case is accepted and lower-cased).
  public var sha256: String
  /// Free-form labels kept with the checkpoint.
  public var labels: [String: String]

  /// Creates a header.
  public init(
    role: CheckpointRole, name: String, format: CheckpointFormat, sizeBytes: UInt64,
    sha256: String, labels: [String: String] = [:]
  ) {
    self.role = role
    self.name = name
    self.format = format
    self.sizeBytes = sizeBytes
    self.sha256 = sha256
    self.labels = labels
  }
}

/// A checkpoint stored in the registry (the proto's `CheckpointInfo`, less the serving state,
/// which the registry does not know).
public struct CheckpointRecord: Sendable, Hashable {
  /// "name@<first 12 hex of sha256>", unique within a role.
  public var version: String
  /// The checkpoint's name as uploaded.
  public var name: String
  /// The role it was uploaded for.
  public var role: CheckpointRole
  /// Its format.
  public var format: CheckpointFormat
  /// The SHA-256 of the uploaded bytes (lower-case hex).
  public var sha256: String
  /// The size of the uploaded bytes.
  public var sizeBytes: UInt64
  /// When it entered the registry, in milliseconds since 1970.
  public var createdAtUnixMs: Int64
  /// The labels given at upload.
  public var labels: [String: String]
  /// The model to load: the file `model.gguf` for GGUF, the folder `model` for archives.
  public var modelPath: String
  /// The registry entry folder holding the model and `checkpoint.json`.
  public var entryPath: String

  /// When it entered the registry.
  public var createdAt: Date { Date(timeIntervalSince1970: Double(createdAtUnixMs) / 1000) }
}

/// Bounds the registry enforces on uploads.
public struct CheckpointRegistryLimits: Sendable, Hashable {
  /// Largest declared upload size (larger ones get `resourceExhausted`).
  public var maxUploadBytes: UInt64 = 32 << 30
  /// Largest total size of the regular files extracted from one archive.
  public var maxExtractedBytes: UInt64 = 32 << 30
  /// Most entries (files and folders) in one archive.
  public var maxArchiveEntries: Int = 10_000
  /// Most uploads in progress at once; each holds a staging file.
  public var maxConcurrentUploads: Int = 4
  /// Most labels on one checkpoint.
  public var maxLabels: Int = 64
  /// Longest label key, in UTF-8 bytes.
  public var maxLabelKeyBytes: Int = 128
  /// Longest label value, in UTF-8 bytes.
  public var maxLabelValueBytes: Int = 1024

  /// The default bounds.
  public static let `default` = CheckpointRegistryLimits()

  /// Creates the default bounds; adjust fields as needed.
  public init() {}
}
