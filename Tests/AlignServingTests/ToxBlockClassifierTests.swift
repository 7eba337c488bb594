import AlignServing
import Foundation
import Testing

/// The committed corpus with the original packages' outputs (Tests/Fixtures/safety/
/// port_cases.json, made by make_port_fixtures.py), and where the converted models are.
enum PortFixture {
  struct ToxBlock: Decodable {
    let ids: [Int32]
    let raw: [Double]
    let scores: [Double]
    let package_refuses: Bool
  }

  struct HateSonar: Decodable {
    let probabilities: [Double]
    let top_class: String
  }

  struct Case: Decodable {
    let text: String
    let toxblock: ToxBlock
    let hatesonar: HateSonar
  }

  struct File: Decodable {
    let tox_block: String
    let hatesonar: String
    let labels: [String]
    let classes: [String]
    let cases: [Case]
  }

  static let path = SafetyFixtures.path("Tests/Fixtures/safety/port_cases.json")

  static func load() throws -> File {
    try JSONDecoder().decode(File.self, from: Data(contentsOf: URL(fileURLWithPath: path)))
  }

  /// ALIGND_MODELS_DIR as in scripts/fetch-safety-ports.sh.
  static let modelsDirectory =
    ProcessInfo.processInfo.environment["ALIGND_MODELS_DIR"] ?? SafetyFixtures.path("models")

  static func model(_ name: String) -> String {
    URL(fileURLWithPath: modelsDirectory).appendingPathComponent(name).path
  }

  static let toxBlockPresent = [ToxBlockClassifier.defaultWeightsFileName, ToxBlockClassifier.defaultTokenizerFileName]
    .allSatisfy { FileManager.default.fileExists(atPath: model($0)) }
  static let hateSonarPresent = FileManager.default.fileExists(atPath: model(HateSonarClassifier.defaultFileName))
  static let absent: Comment = "converted model absent: run scripts/fetch-safety-ports.sh"

  /// Set ALIGND_BENCH_SAFETY=1 to run the throughput measurements.
  static let benchmark = ProcessInfo.processInfo.environment["ALIGND_BENCH_SAFETY"] == "1"

  /// Texts per second of `run` over `texts`, split into calls of `perCall` texts.
  static func throughput(_ texts: [String], perCall: Int, _ run: ([String]) -> Void) -> Double {
    let clock = ContinuousClock()
    run(Array(texts.prefix(perCall)))  // warm-up
    let elapsed = clock.measure {
      var start = 0
      while start < texts.count {
        run(Array(texts[start..<min(start + perCall, texts.count)]))
        start += perCall
      }
    }
    let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) * 1e-18
    return Double(texts.count) / seconds
  }
}

/// tox-block's BiLSTM against the package's own outputs.
@Suite("ToxBlockClassifier")
struct ToxBlockClassifierTests {
  static func classifier() throws -> ToxBlockClassifier {
    try ToxBlockClassifier(modelsDirectory: PortFixture.modelsDirectory)
  }

  @Test("the committed corpus covers the edge cases")
  func corpusShape() throws {
    let fixture = try PortFixture.load()
    let cases = fixture.cases
    #expect(cases.count >= 150)
    #expect(fixture.labels == ToxBlockClassifier.labels)
    #expect(cases.contains { $0.text.isEmpty && $0.toxblock.package_refuses })
    #expect(cases.contains { $0.text.split(separator: " ").count > 100 && $0.toxblock.ids.count == 100 })
    #expect(cases.contains { $0.text.unicodeScalars.contains { $0.value > 0xFFFF } })
    #expect(cases.contains { !$0.text.isEmpty && $0.text.allSatisfy { $0.isPunctuation || $0.isSymbol } })
    #expect(cases.contains { $0.toxblock.scores[3] > 1 })  // threat above the rescaling maximum
    #expect(cases.contains { $0.toxblock.scores.allSatisfy { $0 < 0.1 } })
  }

