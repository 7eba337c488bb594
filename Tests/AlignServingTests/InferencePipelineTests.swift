import AlignEngine
import AlignServing
import AlignShared
import AlignTestSupport
import Foundation
import Synchronization
import Testing

/// A reward model that prefers longer responses (its verdicts are easy to predict).
struct LengthReward: RewardBackend {
  var version: String { "length@1" }
  var kind: RewardBackendKind { .sequenceClassification }
  func rewards(_ inputs: [RewardInput]) throws -> [Double] { inputs.map { Double($0.response.count) } }
}

/// A safety backend (under the name of the classifier the default policy enables) that scores `hate` 1 for user
/// texts holding "zebra" and, when `blockOutput`, for every assistant text.
struct TriggerBackend: SafetyBackend {
  var blockOutput = false
  var name: String { "classifier" }
  var version: String { "trigger-1" }
  var categories: [SafetyCategory] { [.hate] }
  func scores(_ inputs: [SafetyInput], profile: SafetyProfile) async throws -> [[SafetyCategory: Double]] {
    inputs.map { input in
      let hit = input.role == .assistant ? blockOutput : input.text.contains("zebra")
      return [.hate: hit ? 1 : 0]
    }
  }
}

/// The serving pipeline on a tiny random policy, in process: what the gRPC service and the HTTP
/// gateway map onto, tested without either.
@Suite("Inference pipeline")
struct InferencePipelineTests {
  static func pipeline(
    reward: Bool = false, safety: TriggerBackend = TriggerBackend(), mode: SafetyMode = .off
  ) async throws -> InferencePipeline {
    let models = ModelHost(
      scheduler: .init(maxRunningSequences: 8, maxStepTokens: 128, queueCapacity: 16, kvCapacityTokens: 4096),
      engine: EngineSettings(threads: 1, quantizedActivations: false))
    try await models.loadPolicy(path: TestModels.tinyPolicy)
    let checker = try SafetyChecker(policy: try SafetyPolicy.builtInDefault(), backends: [safety])
    models.safety.activate(SafetySnapshot(checker: checker))
    if reward { models.rewards.activate(RewardSnapshot(scorer: RewardScorer(backend: LengthReward()), sizeBytes: 0)) }
    let status = ServingStatus()
    status.markServing()
    return InferencePipeline(status: status, models: models, limits: GenerationLimits(), defaultSafetyMode: mode)
  }

  static func request(_ prompt: String = "hello there", n: Int = 1, bestOf: Int = 0) -> GenerationRequest {
    var request = GenerationRequest(.prompt(prompt))
    request.maxTokens = 12
    request.temperature = 1
    request.seed = 7
    request.n = n
    request.bestOf = bestOf
    request.ignoreEOS = true
    return request
  }

