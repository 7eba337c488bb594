import Crypto
import Foundation

/// SHA-256 digests of model files, streamed in 4 MiB chunks (model files do not fit comfortably in
/// memory twice).
enum FileDigest {
  /// Lower-case hex SHA-256 of the file at `path`.
  /// - Throws: ``ModelLoadError`` when the file cannot be read.
  static func sha256(path: String) throws -> String {
    var hasher = SHA256()
    try feed(path: path, into: &hasher)
    return hex(hasher.finalize())
  }

  /// Lower-case hex SHA-256 over the named files of a folder, in the given order, each preceded by its
  /// name and size (so moving bytes between files changes the digest).
  /// - Throws: ``ModelLoadError`` when a file cannot be read.
  static func sha256(folder: String, files: [String]) throws -> String {
    var hasher = SHA256()
    for name in files {
      let path = URL(fileURLWithPath: folder).appendingPathComponent(name).path
      let size = (try? FileManager.default.attributesOfItem(atPath: path)[.size] as? NSNumber)??.uint64Value ?? 0
      hasher.update(data: Data("\(name)\n\(size)\n".utf8))
      try feed(path: path, into: &hasher)
    }
    return hex(hasher.finalize())
  }

  private static func feed(path: String, into hasher: inout SHA256) throws {
    guard let handle = FileHandle(forReadingAtPath: path) else {
      throw ModelLoadError("cannot open \(path)")
    }
    defer { try? handle.close() }
    while true {
      let chunk: Data
      do {
        chunk = try handle.read(upToCount: 4 << 20) ?? Data()
      } catch {
        throw ModelLoadError("cannot read \(path): \(error)")
      }
      if chunk.isEmpty { break }
      hasher.update(data: chunk)
    }
  }

  static func hex(_ digest: some Sequence<UInt8>) -> String {
    digest.map { String(format: "%02x", $0) }.joined()
  }
}
