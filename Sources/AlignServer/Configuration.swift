import AlignEngine
import AlignRollout
import AlignServing
import Foundation
import Logging

/// The server's configuration: every key, its type and default, in one `Sendable` struct.
///
/// Reading flags, environment variables and the config file is a separate layer
/// (``ConfigurationLoader``); nothing deeper in the code reads the environment.
public struct ServerConfiguration: Sendable, Equatable {
  /// Address the gRPC listener binds to.
  public var host: String = "127.0.0.1"
  /// gRPC port (h2c, or TLS when configured). 0 picks a free port.
  public var port: Int = 50051
  /// Port of the HTTP/JSON gateway (OpenAI-compatible routes, probes, /metrics; Docs/HTTP.md).
  /// 0 picks a free port.
  public var httpPort: Int = 8080
  /// Folder for the feedback store and the checkpoint registry.
  public var dataDir: String = "data"
  /// Folder holding the default models (see scripts/fetch-models.sh).
  public var modelsDir: String = "models"
  /// Policy model file (GGUF) or Hugging Face folder; relative paths resolve against `modelsDir`.
  public var policyModel: String = "SmolLM2-135M-Instruct.Q4_1.gguf"
  /// API keys file (roles and SHA-256 hashes of keys). Without one, only loopback binds are allowed.
  public var keysFile: String? = nil
  /// Allow binding a non-loopback address without a keys file (explicit opt-in).
  public var allowUnauthenticated: Bool = false
  /// How long in-flight RPCs may run after SIGTERM before they are cancelled.
  public var drainTimeoutSeconds: Double = 30
  /// Largest accepted request message in bytes; larger messages get RESOURCE_EXHAUSTED.
  public var maxRequestBytes: Int = 4 * 1024 * 1024
  /// Maximum concurrent HTTP/2 streams per connection.
  public var maxConcurrentStreams: Int = 256
  /// Idle connections are closed after this many seconds.
  public var idleTimeoutSeconds: Double = 300
  /// Log level: trace, debug, info, notice, warning, error, critical.
  public var logLevel: Logger.Level = .info
  /// Generation requests waiting per model beyond the running batch; more get RESOURCE_EXHAUSTED.
  public var queueCapacity: Int = 256
  /// Most sequences decoding together in one batched step.
  public var maxRunningSequences: Int = 32
  /// Most tokens in one forward step (decode tokens plus prefill chunks).
  public var maxStepTokens: Int = 256
  /// KV cache size in tokens shared by running sequences (memory for SmolLM2: 23 KB per token
  /// in float16, 46 KB in float32).
  public var kvCacheTokens: Int = 16384
  /// How the policy's KV cache stores keys and values (float16: half the memory and attention reads).
  public var kvCachePrecision: KVCachePrecision = .float16
  /// KV tokens kept for prompt prefixes later requests reuse (0: off), on top of kv_cache_tokens.
  public var prefixCacheTokens: Int = 4096
  /// Prompt-lookup speculation: most tokens drafted per decoding sequence and step (0: off).
  public var speculativeTokens: Int = 4
  /// Draft only while at most this many sequences decode.
  public var speculativeMaxSequences: Int = 4
  /// Engine worker threads.
  public var engineThreads: Int = 2
  /// The engine's kernels: auto (the fastest this CPU supports) or a set forced by name.
  public var kernels: KernelChoice = .auto
  /// max_tokens when a request leaves it unset.
  public var defaultMaxTokens: Int = 256
  /// Largest max_tokens a request may ask for.
  public var maxTokensLimit: Int = 2048
  /// A queued request rises one priority level per this many seconds of waiting (bounds starvation),
  /// in the generation queue and in the judging batchers' queues alike.
  public var priorityAgingSeconds: Double = 5
  /// Most responses scored in one reward-model forward pass (dynamic batching of Score, best_of).
  public var rewardBatchSize: Int = 16
  /// Longest wait (milliseconds) for a reward batch to fill once its first response is queued.
  public var rewardBatchWaitMs: Double = 5
  /// Most texts checked in one forward pass of a batching safety model (the guard model).
  public var safetyBatchSize: Int = 8
  /// Longest wait (milliseconds) for a safety-model batch to fill.
  public var safetyBatchWaitMs: Double = 5
  /// Most Logprobs requests teacher-forced together between generation steps.
  public var logprobsBatchSize: Int = 16
  /// Longest wait (milliseconds) for a Logprobs batch to fill.
  public var logprobsBatchWaitMs: Double = 5
  /// Compute every token's matrix products row by row with integer dot products, so a sequence's
  /// tokens do not depend on which other requests share its batch (a seed reproduces a completion
  /// exactly, alone or batched). False sends prompt chunks through float sgemm: faster prefill,
  /// but results then vary with batch composition in the last bits.
  public var batchInvariant: Bool = true
  /// Feedback and registry-state store: empty for SQLite under `dataDir`, or a PostgreSQL URL
  /// (`postgres://user:password@host:port/database`) shared by several replicas.
  public var storeURL: String = ""
  /// How often a replica re-reads the active checkpoint versions from the store (several
  /// replicas on one PostgreSQL store converge on the same versions). 0 turns it off.
  public var rolloutSyncSeconds: Double = 5
  /// Largest checkpoint upload in bytes.
  public var maxCheckpointBytes: Int = 8 << 30
  /// A reward gate fails when the candidate's accuracy on the held-out preference pairs of
  /// `rewardGateFile` is more than this below the serving reward model's.
  public var rewardGateMargin: Double = 0.02
  /// Held-out preference pairs (TRL JSONL, relative to `modelsDir`) a reward candidate is evaluated
  /// on before it may serve; candidates must not have trained on them. The default is the
  /// validation split shipped with the default reward model.
  public var rewardGateFile: String = "eval/reward-validation.jsonl"
  /// Most pairs of `rewardGateFile` the gate scores (spread evenly over the file).
  public var rewardGatePairs: Int = 400
  /// Reward model served at startup, relative to `modelsDir`: a trained judge
  /// (`alignd.embedding-head` folder), a sequence-classification or reward-head folder; `judge` (or
  /// empty) = the generative judge on the policy.
  public var rewardModel: String = "alignd-reward-minilm"
  /// Sentence encoder the trained judges (reward model, safety classifier) read, relative to
  /// `modelsDir` (scripts/fetch-encoder.sh).
  public var encoderModel: String = "all-MiniLM-L6-v2"
  /// Trained moderation classifier of the safety checker (`alignd.embedding-head` folder, relative
  /// to `modelsDir`), used when the safety policy enables the `classifier` backend; empty = none.
  public var safetyClassifier: String = "alignd-safety-minilm"
  /// Held-out labelled texts (JSONL `text`, `labels`, relative to `modelsDir`) a safety candidate
  /// is evaluated on before it may serve.
  public var safetyGateFile: String = "eval/safety-validation.jsonl"
  /// A safety gate fails when the candidate's recall on harmful texts of the gate file drops, or
  /// its false-positive rate on benign ones rises, by more than this against the serving checker.
  public var safetyGateMargin: Double = 0.02
  /// Most texts of `safetyGateFile` the safety gate checks (spread evenly over the file).
  public var safetyGateTexts: Int = 1000
  /// Evaluation prompts (JSONL `prompt`, relative to `modelsDir`) of the policy quality gate: a
  /// policy candidate's greedy completions of them, scored by the serving reward model and safety
  /// checker, are compared with the active policy's before it may serve.
  public var policyGateFile: String = "eval/policy-eval-prompts.jsonl"
  /// Prompts of `policyGateFile` the quality gate generates on (spread evenly); 0 = no quality gate.
  public var policyGatePrompts: Int = 16
  /// Tokens generated per evaluation prompt.
  public var policyGateMaxTokens: Int = 32
  /// A policy candidate fails the quality gate when its mean reward is more than this below the
  /// active policy's.
  public var policyGateRewardMargin: Double = 0.25
  /// … or when its safety-flag rate is more than this above the active policy's.
  public var policyGateSafetyMargin: Double = 0.1
  /// Share of completed generations scored by the serving reward model (and safety-checked when no
  /// output screen ran) off the token path, for the canary analysis; 0 = none.
  public var rewardSampleRate: Double = 0.1
  /// Most sampled completions waiting to be scored; more are dropped (generation never waits).
  public var rewardSampleQueue: Int = 256
  /// The canary analysis: when it promotes or rolls back a policy canary on its own, and on what
  /// evidence (keys `canary_*`, Docs/CANARY.md; the defaults are ``CanaryPolicy``'s).
  public var canary = CanaryPolicy()
  /// Safety policy file (JSON, see Docs/SAFETY.md); empty = the built-in default policy.
  public var safetyPolicy: String = ""
  /// Guard model (Llama Guard 3 / Qwen3Guard style; GGUF or HF folder, relative to `modelsDir`);
  /// empty = no guard model.
  public var guardModel: String = ""
  /// Safety screening of generate requests that do not choose: off, prompt, output or
  /// prompt_and_output.
  public var safetyMode: SafetyMode = .off
  /// TLS certificate chain (PEM) served by every listener (gRPC, admin, HTTP); with `tlsKeyFile`
  /// the ports speak TLS only. Empty = plaintext (h2c and HTTP/1.1).
  public var tlsCertFile: String = ""
  /// Private key (PEM) of `tlsCertFile`.
  public var tlsKeyFile: String = ""
  /// CA certificates (PEM) that admin clients' certificates must chain to: mutual TLS on the
  /// admin listener (needs `adminPort` and TLS). Empty = no client certificates asked for.
  public var tlsClientCAFile: String = ""
  /// A separate listener for the Admin service (0 picks a free port); nil serves Admin on `port`
  /// beside Inference. With it, the main port answers UNIMPLEMENTED for Admin RPCs.
  public var adminPort: Int? = nil
  /// Record every answered generation (Generate, GenerateStream, HTTP completions) in the store's
  /// generation log: prompt, completions with their ids, tokens, versions, verdicts, timing.
  public var generationLog: Bool = true
  /// Share of generation requests the log records (0...1).
  public var generationLogSampleRate: Double = 1
  /// Log entries older than this many days are pruned (0 = no age limit).
  public var generationLogRetentionDays: Double = 30
  /// The log keeps at most this many completions, pruning the oldest (0 = no row limit).
  public var generationLogRetentionRows: Int = 1_000_000
  /// Redact PII spans (e-mail, phone, card and id numbers, as the rules safety backend finds
  /// them) from logged prompts and completions.
  public var generationLogRedactPII: Bool = false
  /// Answered requests waiting to be written to the log; beyond it they are dropped and counted.
  public var generationLogQueueCapacity: Int = 4096
  /// Feedback requests (SubmitFeedback, POST /v1/feedback) one API key may make per minute.
  public var feedbackRatePerMinute: Int = 120
  /// Let a key send feedback on completions another key asked for.
  public var feedbackAllowOtherKeys: Bool = false

