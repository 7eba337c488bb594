import AlignAPI
import AlignServer
import AlignTestSupport
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import Testing

/// The RLHF loop inside the service, end to end against the real binary: an app's chat
/// completions over HTTP → comparisons a person ranks → feedback via POST /v1/feedback naming
/// completion ids → training export (TRL conversational, read back by Hugging Face `datasets`)
/// carrying the exact texts and versions served → a new checkpoint uploaded, gated, serving as a
/// canary → comparisons of the active and the canary policy → automatic promotion; and a worse
/// candidate that the people (and the reward model) judge worse, rolled back on its own with the
/// reason recorded.
@Suite("The RLHF loop over HTTP and gRPC", .serialized)
struct RLHFLoopEndToEndTests {
  static let prompt = CanaryEndToEndTests.prompt

  /// Authentication is off (as in the other canary tests): apps' feedback then needs no key.
  static func startServer(_ arguments: [String]) async throws -> ServerProcess {
    let server = try await ServerProcess(
      arguments: ["--feedback-rate-per-minute", "600"] + CanaryEndToEndTests.analysis + ["--canary-min-feedback", "4"]
        + arguments)
    try await server.waitUntilServing()
    return server
  }

  /// Waits until the analysis compares the canary with the active policy (its window has begun,
  /// so the feedback that follows counts).
  static func awaitAnalysis(_ admin: Alignd_V1_Admin.Client<HTTP2ClientTransport.Posix>) async throws {
    for _ in 0..<100 {
      if try await admin.getStatus(.init()).canaryAnalyses.first != nil { return }
      try await Task.sleep(for: .milliseconds(200))
    }
    Issue.record("the canary analysis never started")
  }

  /// An HTTP chat completion asking for a comparison: the two choices' ids, texts and versions.
  /// Without a seed each side samples its own (a seeded comparison of two identical policies
  /// would show the same text twice, and a preference between equal texts is refused).
  static func compare(_ server: ServerProcess, _ mode: String, seed: Int? = nil) async throws
    -> [(id: String, text: String, version: String)]
  {
    var body: [String: Any] = [
      "messages": [["role": "user", "content": prompt]], "comparison": mode, "max_tokens": 24, "temperature": 1.0,
    ]
    if let seed { body["seed"] = seed }
    let response = try await HTTPGatewayTests.http(server, "POST", "/v1/chat/completions", json: body)
    #expect(response.status == 200, "\(response.text)")
    let choices = response.json?["choices"] as? [[String: Any]] ?? []
    return choices.map {
      (
        $0["completion_id"] as? String ?? "", (($0["message"] as? [String: Any])?["content"] as? String) ?? "",
        $0["policy_version"] as? String ?? ""
      )
    }
  }

  /// A person's preference between two completions, sent the way an app sends it.
  static func prefer(_ server: ServerProcess, _ chosen: String, over rejected: String, key: String) async throws
    -> HTTPGatewayTests.HTTPResult
  {
    try await HTTPGatewayTests.http(
      server, "POST", "/v1/feedback",
      json: [
        "preference": ["chosen_completion_id": chosen, "rejected_completion_id": rejected], "idempotency_key": key,
      ] as [String: Any])
  }

  /// alignctl against the server.
  static func ctl(_ server: ServerProcess, _ arguments: [String]) throws -> (status: Int32, output: String) {
    try runTool(TestPaths.alignctl, arguments + ["--server", "127.0.0.1:\(server.port)"])
  }

