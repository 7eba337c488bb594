import AlignEngine
import AlignShared
import Foundation

/// A reward model shipped as a Hugging Face `LlamaForSequenceClassification`,
/// `Qwen2ForSequenceClassification` or `Qwen3ForSequenceClassification` folder with one label
/// (Skywork-Reward-V2 and most open reward models have this shape).
///
/// Inputs are tokenized as a transformers user would: a conversation (plus the response as the
/// assistant's turn) through the model's own chat template, encoded like
/// `apply_chat_template(tokenize=True)` (special tokens parsed, nothing added); a raw prompt as the text
/// `prompt + response` with the tokenizer's usual special tokens. The reward is the score logit at
/// the rightmost token that is not the padding token, as transformers pools.
public final class SequenceClassificationRewardModel: RewardBackend {
  /// "<folder name>@<first 12 hex digits of the SHA-256 over config and weights>", unless given.
  public let version: String
  /// Always ``RewardBackendKind/sequenceClassification``.
  public var kind: RewardBackendKind { .sequenceClassification }
  /// The loaded checkpoint.
  public let model: TransformerModel
  /// The checkpoint's tokenizer (tokenizer.json + tokenizer_config.json).
  public let tokenizer: Tokenizer
  private let template: ChatTemplate?
  private let bosText: String
  private let eosText: String
  private let runner: LastTokenRunner

  /// Loads a reward model folder (config.json, safetensors, tokenizer.json, tokenizer_config.json).
  /// - Parameters:
  ///   - directory: the Hugging Face folder.
  ///   - version: the version to stamp; nil derives one from the folder's files.
  ///   - settings: runtime settings for the model's own engine.
  /// - Throws: ``ModelLoadError`` naming the folder and the problem (not a one-label
  ///   sequence-classification model, missing tokenizer, unparsable chat template, bad weights).
  public init(directory: String, version: String? = nil, settings: EngineSettings = EngineSettings()) throws {
    do {
      let model = try TransformerModel(huggingFaceDirectory: directory)
      guard case .sequenceClassification(let labels) = model.hyperparameters.head else {
        throw ModelLoadError("\(directory): not a *ForSequenceClassification checkpoint (it has a language-model head)")
      }
      guard labels == 1 else {
        throw ModelLoadError("\(directory): a reward model has exactly one label; this one has \(labels)")
      }
      let description = try TokenizerDescription(huggingFaceFolder: URL(fileURLWithPath: directory))
      let tokenizer = try Tokenizer(description)
      guard tokenizer.vocabularySize <= model.hyperparameters.vocabSize else {
        throw ModelLoadError(
          "\(directory): the tokenizer has \(tokenizer.vocabularySize) tokens but the model only \(model.hyperparameters.vocabSize)")
      }
      self.model = model
      self.tokenizer = tokenizer
      self.template = try description.chatTemplate.map { try ChatTemplate(source: $0) }
      self.bosText = description.bosTokenID.flatMap { tokenizer.tokenText($0) } ?? ""
      self.eosText = description.eosTokenID.flatMap { tokenizer.tokenText($0) } ?? ""
      self.runner = LastTokenRunner(engine: try Engine(model: model, settings: settings))
      self.version = try version ?? Self.defaultVersion(directory: directory)
    } catch let error as ModelLoadError {
      throw error
    } catch {
      throw ModelLoadError("\(directory): \(error)")
    }
  }

  /// The tokens the model reads for `input` (before dropping trailing padding tokens).
  /// - Throws: ``InvalidRequest`` when a conversation is given but the model has no chat template, or
  ///   the template rejects it.
  public func tokens(for input: RewardInput) throws -> [Int32] {
    switch input.context {
    case .prompt(let prompt):
      return tokenizer.encode(prompt + input.response, addSpecialTokens: true, parseSpecial: true)
    case .messages:
      guard let template else {
        throw InvalidRequest("the reward model has no chat template; send a raw prompt instead of messages")
      }
      let text: String
      do {
        text = try template.render(
          messages: input.conversation, addGenerationPrompt: false, bosToken: bosText, eosToken: eosText)
      } catch {
        throw InvalidRequest("the reward model's chat template rejected the conversation: \(error)")
      }
      return tokenizer.encode(text, addSpecialTokens: false, parseSpecial: true)
    }
  }

  /// Scores every input in as few forward passes as fit.
  /// - Throws: ``InvalidRequest`` for inputs the model cannot take; `EngineError` otherwise.
  public func rewards(_ inputs: [RewardInput]) throws -> [Double] {
    if inputs.isEmpty { return [] }
    let pad = model.metadata.padTokenID
    let sequences = try inputs.map { input -> [Int32] in
      var t = try tokens(for: input)
      // transformers pools at the rightmost non-padding token (position 0 when all are padding); the
      // model is causal, so dropping the tokens after it leaves that position's output unchanged.
      if let pad {
        while t.count > 1, t.last == pad { t.removeLast() }
      }
      return t
    }
    return try runner.run(sequences, logits: .last, wantHidden: false).map { Double($0.logits[0]) }
  }

  /// The folder's version (``ModelFingerprint``: the same as for any role that loads it).
  static func defaultVersion(directory: String) throws -> String {
    do {
      return try ModelFingerprint(path: directory).version
    } catch {
      throw ModelLoadError("\(error)")
    }
  }
}