  public init() {}

  /// The generation log writer's settings.
  public var generationLogSettings: GenerationLogSettings {
    var settings = GenerationLogSettings()
    settings.enabled = generationLog
    settings.sampleRate = generationLogSampleRate
    settings.retentionDays = generationLogRetentionDays
    settings.retentionRows = generationLogRetentionRows
    settings.redactPII = generationLogRedactPII
    settings.queueCapacity = generationLogQueueCapacity
    return settings
  }

  /// Checks the sampling and canary keys whose bounds depend on each other.
  public func validateCanary() throws {
    if rewardSampleRate > 1 { throw ConfigurationError("reward_sample_rate must be in 0...1, got \(rewardSampleRate)") }
    if canary.confidence >= 1 { throw ConfigurationError("canary_confidence must be below 1, got \(canary.confidence)") }
    for (key, ratio) in [("canary_max_ttft_ratio", canary.maxTTFTRatio), ("canary_max_itl_ratio", canary.maxITLRatio)]
    where ratio > 0 && ratio < 1 {
      throw ConfigurationError("\(key) must be 0 (not checked) or at least 1, got \(ratio)")
    }
    if canary.maxDurationSeconds > 0, canary.maxDurationSeconds < canary.minDurationSeconds {
      throw ConfigurationError(
        "canary_max_seconds (\(canary.maxDurationSeconds)) must not be below canary_min_seconds (\(canary.minDurationSeconds))")
    }
  }

