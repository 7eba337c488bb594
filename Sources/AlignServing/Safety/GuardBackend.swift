import AlignEngine
import AlignShared
import Foundation

/// A Llama Guard 3 style generative safety classifier as a backend.
///
/// For each input it renders the guard prompt (the model's own chat template when it ships one,
/// else Llama Guard 3's documented prompt), runs one batched forward pass for the next-token
/// distribution, and scores P(unsafe) = p("unsafe") / (p("safe") + p("unsafe")) over the first
/// tokens of the two verdict words. Where that score can reach a threshold of the profile, it then
/// forces the "unsafe" token and decodes the category line greedily, mapping the S-codes with
/// ``HazardCode``. Categories the model did not name score 0; without decoding every covered
/// category gets P(unsafe), an upper bound that is below every threshold of the profile.
///
/// Concurrent ``scores(_:profile:)`` calls share forward passes through a ``DynamicBatcher``; the
/// backend owns its engine (forward passes on one engine are serialized).
public final class GuardBackend: BatchedSafetyBackend {
  /// Tuning that does not change results.
  public struct Configuration: Sendable {
    /// Engine settings for the guard model.
    public var engine: EngineSettings
    /// Dynamic batching of concurrent requests (config `safety_batch_size`, `safety_batch_wait_ms`).
    public var batching: DynamicBatcher<GuardJob, GuardResult>.Configuration
    /// Tokens decoded after "unsafe" to read the category line.
    public var maxCategoryTokens: Int

    public init(
      engine: EngineSettings = EngineSettings(),
      batching: DynamicBatcher<GuardJob, GuardResult>.Configuration = JudgingBatching().safety,
      maxCategoryTokens: Int = 12
    ) {
      self.engine = engine
      self.batching = batching
      self.maxCategoryTokens = max(1, maxCategoryTokens)
    }
  }

  /// One rendered prompt for the batcher.
  public struct GuardJob: Sendable {
    public var tokens: [Int32]
    /// Decode the category line when P(unsafe) is at least this.
    public var decodeThreshold: Double
  }

  /// The model's answer for one prompt.
  public struct GuardResult: Sendable, Equatable {
    /// p("unsafe") / (p("safe") + p("unsafe")) for the next token.
    public var unsafeProbability: Double
    /// The same two probabilities under the full next-token softmax.
    public var safeTokenProbability: Double
    public var unsafeTokenProbability: Double
    /// "unsafe" followed by the greedily decoded category line, when decoded.
    public var decoded: String?
  }

  public let name = "guard"
  public let version: String
  public let categories: [SafetyCategory] = HazardCode.coveredCategories
  public let engine: Engine
  public let tokenizer: Tokenizer
  /// The model's chat template, when it has one that renders; else the built-in Llama Guard 3
  /// prompt is used.
  public let chatTemplate: ChatTemplate?
  /// Which prompt is used and, when the model's template was set aside, why (for the server log).
  public let promptSource: String
  /// First token ids of "safe" and "unsafe".
  public let safeToken: Int32
  public let unsafeToken: Int32
  private let stopTokens: Set<Int32>
  private let bosText: String
  private let eosText: String
  private let maxCategoryTokens: Int
  private let batcher: DynamicBatcher<GuardJob, GuardResult>

  /// Loads a guard model from a Hugging Face folder (config.json, safetensors, tokenizer.json) or
  /// a GGUF file.
  /// - Parameters:
  ///   - path: the folder or file.
  ///   - version: stamped on answers; defaults to the model's ``ModelFingerprint`` version (the
  ///     same whichever role loads it).
  /// - Throws: ``SafetyConfigurationError`` naming the path and the problem.
  public convenience init(path: String, version: String? = nil, configuration: Configuration = Configuration()) throws {
    let model: TransformerModel
    let description: TokenizerDescription
    do {
      model = try TransformerModel(path: path)
      if model.gguf != nil {
        description = try TokenizerDescription(gguf: try GGUFFile(path: path))
      } else {
        description = try TokenizerDescription(huggingFaceFolder: URL(fileURLWithPath: path))
      }
    } catch {
      throw SafetyConfigurationError("guard model \(path): \(error)")
    }
    let stamped: String
    do {
      stamped = try version ?? ModelFingerprint(path: path).version
    } catch {
      throw SafetyConfigurationError("guard model \(path): \(error)")
    }
    try self.init(model: model, tokenizer: description, version: stamped, configuration: configuration)
  }

