import AlignAPI
import AlignServer
import AlignTestSupport
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import Testing

#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// The generation log and app feedback against the real alignd binary (SQLite store): HTTP chat
/// completions and gRPC Generate / GenerateStream answers are logged per completion id, the
/// admin RPCs list, fetch and export them, and apps send feedback naming those ids over HTTP and
/// gRPC with the server filling texts and versions from the log.
@Suite("Generation log and app feedback", .serialized)
struct GenerationLogEndToEndTests {
  static let webKey = "web-key-\(UUID().uuidString)"
  static let otherKey = "other-key-\(UUID().uuidString)"
  static let adminKey = "admin-key-\(UUID().uuidString)"

  static func bearer(_ key: String) -> Metadata { ["authorization": "Bearer \(key)"] }

  static func startServer() async throws -> ServerProcess {
    let folder = try TestPaths.temporaryFolder()
    let keysFile = folder.appendingPathComponent("keys.txt")
    try [
      APIKeyStore.line(for: webKey, role: .infer, name: "web"),
      APIKeyStore.line(for: otherKey, role: .infer, name: "other"),
      APIKeyStore.line(for: adminKey, role: .admin, name: "ops"),
    ].joined(separator: "\n").write(to: keysFile, atomically: true, encoding: .utf8)
    let server = try await ServerProcess(arguments: ["--keys-file", keysFile.path, "--feedback-rate-per-minute", "8"])
    try await server.waitUntilServing()
    return server
  }

  static func post(_ server: ServerProcess, _ path: String, _ json: [String: Any], key: String) async throws
    -> HTTPGatewayTests.HTTPResult
  {
    try await HTTPGatewayTests.http(server, "POST", path, json: json, bearer: key)
  }

