import AlignAPI
import AlignClient
import ArgumentParser
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2

/// Runs `body` with a client connected to `--server`; an RPC that fails is reported the way
/// scripts expect (`report(_:)`).
func withServer<Result: Sendable>(
  _ options: RemoteOptions, _ body: (GRPCClient<HTTP2ClientTransport.Posix>, Metadata) async throws -> Result
) async throws -> Result {
  do {
    return try await options.connection().withClient(body)
  } catch let error as RPCError {
    throw report(error)
  }
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
    let status = try await withServer(remote) { client, metadata in
      try await Grpc_Health_V1_Health.Client(wrapping: client).check(
        .with { $0.service = service }, metadata: metadata
      ).status
    }
    print(remote.json ? #"{"status":"\#(status)"}"# : "\(status)")
    if status != .serving { throw ExitCode(1) }
  }
}

struct Status: AsyncParsableCommand {
  static let configuration = CommandConfiguration(abstract: "Show the server's status (admin key).")
  @OptionGroup var remote: RemoteOptions

  func run() async throws {
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
  }
}
