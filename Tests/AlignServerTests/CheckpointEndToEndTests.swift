import AlignAPI
import AlignEngine
import AlignShared
import AlignStore
import AlignTestSupport
import Crypto
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import Synchronization
import Testing

/// Variants of the default SmolLM2 GGUF for rollout tests, written by patching bytes of a copy.
enum CheckpointVariants {
  static var defaultModel: URL { TestPaths.modelsDir.appendingPathComponent("SmolLM2-135M-Instruct.Q4_1.gguf") }

  /// A copy with the final norm's F32 weights transformed (by index and value): a genuinely
  /// different checkpoint with the same tokenizer. A uniform scale would not change greedy output.
  static func patchedNorm(_ transform: (Int, Float) -> Float, in folder: URL, name: String) throws -> URL {
    let gguf = try GGUFFile(path: defaultModel.path)
    let tensor = try #require(gguf.tensor(named: "output_norm.weight"))
    var data = try Data(contentsOf: defaultModel)
    let start = tensor.fileOffset
    #expect(tensor.type == .f32)
    for i in 0..<tensor.elementCount {
      let at = start + i * 4
      let bits = data[at..<(at + 4)].withUnsafeBytes { $0.loadUnaligned(as: UInt32.self) }
      var patched = transform(i, Float(bitPattern: UInt32(littleEndian: bits))).bitPattern.littleEndian
      withUnsafeBytes(of: &patched) { data.replaceSubrange(at..<(at + 4), with: $0) }
    }
    let url = folder.appendingPathComponent(name)
    try data.write(to: url)
    return url
  }

  /// A copy with one metadata string value replaced by another of the same length.
  static func patchedMetadata(key: String, from old: String, to new: String, in folder: URL, name: String) throws -> URL {
    precondition(old.utf8.count == new.utf8.count)
    var data = try Data(contentsOf: defaultModel)
    var needle = Data(key.utf8)
    needle += Data([8, 0, 0, 0])  // GGUF string type
    var length = UInt64(old.utf8.count).littleEndian
    withUnsafeBytes(of: &length) { needle += Data($0) }
    needle += Data(old.utf8)
    let range = try #require(data.range(of: needle), "\(key) = \(old) not found")
    data.replaceSubrange((range.upperBound - old.utf8.count)..<range.upperBound, with: Data(new.utf8))
    let url = folder.appendingPathComponent(name)
    try data.write(to: url)
    return url
  }

  /// A copy with one uint32 metadata value replaced.
  static func patchedUInt32(key: String, to value: UInt32, in folder: URL, name: String) throws -> URL {
    var data = try Data(contentsOf: defaultModel)
    var needle = Data(key.utf8)
    needle += Data([4, 0, 0, 0])  // GGUF uint32 type
    let range = try #require(data.range(of: needle), "\(key) not found")
    var patched = value.littleEndian
    withUnsafeBytes(of: &patched) { data.replaceSubrange(range.upperBound..<(range.upperBound + 4), with: $0) }
    let url = folder.appendingPathComponent(name)
    try data.write(to: url)
    return url
  }

  static func sha256(_ url: URL) throws -> String {
    SHA256.hash(data: try Data(contentsOf: url, options: .alwaysMapped)).map { String(format: "%02x", $0) }.joined()
  }
}

extension Alignd_V1_Admin.Client where Transport == HTTP2ClientTransport.Posix {
  /// Uploads a file as a checkpoint; `declaredSize`/`declaredSHA256` override the truthful header,
  /// `sendBytes` cuts the upload short.
  func upload(
    _ file: URL, role: Alignd_V1_ModelRole = .policy, name: String, format: Alignd_V1_CheckpointFormat = .gguf,
    declaredSize: UInt64? = nil, declaredSHA256: String? = nil, sendBytes: Int? = nil
  ) async throws -> Alignd_V1_CheckpointInfo {
    let data = try Data(contentsOf: file, options: .alwaysMapped)
    let sha = try declaredSHA256 ?? CheckpointVariants.sha256(file)
    let response = try await uploadCheckpoint { writer in
      try await writer.write(.with {
        $0.header = .with {
          $0.role = role
          $0.name = name
          $0.format = format
          $0.sizeBytes = declaredSize ?? UInt64(data.count)
          $0.sha256 = sha
        }
      })
      let end = min(data.count, sendBytes ?? data.count)
      var offset = 0
      while offset < end {
        let next = min(end, offset + (1 << 20))
        try await writer.write(.with { $0.chunk = data.subdata(in: offset..<next) })
        offset = next
      }
    }
    return response.checkpoint
  }
}

