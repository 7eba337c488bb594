import AlignEngine
import AlignServer
import Foundation
import Testing

@Suite("Configuration: flag > environment > file > default")
struct ConfigurationTests {
  func writeConfig(_ json: String) throws -> String {
    let folder = try TestPaths.temporaryFolder()
    let path = folder.appendingPathComponent("alignd.json").path
    try json.write(toFile: path, atomically: true, encoding: .utf8)
    return path
  }

  @Test func defaultsWithoutSources() throws {
    let config = try ConfigurationLoader.load(flags: [:], environment: [:], configFile: nil)
    #expect(config == ServerConfiguration())
    #expect(config.host == "127.0.0.1")
    #expect(config.port == 50051)
  }

  @Test func precedenceIsFlagThenEnvironmentThenFileThenDefault() throws {
    let file = try writeConfig(#"{"port": 6001, "host": "127.0.0.2", "drain_timeout_seconds": 7, "log_level": "debug"}"#)
    let environment = ["ALIGND_PORT": "6002", "ALIGND_HOST": "127.0.0.3", "UNRELATED": "x"]
    let flags = ["port": "6003"]
    let config = try ConfigurationLoader.load(flags: flags, environment: environment, configFile: file)
    #expect(config.port == 6003)  // flag beats environment and file
    #expect(config.host == "127.0.0.3")  // environment beats file
    #expect(config.drainTimeoutSeconds == 7)  // file beats default
    #expect(config.logLevel == .debug)
    #expect(config.maxRequestBytes == ServerConfiguration().maxRequestBytes)  // default
  }

  @Test("the canary keys set the canary policy; contradictory bounds are refused")
  func canaryKeys() throws {
    let config = try ConfigurationLoader.load(
      flags: ["canary_analysis": "true", "canary_min_samples": "40", "canary_max_ttft_ratio": "2.5"],
      environment: ["ALIGND_CANARY_MIN_SECONDS": "5"], configFile: nil)
    #expect(config.canary.enabled && config.canary.minSamples == 40 && config.canary.maxTTFTRatio == 2.5)
    #expect(config.canary.minDurationSeconds == 5)
    #expect(config.canary.maxRewardDrop == ServerConfiguration().canary.maxRewardDrop)
    let latencyOff = try ConfigurationLoader.load(flags: ["canary_max_ttft_ratio": "0"], environment: [:], configFile: nil)
    #expect(latencyOff.canary.maxTTFTRatio == 0)
    for (flags, message) in [
      (["canary_min_seconds": "100", "canary_max_seconds": "50"], "canary_max_seconds"),
      (["canary_confidence": "1"], "canary_confidence"),
      (["reward_sample_rate": "1.5"], "reward_sample_rate"),
      (["canary_max_itl_ratio": "0.5"], "canary_max_itl_ratio must be 0 (not checked) or at least 1"),
    ] {
      #expect {
        _ = try ConfigurationLoader.load(flags: flags, environment: [:], configFile: nil)
      } throws: { ($0 as? ConfigurationError)?.description.contains(message) == true }
    }
  }

  @Test func booleansAndOptionalStrings() throws {
    let file = try writeConfig(#"{"allow_unauthenticated": true, "keys_file": "/etc/alignd/keys"}"#)
    let config = try ConfigurationLoader.load(flags: [:], environment: [:], configFile: file)
    #expect(config.allowUnauthenticated)
    #expect(config.keysFile == "/etc/alignd/keys")
    let overridden = try ConfigurationLoader.load(
      flags: [:], environment: ["ALIGND_ALLOW_UNAUTHENTICATED": "false"], configFile: file)
    #expect(!overridden.allowUnauthenticated)
  }

  @Test(arguments: [
    (["port": "70000"], [String: String](), "flag --port"),
    (["port": "abc"], [:], "must be an integer"),
    ([:], ["ALIGND_DRAIN_TIMEOUT_SECONDS": "-1"], "environment ALIGND_DRAIN_TIMEOUT_SECONDS"),
    ([:], ["ALIGND_LOG_LEVEL": "loud"], "log_level must be one of"),
    (["no_such_key": "1"], [:], "unknown configuration key 'no_such_key'"),
    ([:], ["ALIGND_KERNELS": "avx9"], "kernels must be one of auto, avx2, sse2, portable"),
  ])
  func badValuesAreClearErrors(flags: [String: String], environment: [String: String], expected: String) throws {
    let error = #expect(throws: ConfigurationError.self) {
      try ConfigurationLoader.load(flags: flags, environment: environment, configFile: nil)
    }
    #expect(error?.description.contains(expected) == true, "\(error?.description ?? "")")
  }

