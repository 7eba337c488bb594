import AlignAPI
import AlignEngine
import AlignServer
import AlignServing
import AlignStore
import AlignTestSupport
import Foundation
import GRPCCore
import GRPCInProcessTransport
import Testing

/// The gRPC Inference service as a mapper onto the serving pipeline, over an in-process
/// transport (no process, no port), on a tiny random policy.
@Suite("Inference service in process")
struct InferenceServiceTests {
  static func withService<T: Sendable>(
    _ body: (Alignd_V1_Inference.Client<InProcessTransport.Client>, InferencePipeline) async throws -> T
  ) async throws -> T {
    let models = ModelHost(
      scheduler: .init(maxRunningSequences: 8, maxStepTokens: 128, queueCapacity: 16, kvCapacityTokens: 4096),
      engine: EngineSettings(threads: 1, quantizedActivations: false))
    defer { models.shutdown() }
    try await models.loadPolicy(path: TestModels.tinyPolicy)
    models.safety.activate(SafetySnapshot(checker: try SafetyChecker(policy: try SafetyPolicy.builtInDefault(), backends: [])))
    let status = ServingStatus()
    status.markServing()
    let pipeline = InferencePipeline(status: status, models: models, limits: GenerationLimits(), defaultSafetyMode: .off)
    let transport = InProcessTransport()
    let server = GRPCServer(transport: transport.server, services: [InferenceService(pipeline: pipeline)])
    return try await withThrowingTaskGroup(of: Void.self) { group in
      group.addTask { try await server.serve() }
      let result = try await withGRPCClient(transport: transport.client) { client in
        try await body(Alignd_V1_Inference.Client(wrapping: client), pipeline)
      }
      server.beginGracefulShutdown()
      try await group.waitForAll()
      return result
    }
  }

  static let request = Alignd_V1_GenerateRequest.with {
    $0.prompt = "hello there"
    $0.sampling = .with {
      $0.maxTokens = 6
      $0.temperature = 0
      $0.seed = 3
      $0.ignoreEos = true
      $0.logprobs = 2
    }
    $0.returnTokenIds = true
  }

  @Test("Generate and GenerateStream map the same request onto the pipeline and stamp its versions")
  func generate() async throws {
    try await Self.withService { inference, pipeline in
      let unary = try await inference.generate(Self.request)
      let completion = try #require(unary.completions.first)
      #expect(completion.tokenIds.count == 6)
      #expect(completion.logprobs.count == 6)
      #expect(completion.logprobs.allSatisfy { $0.top.count == 2 })
      #expect(completion.finishReason == .length)
      #expect(unary.usage.completionTokens == 6 && unary.usage.totalTokens == unary.usage.promptTokens + 6)
      #expect(unary.versions.policy == pipeline.models.policy?.version)
      #expect(unary.versions.reward == "judge:\(pipeline.models.policy?.version ?? "")")

      let (text, end) = try await inference.generateStream(Self.request) { response in
        var text = ""
        var end: Alignd_V1_StreamEnd? = nil
        for try await message in response.messages {
          #expect(message.responseID.hasPrefix("gen-"))
          switch message.event {
          case .chunk(let chunk): text += chunk.text
          case .end(let last): end = last
          case nil: break
          }
        }
        return (text, end)
      }
      #expect(text == completion.text, "greedy text is the same streamed or not")
      #expect(end?.completions.first?.finishReason == .length)
      #expect(end?.versions == unary.versions)
    }
  }

  @Test("domain errors reach the client with their status codes")
  func errors() async throws {
    try await Self.withService { inference, pipeline in
      func code(_ call: () async throws -> Void) async -> RPCError.Code? {
        do {
          try await call()
          return nil
        } catch let error as RPCError {
          return error.code
        } catch {
          return .unknown
        }
      }
      #expect(await code { _ = try await inference.generate(.init()) } == .invalidArgument)
      var bestOfStream = Self.request
      bestOfStream.sampling.bestOf = 2
      #expect(
        await code {
          try await inference.generateStream(bestOfStream) { response in for try await _ in response.messages {} }
        } == .invalidArgument)
      var badMode = Self.request
      badMode.safety.mode = .UNRECOGNIZED(9)
      #expect(await code { _ = try await inference.generate(badMode) } == .invalidArgument)
      var huge = Self.request
      huge.sampling.maxTokens = 100_000
      #expect(await code { _ = try await inference.generate(huge) } == .invalidArgument)
      // The judge needs a chat template the tiny policy lacks.
      #expect(
        await code { _ = try await inference.score(.with { $0.items = [.with { $0.prompt = "p"; $0.response = "r" }] }) }
          == .failedPrecondition)
      pipeline.status.beginDraining()
      #expect(await code { _ = try await inference.generate(Self.request) } == .unavailable)
    }
  }

  @Test("a deadline that passes while a generation runs ends it with DEADLINE_EXCEEDED")
  func deadline() async throws {
    try await Self.withService { inference, _ in
      var long = Self.request
      long.sampling.maxTokens = 900
      do {
        var options = CallOptions.defaults
        options.timeout = .milliseconds(1)
        _ = try await inference.generate(long, options: options)
        Issue.record("a 1 ms deadline did not end the generation")
      } catch let error as RPCError {
        #expect(error.code == .deadlineExceeded)
      }
    }
  }
}