struct StreamResult: Sendable {
  var prompt: Int
  var version: String
  var text: String
}

@Suite("Checkpoint rollout over gRPC", .serialized)
struct CheckpointEndToEndTests {
  static let defaultPresent = FileManager.default.fileExists(atPath: CheckpointVariants.defaultModel.path)

  static func generate(_ inference: Alignd_V1_Inference.Client<HTTP2ClientTransport.Posix>, _ prompt: String,
                       maxTokens: UInt32 = 1, clientID: String = "") async throws -> Alignd_V1_GenerateResponse {
    try await inference.generate(.with {
      $0.chat = .with { $0.messages = [.with { $0.role = "user"; $0.content = prompt }] }
      $0.sampling = .with { $0.maxTokens = maxTokens; $0.temperature = 0 }
      $0.clientRequestID = clientID
    })
  }

  static func expectCode(_ code: RPCError.Code, _ what: String, _ body: () async throws -> Void) async {
    do {
      try await body()
      Issue.record("\(what): expected \(code), got success")
    } catch let error as RPCError {
      #expect(error.code == code, "\(what): \(error)")
    } catch {
      Issue.record("\(what): unexpected \(error)")
    }
  }

  @Test("bad checkpoints are rejected with clear errors while the active policy keeps serving",
        .enabled(if: defaultPresent, "the default model is not fetched"))
  func badCheckpoints() async throws {
    let folder = try TestPaths.temporaryFolder()
    defer { try? FileManager.default.removeItem(at: folder) }
    let server = try await ServerProcess()
    try await server.waitUntilServing()
    let good = CheckpointVariants.defaultModel
    let nan = try CheckpointVariants.patchedNorm({ _, _ in .nan }, in: folder, name: "nan.gguf")
    let mamba = try CheckpointVariants.patchedMetadata(
      key: "general.architecture", from: "llama", to: "mamba", in: folder, name: "mamba.gguf")
    let absurd = try CheckpointVariants.patchedUInt32(
      key: "llama.embedding_length", to: 3_000_000_000, in: folder, name: "absurd.gguf")
    try await server.withClient { client in
      let admin = Alignd_V1_Admin.Client(wrapping: client)
      let inference = Alignd_V1_Inference.Client(wrapping: client)
      let before = try await Self.generate(inference, "Hi").versions.policy

      await Self.expectCode(.invalidArgument, "truncated") {
        _ = try await admin.upload(good, name: "truncated", sendBytes: 1_000_000)
      }
      await Self.expectCode(.invalidArgument, "wrong sha256") {
        _ = try await admin.upload(good, name: "wrongsha", declaredSHA256: String(repeating: "ab", count: 32))
      }
      await Self.expectCode(.invalidArgument, "size lies (more bytes than declared)") {
        _ = try await admin.upload(good, name: "sizelie", declaredSize: 4096)
      }
      for name in ["../escape", "/abs", "a/b", ".hidden", ""] {
        await Self.expectCode(.invalidArgument, "name '\(name)'") { _ = try await admin.upload(good, name: name) }
      }
      await Self.expectCode(.invalidArgument, "format not allowed for the role") {
        _ = try await admin.upload(good, name: "headgguf", format: .rewardHead)
      }
      // Uploads that verify but must not activate: the gates stop them.
      for (file, name, expected) in [(nan, "nan-weights", "smoke"), (mamba, "mamba-arch", "architecture"),
                                     (absurd, "absurd-dims", "load")] {
        let info = try await admin.upload(file, name: name)
        #expect(info.state == .registered)
        do {
          _ = try await admin.activateCheckpoint(.with { $0.role = .policy; $0.version = info.version })
          Issue.record("\(name) activated")
        } catch let error as RPCError {
          #expect(error.code == .failedPrecondition, "\(name): \(error)")
          #expect(error.message.contains(expected) || error.message.contains("load"), "\(name): \(error.message)")
        }
        let listed = try await admin.listCheckpoints(.with { $0.role = .policy }).checkpoints
        #expect(listed.first { $0.version == info.version }?.state == .failed)
      }
      await Self.expectCode(.notFound, "unknown version") {
        _ = try await admin.activateCheckpoint(.with { $0.role = .policy; $0.version = "nope@0123456789ab" })
      }
      // Serving never stopped and still uses the same version.
      #expect(try await Self.generate(inference, "Hi").versions.policy == before)
    }
    server.signal(SIGTERM)
    #expect(try await server.waitForExit() == 0)
  }

