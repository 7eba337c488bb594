import AlignAPI
import AlignEngine
import AlignRollout
import AlignServing
import AlignStore
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import Logging
import ServiceLifecycle
import Synchronization

/// Why the server could not start; `exitCode` follows sysexits where one fits.
public struct StartupError: Error, CustomStringConvertible {
  public var description: String
  public var exitCode: Int32
  public init(_ description: String, exitCode: Int32 = 1) {
    self.description = description
    self.exitCode = exitCode
  }
}

/// The alignd server: one gRPC listener and the model loader in a ServiceGroup with graceful
/// shutdown on SIGTERM/SIGINT.
///
/// Startup order: the port opens first with health NOT_SERVING (so probes and clients get a clear
/// answer instead of a refused connection), the models load, then health turns SERVING. On SIGTERM
/// health turns NOT_SERVING, the listener stops accepting RPCs, in-flight RPCs get
/// `drain_timeout_seconds` to finish, and then whatever remains is cancelled.
public struct AlignServerApp: Sendable {
  /// The server version reported by GetStatus.
  public static let version = "0.1.0"

  public let configuration: ServerConfiguration

  public init(configuration: ServerConfiguration) {
    self.configuration = configuration
  }

  /// True for addresses that only this machine can reach.
  public static func isLoopback(_ host: String) -> Bool {
    host == "localhost" || host == "::1" || host.hasPrefix("127.")
  }

  /// Runs until SIGTERM/SIGINT (then drains) or a fatal error.
  public func run() async throws {
    let logger = makeLogger()
    // swift-metrics → Prometheus before anything creates a series (served on GET /metrics).
    let metricsRegistry = MetricsBootstrap.registry
    let access = try accessControl(logger: logger)
    let security = try listenerSecurity()
    let status = ServingStatus()
    let models = makeModelHost()
    let stores = try await openStores()
    let rollout = RolloutController(
      models: models, registry: stores.registry, state: stores.state,
      rewardGate: RewardGateSet(
        path: Self.resolve(configuration.rewardGateFile, against: configuration.modelsDir),
        limit: configuration.rewardGatePairs, margin: configuration.rewardGateMargin),
      safetyGate: SafetyGateSet(
        path: Self.resolve(configuration.safetyGateFile, against: configuration.modelsDir),
        limit: configuration.safetyGateTexts, margin: configuration.safetyGateMargin),
      policyGate: configuration.policyGatePrompts == 0
        ? nil
        : PolicyGateSet(
          path: Self.resolve(configuration.policyGateFile, against: configuration.modelsDir),
          limit: configuration.policyGatePrompts, maxTokens: configuration.policyGateMaxTokens,
          rewardMargin: configuration.policyGateRewardMargin, safetyMargin: configuration.policyGateSafetyMargin),
      canary: configuration.canary,
      logger: logger)
    let generationLog = GenerationLogWriter(
      store: stores.generations, settings: configuration.generationLogSettings, logger: logger)
    let pipeline = InferencePipeline(
      status: status, models: models, limits: generationLimits, defaultSafetyMode: configuration.safetyMode,
      recorder: configuration.generationLog ? generationLog : nil)
    let admin = AdminService(
      status: status, models: models, feedback: stores.feedback, generations: stores.generations,
      flushGenerationLog: { await generationLog.flush() }, registry: stores.registry, rollout: rollout, logger: logger)
    let feedback =
      configuration.generationLog
      ? AppFeedback(
        store: stores.feedback, log: stores.generations, flushLog: { await generationLog.flush() },
        ratePerMinute: configuration.feedbackRatePerMinute, allowOtherKeys: configuration.feedbackAllowOtherKeys,
        onStored: { [signals = models.signals] in signals.record($0) })
      : nil
    let services = try await grpcServices(
      pipeline: pipeline, feedback: feedback, admin: admin, interceptors: access.interceptors, security: security,
      logger: logger)
    let loader = modelLoader(models: models, rollout: rollout, status: status, logger: logger)
    // The HTTP/JSON gateway maps onto the same pipeline (Docs/HTTP.md). It is last in the group
    // so that it is the first to hear of a graceful shutdown: it turns the status to draining at
    // once for both surfaces.
    let http = HTTPGatewayService(
      gateway: HTTPGateway(
        pipeline: pipeline, keys: access.gatewayKeys, maxRequestBytes: configuration.maxRequestBytes,
        metrics: metricsRegistry, admin: configuration.adminPort == nil ? admin : nil, feedback: feedback),
      host: bindHost, port: configuration.httpPort, idleTimeoutSeconds: configuration.idleTimeoutSeconds,
      tls: security?.http, logger: logger)
    let adminListener: [ServiceGroupConfiguration.ServiceConfiguration] = services.admin.map { [.init(service: $0)] } ?? []
    let canary = CanaryAnalysisService(models: models, rollout: rollout, status: status, logger: logger)
    // The log writer comes first so that it stops last, after the listeners' final answers.
    try await runServiceGroup(
      [.init(service: generationLog), .init(service: services.main), .init(service: loader, successTerminationBehavior: .ignore)]
        + adminListener
        + [.init(service: canary), .init(service: http)],
      logger: logger)
    models.shutdown()
    await stores.close()
    logger.info("alignd stopped")
  }