  /// True when the listeners speak TLS.
  public var tlsEnabled: Bool { !tlsCertFile.isEmpty }

  /// Checks the combinations of TLS and admin-listener keys that cannot work together.
  /// A forced kernel set must be one this CPU can run.
  public func validateKernels() throws {
    guard let set = kernels.set else { return }
    do {
      try set.checkSupported()
    } catch EngineError.invalidArgument(let message) {
      throw ConfigurationError("kernels: \(message)")
    }
  }

  public func validateListeners() throws {
    if tlsCertFile.isEmpty != tlsKeyFile.isEmpty {
      throw ConfigurationError("tls_cert_file and tls_key_file go together: give both or neither")
    }
    if !tlsClientCAFile.isEmpty {
      guard tlsEnabled else {
        throw ConfigurationError("tls_client_ca_file needs TLS: give tls_cert_file and tls_key_file")
      }
      guard adminPort != nil else {
        throw ConfigurationError(
          "tls_client_ca_file protects the admin listener: give admin_port (inference clients are not asked for certificates)")
      }
    }
    if let adminPort, adminPort != 0, adminPort == port {
      throw ConfigurationError("admin_port must differ from port (\(port))")
    }
  }
}

/// A configuration problem found while reading flags, environment or file.
public struct ConfigurationError: Error, CustomStringConvertible, Equatable {
  public var description: String
  public init(_ description: String) { self.description = description }
}

