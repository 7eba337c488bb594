import AlignEngine
import AlignServing
import Foundation
import Testing

/// The reward-head checkpoint format: round trip and every way a folder can be wrong.
@Suite("Reward-head checkpoint format")
struct RewardHeadCheckpointTests {
  static let sha = String(repeating: "ab", count: 32)

  static func manifest(hidden: Int = 4) -> RewardHeadManifest {
    RewardHeadManifest(
      baseModel: .init(name: "base", sha256: sha), hiddenSize: hidden, input: .chatTemplate,
      metrics: .init(heldoutAccuracy: 0.75, trainPairs: 12, heldoutPairs: 4),
      createdAt: Date(timeIntervalSince1970: 1_800_000_000))
  }

  /// A fresh empty temporary folder path (not created).
  static func temporaryFolder() -> URL {
    FileManager.default.temporaryDirectory.appendingPathComponent("reward-head-test-\(UUID().uuidString)")
  }

  /// A safetensors file with arbitrary tensors (name, dtype, shape, raw bytes), for malformed cases.
  static func safetensors(_ tensors: [(String, String, [Int], [UInt8])]) -> Data {
    var entries: [String] = []
    var offset = 0
    for (name, dtype, shape, bytes) in tensors {
      entries.append(
        "\"\(name)\":{\"dtype\":\"\(dtype)\",\"shape\":[\(shape.map(String.init).joined(separator: ","))],\"data_offsets\":[\(offset),\(offset + bytes.count)]}"
      )
      offset += bytes.count
    }
    var header = "{" + entries.joined(separator: ",") + "}"
    while header.utf8.count % 8 != 0 { header += " " }
    var data = Data()
    withUnsafeBytes(of: UInt64(header.utf8.count).littleEndian) { data.append(contentsOf: $0) }
    data.append(contentsOf: Array(header.utf8))
    for (_, _, _, bytes) in tensors { data.append(contentsOf: bytes) }
    return data
  }

  static func f32(_ values: [Float]) -> [UInt8] {
    values.flatMap { v in withUnsafeBytes(of: v.bitPattern.littleEndian) { Array($0) } }
  }

  /// Writes a valid checkpoint, then lets `edit` break it; returns the folder.
  static func folder(edit: (URL) throws -> Void = { _ in }) throws -> URL {
    let dir = temporaryFolder()
    let ckpt = try RewardHeadCheckpoint(manifest: manifest(), weight: [0.5, -1, 2, 0.25], bias: -0.125)
    try ckpt.write(to: dir.path)
    try edit(dir)
    return dir
  }

  static func replaceWeights(_ dir: URL, _ tensors: [(String, String, [Int], [UInt8])]) throws {
    try safetensors(tensors).write(to: dir.appendingPathComponent(RewardHeadCheckpoint.weightsFileName))
  }

