import AlignAPI
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import Synchronization
import Testing

/// Generation over gRPC against the real alignd binary serving the default SmolLM2 policy.
@Suite("Generation over gRPC", .serialized)
struct GenerationEndToEndTests {
  static func chatRequest(_ text: String, maxTokens: UInt32, seed: UInt64 = 7, temperature: Float = 0.8)
    -> Alignd_V1_GenerateRequest
  {
    .with {
      $0.chat = .with { $0.messages = [.with { $0.role = "user"; $0.content = text }] }
      $0.sampling = .with {
        $0.maxTokens = maxTokens
        $0.seed = seed
        $0.temperature = temperature
      }
      $0.returnTokenIds = true
    }
  }

  @Test func unaryAndStreamingGenerateAgreeAndCarryUsageAndVersions() async throws {
    let server = try await ServerProcess()
    try await server.waitUntilServing()
    try await server.withClient { client in
      let inference = Alignd_V1_Inference.Client(wrapping: client)
      let request = Self.chatRequest("What is the capital of France?", maxTokens: 24)
      let unary = try await inference.generate(request)
      #expect(unary.completions.count == 1)
      let completion = unary.completions[0]
      #expect(!completion.text.isEmpty)
      #expect(completion.tokenIds.count > 0 && completion.tokenIds.count <= 24)
      #expect([.stop, .length].contains(completion.finishReason))
      #expect(unary.usage.completionTokens == UInt32(completion.tokenIds.count))
      #expect(unary.usage.promptTokens > 10)
      #expect(unary.versions.policy.hasPrefix("SmolLM2-135M-Instruct.Q4_1@"))
      #expect(unary.responseID.hasPrefix("gen-"))

      // The same seed streams the same tokens, chunk by chunk, then a final message.
      let (text, ids, end) = try await inference.generateStream(request) { response in
        var text = ""
        var ids: [Int32] = []
        var end: Alignd_V1_StreamEnd? = nil
        for try await message in response.messages {
          switch message.event {
          case .chunk(let chunk):
            text += chunk.text
            ids += chunk.tokenIds
          case .end(let e): end = e
          case nil: break
          }
        }
        return (text, ids, end)
      }
      #expect(ids == completion.tokenIds)
      #expect(text == completion.text)
      #expect(end?.completions.first?.finishReason == completion.finishReason)
      #expect(end?.usage.completionTokens == unary.usage.completionTokens)
      #expect(end?.versions.policy == unary.versions.policy)
    }
    server.signal(SIGTERM)
    #expect(try await server.waitForExit() == 0)
  }

  @Test func tokenizeAndLogprobsUseThePolicy() async throws {
    let server = try await ServerProcess()
    try await server.waitUntilServing()
    try await server.withClient { client in
      let inference = Alignd_V1_Inference.Client(wrapping: client)
      let tokens = try await inference.tokenize(.with { $0.text = "Hello world<|im_end|>" })
      #expect(tokens.tokenIds.count >= 3)
      #expect(tokens.tokens.last == "<|im_end|>")  // special tokens are never split

      let logprobs = try await inference.logprobs(
        .with {
          $0.items = [
            .with { $0.context = "The capital of France is"; $0.continuation = " Paris" },
            .with { $0.context = "The capital of France is"; $0.continuation = " banana" },
          ]
          $0.topLogprobs = 3
        })
      #expect(logprobs.items.count == 2)
      let paris = logprobs.items[0]
      let banana = logprobs.items[1]
      #expect(paris.tokens.count >= 1 && paris.tokens.allSatisfy { $0.logprob <= 0 && $0.top.count == 3 })
      #expect(paris.totalLogprob > banana.totalLogprob)  // a real model prefers the right answer
    }
    server.signal(SIGTERM)
    _ = try await server.waitForExit()
  }

  @Test func badGenerateRequestsAreInvalidArgument() async throws {
    let server = try await ServerProcess()
    try await server.waitUntilServing()
    try await server.withClient { client in
      let inference = Alignd_V1_Inference.Client(wrapping: client)
      let cases: [Alignd_V1_GenerateRequest] = [
        .init(),
        .with { $0.prompt = "hi"; $0.sampling = .with { $0.maxTokens = 1_000_000 } },
        .with { $0.prompt = "hi"; $0.sampling = .with { $0.temperature = -1 } },
        .with { $0.prompt = "hi"; $0.sampling = .with { $0.topP = 0 } },
        .with { $0.prompt = "hi"; $0.sampling = .with { $0.logprobs = 50 } },
        .with { $0.prompt = "hi"; $0.sampling = .with { $0.stop = [""] } },
        .with { $0.chat = .init() },
      ]
      for request in cases {
        let error = await #expect(throws: RPCError.self) { _ = try await inference.generate(request) }
        #expect(error?.code == .invalidArgument, "\(request): \(String(describing: error))")
      }
    }
    server.signal(SIGTERM)
    _ = try await server.waitForExit()
  }

  @Test func sigtermDrainsAnInFlightGenerateBeforeExit() async throws {
    let server = try await ServerProcess(arguments: ["--drain-timeout-seconds", "60"])
    try await server.waitUntilServing()
    let started = Mutex(false)
    try await server.withClient { client in
      let inference = Alignd_V1_Inference.Client(wrapping: client)
      var request = Self.chatRequest("Write a long story about a lighthouse keeper.", maxTokens: 96)
      request.sampling.ignoreEos = true
      let result = try await inference.generateStream(request) { response in
        var chunks = 0
        var finish: Alignd_V1_FinishReason? = nil
        for try await message in response.messages {
          if case .chunk = message.event {
            chunks += 1
            if chunks == 2 && !started.withLock({ $0 }) {
              started.withLock { $0 = true }
              server.signal(SIGTERM)  // mid-generation
            }
          }
          if case .end(let end) = message.event { finish = end.completions.first?.finishReason }
        }
        return (chunks, finish)
      }
      // The stream ran to its natural end after SIGTERM: every token arrived.
      #expect(result.1 == .length, "\(server.log)")
      #expect(result.0 >= 90)
    }
    #expect(started.withLock { $0 })
    #expect(try await server.waitForExit() == 0)
    #expect(server.log.contains("draining"))
  }
}
