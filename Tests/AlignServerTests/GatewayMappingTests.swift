import AlignServer
import AlignServing
import AlignShared
import AlignStore
import Foundation
import GRPCCore
import Testing

/// The HTTP gateway's mapping, without a server: JSON bodies onto pipeline requests, pipeline
/// results onto OpenAI's shapes, and every domain error onto one status (through its gRPC code).
@Suite("HTTP gateway mapping")
struct GatewayMappingTests {
  static func body(_ json: String) throws -> JSONObject { try JSONObject(body: Array(json.utf8)) }

  static func text(_ value: JSONValue) -> String { value.text }

  /// The status grpc-swift sends for a thrown domain error.
  static func status(_ error: any Error) throws -> RPCError {
    func convert(_ convertible: some RPCErrorConvertible) -> RPCError { RPCError(convertible) }
    let convertible: any RPCErrorConvertible = try #require(error as? any RPCErrorConvertible)
    return convert(convertible)
  }

  @Test("an OpenAI completions body becomes a generation request with every extension")
  func completionsRequest() throws {
    let body = try Self.body(
      #"{"model": "alignd", "prompt": "hi", "max_tokens": 8, "temperature": 0.5, "top_k": 4, "n": 2, "best_of": 3, "logprobs": 2, "stop": "x", "seed": 9, "user": "u1", "priority": "high", "safety": {"mode": "prompt_and_output", "profile": "strict"}}"#
    )
    let parameters = try GenerationParameters(body, endpoint: .completions)
    let deadline = ContinuousClock.now + .seconds(3)
    let request = parameters.request(.prompt("hi"), deadline: deadline)
    #expect(request.input == .prompt("hi"))
    #expect(request.maxTokens == 8 && request.temperature == 0.5 && request.topK == 4)
    #expect(request.n == 2 && request.bestOf == 3 && request.logprobs == 2 && request.stop == ["x"] && request.seed == 9)
    #expect(request.clientRequestID == "u1" && request.priority == .high)
    #expect(request.safetyMode == .promptAndOutput && request.safetyProfile == "strict")
    #expect(request.deadline == deadline)
    #expect(parameters.logprobs == 2 && !parameters.stream)
  }