  /// Reads an export back with Hugging Face `datasets` (Tests/Clients/export_readback.py checks the
  /// rows against TRL's dataset type of `format`) and returns the rows as loaded.
  static func readBack(_ file: String, format: String) throws -> [[String: Any]] {
    let script = TestModels.repositoryRoot.appendingPathComponent("Tests/Clients/export_readback.py").path
    let result = try runTool(
      URL(fileURLWithPath: TestEnvironment.python), [script, "--format", format, file, "--min-rows", "1", "--all-rows"])
    #expect(result.status == 0, "datasets could not read the \(format) export: \(result.output)")
    // stdout (the summary, one line) and stderr (problems) arrive merged.
    let lines = result.output.split(separator: "\n").map(String.init)
    let summary = lines.first { $0.hasPrefix(#"{"rows""#) } ?? ""
    let report = try? JSONSerialization.jsonObject(with: Data(summary.utf8)) as? [String: Any]
    return report?["all"] as? [[String: Any]] ?? []
  }

  static var ready: Bool { CanaryEndToEndTests.defaultPresent && TestEnvironment.pythonPresent }

  @Test(
    "chat → comparison → app feedback → TRL export read by datasets → upload → gates → canary → comparisons → promotion",
    .enabled(if: ready, "the default model or the test venv is missing"))
  func loopPromotesABetterCandidate() async throws {
    let server = try await Self.startServer([])
    let folder = try TestPaths.temporaryFolder()
    defer { try? FileManager.default.removeItem(at: folder) }

    // 1. An app asks for a comparison of two samples; each choice has its own id and version.
    let pair = try await Self.compare(server, "samples", seed: 7)
    try #require(pair.count == 2)
    let stable = pair[0].version
    #expect(!stable.isEmpty && pair[1].version == stable && pair[0].id != pair[1].id)

    // 2. The person prefers the second; a retry of the same vote is not stored twice.
    let vote = try await Self.prefer(server, pair[1].id, over: pair[0].id, key: "vote-1")
    #expect(vote.status == 200, "\(vote.text)")
    let retry = try await Self.prefer(server, pair[1].id, over: pair[0].id, key: "vote-1")
    #expect(retry.json?["duplicate"] as? Bool == true && retry.json?["id"] as? Int == vote.json?["id"] as? Int)
    let unknown = try await Self.prefer(server, "cmpl-nope", over: pair[0].id, key: "vote-2")
    #expect(unknown.status == 404, "\(unknown.text)")

    // 3. The export in TRL's conversational form carries exactly what was served, and datasets reads it.
    let trlFile = folder.appendingPathComponent("prefs.jsonl").path
    let exported = try Self.ctl(server, ["feedback", "export", "--format", "trl-chat", "--output", trlFile])
    #expect(exported.status == 0, "\(exported.output)")
    let rows = try Self.readBack(trlFile, format: "trl-chat")
    #expect(rows.count == 1)
    let row = try #require(rows.first)
    #expect(row["prompt"] as? [[String: String]] == [["role": "user", "content": Self.prompt]])
    #expect(row["chosen"] as? [[String: String]] == [["role": "assistant", "content": pair[1].text]])
    #expect(row["rejected"] as? [[String: String]] == [["role": "assistant", "content": pair[0].text]])
    #expect(row["chosen_policy_version"] as? String == stable && row["rejected_policy_version"] as? String == stable)
    #expect(row["chosen_completion_id"] as? String == pair[1].id)

    try await server.withClient { client in
      let admin = Alignd_V1_Admin.Client(wrapping: client)
      // 4. A new checkpoint (the same weights under another name) is uploaded, passes its gates
      // (the quality gate among them) and serves half the traffic as a canary.
      let candidate = try await admin.upload(CheckpointVariants.defaultModel, name: "retrained").version
      let state = try await admin.activateCheckpoint(
        .with { $0.role = .policy; $0.version = candidate; $0.canaryPercent = 50 })
      #expect(state.gates.map(\.name) == ["load", "compatibility", "smoke", "eval"] && state.gates.allSatisfy(\.passed))
      try await Self.awaitAnalysis(admin)

      // 5. Comparisons of the active and the canary policy: one completion from each, each naming
      // its version; the person prefers the canary's.
      var votes = 0
      for round in 0..<12 where votes < 4 {
        let duel = try await Self.compare(server, "policies")
        #expect(Set(duel.map(\.version)) == [stable, candidate], "\(duel.map(\.version))")
        guard let mine = duel.first(where: { $0.version == candidate }), let theirs = duel.first(where: { $0.version == stable }),
          mine.text != theirs.text
        else { continue }
        let sent = try await Self.prefer(server, mine.id, over: theirs.id, key: "duel-\(round)")
        #expect(sent.status == 200, "\(sent.text)")
        votes += 1
      }
      #expect(votes == 4)
      // Streaming cannot carry a comparison of two policies: a clear 400.
      let streamed = try await HTTPGatewayTests.http(
        server, "POST", "/v1/chat/completions",
        json: ["messages": [["role": "user", "content": "hi"]], "comparison": "policies", "stream": true] as [String: Any])
      #expect(streamed.status == 400 && streamed.text.contains("comparison"), "\(streamed.text)")

      // 6. Live traffic decides: the canary is promoted on its own, its win rate from the people's votes.
      let served = try await CanaryEndToEndTests.trafficUntilDecided(client)
      let status = try await admin.getStatus(.init())
      let role = try #require(status.roles.first { $0.role == .policy })
      let decision = try #require(status.canaryDecisions.first)
      #expect(
        decision.verdict == "promote" && decision.canaryVersion == candidate,
        "\(decision.verdict) \(decision.reasonCode): \(decision.reason); served \(served)")
      #expect(role.activeVersion == candidate && role.previousVersion == stable)
      #expect(decision.canary.feedbackWins == 4 && decision.active.feedbackLosses == 4)
    }

    // 7. The comparisons' preferences export with both versions: the canary's text chosen.
    let duels = folder.appendingPathComponent("duels.jsonl").path
    #expect(try Self.ctl(server, ["feedback", "export", "--format", "trl", "--type", "preference", "--output", duels]).status == 0)
    let duelRows = try Self.readBack(duels, format: "trl")
    #expect(duelRows.count == 5)
    #expect(duelRows.filter { $0["chosen_policy_version"] as? String != $0["rejected_policy_version"] as? String }.count == 4)
    server.signal(SIGTERM)
    #expect(try await server.waitForExit() == 0)
  }

  @Test(
    "a worse candidate that people and the reward model judge worse is rolled back on its own, with the reason recorded",
    .enabled(if: ready, "the default model or the test venv is missing"))
  func loopRollsBackAWorseCandidate() async throws {
    let folder = try TestPaths.temporaryFolder()
    defer { try? FileManager.default.removeItem(at: folder) }
    let worse = try CheckpointVariants.patchedNorm({ _, w in -w }, in: folder, name: "worse.gguf")
    // No quality gate, so the worse policy (the final norm negated: gibberish) reaches live traffic.
    let server = try await Self.startServer(["--policy-gate-prompts", "0", "--canary-max-reward-drop", "0.05"])
    try await server.withClient { client in
      let admin = Alignd_V1_Admin.Client(wrapping: client)
      let stable = try #require(try await admin.getStatus(.init()).roles.first { $0.role == .policy })
        .activeVersion
      let bad = try await admin.upload(worse, name: "negated-norm").version
      _ = try await admin.activateCheckpoint(.with { $0.role = .policy; $0.version = bad; $0.canaryPercent = 50 })
      try await Self.awaitAnalysis(admin)
      // People shown both prefer the active policy's answer.
      for round in 0..<4 {
        let duel = try await Self.compare(server, "policies")
        guard let good = duel.first(where: { $0.version == stable }), let gibberish = duel.first(where: { $0.version == bad })
        else {
          Issue.record("a comparison did not hold both versions: \(duel.map(\.version))")
          continue
        }
        #expect((try await Self.prefer(server, good.id, over: gibberish.id, key: "r-\(round)")).status == 200)
      }
      let served = try await CanaryEndToEndTests.trafficUntilDecided(client)
      let status = try await admin.getStatus(.init())
      let decision = try #require(status.canaryDecisions.first)
      #expect(decision.verdict == "rollback" && decision.canaryVersion == bad, "\(decision.reason); served \(served)")
      #expect(["reward", "win_rate", "safety_flags"].contains(decision.reasonCode), "\(decision.reasonCode): \(decision.reason)")
      #expect(decision.canary.feedbackLosses == 4)
      let role = try #require(status.roles.first { $0.role == .policy })
      #expect(role.activeVersion == stable && role.canaryVersion.isEmpty)
      let listed = try await admin.listCheckpoints(.with { $0.role = .policy }).checkpoints
        .first { $0.version == bad }
      #expect(listed?.state == .failed)
      #expect(listed?.failure.contains("rolled back by the canary analysis") == true, "\(listed?.failure ?? "")")
    }
    server.signal(SIGTERM)
    #expect(try await server.waitForExit() == 0)
  }
}
