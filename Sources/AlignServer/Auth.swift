import AlignShared
import Foundation
import GRPCCore

/// The API keys the server accepts, stored as SHA-256 hashes (never the keys themselves).
///
/// File format (``APIKeyFile``), one key per line (blank lines and `#` comments ignored):
/// ```
/// <role> <sha256 hex of the key> [name]
/// admin 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08 ops
/// ```
/// `alignctl keys add --role admin --name ops --file keys.txt` creates a random key, prints it once
/// and appends its hash.
public struct APIKeyStore: Sendable {
  public struct Entry: Sendable, Equatable {
    public var role: Role
    public var hash: [UInt8]
    public var name: String
  }

  public private(set) var entries: [Entry]

  public init(entries: [Entry]) { self.entries = entries }

  /// Parses a keys file.
  /// - Throws: ``ConfigurationError`` naming the file and line of a malformed entry.
  public init(contentsOf path: String) throws {
    guard let data = FileManager.default.contents(atPath: path),
      let text = String(data: data, encoding: .utf8)
    else {
      throw ConfigurationError("cannot read keys file \(path)")
    }
    try self.init(parsing: text, source: path)
  }

  /// Parses the text of a keys file; `source` names it in errors.
  public init(parsing text: String, source: String) throws {
    var entries: [Entry] = []
    for (index, rawLine) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
      let line = rawLine.trimmingCharacters(in: .whitespaces)
      if line.isEmpty || line.hasPrefix("#") { continue }
      let fields = line.split(whereSeparator: { $0 == " " || $0 == "\t" })
      guard fields.count >= 2, let role = Role(rawValue: String(fields[0])) else {
        throw ConfigurationError(
          "\(source):\(index + 1): expected '<infer|admin> <sha256-hex> [name]'")
      }
      guard let hash = Self.decodeHex(String(fields[1])), hash.count == 32 else {
        throw ConfigurationError("\(source):\(index + 1): the key hash must be 64 hex digits (SHA-256)")
      }
      let name = fields.count > 2 ? fields[2...].joined(separator: " ") : "key\(index + 1)"
      entries.append(Entry(role: role, hash: hash, name: name))
    }
    guard !entries.isEmpty else {
      throw ConfigurationError("\(source): no keys (a keys file must hold at least one key)")
    }
    self.entries = entries
  }

  /// A line for the keys file granting `role` to `key` (the format is ``APIKeyFile``'s).
  public static func line(for key: String, role: Role, name: String) -> String {
    APIKeyFile.line(for: key, role: role, name: name)
  }

  /// The entry matching a presented key, compared in constant time over every stored hash.
  public func authenticate(key: String) -> Entry? {
    let presented = APIKeyFile.hash(key: key)
    var match: Entry? = nil
    for entry in entries {
      // Accumulate differences without early exit so timing does not reveal matching prefixes
      // or which entry matched.
      var difference: UInt8 = 0
      for i in 0..<32 { difference |= entry.hash[i] ^ presented[i] }
      if difference == 0 && match == nil { match = entry }
    }
    return match
  }

  static func decodeHex(_ text: String) -> [UInt8]? {
    let chars = Array(text.lowercased().utf8)
    guard chars.count % 2 == 0 else { return nil }
    var bytes: [UInt8] = []
    bytes.reserveCapacity(chars.count / 2)
    func nibble(_ c: UInt8) -> UInt8? {
      switch c {
      case UInt8(ascii: "0")...UInt8(ascii: "9"): return c - UInt8(ascii: "0")
      case UInt8(ascii: "a")...UInt8(ascii: "f"): return c - UInt8(ascii: "a") + 10
      default: return nil
      }
    }
    var i = 0
    while i < chars.count {
      guard let high = nibble(chars[i]), let low = nibble(chars[i + 1]) else { return nil }
      bytes.append(high << 4 | low)
      i += 2
    }
    return bytes
  }
}

/// Which role each service requires. Health and reflection stay open so that standard probes
/// (Kubernetes gRPC probes, load balancers) and tooling work without a key.
public enum AccessPolicy {
  /// The role a method needs, or nil when it is open to anyone.
  public static func requiredRole(service: String) -> Role? {
    switch service {
    case "alignd.v1.Admin": return .admin
    case "grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection",
      "grpc.reflection.v1alpha.ServerReflection":
      return nil
    default: return .infer
    }
  }
}

/// Checks `authorization: Bearer <key>` against the key store and the method's required role.
///
/// Missing or unknown keys get UNAUTHENTICATED; a key whose role is too low gets PERMISSION_DENIED.
public struct AuthInterceptor: ServerInterceptor {
  let keys: APIKeyStore

  public init(keys: APIKeyStore) { self.keys = keys }

  public func intercept<Input: Sendable, Output: Sendable>(
    request: StreamingServerRequest<Input>,
    context: ServerContext,
    next: @Sendable (StreamingServerRequest<Input>, ServerContext) async throws -> StreamingServerResponse<Output>
  ) async throws -> StreamingServerResponse<Output> {
    guard let required = AccessPolicy.requiredRole(service: context.descriptor.service.fullyQualifiedService) else {
      return try await next(request, context)
    }
    guard let header = request.metadata[stringValues: "authorization"].first(where: { _ in true }) else {
      throw RPCError(code: .unauthenticated, message: "missing API key: send 'authorization: Bearer <key>'")
    }
    let trimmed = header.trimmingCharacters(in: .whitespaces)
    guard trimmed.lowercased().hasPrefix("bearer ") else {
      throw RPCError(code: .unauthenticated, message: "the authorization header must be 'Bearer <key>'")
    }
    let key = String(trimmed.dropFirst("bearer ".count)).trimmingCharacters(in: .whitespaces)
    guard let entry = keys.authenticate(key: key) else {
      throw RPCError(code: .unauthenticated, message: "unknown API key")
    }
    guard entry.role >= required else {
      throw RPCError(
        code: .permissionDenied,
        message: "\(context.descriptor.fullyQualifiedMethod) requires the '\(required.rawValue)' role; key '\(entry.name)' has '\(entry.role.rawValue)'")
    }
    return try await CallerIdentity.$apiKeyID.withValue(entry.name) {
      try await next(request, context)
    }
  }
}

/// Who is calling: the name of the API key that authenticated the request, set by the gRPC
/// AuthInterceptor and the HTTP gateway's middleware around the handler ("" when authentication
/// is off). The generation log and app feedback record it; feedback checks ownership with it.
/// Handlers read it before they return a streamed response (the stream body may run outside it).
public enum CallerIdentity {
  @TaskLocal public static var apiKeyID = ""
}