/// Merges the configuration sources with precedence flag > environment > file > default.
///
/// Every key has one canonical name (e.g. `drain_timeout_seconds`), used as is in the JSON config
/// file, as `--drain-timeout-seconds` on the command line and as `ALIGND_DRAIN_TIMEOUT_SECONDS` in the
/// environment.
public enum ConfigurationLoader {
  /// One documented configuration key.
  public struct Key: Sendable {
    public let name: String
    public let help: String
    let apply: @Sendable (inout ServerConfiguration, String) throws -> Void
    let current: @Sendable (ServerConfiguration) -> String
    /// True for a key of type Bool: its flag may stand alone.
    var isBoolean = false

    /// The command-line flag for this key.
    public var flag: String { "--" + name.replacingOccurrences(of: "_", with: "-") }
    /// The environment variable for this key.
    public var environmentVariable: String { "ALIGND_" + name.uppercased() }
    /// The key's value in a configuration, rendered as text.
    public func value(in config: ServerConfiguration) -> String { current(config) }
  }

  /// Every key, in documentation order.
  public static let keys: [Key] = [
    string("host", \.host, "Address the gRPC listener binds to."),
    int("port", \.port, "gRPC port (0 picks a free port).", range: 0...65535),
    int("http_port", \.httpPort, "HTTP/JSON gateway port (OpenAI-compatible API, probes, metrics; 0 = a free port).", range: 0...65535),
    string("data_dir", \.dataDir, "Folder for the feedback store and checkpoint registry."),
    string("models_dir", \.modelsDir, "Folder holding the default models."),
    string("policy_model", \.policyModel, "Policy GGUF file or HF folder (relative to models_dir)."),
    optionalString("keys_file", \.keysFile, "API keys file; without one only loopback binds are allowed."),
    bool("allow_unauthenticated", \.allowUnauthenticated, "Allow a non-loopback bind without a keys file."),
    double("drain_timeout_seconds", \.drainTimeoutSeconds, "Grace period for in-flight RPCs after SIGTERM.", min: 0),
    int("max_request_bytes", \.maxRequestBytes, "Largest accepted request message in bytes.", range: 1024...(1 << 30)),
    int("max_concurrent_streams", \.maxConcurrentStreams, "Maximum concurrent HTTP/2 streams per connection.", range: 1...100_000),
    double("idle_timeout_seconds", \.idleTimeoutSeconds, "Idle connections are closed after this long.", min: 1),
    enumeration("log_level", \.logLevel, "Log level."),
    int("queue_capacity", \.queueCapacity, "Waiting generation requests per model before RESOURCE_EXHAUSTED.", range: 0...1_000_000),
    int("max_running_sequences", \.maxRunningSequences, "Most sequences decoding together.", range: 1...1024),
    int("max_step_tokens", \.maxStepTokens, "Most tokens in one forward step.", range: 16...65536),
    int("kv_cache_tokens", \.kvCacheTokens, "KV cache size in tokens.", range: 256...10_000_000),
    enumeration(
      "kv_cache_precision", \.kvCachePrecision,
      "How the KV cache stores keys and values: float16 halves its memory and attention's reads; float32 keeps them exact."),
    int(
      "prefix_cache_tokens", \.prefixCacheTokens,
      "KV tokens kept for prompt prefixes that later requests reuse, on top of kv_cache_tokens (0 = off).",
      range: 0...10_000_000),
    int(
      "speculative_tokens", \.speculativeTokens,
      "Prompt-lookup speculative decoding: most tokens drafted from the sequence's own text per step, verified in one forward pass; completions are identical with it on or off (0 = off).",
      range: 0...64),
    int(
      "speculative_max_sequences", \.speculativeMaxSequences,
      "Draft only while at most this many sequences decode (batched steps are compute-bound).", range: 1...1024),
    int("engine_threads", \.engineThreads, "Engine worker threads.", range: 1...256),
    enumeration(
      "kernels", \.kernels,
      "The engine's kernels: auto picks the fastest this CPU supports (avx2 needs AVX2, FMA and F16C; sse2 any x86-64; portable any CPU); all give the same results."),
    int("default_max_tokens", \.defaultMaxTokens, "max_tokens when a request leaves it unset.", range: 1...1_000_000),
    int("max_tokens_limit", \.maxTokensLimit, "Largest max_tokens a request may ask for.", range: 1...1_000_000),
    double("priority_aging_seconds", \.priorityAgingSeconds, "Queued requests rise one priority level per this many seconds.", min: 0.01),
    int("reward_batch_size", \.rewardBatchSize, "Most responses scored in one reward-model forward pass.", range: 1...1024),
    double("reward_batch_wait_ms", \.rewardBatchWaitMs, "Longest wait for a reward batch to fill, in milliseconds.", min: 0),
    int("safety_batch_size", \.safetyBatchSize, "Most texts in one forward pass of a batching safety model (guard).", range: 1...1024),
    double("safety_batch_wait_ms", \.safetyBatchWaitMs, "Longest wait for a safety-model batch to fill, in milliseconds.", min: 0),
    int("logprobs_batch_size", \.logprobsBatchSize, "Most Logprobs requests teacher-forced together.", range: 1...1024),
    double("logprobs_batch_wait_ms", \.logprobsBatchWaitMs, "Longest wait for a Logprobs batch to fill, in milliseconds.", min: 0),
    bool("batch_invariant", \.batchInvariant, "Same tokens for a seed whether a request runs alone or batched."),
    string("store_url", \.storeURL, "Empty for SQLite under data_dir, or a postgres:// URL shared by replicas."),
    double("rollout_sync_seconds", \.rolloutSyncSeconds, "How often active versions are re-read from the store (0 = off).", min: 0),
    int("max_checkpoint_bytes", \.maxCheckpointBytes, "Largest checkpoint upload in bytes.", range: 1024...(1 << 40)),
    double("reward_gate_margin", \.rewardGateMargin, "Largest accuracy drop a reward candidate may show on the held-out pairs.", min: 0),
    string("reward_gate_file", \.rewardGateFile, "Held-out preference pairs (TRL JSONL) of the reward gate (relative to models_dir)."),
    int("reward_gate_pairs", \.rewardGatePairs, "Most held-out pairs the reward gate scores.", range: 1...1_000_000),
    string("reward_model", \.rewardModel, "Reward model at startup (relative to models_dir; judge = generative judge on the policy)."),
    string("encoder_model", \.encoderModel, "Sentence encoder of the trained judges (relative to models_dir)."),
    string("safety_classifier", \.safetyClassifier, "Trained moderation classifier (relative to models_dir; empty = none)."),
    string("safety_gate_file", \.safetyGateFile, "Held-out labelled texts (JSONL) of the safety gate (relative to models_dir)."),
    double("safety_gate_margin", \.safetyGateMargin, "Largest recall drop or false-positive rise a safety candidate may show.", min: 0),
    int("safety_gate_texts", \.safetyGateTexts, "Most held-out texts the safety gate checks.", range: 1...1_000_000),
    string("policy_gate_file", \.policyGateFile, "Evaluation prompts (JSONL) of the policy quality gate (relative to models_dir)."),
    int("policy_gate_prompts", \.policyGatePrompts, "Evaluation prompts the policy quality gate generates on (0 = no quality gate).", range: 0...100_000),
    int("policy_gate_max_tokens", \.policyGateMaxTokens, "Tokens generated per evaluation prompt.", range: 1...4096),
    double("policy_gate_reward_margin", \.policyGateRewardMargin, "Largest mean-reward drop a policy candidate may show on the evaluation prompts.", min: 0),
    double("policy_gate_safety_margin", \.policyGateSafetyMargin, "Largest safety-flag-rate rise a policy candidate may show on the evaluation prompts.", min: 0),
    double("reward_sample_rate", \.rewardSampleRate, "Share of completions scored off the token path for the canary analysis (0..1).", min: 0),
    int("reward_sample_queue", \.rewardSampleQueue, "Most sampled completions waiting to be scored; more are dropped.", range: 1...1_000_000),
    bool("canary_analysis", \.canary.enabled, "Promote or roll back a policy canary on the canary analysis' verdict."),
    double("canary_check_seconds", \.canary.checkIntervalSeconds, "Seconds between canary comparisons.", min: 0.05),
    int("canary_min_samples", \.canary.minSamples, "Observations per arm each signal needs before it is judged.", range: 1...100_000_000),
    int("canary_min_feedback", \.canary.minFeedback, "Feedback judgements per arm before feedback is judged.", range: 1...100_000_000),
    double("canary_min_seconds", \.canary.minDurationSeconds, "A canary is promoted no sooner than this after its comparison started.", min: 0),
    double("canary_max_seconds", \.canary.maxDurationSeconds, "A canary still undecided after this long is rolled back (0 = never).", min: 0),
    double("canary_confidence", \.canary.confidence, "One-sided confidence of the comparison's bounds (0.5..0.9999).", min: 0.5),
    double("canary_max_reward_drop", \.canary.maxRewardDrop, "Largest drop in mean sampled reward a canary may show.", min: 0),
    double("canary_max_safety_flag_rise", \.canary.maxSafetyFlagRise, "Largest rise in safety-flag rate a canary may show.", min: 0),
    double("canary_max_error_rate_rise", \.canary.maxErrorRateRise, "Largest rise in error rate a canary may show.", min: 0),
    double("canary_max_ttft_ratio", \.canary.maxTTFTRatio, "Largest canary/active ratio of mean time to first token (0: not checked).", min: 0),
    double("canary_max_itl_ratio", \.canary.maxITLRatio, "Largest canary/active ratio of mean inter-token latency (0: not checked).", min: 0),
    double("canary_max_win_rate_drop", \.canary.maxWinRateDrop, "Largest drop of the canary's feedback win rate below one half.", min: 0),
    double("canary_max_rating_drop", \.canary.maxRatingDrop, "Largest drop in mean rating (0..1) a canary may show.", min: 0),
    string("safety_policy", \.safetyPolicy, "Safety policy JSON file (empty = built-in default)."),
    string("guard_model", \.guardModel, "Guard model GGUF or HF folder (empty = none)."),
    enumeration("safety_mode", \.safetyMode, "Default screening of generate requests that leave it unset."),
    string("tls_cert_file", \.tlsCertFile, "TLS certificate chain (PEM) for every listener (empty = plaintext)."),
    string("tls_key_file", \.tlsKeyFile, "Private key (PEM) of tls_cert_file."),
    string(
      "tls_client_ca_file", \.tlsClientCAFile,
      "CA (PEM) that admin clients' certificates must chain to: mutual TLS on admin_port."),
    Key(
      name: "admin_port", help: "Separate listener for the Admin service (0 = free port; unset = on port).",
      apply: { config, raw in
        let trimmed = raw.trimmingCharacters(in: .whitespaces)
        if trimmed.isEmpty {
          config.adminPort = nil
          return
        }
        guard let value = Int(trimmed), (0...65535).contains(value) else {
          throw ConfigurationError("admin_port must be an integer in 0...65535, got '\(raw)'")
        }
        config.adminPort = value
      },
      current: { $0.adminPort.map(String.init) ?? "" }),
    bool("generation_log", \.generationLog, "Record every answered generation in the store's generation log."),
    double(
      "generation_log_sample_rate", \.generationLogSampleRate, "Share of generation requests the log records.",
      min: 0, max: 1),
    double(
      "generation_log_retention_days", \.generationLogRetentionDays,
      "Generation log entries older than this are pruned (0 = no age limit).", min: 0),
    int(
      "generation_log_retention_rows", \.generationLogRetentionRows,
      "Most completions the generation log keeps (0 = no limit).", range: 0...1_000_000_000),
    bool(
      "generation_log_redact_pii", \.generationLogRedactPII,
      "Redact PII spans (rules scanner) from logged prompts and completions."),
    int(
      "generation_log_queue_capacity", \.generationLogQueueCapacity,
      "Answered requests waiting for the log writer before new ones are dropped.", range: 1...1_000_000),
    int(
      "feedback_rate_per_minute", \.feedbackRatePerMinute,
      "Feedback requests (SubmitFeedback, POST /v1/feedback) per API key per minute.", range: 1...1_000_000),
    bool(
      "feedback_allow_other_keys", \.feedbackAllowOtherKeys,
      "Accept feedback on completions another API key asked for."),
  ]

