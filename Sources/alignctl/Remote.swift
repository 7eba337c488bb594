import AlignAPI
import ArgumentParser
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2

/// Runs `body` with a client connected to `--server`.
func withServer<Result: Sendable>(
  _ options: RemoteOptions, _ body: (GRPCClient<HTTP2ClientTransport.Posix>, Metadata) async throws -> Result
) async throws -> Result {
  let (host, port) = try options.endpoint()
  let security = try options.transportSecurity()
  var metadata: Metadata = [:]
  if let key = options.key { metadata.addString("Bearer \(key)", forKey: "authorization") }
  return try await withGRPCClient(
    transport: .http2NIOPosix(target: resolvedTarget(host: host, port: port), transportSecurity: security)
  ) { client in
    try await body(client, metadata)
  }
}

/// An IP literal as an address target (TLS sends no SNI for it and checks the certificate's IP
/// SAN; as a DNS name it would be refused), any other host as a DNS name.
func resolvedTarget(host: String, port: Int) -> any ResolvableTarget {
  var ipv4 = in_addr()
  var ipv6 = in6_addr()
  let bare = host.hasPrefix("[") && host.hasSuffix("]") ? String(host.dropFirst().dropLast()) : host
  if inet_pton(AF_INET, bare, &ipv4) == 1 { return .ipv4(address: bare, port: port) }
  if inet_pton(AF_INET6, bare, &ipv6) == 1 { return .ipv6(address: bare, port: port) }
  return .dns(host: host, port: port)
}

/// Prints an RPC error the way scripts expect: one line on stderr and a distinct exit code.
func report(_ error: RPCError) -> ExitCode {
  FileHandle.standardError.write(Data("alignctl: \(error.code): \(error.message)\n".utf8))
  return ExitCode(Int32(10 + error.code.rawValue))
}

struct Health: AsyncParsableCommand {
  static let configuration = CommandConfiguration(abstract: "Ask the server's health service.")
  @OptionGroup var remote: RemoteOptions
  @Option(help: "Service name (empty = the whole server).") var service: String = ""

  func run() async throws {
    do {
      let status = try await withServer(remote) { client, metadata in
        try await Grpc_Health_V1_Health.Client(wrapping: client).check(
          .with { $0.service = service }, metadata: metadata
        ).status
      }
      print(remote.json ? #"{"status":"\#(status)"}"# : "\(status)")
      if status != .serving { throw ExitCode(1) }
    } catch let error as RPCError {
      throw report(error)
    }
  }
}

struct Status: AsyncParsableCommand {
  static let configuration = CommandConfiguration(abstract: "Show the server's status (admin key).")
  @OptionGroup var remote: RemoteOptions

  func run() async throws {
    do {
      let status = try await withServer(remote) { client, metadata in
        try await Alignd_V1_Admin.Client(wrapping: client).getStatus(.init(), metadata: metadata)
      }
      if remote.json {
        print(try status.jsonString())
      } else {
        print("state:   \(status.state)")
        print("version: \(status.serverVersion)")
        print("uptime:  \(status.uptimeSeconds) s")
        for role in status.roles {
          print("\(role.role): \(role.activeVersion)")
        }
      }
    } catch let error as RPCError {
      throw report(error)
    }
  }
}