  // MARK: Startup steps

  func makeLogger() -> Logger {
    var logger = Logger(label: "alignd")
    logger.logLevel = configuration.logLevel
    return logger
  }

  /// The interceptors every RPC passes (metrics, auth, message size) and the keys the HTTP gateway
  /// checks. Secure by default: without a keys file only a loopback bind is allowed, unless
  /// `allow_unauthenticated` says otherwise.
  func accessControl(logger: Logger) throws -> (
    interceptors: [ConditionalInterceptor<any ServerInterceptor>], gatewayKeys: APIKeyStore?
  ) {
    let config = configuration
    // Metrics first, so that calls the later interceptors refuse are counted with their status code.
    var interceptors: [ConditionalInterceptor<any ServerInterceptor>] = [.apply(GRPCMetricsInterceptor(), to: .all)]
    var gatewayKeys: APIKeyStore? = nil
    if let keysFile = config.keysFile {
      let keys: APIKeyStore
      do {
        keys = try APIKeyStore(contentsOf: keysFile)
      } catch let error as ConfigurationError {
        throw StartupError(error.description, exitCode: 78)
      }
      logger.info("API keys loaded", metadata: ["keys": "\(keys.entries.count)", "file": "\(keysFile)"])
      interceptors.append(.apply(AuthInterceptor(keys: keys), to: .all))
      gatewayKeys = keys
    } else if Self.isLoopback(config.host) {
      logger.notice(
        "no keys file: authentication is off, so alignd binds to loopback only",
        metadata: ["host": "\(config.host)"])
    } else if config.allowUnauthenticated {
      logger.warning(
        "no keys file and a non-loopback bind: every client can call every RPC, admin included",
        metadata: ["host": "\(config.host)"])
    } else {
      throw StartupError(
        "refusing to bind \(config.host) without a keys file: give --keys-file, bind a loopback address, or pass --allow-unauthenticated",
        exitCode: 78)
    }
    interceptors.append(.apply(MessageSizeInterceptor(limit: config.maxRequestBytes), to: .all))
    return (interceptors, gatewayKeys)
  }

  /// TLS material of the listeners, read and checked now (nil: plaintext).
  func listenerSecurity() throws -> ListenerSecurity? {
    do {
      return try ListenerSecurity(configuration: configuration)
    } catch let error as ConfigurationError {
      throw StartupError(error.description, exitCode: 78)
    }
  }

  /// The model host: how generation is scheduled, how the engine runs, how judging work batches.
  func makeModelHost() -> ModelHost {
    let config = configuration
    let scheduler = GenerationScheduler.Configuration(
      maxRunningSequences: config.maxRunningSequences, maxStepTokens: config.maxStepTokens,
      queueCapacity: config.queueCapacity, kvCapacityTokens: config.kvCacheTokens,
      agingInterval: config.priorityAgingSeconds, prefixCacheTokens: config.prefixCacheTokens,
      kvCachePrecision: config.kvCachePrecision,
      promptLookup: PromptLookup(maxDraftTokens: config.speculativeTokens),
      lookupMaxSequences: config.speculativeMaxSequences)
    let engine = EngineSettings(
      threads: config.engineThreads, maxBatchTokens: max(config.maxStepTokens, 256),
      gemmMinTokens: config.batchInvariant ? Int.max : EngineSettings().gemmMinTokens,
      kernels: config.kernels.set ?? KernelSet.detected)
    return ModelHost(
      scheduler: scheduler, engine: engine, batching: judgingBatching, rewardSampleRate: config.rewardSampleRate,
      rewardSampleQueue: config.rewardSampleQueue)
  }

