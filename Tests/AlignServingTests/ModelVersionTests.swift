import AlignEngine
import AlignServing
import AlignShared
import AlignTestSupport
import Foundation
import Testing

/// Every answer names the versions that produced it; a model folder must have one version,
/// whichever role loads it (``ModelFingerprint``).
@Suite("Model versions")
struct ModelVersionTests {
  /// `sha256sum`'s digest of a file: an independent reference.
  static func sha256sum(_ path: String) throws -> String {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/sha256sum")
    process.arguments = [path]
    let pipe = Pipe()
    process.standardOutput = pipe
    try process.run()
    let output = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
    process.waitUntilExit()
    return String(output.prefix(64))
  }

  @Test("a folder model has one version string whichever role loads it: policy, guard (safety), reward")
  func oneVersionPerFolder() async throws {
    // A tiny causal LM with a tokenizer: it loads as a policy and as a guard model.
    let folder = TestModels.tinyPolicy
    let version = try ModelFingerprint(path: folder).version
    #expect(version.hasPrefix("tiny-guard@") && version.count == "tiny-guard@".count + 12)

    let host = ModelHost(
      scheduler: .init(maxRunningSequences: 2, kvCapacityTokens: 512), engine: EngineSettings(threads: 1))
    let policy = try await host.loadPolicySnapshot(path: folder)
    defer { policy.stop() }
    #expect(policy.version == version)
    #expect(policy.sha256 == (try ModelFingerprint(path: folder)).sha256)
    #expect(try GuardBackend(path: folder).version == version)

    // A sequence-classification folder as the reward model.
    let rewardFolder = TestModels.fixture("reward/llama-chat-reward")
    #expect(try SequenceClassificationRewardModel(directory: rewardFolder).version == (try ModelFingerprint(path: rewardFolder)).version)
  }

  @Test("a file's version is its name without .gguf and the first 12 hex digits of its bytes' SHA-256, as the registry writes it")
  func fileVersion() throws {
    let file = TestModels.fixture("tiny-models/gguf/llama-f32.gguf")
    let fingerprint = try ModelFingerprint(path: file)
    let digest = try Self.sha256sum(file)
    #expect(fingerprint.name == "llama-f32")
    #expect(fingerprint.sha256 == digest)
    #expect(fingerprint.version == "llama-f32@" + digest.prefix(12))
    #expect(ModelFingerprint.version(name: "uploaded", sha256: digest) == "uploaded@" + digest.prefix(12))
    #expect(fingerprint.sizeBytes == (try FileManager.default.attributesOfItem(atPath: file)[.size] as? NSNumber)?.uint64Value)
  }

  @Test("a folder's version changes with any file's content or name, not with hidden files")
  func folderDigest() throws {
    let folder = FileManager.default.temporaryDirectory.appendingPathComponent("version-\(UUID().uuidString)")
    defer { try? FileManager.default.removeItem(at: folder) }
    try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
    try Data("a".utf8).write(to: folder.appendingPathComponent("config.json"))
    let first = try ModelFingerprint(path: folder.path)
    try Data("x".utf8).write(to: folder.appendingPathComponent(".hidden"))
    #expect(try ModelFingerprint(path: folder.path) == first)
    try Data("b".utf8).write(to: folder.appendingPathComponent("config.json"))
    let changed = try ModelFingerprint(path: folder.path)
    #expect(changed.sha256 != first.sha256)
    try FileManager.default.moveItem(
      at: folder.appendingPathComponent("config.json"), to: folder.appendingPathComponent("model.json"))
    #expect(try ModelFingerprint(path: folder.path).sha256 != changed.sha256)
    #expect(throws: ModelFileError.self) { try ModelFingerprint(path: folder.path + "-missing") }
  }
}