  static func editManifest(_ dir: URL, _ change: (inout [String: Any]) -> Void) throws {
    let url = dir.appendingPathComponent(RewardHeadCheckpoint.manifestFileName)
    var json = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as? [String: Any])
    change(&json)
    try JSONSerialization.data(withJSONObject: json).write(to: url)
  }

  @Test func writeThenReadGivesTheSameCheckpoint() throws {
    let dir = try Self.folder()
    defer { try? FileManager.default.removeItem(at: dir) }
    let read = try RewardHeadCheckpoint(directory: dir.path)
    #expect(read.weight == [0.5, -1, 2, 0.25])
    #expect(read.bias == -0.125)
    #expect(read.manifest == Self.manifest())
    #expect(read.reward(feature: [1, 1, 1, 1]) == 0.5 - 1 + 2 + 0.25 - 0.125)
    // The files are what the format says: the manifest's keys and the two F32 tensors.
    let json = try #require(
      try JSONSerialization.jsonObject(with: Data(contentsOf: dir.appendingPathComponent("manifest.json"))) as? [String: Any])
    #expect(json["format"] as? String == "alignd-reward-head")
    #expect(json["format_version"] as? Int == 1)
    #expect(json["feature"] as? String == "final-norm-last-token")
    #expect(json["hidden_size"] as? Int == 4)
    #expect(json["input"] as? String == "chat-template")
    #expect(json["created_at"] as? String == "2027-01-15T08:00:00Z")
    let base = try #require(json["base_model"] as? [String: Any])
    #expect(base["sha256"] as? String == Self.sha)
    let metrics = try #require(json["metrics"] as? [String: Any])
    #expect(metrics["heldout_accuracy"] as? Double == 0.75)
    #expect(metrics["train_pairs"] as? Int == 12)
    #expect(metrics["heldout_pairs"] as? Int == 4)
    let st = try SafeTensorsFile(path: dir.appendingPathComponent("reward-head.safetensors").path)
    #expect(Set(st.tensors.keys) == ["weight", "bias"])
    #expect(st.tensors["weight"]?.shape == [4])
    #expect(st.tensors["bias"]?.dtype == "F32")
  }

  @Test func aMissingHeldOutAccuracyIsWrittenAsNull() throws {
    let dir = Self.temporaryFolder()
    defer { try? FileManager.default.removeItem(at: dir) }
    var m = Self.manifest()
    m.metrics.heldoutAccuracy = nil
    try RewardHeadCheckpoint(manifest: m, weight: [1, 2, 3, 4], bias: 0).write(to: dir.path)
    let text = try String(contentsOf: dir.appendingPathComponent("manifest.json"), encoding: .utf8)
    #expect(text.contains("\"heldout_accuracy\" : null"))
    #expect(try RewardHeadCheckpoint(directory: dir.path).manifest.metrics.heldoutAccuracy == nil)
  }

  @Test func writingIntoANonEmptyFolderIsRefused() throws {
    let dir = try Self.folder()
    defer { try? FileManager.default.removeItem(at: dir) }
    let ckpt = try RewardHeadCheckpoint(directory: dir.path)
    #expect(throws: RewardHeadError.outputExists(path: dir.standardizedFileURL.path)) { try ckpt.write(to: dir.path) }
  }

  @Test func missingFiles() throws {
    let noManifest = try Self.folder { try FileManager.default.removeItem(at: $0.appendingPathComponent("manifest.json")) }
    let noWeights = try Self.folder {
      try FileManager.default.removeItem(at: $0.appendingPathComponent("reward-head.safetensors"))
    }
    defer { for d in [noManifest, noWeights] { try? FileManager.default.removeItem(at: d) } }
    #expect(throws: RewardHeadError.missingFile(path: noManifest.appendingPathComponent("manifest.json").path)) {
      _ = try RewardHeadCheckpoint(directory: noManifest.path)
    }
    #expect(throws: RewardHeadError.missingFile(path: noWeights.appendingPathComponent("reward-head.safetensors").path)) {
      _ = try RewardHeadCheckpoint(directory: noWeights.path)
    }
  }

  /// Each broken tensor set and the error it must give.
  static let tensorCases: [(String, [(String, String, [Int], [UInt8])], @Sendable (RewardHeadError) -> Bool)] = [
    ("extra tensor", [("weight", "F32", [4], f32([1, 2, 3, 4])), ("bias", "F32", [1], f32([0])), ("scale", "F32", [1], f32([1]))],
     { if case .unexpectedTensor(_, "scale") = $0 { true } else { false } }),
    ("missing bias", [("weight", "F32", [4], f32([1, 2, 3, 4]))],
     { if case .missingTensor(_, "bias") = $0 { true } else { false } }),
    ("missing weight", [("bias", "F32", [1], f32([0]))],
     { if case .missingTensor(_, "weight") = $0 { true } else { false } }),
    ("weight shorter than hidden size", [("weight", "F32", [3], f32([1, 2, 3])), ("bias", "F32", [1], f32([0]))],
     { if case .badTensor(_, "weight", _) = $0 { true } else { false } }),
    ("2-D weight", [("weight", "F32", [1, 4], f32([1, 2, 3, 4])), ("bias", "F32", [1], f32([0]))],
     { if case .badTensor(_, "weight", _) = $0 { true } else { false } }),
    ("F16 weight", [("weight", "F16", [4], [0, 60, 0, 60, 0, 60, 0, 60]), ("bias", "F32", [1], f32([0]))],
     { if case .badTensor(_, "weight", _) = $0 { true } else { false } }),
    ("NaN weight", [("weight", "F32", [4], f32([1, .nan, 3, 4])), ("bias", "F32", [1], f32([0]))],
     { if case .nonFinite(_, "weight") = $0 { true } else { false } }),
    ("infinite bias", [("weight", "F32", [4], f32([1, 2, 3, 4])), ("bias", "F32", [1], f32([.infinity]))],
     { if case .nonFinite(_, "bias") = $0 { true } else { false } }),
  ]

  @Test(arguments: 0..<tensorCases.count)
  func brokenTensorsAreRefused(index: Int) throws {
    let (name, tensors, matches) = Self.tensorCases[index]
    let dir = try Self.folder { try Self.replaceWeights($0, tensors) }
    defer { try? FileManager.default.removeItem(at: dir) }
    let error = #expect(throws: RewardHeadError.self, "\(name)") { _ = try RewardHeadCheckpoint(directory: dir.path) }
    #expect(error.map(matches) == true, "\(name): \(String(describing: error))")
  }

  @Test func truncatedWeightsAreMalformed() throws {
    let dir = try Self.folder { dir in
      let url = dir.appendingPathComponent("reward-head.safetensors")
      let data = try Data(contentsOf: url)
      try data.prefix(data.count - 3).write(to: url)
    }
    defer { try? FileManager.default.removeItem(at: dir) }
    let error = #expect(throws: RewardHeadError.self) { _ = try RewardHeadCheckpoint(directory: dir.path) }
    guard case .malformedWeights = error else {
      Issue.record("expected malformedWeights, got \(String(describing: error))")
      return
    }
  }

  /// Each manifest edit and the error it must give.
  static let manifestCases: [(String, @Sendable (inout [String: Any]) -> Void, @Sendable (RewardHeadError) -> Bool)] = [
    ("other format", { $0["format"] = "something-else" }, { if case .unsupported = $0 { true } else { false } }),
    ("newer version", { $0["format_version"] = 2 }, { if case .unsupported = $0 { true } else { false } }),
    ("other feature", { $0["feature"] = "mean-pool" }, { if case .unsupported = $0 { true } else { false } }),
    ("no base model", { $0["base_model"] = nil }, { if case .malformedManifest(_, let r) = $0 { r.contains("base_model") } else { false } }),
    ("no metrics", { $0["metrics"] = nil }, { if case .malformedManifest(_, let r) = $0 { r.contains("metrics") } else { false } }),
    ("bad input", { $0["input"] = "markdown" }, { if case .malformedManifest(_, let r) = $0 { r.contains("input") } else { false } }),
    ("short sha", { $0["base_model"] = ["name": "x", "sha256": "abc"] }, { if case .malformedManifest(_, let r) = $0 { r.contains("sha256") } else { false } }),
    ("hidden size as string", { $0["hidden_size"] = "4" }, { if case .malformedManifest(_, let r) = $0 { r.contains("hidden_size") } else { false } }),
    ("absurd hidden size", { $0["hidden_size"] = 10_000_000 }, { if case .malformedManifest(_, let r) = $0 { r.contains("hidden_size") } else { false } }),
    ("hidden size not the weight's", { $0["hidden_size"] = 8 }, { if case .badTensor(_, "weight", _) = $0 { true } else { false } }),
  ]

  @Test(arguments: 0..<manifestCases.count)
  func brokenManifestsAreRefused(index: Int) throws {
    let (name, change, matches) = Self.manifestCases[index]
    let dir = try Self.folder { try Self.editManifest($0, change) }
    defer { try? FileManager.default.removeItem(at: dir) }
    let error = #expect(throws: RewardHeadError.self, "\(name)") { _ = try RewardHeadCheckpoint(directory: dir.path) }
    #expect(error.map(matches) == true, "\(name): \(String(describing: error))")
    #expect(error.map { !$0.description.isEmpty } == true)
  }

  @Test func manifestThatIsNotJSONIsMalformed() throws {
    let dir = try Self.folder { try Data("not json".utf8).write(to: $0.appendingPathComponent("manifest.json")) }
    defer { try? FileManager.default.removeItem(at: dir) }
    let error = #expect(throws: RewardHeadError.self) { _ = try RewardHeadCheckpoint(directory: dir.path) }
    #expect(error?.description.contains("not valid JSON") == true)
  }

  @Test func inMemoryCheckpointsAreValidatedToo() throws {
    #expect(throws: RewardHeadError.self) { _ = try RewardHeadCheckpoint(manifest: Self.manifest(), weight: [1, 2, 3], bias: 0) }
    #expect(throws: RewardHeadError.self) {
      _ = try RewardHeadCheckpoint(manifest: Self.manifest(), weight: [1, 2, 3, .nan], bias: 0)
    }
    #expect(throws: RewardHeadError.self) {
      _ = try RewardHeadCheckpoint(manifest: Self.manifest(), weight: [1, 2, 3, 4], bias: .infinity)
    }
  }
}