  @Test("five policy swaps under 16 streams: no failure, each stream on one version, new requests on the new one",
        .enabled(if: defaultPresent, "the default model is not fetched"))
  func swapsUnderLoad() async throws {
    let folder = try TestPaths.temporaryFolder()
    defer { try? FileManager.default.removeItem(at: folder) }
    let variant = try CheckpointVariants.patchedNorm({ i, w in w * (i % 2 == 0 ? 1.3 : 0.7) }, in: folder, name: "variant.gguf")
    // The variant flags 2 more of the 16 quality-gate prompts than the default (the gate, tested
    // in CanaryEndToEndTests, would refuse it): this test is about swaps, so it runs no quality gate.
    let server = try await ServerProcess(arguments: ["--batch-invariant", "true", "--policy-gate-prompts", "0"])
    try await server.waitUntilServing()
    let prompts = ["Tell me a story about a cat.", "Explain rain to a child.", "List three fruits.", "Why is the sky blue?"]
    try await server.withClient { client in
      let admin = Alignd_V1_Admin.Client(wrapping: client)
      let inference = Alignd_V1_Inference.Client(wrapping: client)
      let original = try await Self.generate(inference, "Hi").versions.policy
      let a = try await admin.upload(CheckpointVariants.defaultModel, name: "policy-a").version
      let b = try await admin.upload(variant, name: "policy-b").version

      // 16 streams at a time, started continuously, while the policy flips 5 times.
      let failures = Locked<[String]>([])
      let results = Locked<[StreamResult]>([])
      let swapping = Locked(true)
      try await withThrowingTaskGroup(of: Void.self) { group in
        for worker in 0..<16 {
          group.addTask {
            var round = 0
            while (swapping.withLock({ $0 }) || round == 0) && !Task.isCancelled {
              let p = (worker + round) % prompts.count
              round += 1
              do {
                let request = Alignd_V1_GenerateRequest.with {
                  $0.chat = .with { $0.messages = [.with { $0.role = "user"; $0.content = prompts[p] }] }
                  $0.sampling = .with { $0.maxTokens = 24; $0.temperature = 0; $0.ignoreEos = true }
                }
                let (text, version) = try await inference.generateStream(request) { response in
                  var text = ""
                  var version = ""
                  for try await message in response.messages {
                    switch message.event {
                    case .chunk(let chunk): text += chunk.text
                    case .end(let end): version = end.versions.policy
                    case nil: break
                    }
                  }
                  return (text, version)
                }
                results.withLock { $0.append(StreamResult(prompt: p, version: version, text: text)) }
              } catch {
                failures.withLock { $0.append("\(error)") }
              }
            }
          }
        }
        group.addTask {
          defer { swapping.withLock { $0 = false } }
          try await Task.sleep(for: .seconds(1))
          for (i, target) in [b, a, b, a, b].enumerated() {
            let state = try await admin.activateCheckpoint(.with {
              $0.role = .policy
              $0.version = target
              $0.operationID = "swap-\(i)"
            })
            #expect(state.activeVersion == target)
            #expect(state.gates.allSatisfy { $0.passed })
            // A request admitted after the flip is served by the new version.
            #expect(try await Self.generate(inference, "Hi").versions.policy == target)
            // Let a round of streams start and finish on this version before the next flip
            // (however slow the machine), so every version really serves streams.
            let done = { results.withLock { $0.count } + failures.withLock { $0.count } }
            let seen = done()
            while done() < seen + 16 { try await Task.sleep(for: .milliseconds(100)) }
          }
          swapping.withLock { $0 = false }
        }
        try await group.waitForAll()
      }
      #expect(failures.withLock { $0 }.isEmpty, "\(failures.withLock { $0 })")
      let all = results.withLock { $0 }
      let versions = Set(all.map(\.version))
      #expect(versions.isSubset(of: [original, a, b]))
      #expect(versions.contains(b) && versions.count >= 2, "streams saw \(versions)")

      // Each stream's text is exactly what its stamped version generates (batch-invariant greedy):
      // no stream mixed tokens of two versions.
      var reference: [String: [Int: String]] = [:]
      for version in [a, b] {
        _ = try await admin.activateCheckpoint(.with { $0.role = .policy; $0.version = version })
        for (p, prompt) in prompts.enumerated() {
          reference[version, default: [:]][p] = try await inference.generate(.with {
            $0.chat = .with { $0.messages = [.with { $0.role = "user"; $0.content = prompt }] }
            $0.sampling = .with { $0.maxTokens = 24; $0.temperature = 0; $0.ignoreEos = true }
          }).completions[0].text
        }
      }
      reference[original] = reference[a]  // same weights under another name
      #expect(reference[a] != reference[b], "the variant must generate differently for the test to mean anything")
      for result in all {
        #expect(result.text == reference[result.version]?[result.prompt], "stream on \(result.version) for prompt \(result.prompt)")
      }

      // Idempotent by operation id: replaying swap-0 returns its first outcome and changes nothing.
      let replay = try await admin.activateCheckpoint(.with { $0.role = .policy; $0.version = b; $0.operationID = "swap-0" })
      #expect(replay.activeVersion == b)
      #expect(try await admin.getStatus(.init()).roles.first { $0.role == .policy }?.activeVersion == b)
    }
    server.signal(SIGTERM)
    #expect(try await server.waitForExit() == 0)
  }

