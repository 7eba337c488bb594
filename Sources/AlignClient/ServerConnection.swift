import AlignAPI
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2

/// A client-side problem found before any RPC: a bad option, an unreadable file, a malformed
/// row. alignctl reports it as a usage error.
public struct ClientError: Error, CustomStringConvertible, Equatable {
  public var description: String
  public init(_ description: String) { self.description = description }
}

/// How to reach an alignd server: address, API key and transport security.
public struct ServerConnection: Sendable {
  public var host: String
  public var port: Int
  /// Sent as `authorization: Bearer <key>` on every call.
  public var apiKey: String?
  /// Connect with TLS (implied by a CA or client certificate).
  public var tls: Bool
  /// CA certificate (PEM) the server's certificate must chain to.
  public var caFile: String?
  /// Client certificate and key (PEM) for servers that ask for one.
  public var certFile: String?
  public var keyFile: String?

  /// - Parameter address: `HOST:PORT`.
  /// - Throws: ``ClientError`` for a malformed address, a certificate without its key, or an
  ///   unreadable file.
  public init(
    address: String, apiKey: String? = nil, tls: Bool = false, caFile: String? = nil, certFile: String? = nil,
    keyFile: String? = nil
  ) throws(ClientError) {
    guard let colon = address.lastIndex(of: ":"), let port = Int(address[address.index(after: colon)...]),
      (1...65535).contains(port)
    else {
      throw ClientError("--server must be HOST:PORT, got '\(address)'")
    }
    guard (certFile == nil) == (keyFile == nil) else { throw ClientError("--cert-file and --key-file go together") }
    for path in [caFile, certFile, keyFile].compactMap({ $0 }) where !FileManager.default.isReadableFile(atPath: path) {
      throw ClientError("cannot read \(path)")
    }
    self.host = String(address[..<colon])
    self.port = port
    self.apiKey = apiKey
    self.tls = tls || caFile != nil || certFile != nil
    self.caFile = caFile
    self.certFile = certFile
    self.keyFile = keyFile
  }

  /// The transport security the options ask for.
  var transportSecurity: HTTP2ClientTransport.Posix.TransportSecurity {
    guard tls else { return .plaintext }
    let (caFile, certFile, keyFile) = (self.caFile, self.certFile, self.keyFile)
    return .tls { config in
      if let caFile { config.trustRoots = .certificates([.file(path: caFile, format: .pem)]) }
      if let certFile, let keyFile {
        config.certificateChain = [.file(path: certFile, format: .pem)]
        config.privateKey = .file(path: keyFile, format: .pem)
      }
    }
  }

  /// The metadata every call carries (the API key).
  public var metadata: Metadata {
    var metadata: Metadata = [:]
    if let apiKey { metadata.addString("Bearer \(apiKey)", forKey: "authorization") }
    return metadata
  }

  /// Runs `body` with a client connected to the server.
  public func withClient<Result: Sendable>(
    _ body: (GRPCClient<HTTP2ClientTransport.Posix>, Metadata) async throws -> Result
  ) async throws -> Result {
    try await withGRPCClient(
      transport: .http2NIOPosix(target: Self.target(host: host, port: port), transportSecurity: transportSecurity)
    ) { client in
      try await body(client, metadata)
    }
  }

  /// An IP literal as an address target (TLS sends no SNI for it and checks the certificate's IP
  /// SAN; as a DNS name it would be refused), any other host as a DNS name.
  static func target(host: String, port: Int) -> any ResolvableTarget {
    var ipv4 = in_addr()
    var ipv6 = in6_addr()
    let bare = host.hasPrefix("[") && host.hasSuffix("]") ? String(host.dropFirst().dropLast()) : host
    if inet_pton(AF_INET, bare, &ipv4) == 1 { return .ipv4(address: bare, port: port) }
    if inet_pton(AF_INET6, bare, &ipv6) == 1 { return .ipv6(address: bare, port: port) }
    return .dns(host: host, port: port)
  }
}

/// Where feedback calls go: a server (``ServerConnection``), or anything else that hands out an
/// Admin client (an in-process server in tests).
public protocol AdminConnector: Sendable {
  func withAdmin<Result: Sendable>(
    _ body: (any Alignd_V1_Admin.ClientProtocol, Metadata) async throws -> Result
  ) async throws -> Result
}

extension ServerConnection: AdminConnector {
  public func withAdmin<Result: Sendable>(
    _ body: (any Alignd_V1_Admin.ClientProtocol, Metadata) async throws -> Result
  ) async throws -> Result {
    try await withClient { client, metadata in try await body(Alignd_V1_Admin.Client(wrapping: client), metadata) }
  }
}

/// When an RPC failure is worth retrying: the server or the connection went away, or the store
/// asked for a resend. Everything else (bad key, bad argument) fails at once.
public enum RetryPolicy {
  public static func isRetryable(_ code: RPCError.Code) -> Bool {
    code == .unavailable || code == .aborted
  }

  /// Backoff before retry `attempt` (1-based): 0.5 s, 1 s, 2 s, 4 s, then 8 s.
  public static func backoff(_ attempt: Int) -> Duration {
    .milliseconds(500 << min(max(attempt - 1, 0), 4))
  }
}
