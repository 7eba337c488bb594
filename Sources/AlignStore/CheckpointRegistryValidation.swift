import Foundation

#if canImport(Glibc)
  import Glibc
#elseif canImport(Musl)
  import Musl
#elseif canImport(Darwin)
  import Darwin
#endif

/// Checks on what clients declare and upload. Every check throws a `CheckpointRegistryError`
/// naming the field at fault.
public enum CheckpointValidation {
  /// Longest checkpoint name.
  public static let maxNameCharacters = 100

  /// Checks a checkpoint name: 1–100 characters of `A–Z a–z 0–9 . _ -`, not starting with '.',
  /// without "..". Such a name is one plain path component, so it cannot leave the registry.
  public static func validateName(_ name: String) throws(CheckpointRegistryError) {
    guard !name.isEmpty else { throw .invalidName(name: name, reason: "must not be empty") }
    guard name.unicodeScalars.count <= maxNameCharacters else {
      throw .invalidName(name: name, reason: "longer than \(maxNameCharacters) characters")
    }
    if name.hasPrefix("/") { throw .invalidName(name: name, reason: "must not be an absolute path") }
    if name.contains("/") || name.contains("\\") {
      throw .invalidName(name: name, reason: "must not contain path separators")
    }
    if name.contains("..") { throw .invalidName(name: name, reason: "must not contain \"..\"") }
    if name.hasPrefix(".") { throw .invalidName(name: name, reason: "must not start with '.'") }
    if let bad = name.unicodeScalars.first(where: { !isNameScalar($0) }) {
      throw .invalidName(
        name: name,
        reason: "character U+\(String(format: "%04X", bad.value)) is not allowed (only A-Z a-z 0-9 . _ -)")
    }
  }

  /// Checks a hex SHA-256 and returns it in lower case.
  public static func normalizedSHA256(_ value: String) throws(CheckpointRegistryError) -> String {
    guard value.utf8.count == 64, value.utf8.allSatisfy(isHexDigit) else { throw .invalidSHA256(value) }
    return value.lowercased()
  }

  /// Checks a version string ("name@<12 lower-case hex>") so that it is one safe path component.
  public static func validateVersion(_ version: String) throws(CheckpointRegistryError) {
    guard let at = version.lastIndex(of: "@") else { throw .invalidVersion(version) }
    let name = String(version[..<at])
    let hash = version[version.index(after: at)...]
    guard hash.utf8.count == 12,
      hash.utf8.allSatisfy({ isHexDigit($0) && !(UInt8(ascii: "A")...UInt8(ascii: "F")).contains($0) })
    else { throw .invalidVersion(version) }
    do {
      try validateName(name)
    } catch {
      throw .invalidVersion(version)
    }
  }

  /// Checks a whole header against the limits; returns it with the sha256 in lower case.
  public static func validate(_ header: CheckpointHeader, limits: CheckpointRegistryLimits)
    throws(CheckpointRegistryError)
    -> CheckpointHeader
  {
    var header = header
    try validateName(header.name)
    guard header.role.allowedFormats.contains(header.format) else {
      throw .formatNotAllowed(role: header.role, format: header.format)
    }
    guard header.sizeBytes > 0 else { throw .emptyUpload }
    guard header.sizeBytes <= limits.maxUploadBytes else {
      throw .uploadTooLarge(declared: header.sizeBytes, limit: limits.maxUploadBytes)
    }
    header.sha256 = try normalizedSHA256(header.sha256)
    guard header.labels.count <= limits.maxLabels else {
      throw .invalidLabels(reason: "\(header.labels.count) labels, at most \(limits.maxLabels) allowed")
    }
    for (key, value) in header.labels.sorted(by: { $0.key < $1.key }) {
      guard !key.isEmpty else { throw .invalidLabels(reason: "a key is empty") }
      guard key.utf8.count <= limits.maxLabelKeyBytes else {
        throw .invalidLabels(reason: "key \(key.prefix(40))… is longer than \(limits.maxLabelKeyBytes) bytes")
      }
      guard value.utf8.count <= limits.maxLabelValueBytes else {
        throw .invalidLabels(reason: "value of \(key) is longer than \(limits.maxLabelValueBytes) bytes")
      }
    }
    return header
  }

  private static func isNameScalar(_ scalar: Unicode.Scalar) -> Bool {
    switch scalar {
    case "A"..."Z", "a"..."z", "0"..."9", ".", "_", "-": true
    default: false
    }
  }

  private static func isHexDigit(_ byte: UInt8) -> Bool {
    (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte) || (UInt8(ascii: "a")...UInt8(ascii: "f")).contains(byte)
      || (UInt8(ascii: "A")...UInt8(ascii: "F")).contains(byte)
  }
}

/// Structural checks of an uploaded checkpoint's content, so that bytes that are not what the
/// format says are refused at upload rather than at activation. The engine's loaders still do
/// the full checks (architecture, shapes, finite weights) when a checkpoint is activated.
enum CheckpointContentCheck {
  /// Largest config.json / manifest.json read.
  static let maxJSONBytes = 16 << 20
  /// Largest safetensors JSON header accepted (the engine's own bound is of this order).
  static let maxSafetensorsHeaderBytes: UInt64 = 100 << 20

