import AlignEngine
import AlignServing
import AlignShared
import AlignTestSupport
import Foundation
import MetricsTestKit
import Testing

/// JSON schemas read into shapes, and constrained generation on the default policy.
@Suite("Constrained generation", .serialized)
struct ConstrainedGenerationTests {
  static func json(_ text: String) throws -> JSONValue {
    try JSONDecoder().decode(JSONValue.self, from: Data(text.utf8))
  }

  @Test("A Pydantic-style schema with $defs, enums, arrays and Optional reads into the expected shape")
  func readsPydanticSchema() throws {
    let schema = try Self.json(
      #"""
      {"$defs": {"Color": {"enum": ["red", "green"], "title": "Color", "type": "string"},
                 "Owner": {"properties": {"name": {"title": "Name", "type": "string"}}, "required": ["name"],
                           "title": "Owner", "type": "object", "additionalProperties": false}},
       "properties": {"color": {"$ref": "#/$defs/Color"}, "owner": {"anyOf": [{"$ref": "#/$defs/Owner"}, {"type": "null"}]},
                      "sizes": {"items": {"type": "integer"}, "type": "array", "maxItems": 3},
                      "ok": {"type": "boolean"}, "ratio": {"type": ["number", "null"]}},
       "required": ["color", "owner", "sizes", "ok", "ratio"], "title": "Thing", "type": "object",
       "additionalProperties": false}
      """#)
    let shape = try JSONSchemaReader.shape(of: schema)
    guard case .object(let properties, let required, let additional) = shape else {
      Issue.record("not an object: \(shape)")
      return
    }
    #expect(additional == nil)
    #expect(required == ["color", "owner", "sizes", "ok", "ratio"])
    let byName = Dictionary(uniqueKeysWithValues: properties.map { ($0.name, $0.shape) })
    #expect(byName["color"] == .literals(["\"red\"", "\"green\""]))
    #expect(
      byName["owner"]
        == .anyOf([
          .object(properties: [JSONProperty("name", .string(minLength: 0, maxLength: nil))], required: ["name"], additional: nil),
          .null,
        ]))
    #expect(byName["sizes"] == .array(items: .number(integer: true), minItems: 0, maxItems: 3))
    #expect(byName["ok"] == .boolean)
    #expect(byName["ratio"] == .anyOf([.number(integer: false), .null]))
  }

  @Test(
    "Unsupported keywords and malformed schemas are refused, naming the problem",
    arguments: [
      (#"{"type": "string", "pattern": "^a+$"}"#, "\"pattern\""),
      (#"{"type": "string", "format": "date-time"}"#, "\"format\""),
      (#"{"type": "integer", "minimum": 3}"#, "\"minimum\""),
      (#"{"oneOf": [{"type": "string"}]}"#, "\"oneOf\""),
      (##"{"$ref": "#/$defs/Node", "$defs": {"Node": {"type": "object", "properties": {"next": {"$ref": "#/$defs/Node"}}}}}"##, "recursive"),
      (##"{"$ref": "#/$defs/Missing"}"##, "points nowhere"),
      (#"{"type": "object", "properties": {"a": {"type": "string"}}, "required": ["b"]}"#, "required property b"),
      (#"{"type": "object", "properties": {"a": {}}, "additionalProperties": true}"#, "additionalProperties must be false"),
      (#"{"type": "text"}"#, "unknown type text"),
    ])
  func refusesUnsupported(schema: String, expected: String) throws {
    let value = try Self.json(schema)
    do {
      _ = try JSONSchemaReader.shape(of: value)
      Issue.record("accepted \(schema)")
    } catch {
      #expect(error.description.contains(expected), "\(error.description)")
      #expect(error.description.hasPrefix("response_format: "))
    }
  }

  // MARK: On the default policy

  static let modelPresent = TestModels.defaultPolicyPresent

  static let schema = #"""
    {"type": "object", "additionalProperties": false, "required": ["name", "age", "colors"],
     "properties": {"name": {"type": "string", "maxLength": 20}, "age": {"type": "integer"},
                    "colors": {"type": "array", "items": {"enum": ["red", "green", "blue"]}, "maxItems": 3},
                    "pet": {"anyOf": [{"type": "null"}, {"type": "object", "additionalProperties": false,
                            "required": ["kind"], "properties": {"kind": {"type": "string", "maxLength": 10}}}]}}}
    """#

  static func loop() throws -> (GenerationLoop, TestMetrics) {
    let metrics = TestMetrics()
    let model = try PolicyModel(ggufPath: TestModels.defaultPolicy, version: "smollm2-test")
    let loop = try GenerationLoop(
      model: model, configuration: .init(maxRunningSequences: 8, kvCapacityTokens: 8192), metricsFactory: metrics)
    return (loop, metrics)
  }

  static func run(_ loop: GenerationLoop, _ spec: GenerationSpec) async throws -> [(String, FinishReason?)] {
    let (_, events) = try loop.submit(spec)
    var texts: [Int: String] = [:]
    var finishes: [Int: FinishReason] = [:]
    for await event in events {
      switch event {
      case .token(let sample, let text, _): texts[sample, default: ""] += text
      case .finished(let sample, let reason, _): finishes[sample] = reason
      case .failed(let message): Issue.record("generation failed: \(message)")
      }
    }
    return (0..<spec.samples).map { (texts[$0] ?? "", finishes[$0]) }
  }

  func spec(_ loop: GenerationLoop, format: ResponseFormat, seed: UInt64, samples: Int = 4, maxTokens: Int = 120)
    throws -> GenerationSpec
  {
    var request = GenerationRequest(
      .chat([ChatMessage(role: "user", content: "Describe a person as JSON with name, age and favourite colors.")]))
    request.responseFormat = format
    request.temperature = 1.0
    request.seed = seed
    request.n = samples
    request.maxTokens = maxTokens
    return try request.validated(model: loop.model, limits: GenerationLimits()).spec
  }

  @Test(
    "Sampled completions at temperature 1 are schema-valid JSON that ends with the document",
    .enabled(if: modelPresent, Comment(rawValue: TestModels.defaultPolicyMissing)))
  func sampledCompletionsAreValid() async throws {
    let (loop, metrics) = try Self.loop()
    defer { loop.shutdown() }
    let format = ResponseFormat.jsonSchema(try Self.json(Self.schema))
    var stopped = 0
    for seed in UInt64(1)...3 {
      for (text, finish) in try await Self.run(loop, try spec(loop, format: format, seed: seed)) {
        if finish == .length { continue }
        #expect(finish == .stop)
        stopped += 1
        let object = try #require(
          try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any], "not a JSON object: \(text)")
        #expect(Set(object.keys).isSuperset(of: ["name", "age", "colors"]), "\(text)")
        #expect(Set(object.keys).isSubset(of: ["name", "age", "colors", "pet"]), "\(text)")
        #expect(object["age"] is Int, "\(text)")
        #expect((object["name"] as? String).map { $0.count <= 20 } == true, "\(text)")
        let colors = try #require(object["colors"] as? [String], "\(text)")
        #expect(colors.count <= 3 && colors.allSatisfy { ["red", "green", "blue"].contains($0) }, "\(text)")
      }
    }
    #expect(stopped >= 8, "most completions should finish their document within 120 tokens")
    let masks = try metrics.expectTimer("alignd_constraint_mask_seconds", [("model", "smollm2-test")])
    let nanos = masks.values.sorted()
    try #require(!nanos.isEmpty)
    let mean = Double(nanos.reduce(0, +)) / Double(max(1, nanos.count)) / 1e6
    print(
      "constraint mask: \(nanos.count) steps, mean \(String(format: "%.3f", mean)) ms, median \(Double(nanos[nanos.count / 2]) / 1e6) ms, max \(Double(nanos.last ?? 0) / 1e6) ms"
    )
  }

  @Test(
    "json_object mode yields a JSON object; a cut document finishes with length",
    .enabled(if: modelPresent, Comment(rawValue: TestModels.defaultPolicyMissing)))
  func jsonObjectAndLength() async throws {
    let (loop, _) = try Self.loop()
    defer { loop.shutdown() }
    for (text, finish) in try await Self.run(loop, try spec(loop, format: .jsonObject, seed: 7)) where finish == .stop {
      #expect((try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any]) != nil, "\(text)")
    }
    let cut = try await Self.run(loop, try spec(loop, format: .jsonObject, seed: 7, samples: 1, maxTokens: 3))
    #expect(cut[0].1 == .length)
    #expect(cut[0].0.hasPrefix("{") || cut[0].0.hasPrefix(" ") || cut[0].0.hasPrefix("\n"))
  }

  @Test(
    "A seed reproduces a constrained completion whether it runs alone or batched with others",
    .enabled(if: modelPresent, Comment(rawValue: TestModels.defaultPolicyMissing)))
  func seedsAndBatchInvariance() async throws {
    let (loop, _) = try Self.loop()
    defer { loop.shutdown() }
    let format = ResponseFormat.jsonSchema(try Self.json(Self.schema))
    let alone = try await Self.run(loop, try spec(loop, format: format, seed: 42, samples: 1, maxTokens: 40))
    async let batched = Self.run(loop, try spec(loop, format: format, seed: 42, samples: 1, maxTokens: 40))
    async let other = Self.run(loop, try spec(loop, format: .jsonObject, seed: 5, samples: 3, maxTokens: 40))
    let (together, _) = try await (batched, other)
    #expect(alone[0].0 == together[0].0)
    #expect(!alone[0].0.isEmpty)
  }

  @Test(
    "Compiled constraints are cached by the schema's meaning, not its key order",
    .enabled(if: modelPresent, Comment(rawValue: TestModels.defaultPolicyMissing)))
  func cache() throws {
    let model = try PolicyModel(ggufPath: TestModels.defaultPolicy, version: "smollm2-test")
    let a = try model.outputConstraints.constraint(for: .jsonSchema(try Self.json(#"{"type":"object","properties":{"a":{"type":"string"}},"required":["a"]}"#)))
    let b = try model.outputConstraints.constraint(for: .jsonSchema(try Self.json(#"{"required":["a"], "properties":{"a":{"type":"string"}},"type":"object"}"#)))
    #expect(a != nil && a === b)
    #expect(try model.outputConstraints.constraint(for: .text) == nil)
    var request = GenerationRequest(.prompt("x"))
    request.responseFormat = .jsonObject
    request.ignoreEOS = true
    #expect(throws: InvalidRequest.self) { try request.validated(model: model, limits: GenerationLimits()) }
    request.ignoreEOS = false
    request.logitBias = [49152: 1]
    #expect(throws: InvalidRequest.self) { try request.validated(model: model, limits: GenerationLimits()) }
  }
}