  @Test("token ids equal the package's encoder on every text", .enabled(if: PortFixture.toxBlockPresent, PortFixture.absent))
  func tokenIDs() throws {
    let classifier = try Self.classifier()
    for c in try PortFixture.load().cases {
      let ids = classifier.tokenIDs(c.text)
      #expect(ids.count == 100)
      #expect(Array(ids.suffix(c.toxblock.ids.count)) == c.toxblock.ids, "\(c.text.debugDescription)")
      #expect(ids.dropLast(c.toxblock.ids.count).allSatisfy { $0 == 0 }, "\(c.text.debugDescription)")
    }
  }

  @Test(
    "scores equal make_predictions, and raw outputs the Keras model, within 1e-5",
    .enabled(if: PortFixture.toxBlockPresent, PortFixture.absent)
  )
  func agreesWithPackage() throws {
    let classifier = try Self.classifier()
    let fixture = try PortFixture.load()
    #expect(classifier.version == "tox-block-\(fixture.tox_block)")
    let texts = fixture.cases.map(\.text)
    let rescaled = classifier.scores(texts)  // 190 texts: three batches, the last one partial
    let raw = classifier.scores(texts, rescaled: false)
    var maxError = 0.0
    for (c, (ours, oursRaw)) in zip(fixture.cases, zip(rescaled, raw)) {
      for k in 0..<6 {
        let error = max(abs(Double(ours[k]) - c.toxblock.scores[k]), abs(Double(oursRaw[k]) - c.toxblock.raw[k]))
        #expect(error <= 1e-5, "\(c.text.debugDescription) \(ToxBlockClassifier.labels[k]): \(ours[k]) vs \(c.toxblock.scores[k])")
        maxError = max(maxError, error)
      }
    }
    print("tox-block: max |Swift - package| over \(texts.count) texts x 6 labels = \(maxError)")
  }

