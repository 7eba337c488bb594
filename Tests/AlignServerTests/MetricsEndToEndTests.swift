import AlignAPI
import AlignServer
import AlignTestSupport
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import Testing

/// GET /metrics of the real alignd binary, parsed by prometheus_client's parser
/// (Tests/Clients/parse_metrics.py in the pinned test venv): the series of issue 7 and the Grafana
/// dashboard are present with one type each, and they move after gRPC traffic (generate, score,
/// check safety, a screened prompt, feedback, refused calls, a checkpoint activation).
@Suite("Prometheus metrics end to end", .serialized)
struct MetricsEndToEndTests {
  static var defaultModel: URL { TestPaths.modelsDir.appendingPathComponent("SmolLM2-135M-Instruct.Q4_1.gguf") }
  static let defaultPresent = FileManager.default.fileExists(atPath: defaultModel.path)

  /// The pinned test venv's python (scripts/test-python-env.sh), overridable with ALIGND_TEST_PYTHON.
  static var python: String { TestEnvironment.python }
  static let pythonPresent = FileManager.default.isExecutableFile(atPath: python)

  /// One parsed scrape: prometheus_client's families (a counter family is named without `_total`).
  struct Scrape: Decodable {
    struct Family: Decodable {
      var name: String
      var type: String
      var samples: [Sample]
    }
    struct Sample: Decodable {
      var name: String
      var labels: [String: String]
      var value: Double

      enum CodingKeys: String, CodingKey { case name, labels, value }
      init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        name = try container.decode(String.self, forKey: .name)
        labels = try container.decode([String: String].self, forKey: .labels)
        if let number = try? container.decode(Double.self, forKey: .value) {
          value = number
        } else {
          let text = try container.decode(String.self, forKey: .value)
          value = text == "+Inf" ? .infinity : text == "-Inf" ? -.infinity : .nan
        }
      }
    }
    var content_type: String
    var families: [Family]

    /// The type of the family exposing `series` (a counter's `_total` name, a histogram's base name).
    func type(of series: String) -> String? {
      families.first { $0.name == series || ($0.type == "counter" && $0.name + "_total" == series) }?.type
    }

    /// The sum of the samples named `name` whose labels include `labels`.
    func total(_ name: String, _ labels: [String: String] = [:]) -> Double {
      samples(name, labels).reduce(0) { $0 + $1.value }
    }

