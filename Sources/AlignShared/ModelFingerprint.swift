import Crypto
import Foundation

/// The identity of a model on disk: its name, its SHA-256 and its size, and the version string
/// every answer is stamped with, `<name>@<first 12 hex digits of the SHA-256>`.
///
/// One format for every role: a GGUF file or a Hugging Face folder has the same version whether
/// it is loaded as the policy, a reward model, a safety model or a reward head's base, and the
/// checkpoint registry builds its versions (from the uploaded bytes' SHA-256) with the same
/// ``version(name:sha256:)``.
///
/// - A file: the SHA-256 of its bytes; the name is the file name without `.gguf`.
/// - A folder: the SHA-256 over its regular files (not hidden ones, not subfolders) in name
///   order, each contributing `name \0 size \0` and the SHA-256 of its bytes, so renames and
///   content changes both show; the name is the folder's name.
public struct ModelFingerprint: Sendable, Equatable {
  /// The model's name: the file name without `.gguf`, or the folder's name.
  public let name: String
  /// Lower-case hex SHA-256.
  public let sha256: String
  /// Bytes of the file, or of the folder's files.
  public let sizeBytes: UInt64

  /// `<name>@<first 12 hex digits of the SHA-256>`.
  public var version: String { Self.version(name: name, sha256: sha256) }

  /// The version string of a model named `name` whose bytes hash to `sha256`.
  public static func version(name: String, sha256: String) -> String {
    name + "@" + sha256.prefix(12)
  }

  /// The name a model at `path` goes by: the file name without `.gguf`, or the folder's name.
  public static func name(path: String) -> String {
    var name = URL(fileURLWithPath: path).standardizedFileURL.lastPathComponent
    if name.hasSuffix(".gguf") { name.removeLast(5) }
    return name
  }

  /// Hashes the file or folder at `path` (streamed in 4 MiB chunks: model files do not fit in
  /// memory twice).
  /// - Throws: ``ModelFileError`` when the path is missing or a file cannot be read.
  public init(path: String) throws(ModelFileError) {
    var isDirectory: ObjCBool = false
    guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
      throw ModelFileError("cannot open the model \(path): no such file or folder")
    }
    var hasher = SHA256()
    var size: UInt64 = 0
    if isDirectory.boolValue {
      let names: [String]
      do {
        names = try FileManager.default.contentsOfDirectory(atPath: path).filter { !$0.hasPrefix(".") }.sorted()
      } catch {
        throw ModelFileError("cannot list the model folder \(path): \(error)")
      }
      for name in names {
        let file = URL(fileURLWithPath: path).appendingPathComponent(name).path
        var fileIsDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: file, isDirectory: &fileIsDirectory), !fileIsDirectory.boolValue else {
          continue
        }
        var fileHasher = SHA256()
        let fileSize = try Self.hashFile(file, into: &fileHasher)
        hasher.update(data: Data(name.utf8) + Data([0]) + Data("\(fileSize)".utf8) + Data([0]))
        hasher.update(data: Data(fileHasher.finalize()))
        size += fileSize
      }
    } else {
      size = try Self.hashFile(path, into: &hasher)
    }
    self.name = Self.name(path: path)
    self.sha256 = hasher.finalize().map { String(format: "%02x", $0) }.joined()
    self.sizeBytes = size
  }

  private static func hashFile(_ path: String, into hasher: inout SHA256) throws(ModelFileError) -> UInt64 {
    guard let handle = FileHandle(forReadingAtPath: path) else {
      throw ModelFileError("cannot open the model file \(path)")
    }
    defer { try? handle.close() }
    var size: UInt64 = 0
    while true {
      let chunk: Data
      do {
        chunk = try handle.read(upToCount: 4 << 20) ?? Data()
      } catch {
        throw ModelFileError("cannot read the model file \(path): \(error)")
      }
      if chunk.isEmpty { break }
      hasher.update(data: chunk)
      size += UInt64(chunk.count)
    }
    return size
  }
}

/// A model file or folder that cannot be read.
public struct ModelFileError: Error, CustomStringConvertible, Equatable {
  public var description: String
  public init(_ description: String) { self.description = description }
}