  /// The judging batchers' sizes, waits and priority aging (config `*_batch_size`, `*_batch_wait_ms`).
  var judgingBatching: JudgingBatching {
    let config = configuration
    let defaults = JudgingBatching()
    func wait(_ milliseconds: Double) -> Duration { .microseconds(Int64((milliseconds * 1000).rounded())) }
    var batching = defaults
    batching.reward.maxBatchSize = config.rewardBatchSize
    batching.reward.maxDelay = wait(config.rewardBatchWaitMs)
    batching.reward.agingInterval = config.priorityAgingSeconds
    batching.safety.maxBatchSize = config.safetyBatchSize
    batching.safety.maxDelay = wait(config.safetyBatchWaitMs)
    batching.safety.agingInterval = config.priorityAgingSeconds
    batching.logprobs.maxBatchSize = config.logprobsBatchSize
    batching.logprobs.maxDelay = wait(config.logprobsBatchWaitMs)
    batching.logprobs.agingInterval = config.priorityAgingSeconds
    return batching
  }

  /// Limits of every generation request.
  var generationLimits: GenerationLimits {
    GenerationLimits(
      // A default above the limit would refuse every request that leaves max_tokens unset.
      defaultMaxTokens: min(configuration.defaultMaxTokens, configuration.maxTokensLimit),
      maxTokensLimit: configuration.maxTokensLimit, maxSamples: min(16, configuration.maxRunningSequences))
  }

  /// The feedback store (which also keeps the rollout state) and the checkpoint registry.
  struct Stores {
    let feedback: any FeedbackStore
    let generations: any GenerationLogStore
    let state: any RolloutStateStore
    let registry: CheckpointRegistry
    /// Closes the store (after the services stopped).
    let close: @Sendable () async -> Void
  }

  func openStores() async throws -> Stores {
    let config = configuration
    let feedback: any FeedbackStore & RolloutStateStore & GenerationLogStore
    let close: @Sendable () async -> Void
    if config.storeURL.isEmpty {
      do {
        let store = try SQLiteFeedbackStore(dataDirectory: URL(fileURLWithPath: config.dataDir))
        feedback = store
        close = { try? store.close() }
      } catch {
        throw StartupError("cannot open the feedback store in \(config.dataDir): \(error)", exitCode: 73)
      }
    } else {
      do {
        let store = try await PostgresFeedbackStore(url: config.storeURL)
        feedback = store
        close = { await store.close() }
      } catch {
        // The error never holds the password (PostgresURL redacts it).
        throw StartupError("cannot open the PostgreSQL feedback store: \(error)", exitCode: 69)
      }
    }
    do {
      var limits = CheckpointRegistryLimits()
      limits.maxUploadBytes = UInt64(config.maxCheckpointBytes)
      limits.maxExtractedBytes = UInt64(config.maxCheckpointBytes) * 2
      let registry = try CheckpointRegistry(
        root: URL(fileURLWithPath: config.dataDir).appendingPathComponent("checkpoints").path, limits: limits)
      return Stores(feedback: feedback, generations: feedback, state: feedback, registry: registry, close: close)
    } catch {
      await close()
      throw StartupError("cannot open the checkpoint registry in \(config.dataDir)/checkpoints: \(error)", exitCode: 73)
    }
  }

  /// The address the listeners bind ("localhost" binds IPv4 loopback).
  var bindHost: String { configuration.host == "localhost" ? "127.0.0.1" : configuration.host }

