import AlignAPI
import AlignTestSupport
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import Synchronization
import Testing

/// The canary analysis and the policy quality gate against the real binary: upload → gates →
/// canary → live traffic → automatic promotion, and a deliberately worse policy (the final norm
/// negated: greedy decoding then picks the least likely tokens, i.e. gibberish) refused by the
/// quality gate, or, with the gate off, rolled back by the analysis with the reason recorded.
@Suite("Canary analysis over gRPC", .serialized)
struct CanaryEndToEndTests {
  static let defaultPresent = CheckpointEndToEndTests.defaultPresent

  /// Small samples and short durations for CI on 2 cores; thresholds loose enough for 20-sample
  /// proportions (with no events at all, a rise bound of t needs about z/t samples per arm).
  static let analysis = [
    "--canary-analysis", "true", "--canary-check-seconds", "0.5", "--canary-min-samples", "16",
    "--canary-min-seconds", "2", "--canary-max-seconds", "240", "--canary-confidence", "0.95",
    "--canary-max-error-rate-rise", "0.15", "--canary-max-safety-flag-rise", "0.15",
    "--canary-max-ttft-ratio", "4", "--canary-max-itl-ratio", "4", "--reward-sample-rate", "1",
  ]

  /// One prompt for all traffic: greedy completions of one version are then identical, so the
  /// arms differ only by what the versions do (a fixed prompt set would need more samples).
  static let prompt = "Give me three tips for sleeping better."

  static func policyRole(_ admin: Alignd_V1_Admin.Client<HTTP2ClientTransport.Posix>) async throws -> Alignd_V1_RoleState? {
    try await admin.getStatus(.init()).roles.first { $0.role == .policy }
  }

  /// Sends generations (8 at a time, each with its own routing key) until the policy canary is
  /// gone, or `limit` passes. Returns the versions that served.
  static func trafficUntilDecided(
    _ client: GRPCClient<HTTP2ClientTransport.Posix>, limit: Duration = .seconds(180)
  ) async throws -> [String: Int] {
    let admin = Alignd_V1_Admin.Client(wrapping: client)
    let inference = Alignd_V1_Inference.Client(wrapping: client)
    let served = Locked<[String: Int]>([:])
    let decided = Locked(false)
    let deadline = ContinuousClock.now + limit
    try await withThrowingTaskGroup(of: Void.self) { group in
      for worker in 0..<8 {
        group.addTask {
          var i = 0
          while !decided.withLock({ $0 }) && ContinuousClock.now < deadline {
            i += 1
            let version = try await CheckpointEndToEndTests.generate(
              inference, prompt, maxTokens: 12, clientID: "w\(worker)-\(i)-\(UUID().uuidString.prefix(8))"
            ).versions.policy
            served.withLock { $0[version, default: 0] += 1 }
          }
        }
      }
      group.addTask {
        while ContinuousClock.now < deadline {
          try await Task.sleep(for: .milliseconds(250))
          if try await policyRole(admin)?.canaryVersion.isEmpty ?? false { break }
        }
        decided.withLock { $0 = true }
      }
      try await group.waitForAll()
    }
    return served.withLock { $0 }
  }

  @Test("a canary as good as the active policy is promoted on its own; a worse policy fails the quality gate",
        .enabled(if: defaultPresent, "the default model is not fetched"))
  func promotionAndQualityGate() async throws {
    let folder = try TestPaths.temporaryFolder()
    defer { try? FileManager.default.removeItem(at: folder) }
    let worse = try CheckpointVariants.patchedNorm({ _, w in -w }, in: folder, name: "worse.gguf")
    let server = try await ServerProcess(arguments: Self.analysis)
    try await server.waitUntilServing()
    try await server.withClient { client in
      let admin = Alignd_V1_Admin.Client(wrapping: client)
      let stable = try #require(try await Self.policyRole(admin)).activeVersion
      // The same weights under another name: the quality gate passes, the analysis finds no difference.
      let candidate = try await admin.upload(CheckpointVariants.defaultModel, name: "same-weights").version
      let state = try await admin.activateCheckpoint(.with { $0.role = .policy; $0.version = candidate; $0.canaryPercent = 50 })
      #expect(state.gates.map(\.name) == ["load", "compatibility", "smoke", "eval"])
      #expect(state.gates.allSatisfy { $0.passed })
      let evaluation = try #require(
        try await admin.listCheckpoints(.with { $0.role = .policy }).checkpoints.first { $0.version == candidate }?.evaluation)
      #expect(evaluation.contains("mean_reward") && evaluation.contains("safety_flag_rate") && evaluation.contains(stable))

      // While it serves, GetStatus shows the running comparison.
      _ = try await CheckpointEndToEndTests.generate(Alignd_V1_Inference.Client(wrapping: client), Self.prompt, maxTokens: 4)
      var analysis: Alignd_V1_CanaryAnalysis? = nil
      for _ in 0..<20 where analysis == nil {
        analysis = try await admin.getStatus(.init()).canaryAnalyses.first
        if analysis == nil { try await Task.sleep(for: .milliseconds(250)) }
      }
      #expect(analysis?.canary.version == candidate && analysis?.active.version == stable && analysis?.automatic == true)
      #expect(analysis?.checks.map(\.signal).contains("reward") == true)

      let served = try await Self.trafficUntilDecided(client)
      #expect((served[candidate] ?? 0) >= 16 && (served[stable] ?? 0) >= 16, "\(served)")
      let status = try await admin.getStatus(.init())
      let role = try #require(status.roles.first { $0.role == .policy })
      #expect(role.activeVersion == candidate && role.canaryVersion.isEmpty && role.previousVersion == stable)
      let decision = try #require(status.canaryDecisions.first)
      #expect(
        decision.verdict == "promote" && decision.reasonCode == "passed" && decision.canaryVersion == candidate,
        "\(decision.verdict) \(decision.reasonCode): \(decision.reason)")
      #expect(decision.canary.rewardSamples >= 16 && decision.canary.requests >= 16)
      #expect(status.completionSampling.scored > 0)
      let listed = try await admin.listCheckpoints(.with { $0.role = .policy }).checkpoints
      #expect(listed.first { $0.version == candidate }?.canaryDecision.contains("\"verdict\":\"promote\"") == true)

