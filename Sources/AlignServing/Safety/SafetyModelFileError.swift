import Foundation

/// Why a converted safety model file (tox-block, hatesonar) could not be loaded. Every case
/// names the file.
public enum SafetyModelFileError: Error, Equatable, CustomStringConvertible {
  /// The file could not be read.
  case unreadable(path: String, reason: String)
  /// The file is not a well-formed document of its format.
  case malformed(path: String, detail: String)
  /// The file is well formed but asks for a setting this implementation does not reproduce.
  case unsupported(path: String, detail: String)

  /// A one-line explanation for logs and error messages.
  public var description: String {
    switch self {
    case .unreadable(let path, let reason): "cannot read safety model \(path): \(reason)"
    case .malformed(let path, let detail): "malformed safety model \(path): \(detail)"
    case .unsupported(let path, let detail): "unsupported setting in safety model \(path): \(detail)"
    }
  }
}

/// Reads and decodes a JSON file, naming it in any error.
func decodeJSON<T: Decodable>(_ type: T.Type, at path: String) throws(SafetyModelFileError) -> T {
  let data: Data
  do {
    data = try Data(contentsOf: URL(fileURLWithPath: path))
  } catch {
    throw .unreadable(path: path, reason: "\(error)")
  }
  do {
    return try JSONDecoder().decode(T.self, from: data)
  } catch {
    throw .malformed(path: path, detail: "\(error)")
  }
}
