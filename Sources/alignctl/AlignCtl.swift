import AlignClient
import ArgumentParser
import Foundation

/// alignctl: the client and admin CLI of alignd.
@main
struct AlignCtl: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "alignctl",
    abstract: "Client and admin tool for alignd.",
    subcommands: [Generate.self, Tokenize.self, Logprobs.self, Bench.self, BenchLookup.self, Health.self, Status.self, Keys.self, Checkpoint.self, Feedback.self, Log.self, TrainReward.self, EvalReward.self, Score.self, Check.self]
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

  @Flag(help: "Connect with TLS, trusting the system's CAs (implied by --ca-file).")
  var tls = false

  @Option(help: "CA certificate (PEM) the server's certificate must chain to; implies TLS.")
  var caFile: String?

  @Option(help: "Client certificate (PEM) for servers that ask for one (admin listener with mutual TLS).")
  var certFile: String?

  @Option(help: "Private key (PEM) of --cert-file.")
  var keyFile: String?

  /// The server these options name (a usage error when they do not fit together).
  func connection() throws -> ServerConnection {
    try usage {
      try ServerConnection(
        address: server, apiKey: key, tls: tls, caFile: caFile, certFile: certFile, keyFile: keyFile)
    }
  }

  var key: String? { apiKey ?? ProcessInfo.processInfo.environment["ALIGND_API_KEY"] }
}

/// Runs `body`, turning a client-side problem (bad option, unreadable file) into a usage error
/// (exit code 64).
func usage<T>(_ body: () throws -> T) throws -> T {
  do {
    return try body()
  } catch let error as ClientError {
    throw ValidationError(error.description)
  }
}

/// `usage(_:)` for async work.
func usageErrors<T>(_ body: () async throws -> T) async throws -> T {
  do {
    return try await body()
  } catch let error as ClientError {
    throw ValidationError(error.description)
  }
}
