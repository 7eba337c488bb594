import AlignAPI
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import Testing

/// The feedback loop end to end: preference feedback in, a reward head trained on it, uploaded,
/// activated behind its gates, and Score answering with it.
@Suite("Reward retraining loop", .serialized)
struct RetrainingEndToEndTests {
  static var defaultModel: URL { TestPaths.modelsDir.appendingPathComponent("SmolLM2-135M-Instruct.Q4_1.gguf") }
  static let defaultPresent = FileManager.default.fileExists(atPath: defaultModel.path)

  /// Preference rows with a learnable signal: the chosen answer is courteous and on topic, the
  /// rejected one dismissive. Deterministic (a fixed linear-congruential walk over the templates).
  static func rows(_ count: Int, offset: Int) -> [[String: String]] {
    let topics = [
      ("repot a cactus", "use gloves, loosen the soil and move it to a pot one size larger"),
      ("descale a kettle", "boil a mix of water and vinegar, let it sit, then rinse twice"),
      ("memorise a speech", "learn it in short sections and rehearse each one aloud"),
      ("choose running shoes", "try several pairs late in the day and jog a few steps in each"),
      ("plan a picnic", "pick a shaded spot, pack water first and bring a blanket"),
      ("wash a wool sweater", "use cold water and a gentle soap, then dry it flat"),
      ("start journaling", "write three sentences each evening about your day"),
      ("set up a fish tank", "cycle the water for a few weeks before adding any fish"),
      ("sharpen a kitchen knife", "hold a steady angle on the whetstone and use light strokes"),
      ("read more books", "keep a book with you and read ten pages before bed"),
      ("bake cookies", "cream butter and sugar, fold in flour and bake at 180 degrees"),
      ("learn chess openings", "study one opening at a time and play it in practice games"),
    ]
    let asks = ["How can I %@?", "What is a good way to %@?", "Could you tell me how to %@?", "I need to %@. Any advice?"]
    let good = [
      "Happy to help! To %@, %@. Good luck!", "Good question. You can %@ if you %@. Enjoy!",
      "Sure thing: to %@, simply %@. Let me know how it goes.",
    ]
    let bad = [
      "Figure out how to %@ on your own.", "Nobody cares how you %@. Stop asking.",
      "That is a silly thing to want. Go %@ without me.",
    ]
    var state = UInt64(offset + 17)
    func next(_ n: Int) -> Int {
      state = state &* 6364136223846793005 &+ 1442695040888963407
      return Int((state >> 33) % UInt64(n))
    }
    return (0..<count).map { _ in
      let (task, how) = topics[next(topics.count)]
      return [
        "prompt": String(format: asks[next(asks.count)], task),
        "chosen": String(format: good[next(good.count)], task, how),
        "rejected": String(format: bad[next(bad.count)], task),
      ]
    }
  }

  @Test("feedback → train-reward → upload → activate → Score ranks held-out pairs",
        .enabled(if: defaultPresent, "the default model is not fetched"))
  func retrainAndServe() async throws {
    let folder = try TestPaths.temporaryFolder()
    defer { try? FileManager.default.removeItem(at: folder) }
    // The operator's reward gate: held-out pairs of the same task, none of them trained on; the
    // generative judge serves until the head beats it there.
    let gate = folder.appendingPathComponent("gate.jsonl")
    try FeedbackCLITests.jsonl(Self.rows(60, offset: 500)).write(to: gate, atomically: true, encoding: .utf8)
    let server = try await ServerProcess(arguments: ["--reward-model", "judge", "--reward-gate-file", gate.path])
    try await server.waitUntilServing()
    let address = FeedbackCLITests.address(server)

    // 1. Preference feedback in.
    let training = Self.rows(120, offset: 0)
    let file = folder.appendingPathComponent("prefs.jsonl")
    try FeedbackCLITests.jsonl(training).write(to: file, atomically: true, encoding: .utf8)
    let upload = try await FeedbackCLITests.alignctl(["feedback", "upload", file.path, "--server", address, "--json"], folder: folder)
    #expect(upload.status == 0, "\(upload.stderr)")

    // 2. Train a head on the stored feedback (the server's export).
    let output = folder.appendingPathComponent("head")
    let train = try await FeedbackCLITests.CLIProcess(
      ["train-reward", "--server", address, "--base", Self.defaultModel.path, "--output", output.path, "--json"],
      folder: folder
    ).wait(timeout: .seconds(900))
    #expect(train.status == 0, "\(train.stderr)")
    let summary = try #require(try JSONSerialization.jsonObject(with: Data(train.stdout.utf8)) as? [String: Any])
    let heldout = try #require(summary["heldout_accuracy"] as? Double)
    #expect(heldout >= 0.9, "held-out accuracy \(heldout)")

    // 3. Upload and activate it; the gates (load, smoke, eval on the held-out gate pairs) pass.
    let uploaded = try await FeedbackCLITests.alignctl(
      ["checkpoint", "upload", output.path, "--role", "reward", "--name", "polite-head", "--server", address, "--json"], folder: folder)
    #expect(uploaded.status == 0, "\(uploaded.stderr)")
    let info = try Alignd_V1_CheckpointInfo(jsonString: uploaded.stdout.trimmingCharacters(in: .whitespacesAndNewlines))
    #expect(info.role == .reward && info.format == .rewardHead)
    let activated = try await FeedbackCLITests.CLIProcess(
      ["checkpoint", "activate", info.version, "--role", "reward", "--server", address, "--json"], folder: folder
    ).wait(timeout: .seconds(600))
    #expect(activated.status == 0, "\(activated.stderr)")
    let state = try Alignd_V1_RoleState(jsonString: activated.stdout.trimmingCharacters(in: .whitespacesAndNewlines))
    #expect(state.activeVersion == info.version)
    #expect(Set(state.gates.map(\.name)) == ["load", "smoke", "eval"])
    #expect(state.gates.allSatisfy { $0.passed }, "\(state.gates)")

    // 4. Score answers with the new version and ranks unseen pairs correctly.
    let unseen = Self.rows(40, offset: 999)
    try await server.withClient { client in
      let inference = Alignd_V1_Inference.Client(wrapping: client)
      var right = 0
      for half in [unseen[0..<20], unseen[20..<40]] {  // 64 responses per request at most
        let response = try await inference.score(.with {
          $0.pairs = half.map { row in
            .with {
              $0.prompt = row["prompt"]!
              $0.chosen = row["chosen"]!
              $0.rejected = row["rejected"]!
            }
          }
        })
        #expect(response.versions.reward == info.version)
        right += response.pairScores.filter { $0.chosenReward > $0.rejectedReward }.count
      }
      #expect(Double(right) / Double(unseen.count) >= 0.9, "\(right) of \(unseen.count) unseen pairs ranked right")
    }
    server.signal(SIGTERM)
    #expect(try await server.waitForExit() == 0)
  }
}