  /// Builds the configuration from its sources.
  ///
  /// - Parameters:
  ///   - flags: values given on the command line, by canonical key name.
  ///   - environment: the process environment (only `ALIGND_*` variables are read).
  ///   - configFile: path of a JSON config file, if any (flag `--config` or `ALIGND_CONFIG`).
  /// - Throws: ``ConfigurationError`` naming the key, the source and the problem.
  public static func load(
    flags: [String: String],
    environment: [String: String],
    configFile: String?
  ) throws -> ServerConfiguration {
    var config = ServerConfiguration()
    let known = Set(keys.map(\.name))
    for name in flags.keys where !known.contains(name) {
      throw ConfigurationError("unknown configuration key '\(name)'")
    }

    if let path = configFile {
      let values = try readFile(path)
      for (name, raw) in values.sorted(by: { $0.key < $1.key }) {
        guard let key = keys.first(where: { $0.name == name }) else {
          throw ConfigurationError("\(path): unknown configuration key '\(name)'")
        }
        do { try key.apply(&config, raw) } catch let error as ConfigurationError {
          throw ConfigurationError("\(path): \(error.description)")
        }
      }
    }
    for key in keys {
      if let raw = environment[key.environmentVariable] {
        do { try key.apply(&config, raw) } catch let error as ConfigurationError {
          throw ConfigurationError("environment \(key.environmentVariable): \(error.description)")
        }
      }
    }
    for key in keys {
      if let raw = flags[key.name] {
        do { try key.apply(&config, raw) } catch let error as ConfigurationError {
          throw ConfigurationError("flag \(key.flag): \(error.description)")
        }
      }
    }
    try config.validateListeners()
    try config.validateCanary()
    try config.validateKernels()
    return config
  }

