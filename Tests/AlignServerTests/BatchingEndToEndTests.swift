import AlignAPI
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import Synchronization
import Testing

/// Continuous batching, bounded queues, deadlines, cancellation and priorities against the real
/// alignd binary serving the default policy.
@Suite("Batched serving over gRPC", .serialized)
struct BatchingEndToEndTests {
  static func request(
    _ prompt: String, maxTokens: UInt32, seed: UInt64, ignoreEOS: Bool = false,
    priority: Alignd_V1_Priority = .normal
  ) -> Alignd_V1_GenerateRequest {
    .with {
      $0.prompt = prompt
      $0.sampling = .with {
        $0.maxTokens = maxTokens
        $0.seed = seed
        $0.temperature = 0.9
        $0.ignoreEos = ignoreEOS
      }
      $0.priority = priority
      $0.returnTokenIds = true
    }
  }

  static let prompts = [
    "Once upon a time", "The best way to learn Swift is", "In a distant galaxy,", "My favourite recipe is",
    "The history of Rome", "A good night's sleep", "Write a haiku about rain:", "The three laws of motion are",
  ]

  /// Collects a stream's token ids and final finish reason.
  static func stream(
    _ inference: Alignd_V1_Inference.Client<HTTP2ClientTransport.Posix>, _ request: Alignd_V1_GenerateRequest,
    options: CallOptions = .defaults
  ) async throws -> (ids: [Int32], finish: Alignd_V1_FinishReason?) {
    try await inference.generateStream(request, options: options) { response in
      var ids: [Int32] = []
      var finish: Alignd_V1_FinishReason? = nil
      for try await message in response.messages {
        switch message.event {
        case .chunk(let chunk): ids += chunk.tokenIds
        case .end(let end): finish = end.completions.first?.finishReason
        case nil: break
        }
      }
      return (ids, finish)
    }
  }

  @Test func thirtyTwoConcurrentStreamsCompleteWithSeedReproducibleOutputs() async throws {
    let server = try await ServerProcess(arguments: ["--max-running-sequences", "32"])
    try await server.waitUntilServing()
    try await server.withClient { client in
      let inference = Alignd_V1_Inference.Client(wrapping: client)
      let requests = (0..<32).map { i in
        Self.request(Self.prompts[i % Self.prompts.count], maxTokens: 16, seed: UInt64(1000 + i), ignoreEOS: true)
      }
      // A few requests alone first: the reference outputs.
      var alone: [Int: [Int32]] = [:]
      for i in [0, 9, 31] { alone[i] = try await Self.stream(inference, requests[i]).ids }

      let results = try await withThrowingTaskGroup(of: (Int, [Int32], Alignd_V1_FinishReason?).self) { group in
        for (i, request) in requests.enumerated() {
          group.addTask {
            let (ids, finish) = try await Self.stream(inference, request)
            return (i, ids, finish)
          }
        }
        var all: [Int: ([Int32], Alignd_V1_FinishReason?)] = [:]
        for try await (i, ids, finish) in group { all[i] = (ids, finish) }
        return all
      }
      #expect(results.count == 32)
      for (i, result) in results {
        #expect(result.0.count == 16, "request \(i)")
        #expect(result.1 == .length, "request \(i)")
      }
      // Batch-invariant sampling: the same seed gives the same tokens alone or in a batch of 32.
      for (i, ids) in alone {
        #expect(results[i]?.0 == ids, "request \(i) differs between alone and batched")
      }
      // The batch really ran together: the server decoded many sequences in one step.
      let status = try await Alignd_V1_Admin.Client(wrapping: client).getStatus(.init())
      #expect(status.queues.first?.running == 0)
      // The kernels the engine picked at start (kernels: auto): the fastest set this CPU supports.
      #expect(!status.engineKernels.supported.isEmpty)
      #expect(status.engineKernels.kernels == status.engineKernels.supported.first)
      #expect(status.engineKernels.cpu.contains("SIMD flags"))
    }
    server.signal(SIGTERM)
    _ = try await server.waitForExit()
  }

  @Test func fullQueueIsRefusedPromptlyWhileAdmittedRequestsComplete() async throws {
    let server = try await ServerProcess(arguments: ["--max-running-sequences", "1", "--queue-capacity", "2"])
    try await server.waitUntilServing()
    try await server.withClient { client in
      let inference = Alignd_V1_Inference.Client(wrapping: client)
      let outcomes = try await withThrowingTaskGroup(of: (Int, RPCError?, Duration).self) { group in
        for i in 0..<8 {
          group.addTask {
            let start = ContinuousClock.now
            do {
              _ = try await inference.generate(Self.request("Count: one, two,", maxTokens: 24, seed: UInt64(i), ignoreEOS: true))
              return (i, nil, ContinuousClock.now - start)
            } catch let error as RPCError {
              return (i, error, ContinuousClock.now - start)
            }
          }
        }
        var all: [(Int, RPCError?, Duration)] = []
        for try await outcome in group { all.append(outcome) }
        return all
      }
      let rejected = outcomes.filter { $0.1 != nil }
      let completed = outcomes.filter { $0.1 == nil }
      // The queue holds two (plus one running once admitted); with eight arriving together the
      // rest are refused, and every request gets one answer or the other.
      #expect(completed.count >= 2)
      #expect(rejected.count >= 1)
      #expect(completed.count + rejected.count == 8)
      for (_, error, elapsed) in rejected {
        #expect(error?.code == .resourceExhausted)
        #expect(error?.metadata[stringValues: "retry-after-ms"].first(where: { _ in true }) != nil)
        #expect(elapsed < .seconds(2), "refusal must be prompt, took \(elapsed)")
      }
    }
    server.signal(SIGTERM)
    _ = try await server.waitForExit()
  }