  /// Builds the backend on a loaded model and its tokenizer description.
  /// - Throws: ``SafetyConfigurationError`` when the tokenizer is unusable or "safe" and "unsafe"
  ///   start with the same token.
  public init(
    model: TransformerModel, tokenizer description: TokenizerDescription, version: String,
    configuration: Configuration = Configuration()
  ) throws {
    let tokenizer: Tokenizer
    do {
      tokenizer = try Tokenizer(description)
      engine = try Engine(model: model, settings: configuration.engine)
    } catch {
      throw SafetyConfigurationError("guard model \(version): \(error)")
    }
    bosText = description.bosTokenID.flatMap { tokenizer.tokenText($0) } ?? ""
    eosText = description.eosTokenID.flatMap { tokenizer.tokenText($0) } ?? ""
    // A template this engine cannot parse or render (Llama Guard's own use Jinja features beyond
    // chat formatting) would fail every check; the documented prompt is used instead.
    if let source = description.chatTemplate {
      do {
        let template = try ChatTemplate(source: source)
        for probe in [SafetyInput(text: "x"), SafetyInput(text: "y", context: "x", role: .assistant)] {
          _ = try template.render(
            messages: LlamaGuardFormat.messages(for: probe), addGenerationPrompt: true,
            bosToken: bosText, eosToken: eosText)
        }
        chatTemplate = template
        promptSource = "the model's chat template"
      } catch {
        chatTemplate = nil
        promptSource = "the built-in Llama Guard 3 prompt (the model's chat template failed: \(error))"
      }
    } else {
      chatTemplate = nil
      promptSource = "the built-in Llama Guard 3 prompt (the model has no chat template)"
    }
    guard let safe = tokenizer.encode("safe", addSpecialTokens: false, parseSpecial: false).first,
      let unsafe = tokenizer.encode("unsafe", addSpecialTokens: false, parseSpecial: false).first,
      safe != unsafe
    else {
      throw SafetyConfigurationError("guard model \(version): \"safe\" and \"unsafe\" do not start with different tokens")
    }
    self.tokenizer = tokenizer
    self.version = version
    safeToken = safe
    unsafeToken = unsafe
    var stops = Set(model.metadata.eosTokenIDs)
    if let eos = description.eosTokenID { stops.insert(eos) }
    if let eot = description.eotTokenID { stops.insert(eot) }
    stopTokens = stops
    maxCategoryTokens = configuration.maxCategoryTokens
    let engine = self.engine
    let tokenizerRef = tokenizer
    let maxTokens = configuration.maxCategoryTokens
    let stopSet = stops
    batcher = DynamicBatcher(configuration: configuration.batching) { jobs in
      try Self.run(jobs, engine: engine, tokenizer: tokenizerRef, safe: safe, unsafe: unsafe, stops: stopSet, maxTokens: maxTokens)
    }
  }

  /// Batches run and the largest batch so far (to observe that concurrent calls batch).
  public var batchStats: DynamicBatcherStats { batcher.stats }

  public var batchQueue: (queued: Int, stats: DynamicBatcherStats) { (batcher.queued, batcher.stats) }

  /// The guard prompt for one input, as text.
  /// - Throws: ``InvalidRequest`` when the model's chat template rejects the conversation.
  public func renderPrompt(_ input: SafetyInput) throws -> String {
    guard let chatTemplate else { return LlamaGuardFormat.prompt(for: input, bos: bosText) }
    var text: String
    do {
      text = try chatTemplate.render(
        messages: LlamaGuardFormat.messages(for: input), addGenerationPrompt: true,
        bosToken: bosText, eosToken: eosText)
    } catch {
      throw InvalidRequest("the guard model's chat template rejected the input: \(error)")
    }
    // Llama Guard 3 writes a blank line after the assistant header before its verdict.
    if text.hasSuffix("<|end_header_id|>") { text += "\n\n" }
    return text
  }

