import AlignAPI
import AlignShared
import Crypto
import Foundation
import GRPCCore

/// Uploads a checkpoint (UploadCheckpoint): a GGUF file as is, a folder (Hugging Face model or
/// reward head) as a tar made on the fly; the header declares size and SHA-256, the server
/// verifies both before the checkpoint enters its registry.
public struct CheckpointUpload: Sendable {
  /// A `.gguf` file, or a folder.
  public var path: String
  public var role: Alignd_V1_ModelRole
  /// Letters, digits, '.', '_', '-'; default: the file or folder name without its extension.
  public var name: String?
  /// Bytes per message.
  public var chunkBytes = 1 << 20

  public init(path: String, role: Alignd_V1_ModelRole, name: String? = nil) {
    self.path = path
    self.role = role
    self.name = name
  }

  /// The format the server is told: a folder with `manifest.json` is a trained judge
  /// (`weights.safetensors`, an embedding head) or a reward head (`reward-head.safetensors`).
  public static func format(of path: String) throws(ClientError) -> Alignd_V1_CheckpointFormat {
    var isDirectory: ObjCBool = false
    guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
      throw ClientError("no such file or folder: \(path)")
    }
    guard isDirectory.boolValue else { return .gguf }
    let manifest = URL(fileURLWithPath: path).appendingPathComponent("manifest.json").path
    guard FileManager.default.fileExists(atPath: manifest) else { return .hfSafetensorsTar }
    let weights = URL(fileURLWithPath: path).appendingPathComponent("weights.safetensors").path
    return FileManager.default.fileExists(atPath: weights) ? .embeddingHead : .rewardHead
  }

  /// Uploads; `progress` hears the bytes sent and the total.
  /// - Throws: ``ClientError`` when the path cannot be read or tarred; the server's `RPCError`.
  public func run(
    on connector: some AdminConnector, progress: @escaping @Sendable (_ sent: UInt64, _ total: UInt64) -> Void = { _, _ in }
  ) async throws -> Alignd_V1_CheckpointInfo {
    let format = try Self.format(of: path)
    var file = path
    var temporary: String? = nil
    if format != .gguf {
      let tar = FileManager.default.temporaryDirectory.appendingPathComponent("alignctl-\(UUID().uuidString).tar").path
      do {
        try TarWriter.archive(directory: path, to: tar)
      } catch {
        throw ClientError("cannot tar \(path): \(error)")
      }
      file = tar
      temporary = tar
    }
    defer { if let temporary { try? FileManager.default.removeItem(atPath: temporary) } }
    let (size, digest) = try Self.measure(file)
    let header = Alignd_V1_CheckpointHeader.with {
      $0.role = role
      $0.name = name ?? URL(fileURLWithPath: path).deletingPathExtension().lastPathComponent
      $0.format = format
      $0.sizeBytes = size
      $0.sha256 = digest
    }
    let (uploadFile, chunk) = (file, max(4096, chunkBytes))
    return try await connector.withAdmin { admin, metadata in
      try await admin.uploadCheckpoint(metadata: metadata) { writer in
        try await writer.write(.with { $0.header = header })
        guard let handle = FileHandle(forReadingAtPath: uploadFile) else { throw ClientError("cannot read \(uploadFile)") }
        defer { try? handle.close() }
        var sent: UInt64 = 0
        while let data = try handle.read(upToCount: chunk), !data.isEmpty {
          try await writer.write(.with { $0.chunk = data })
          sent += UInt64(data.count)
          progress(sent, size)
        }
      }.checkpoint
    }
  }

  /// Size and SHA-256 of a file, read in chunks.
  public static func measure(_ path: String) throws -> (UInt64, String) {
    guard let handle = FileHandle(forReadingAtPath: path) else { throw ClientError("cannot read \(path)") }
    defer { try? handle.close() }
    var hasher = SHA256()
    var size: UInt64 = 0
    while let data = try handle.read(upToCount: 4 << 20), !data.isEmpty {
      hasher.update(data: data)
      size += UInt64(data.count)
    }
    return (size, hasher.finalize().map { String(format: "%02x", $0) }.joined())
  }
}