  @Test func deadlineMidStreamEndsWithFinishReasonDeadline() async throws {
    let server = try await ServerProcess(arguments: ["--max-tokens-limit", "4000", "--kv-cache-tokens", "8192"])
    try await server.waitUntilServing()
    try await server.withClient { client in
      let inference = Alignd_V1_Inference.Client(wrapping: client)
      // Open the connection first: the client's clock starts before the TCP and HTTP/2
      // handshakes, the server's only when the call arrives, and this test is about the latter.
      _ = try await inference.generate(Self.request("Hi", maxTokens: 1, seed: 0, ignoreEOS: true))
      // 10 s: the server ends the call 1 s early (its deadline timer does not wait for a forward
      // step under way), room for a loaded machine to deliver the last message; 4000 tokens would
      // need 400 tokens/s, well above this model's single-stream decode here.
      var options = CallOptions.defaults
      options.timeout = .seconds(10)
      let result = try await Self.stream(
        inference, Self.request("Tell me everything about oceans.", maxTokens: 4000, seed: 1, ignoreEOS: true),
        options: options)
      #expect(result.finish == .deadline)
      #expect(result.ids.count > 0 && result.ids.count < 4000)

      // A unary call past its deadline gets DEADLINE_EXCEEDED.
      let error = await #expect(throws: RPCError.self) {
        _ = try await inference.generate(
          Self.request("Tell me everything about rivers.", maxTokens: 4000, seed: 2, ignoreEOS: true), options: options)
      }
      #expect(error?.code == .deadlineExceeded)
    }
    server.signal(SIGTERM)
    _ = try await server.waitForExit()
  }

  @Test func cancelledStreamFreesItsSlotForTheNextRequest() async throws {
    let server = try await ServerProcess(arguments: ["--max-running-sequences", "1"])
    try await server.waitUntilServing()
    try await server.withClient { client in
      let inference = Alignd_V1_Inference.Client(wrapping: client)
      let admin = Alignd_V1_Admin.Client(wrapping: client)
      // Read two chunks of a very long generation, then walk away (the client cancels the RPC).
      let seen = try await inference.generateStream(
        Self.request("List every prime number:", maxTokens: 2000, seed: 3, ignoreEOS: true)
      ) { response in
        var chunks = 0
        for try await message in response.messages {
          if case .chunk = message.event { chunks += 1 }
          if chunks == 2 { break }
        }
        return chunks
      }
      #expect(seen == 2)
      // The status counter shows the only slot free again, without waiting for 2000 tokens.
      var running: UInt32 = 1
      let deadline = ContinuousClock.now + .seconds(10)
      while running != 0 && ContinuousClock.now < deadline {
        running = try await admin.getStatus(.init()).queues.first?.running ?? 1
        if running != 0 { try await Task.sleep(for: .milliseconds(20)) }
      }
      #expect(running == 0)
      // And the next request is served on it.
      let next = try await inference.generate(Self.request("Hello", maxTokens: 4, seed: 4, ignoreEOS: true))
      #expect(next.completions.first?.tokenIds.count == 4)
    }
    server.signal(SIGTERM)
    _ = try await server.waitForExit()
  }

  @Test func prioritiesReorderASaturatedQueue() async throws {
    // Aging is slowed down so that only priority decides the order here.
    let server = try await ServerProcess(arguments: ["--max-running-sequences", "1", "--priority-aging-seconds", "600"])
    try await server.waitUntilServing()
    try await server.withClient { client in
      let inference = Alignd_V1_Inference.Client(wrapping: client)
      let admin = Alignd_V1_Admin.Client(wrapping: client)
      let order = LockedText()
      try await withThrowingTaskGroup(of: Void.self) { group in
        // A blocker occupies the only slot.
        group.addTask {
          _ = try await inference.generate(Self.request("Blocker:", maxTokens: 48, seed: 5, ignoreEOS: true))
        }
        func waitForQueued(_ count: UInt32) async throws {
          while try await admin.getStatus(.init()).queues.first.map({ $0.queued + $0.running }) ?? 0 < count {
            try await Task.sleep(for: .milliseconds(10))
          }
        }
        try await waitForQueued(1)
        for (name, priority) in [("low", Alignd_V1_Priority.low), ("normal", .normal), ("high", .high)] {
          group.addTask {
            _ = try await inference.generate(Self.request("Hi", maxTokens: 2, seed: 6, ignoreEOS: true, priority: priority))
            order.append(name + " ")
          }
          // Queue them one at a time so arrival order is low, normal, high.
          try await waitForQueued(priority == .low ? 2 : priority == .normal ? 3 : 4)
        }
        try await group.waitForAll()
      }
      #expect(order.text == "high normal low ")
    }
    server.signal(SIGTERM)
    _ = try await server.waitForExit()
  }
}