  /// The gRPC listeners: health, reflection, Inference and (unless `admin_port` gives it a
  /// listener of its own, mutual TLS there when configured) Admin on the main port.
  func grpcServices(
    pipeline: InferencePipeline, feedback: AppFeedback?, admin: AdminService, interceptors: [ConditionalInterceptor<any ServerInterceptor>],
    security: ListenerSecurity?, logger: Logger
  ) async throws -> (main: GRPCServerService, admin: GRPCServerService?) {
    let config = configuration
    let index: DescriptorIndex
    do {
      index = try DescriptorIndex(base64: alignDescriptorSetBase64)
    } catch {
      throw StartupError("the embedded API descriptors are unreadable: \(error)")
    }
    let health = HealthService(status: pipeline.status, services: Set([""] + index.services))
    let adminOnMain: [any RegistrableRPCService] = config.adminPort == nil ? [admin] : []
    let services: [any RegistrableRPCService] = [
      health,
      ReflectionService(index: index),
      ReflectionServiceV1Alpha(index: index),
      InferenceService(pipeline: pipeline, feedback: feedback),
    ] + adminOnMain
    let transportConfig = HTTP2ServerTransport.Posix.Config.defaults { transport in
      // The transport's own limit is a backstop at twice the configured one; messages between the
      // two get a clear RESOURCE_EXHAUSTED from MessageSizeInterceptor.
      transport.rpc.maxRequestPayloadSize = config.maxRequestBytes * 2
      transport.http2.maxConcurrentStreams = config.maxConcurrentStreams
      transport.connection.maxIdleTime = .milliseconds(Int64(config.idleTimeoutSeconds * 1000))
      // The transport closes an idle connection only once the peer acknowledges the PING after its
      // GOAWAY; UnresponsivePeerHandler closes connections whose peer never answers.
      let limit = UnresponsivePeerHandler.limit(idleTimeoutSeconds: config.idleTimeoutSeconds)
      transport.channelDebuggingCallbacks.onAcceptTCPConnection = { channel in
        channel.eventLoop.makeCompletedFuture { try UnresponsivePeerHandler.install(on: channel, limit: limit) }
      }
      transport.channelDebuggingCallbacks.onAcceptHTTP2Stream = { stream in
        stream.eventLoop.makeCompletedFuture { UnresponsivePeerHandler.track(stream: stream) }
      }
    }
    let server = GRPCServer(
      transport: .http2NIOPosix(
        address: .ipv4(host: bindHost, port: config.port), transportSecurity: security?.grpc ?? .plaintext,
        config: transportConfig),
      services: services, interceptorPipeline: interceptors)
    let adminServer = config.adminPort.map { port in
      GRPCServer(
        transport: .http2NIOPosix(
          address: .ipv4(host: bindHost, port: port), transportSecurity: security?.admin ?? .plaintext,
          config: transportConfig),
        services: [health, admin], interceptorPipeline: interceptors)
    }
    return (
      GRPCServerService(server: server, status: pipeline.status, logger: logger, listener: .main),
      adminServer.map { GRPCServerService(server: $0, status: pipeline.status, logger: logger, listener: .admin) }
    )
  }

  /// Loads the models once the port is open (the startup policy, the safety checker, the reward
  /// model), then keeps the replica in step with the store.
  func modelLoader(models: ModelHost, rollout: RolloutController, status: ServingStatus, logger: Logger) -> ModelLoaderService {
    let config = configuration
    let policyPath = Self.resolve(config.policyModel, against: config.modelsDir)
    let rewardPath =
      config.rewardModel.isEmpty || config.rewardModel == "judge" ? nil : Self.resolve(config.rewardModel, against: config.modelsDir)
    let classifierPath = config.safetyClassifier.isEmpty ? nil : Self.resolve(config.safetyClassifier, against: config.modelsDir)
    let safetyPolicyFile = config.safetyPolicy.isEmpty ? nil : config.safetyPolicy
    let guardPath = config.guardModel.isEmpty ? nil : Self.resolve(config.guardModel, against: config.modelsDir)
    let modelsDir = config.modelsDir
    return ModelLoaderService(
      models: models, rollout: rollout, status: status,
      startup: {
        // The trained judges' shared encoder and classifiers, before any judge loads.
        models.setJudges(
          try await Task.detached {
            try JudgeModels.load(modelsDirectory: modelsDir, encoderPath: config.encoderModel, threads: config.engineThreads)
          }.value)
        try await rollout.startup(defaultPolicyPath: policyPath)
        try await rollout.startSafety(policyFile: safetyPolicyFile, classifierPath: classifierPath, guardPath: guardPath)
        await rollout.startReward(configured: rewardPath)
      },
      syncInterval: config.rolloutSyncSeconds, logger: logger)
  }

  /// Runs the services until SIGTERM/SIGINT, then gives in-flight work `drain_timeout_seconds`.
  func runServiceGroup(_ services: [ServiceGroupConfiguration.ServiceConfiguration], logger: Logger) async throws {
    var groupConfig = ServiceGroupConfiguration(
      services: services, gracefulShutdownSignals: [.sigterm, .sigint], logger: logger)
    groupConfig.maximumGracefulShutdownDuration = .milliseconds(Int64(configuration.drainTimeoutSeconds * 1000))
    groupConfig.maximumCancellationDuration = .seconds(5)
    do {
      try await ServiceGroup(configuration: groupConfig).run()
    } catch let error as StartupError {
      throw error
    } catch let error as ServiceGroupError {
      throw StartupError("stopped: \(error)")
    }
  }

  /// Resolves a model path relative to the models folder.
  static func resolve(_ path: String, against folder: String) -> String {
    path.hasPrefix("/") ? path : URL(fileURLWithPath: folder).appendingPathComponent(path).path
  }
}

/// Runs a gRPC server; begins draining on graceful shutdown.
struct GRPCServerService: Service {
  /// Which listener this is: the main one (inference, and admin unless `admin_port` is set) or
  /// the admin one. Their log lines differ so that tools reading the port find the right one.
  enum Listener { case main, admin }