      // /metrics counts the decision.
      let metrics = try HTTPGatewayTests.curl(server, "--http1.1", "/metrics").body
      #expect(metrics.contains("alignd_canary_decisions_total{") && metrics.contains("decision=\"promote\""), "\(metrics.prefix(400))")
      #expect(metrics.contains("alignd_canary_requests{"))

      // A policy that answers gibberish is refused by the quality gate before it serves.
      let bad = try await admin.upload(worse, name: "negated-norm").version
      do {
        _ = try await admin.activateCheckpoint(.with { $0.role = .policy; $0.version = bad; $0.canaryPercent = 50 })
        Issue.record("the worse policy passed the quality gate")
      } catch let error as RPCError {
        #expect(error.code == .failedPrecondition)
        #expect(error.message.contains("quality gate"), "\(error.message)")
      }
      let refused = try await admin.listCheckpoints(.with { $0.role = .policy }).checkpoints.first { $0.version == bad }
      #expect(refused?.state == .failed)
      #expect(refused?.evaluation.contains("\"passed\":false") == true)
      #expect(try await Self.policyRole(admin)?.canaryVersion.isEmpty == true)
    }
    server.signal(SIGTERM)
    #expect(try await server.waitForExit() == 0)
  }

  @Test("a worse policy canary is rolled back on its own, with the reason on the checkpoint",
        .enabled(if: defaultPresent, "the default model is not fetched"))
  func automaticRollback() async throws {
    let folder = try TestPaths.temporaryFolder()
    defer { try? FileManager.default.removeItem(at: folder) }
    let worse = try CheckpointVariants.patchedNorm({ _, w in -w }, in: folder, name: "worse.gguf")
    // No quality gate, so the worse policy reaches live traffic. On this one prompt the negated
    // norm loses ~0.14 of mean reward (measured: 0.59 vs 0.73), so the operator's threshold here
    // is a strict 0.05.
    let server = try await ServerProcess(
      arguments: Self.analysis + ["--policy-gate-prompts", "0", "--canary-max-reward-drop", "0.05"])
    try await server.waitUntilServing()
    try await server.withClient { client in
      let admin = Alignd_V1_Admin.Client(wrapping: client)
      let stable = try #require(try await Self.policyRole(admin)).activeVersion
      let bad = try await admin.upload(worse, name: "negated-norm").version
      let state = try await admin.activateCheckpoint(.with { $0.role = .policy; $0.version = bad; $0.canaryPercent = 50 })
      #expect(state.canaryVersion == bad)
      let served = try await Self.trafficUntilDecided(client)
      #expect((served[bad] ?? 0) >= 1, "\(served)")
      let status = try await admin.getStatus(.init())
      let role = try #require(status.roles.first { $0.role == .policy })
      #expect(role.activeVersion == stable && role.canaryVersion.isEmpty)
      let decision = try #require(status.canaryDecisions.first)
      #expect(decision.verdict == "rollback" && decision.canaryVersion == bad)
      #expect(["reward", "safety_flags"].contains(decision.reasonCode), "\(decision.reasonCode): \(decision.reason)")
      #expect(decision.reason.contains("lower bound"))
      let listed = try await admin.listCheckpoints(.with { $0.role = .policy }).checkpoints.first { $0.version == bad }
      #expect(listed?.state == .failed)
      #expect(listed?.failure.contains("rolled back by the canary analysis") == true, "\(listed?.failure ?? "")")
      #expect(listed?.canaryDecision.contains("\"verdict\":\"rollback\"") == true)
      // New traffic is served by the active version only.
      let after = try await CheckpointEndToEndTests.generate(
        Alignd_V1_Inference.Client(wrapping: client), Self.prompt, maxTokens: 2, clientID: "after")
      #expect(after.versions.policy == stable)
    }
    server.signal(SIGTERM)
    #expect(try await server.waitForExit() == 0)
  }
}