  @Test("a 25% canary takes about a quarter of 400 requests; rollback returns them; the state survives a restart",
        .enabled(if: defaultPresent, "the default model is not fetched"))
  func canaryRollbackRestart() async throws {
    let folder = try TestPaths.temporaryFolder()
    defer { try? FileManager.default.removeItem(at: folder) }
    let dataDir = folder.appendingPathComponent("data").path
    let variant = try CheckpointVariants.patchedNorm({ i, w in w * (i % 2 == 0 ? 1.3 : 0.7) }, in: folder, name: "variant.gguf")
    // About canary routing and persistence, not quality: no quality gate (see swapsUnderLoad).
    let noQualityGate = ["--policy-gate-prompts", "0"]
    var server = try await ServerProcess(arguments: noQualityGate, dataDir: dataDir)
    try await server.waitUntilServing()
    var candidate = ""
    var stable = ""
    try await server.withClient { client in
      let admin = Alignd_V1_Admin.Client(wrapping: client)
      let inference = Alignd_V1_Inference.Client(wrapping: client)
      stable = try await Self.generate(inference, "Hi").versions.policy
      candidate = try await admin.upload(variant, name: "candidate").version
      let state = try await admin.activateCheckpoint(.with { $0.role = .policy; $0.version = candidate; $0.canaryPercent = 25 })
      #expect(state.activeVersion == stable && state.canaryVersion == candidate && state.canaryPercent == 25)

      // 400 requests, 8 at a time, each with its own request id.
      let served = try await withThrowingTaskGroup(of: (Int, String).self) { group in
        var served: [Int: String] = [:]
        for i in 0..<400 {
          if i >= 8, let (j, version) = try await group.next() { served[j] = version }
          group.addTask { (i, try await Self.generate(inference, "Hi", clientID: "client-\(i)").versions.policy) }
        }
        for try await (j, version) in group { served[j] = version }
        return served
      }
      let onCanary = served.values.filter { $0 == candidate }.count
      #expect(served.count == 400)
      #expect(served.values.allSatisfy { $0 == candidate || $0 == stable })
      for i in 0..<20 {  // sticky: the same request id lands on the same side
        #expect(try await Self.generate(inference, "Hi", clientID: "client-\(i)").versions.policy == served[i])
      }
      #expect((60...140).contains(onCanary), "the canary took \(onCanary) of 400")
      let listed = try await admin.listCheckpoints(.init()).checkpoints
      #expect(listed.first { $0.version == candidate }?.state == .canary)
    }
    // The canary survives a restart.
    server.signal(SIGTERM)
    #expect(try await server.waitForExit() == 0)
    server = try await ServerProcess(arguments: noQualityGate, dataDir: dataDir)
    try await server.waitUntilServing()
    try await server.withClient { client in
      let admin = Alignd_V1_Admin.Client(wrapping: client)
      let inference = Alignd_V1_Inference.Client(wrapping: client)
      let role = try await admin.getStatus(.init()).roles.first { $0.role == .policy }
      #expect(role?.activeVersion == stable && role?.canaryVersion == candidate && role?.canaryPercent == 25)

      let state = try await admin.rollback(.with { $0.role = .policy })
      #expect(state.activeVersion == stable && state.canaryVersion.isEmpty)
      for i in 0..<100 {
        #expect(try await Self.generate(inference, "Hi", clientID: "client-\(i)").versions.policy == stable)
      }
      // Promote path: a new canary promoted to active, then persisted across a restart.
      _ = try await admin.activateCheckpoint(.with { $0.role = .policy; $0.version = candidate; $0.canaryPercent = 10 })
      let promoted = try await admin.promoteCanary(.with { $0.role = .policy })
      #expect(promoted.activeVersion == candidate && promoted.previousVersion == stable)
    }
    server.signal(SIGTERM)
    #expect(try await server.waitForExit() == 0)
    server = try await ServerProcess(arguments: noQualityGate, dataDir: dataDir)
    try await server.waitUntilServing()
    let promoted = candidate
    try await server.withClient { client in
      let inference = Alignd_V1_Inference.Client(wrapping: client)
      let served = try await Self.generate(inference, "Hi").versions.policy
      #expect(served == promoted)
    }
    server.signal(SIGTERM)
    #expect(try await server.waitForExit() == 0)
  }

