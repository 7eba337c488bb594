import AlignAPI
import AlignServer
import AlignTestSupport
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import Testing
#if canImport(Glibc)
import Glibc
#endif

#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// The HTTP/JSON gateway of the real alignd binary: the official `openai` Python client
/// (Tests/Clients/openai_check.py in the pinned test venv) gets real completions, chat
/// completions, streams and moderations equal to what gRPC answers for the same request, and its
/// typed exceptions for errors; probes, models, score, 413 and metrics are checked over plain HTTP.
@Suite("HTTP gateway", .serialized)
struct HTTPGatewayTests {
  static var defaultModel: URL { TestPaths.modelsDir.appendingPathComponent("SmolLM2-135M-Instruct.Q4_1.gguf") }
  static let defaultPresent = FileManager.default.fileExists(atPath: defaultModel.path)

  /// The pinned test venv's python (scripts/test-python-env.sh), overridable with ALIGND_TEST_PYTHON.
  static var python: String { TestEnvironment.python }
  static let pythonPresent = FileManager.default.isExecutableFile(atPath: python)
  static var script: String { TestPaths.repositoryRoot.appendingPathComponent("Tests/Clients/openai_check.py").path }

  /// Runs openai_check.py with `scenarios` and returns its JSON (scenario → result).
  static func openAI(_ server: ServerProcess, _ scenarios: [String], apiKey: String = "unused") throws -> [String: Any] {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: python)
    process.arguments =
      [script, "--base-url", "http://127.0.0.1:\(server.httpPort)/v1", "--api-key", apiKey] + scenarios
    let stdout = Pipe()
    let stderr = Pipe()
    process.standardOutput = stdout
    process.standardError = stderr
    try process.run()
    let output = stdout.fileHandleForReading.readDataToEndOfFile()
    let errors = stderr.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    guard process.terminationStatus == 0,
      let json = try JSONSerialization.jsonObject(with: output) as? [String: Any]
    else {
      throw ServerStartError(
        description: "openai_check.py failed (\(process.terminationStatus)):\n\(String(decoding: errors, as: UTF8.self))")
    }
    return json
  }

  struct HTTPResult {
    var status: Int
    var headers: [String: String]
    var body: Data
    var json: [String: Any]? { try? JSONSerialization.jsonObject(with: body) as? [String: Any] }
    var text: String { String(decoding: body, as: UTF8.self) }
    /// `error.<field>` of an OpenAI-shaped error body.
    func error(_ field: String) -> String? { (json?["error"] as? [String: Any])?[field] as? String }
  }

  /// One HTTP request to the gateway.
  static func http(
    _ server: ServerProcess, _ method: String, _ path: String, json: Any? = nil, body: Data? = nil,
    bearer: String? = nil
  ) async throws -> HTTPResult {
    var request = URLRequest(url: URL(string: "http://127.0.0.1:\(server.httpPort)\(path)")!)
    request.httpMethod = method
    request.timeoutInterval = 120
    if let json {
      request.httpBody = try JSONSerialization.data(withJSONObject: json)
      request.setValue("application/json", forHTTPHeaderField: "Content-Type")
    } else if let body {
      request.httpBody = body
      request.setValue("application/json", forHTTPHeaderField: "Content-Type")
    }
    if let bearer { request.setValue("Bearer \(bearer)", forHTTPHeaderField: "Authorization") }
    let (data, response) = try await URLSession.shared.data(for: request)
    let http = try #require(response as? HTTPURLResponse)
    var headers: [String: String] = [:]
    for (key, value) in http.allHeaderFields {
      if let key = key as? String, let value = value as? String { headers[key.lowercased()] = value }
    }
    return HTTPResult(status: http.statusCode, headers: headers, body: data)
  }

  /// One request with curl (for its protocol choice): `--http1.1` or `--http2-prior-knowledge`.
  static func curl(_ server: ServerProcess, _ protocolFlag: String, _ path: String, body: String? = nil) throws -> (
    status: Int, version: String, body: String
  ) {
    var arguments = ["-s", "--max-time", "120", protocolFlag, "-w", "\n%{http_code} %{http_version}"]
    if let body { arguments += ["-H", "Content-Type: application/json", "-d", body] }
    let output = try runTool(
      URL(fileURLWithPath: "/usr/bin/curl"), arguments + ["http://127.0.0.1:\(server.httpPort)\(path)"]
    ).output
    guard let split = output.lastIndex(of: "\n") else { return (0, "", output) }
    let trailer = output[output.index(after: split)...].split(separator: " ")
    return (Int(trailer.first ?? "") ?? 0, trailer.count > 1 ? String(trailer[1]) : "", String(output[..<split]))
  }

  static func greedy(prompt: String? = nil, chat: [(String, String)] = [], maxTokens: UInt32) -> Alignd_V1_GenerateRequest {
    .with {
      if let prompt {
        $0.prompt = prompt
      } else {
        $0.chat = .with { conversation in
          conversation.messages = chat.map { role, content in .with { $0.role = role; $0.content = content } }
        }
      }
      $0.sampling = .with {
        $0.maxTokens = maxTokens
        $0.temperature = 0
        $0.seed = 7
      }
    }
  }

  @Test(
    "openai client: completion, chat, streams and moderation equal gRPC's answers; errors are typed",
    .enabled(if: defaultPresent && pythonPresent))
  func openAIClient() async throws {
    let server = try await ServerProcess()
    try await server.waitUntilServing()
    let results = try Self.openAI(
      server,
      [
        "completion", "completion_stream", "chat", "chat_stream", "chat_logprobs", "completion_n", "moderation",
        "models", "bad_temperature", "unknown_model", "unknown_route", "completion_echo", "completion_echo_stream",
      ])
    // The same greedy requests over gRPC.
    let (completion, chat, safety) = try await server.withClient { client in
      let inference = Alignd_V1_Inference.Client(wrapping: client)
      let completion = try await inference.generate(Self.greedy(prompt: "The capital of France is", maxTokens: 12))
      let chat = try await inference.generate(
        Self.greedy(
          chat: [("system", "You are a concise assistant."), ("user", "Name three primary colors.")], maxTokens: 24))
      let safety = try await inference.checkSafety(
        .with {
          $0.texts = [
            "You are a stupid worthless idiot and I will kill you, you piece of shit.",
            "The weather is lovely today; let's go for a walk in the park.",
          ]
        })
      return (completion, chat, safety)
    }
    let policy = completion.versions.policy

    let text = try #require(results["completion"] as? [String: Any])
    #expect(text["text"] as? String == completion.completions[0].text)
    #expect(!(completion.completions[0].text.isEmpty))
    #expect(text["object"] as? String == "text_completion")
    #expect(text["model"] as? String == policy)
    #expect(["stop", "length"].contains(text["finish_reason"] as? String))
    #expect((text["id"] as? String)?.hasPrefix("gen-") == true)
    #expect((text["system_fingerprint"] as? String)?.hasPrefix("fp_") == true)
    let usage = try #require(text["usage"] as? [String: Any])
    #expect(usage["completion_tokens"] as? Int == Int(completion.usage.completionTokens))
    #expect(usage["prompt_tokens"] as? Int == Int(completion.usage.promptTokens))
    let textStream = try #require(results["completion_stream"] as? [String: Any])
    #expect(textStream["text"] as? String == completion.completions[0].text)
    #expect(textStream["finish_reason"] as? String == text["finish_reason"] as? String)

    let chatResult = try #require(results["chat"] as? [String: Any])
    #expect(chatResult["content"] as? String == chat.completions[0].text)
    #expect(!chat.completions[0].text.isEmpty)
    #expect(chatResult["role"] as? String == "assistant")
    #expect(chatResult["object"] as? String == "chat.completion")
    let chatStream = try #require(results["chat_stream"] as? [String: Any])
    // Greedy with the same seed: the streamed text assembles to the non-streamed one.
    #expect(chatStream["content"] as? String == chatResult["content"] as? String)
    #expect(chatStream["role"] as? String == "assistant")
    #expect(chatStream["finish_reason"] as? String == chatResult["finish_reason"] as? String)
    #expect(chatStream["objects"] as? [String] == ["chat.completion.chunk"])
    let streamUsage = try #require(chatStream["usage"] as? [String: Any])
    #expect(streamUsage["completion_tokens"] as? Int == Int(chat.usage.completionTokens))
    #expect((chatStream["chunks"] as? Int ?? 0) >= 3)

    let logprobs = try #require(results["chat_logprobs"] as? [String: Any])
    let counts = try #require(logprobs["top_counts"] as? [Int])
    #expect(!counts.isEmpty && counts.count <= 6 && counts.allSatisfy { $0 == 2 })
    #expect((logprobs["logprobs"] as? [Double])?.allSatisfy { $0 <= 0 } == true)
    #expect(logprobs["greedy_is_top"] as? Bool == true)
    #expect((logprobs["tokens"] as? [String])?.joined() == logprobs["text"] as? String)

    try await Self.checkEcho(results, server: server)

    let n = try #require(results["completion_n"] as? [String: Any])
    #expect(n["indexes"] as? [Int] == [0, 1], "\(n)")
    #expect((n["texts"] as? [String])?.count == 2)

    let moderation = try #require(results["moderation"] as? [String: Any])
    let verdicts = try #require(moderation["results"] as? [[String: Any]])
    #expect(verdicts.count == 2)
    #expect(verdicts.first?["flagged"] as? Bool == true)
    #expect(verdicts.last?["flagged"] as? Bool == false)
    #expect(moderation["model"] as? String == safety.versions.safety)
    for (verdict, expected) in zip(verdicts, safety.results) {
      #expect(verdict["flagged_categories"] as? [String] == expected.flaggedCategories.sorted())
      let names = try #require(verdict["category_names"] as? [String])
      #expect(names.contains("harassment/threatening") && names.contains("self-harm/intent"))
      let harassment = expected.categories.filter { $0.category == "harassment" }.map(\.score).max() ?? 0
      #expect(abs((verdict["harassment"] as? Double ?? -1) - harassment) < 1e-9)
    }

    let models = try #require(results["models"] as? [String: Any])
    #expect((models["ids"] as? [String])?.contains(policy) == true)
    #expect(models["owned_by"] as? [String] == ["alignd"])

    for (scenario, exception, status) in [
      ("bad_temperature", "BadRequestError", 400), ("unknown_model", "NotFoundError", 404),
      ("unknown_route", "NotFoundError", 404),
    ] {
      let result = try #require(results[scenario] as? [String: Any], "\(scenario)")
      #expect(result["exception"] as? String == exception, "\(scenario): \(result)")
      #expect(result["status"] as? Int == status, "\(scenario)")
      let body = result["body"] as? [String: Any]
      #expect(body?["message"] is String, "\(scenario): \(result)")
    }
    #expect(((results["unknown_model"] as? [String: Any])?["body"] as? [String: Any])?["code"] as? String == "model_not_found")

    server.signal(SIGTERM)
    #expect(try await server.waitForExit() == 0)
  }

  /// `echo` on completions (openai_check.py's echo scenarios) against the policy's teacher-forced
  /// log-probabilities from gRPC Logprobs, and gRPC Generate's `prompt_logprobs`.
  static func checkEcho(_ results: [String: Any], server: ServerProcess) async throws {
    let echo = try #require(results["completion_echo"] as? [String: Any], "\(results["completion_echo"] ?? "none")")
    let prompt = try #require(echo["prompt"] as? String)
    let (reference, generated) = try await server.withClient { client in
      let inference = Alignd_V1_Inference.Client(wrapping: client)
      let reference = try await inference.logprobs(
        .with {
          $0.items = [.with { $0.continuation = prompt }]
          $0.topLogprobs = 2
        })
      var request = Self.greedy(prompt: prompt, maxTokens: 0)
      request.promptLogprobs = 2
      let generated = try await inference.generate(request)
      for (field, change) in [
        ("max_tokens 0 without prompt_logprobs", { (r: inout Alignd_V1_GenerateRequest) in r.clearPromptLogprobs() }),
        ("prompt_logprobs 21", { (r: inout Alignd_V1_GenerateRequest) in r.promptLogprobs = 21 }),
      ] {
        var bad = request
        change(&bad)
        do {
          _ = try await inference.generate(bad)
          Issue.record("\(field) was accepted")
        } catch let error as RPCError {
          #expect(error.code == .invalidArgument, "\(field): \(error)")
        }
      }
      return (reference.items[0], generated)
    }
    let expected = reference.tokens.map { Double($0.logprob) }
    #expect(expected.count >= 8)
    func close(_ a: [Double?], _ b: [Double]) -> Bool {
      a.count == b.count && zip(a, b).allSatisfy { x, y in x.map { abs($0 - y) < 1e-3 } ?? false }
    }

    // gRPC: the prompt alone, scored; the completion is empty.
    let scoredPrompt = generated.promptLogprobs
    #expect(generated.hasPromptLogprobs)
    #expect(close(scoredPrompt.tokens.map { Double($0.logprob) }, expected))
    #expect(scoredPrompt.tokens.map(\.tokenID) == reference.tokens.map(\.tokenID))
    #expect(scoredPrompt.tokens.allSatisfy { $0.top.count == 2 })
    #expect(scoredPrompt.firstToken + scoredPrompt.tokens.map(\.token).joined() == prompt)
    #expect(abs(scoredPrompt.totalLogprob - reference.totalLogprob) < 1e-2)
    #expect(generated.completions.map(\.text) == [""])
    #expect(generated.completions[0].finishReason == .length)
    #expect(generated.usage.completionTokens == 0)

    // HTTP echo with max_tokens 0: the prompt, its tokens, null first.
    let scored = try #require(echo["scored"] as? [String: Any])
    #expect(echo["scored_text"] as? String == prompt)
    #expect(echo["scored_finish"] as? String == "length")
    #expect((echo["scored_usage"] as? [String: Any])?["completion_tokens"] as? Int == 0)
    let tokens = try #require(scored["tokens"] as? [String])
    #expect(tokens.joined() == prompt)
    #expect(tokens.count == expected.count + 1)
    let logprobs = try #require(scored["token_logprobs"] as? [Any])
    #expect(logprobs.first is NSNull)
    #expect(close(logprobs.dropFirst().map { $0 as? Double }, expected), "\(logprobs) vs \(expected)")
    let tops = try #require(scored["top_counts"] as? [Any])
    #expect(tops.first is NSNull && tops.dropFirst().allSatisfy { $0 as? Int == 2 })
    let offsets = try #require(scored["text_offset"] as? [Int])
    var position = 0
    #expect(offsets == tokens.map { token in defer { position += token.count }; return position })

    // With a continuation: the prompt's part, then exactly the non-echo answer.
    let continued = try #require(echo["continued"] as? [String: Any])
    let plain = try #require(echo["plain"] as? [String: Any])
    let plainText = try #require(echo["plain_text"] as? String)
    #expect(!plainText.isEmpty)
    #expect(echo["continued_text"] as? String == prompt + plainText)
    #expect(continued["tokens"] as? [String] == tokens + (plain["tokens"] as? [String] ?? []))
    let continuedLogprobs = try #require(continued["token_logprobs"] as? [Any])
    let plainLogprobs = try #require(plain["token_logprobs"] as? [Double])
    #expect(close(continuedLogprobs.dropFirst().prefix(expected.count).map { $0 as? Double }, expected))
    #expect(close(continuedLogprobs.suffix(plainLogprobs.count).map { $0 as? Double }, plainLogprobs))
    #expect((continued["text_offset"] as? [Int])?.last == prompt.count + plainText.count - tokensLast(plain))
    #expect(echo["text_only"] as? String == prompt + plainText)
    #expect(echo["text_only_logprobs"] as? Bool == true)

    // Streamed: the prompt opens the stream, then the same tokens and text.
    let stream = try #require(results["completion_echo_stream"] as? [String: Any])
    #expect(stream["first_text"] as? String == prompt)
    #expect(stream["text"] as? String == prompt + plainText)
    #expect(stream["tokens"] as? [String] == continued["tokens"] as? [String])
    #expect(stream["text_offset"] as? [Int] == continued["text_offset"] as? [Int])
    #expect(((stream["token_logprobs"] as? [Any])?.first) is NSNull)
  }

  /// The length of the last token of a choice's logprobs (its offset is the text's length less it).
  static func tokensLast(_ logprobs: [String: Any]) -> Int {
    (logprobs["tokens"] as? [String])?.last?.count ?? 0
  }

  @Test(
    "probes, /v1/models, /v1/score equal to gRPC Score, 413 above max_request_bytes, 404 shape, h2c, /metrics",
    .enabled(if: defaultPresent))
  func probesScoreAndLimits() async throws {
    let server = try await ServerProcess(arguments: ["--max-request-bytes", "4096"])
    // Ready only once the models are loaded; alive from the start.
    let early = try await Self.http(server, "GET", "/readyz")
    #expect(early.status == 200 || (early.status == 503 && early.text.contains("loading")), "\(early.text)")
    #expect(try await Self.http(server, "GET", "/healthz").status == 200)
    try await server.waitUntilServing()
    let ready = try await Self.http(server, "GET", "/readyz")
    #expect(ready.status == 200)
    #expect(ready.json?["status"] as? String == "serving")

    let models = try await Self.http(server, "GET", "/v1/models")
    #expect(models.status == 200)
    #expect(models.json?["object"] as? String == "list")
    let entries = try #require(models.json?["data"] as? [[String: Any]])
    #expect(Set(entries.compactMap { $0["role"] as? String }) == ["policy", "reward", "safety"])

    // Score: responses to one prompt, and a preference pair.
    let score = try await Self.http(
      server, "POST", "/v1/score",
      json: [
        "prompt": "What is 2 + 2?", "responses": ["2 + 2 = 4.", "It is 5."],
        "chosen": "2 + 2 = 4.", "rejected": "It is 5.",
      ])
    #expect(score.status == 200, "\(score.text)")
    let rewards = try #require(score.json?["rewards"] as? [Double])
    let pairs = try #require(score.json?["pairs"] as? [[String: Any]])
    let expected = try await server.withClient { client in
      try await Alignd_V1_Inference.Client(wrapping: client).score(
        .with {
          $0.items = ["2 + 2 = 4.", "It is 5."].map { response in .with { $0.prompt = "What is 2 + 2?"; $0.response = response } }
          $0.pairs = [.with { $0.prompt = "What is 2 + 2?"; $0.chosen = "2 + 2 = 4."; $0.rejected = "It is 5." }]
        })
    }
    #expect(rewards.count == 2)
    for (got, want) in zip(rewards, expected.rewards) { #expect(abs(got - want) < 1e-9) }
    let pair = try #require(pairs.first)
    #expect(abs((pair["p_chosen_preferred"] as? Double ?? -1) - expected.pairScores[0].pChosenPreferred) < 1e-9)
    #expect(abs((pair["chosen_reward"] as? Double ?? .nan) - rewards[0]) < 1e-9)
    #expect(score.json?["model"] as? String == expected.versions.reward)

    // Errors in OpenAI's shape.
    let tooLarge = try await Self.http(
      server, "POST", "/v1/completions", json: ["prompt": String(repeating: "a", count: 5000), "max_tokens": 1])
    #expect(tooLarge.status == 413)
    #expect(tooLarge.error("code") == "request_too_large")
    let missing = try await Self.http(server, "GET", "/v1/nothing-here")
    #expect(missing.status == 404)
    #expect(missing.error("type") == "invalid_request_error")
    let notJSON = try await Self.http(server, "POST", "/v1/chat/completions", body: Data("{not json".utf8))
    #expect(notJSON.status == 400)
    let noMessages = try await Self.http(server, "POST", "/v1/chat/completions", json: ["messages": []])
    #expect(noMessages.status == 400)
    #expect(noMessages.error("param") == "messages")
    let blocked = try await Self.http(
      server, "POST", "/v1/chat/completions",
      json: [
        "messages": [["role": "user", "content": "My card is 4111 1111 1111 1111, remember it."]],
        "safety": "prompt", "max_tokens": 8,
      ])
    #expect(blocked.status == 200, "\(blocked.text)")
    let blockedChoice = (blocked.json?["choices"] as? [[String: Any]])?.first
    #expect(blockedChoice?["finish_reason"] as? String == "content_filter", "\(blocked.text)")

    // The plaintext port speaks HTTP/2 with prior knowledge (h2c) too: the same greedy chat
    // completion, and a stream that ends with [DONE], over HTTP/2.
    let chatBody = #"{"messages": [{"role": "user", "content": "Name a color."}], "max_tokens": 6, "temperature": 0}"#
    let overHTTP1 = try Self.curl(server, "--http1.1", "/v1/chat/completions", body: chatBody)
    let overHTTP2 = try Self.curl(server, "--http2-prior-knowledge", "/v1/chat/completions", body: chatBody)
    #expect(overHTTP1.version == "1.1" && overHTTP2.version == "2", "\(overHTTP1) \(overHTTP2)")
    #expect(overHTTP1.status == 200 && overHTTP2.status == 200, "\(overHTTP2.body)")
    func content(_ body: String) -> String? {
      let json = try? JSONSerialization.jsonObject(with: Data(body.utf8)) as? [String: Any]
      let choice = (json?["choices"] as? [[String: Any]])?.first
      return (choice?["message"] as? [String: Any])?["content"] as? String
    }
    #expect(content(overHTTP2.body) != nil && content(overHTTP2.body) == content(overHTTP1.body), "\(overHTTP2.body)")
    let streamedHTTP2 = try Self.curl(
      server, "--http2-prior-knowledge", "/v1/chat/completions",
      body: #"{"messages": [{"role": "user", "content": "Name a color."}], "max_tokens": 6, "stream": true}"#)
    #expect(streamedHTTP2.version == "2" && streamedHTTP2.body.hasSuffix("data: [DONE]\n\n"), "\(streamedHTTP2)")
    #expect(try Self.curl(server, "--http2-prior-knowledge", "/healthz").status == 200)

    // A client that disconnects cancels its generation (curl gives up after a second of 400
    // tokens): the engine counts it as ended early, the gateway as 499.
    let impatient = Process()
    impatient.executableURL = URL(fileURLWithPath: "/usr/bin/curl")
    impatient.arguments = [
      "-s", "--max-time", "1", "-H", "Content-Type: application/json", "-d",
      #"{"prompt": "Tell me a story.", "max_tokens": 400, "ignore_eos": true, "temperature": 0}"#,
      "http://127.0.0.1:\(server.httpPort)/v1/completions",
    ]
    impatient.standardOutput = FileHandle.nullDevice
    try impatient.run()
    impatient.waitUntilExit()
    #expect(impatient.terminationStatus == 28)  // curl: operation timed out

    // The request counter, by route pattern and status (the cancellation lands within a step).
    var metrics = try await Self.http(server, "GET", "/metrics")
    let settled = ContinuousClock.now + .seconds(15)
    while !metrics.text.contains(#"reason="cancelled"} 1"#) && ContinuousClock.now < settled {
      try await Task.sleep(for: .milliseconds(200))
      metrics = try await Self.http(server, "GET", "/metrics")
    }
    #expect(metrics.status == 200)
    #expect(metrics.headers["content-type"]?.hasPrefix("text/plain") == true)
    #expect(metrics.text.contains(#"alignd_http_requests_total{route="/v1/score",status="200"} 1"#), "\(metrics.text)")
    #expect(metrics.text.contains(#"route="/v1/completions",status="413""#))
    #expect(metrics.text.contains(#"route="unmatched",status="404""#))
    #expect(metrics.text.contains(#"route="/v1/completions",status="499"} 1"#))
    #expect(metrics.text.contains(#"reason="cancelled"} 1"#), "\(metrics.text)")

    server.signal(SIGTERM)
    #expect(try await server.waitForExit() == 0)
  }

  @Test(
    """
    keys: 401 for a wrong key as AuthenticationError, 403 for an infer key on an admin route as \
    PermissionDeniedError, probes stay open; a deadline header gives 504; a full queue is a RateLimitError \
    with Retry-After
    """,
    .enabled(if: defaultPresent && pythonPresent))
  func authAndRateLimit() async throws {
    let folder = try TestPaths.temporaryFolder()
    let key = "test-infer-key-\(UUID().uuidString)"
    let adminKey = "test-admin-key-\(UUID().uuidString)"
    let keysFile = folder.appendingPathComponent("keys.txt")
    try (APIKeyStore.line(for: key, role: .infer, name: "web") + "\n" + APIKeyStore.line(for: adminKey, role: .admin, name: "ops")
      + "\n").write(to: keysFile, atomically: true, encoding: .utf8)
    let server = try await ServerProcess(arguments: [
      "--keys-file", keysFile.path, "--max-running-sequences", "1", "--queue-capacity", "1",
    ])
    try await server.waitUntilServing()
    #expect(try await Self.http(server, "GET", "/healthz").status == 200)
    #expect(try await Self.http(server, "GET", "/readyz").status == 200)
    let anonymous = try await Self.http(server, "GET", "/v1/models")
    #expect(anonymous.status == 401)
    #expect(anonymous.error("code") == "invalid_api_key")
    #expect(try await Self.http(server, "GET", "/v1/models", bearer: key).status == 200)

    let wrong = try Self.openAI(server, ["auth"], apiKey: "not-a-key")
    let denied = try #require(wrong["auth"] as? [String: Any])
    #expect(denied["exception"] as? String == "AuthenticationError", "\(denied)")
    #expect(denied["status"] as? Int == 401)

    // /v1/admin/status is Admin.GetStatus: the admin key reads it, the infer key is forbidden.
    let forbidden = try #require(try Self.openAI(server, ["admin_status"], apiKey: key)["admin_status"] as? [String: Any])
    #expect(forbidden["exception"] as? String == "PermissionDeniedError", "\(forbidden)")
    #expect(forbidden["status"] as? Int == 403)
    #expect(((forbidden["body"] as? [String: Any])?["type"] as? String) == "permission_error", "\(forbidden)")
    let status = try #require(try Self.openAI(server, ["admin_status"], apiKey: adminKey)["admin_status"] as? [String: Any])
    #expect(status["state"] as? String == "SERVING_STATE_SERVING", "\(status)")
    #expect(status["roles"] as? Int == 3, "\(status)")

    // X-Request-Timeout becomes the request's deadline: 504 in OpenAI's shape, well before the
    // 400 tokens could be decoded; a malformed value is a 400.
    let started = ContinuousClock.now
    let late = try #require(try Self.openAI(server, ["deadline"], apiKey: key)["deadline"] as? [String: Any])
    #expect(late["exception"] as? String == "InternalServerError", "\(late)")
    #expect(late["status"] as? Int == 504, "\(late)")
    #expect(((late["body"] as? [String: Any])?["code"] as? String) == "timeout", "\(late)")
    #expect(ContinuousClock.now - started < .seconds(30))
    var malformed = URLRequest(url: URL(string: "http://127.0.0.1:\(server.httpPort)/v1/completions")!)
    malformed.httpMethod = "POST"
    malformed.httpBody = Data(#"{"prompt": "Hi", "max_tokens": 2}"#.utf8)
    malformed.setValue("Bearer \(key)", forHTTPHeaderField: "Authorization")
    malformed.setValue("soon", forHTTPHeaderField: "X-Request-Timeout")
    let (_, malformedResponse) = try await URLSession.shared.data(for: malformed)
    #expect((malformedResponse as? HTTPURLResponse)?.statusCode == 400)

    let right = try Self.openAI(server, ["auth", "rate_limit"], apiKey: key)
    #expect((right["auth"] as? [String: Any])?["exception"] is NSNull, "\(right)")
    let limited = try #require(right["rate_limit"] as? [String: Any])
    #expect(limited["exception"] as? String == "RateLimitError", "\(limited)")
    #expect(limited["status"] as? Int == 429)
    #expect(Int(limited["retry_after"] as? String ?? "") ?? 0 >= 1)
    #expect(Int(limited["retry_after_ms"] as? String ?? "") ?? 0 >= 1)
    #expect(limited["first_chunk_object"] as? String == "text_completion")
    // The queued request still completes once the first one's client disconnects.
    #expect((limited["queued"] as? [String: Any])?["text"] is String, "\(limited)")

    server.signal(SIGTERM)
    #expect(try await server.waitForExit() == 0)
  }

  @Test("SIGTERM: an in-flight stream finishes with [DONE] and the process exits 0", .enabled(if: defaultPresent))
  func drainFinishesStreams() async throws {
    let server = try await ServerProcess()
    try await server.waitUntilServing()
    let curl = Process()
    curl.executableURL = URL(fileURLWithPath: "/usr/bin/curl")
    let body = #"{"prompt": "Write a story about a lighthouse.", "max_tokens": 48, "temperature": 0, "stream": true, "ignore_eos": true}"#
    curl.arguments = [
      "-sS", "-N", "-H", "Content-Type: application/json", "-d", body,
      "http://127.0.0.1:\(server.httpPort)/v1/completions",
    ]
    let output = LockedText()
    let pipe = Pipe()
    curl.standardOutput = pipe
    try curl.run()
    PipeReader.readToEnd(pipe.fileHandleForReading, name: "curl-reader") { data in
      output.append(String(decoding: data, as: UTF8.self))
    }
    // Wait for the first token event, then ask the server to stop.
    let deadline = ContinuousClock.now + .seconds(60)
    while !output.text.contains("\"text\"") && ContinuousClock.now < deadline {
      try await Task.sleep(for: .milliseconds(20))
    }
    server.signal(SIGTERM)
    #expect(try await server.waitForExit() == 0)
    curl.waitUntilExit()
    try await Task.sleep(for: .milliseconds(100))
    let events = output.text.components(separatedBy: "\n\n").filter { !$0.isEmpty }
    #expect(events.last == "data: [DONE]", "\(output.text)")
    #expect(output.text.contains(#""finish_reason":"length""#), "\(output.text)")
    #expect(server.log.contains("draining"))
  }

  @Test(
    "SIGTERM with a silent TCP connection open on the HTTP port: the process still exits 0 within the drain timeout",
    .enabled(if: defaultPresent))
  func silentConnectionDoesNotHoldShutdown() async throws {
    let server = try await ServerProcess(arguments: ["--drain-timeout-seconds", "2"])
    try await server.waitUntilServing()
    // A client (a TCP health probe, a stalled peer) that connects and sends nothing: before the
    // fix it held the HTTP listener's shutdown past the drain timeout and the process died with
    // ServiceLifecycle's "Cancellation took longer than allowed" fatal error.
    let socket = Glibc.socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    try #require(socket >= 0)
    defer { close(socket) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_port = in_port_t(UInt16(server.httpPort).bigEndian)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    let connected = withUnsafePointer(to: &address) {
      $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(socket, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    }
    try #require(connected == 0)
    try await Task.sleep(for: .milliseconds(300))
    server.signal(SIGTERM)
    #expect(try await server.waitForExit(timeout: .seconds(20)) == 0)
    #expect(!server.log.contains("Fatal error"), "\(server.log.suffix(600))")
  }
}
