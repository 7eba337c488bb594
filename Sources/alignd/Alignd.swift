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

/// Flags shared by `serve` and `config`: one per configuration key (see ConfigurationLoader.keys).
struct ConfigurationFlags: ParsableArguments {
  @Option(help: "JSON configuration file (keys as in `alignd config`). Env: ALIGND_CONFIG.")
  var config: String?
  @Option(help: "Address the gRPC listener binds to (default 127.0.0.1).") var host: String?
  @Option(help: "gRPC port (default 50051; 0 picks a free port).") var port: String?
  @Option(help: "HTTP/JSON gateway port: OpenAI-compatible API, /healthz, /readyz, /metrics (default 8080; 0 = a free port).") var httpPort: String?
  @Option(help: "Folder for the feedback store and checkpoint registry (default data).") var dataDir: String?
  @Option(help: "Folder holding the default models (default models).") var modelsDir: String?
  @Option(help: "Policy GGUF file or HF folder, relative to models-dir.") var policyModel: String?
  @Option(help: "API keys file; without one only loopback binds are allowed.") var keysFile: String?
  @Flag(help: "Allow a non-loopback bind without a keys file.") var allowUnauthenticated = false
  @Option(help: "Grace period for in-flight RPCs after SIGTERM (default 30).") var drainTimeoutSeconds: String?
  @Option(help: "Largest accepted request message in bytes (default 4194304).") var maxRequestBytes: String?
  @Option(help: "Maximum concurrent HTTP/2 streams per connection (default 256).") var maxConcurrentStreams: String?
  @Option(help: "Close idle connections after this many seconds (default 300).") var idleTimeoutSeconds: String?
  @Option(help: "trace, debug, info, notice, warning, error or critical (default info).") var logLevel: String?
  @Option(help: "Waiting generation requests per model before RESOURCE_EXHAUSTED (default 256).") var queueCapacity: String?
  @Option(help: "Most sequences decoding together (default 32).") var maxRunningSequences: String?
  @Option(help: "Most tokens in one forward step (default 256).") var maxStepTokens: String?
  @Option(help: "KV cache size in tokens (default 16384).") var kvCacheTokens: String?
  @Option(help: "Engine worker threads (default 2).") var engineThreads: String?
  @Option(help: "max_tokens when a request leaves it unset (default 256).") var defaultMaxTokens: String?
  @Option(help: "Largest max_tokens a request may ask for (default 2048).") var maxTokensLimit: String?
  @Option(help: "Queued requests rise one priority level per this many seconds (default 5).") var priorityAgingSeconds: String?
  @Option(help: "true: a seed gives the same tokens alone or batched (default); false: faster float prefill.") var batchInvariant: String?
  @Option(help: "Empty for SQLite under data-dir, or a postgres:// URL shared by replicas.") var storeUrl: String?
  @Option(help: "Seconds between re-reads of the active versions from the store (default 5; 0 = off).") var rolloutSyncSeconds: String?
  @Option(help: "Largest checkpoint upload in bytes (default 8 GiB).") var maxCheckpointBytes: String?
  @Option(help: "Largest accuracy drop a reward candidate may show on stored preferences (default 0.02).") var rewardGateMargin: String?
  @Option(help: "Reward model at startup (HF sequence-classification or reward-head folder; default: the judge).") var rewardModel: String?
  @Option(help: "Safety policy JSON file (default: the built-in policy, Config/safety-policy.json).") var safetyPolicy: String?
  @Option(help: "Guard model GGUF or HF folder, relative to models-dir (default none).") var guardModel: String?
  @Option(help: "Default screening of generate: off, prompt, output or prompt_and_output (default off).") var safetyMode: String?
  @Option(help: "TLS certificate chain (PEM) for every listener (default: plaintext).") var tlsCertFile: String?
  @Option(help: "Private key (PEM) of --tls-cert-file.") var tlsKeyFile: String?
  @Option(help: "CA (PEM) admin clients' certificates must chain to: mutual TLS on --admin-port.") var tlsClientCaFile: String?
  @Option(help: "Separate listener for the Admin service (0 = free port; default: on --port).") var adminPort: String?

  /// The flags that were given, by canonical key name.
  var given: [String: String] {
    var flags: [String: String] = [:]
    flags["host"] = host
    flags["port"] = port
    flags["http_port"] = httpPort
    flags["data_dir"] = dataDir
    flags["models_dir"] = modelsDir
    flags["policy_model"] = policyModel
    flags["keys_file"] = keysFile
    if allowUnauthenticated { flags["allow_unauthenticated"] = "true" }
    flags["drain_timeout_seconds"] = drainTimeoutSeconds
    flags["max_request_bytes"] = maxRequestBytes
    flags["max_concurrent_streams"] = maxConcurrentStreams
    flags["idle_timeout_seconds"] = idleTimeoutSeconds
    flags["log_level"] = logLevel
    flags["queue_capacity"] = queueCapacity
    flags["max_running_sequences"] = maxRunningSequences
    flags["max_step_tokens"] = maxStepTokens
    flags["kv_cache_tokens"] = kvCacheTokens
    flags["engine_threads"] = engineThreads
    flags["default_max_tokens"] = defaultMaxTokens
    flags["max_tokens_limit"] = maxTokensLimit
    flags["priority_aging_seconds"] = priorityAgingSeconds
    flags["batch_invariant"] = batchInvariant
    flags["store_url"] = storeUrl
    flags["rollout_sync_seconds"] = rolloutSyncSeconds
    flags["max_checkpoint_bytes"] = maxCheckpointBytes
    flags["reward_gate_margin"] = rewardGateMargin
    flags["reward_model"] = rewardModel
    flags["safety_policy"] = safetyPolicy
    flags["guard_model"] = guardModel
    flags["safety_mode"] = safetyMode
    flags["tls_cert_file"] = tlsCertFile
    flags["tls_key_file"] = tlsKeyFile
    flags["tls_client_ca_file"] = tlsClientCaFile
    flags["admin_port"] = adminPort
    return flags
  }

  func load() throws -> ServerConfiguration {
    let environment = ProcessInfo.processInfo.environment
    do {
      return try ConfigurationLoader.load(
        flags: given, environment: environment, configFile: config ?? environment["ALIGND_CONFIG"])
    } catch let error as ConfigurationError {
      FileHandle.standardError.write(Data("alignd: configuration error: \(error.description)\n".utf8))
      throw ExitCode(78)  // EX_CONFIG
    }
  }
}

struct Serve: AsyncParsableCommand {
  static let configuration = CommandConfiguration(abstract: "Run the server (the default).")

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
    abstract: "Print every configuration key with its flag, environment variable and effective value.")

  @OptionGroup var flags: ConfigurationFlags

  func run() throws {
    let config = try flags.load()
    for key in ConfigurationLoader.keys {
      print("\(key.name) = \(key.value(in: config))")
      print("    \(key.flag) | \(key.environmentVariable) | \(key.help)")
    }
  }
}
