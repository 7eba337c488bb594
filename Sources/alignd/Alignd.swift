import AlignServer
import ArgumentParser
import Foundation

/// The alignd server executable: parses flags, builds the configuration, runs the service group.
@main
struct Alignd: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "alignd",
    abstract: "alignd: serve an RLHF policy, reward model and safety classifiers over gRPC.",
    subcommands: [Serve.self, Config.self],
    defaultSubcommand: Serve.self
  )
}

/// Flags shared by `serve` and `config`: one per configuration key, derived from the key table
/// (ConfigurationLoader.keys), which also writes their help.
struct ConfigurationFlags: ParsableArguments {
  @Argument(parsing: .allUnrecognized, help: .hidden) var arguments: [String] = []

  func load() throws -> ServerConfiguration {
    let environment = ProcessInfo.processInfo.environment
    do {
      let (flags, file) = try ConfigurationLoader.flags(from: arguments)
      return try ConfigurationLoader.load(
        flags: flags, environment: environment, configFile: file ?? environment["ALIGND_CONFIG"])
    } catch let error as ConfigurationError {
      FileHandle.standardError.write(Data("alignd: configuration error: \(error.description)\n".utf8))
      throw ExitCode(78)  // EX_CONFIG
    }
  }
}

struct Serve: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Run the server (the default).", discussion: ConfigurationLoader.flagHelp)

  @OptionGroup var flags: ConfigurationFlags

  func run() async throws {
    let config = try flags.load()
    do {
      try await AlignServerApp(configuration: config).run()
    } catch let error as StartupError {
      FileHandle.standardError.write(Data("alignd: \(error.description)\n".utf8))
      throw ExitCode(error.exitCode)
    }
  }
}

struct Config: ParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Print every configuration key with its flag, environment variable and effective value.",
    discussion: ConfigurationLoader.flagHelp)

  @OptionGroup var flags: ConfigurationFlags

  func run() throws {
    let config = try flags.load()
    for key in ConfigurationLoader.keys {
      print("\(key.name) = \(key.value(in: config))")
      print("    \(key.flag) | \(key.environmentVariable) | \(key.help)")
    }
  }
}
