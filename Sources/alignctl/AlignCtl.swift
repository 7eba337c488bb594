import ArgumentParser
import Foundation

/// alignctl: the client and admin CLI of alignd.
@main
struct AlignCtl: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "alignctl",
    abstract: "Client and admin tool for alignd.",
    subcommands: [Generate.self, Tokenize.self, Logprobs.self, Bench.self, Health.self, Status.self, Keys.self, Checkpoint.self, Feedback.self, TrainReward.self, Score.self, Check.self]
  )
}

/// Options for talking to a running server.
struct RemoteOptions: ParsableArguments {
  @Option(help: "Server address HOST:PORT.")
  var server: String = "127.0.0.1:50051"

  @Option(help: "API key (default: $ALIGND_API_KEY).")
  var apiKey: String?

  @Flag(help: "Print JSON instead of text.")
  var json = false

  /// The host and port of `--server`.
  func endpoint() throws -> (host: String, port: Int) {
    guard let colon = server.lastIndex(of: ":"), let port = Int(server[server.index(after: colon)...]),
      (1...65535).contains(port)
    else {
      throw ValidationError("--server must be HOST:PORT, got '\(server)'")
    }
    return (String(server[..<colon]), port)
  }

  var key: String? { apiKey ?? ProcessInfo.processInfo.environment["ALIGND_API_KEY"] }
}