  let server: GRPCServer<HTTP2ServerTransport.Posix>
  let status: ServingStatus
  let logger: Logger
  let listener: Listener

  func run() async throws {
    try await withGracefulShutdownHandler {
      try await withThrowingDiscardingTaskGroup { group in
        group.addTask {
          do {
            try await server.serve()
          } catch {
            throw StartupError(
              "the gRPC listener failed: \(Self.describe(error)) (is the port already in use?)", exitCode: 69)
          }
        }
        if let address = try? await server.listeningAddress {
          switch listener {
          case .main: logger.info("alignd listening", metadata: ["address": "\(address)", "protocol": "grpc"])
          case .admin: logger.info("alignd admin listening", metadata: ["address": "\(address)", "protocol": "grpc"])
          }
        }
      }
    } onGracefulShutdown: {
      logger.info("draining: no new RPCs are admitted; in-flight RPCs may finish")
      status.beginDraining()
      server.beginGracefulShutdown()
    }
  }

  static func describe(_ error: any Error) -> String {
    if let error = error as? RuntimeError, let cause = error.cause { return "\(error.message): \(cause)" }
    return "\(error)"
  }
}

/// Loads the models after the port is open, then marks the server SERVING. A load failure stops
/// the server with a clear error rather than leaving it NOT_SERVING forever.
struct ModelLoaderService: Service {
  let models: ModelHost
  let rollout: RolloutController
  let status: ServingStatus
  /// Loads the startup models through the rollout: policy, safety checker, reward model.
  let startup: @Sendable () async throws -> Void
  /// Seconds between re-reads of the active versions from the store (0 = never).
  let syncInterval: Double
  let logger: Logger

  func run() async throws {
    let start = ContinuousClock.now
    // Loading is CPU-bound work that cannot stop halfway, so it runs detached and this service
    // stops waiting for it as soon as it is cancelled or a graceful shutdown begins; otherwise a
    // slow load would hold up shutdown (and ServiceGroup aborts the process when cancellation
    // takes too long).
    let load = Task.detached(priority: .userInitiated, operation: startup)
    do {
      try await cancelWhenGracefulShutdown {
        try await Self.waitCancellably(for: load)
      }
    } catch is CancellationError {
      logger.info("model loading abandoned: the server is stopping")
      return
    } catch {
      status.markFailed("\(error)")
      throw StartupError("cannot load the models: \(error)", exitCode: 66)
    }
    logger.info(
      "models loaded",
      metadata: [
        "policy": "\(models.versions.policy)",
        "reward": "\(models.versions.reward)",
        "safety": "\(models.versions.safety)",
        "kernels": "\(models.engineKernels.rawValue)",
        "cpu": "\(CPUFeatures.current.summary)",
        "seconds": "\((ContinuousClock.now - start).formatted(.units(allowed: [.seconds], fractionalPart: .show(length: 2))))",
      ])
    status.markServing()
    // Replicas sharing a store converge on the versions another replica activated.
    guard syncInterval > 0 else { return }
    try? await cancelWhenGracefulShutdown {
      while !Task.isCancelled {
        try await Task.sleep(for: .milliseconds(Int64(syncInterval * 1000)))
        await rollout.sync()
      }
    }
  }

  /// Waits for `task`, but returns (throwing CancellationError) as soon as the caller is cancelled.
  static func waitCancellably(for task: Task<Void, any Error>) async throws {
    let once = OnceContinuation()
    try await withTaskCancellationHandler {
      try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
        once.set(continuation)
        Task {
          let result = await task.result
          once.resume(result)
        }
      }
    } onCancel: {
      once.resume(.failure(CancellationError()))
    }
  }
}

/// A continuation resumed at most once, by whichever of several racers comes first.
final class OnceContinuation: Sendable {
  private struct State {
    var continuation: CheckedContinuation<Void, any Error>?
    var early: Result<Void, any Error>?
  }
  private let state = Mutex(State())

  func set(_ continuation: CheckedContinuation<Void, any Error>) {
    let early: Result<Void, any Error>? = state.withLock { state in
      if let early = state.early { return early }
      state.continuation = continuation
      return nil
    }
    if let early { continuation.resume(with: early) }
  }

  func resume(_ result: Result<Void, any Error>) {
    let continuation: CheckedContinuation<Void, any Error>? = state.withLock { state in
      if let continuation = state.continuation {
        state.continuation = nil
        state.early = .success(())  // mark as done
        return continuation
      }
      if state.early == nil { state.early = result }
      return nil
    }
    continuation?.resume(with: result)
  }
}
