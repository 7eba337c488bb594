import ArgumentParser
import GRPCNIOTransportHTTP2
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

  @Flag(help: "Connect with TLS, trusting the system's CAs (implied by --ca-file).")
  var tls = false

  @Option(help: "CA certificate (PEM) the server's certificate must chain to; implies TLS.")
  var caFile: String?

  @Option(help: "Client certificate (PEM) for servers that ask for one (admin listener with mutual TLS).")
  var certFile: String?

  @Option(help: "Private key (PEM) of --cert-file.")
  var keyFile: String?

  /// The transport security `--tls`, `--ca-file`, `--cert-file` and `--key-file` ask for.
  func transportSecurity() throws -> HTTP2ClientTransport.Posix.TransportSecurity {
    guard (certFile == nil) == (keyFile == nil) else {
      throw ValidationError("--cert-file and --key-file go together")
    }
    guard tls || caFile != nil || certFile != nil else { return .plaintext }
    for path in [caFile, certFile, keyFile].compactMap({ $0 }) where !FileManager.default.isReadableFile(atPath: path) {
      throw ValidationError("cannot read \(path)")
    }
    return .tls { config in
      if let caFile { config.trustRoots = .certificates([.file(path: caFile, format: .pem)]) }
      if let certFile, let keyFile {
        config.certificateChain = [.file(path: certFile, format: .pem)]
        config.privateKey = .file(path: keyFile, format: .pem)
      }
    }
  }

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