  @Test("a text scores the same alone as in a batch", .enabled(if: PortFixture.toxBlockPresent, PortFixture.absent))
  func batchIndependence() throws {
    let classifier = try Self.classifier()
    let texts = try PortFixture.load().cases.map(\.text)
    let batched = classifier.scores(texts)
    for i in stride(from: 0, to: texts.count, by: 17) {
      let alone = classifier.scores([texts[i]])[0]
      for k in 0..<6 { #expect(abs(alone[k] - batched[i][k]) <= 1e-6, "\(texts[i].debugDescription)") }
    }
    #expect(classifier.scores([]).isEmpty)
  }

  @Test(
    "the backend maps insult, threat and identity_hate into moderation categories, clamped",
    .enabled(if: PortFixture.toxBlockPresent, PortFixture.absent)
  )
  func backendMapping() async throws {
    let classifier = try Self.classifier()
    let backend = ToxBlockBackend(classifier: classifier)
    #expect(backend.name == "toxblock" && backend.version == "tox-block-0.1.2")
    let texts = ["I will kill you.", "Kill all the infidels.", "You are a fucking idiot.", "Have a nice day"]
    let policy = try SafetyPolicy(data: Data(SafetyPortPolicy.json.utf8), source: "inline")
    let scores = try await backend.scores(texts.map { SafetyInput(text: $0) }, profile: policy.profile(named: nil))
    let raw = classifier.scores(texts)
    for (row, s) in zip(raw, scores) {
      let clamp = { (x: Float) in Double(min(max(x, 0), 1)) }
      #expect(Set(s.keys) == Set(backend.categories))
      #expect(s[.harassment] == clamp(row[4]))
      #expect(s[.harassmentThreatening] == clamp(row[3]) && s[.violence] == clamp(row[3]))
      #expect(s[.hate] == clamp(row[5]))
      #expect(s[.hateThreatening] == min(clamp(row[5]), clamp(row[3])))
    }
    #expect(raw[0][3] > 1 && scores[0][.harassmentThreatening] == 1)
  }

  @Test("load errors name the file", arguments: ["weights", "tokenizer"])
  func missingFile(_ which: String) {
    let weights = which == "weights" ? "/nonexistent/w.safetensors" : PortFixture.model(ToxBlockClassifier.defaultWeightsFileName)
    let tokenizer = which == "tokenizer" ? "/nonexistent/t.json" : PortFixture.model(ToxBlockClassifier.defaultTokenizerFileName)
    do {
      _ = try ToxBlockClassifier(weightsPath: weights, tokenizerPath: tokenizer)
      Issue.record("loaded")
    } catch {
      guard case .unreadable(let path, _) = error else {
        // With the model absent, the other file is missing too: whichever is read first.
        #expect(!PortFixture.toxBlockPresent, "expected .unreadable, got \(error)")
        return
      }
      #expect(path.hasPrefix("/nonexistent/") || !PortFixture.toxBlockPresent)
      #expect(error.description.contains(path))
    }
  }

  @Test(
    "a malformed or unsupported tokenizer file is refused",
    .enabled(if: PortFixture.toxBlockPresent, PortFixture.absent),
    arguments: ["truncated", "oov token", "post padding", "format", "label order"]
  )
  func badTokenizer(_ name: String) throws {
    let original = try Data(contentsOf: URL(fileURLWithPath: PortFixture.model(ToxBlockClassifier.defaultTokenizerFileName)))
    var data = original.prefix(original.count / 2)
    if name != "truncated" {
      var document = try #require(try JSONSerialization.jsonObject(with: original) as? [String: Any])
      var tokenizer = document["tokenizer"] as? [String: Any] ?? [:]
      var sequence = document["sequence"] as? [String: Any] ?? [:]
      switch name {
      case "oov token": tokenizer["oov_token"] = "<unk>"
      case "post padding": sequence["padding"] = "post"
      case "format": document["format"] = "something-else"
      default: document["labels"] = ["threat", "toxic", "severe_toxic", "obscene", "insult", "identity_hate"]
      }
      document["tokenizer"] = tokenizer
      document["sequence"] = sequence
      data = try JSONSerialization.data(withJSONObject: document)
    }
    let path = FileManager.default.temporaryDirectory.appendingPathComponent("toxblock-\(UUID().uuidString).json").path
    defer { try? FileManager.default.removeItem(atPath: path) }
    try Data(data).write(to: URL(fileURLWithPath: path))
    do {
      _ = try ToxBlockClassifier(weightsPath: PortFixture.model(ToxBlockClassifier.defaultWeightsFileName), tokenizerPath: path)
      Issue.record("\(name): loaded")
    } catch {
      switch (name, error) {
      case ("oov token", .unsupported(path, _)), ("post padding", .unsupported(path, _)): break
      case ("truncated", .malformed(path, _)), ("format", .malformed(path, _)), ("label order", .malformed(path, _)): break
      default: Issue.record("\(name): unexpected \(error)")
      }
    }
  }

  @Test("a weights file of another shape is refused", .enabled(if: PortFixture.toxBlockPresent, PortFixture.absent))
  func badWeights() throws {
    // A valid safetensors file whose dense kernel has the wrong shape.
    let header = #"{"__metadata__":{"format":"alignd.toxblock","format_version":"1"},"#
      + #""embedding":{"dtype":"F32","shape":[20000,2],"data_offsets":[0,160000]},"#
      + #""lstm_forward.recurrent_kernel":{"dtype":"F32","shape":[1,4],"data_offsets":[160000,160016]},"#
      + #""dense.kernel":{"dtype":"F32","shape":[3,1],"data_offsets":[160016,160028]}}"#
    var file = Data()
    var length = UInt64(header.utf8.count).littleEndian
    withUnsafeBytes(of: &length) { file.append(contentsOf: $0) }
    file.append(contentsOf: Array(header.utf8))
    file.append(Data(count: 160_028))
    let path = FileManager.default.temporaryDirectory.appendingPathComponent("toxblock-\(UUID().uuidString).safetensors").path
    defer { try? FileManager.default.removeItem(atPath: path) }
    try file.write(to: URL(fileURLWithPath: path))
    #expect {
      try ToxBlockClassifier(weightsPath: path, tokenizerPath: PortFixture.model(ToxBlockClassifier.defaultTokenizerFileName))
    } throws: { error in
      guard let error = error as? SafetyModelFileError, case .malformed(path, let detail) = error else { return false }
      return detail.contains("lstm_forward.kernel")
    }
  }