    func samples(_ name: String, _ labels: [String: String] = [:]) -> [Sample] {
      families.flatMap(\.samples).filter { sample in
        sample.name == name && labels.allSatisfy { sample.labels[$0.key] == $0.value }
      }
    }
  }

  /// Scrapes GET /metrics on the HTTP port and parses it with prometheus_client.
  static func scrape(_ server: ServerProcess, key: String) throws -> Scrape {
    let script = TestPaths.repositoryRoot.appendingPathComponent("Tests/Clients/parse_metrics.py")
    let folder = try TestPaths.temporaryFolder()
    defer { try? FileManager.default.removeItem(at: folder) }
    let output = folder.appendingPathComponent("metrics.json")
    guard FileManager.default.createFile(atPath: output.path, contents: nil) else {
      throw ServerStartError(description: "cannot create \(output.path)")
    }
    let process = Process()
    process.executableURL = URL(fileURLWithPath: python)
    process.arguments = [script.path, "http://127.0.0.1:\(server.httpPort)/metrics", "--bearer", key]
    process.standardOutput = try FileHandle(forWritingTo: output)
    let errors = Pipe()
    process.standardError = errors
    try process.run()
    let stderr = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
    process.waitUntilExit()
    guard process.terminationStatus == 0 else {
      throw ServerStartError(description: "parse_metrics.py failed (\(process.terminationStatus)): \(stderr)")
    }
    return try JSONDecoder().decode(Scrape.self, from: Data(contentsOf: output))
  }

  static func bearer(_ key: String) -> Metadata { ["authorization": "Bearer \(key)"] }

  static func user(_ text: String) -> Alignd_V1_ChatMessage { .with { $0.role = "user"; $0.content = text } }

  /// Uploads the default model under a new name (a checkpoint of its own to activate).
  static func uploadDefaultModel(
    _ admin: Alignd_V1_Admin.Client<HTTP2ClientTransport.Posix>, name: String, key: String
  ) async throws -> String {
    let data = try Data(contentsOf: defaultModel, options: .alwaysMapped)
    let sha = try CheckpointVariants.sha256(defaultModel)
    let response = try await admin.uploadCheckpoint(metadata: bearer(key)) { writer in
      try await writer.write(.with {
        $0.header = .with {
          $0.role = .policy
          $0.name = name
          $0.format = .gguf
          $0.sizeBytes = UInt64(data.count)
          $0.sha256 = sha
        }
      })
      var offset = 0
      while offset < data.count {
        let next = min(data.count, offset + (1 << 20))
        try await writer.write(.with { $0.chunk = data.subdata(in: offset..<next) })
        offset = next
      }
    }
    return response.checkpoint.version
  }

  @Test(
    "the issue's series are exposed once each and move after generate, score, safety, feedback, a refusal and an activation",
    .enabled(if: defaultPresent, "the default model is not fetched"),
    .enabled(if: pythonPresent, "no test venv: run scripts/test-python-env.sh"),
    .timeLimit(.minutes(15)))
  func seriesMoveAfterTraffic() async throws {
    let folder = try TestPaths.temporaryFolder()
    defer { try? FileManager.default.removeItem(at: folder) }
    let keysFile = folder.appendingPathComponent("keys.txt")
    let key = "metrics-admin-key"
    try APIKeyStore.line(for: key, role: .admin, name: "metrics").write(to: keysFile, atomically: true, encoding: .utf8)
    // No sampled judging of completions (10% by default): the reward batches below are counted exactly.
    let server = try await ServerProcess(arguments: ["--keys-file", keysFile.path, "--reward-sample-rate", "0"])
    try await server.waitUntilServing()

    let before = try Self.scrape(server, key: key)
    let policyVersion = try #require(
      before.samples("alignd_queue_depth").first?.labels["model"], "alignd_queue_depth{model} is exposed before traffic")

    let (scored, rewardVersion, activated) = try await server.withClient { client in
      let inference = Alignd_V1_Inference.Client(wrapping: client)
      let admin = Alignd_V1_Admin.Client(wrapping: client)
      let auth = Self.bearer(key)

      // Generation, unary and streamed.
      let generated = try await inference.generate(
        .with {
          $0.chat = .with { $0.messages = [Self.user("Name three colours.")] }
          $0.sampling = .with { $0.maxTokens = 6; $0.temperature = 0 }
        }, metadata: auth)
      #expect(generated.versions.policy == policyVersion)
      let chunks = try await inference.generateStream(
        .with {
          $0.prompt = "The sky is"
          $0.sampling = .with { $0.maxTokens = 4; $0.temperature = 0 }
        }, metadata: auth
      ) { response in
        var count = 0
        for try await _ in response.messages { count += 1 }
        return count
      }
      #expect(chunks > 0)

      // One Score call of five items.
      let score = try await inference.score(
        .with {
          $0.items = ["Paris.", "Lyon.", "I don't know.", "The capital is Paris.", "France."].map { answer in
            .with { $0.prompt = "What is the capital of France?"; $0.response = answer }
          }
        }, metadata: auth)
      #expect(score.rewards.count == 5)

      // An e-mail address is flagged by the default policy's PII rules.
      let safety = try await inference.checkSafety(
        .with { $0.texts = ["Write to jane.doe@example.com please.", "A calm sentence."] }, metadata: auth)
      #expect(safety.results[0].flaggedCategories.contains("pii/email"))
      // The prompt screen of a generation flags (and blocks) a card number before decoding starts.
      let screened = try await inference.generate(
        .with {
          $0.chat = .with { $0.messages = [Self.user("Charge my card 4111 1111 1111 1111 please")] }
          $0.sampling = .with { $0.maxTokens = 4; $0.temperature = 0 }
          $0.safety = .with { $0.mode = .prompt }
        }, metadata: auth)
      #expect(screened.completions.first?.finishReason == .safety)

      // Refused calls: no key (authentication) and bad input.
      await #expect(throws: RPCError.self) { _ = try await inference.tokenize(.with { $0.text = "hi" }) }
      await #expect(throws: RPCError.self) { _ = try await inference.score(.init(), metadata: auth) }

      // Feedback: two preferences and a comment are committed.
      let records: [Alignd_V1_FeedbackRecord] = [
        .with {
          $0.sequence = 1
          $0.idempotencyKey = "metrics-pref-1"
          $0.preference = .with { $0.prompt = "P"; $0.chosen = "good"; $0.rejected = "bad" }
        },
        .with {
          $0.sequence = 2
          $0.idempotencyKey = "metrics-pref-2"
          $0.preference = .with { $0.prompt = "Q"; $0.chosen = "fine"; $0.rejected = "worse" }
        },
        .with { $0.sequence = 3; $0.idempotencyKey = "metrics-comment"; $0.comment = .with { $0.text = "nice" } },
      ]
      let stored = try await admin.streamFeedback(
        metadata: auth,
        requestProducer: { writer in for record in records { try await writer.write(record) } },
        onResponse: { response in
          var last: UInt64 = 0
          for try await ack in response.messages { last = ack.stored }
          return last
        })
      #expect(stored == 3)

      // A checkpoint activation (a swap of the policy role).
      let version = try await Self.uploadDefaultModel(admin, name: "metrics-policy", key: key)
      let state = try await admin.activateCheckpoint(.with { $0.role = .policy; $0.version = version }, metadata: auth)
      #expect(state.activeVersion == version)
      return (score.rewards, score.versions.reward, version)
    }

    let after = try Self.scrape(server, key: key)
    #expect(after.content_type.hasPrefix("text/plain"), "\(after.content_type)")

    // Every series of the issue and the dashboard, with its type.
    let expected: [(String, String)] = [
      ("alignd_grpc_requests_total", "counter"), ("alignd_grpc_request_duration_seconds", "histogram"),
      ("alignd_http_requests_total", "counter"), ("alignd_queue_depth", "gauge"),
      ("alignd_running_sequences", "gauge"), ("alignd_batch_sequences", "histogram"),
      ("alignd_batch_tokens", "histogram"), ("alignd_time_to_first_token_seconds", "histogram"),
      ("alignd_inter_token_latency_seconds", "histogram"), ("alignd_generated_tokens_total", "counter"),
      ("alignd_prefill_tokens_total", "counter"), ("alignd_decode_tokens_per_second", "gauge"),
      ("alignd_score_batch_size", "histogram"), ("alignd_reward_score", "histogram"),
      ("alignd_safety_flags_total", "counter"), ("alignd_swap_events_total", "counter"),
      ("alignd_swap_duration_seconds", "histogram"), ("alignd_feedback_records_total", "counter"),
    ]
    for (name, type) in expected {
      #expect(after.type(of: name) == type, "\(name): \(after.type(of: name) ?? "absent")")
    }
    // One family per name, and one set of label keys per family.
    let names = after.families.map(\.name)
    #expect(Set(names).count == names.count)
    for family in after.families {
      let keys = Set(family.samples.map { $0.labels.keys.filter { $0 != "le" }.sorted() })
      #expect(keys.count == 1, "\(family.name) has label keys \(keys)")
    }

    func delta(_ name: String, _ labels: [String: String] = [:]) -> Double {
      after.total(name, labels) - before.total(name, labels)
    }
    let inference = "alignd.v1.Inference/"
    // gRPC calls by method and final code, streaming and refused ones included.
    #expect(delta("alignd_grpc_requests_total", ["method": inference + "Generate", "code": "OK"]) == 2)
    #expect(delta("alignd_grpc_requests_total", ["method": inference + "GenerateStream", "code": "OK"]) == 1)
    #expect(delta("alignd_grpc_requests_total", ["method": inference + "Score", "code": "OK"]) == 1)
    #expect(delta("alignd_grpc_requests_total", ["method": inference + "Score", "code": "INVALID_ARGUMENT"]) == 1)
    #expect(delta("alignd_grpc_requests_total", ["method": inference + "Tokenize", "code": "UNAUTHENTICATED"]) == 1)
    #expect(delta("alignd_grpc_requests_total", ["method": inference + "CheckSafety", "code": "OK"]) == 1)
    #expect(delta("alignd_grpc_requests_total", ["method": "alignd.v1.Admin/StreamFeedback", "code": "OK"]) == 1)
    #expect(delta("alignd_grpc_request_duration_seconds_count", ["method": inference + "Generate"]) == 2)

    // Generation on the startup policy (the screened request never reached the decoder).
    let model = ["model": policyVersion]
    #expect(delta("alignd_generated_tokens_total", model) >= 2)
    // Two client generations: the activation's quality gate generated on both policies too
    // (GenerationSpec.isInternal), and that is not serving latency.
    #expect(delta("alignd_time_to_first_token_seconds_count", model) == 2)
    #expect(delta("alignd_inter_token_latency_seconds_count", model) >= 1)
    #expect(delta("alignd_batch_sequences_count", model) >= 1)

    // Score: five items in forward batches of the serving reward model, five rewards returned. The
    // activation's quality gate scores both policies' answers to its prompts through the same
    // batcher (load it carries) but returns no reward to a client.
    let reward = ["reward_version": rewardVersion]
    let gateItems = 2 * Double(ServerConfiguration().policyGatePrompts)
    #expect(delta("alignd_score_batch_size_sum", reward) == 5 + gateItems)
    #expect(delta("alignd_score_batch_size_count", reward) >= 1)
    #expect(delta("alignd_reward_score_count", reward) == 5)
    #expect(abs(delta("alignd_reward_score_sum", reward) - scored.reduce(0, +)) < 1e-6)

    // Safety: one flagged e-mail (CheckSafety) and one card number (prompt screen), under the
    // built-in policy's version.
    #expect(
      delta("alignd_safety_flags_total", ["category": "pii/email", "policy_version": "default@2", "stage": "check"]) == 1)
    #expect(
      delta("alignd_safety_flags_total", ["category": "pii/credit_card", "policy_version": "default@2", "stage": "prompt"])
        == 1)

    // Feedback committed, by kind.
    #expect(delta("alignd_feedback_records_total", ["kind": "preference"]) == 2)
    #expect(delta("alignd_feedback_records_total", ["kind": "comment"]) == 1)

    // The activation: one successful policy swap, timed.
    let swap = ["role": "policy", "kind": "activate", "outcome": "success"]
    #expect(delta("alignd_swap_events_total", swap) == 1)
    #expect(delta("alignd_swap_duration_seconds_count", swap) == 1)
    #expect(delta("alignd_swap_duration_seconds_sum", swap) > 0)
    // The activated policy has generation series of its own, labelled with its version.
    #expect(after.samples("alignd_queue_depth", ["model": activated]).count == 1)

    // The first scrape was an HTTP request too.
    #expect(delta("alignd_http_requests_total") >= 1)

    server.signal(SIGTERM)
    #expect(try await server.waitForExit() == 0)
  }
}
