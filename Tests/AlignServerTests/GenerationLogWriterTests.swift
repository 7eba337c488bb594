import AlignEngine
import AlignServer
import AlignServing
import AlignStore
import Foundation
import Logging
import Synchronization
import Testing

/// The generation log's writer against a fake store: what it writes (one entry per completion,
/// ids, versions, sampling, redaction), and that a full queue or a failing store only costs log
/// entries (counted), never the caller.
@Suite("Generation log writer")
struct GenerationLogWriterTests {
  /// A store that keeps entries in memory, or fails every write while `failing`.
  final class FakeLog: GenerationLogStore {
    let entries = Mutex<[GenerationLogEntry]>([])
    let failing = Atomic<Bool>(false)

    struct Outage: Error {}

    func appendGenerations(_ new: [GenerationLogEntry]) async throws -> Int {
      if failing.load(ordering: .relaxed) { throw Outage() }
      entries.withLock { $0 += new }
      return new.count
    }
    func generations(_ filter: GenerationLogFilter) async throws -> [StoredGeneration] {
      entries.withLock { $0.enumerated().map { StoredGeneration(id: Int64($0.offset + 1), entry: $0.element) } }
    }
    func generation(completionID: String) async throws -> StoredGeneration? {
      try await generations(GenerationLogFilter()).first { $0.entry.completionID == completionID }
    }
    let retentions = Mutex<[GenerationLogRetention]>([])
    func pruneGenerations(_ retention: GenerationLogRetention) async throws -> Int {
      retentions.withLock { $0.append(retention) }
      return 0
    }
  }

  static func record(_ texts: [String], prompt: String = "Hi", key: String = "web") -> GenerationRecord {
    var request = GenerationRequest(.chat([ChatMessage(role: "user", content: prompt)]))
    request.apiKeyID = key
    request.endpoint = "grpc.Generate"
    request.n = texts.count
    request.clientRequestID = "req-1"
    var result = GenerationResult(
      responseID: "gen-1", versions: ModelVersions(policy: "smol@1", reward: "rm@2", safety: "safe@3"))
    result.completions = texts.enumerated().map { index, text in
      var completion = GeneratedCompletion(index: index)
      completion.completionID = "cmpl-\(index)"
      completion.text = text
      completion.tokenIDs = [Int32(index), 7]
      completion.finishReason = .stop
      return completion
    }
    result.usage = TokenUsage(promptTokens: 5, completionTokens: 4)
    var sampling = SamplingParameters()
    sampling.seed = 42
    sampling.temperature = 0.5
    return GenerationRecord(
      request: request, renderedPrompt: "<user>\(prompt)</user>", sampling: sampling, maxTokens: 16, result: result,
      timeToFirstToken: .milliseconds(12), duration: .milliseconds(40), finishedAt: Date())
  }