  /// The prompt's token ids (special tokens in the rendered text become their ids; no BOS is
  /// added beyond what the prompt writes).
  public func promptTokens(_ input: SafetyInput) throws -> [Int32] {
    tokenizer.encode(try renderPrompt(input), addSpecialTokens: false, parseSpecial: true)
  }

  /// Runs the model on each input (batched with concurrent callers).
  /// - Parameter decodeThreshold: decode the category line where P(unsafe) reaches this.
  /// - Throws: ``InvalidRequest`` for a prompt longer than the guard's context;
  ///   ``DynamicBatcherError`` when the queue is full; engine errors.
  public func evaluate(_ inputs: [SafetyInput], decodeThreshold: Double) async throws -> [GuardResult] {
    var jobs: [GuardJob] = []
    for input in inputs {
      let tokens = try promptTokens(input)
      guard tokens.count + maxCategoryTokens + 1 <= engine.maxContextLength else {
        throw InvalidRequest(
          "text too long for the guard model: \(tokens.count) prompt tokens, limit \(engine.maxContextLength - maxCategoryTokens - 1)")
      }
      jobs.append(GuardJob(tokens: tokens, decodeThreshold: decodeThreshold))
    }
    return try await withThrowingTaskGroup(of: (Int, GuardResult).self) { group in
      for (i, job) in jobs.enumerated() {
        group.addTask { (i, try await self.batcher.submit(job)) }
      }
      var results = [GuardResult](
        repeating: GuardResult(unsafeProbability: 0, safeTokenProbability: 0, unsafeTokenProbability: 0, decoded: nil),
        count: jobs.count)
      for try await (i, result) in group { results[i] = result }
      return results
    }
  }

  public func scores(_ inputs: [SafetyInput], profile: SafetyProfile) async throws -> [[SafetyCategory: Double]] {
    let thresholds = categories.compactMap { profile.rules[$0]?.threshold }
    let decodeThreshold = thresholds.min() ?? .infinity
    let results = try await evaluate(inputs, decodeThreshold: decodeThreshold)
    return results.map { result in
      let p = result.unsafeProbability
      guard let decoded = result.decoded else {
        return Dictionary(uniqueKeysWithValues: categories.map { ($0, p) })
      }
      let named = LlamaGuardFormat.parse(decoded).categories
      var scores: [SafetyCategory: Double] = [:]
      for category in named.isEmpty ? [.guardUnspecified] : named { scores[category] = p }
      return scores
    }
  }

  // MARK: - Batch processing

  private static func run(
    _ jobs: [GuardJob], engine: Engine, tokenizer: Tokenizer, safe: Int32, unsafe: Int32,
    stops: Set<Int32>, maxTokens: Int
  ) throws -> [GuardResult] {
    let rows = try engine.classify(jobs.map(\.tokens))
    return try zip(jobs, rows).map { job, row in
      // Softmax in double precision over the whole row.
      let m = Double(row.max() ?? 0)
      var sum = 0.0
      for v in row { sum += exp(Double(v) - m) }
      let pSafe = exp(Double(row[Int(safe)]) - m) / sum
      let pUnsafe = exp(Double(row[Int(unsafe)]) - m) / sum
      // p_u / (p_s + p_u) written as a logistic of the logit gap, stable when both are tiny.
      let score = 1 / (1 + exp(Double(row[Int(safe)]) - Double(row[Int(unsafe)])))
      var decoded: String? = nil
      if score >= job.decodeThreshold {
        let continuation = try engine.greedy(prompt: job.tokens + [unsafe], maxTokens: maxTokens, stopTokens: stops)
        decoded = tokenizer.decode([unsafe] + continuation, skipSpecialTokens: true)
      }
      return GuardResult(
        unsafeProbability: score, safeTokenProbability: pSafe, unsafeTokenProbability: pUnsafe, decoded: decoded)
    }
  }
}
