import AlignAPI
import AlignServer
import AlignTestSupport
import Foundation
import GRPCCore
import Testing

/// Constrained decoding and logit bias through the real alignd binary: the official `openai`
/// client's structured-output helpers (Pydantic models → strict JSON schemas) get answers that
/// validate, json_object mode yields objects, unsupported schema keywords and malformed
/// `logit_bias` are typed 400s; gRPC Generate takes the same constraint.
@Suite("Structured output", .serialized)
struct StructuredOutputTests {
  static let enabled = HTTPGatewayTests.defaultPresent && HTTPGatewayTests.pythonPresent

  @Test(
    "openai client: 20 Pydantic schemas at temperature 0.8 validate; json_object yields objects; errors are 400s",
    .enabled(if: enabled))
  func openAIStructuredOutput() async throws {
    let server = try await ServerProcess()
    try await server.waitUntilServing()
    let results = try HTTPGatewayTests.openAI(
      server,
      ["structured_parse", "structured_stream", "json_object", "unsupported_schema", "logit_bias", "bad_logit_bias"])

    let parse = try #require((results["structured_parse"] as? [String: Any])?["outcomes"] as? [[String: Any]], "\(results)")
    #expect(parse.count == 20)
    let stopped = parse.filter { $0["finish_reason"] as? String == "stop" }
    for outcome in stopped { #expect(outcome["valid"] as? Bool == true, "\(outcome)") }
    // A 135M model may wander inside a free string until max_tokens; nearly all must finish.
    #expect(stopped.count >= 18, "\(parse.filter { $0["finish_reason"] as? String != "stop" })")
    #expect(Set(stopped.compactMap { $0["schema"] as? String }).count >= 7)

    let stream = try #require(results["structured_stream"] as? [String: Any])
    if stream["finish_reason"] as? String == "stop" {
      #expect(stream["valid"] as? Bool == true, "\(stream)")
    } else {
      #expect(stream["finish_reason"] as? String == "length", "\(stream)")
    }

    let objects = try #require((results["json_object"] as? [String: Any])?["outcomes"] as? [[String: Any]])
    #expect(objects.count == 6)
    for outcome in objects where outcome["finish_reason"] as? String == "stop" {
      #expect(outcome["is_object"] as? Bool == true, "\(outcome)")
    }
    #expect(objects.filter { $0["finish_reason"] as? String == "stop" }.count >= 4, "\(objects)")

    let unsupported = try #require(results["unsupported_schema"] as? [String: Any])
    #expect(unsupported["exception"] as? String == "BadRequestError", "\(unsupported)")
    #expect(unsupported["status"] as? Int == 400)
    let message = ((unsupported["body"] as? [String: Any])?["message"] as? String) ?? ""
    #expect(message.contains("\"pattern\""), "\(unsupported)")

    let biased = try #require(results["logit_bias"] as? [String: Any])
    let tokens = try #require(biased["tokens"] as? [String], "\(biased)")
    #expect(tokens.count == 5 && Set(tokens).count == 1, "\(biased)")

    let bad = try #require(results["bad_logit_bias"] as? [String: [String: Any]])
    for (name, outcome) in bad {
      #expect(outcome["status"] as? Int == 400, "\(name): \(outcome)")
      let text = ((outcome["body"] as? [String: Any])?["message"] as? String) ?? ""
      #expect(text.contains("logit_bias"), "\(name): \(outcome)")
    }

    // gRPC: the same constraint as a ResponseFormat; an unsupported keyword is INVALID_ARGUMENT.
    try await server.withClient { client in
      let inference = Alignd_V1_Inference.Client(wrapping: client)
      let schema = #"{"type":"object","properties":{"color":{"enum":["red","green","blue"]},"count":{"type":"integer"}},"required":["color","count"],"additionalProperties":false}"#
      let response = try await inference.generate(
        .with {
          $0.prompt = "My favourite color and how many times I saw it, as JSON:"
          $0.sampling.maxTokens = 60
          $0.sampling.temperature = 0.9
          $0.sampling.seed = 5
          $0.sampling.n = 3
          $0.responseFormat = .with {
            $0.type = .jsonSchema
            $0.schema = schema
          }
        })
      for completion in response.completions where completion.finishReason == .stop {
        let object = try JSONSerialization.jsonObject(with: Data(completion.text.utf8)) as? [String: Any]
        #expect(object?["count"] is Int, "\(completion.text)")
        #expect(["red", "green", "blue"].contains(object?["color"] as? String ?? ""), "\(completion.text)")
      }
      #expect(response.completions.contains { $0.finishReason == .stop })
      await #expect(throws: RPCError.self) {
        _ = try await inference.generate(
          .with {
            $0.prompt = "x"
            $0.responseFormat = .with {
              $0.type = .jsonSchema
              $0.schema = #"{"type":"string","format":"email"}"#
            }
          })
      }
    }
    server.signal(SIGTERM)
    #expect(try await server.waitForExit() == 0)
  }

  @Test(
    "openai client: tool calls in two turns, streamed and unstreamed; required calls name a tool; bad tool_choice is a 400",
    .enabled(if: enabled))
  func openAIToolCalls() async throws {
    let server = try await ServerProcess()
    try await server.waitUntilServing()
    let results = try HTTPGatewayTests.openAI(
      server, ["tools_unstreamed", "tools_streamed", "tools_required", "bad_tool_choice"])
    for name in ["tools_unstreamed", "tools_streamed"] {
      let exchange = try #require(results[name] as? [String: Any], "\(results)")
      // The named tool is called with arguments valid against its schema, parsed by the client.
      #expect(exchange["finish_reason"] as? String == "tool_calls", "\(name): \(exchange)")
      let calls = exchange["calls"] as? [[String: Any]] ?? []
      #expect(calls.count == 1 && calls.first?["name"] as? String == "get_weather", "\(name): \(exchange)")
      #expect((calls.first?["id"] as? String)?.hasPrefix("call_") == true)
      #expect(exchange["arguments_valid"] as? Bool == true, "\(name): \(exchange)")
      // The tool's result goes back; the model answers in text.
      let answer = exchange["answer"] as? String ?? ""
      #expect(!answer.isEmpty && ["stop", "length"].contains(exchange["final_finish_reason"] as? String), "\(name): \(exchange)")
    }
    let required = try #require((results["tools_required"] as? [String: Any])?["outcomes"] as? [[String: Any]])
    #expect(required.count == 5)
    for outcome in required {
      #expect(outcome["finish_reason"] as? String == "tool_calls", "\(outcome)")
      let names = outcome["names"] as? [String] ?? []
      #expect(names.count == 1 && ["get_weather", "get_time"].contains(names.first ?? ""), "\(outcome)")
    }
    let bad = try #require(results["bad_tool_choice"] as? [String: [String: Any]])
    #expect(bad.count == 3)
    for (name, outcome) in bad {
      #expect(outcome["status"] as? Int == 400, "\(name): \(outcome)")
      #expect((outcome["body"] as? [String: Any])?["param"] != nil, "\(name): \(outcome)")
    }
    server.signal(SIGTERM)
    #expect(try await server.waitForExit() == 0)
  }
}