  static func writer(_ store: FakeLog, _ configure: (inout GenerationLogSettings) -> Void = { _ in }) -> GenerationLogWriter {
    var settings = GenerationLogSettings()
    configure(&settings)
    return GenerationLogWriter(
      store: store, settings: settings, logger: Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() }),
      now: { 1_234 })
  }

  @Test("one entry per completion with its own id, the request's versions, sampling and timing")
  func entriesPerCompletion() async throws {
    let store = FakeLog()
    let writer = Self.writer(store)
    writer.record(Self.record(["first", "second"]))
    #expect(store.entries.withLock { $0.isEmpty })  // nothing is written on the caller's path
    await writer.flush()
    let entries = store.entries.withLock { $0 }
    #expect(entries.map(\.completionID) == ["cmpl-0", "cmpl-1"])
    #expect(entries.map(\.text) == ["first", "second"])
    #expect(entries.map(\.tokenIDs) == [[0, 7], [1, 7]])
    let first = try #require(entries.first)
    #expect(first.responseID == "gen-1" && first.clientRequestID == "req-1")
    #expect(first.apiKeyID == "web" && first.endpoint == "grpc.Generate")
    #expect(first.prompt == "<user>Hi</user>")
    #expect(first.messages == [LoggedMessage(role: "user", content: "Hi")])
    #expect((first.policyVersion, first.rewardVersion, first.safetyVersion) == ("smol@1", "rm@2", "safe@3"))
    #expect(first.finishReason == "stop")
    #expect(first.createdAtUnixMs == 1_234)
    #expect(first.ttftMs == 12 && first.durationMs == 40)
    #expect(first.promptTokens == 5 && first.completionTokens == 2)
    let sampling = try #require(
      try JSONSerialization.jsonObject(with: Data(first.samplingJSON.utf8)) as? [String: Any])
    #expect(sampling["seed"] as? String == "42")
    #expect(sampling["temperature"] as? Double == 0.5)
    #expect(sampling["max_tokens"] as? Int == 16 && sampling["n"] as? Int == 2)
    #expect(writer.totals.written == 2)
  }

  @Test("redaction replaces PII spans in prompt, messages and text and drops that completion's token ids")
  func redaction() async throws {
    let store = FakeLog()
    let writer = Self.writer(store) { $0.redactPII = true }
    writer.record(Self.record(["mail me at jane.doe@example.com", "no personal data"], prompt: "call 555-234-5678"))
    await writer.flush()
    let entries = store.entries.withLock { $0 }
    #expect(entries[0].text == "mail me at [REDACTED:email]")
    #expect(entries[0].tokenIDs.isEmpty && entries[0].redacted)
    #expect(entries[0].prompt == "<user>call [REDACTED:phone]</user>")
    #expect(entries[0].messages.first?.content == "call [REDACTED:phone]")
    // The prompt was redacted for every completion; this text was not, so its tokens stay.
    #expect(entries[1].text == "no personal data" && entries[1].tokenIDs == [1, 7] && entries[1].redacted)
  }

  @Test("a full queue drops and counts records instead of waiting; a failing store is counted, never thrown")
  func backpressureAndOutage() async throws {
    let store = FakeLog()
    let writer = Self.writer(store) { $0.queueCapacity = 2 }
    for _ in 0..<5 { writer.record(Self.record(["x"])) }
    #expect(writer.totals.dropped == 3)
    await writer.flush()
    #expect(store.entries.withLock { $0.count } == 2)  // the same completion id twice: the fake keeps both

    store.failing.store(true, ordering: .relaxed)
    writer.record(Self.record(["lost", "too"]))
    await writer.flush()
    #expect(writer.totals.failed == 2)
    store.failing.store(false, ordering: .relaxed)
    writer.record(Self.record(["back"]))
    await writer.flush()
    #expect(store.entries.withLock { $0.map(\.text) } == ["x", "x", "back"])
  }

  @Test("sampling rate 0 records nothing; logging off records nothing")
  func samplingAndOff() async throws {
    let store = FakeLog()
    let sampled = Self.writer(store) { $0.sampleRate = 0 }
    sampled.record(Self.record(["x"]))
    await sampled.flush()
    #expect(sampled.totals.sampledOut == 1)
    let off = Self.writer(store) { $0.enabled = false }
    off.record(Self.record(["x"]))
    await off.flush()
    #expect(store.entries.withLock { $0.isEmpty })
  }

  @Test("run writes batches on its own within the flush interval and prunes by age and rows")
  func runLoop() async throws {
    let store = FakeLog()
    let writer = Self.writer(store) {
      $0.flushInterval = .milliseconds(10)
      $0.pruneInterval = .milliseconds(10)
      $0.retentionDays = 1
      $0.retentionRows = 5
    }
    let running = Task { try await writer.run() }
    writer.record(Self.record(["background"]))
    // Generous: with every suite running in parallel on 2 cores, synchronous engine tests can hold
    // the cooperative pool's threads for long stretches (a CI run starved this task for 10 s). The
    // wait ends as soon as both have happened.
    let deadline = ContinuousClock.now + .seconds(120)
    while ContinuousClock.now < deadline
      && (store.entries.withLock({ $0.isEmpty }) || store.retentions.withLock({ $0.isEmpty }))
    {
      try await Task.sleep(for: .milliseconds(10))
    }
    running.cancel()
    _ = try? await running.value
    #expect(store.entries.withLock { $0.map(\.text) } == ["background"])
    let retention = try #require(store.retentions.withLock { $0.first })
    #expect(retention.olderThanUnixMs == 1_234 - 86_400_000 && retention.maxRows == 5)
  }
}