  @Test("replicas sharing a PostgreSQL store and a checkpoint folder converge on the activated policy and reward model",
        .enabled(if: defaultPresent, "the default model is not fetched"),
        .disabled(if: TestEnvironment.skipPostgres, "ALIGND_SKIP_POSTGRES=1"))
  func replicasConverge() async throws {
    let url = TestEnvironment.postgresURL
    let schema = "replicas_" + UUID().uuidString.lowercased().replacingOccurrences(of: "-", with: "").prefix(16)
    let storeURL = url + (url.contains("?") ? "&" : "?") + "schema=\(schema)"
    let folder = try TestPaths.temporaryFolder()
    defer { try? FileManager.default.removeItem(at: folder) }
    let shared = folder.appendingPathComponent("shared").path
    let variant = try CheckpointVariants.patchedNorm({ i, w in w * (i % 3 == 0 ? 1.2 : 0.9) }, in: folder, name: "variant.gguf")
    // The reward checkpoint is a tiny random model: the eval gate (tested in
    // TrainedJudgesEndToEndTests) would rightly refuse it against the trained default, so this
    // test, about replicas converging, lets any accuracy pass (and runs no policy quality gate).
    let arguments = [
      "--store-url", storeURL, "--rollout-sync-seconds", "1", "--reward-gate-margin", "1", "--policy-gate-prompts", "0",
    ]
    let first = try await ServerProcess(arguments: arguments, dataDir: shared)
    let second = try await ServerProcess(arguments: arguments, dataDir: shared)
    try await first.waitUntilServing()
    try await second.waitUntilServing()
    // A reward model too: the sequence-classification fixture, tarred.
    let rewardTar = folder.appendingPathComponent("reward.tar").path
    try TarWriter.archive(
      directory: TestPaths.repositoryRoot.appendingPathComponent("Tests/Fixtures/reward/llama-chat-reward").path,
      to: rewardTar)
    let (version, reward) = try await first.withClient { client in
      let admin = Alignd_V1_Admin.Client(wrapping: client)
      let version = try await admin.upload(variant, name: "shared-policy").version
      _ = try await admin.activateCheckpoint(.with { $0.role = .policy; $0.version = version })
      let reward = try await admin.upload(
        URL(fileURLWithPath: rewardTar), role: .reward, name: "shared-reward", format: .hfSafetensorsTar).version
      _ = try await admin.activateCheckpoint(.with { $0.role = .reward; $0.version = reward })
      return (version, reward)
    }
    // The other replica picks the new version up from the store within a few sync periods.
    try await second.withClient { client in
      let admin = Alignd_V1_Admin.Client(wrapping: client)
      var active = ""
      for _ in 0..<60 where active != version {
        active = try await admin.getStatus(.init()).roles.first { $0.role == .policy }?.activeVersion ?? ""
        if active != version { try await Task.sleep(for: .milliseconds(500)) }
      }
      #expect(active == version)
      let served = try await Self.generate(Alignd_V1_Inference.Client(wrapping: client), "Hi").versions.policy
      #expect(served == version)
      var activeReward = ""
      for _ in 0..<60 where activeReward != reward {
        activeReward = try await admin.getStatus(.init()).roles.first { $0.role == .reward }?.activeVersion ?? ""
        if activeReward != reward { try await Task.sleep(for: .milliseconds(500)) }
      }
      #expect(activeReward == reward)
      let scored = try await Alignd_V1_Inference.Client(wrapping: client).score(.with {
        $0.items = [.with { $0.prompt = "Hello there"; $0.response = "Hi!" }]
      })
      #expect(scored.versions.reward == reward)
    }
    for server in [first, second] {
      server.signal(SIGTERM)
      #expect(try await server.waitForExit() == 0)
    }
  }
}
