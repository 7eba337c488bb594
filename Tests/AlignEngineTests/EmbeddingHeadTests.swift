import Foundation
import Testing

import AlignEngine

/// The `alignd.embedding-head` format against its Python reference
/// (Tests/Fixtures/embedding-head/make_heads.py, Training/common/head_format.py).
@Suite struct EmbeddingHeadTests {
  static let folder = EncoderFixtures.root.appendingPathComponent("Tests/Fixtures/embedding-head")

  struct RewardCase: Decodable { var p: [Float]; var r: [Float]; var reward: Double }
  struct SafetyCase: Decodable {
    var t: [Float]
    var toxblock: [Float]
    var hatesonar: [Float]
    var lexical: [Float]
    var scores: [String: Double]
  }
  struct Expected: Decodable { var dimension: Int; var reward: [RewardCase]; var safety: [SafetyCase] }

  static func expected() throws -> Expected {
    try JSONDecoder().decode(Expected.self, from: Data(contentsOf: folder.appendingPathComponent("expected.json")))
  }

  @Test func rewardHeadComputesWhatNumpyComputes() throws {
    let e = try Self.expected()
    let head = try EmbeddingHead(directory: Self.folder.appendingPathComponent("reward-tiny").path, dimension: e.dimension)
    #expect(head.kind == .reward)
    #expect(head.name == "reward-tiny" && head.version == "1")
    #expect(head.features == [.prompt, .response, .product, .absoluteDifference, .cosine])
    #expect(head.featureWidth == 4 * e.dimension + 1)
    #expect(head.scoreNames == ["reward"])
    #expect(e.reward.count == 6)
    for c in e.reward {
      let r = head.scores(EmbeddingHead.Inputs(prompt: c.p, response: c.r))
      #expect(abs(r[0] - c.reward) < 1e-5, "\(r[0]) vs \(c.reward)")
    }
  }

  @Test func safetyHeadComputesGatedScoresAndStackedBlocks() throws {
    let e = try Self.expected()
    let head = try EmbeddingHead(directory: Self.folder.appendingPathComponent("safety-tiny").path, dimension: e.dimension)
    #expect(head.kind == .safety)
    #expect(head.scoreNames == ["harmful", "hate", "sexual", "violence"])
    #expect(head.thresholds == ["harmful": 0.5, "hate": 0.4, "violence": 0.3, "sexual": 0.35])
    for c in e.safety {
      let s = head.scores(
        EmbeddingHead.Inputs(text: c.t, extra: [.toxBlock: c.toxblock, .hateSonar: c.hatesonar, .lexical: c.lexical]))
      for (i, name) in head.scoreNames.enumerated() {
        let want = try #require(c.scores[name])
        #expect(abs(s[i] - want) < 1e-6, "\(name): \(s[i]) vs \(want)")
      }
      // A gated score never exceeds its gate.
      #expect(s[1] <= s[0] && s[2] <= s[0] && s[3] <= s[0])
    }
  }

  /// Copies a fixture head into a temporary folder, lets `edit` change its manifest, and loads it.
  private func load(_ fixture: String, dimension: Int = 8, edit: (inout [String: Any]) -> Void) throws -> EmbeddingHead {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("head-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: dir) }
    let source = Self.folder.appendingPathComponent(fixture)
    try FileManager.default.copyItem(
      at: source.appendingPathComponent("weights.safetensors"), to: dir.appendingPathComponent("weights.safetensors"))
    var manifest = try #require(
      try JSONSerialization.jsonObject(with: Data(contentsOf: source.appendingPathComponent("manifest.json"))) as? [String: Any])
    edit(&manifest)
    try JSONSerialization.data(withJSONObject: manifest).write(to: dir.appendingPathComponent("manifest.json"))
    return try EmbeddingHead(directory: dir.path, dimension: dimension)
  }

  @Test func refusesBrokenManifestsWithTheReason() throws {
    func reason(_ fixture: String, dimension: Int = 8, _ edit: (inout [String: Any]) -> Void) -> String {
      do {
        _ = try load(fixture, dimension: dimension, edit: edit)
        return "loaded"
      } catch {
        return "\(error)"
      }
    }
    #expect(reason("reward-tiny") { _ in } == "loaded")
    #expect(reason("reward-tiny") { $0["format"] = "other" }.contains("format"))
    #expect(reason("reward-tiny") { $0["format_version"] = 2 }.contains("format_version"))
    #expect(reason("reward-tiny") { $0["kind"] = "policy" }.contains("kind"))
    #expect(reason("reward-tiny") { $0["name"] = "has space" }.contains("name"))
    #expect(reason("reward-tiny") { $0["features"] = ["p", "q"] }.contains("unknown feature block q"))
    #expect(reason("reward-tiny") { $0["features"] = ["t"] }.contains("reward head reads only"))
    #expect(reason("reward-tiny") { $0["features"] = ["p", "toxblock"] }.contains("reward head reads only"))
    #expect(reason("safety-tiny") { $0["features"] = ["t", "lexical(r)"] }.contains("safety head reads"))
    #expect(reason("safety-tiny") { $0["features"] = ["p", "r"] }.contains("safety head reads"))
    // The layer no longer fits the feature width.
    #expect(reason("reward-tiny") { $0["features"] = ["p", "r"] }.contains("must be (out, 16)"))
    #expect(reason("reward-tiny", dimension: 16) { _ in }.contains("must be (out,"))
    #expect(reason("reward-tiny") { $0["scores"] = ["reward": ["nope"]] }.contains("unknown output nope"))
    #expect(reason("reward-tiny") { $0["scores"] = ["other": ["reward"]] }.contains("score reward"))
    #expect(reason("safety-tiny") { $0["thresholds"] = ["hate": 1.5] }.contains("threshold"))
    #expect(reason("safety-tiny") { $0["thresholds"] = ["unknown": 0.5] }.contains("threshold"))
    #expect(
      reason("reward-tiny") { m in
        var heads = m["heads"] as! [[String: Any]]
        var layers = heads[0]["layers"] as! [[String: Any]]
        layers[0]["activation"] = "gelu"
        heads[0]["layers"] = layers
        m["heads"] = heads
      }.contains("activation"))
    #expect(
      reason("reward-tiny") { m in
        var heads = m["heads"] as! [[String: Any]]
        var layers = heads[0]["layers"] as! [[String: Any]]
        layers[1]["weight"] = "missing.weight"
        heads[0]["layers"] = layers
        m["heads"] = heads
      }.contains("missing.weight"))
  }

  @Test func refusesAMissingFolder() {
    #expect(throws: EngineError.self) { try EmbeddingHead(directory: "/nonexistent/head") }
  }
}