  /// Reads `--<key> VALUE`, `--<key>=VALUE` and `--config FILE` from command-line arguments, for
  /// every key of the table: the flags are derived from ``keys``, never written out by hand. A
  /// boolean key also stands alone (`--allow-unauthenticated` means true).
  /// - Returns: the values given, by canonical key name, and the config file named, if any.
  /// - Throws: ``ConfigurationError`` for an unknown flag or a flag without its value.
  public static func flags(from arguments: [String]) throws -> (values: [String: String], configFile: String?) {
    let byFlag = Dictionary(uniqueKeysWithValues: keys.map { ($0.flag, $0) })
    var values: [String: String] = [:]
    var configFile: String? = nil
    var index = 0
    while index < arguments.count {
      let argument = arguments[index]
      index += 1
      guard argument.hasPrefix("--") else {
        throw ConfigurationError("unexpected argument '\(argument)' (flags are --<key> VALUE; see `alignd config --help`)")
      }
      var flag = argument
      var inline: String? = nil
      if let equals = argument.firstIndex(of: "=") {
        flag = String(argument[..<equals])
        inline = String(argument[argument.index(after: equals)...])
      }
      func value() throws -> String {
        if let inline { return inline }
        guard index < arguments.count else { throw ConfigurationError("flag \(flag) needs a value") }
        defer { index += 1 }
        return arguments[index]
      }
      if flag == "--config" {
        configFile = try value()
        continue
      }
      guard let key = byFlag[flag] else {
        throw ConfigurationError("unknown flag \(flag) (every key of `alignd config` is a flag: --<key-with-dashes>)")
      }
      if key.isBoolean, inline == nil {
        // A boolean flag alone means true; a following true/false (or yes/no, on/off, 1/0) is its value.
        let next = index < arguments.count ? arguments[index].lowercased() : ""
        if Self.booleanWords.contains(next) {
          values[key.name] = arguments[index]
          index += 1
        } else {
          values[key.name] = "true"
        }
        continue
      }
      values[key.name] = try value()
    }
    return (values, configFile)
  }