  @Test func completionsAreLoggedAndAppFeedbackNamesThem() async throws {
    let server = try await Self.startServer()
    // 1. An HTTP chat completion with two choices: each has its own completion id.
    let chat = try await Self.post(
      server, "/v1/chat/completions",
      [
        "messages": [["role": "user", "content": "Name a colour."]], "n": 2, "max_tokens": 8, "seed": 11,
        "temperature": 0.9,
      ], key: Self.webKey)
    #expect(chat.status == 200, "\(chat.text)")
    let choices = try #require(chat.json?["choices"] as? [[String: Any]])
    let chatIDs = choices.compactMap { $0["completion_id"] as? String }
    #expect(chatIDs.count == 2 && Set(chatIDs).count == 2 && chatIDs.allSatisfy { $0.hasPrefix("cmpl-") })
    let chatTexts = choices.map { (($0["message"] as? [String: Any])?["content"] as? String) ?? "" }
    let responseID = try #require(chat.json?["id"] as? String)
    let policy = try #require((chat.json?["versions"] as? [String: Any])?["policy"] as? String)

    // A streamed HTTP chat completion names its completion in the last choice event.
    let streamed = try await Self.post(
      server, "/v1/chat/completions",
      ["messages": [["role": "user", "content": "Say hi."]], "max_tokens": 6, "seed": 2, "stream": true],
      key: Self.webKey)
    #expect(streamed.status == 200, "\(streamed.text)")
    var sseText = ""
    var sseID = ""
    for line in streamed.text.split(separator: "\n") where line.hasPrefix("data: {") {
      let event = try JSONSerialization.jsonObject(with: Data(line.dropFirst(6).utf8)) as? [String: Any]
      for choice in event?["choices"] as? [[String: Any]] ?? [] {
        sseText += ((choice["delta"] as? [String: Any])?["content"] as? String) ?? ""
        if let id = choice["completion_id"] as? String { sseID = id }
      }
    }
    #expect(sseID.hasPrefix("cmpl-"), "\(streamed.text)")

    let unaryID = try await server.withClient { client -> String in
      let inference = Alignd_V1_Inference.Client(wrapping: client)
      let sseLogged = try await Alignd_V1_Admin.Client(wrapping: client).getGeneration(
        .with { $0.completionID = sseID }, metadata: Self.bearer(Self.adminKey))
      #expect(sseLogged.text == sseText && sseLogged.endpoint == "http.chat.completions")
      let admin = Alignd_V1_Admin.Client(wrapping: client)
      // 2. gRPC Generate and GenerateStream name their completions too.
      let unary = try await inference.generate(
        .with {
          $0.prompt = "The sky is"
          $0.sampling = .with { $0.maxTokens = 6; $0.seed = 3; $0.logprobs = 2 }
        }, metadata: Self.bearer(Self.webKey))
      let unaryID = unary.completions[0].completionID
      #expect(unaryID.hasPrefix("cmpl-"))
      #expect(unary.completions[0].tokenIds.isEmpty)  // not asked for; the log keeps them anyway
      let (chunkIDs, endIDs, streamedText) = try await inference.generateStream(
        .with {
          $0.prompt = "Once upon a time"
          $0.sampling = .with { $0.maxTokens = 6; $0.seed = 5 }
        }, metadata: Self.bearer(Self.otherKey)
      ) { response in
        var chunkIDs: Set<String> = []
        var endIDs: [String] = []
        var text = ""
        for try await message in response.messages {
          switch message.event {
          case .chunk(let chunk):
            chunkIDs.insert(chunk.completionID)
            text += chunk.text
          case .end(let end): endIDs = end.completions.map(\.completionID)
          case nil: break
          }
        }
        return (chunkIDs, endIDs, text)
      }
      #expect(endIDs.count == 1 && chunkIDs == Set(endIDs))
      let streamID = endIDs[0]

      // 3. The admin surface reads the log: one entry per completion, exactly as served.
      let logged = try await admin.getGeneration(
        .with { $0.completionID = chatIDs[1] }, metadata: Self.bearer(Self.adminKey))
      #expect(logged.responseID == responseID && logged.index == 1)
      #expect(logged.text == chatTexts[1])
      #expect(logged.messages.map(\.content) == ["Name a colour."])
      #expect(logged.prompt.contains("Name a colour.") && logged.prompt.count > "Name a colour.".count)
      #expect(!logged.tokenIds.isEmpty && logged.completionTokens == UInt32(logged.tokenIds.count))
      #expect(logged.apiKeyID == "web" && logged.endpoint == "http.chat.completions")
      #expect(logged.versions.policy == policy && !logged.versions.reward.isEmpty)
      #expect(["stop", "length"].contains(logged.finishReason))
      #expect(logged.samplingJson.contains(#""seed":"11""#) && logged.samplingJson.contains(#""n":2"#))
      #expect(logged.ttftMs > 0 && logged.durationMs >= logged.ttftMs)
      let unaryLogged = try await admin.getGeneration(
        .with { $0.completionID = unaryID }, metadata: Self.bearer(Self.adminKey))
      #expect(unaryLogged.text == unary.completions[0].text && unaryLogged.endpoint == "grpc.Generate")
      #expect(unaryLogged.tokenLogprobs.count == unaryLogged.tokenIds.count && !unaryLogged.tokenIds.isEmpty)
      let streamLogged = try await admin.getGeneration(
        .with { $0.completionID = streamID }, metadata: Self.bearer(Self.adminKey))
      #expect(streamLogged.text == streamedText && streamLogged.apiKeyID == "other")
      #expect(streamLogged.endpoint == "grpc.GenerateStream")
      let missing = await statusCode {
        _ = try await admin.getGeneration(.with { $0.completionID = "cmpl-nope" }, metadata: Self.bearer(Self.adminKey))
      }
      #expect(missing == .notFound)

      // List: newest first, filtered by key, paged.
      let firstPage = try await admin.listGenerations(
        .with { $0.filter.apiKeyID = "web"; $0.limit = 2 }, metadata: Self.bearer(Self.adminKey))
      #expect(firstPage.completions.map(\.completionID) == [unaryID, sseID])
      let secondPage = try await admin.listGenerations(
        .with { $0.filter.apiKeyID = "web"; $0.limit = 3; $0.pageToken = firstPage.nextPageToken },
        metadata: Self.bearer(Self.adminKey))
      #expect(secondPage.completions.map(\.completionID) == [chatIDs[1], chatIDs[0]])
      #expect(secondPage.nextPageToken.isEmpty)
      let badToken = await statusCode {
        _ = try await admin.listGenerations(.with { $0.pageToken = "x" }, metadata: Self.bearer(Self.adminKey))
      }
      #expect(badToken == .invalidArgument)
      // Export: oldest first, everything.
      let exported = try await admin.exportGenerations(.init(), metadata: Self.bearer(Self.adminKey)) { response in
        var all: [Alignd_V1_LoggedCompletion] = []
        for try await entry in response.messages { all.append(entry) }
        return all
      }
      #expect(exported.map(\.completionID) == chatIDs + [sseID, unaryID, streamID])
      // An infer key cannot read the log.
      let denied = await statusCode {
        _ = try await admin.listGenerations(.init(), metadata: Self.bearer(Self.webKey))
      }
      #expect(denied == .permissionDenied)

      // 4. App feedback over HTTP: thumbs, a retry, a preference between the two choices.
      let thumbs = try await Self.post(
        server, "/v1/feedback", ["thumbs": ["completion_id": chatIDs[0], "up": true] as [String: Any], "idempotency_key": "t-1"],
        key: Self.webKey)
      #expect(thumbs.status == 200, "\(thumbs.text)")
      let thumbsID = try #require(thumbs.json?["id"] as? Int)
      #expect(thumbs.json?["duplicate"] as? Bool == false)
      let retry = try await Self.post(
        server, "/v1/feedback", ["thumbs": ["completion_id": chatIDs[0], "up": true] as [String: Any], "idempotency_key": "t-1"],
        key: Self.webKey)
      #expect(retry.json?["id"] as? Int == thumbsID && retry.json?["duplicate"] as? Bool == true)
      let preference = try await Self.post(
        server, "/v1/feedback",
        [
          "preference": ["chosen_completion_id": chatIDs[1], "rejected_completion_id": chatIDs[0]],
          // The client's word on texts or versions is never taken: these keys are the server's.
          "metadata": ["chosen_policy_version": "forged", "campaign": "spring"],
        ], key: Self.webKey)
      #expect(preference.status == 200, "\(preference.text)")
      let preferenceRetry = try await Self.post(
        server, "/v1/feedback",
        [
          "preference": ["chosen_completion_id": chatIDs[1], "rejected_completion_id": chatIDs[0]],
          "metadata": ["chosen_policy_version": "forged", "campaign": "spring"],
        ], key: Self.webKey)
      #expect(preferenceRetry.json?["duplicate"] as? Bool == true)
      #expect(preferenceRetry.json?["id"] as? Int == preference.json?["id"] as? Int)

      // Errors: unknown id 404, two kinds 400, another key's completion 403.
      let unknown = try await Self.post(
        server, "/v1/feedback", ["thumbs": ["completion_id": "cmpl-0000", "up": false] as [String: Any]], key: Self.webKey)
      #expect(unknown.status == 404 && unknown.error("code") == "not_found", "\(unknown.text)")
      let twoKinds = try await Self.post(
        server, "/v1/feedback",
        ["thumbs": ["completion_id": chatIDs[0], "up": false] as [String: Any], "rating": ["completion_id": chatIDs[0], "value": 3] as [String: Any]],
        key: Self.webKey)
      #expect(twoKinds.status == 400 && twoKinds.error("type") == "invalid_request_error", "\(twoKinds.text)")
      let notYours = try await Self.post(
        server, "/v1/feedback", ["thumbs": ["completion_id": chatIDs[0], "up": false] as [String: Any]], key: Self.otherKey)
      #expect(notYours.status == 403, "\(notYours.text)")

      // 5. gRPC SubmitFeedback: a rating and a correction of the other key's own streamed completion.
      let rating = try await inference.submitFeedback(
        .with { $0.rating = .with { $0.completionID = unaryID; $0.value = 4 } }, metadata: Self.bearer(Self.webKey))
      #expect(rating.feedbackID > 0 && !rating.duplicate && rating.versions.policy == policy)
      let outOfScale = await statusCode {
        _ = try await inference.submitFeedback(
          .with { $0.rating = .with { $0.completionID = unaryID; $0.value = 9 } }, metadata: Self.bearer(Self.webKey))
      }
      #expect(outOfScale == .invalidArgument)
      let correction = try await inference.submitFeedback(
        .with { $0.correction = .with { $0.completionID = streamID; $0.correctedText = "A better story." } },
        metadata: Self.bearer(Self.otherKey))
      #expect(!correction.duplicate)

      // 6. Stored with the admin feedback: texts and versions from the log.
      let stored = try await admin.exportFeedback(.init(), metadata: Self.bearer(Self.adminKey)) { response in
        var all: [Alignd_V1_StoredFeedback] = []
        for try await item in response.messages { all.append(item) }
        return all
      }
      #expect(stored.count == 4)  // thumbs, preference, rating, correction: nothing twice
      let storedThumbs = try #require(stored.first { $0.id == UInt64(thumbsID) })
      #expect(storedThumbs.record.rating.completion == chatTexts[0] && storedThumbs.record.rating.value == 1)
      #expect(storedThumbs.record.rating.prompt == logged.prompt)
      #expect(storedThumbs.record.metadata["feedback_type"] == "thumbs")
      #expect(storedThumbs.record.metadata["completion_id"] == chatIDs[0])
      #expect(storedThumbs.record.versions.policy == policy && storedThumbs.record.responseID == responseID)
      let storedPreference = try #require(stored.first { $0.record.metadata["feedback_type"] == "preference" })
      #expect(storedPreference.record.preference.chosen == chatTexts[1])
      #expect(storedPreference.record.preference.rejected == chatTexts[0])
      #expect(storedPreference.record.metadata["chosen_policy_version"] == policy)
      #expect(storedPreference.record.metadata["rejected_policy_version"] == policy)
      #expect(storedPreference.record.metadata["campaign"] == "spring")
      let storedCorrection = try #require(stored.first { $0.record.metadata["feedback_type"] == "correction" })
      #expect(storedCorrection.record.preference.chosen == "A better story.")
      #expect(storedCorrection.record.preference.rejected == streamedText)
      return unaryID
    }

    // 7. alignctl reads the log and exports the app preference in TRL's conversational form,
    // with the conversation from the log and the versions served.
    let address = "127.0.0.1:\(server.port)"
    let ctl = { (arguments: [String]) throws -> (status: Int32, output: String) in
      try runTool(TestPaths.alignctl, arguments + ["--server", address, "--api-key", Self.adminKey])
    }
    let shown = try ctl(["log", "show", chatIDs[0], "--json"])
    #expect(shown.status == 0, "\(shown.output)")
    #expect(shown.output.contains(#""completion_id":"\#(chatIDs[0])""#), "\(shown.output)")
    let listed = try ctl(["log", "list", "--api-key-id", "other", "--json"])
    #expect(listed.status == 0 && listed.output.contains(#""api_key_id":"other""#), "\(listed.output)")
    #expect(try ctl(["log", "show", "cmpl-none"]).status == 10 + Int32(RPCError.Code.notFound.rawValue))
    let folder = try TestPaths.temporaryFolder()
    let logFile = folder.appendingPathComponent("log.jsonl").path
    #expect(try ctl(["log", "export", "--output", logFile]).status == 0)
    #expect(try String(contentsOfFile: logFile, encoding: .utf8).split(separator: "\n").count == 5)
    let trlFile = folder.appendingPathComponent("prefs.jsonl").path
    let exported = try ctl(["feedback", "export", "--format", "trl-chat", "--output", trlFile])
    #expect(exported.status == 0, "\(exported.output)")
    let rows = try String(contentsOfFile: trlFile, encoding: .utf8).split(separator: "\n").map {
      try JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] ?? [:]
    }
    #expect(rows.count == 2)  // the app preference and the correction
    let pair = try #require(rows.first { $0["feedback_type"] as? String == "preference" })
    #expect(pair["prompt"] as? [[String: String]] == [["role": "user", "content": "Name a colour."]])
    #expect(pair["chosen"] as? [[String: String]] == [["role": "assistant", "content": chatTexts[1]]])
    #expect(pair["rejected"] as? [[String: String]] == [["role": "assistant", "content": chatTexts[0]]])
    #expect(pair["chosen_policy_version"] as? String == policy && pair["policy_version"] as? String == policy)