  @Test("kernels: auto by default, a supported set by name; a set this CPU lacks is refused at load")
  func kernelChoice() throws {
    #expect(try ConfigurationLoader.load(flags: [:], environment: [:], configFile: nil).kernels == .auto)
    let forced = try ConfigurationLoader.load(flags: ["kernels": "portable"], environment: [:], configFile: nil)
    #expect(forced.kernels.set == .portable)
    for set in KernelSet.allCases where !KernelSet.supported.contains(set) {
      let error = #expect(throws: ConfigurationError.self) {
        try ConfigurationLoader.load(flags: ["kernels": set.rawValue], environment: [:], configFile: nil)
      }
      #expect(error?.description.contains("needs CPU features this machine lacks") == true)
    }
  }

  @Test("flags are derived from the key table: every key, --key VALUE, --key=VALUE, bare booleans, --config")
  func flagsFromTheKeyTable() throws {
    let (values, file) = try ConfigurationLoader.flags(from: [
      "--port", "6000", "--allow-unauthenticated", "--batch-invariant", "false", "--log-level=debug",
      "--reward-batch-size", "4", "--config", "/etc/alignd.json", "--safety-mode", "prompt",
    ])
    #expect(file == "/etc/alignd.json")
    #expect(
      values == [
        "port": "6000", "allow_unauthenticated": "true", "batch_invariant": "false", "log_level": "debug",
        "reward_batch_size": "4", "safety_mode": "prompt",
      ])
    let config = try ConfigurationLoader.load(flags: values, environment: [:], configFile: nil)
    #expect(config.logLevel == .debug && config.safetyMode == .prompt && config.rewardBatchSize == 4)
    #expect(config.allowUnauthenticated && !config.batchInvariant)
    // Every key has its flag.
    for key in ConfigurationLoader.keys {
      let value = key.value(in: ServerConfiguration())
      let parsed = try ConfigurationLoader.flags(from: [key.flag, value.isEmpty ? "x" : value]).values
      #expect(parsed.keys.contains(key.name), "\(key.flag)")
    }
    #expect(throws: ConfigurationError.self) { try ConfigurationLoader.flags(from: ["--no-such-key", "1"]) }
    #expect(throws: ConfigurationError.self) { try ConfigurationLoader.flags(from: ["--port"]) }
    #expect(throws: ConfigurationError.self) { try ConfigurationLoader.flags(from: ["6000"]) }
  }

  @Test("the help names every flag with its default, and the README's table documents every key")
  func documentation() throws {
    let help = ConfigurationLoader.flagHelp
    let readme = try String(contentsOf: TestPaths.repositoryRoot.appendingPathComponent("README.md"), encoding: .utf8)
    let defaults = ServerConfiguration()
    for key in ConfigurationLoader.keys {
      #expect(help.contains(key.flag), "\(key.flag)")
      let row = readme.split(separator: "\n").first { $0.hasPrefix("| `\(key.name)` |") }
      let value = key.value(in: defaults)
      #expect(row != nil, "README.md has no row for \(key.name)")
      if let row, !value.isEmpty {
        #expect(row.contains("`\(value)`"), "README.md documents \(key.name) with another default than \(value): \(row)")
      }
    }
  }

  @Test func badFilesAreClearErrors() throws {
    let unknownKey = try writeConfig(#"{"prot": 1}"#)
    let e1 = #expect(throws: ConfigurationError.self) {
      try ConfigurationLoader.load(flags: [:], environment: [:], configFile: unknownKey)
    }
    #expect(e1?.description.contains("unknown configuration key 'prot'") == true)

    let notJSON = try writeConfig("port = 1")
    let e2 = #expect(throws: ConfigurationError.self) {
      try ConfigurationLoader.load(flags: [:], environment: [:], configFile: notJSON)
    }
    #expect(e2?.description.contains(notJSON) == true)

    let nested = try writeConfig(#"{"port": [1, 2]}"#)
    let e3 = #expect(throws: ConfigurationError.self) {
      try ConfigurationLoader.load(flags: [:], environment: [:], configFile: nested)
    }
    #expect(e3?.description.contains("'port' must be a string, number or boolean") == true, "\(e3?.description ?? "")")

    #expect(throws: ConfigurationError.self) {
      try ConfigurationLoader.load(flags: [:], environment: [:], configFile: "/nonexistent/alignd.json")
    }
  }
}

@Suite("API keys file")
struct APIKeyStoreTests {
  @Test func parsesAndAuthenticates() throws {
    let text = """
      # comment
      \(APIKeyStore.line(for: "admin-secret", role: .admin, name: "ops"))

      \(APIKeyStore.line(for: "infer-secret", role: .infer, name: "app one"))
      """
    let store = try APIKeyStore(parsing: text, source: "keys.txt")
    #expect(store.entries.count == 2)
    #expect(store.authenticate(key: "admin-secret")?.role == .admin)
    #expect(store.authenticate(key: "infer-secret")?.name == "app one")
    #expect(store.authenticate(key: "infer-secreT") == nil)
    #expect(store.authenticate(key: "") == nil)
    // The file holds hashes, never the keys.
    #expect(!text.contains("admin-secret\n") && !text.contains(" admin-secret "))
  }

  @Test(arguments: ["root abc", "admin 1234", "admin", "# only a comment"])
  func rejectsMalformedFiles(text: String) {
    #expect(throws: ConfigurationError.self) { try APIKeyStore(parsing: text, source: "keys.txt") }
  }
}