  @Test("best_of generates every candidate, scores them and returns the best n by reward, ranked")
  func bestOfRanking() async throws {
    let pipeline = try await Self.pipeline(reward: true)
    defer { pipeline.models.shutdown() }
    let result = try await pipeline.generate(Self.request(n: 2, bestOf: 5))
    #expect(result.candidateRewards.count == 5)
    #expect(result.completions.count == 2)
    #expect(result.completions.map(\.index) == [0, 1])
    let best = result.candidateRewards.sorted(by: >).prefix(2)
    #expect(result.completions.map(\.reward) == best.map { Optional($0) })
    for completion in result.completions { #expect(completion.reward == Double(completion.text.count)) }
    #expect(result.versions.reward == "length@1")
    #expect(result.usage.completionTokens == 5 * 12)
  }

  @Test("ranking puts blocked candidates last, whatever their reward")
  func rankingOrder() {
    var completions = (0..<4).map { GeneratedCompletion(index: $0) }
    completions[0].finishReason = .safety
    completions[1].finishReason = .stop
    completions[2].finishReason = .length
    completions[3].finishReason = .stop
    let ranked = InferencePipeline.rank(completions, rewards: [9, 1, 3, 2], keep: 4)
    #expect(ranked.map(\.reward) == [3, 2, 1, 9])
    #expect(ranked.map(\.index) == [0, 1, 2, 3])
    #expect(ranked.last?.finishReason == .safety)
    #expect(InferencePipeline.rank(completions, rewards: [9, 1, 3, 2], keep: 1).map(\.reward) == [3])
  }

  @Test("a blocked prompt never reaches the policy; the answer says why and names the safety version")
  func promptScreening() async throws {
    let pipeline = try await Self.pipeline(mode: .prompt)
    defer { pipeline.models.shutdown() }
    let result = try await pipeline.generate(Self.request("a zebra says", n: 2))
    #expect(result.completions.map(\.finishReason) == [.safety, .safety])
    #expect(result.completions.allSatisfy { $0.flaggedCategories == [.hate] && $0.text.isEmpty })
    #expect(result.usage == TokenUsage())
    #expect(result.versions.safety == pipeline.models.safety.active?.version)
    #expect(pipeline.models.policy?.loop.stats.steps == 0, "nothing ran on the policy")

    // A request may turn screening off; an allowed prompt generates.
    var off = Self.request("a zebra says")
    off.safetyMode = .off
    #expect(try await pipeline.generate(off).completions.first?.finishReason == .length)
    #expect(try await pipeline.generate(Self.request("a horse says")).completions.first?.finishReason == .length)
  }

  @Test("output screening stops a completion whose text the policy blocks; nothing of it is released")
  func outputScreening() async throws {
    let pipeline = try await Self.pipeline(safety: TriggerBackend(blockOutput: true), mode: .output)
    defer { pipeline.models.shutdown() }
    var request = Self.request()
    request.maxTokens = 40
    let result = try await pipeline.generate(request)
    let completion = try #require(result.completions.first)
    #expect(completion.finishReason == .safety)
    #expect(completion.text.isEmpty)
    #expect(completion.flaggedCategories == [.hate])

    // Streamed: no chunk carries text; the end says SAFETY.
    let stream = try await pipeline.stream(request)
    let chunks = Locked<[GenerationChunk]>([])
    let end = try await stream.run { chunk in chunks.withLock { $0.append(chunk) } }
    #expect(chunks.value.allSatisfy { $0.text.isEmpty })
    #expect(end.completions.first?.finishReason == .safety)
  }

  @Test("every answer names the snapshot that produced it: the canary for its routing keys, the active one otherwise")
  func versionStamping() async throws {
    let pipeline = try await Self.pipeline()
    defer { pipeline.models.shutdown() }
    let active = try #require(pipeline.models.policy)
    #expect(active.version == (try ModelFingerprint(path: TestModels.tinyPolicy)).version)
    let canary = try await pipeline.models.loadPolicySnapshot(path: TestModels.tinyPolicy, version: "tiny-canary@000000000001")
    pipeline.models.policies.startCanary(canary, percent: 50)
    let keys = (0..<40).map { "client-\($0)" }
    let canaryKey = try #require(keys.first { RoleSlots<PolicySnapshot>.bucket($0) < 50 })
    let activeKey = try #require(keys.first { RoleSlots<PolicySnapshot>.bucket($0) >= 50 })
    var request = Self.request()
    request.clientRequestID = canaryKey
    let onCanary = try await pipeline.generate(request)
    #expect(onCanary.versions.policy == "tiny-canary@000000000001")
    #expect(onCanary.versions.reward == "judge:tiny-canary@000000000001")
    request.clientRequestID = activeKey
    let onActive = try await pipeline.generate(request)
    #expect(onActive.versions.policy == active.version)
    #expect(onActive.versions.safety == pipeline.models.safety.active?.version)
    #expect(onActive.responseID.hasPrefix("gen-"))

    let stream = try await pipeline.stream(request)
    #expect(stream.versions == onActive.versions)
    let end = try await stream.run { _ in }
    #expect(end.versions == onActive.versions)
  }

  @Test("bad input, a draining server and a cancelled task end requests with typed errors")
  func errors() async throws {
    let pipeline = try await Self.pipeline()
    defer { pipeline.models.shutdown() }
    await #expect(throws: InvalidRequest.self) { try await pipeline.generate(GenerationRequest()) }
    await #expect(throws: InvalidRequest.self) { try await pipeline.generate(Self.request(n: 3, bestOf: 2)) }
    await #expect(throws: InvalidRequest.self) { try await pipeline.stream(Self.request(n: 1, bestOf: 2)) }
    await #expect(throws: InvalidRequest.self) { try await pipeline.score(ScoreRequest()) }
    var both = SafetyCheckRequest(texts: ["a"])
    both.prompt = "b"
    await #expect(throws: InvalidRequest.self) { try await pipeline.checkSafety(both) }

    // A cancelled task ends its generation (here cancelled before it starts, so the outcome does
    // not depend on how fast the generation would have been).
    let cancelled = Task {
      withUnsafeCurrentTask { $0?.cancel() }
      return try await pipeline.generate(Self.request())
    }
    await #expect(throws: ServingError.cancelled("the request was cancelled")) { try await cancelled.value }

    pipeline.status.beginDraining()
    await #expect(throws: ServingError.self) { try await pipeline.generate(Self.request()) }
  }

  @Test("Score and CheckSafety answer with the versions that judged")
  func judging() async throws {
    let pipeline = try await Self.pipeline(reward: true)
    defer { pipeline.models.shutdown() }
    var request = ScoreRequest()
    request.items = [ScoreItem(PromptContext(prompt: "p"), "abc")]
    request.pairs = [ScorePair(PromptContext(prompt: "p"), chosen: "long answer", rejected: "no")]
    let score = try await pipeline.score(request)
    #expect(score.rewards == [3])
    #expect(score.pairs.first?.chosen == 11)
    #expect(score.versions.reward == "length@1")
    let safety = try await pipeline.checkSafety(SafetyCheckRequest(texts: ["a zebra", "a horse"]))
    #expect(safety.verdicts.map(\.action) == [.block, .allow])
    #expect(safety.versions.safety == pipeline.models.safety.active?.version)
    #expect(safety.versions.reward.isEmpty)
  }
}