  @Test("throughput (ALIGND_BENCH_SAFETY=1)", .enabled(if: PortFixture.toxBlockPresent && PortFixture.benchmark))
  func throughput() throws {
    let classifier = try Self.classifier()
    let texts = Array(try PortFixture.load().cases.map(\.text).prefix(128))
    var count = 0
    let one = PortFixture.throughput(texts, perCall: 1) { count += classifier.scores($0).count }
    let many = PortFixture.throughput(texts + texts, perCall: 64) { count += classifier.scores($0).count }
    // Texts of 100 words or more: every step of both directions runs.
    let long = (0..<128).map { i in (0..<30).map { texts[(i + $0 * 11) % texts.count] }.joined(separator: " ") }
    #expect(long.allSatisfy { classifier.tokenIDs($0).first != 0 })
    let longOne = PortFixture.throughput(Array(long.prefix(64)), perCall: 1) { count += classifier.scores($0).count }
    let longMany = PortFixture.throughput(long, perCall: 64) { count += classifier.scores($0).count }
    print("tox-block: \(Int(one)) texts/s one per call, \(Int(many)) texts/s 64 per call (corpus texts);",
          "\(Int(longOne)) and \(Int(longMany)) texts/s for texts of 100+ words")
    #expect(count == texts.count * 3 + 1 + 64 + 64 + 1 + 128 + 64)
  }
}

/// A policy enabling the ported backends, with rules on the categories they score.
enum SafetyPortPolicy {
  static let json = """
    {"format": "alignd.safety-policy", "format_version": 1, "name": "ports", "version": "1",
     "backends": ["toxblock", "hatesonar", "rules"], "default_profile": "default",
     "profiles": {"default": {"categories": {
       "harassment": {"threshold": 0.5, "action": "flag"},
       "harassment/threatening": {"threshold": 0.5, "action": "block"},
       "hate": {"threshold": 0.5, "action": "block"}}}}}
    """
}

@Suite("SafetyPorts")
struct SafetyPortPolicyTests {
  @Test("a policy can enable toxblock and hatesonar; an unknown name lists every backend")
  func policyNames() throws {
    let policy = try SafetyPolicy(data: Data(SafetyPortPolicy.json.utf8), source: "inline")
    #expect(policy.enabledBackends == ["toxblock", "hatesonar", "rules"])
    #expect(throws: SafetyPolicyError.self) {
      try SafetyPolicy(data: Data(SafetyPortPolicy.json.replacingOccurrences(of: "\"toxblock\"", with: "\"toxic\"").utf8), source: "inline")
    }
    do {
      _ = try SafetyPolicy(data: Data(SafetyPortPolicy.json.replacingOccurrences(of: "\"toxblock\"", with: "\"toxic\"").utf8), source: "inline")
    } catch {
      #expect(error.description.contains("known: classifier, guard, hatesonar, lexical, rules, toxblock"))
    }
  }

  @Test(
    "a checker with both ports stamps their versions and blocks a threat",
    .enabled(if: PortFixture.toxBlockPresent && PortFixture.hateSonarPresent, PortFixture.absent)
  )
  func checker() async throws {
    let policy = try SafetyPolicy(data: Data(SafetyPortPolicy.json.utf8), source: "inline")
    let checker = try SafetyChecker(policy: policy, backends: [
      ToxBlockBackend(classifier: try ToxBlockClassifier(modelsDirectory: PortFixture.modelsDirectory)),
      HateSonarBackend(classifier: try HateSonarClassifier(contentsOf: PortFixture.model(HateSonarClassifier.defaultFileName))),
      RulesBackend(termLists: policy.termLists),
    ])
    #expect(checker.version == "policy=ports@1;toxblock=tox-block-0.1.2;hatesonar=hatesonar-0.1.0;rules=1")
    let verdicts = try await checker.check([SafetyInput(text: "I will kill you."), SafetyInput(text: "Have a nice day")])
    #expect(verdicts[0].action == .block && verdicts[0].flaggedCategories.contains(.harassmentThreatening))
    #expect(verdicts[1].action == .allow)
  }
}
