/// Errors raised by the inference engine.
///
/// Every error caused by a file names the file and what is wrong with it, so an operator can act on
/// the message without a debugger.
public enum EngineError: Error, Sendable, Equatable, CustomStringConvertible {
  /// The file could not be opened or mapped.
  case cannotOpen(path: String, reason: String)
  /// The file exists but its content violates the format (truncated, out-of-range offsets, bad JSON…).
  case malformedFile(path: String, reason: String)
  /// The file is well formed but uses a feature the engine does not implement.
  case unsupported(path: String, reason: String)
  /// A tensor the architecture needs is missing from the checkpoint.
  case missingTensor(path: String, name: String)
  /// A tensor has a shape that does not match the hyperparameters.
  case shapeMismatch(path: String, name: String, expected: [Int], found: [Int])
  /// A caller passed an argument that cannot be honoured (unknown sequence, empty batch, bad token id…).
  case invalidArgument(String)
  /// The KV cache has no free block left for the requested tokens.
  case cacheFull(requestedTokens: Int, freeTokens: Int)

  /// A human-readable description.
  public var description: String {
    switch self {
    case .cannotOpen(let path, let reason): return "cannot open \(path): \(reason)"
    case .malformedFile(let path, let reason): return "malformed file \(path): \(reason)"
    case .unsupported(let path, let reason): return "unsupported content in \(path): \(reason)"
    case .missingTensor(let path, let name): return "tensor \(name) missing from \(path)"
    case .shapeMismatch(let path, let name, let expected, let found):
      return "tensor \(name) in \(path) has shape \(found), expected \(expected)"
    case .invalidArgument(let message): return "invalid argument: \(message)"
    case .cacheFull(let requested, let free):
      return "KV cache full: \(requested) tokens requested, room for \(free)"
    }
  }
}
