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
      print("kernels: \(status.engineKernels.kernels) (supported: \(status.engineKernels.supported.joined(separator: ", ")); \(status.engineKernels.cpu))")
      for role in status.roles {
        let canary = role.canaryVersion.isEmpty ? "" : "  (canary \(role.canaryVersion) at \(role.canaryPercent)%)"
        print("\(role.role): \(role.activeVersion)\(canary)")
      }
      for line in Self.canaryLines(status) { print(line) }
    }
  }

  /// The running canary comparison and the latest decisions, for people.
  static func canaryLines(_ status: Alignd_V1_GetStatusResponse) -> [String] {
    var lines: [String] = []
    func number(_ value: Double, _ digits: Int = 2) -> String { String(format: "%.\(digits)f", value) }
    func arm(_ name: String, _ arm: Alignd_V1_CanaryArm) -> String {
      let reward = arm.rewardSamples == 0 ? "-" : "\(number(arm.rewardMean, 3)) (n=\(arm.rewardSamples))"
      return "  \(name.padding(toLength: 7, withPad: " ", startingAt: 0)) \(arm.version)  requests \(arm.requests)"
        + "  errors \(number(arm.errorRate * 100))%  ttft \(number(arm.ttftMeanSeconds * 1000, 1)) ms"
        + "  itl \(number(arm.itlMeanSeconds * 1000, 1)) ms  reward \(reward)"
        + "  flags \(number(arm.safetyFlagRate * 100))% (n=\(arm.safetyChecked))"
        + "  feedback \(arm.feedbackWins)-\(arm.feedbackLosses)"
    }
    for analysis in status.canaryAnalyses {
      lines.append(
        "canary analysis (\(analysis.role), \(analysis.automatic ? "automatic" : "shown only"), "
          + "\(number(analysis.elapsedSeconds, 0)) s): \(analysis.verdict)")
      lines.append(arm("active", analysis.active))
      lines.append(arm("canary", analysis.canary))
      for check in analysis.checks {
        lines.append("  \(check.status.padding(toLength: 12, withPad: " ", startingAt: 0)) \(check.detail)")
      }
      lines.append("  reason: \(analysis.reason)")
    }
    for decision in status.canaryDecisions.prefix(5) {
      lines.append("canary decision: \(decision.verdict) \(decision.canaryVersion) (\(decision.reasonCode)): \(decision.reason)")
    }
    return lines
  }
}
