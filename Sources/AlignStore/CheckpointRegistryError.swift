/// Errors of the checkpoint registry. Each message names the field or entry at fault, and what
/// was expected against what was found; `category` tells the server which status to answer with.
public enum CheckpointRegistryError: Error, Sendable, Equatable, CustomStringConvertible {
  /// How the server should report an error (the gRPC status it maps to).
  public enum Category: Sendable, Hashable {
    /// The client sent something wrong (`INVALID_ARGUMENT`).
    case invalidArgument
    /// A size bound or the disk is exhausted (`RESOURCE_EXHAUSTED`).
    case resourceExhausted
    /// The operation does not fit the registry's current state (`FAILED_PRECONDITION`).
    case failedPrecondition
    /// The named checkpoint does not exist (`NOT_FOUND`).
    case notFound
    /// The server's own file system failed (`INTERNAL`).
    case `internal`
  }

  /// `name` breaks the naming rules.
  case invalidName(name: String, reason: String)
  /// A role name that is not policy, reward or safety.
  case unknownRole(String)
  /// A format name that is not gguf, hf-safetensors or reward-head.
  case unknownFormat(String)
  /// The role does not accept the format.
  case formatNotAllowed(role: CheckpointRole, format: CheckpointFormat)
  /// `sha256` is not 64 hex digits.
  case invalidSHA256(String)
  /// `size_bytes` is zero.
  case emptyUpload
  /// `size_bytes` is above the configured maximum.
  case uploadTooLarge(declared: UInt64, limit: UInt64)
  /// A label breaks the label bounds.
  case invalidLabels(reason: String)
  /// A version string is not "name@<12 hex>".
  case invalidVersion(String)
  /// More bytes arrived than `size_bytes` declared.
  case sizeExceeded(declared: UInt64, received: UInt64)
  /// The upload ended before `size_bytes` arrived.
  case truncated(declared: UInt64, received: UInt64)
  /// The bytes' SHA-256 is not the declared one.
  case sha256Mismatch(declared: String, actual: String)
  /// The archive is malformed or holds an entry the registry refuses.
  case invalidArchive(entry: String?, reason: String)
  /// The archive extracts to more bytes or entries than allowed.
  case archiveTooLarge(reason: String)
  /// The bytes are not what the format says (no GGUF magic, no config.json, ...).
  case invalidContent(format: CheckpointFormat, reason: String)
  /// Too many uploads are in progress.
  case tooManyUploads(limit: Int)
  /// The disk (or quota) is full.
  case diskFull(path: String)
  /// The same version exists in the role with different content.
  case versionConflict(version: String, reason: String)
  /// The upload was already finished, aborted or failed.
  case uploadClosed(state: String)
  /// No checkpoint has this version in this role.
  case notFound(role: CheckpointRole, version: String)
  /// A registry entry's `checkpoint.json` cannot be read.
  case corruptEntry(path: String, detail: String)
  /// A file-system operation failed.
  case io(operation: String, path: String, detail: String)

  /// The status class of this error.
  public var category: Category {
    switch self {
    case .invalidName, .unknownRole, .unknownFormat, .formatNotAllowed, .invalidSHA256, .emptyUpload,
      .invalidLabels, .invalidVersion, .sizeExceeded, .truncated, .sha256Mismatch, .invalidArchive,
      .invalidContent:
      .invalidArgument
    case .uploadTooLarge, .archiveTooLarge, .tooManyUploads, .diskFull:
      .resourceExhausted
    case .versionConflict, .uploadClosed:
      .failedPrecondition
    case .notFound:
      .notFound
    case .corruptEntry, .io:
      .internal
    }
  }

  public var description: String {
    switch self {
    case .invalidName(let name, let reason):
      "name \(quoted(name)): \(reason)"
    case .unknownRole(let role):
      "role \(quoted(role)): expected one of policy, reward, safety"
    case .unknownFormat(let format):
      "format \(quoted(format)): expected one of gguf, hf-safetensors, reward-head"
    case .formatNotAllowed(let role, let format):
      "format \(format.rawValue) is not allowed for role \(role.rawValue) (expected one of "
        + role.allowedFormats.map(\.rawValue).joined(separator: ", ") + ")"
    case .invalidSHA256(let value):
      "sha256 \(quoted(value)): expected 64 hexadecimal digits"
    case .emptyUpload:
      "size_bytes: expected more than 0"
    case .uploadTooLarge(let declared, let limit):
      "size_bytes: \(declared) is above the limit of \(limit) bytes"
    case .invalidLabels(let reason):
      "labels: \(reason)"
    case .invalidVersion(let version):
      "version \(quoted(version)): expected name@<12 lower-case hex digits>"
    case .sizeExceeded(let declared, let received):
      "size_bytes: declared \(declared), but \(received) bytes were sent"
    case .truncated(let declared, let received):
      "upload truncated: size_bytes declared \(declared), received \(received)"
    case .sha256Mismatch(let declared, let actual):
      "sha256: declared \(declared), actual \(actual)"
    case .invalidArchive(let entry, let reason):
      if let entry { "archive entry \(quoted(entry)): \(reason)" } else { "archive: \(reason)" }
    case .archiveTooLarge(let reason):
      "archive too large: \(reason)"
    case .invalidContent(let format, let reason):
      "\(format.rawValue) checkpoint: \(reason)"
    case .tooManyUploads(let limit):
      "too many uploads in progress (limit \(limit))"
    case .diskFull(let path):
      "no space left on the device holding \(path)"
    case .versionConflict(let version, let reason):
      "version \(version) already exists: \(reason)"
    case .uploadClosed(let state):
      "upload is already \(state)"
    case .notFound(let role, let version):
      "no \(role.rawValue) checkpoint with version \(quoted(version))"
    case .corruptEntry(let path, let detail):
      "checkpoint registry entry \(path) is damaged: \(detail)"
    case .io(let operation, let path, let detail):
      "\(operation) \(path): \(detail)"
    }
  }
}

/// A string in double quotes with control characters escaped, so odd names read unambiguously.
private func quoted(_ string: String) -> String {
  var out = "\""
  for scalar in string.unicodeScalars.prefix(200) {
    switch scalar {
    case "\"": out += "\\\""
    case "\\": out += "\\\\"
    case _ where scalar.value < 0x20 || scalar.value == 0x7f:
      out += "\\u{\(String(scalar.value, radix: 16))}"
    default: out.unicodeScalars.append(scalar)
    }
  }
  if string.unicodeScalars.count > 200 { out += "…" }
  return out + "\""
}