    // 8. The per-key rate limit (8 per minute): "other" has used 2; its requests soon get 429.
    var statuses: [Int] = []
    for _ in 0..<12 {
      let response = try await Self.post(
        server, "/v1/feedback", ["thumbs": ["completion_id": "cmpl-unknown", "up": true] as [String: Any]], key: Self.otherKey)
      statuses.append(response.status)
      if response.status == 429 {
        #expect(Int(response.headers["retry-after"] ?? "") ?? 0 >= 1)
        break
      }
    }
    #expect(statuses.last == 429 && (6...7).contains(statuses.count - 1), "\(statuses)")
    #expect(statuses.dropLast().allSatisfy { $0 == 404 })
    // 9. The other training formats, built by the server and read back by Hugging Face datasets:
    // KTO from the thumbs up and the rating of 4 (both label true), SFT from the correction, and
    // a rollout per logged completion.
    #expect(try RLHFLoopEndToEndTests.readBack(trlFile, format: "trl-chat").count == 2)
    for (format, count) in [("kto", 2), ("kto-chat", 2), ("sft", 1), ("sft-chat", 1)] {
      let file = folder.appendingPathComponent("\(format).jsonl").path
      let result = try ctl(["feedback", "export", "--format", format, "--source", "app", "--output", file])
      #expect(result.status == 0, "\(result.output)")
      let read = try RLHFLoopEndToEndTests.readBack(file, format: format)
      #expect(read.count == count, "\(format): \(read)")
      if format == "kto" { #expect(read.allSatisfy { $0["label"] as? Bool == true }) }
      if format == "sft-chat" {
        #expect((read.first?["messages"] as? [[String: String]])?.last == ["role": "assistant", "content": "A better story."])
      }
    }
    let rolloutFile = folder.appendingPathComponent("rollouts.jsonl").path
    let rolled = try ctl(["log", "export", "--format", "rollouts", "--output", rolloutFile])
    #expect(rolled.status == 0, "\(rolled.output)")
    let rollouts = try RLHFLoopEndToEndTests.readBack(rolloutFile, format: "rollouts")
    #expect(rollouts.count == 5)
    let unaryRollout = try #require(rollouts.first { $0["completion_id"] as? String == unaryID })
    let ids = unaryRollout["completion_token_ids"] as? [Int] ?? []
    #expect(!ids.isEmpty && (unaryRollout["completion_logprobs"] as? [Double])?.count == ids.count)
    #expect(unaryRollout["policy_version"] as? String == policy && unaryRollout["prompt"] as? String == "The sky is")

    server.signal(SIGTERM)
    _ = try await server.waitForExit()
  }
}
