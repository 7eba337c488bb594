import AlignEngine
import Foundation

/// A fully loaded, immutable policy checkpoint: weights, tokenizer, chat template and the facts
/// the serving layer needs (stop tokens, context length). Shared by every request admitted on it.
public final class PolicyModel: Sendable {
  public let version: String
  public let engine: Engine
  public let tokenizer: Tokenizer
  public let chatTemplate: ChatTemplate?
  /// The tokenizer's definition (vocabulary, merges, special tokens), for compatibility checks.
  public let tokenizerDescription: TokenizerDescription
  /// Token ids that end a completion unless `ignore_eos` is set.
  public let stopTokenIDs: Set<Int32>
  public let bosText: String
  public let eosText: String
  /// Compiled `response_format` constraints over this policy's vocabulary.
  public let outputConstraints: OutputConstraintCache

  /// Loads a policy: a GGUF file, or a Hugging Face folder (config.json, *.safetensors,
  /// tokenizer.json, tokenizer_config.json).
  /// - Throws: ``ModelLoadError`` naming the file and the problem.
  public init(path: String, version: String, settings: EngineSettings = EngineSettings()) throws {
    do {
      var isDirectory: ObjCBool = false
      guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
        throw ModelLoadError("cannot open the policy model \(path): no such file or folder")
      }
      let model: TransformerModel
      let description: TokenizerDescription
      if isDirectory.boolValue {
        model = try TransformerModel(huggingFaceDirectory: path)
        description = try TokenizerDescription(huggingFaceFolder: URL(fileURLWithPath: path))
      } else {
        model = try TransformerModel(ggufPath: path)
        description = try TokenizerDescription(gguf: try GGUFFile(path: path))
      }
      guard model.hyperparameters.head == .causalLM else {
        throw ModelLoadError("\(path): a policy must be a causal language model, not a classifier")
      }
      let tokenizer = try Tokenizer(description)
      self.engine = try Engine(model: model, settings: settings)
      self.tokenizer = tokenizer
      self.tokenizerDescription = description
      self.chatTemplate = try description.chatTemplate.map { try ChatTemplate(source: $0) }
      var stops = Set(model.metadata.eosTokenIDs)
      if let eos = description.eosTokenID { stops.insert(eos) }
      if let eot = description.eotTokenID { stops.insert(eot) }
      self.stopTokenIDs = stops
      self.bosText = description.bosTokenID.flatMap { tokenizer.tokenText($0) } ?? ""
      self.eosText = description.eosTokenID.flatMap { tokenizer.tokenText($0) } ?? ""
      self.outputConstraints = OutputConstraintCache(tokenizer: tokenizer, endTokens: stops)
    } catch let error as ModelLoadError {
      throw error
    } catch {
      throw ModelLoadError("\(path): \(error)")
    }
    self.version = version
  }

  /// Loads a GGUF policy.
  /// - Throws: ``ModelLoadError`` naming the file and the problem.
  public convenience init(ggufPath path: String, version: String, settings: EngineSettings = EngineSettings()) throws {
    try self.init(path: path, version: version, settings: settings)
  }

  /// Longest prompt plus completion the engine accepts.
  public var contextLength: Int { engine.maxContextLength }

  /// Renders a conversation with the model's chat template.
  /// - Throws: ``ModelLoadError`` when the model has no template or the template rejects the input.
  public func renderChat(_ messages: [ChatMessage], addGenerationPrompt: Bool) throws -> String {
    guard let chatTemplate else {
      throw InvalidRequest("the policy model has no chat template; send a raw prompt")
    }
    do {
      return try chatTemplate.render(
        messages: messages, addGenerationPrompt: addGenerationPrompt, bosToken: bosText, eosToken: eosText)
    } catch {
      throw InvalidRequest("the chat template rejected the conversation: \(error)")
    }
  }

  /// Tokenizes a prompt the way generation sees it (BOS added where the model expects it; special
  /// tokens written in the text, like `<|im_start|>`, become their ids).
  public func encodePrompt(_ text: String) -> [Int32] {
    tokenizer.encode(text, addSpecialTokens: true, parseSpecial: true)
  }

  /// The tokens to teacher-force for `continuation` after `context`, tokenized separately so the
  /// scored span is exact, and the context's length. `contextIsRendered` marks chat-template output,
  /// which already holds any BOS it needs.
  public func teacherForcingInput(
    context: String, contextIsRendered: Bool = false, continuation: String
  ) -> (tokens: [Int32], contextLength: Int) {
    let contextTokens = context.isEmpty ? [] : contextIsRendered ? encodeRendered(context) : encodePrompt(context)
    let continuationTokens = tokenizer.encode(
      continuation, addSpecialTokens: contextTokens.isEmpty, parseSpecial: true)
    return (contextTokens + continuationTokens, contextTokens.count)
  }

  /// The continuation's share of a teacher-forced result: entry j scores token j + 1, so the
  /// tokens after a context of `contextLength` start at entry `contextLength - 1` (the very first
  /// token of a text without context has no log-probability).
  public static func continuationScores(_ scored: [ScoredToken], contextLength: Int) -> ArraySlice<ScoredToken> {
    scored.dropFirst(max(0, contextLength - 1))
  }

  /// Tokenizes text rendered by the chat template, which already holds any BOS it needs.
  public func encodeRendered(_ text: String) -> [Int32] {
    tokenizer.encode(text, addSpecialTokens: false, parseSpecial: true)
  }
}

/// A request the serving layer refuses before scheduling; maps to INVALID_ARGUMENT.
public struct InvalidRequest: Error, CustomStringConvertible, Equatable {
  public var description: String
  public init(_ description: String) { self.description = description }
}