  static let booleanWords: Set<String> = ["1", "true", "yes", "on", "0", "false", "no", "off"]

  /// Every key as a flag, with its environment variable, its help and its default: the help text
  /// of `alignd serve` and `alignd config`, derived from the key table and the defaults of
  /// ``ServerConfiguration``.
  public static var flagHelp: String {
    let defaults = ServerConfiguration()
    var lines = [
      "Every configuration key is a flag, an ALIGND_<KEY> environment variable and a key of the JSON file "
        + "given with --config FILE (or ALIGND_CONFIG); precedence flag > environment > file > default.",
      "",
    ]
    for key in keys {
      let value = key.value(in: defaults)
      lines.append("\(key.flag) \(key.isBoolean ? "[true|false]" : "<value>")  (\(key.environmentVariable))")
      lines.append("      \(key.help) Default: \(value.isEmpty ? "none" : value).")
    }
    return lines.joined(separator: "\n")
  }

  /// A scalar value of the JSON config file.
  private enum Scalar: Decodable {
    case string(String), number(Double), bool(Bool), null

    init(from decoder: any Decoder) throws {
      let container = try decoder.singleValueContainer()
      if container.decodeNil() { self = .null }
      else if let value = try? container.decode(Bool.self) { self = .bool(value) }
      else if let value = try? container.decode(Double.self) { self = .number(value) }
      else if let value = try? container.decode(String.self) { self = .string(value) }
      else {
        throw DecodingError.typeMismatch(
          Scalar.self,
          .init(codingPath: decoder.codingPath, debugDescription: "must be a string, number or boolean"))
      }
    }

    var text: String? {
      switch self {
      case .string(let value): return value
      case .bool(let value): return value ? "true" : "false"
      case .number(let value):
        return value == value.rounded() && abs(value) < 1e15 ? String(Int64(value)) : String(value)
      case .null: return nil
      }
    }
  }