  /// A GGUF file: "GGUF" magic, little-endian, version 2 or 3.
  static func checkGGUF(at path: String) throws(CheckpointRegistryError) {
    let head = try readHead(path, count: 8)
    guard head.count == 8, head[0..<4].elementsEqual(Array("GGUF".utf8)) else {
      throw .invalidContent(format: .gguf, reason: "the file does not start with the GGUF magic")
    }
    let version = UInt32(head[4]) | UInt32(head[5]) << 8 | UInt32(head[6]) << 16 | UInt32(head[7]) << 24
    guard version == 2 || version == 3 else {
      throw .invalidContent(format: .gguf, reason: "GGUF version \(version), expected 2 or 3")
    }
  }

  /// A Hugging Face folder: config.json (a JSON object), at least one *.safetensors file and a
  /// tokenizer (tokenizer.json, tokenizer.model or vocab.json).
  static func checkHuggingFaceFolder(_ folder: String) throws(CheckpointRegistryError) {
    try checkJSONObject(folder + "/config.json", name: "config.json", format: .hfSafetensors)
    let names = try RegistryFS.contents(folder).filter { !$0.hasPrefix(".") }
    let weights = names.filter { $0.hasSuffix(".safetensors") }.sorted()
    guard !weights.isEmpty else {
      throw .invalidContent(format: .hfSafetensors, reason: "no *.safetensors file at the top of the folder")
    }
    for name in weights {
      try checkSafetensors(folder + "/" + name, name: name, format: .hfSafetensors)
    }
    let tokenizers = ["tokenizer.json", "tokenizer.model", "vocab.json"]
    guard tokenizers.contains(where: { RegistryFS.kind(folder + "/" + $0) == .file }) else {
      throw .invalidContent(
        format: .hfSafetensors, reason: "no tokenizer file (expected one of \(tokenizers.joined(separator: ", ")))")
    }
  }

  /// A reward head: reward-head.safetensors and manifest.json (a JSON object). What the manifest
  /// must say is the reward backend's concern, checked when the head is activated.
  static func checkRewardHead(_ folder: String) throws(CheckpointRegistryError) {
    try checkJSONObject(folder + "/manifest.json", name: "manifest.json", format: .rewardHead)
    try checkSafetensors(folder + "/reward-head.safetensors", name: "reward-head.safetensors", format: .rewardHead)
  }

  /// A trained judge: manifest.json (a JSON object), weights.safetensors and, when present,
  /// safety-policy.json (a JSON object). The manifest's meaning is checked when it is activated.
  static func checkEmbeddingHead(_ folder: String) throws(CheckpointRegistryError) {
    try checkJSONObject(folder + "/manifest.json", name: "manifest.json", format: .embeddingHead)
    try checkSafetensors(folder + "/weights.safetensors", name: "weights.safetensors", format: .embeddingHead)
    if RegistryFS.kind(folder + "/safety-policy.json") != .missing {
      try checkJSONObject(folder + "/safety-policy.json", name: "safety-policy.json", format: .embeddingHead)
    }
  }

  static func checkJSONObject(_ path: String, name: String, format: CheckpointFormat) throws(CheckpointRegistryError) {
    guard RegistryFS.kind(path) == .file else { throw .invalidContent(format: format, reason: "\(name) is missing") }
    guard try RegistryFS.fileSize(path) <= UInt64(maxJSONBytes) else {
      throw .invalidContent(format: format, reason: "\(name) is larger than \(maxJSONBytes) bytes")
    }
    let data = try RegistryFS.readSmallFile(path, limit: maxJSONBytes)
    guard (try? JSONSerialization.jsonObject(with: data)) is [String: Any] else {
      throw .invalidContent(format: format, reason: "\(name) is not a JSON object")
    }
  }

  /// A safetensors file: an 8-byte little-endian header length N, then N bytes of JSON object.
  static func checkSafetensors(_ path: String, name: String, format: CheckpointFormat) throws(CheckpointRegistryError) {
    guard RegistryFS.kind(path) == .file else { throw .invalidContent(format: format, reason: "\(name) is missing") }
    let size = try RegistryFS.fileSize(path)
    let head = try readHead(path, count: 9)
    guard head.count == 9 else {
      throw .invalidContent(format: format, reason: "\(name) is too short to be a safetensors file")
    }
    let headerLength = head[0..<8].reversed().reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
    guard headerLength >= 2, headerLength <= maxSafetensorsHeaderBytes, headerLength <= size - 8,
      head[8] == UInt8(ascii: "{")
    else {
      throw .invalidContent(
        format: format,
        reason: "\(name) is not a safetensors file (header length \(headerLength) in a file of \(size) bytes)")
    }
  }

  static func readHead(_ path: String, count: Int) throws(CheckpointRegistryError) -> [UInt8] {
    let fd = try RegistryFS.openForReading(path)
    defer { close(fd) }
    var bytes = [UInt8](repeating: 0, count: count)
    let read = try RegistryFS.withMutableBytes(&bytes) { (buffer) throws(CheckpointRegistryError) -> Int in
      try RegistryFS.readFully(fd, into: buffer, path: path)
    }
    return Array(bytes[0..<read])
  }
}