  @Test("echo scores the prompt when its log-probabilities are asked for, or when max_tokens is 0")
  func echoAsksForPromptLogprobs() throws {
    for (json, echo, promptLogprobs) in [
      (#"{"prompt": "hi", "echo": true, "logprobs": 3}"#, true, 3),
      (#"{"prompt": "hi", "echo": true, "logprobs": 0, "max_tokens": 0}"#, true, 0),
      (#"{"prompt": "hi", "echo": true, "max_tokens": 0}"#, true, 0),
      (#"{"prompt": "hi", "echo": true}"#, true, nil),
      (#"{"prompt": "hi", "echo": false, "logprobs": 3}"#, false, nil),
      (#"{"prompt": "hi", "logprobs": 3}"#, false, nil),
    ] as [(String, Bool, Int?)] {
      let parameters = try GenerationParameters(try Self.body(json), endpoint: .completions)
      #expect(parameters.echo == echo, "\(json)")
      #expect(parameters.template.promptLogprobs == promptLogprobs, "\(json)")
    }
    // Chat has no echo: the field is not read there.
    let chat = try GenerationParameters(try Self.body(#"{"messages": [], "echo": true}"#), endpoint: .chat)
    #expect(!chat.echo && chat.template.promptLogprobs == nil)
  }

  @Test(
    "bodies the gateway refuses are 400s naming the parameter",
    arguments: [
      (#"{"prompt": "hi", "suffix": "x"}"#, "suffix"),
      (#"{"prompt": "hi", "echo": "yes"}"#, "echo"),
      (#"{"prompt": "hi", "stream": true, "best_of": 3}"#, "best_of"),
      (#"{"prompt": "hi", "priority": "urgent"}"#, "priority"),
      (#"{"prompt": "hi", "safety": "loud"}"#, "safety"),
      (#"{"prompt": "hi", "stream_options": {"include_usage": true}}"#, "stream_options"),
      (#"{"prompt": "hi", "response_format": {"type": "xml"}}"#, "response_format"),
      (#"{"prompt": "hi", "response_format": {"type": "json_schema"}}"#, "response_format"),
      (#"{"prompt": "hi", "response_format": {"type": "json_schema", "json_schema": {"name": "x"}}}"#, "response_format"),
      (#"{"prompt": "hi", "logit_bias": [1, 2]}"#, "logit_bias"),
      (#"{"prompt": "hi", "logit_bias": {"x": 1}}"#, "logit_bias"),
      (#"{"prompt": "hi", "logit_bias": {"-3": 1}}"#, "logit_bias"),
      (#"{"prompt": "hi", "logit_bias": {"3": 100.5}}"#, "logit_bias"),
      (#"{"prompt": "hi", "logit_bias": {"3": "up"}}"#, "logit_bias"),
    ])
  func refusedBodies(json: String, param: String) throws {
    let error = #expect(throws: GatewayError.self) {
      try GenerationParameters(try Self.body(json), endpoint: .completions)
    }
    #expect(error?.status == .badRequest)
    #expect(error?.param == param)
  }

  @Test("response_format and logit_bias map onto the request (chat and completions)")
  func responseFormatAndLogitBias() throws {
    let schema = #"{"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}"#
    let chat = try GenerationParameters(
      try Self.body(
        #"{"messages": [], "logit_bias": {"17": -100, "42": 3.5}, "response_format": {"type": "json_schema", "json_schema": {"name": "n", "strict": true, "schema": "# + schema + "}}}"),
      endpoint: .chat)
    #expect(chat.template.logitBias == [17: -100, 42: 3.5])
    guard case .jsonSchema(let value) = chat.template.responseFormat else {
      Issue.record("not a json_schema: \(chat.template.responseFormat)")
      return
    }
    #expect(value.objectFields?["required"].map(Self.text) == #"["a"]"#)
    let completions = try GenerationParameters(
      try Self.body(#"{"prompt": "hi", "response_format": {"type": "json_object"}}"#), endpoint: .completions)
    guard case .jsonObject = completions.template.responseFormat else {
      Issue.record("not json_object: \(completions.template.responseFormat)")
      return
    }
    let text = try GenerationParameters(
      try Self.body(#"{"prompt": "hi", "response_format": {"type": "text"}}"#), endpoint: .completions)
    guard case .text = text.template.responseFormat else {
      Issue.record("not text: \(text.template.responseFormat)")
      return
    }
  }

  @Test("a generation result becomes OpenAI's completion: choices across prompts, content_filter, versions, rewards")
  func completionBody() throws {
    var first = GeneratedCompletion(index: 0)
    first.text = "four"
    first.finishReason = .stop
    first.reward = 0.5
    var second = first
    second.index = 1
    var blocked = GeneratedCompletion(index: 1)
    blocked.finishReason = .safety
    blocked.flaggedCategories = [.hate]
    let versions = ModelVersions(policy: "p@1", reward: "r@2", safety: "s@3")
    var one = GenerationResult(responseID: "gen-1", versions: versions)
    (one.completions, one.usage, one.candidateRewards) = ([first, blocked], TokenUsage(promptTokens: 3, completionTokens: 1), [0.5, 0.1])
    var two = GenerationResult(responseID: "gen-2", versions: versions)
    (two.completions, two.usage) = ([first, second], TokenUsage(promptTokens: 2, completionTokens: 2))
    let results = [one, two]
    let parameters = try GenerationParameters(try Self.body(#"{"prompt": ["a", "b"], "n": 2}"#), endpoint: .completions)
    let json = Self.text(HTTPGateway.completionBody(results, endpoint: .completions, parameters: parameters))
    let object = try #require(try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any])
    #expect(object["id"] as? String == "gen-1")
    #expect(object["model"] as? String == "p@1")
    #expect((object["response_ids"] as? [String]) == ["gen-1", "gen-2"])
    #expect((object["candidate_rewards"] as? [Double]) == [0.5, 0.1])
    let choices = try #require(object["choices"] as? [[String: Any]])
    #expect(choices.map { $0["index"] as? Int } == [0, 1, 2, 3])
    #expect(choices[1]["finish_reason"] as? String == "content_filter")
    #expect(choices[1]["flagged_categories"] as? [String] == ["hate"])
    #expect(choices[0]["reward"] as? Double == 0.5)
    let usage = try #require(object["usage"] as? [String: Any])
    #expect(usage["prompt_tokens"] as? Int == 5 && usage["completion_tokens"] as? Int == 3 && usage["total_tokens"] as? Int == 8)
    #expect(usage["prompt_tokens_details"] as? [String: Int] == ["cached_tokens": 0])
    #expect((object["versions"] as? [String: String]) == ["policy": "p@1", "reward": "r@2", "safety": "s@3"])
  }

  @Test("a /v1/score body becomes items and pairs; the answer carries rewards and P(chosen ≻ rejected)")
  func score() throws {
    let request = try HTTPGateway.scoreRequest(
      try Self.body(#"{"prompt": "q", "responses": ["a", "b"], "chosen": "c", "rejected": "d", "priority": "low"}"#))
    #expect(request.items.map(\.text) == ["a", "b"])
    #expect(request.pairs.first?.chosen == "c" && request.pairs.first?.context.prompt == "q")
    #expect(request.priority == .low)
    var result = ScoreResult(responseID: "score-1", versions: ModelVersions(policy: "p", reward: "r"))
    (result.rewards, result.pairs) = ([1, 2], [PairwiseScore(chosen: 1, rejected: 0)])
    let body = Self.text(HTTPGateway.scoreBody(result))
    #expect(body.contains(#""model":"r""#))
    #expect(body.contains(#""p_chosen_preferred":0.7310585786300049"#))
  }

  @Test(
    "every domain error has one status, on gRPC and HTTP alike",
    arguments: [
      (InvalidRequest("bad") as any Error, RPCError.Code.invalidArgument, 400),
      (ServingError.unavailable("loading"), .unavailable, 503),
      (ServingError.deadlineExceeded("late"), .deadlineExceeded, 504),
      (ServingError.failedPrecondition("no judge"), .failedPrecondition, 400),
      (DynamicBatcherError.deadlineExceeded(queue: "reward"), .deadlineExceeded, 504),
      (GenerationScheduler.AdmissionError.tooLarge(needed: 9, capacity: 4), .invalidArgument, 400),
      (CheckpointRegistryError.notFound(role: .policy, version: "x@1"), .notFound, 404),
      (FeedbackStoreError.unavailable(path: "db", detail: "down"), .unavailable, 503),
    ] as [(any Error, RPCError.Code, Int)])
  func errorMapping(error: any Error, code: RPCError.Code, http: Int) throws {
    #expect(try Self.status(error).code == code)
    #expect(GatewayError.from(error).status.code == http)
  }

  @Test("a full queue is RESOURCE_EXHAUSTED with its retry hint, and 429 with Retry-After over HTTP")
  func queueFull() throws {
    for error in [
      DynamicBatcherError.queueFull(queue: "reward", capacity: 256, retryAfter: .milliseconds(1500)) as any Error,
      GenerationScheduler.AdmissionError.queueFull(retryAfter: 1.5),
    ] {
      let rpc = try Self.status(error)
      #expect(rpc.code == .resourceExhausted)
      #expect(rpc.metadata[stringValues: "retry-after-ms"].first(where: { _ in true }) == "1500")
      let http = GatewayError.from(error)
      #expect(http.status == .tooManyRequests)
      #expect(http.retryAfterMilliseconds == 1500)
      #expect(http.response.headers[.retryAfter] == "2")
    }
  }
}