  /// Reads a JSON object of key → scalar from a config file.
  static func readFile(_ path: String) throws -> [String: String] {
    guard let data = FileManager.default.contents(atPath: path) else {
      throw ConfigurationError("cannot read config file \(path)")
    }
    let object: [String: Scalar]
    do {
      object = try JSONDecoder().decode([String: Scalar].self, from: data)
    } catch let DecodingError.typeMismatch(_, context) where !context.codingPath.isEmpty {
      let key = context.codingPath.map(\.stringValue).joined(separator: ".")
      throw ConfigurationError("\(path): '\(key)' must be a string, number or boolean")
    } catch {
      throw ConfigurationError("\(path): expected a JSON object of configuration keys (\(error))")
    }
    return object.compactMapValues(\.text)
  }

  // MARK: Key builders

  /// A key whose values are the cases of an enum (its raw values, listed in the help and errors).
  private static func enumeration<Value: RawRepresentable & CaseIterable & Sendable>(
    _ name: String, _ path: WritableKeyPath<ServerConfiguration, Value> & Sendable, _ help: String
  ) -> Key where Value.RawValue == String {
    let names = Value.allCases.map(\.rawValue)
    return Key(
      name: name, help: help + " One of " + names.joined(separator: ", ") + ".",
      apply: { config, raw in
        guard let value = Value(rawValue: raw) else {
          throw ConfigurationError("\(name) must be one of \(names.joined(separator: ", ")), got '\(raw)'")
        }
        config[keyPath: path] = value
      },
      current: { $0[keyPath: path].rawValue })
  }

  private static func string(
    _ name: String, _ path: WritableKeyPath<ServerConfiguration, String> & Sendable, _ help: String
  ) -> Key {
    Key(
      name: name, help: help,
      apply: { config, raw in
        guard !raw.isEmpty else { throw ConfigurationError("\(name) must not be empty") }
        config[keyPath: path] = raw
      },
      current: { $0[keyPath: path] })
  }

  private static func optionalString(
    _ name: String, _ path: WritableKeyPath<ServerConfiguration, String?> & Sendable, _ help: String
  ) -> Key {
    Key(
      name: name, help: help,
      apply: { config, raw in config[keyPath: path] = raw.isEmpty ? nil : raw },
      current: { $0[keyPath: path] ?? "" })
  }

  private static func int(
    _ name: String, _ path: WritableKeyPath<ServerConfiguration, Int> & Sendable, _ help: String,
    range: ClosedRange<Int>
  ) -> Key {
    Key(
      name: name, help: help,
      apply: { config, raw in
        guard let value = Int(raw.trimmingCharacters(in: .whitespaces)) else {
          throw ConfigurationError("\(name) must be an integer, got '\(raw)'")
        }
        guard range.contains(value) else {
          throw ConfigurationError("\(name) must be in \(range.lowerBound)...\(range.upperBound), got \(value)")
        }
        config[keyPath: path] = value
      },
      current: { String($0[keyPath: path]) })
  }

  private static func double(
    _ name: String, _ path: WritableKeyPath<ServerConfiguration, Double> & Sendable, _ help: String,
    min: Double, max: Double = .infinity
  ) -> Key {
    Key(
      name: name, help: help,
      apply: { config, raw in
        guard let value = Double(raw.trimmingCharacters(in: .whitespaces)), value.isFinite else {
          throw ConfigurationError("\(name) must be a number, got '\(raw)'")
        }
        guard value >= min else { throw ConfigurationError("\(name) must be at least \(min), got \(value)") }
        guard value <= max else { throw ConfigurationError("\(name) must be at most \(max), got \(value)") }
        config[keyPath: path] = value
      },
      current: { config in
        // Whole numbers as written in the docs (30, not 30.0).
        let value = config[keyPath: path]
        return value == value.rounded() && abs(value) < 1e15 ? String(Int64(value)) : String(value)
      })
  }

  private static func bool(
    _ name: String, _ path: WritableKeyPath<ServerConfiguration, Bool> & Sendable, _ help: String
  ) -> Key {
    Key(
      name: name, help: help,
      apply: { config, raw in
        switch raw.lowercased() {
        case "1", "true", "yes", "on": config[keyPath: path] = true
        case "0", "false", "no", "off": config[keyPath: path] = false
        default: throw ConfigurationError("\(name) must be true or false, got '\(raw)'")
        }
      },
      current: { $0[keyPath: path] ? "true" : "false" }, isBoolean: true)
  }
}

/// The `kernels` configuration key: auto, or one of the engine's kernel sets by name.
public enum KernelChoice: String, Sendable, CaseIterable {
  case auto, avx2, sse2, portable

  /// The forced set; nil for auto.
  public var set: KernelSet? { KernelSet(rawValue: rawValue) }
}
