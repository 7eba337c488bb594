import AlignEngine
import AlignShared
import Foundation

/// A base model used as a frozen feature extractor: its final normed hidden state at an input's last
/// token is what a reward head reads and what ``RewardHeadTrainer`` fits on.
///
/// It runs on its own `Engine` (activation buffers) over a shared, immutable `TransformerModel`, so
/// feature extraction never waits behind the policy's generation loop for a buffer lock.
public final class RewardBaseModel: Sendable {
  /// A human-readable name (the GGUF file name without extension).
  public let name: String
  /// Lower-case hex SHA-256 of the base model file.
  public let sha256: String
  /// The loaded model (shared with the policy when built from one).
  public let model: TransformerModel
  /// Its tokenizer.
  public let tokenizer: Tokenizer
  private let template: ChatTemplate?
  private let bosText: String
  private let eosText: String
  let runner: LastTokenRunner

  /// Width of the feature vector.
  public var hiddenSize: Int { model.hyperparameters.hiddenSize }

  /// Shares a loaded policy's weights, tokenizer and chat template, with an engine of its own.
  /// - Parameters:
  ///   - policy: the loaded policy.
  ///   - name: the base model's name for manifests.
  ///   - sha256: the SHA-256 of the policy's file (``PolicySnapshot/sha256``).
  ///   - settings: engine settings; nil reuses the policy engine's.
  /// - Throws: `EngineError` for invalid settings.
  public init(policy: PolicyModel, name: String, sha256: String, settings: EngineSettings? = nil) throws {
    self.name = name
    self.sha256 = sha256.lowercased()
    self.model = policy.engine.model
    self.tokenizer = policy.tokenizer
    self.template = policy.chatTemplate
    self.bosText = policy.bosText
    self.eosText = policy.eosText
    self.runner = LastTokenRunner(engine: try Engine(model: model, settings: settings ?? policy.engine.settings))
  }

  /// Loads a GGUF base model and hashes the file (``ModelFingerprint``).
  /// - Parameters:
  ///   - sha256: the file's SHA-256 when already known (skips hashing; trusted as given).
  /// - Throws: ``ModelLoadError`` naming the file and the problem.
  public convenience init(ggufPath path: String, sha256: String? = nil, settings: EngineSettings = EngineSettings()) throws {
    let name = ModelFingerprint.name(path: path)
    let digest: String
    do {
      digest = try sha256 ?? ModelFingerprint(path: path).sha256
    } catch {
      throw ModelLoadError("\(error)")
    }
    let policy = try PolicyModel(
      ggufPath: path, version: ModelFingerprint.version(name: name, sha256: digest), settings: settings)
    try self.init(policy: policy, name: name, sha256: digest, settings: settings)
  }

  /// The tokens the base model reads for `input` under `format`.
  /// - Throws: ``InvalidRequest`` when the model has no chat template for a conversation, or the
  ///   template rejects it.
  public func tokens(for input: RewardInput, format: RewardHeadInputFormat) throws -> [Int32] {
    if case .prompt(let prompt) = input.context, format == .concatenate {
      return tokenizer.encode(prompt + input.response, addSpecialTokens: true, parseSpecial: true)
    }
    guard let template else {
      throw InvalidRequest("the base model has no chat template; this reward head needs one")
    }
    let text: String
    do {
      text = try template.render(
        messages: input.conversation, addGenerationPrompt: false, bosToken: bosText, eosToken: eosText)
    } catch {
      throw InvalidRequest("the base model's chat template rejected the conversation: \(error)")
    }
    return tokenizer.encode(text, addSpecialTokens: false, parseSpecial: true)
  }

  /// The feature vector (final normed hidden state at the last token) of every input, computed in as
  /// few batched forward passes as fit.
  /// - Throws: ``InvalidRequest`` for inputs the model cannot take; `EngineError` otherwise.
  public func features(_ inputs: [RewardInput], format: RewardHeadInputFormat) throws -> [[Float]] {
    if inputs.isEmpty { return [] }
    let sequences = try inputs.map { try tokens(for: $0, format: format) }
    return try runner.run(sequences, logits: .none, wantHidden: true).map { output in
      guard let h = output.hidden else { throw EngineError.invalidArgument("the engine returned no hidden state") }
      return h
    }
  }
}

/// The reward-head backend: a ``RewardHeadCheckpoint`` applied to a ``RewardBaseModel``'s features.
public final class RewardHeadModel: RewardBackend {
  /// The folder's ``ModelFingerprint`` version unless given.
  public let version: String
  /// Always ``RewardBackendKind/rewardHead``.
  public var kind: RewardBackendKind { .rewardHead }
  /// The head.
  public let checkpoint: RewardHeadCheckpoint
  /// The model features come from.
  public let base: RewardBaseModel

  /// Pairs a head with its base model after checking they belong together.
  /// - Throws: ``RewardHeadError/baseModelMismatch(expected:found:)`` when the base model's SHA-256
  ///   differs from the manifest's, ``RewardHeadError/hiddenSizeMismatch(head:baseModel:)`` when the
  ///   widths differ.
  public init(checkpoint: RewardHeadCheckpoint, base: RewardBaseModel, version: String) throws {
    guard checkpoint.manifest.baseModel.sha256 == base.sha256 else {
      throw RewardHeadError.baseModelMismatch(expected: checkpoint.manifest.baseModel.sha256, found: base.sha256)
    }
    guard checkpoint.manifest.hiddenSize == base.hiddenSize else {
      throw RewardHeadError.hiddenSizeMismatch(head: checkpoint.manifest.hiddenSize, baseModel: base.hiddenSize)
    }
    self.checkpoint = checkpoint
    self.base = base
    self.version = version
  }

  /// Loads a checkpoint folder and pairs it with `base`.
  /// - Parameter version: the version to stamp; nil derives one from the folder.
  /// - Throws: ``RewardHeadError`` (invalid checkpoint, wrong base model).
  public convenience init(directory: String, base: RewardBaseModel, version: String? = nil) throws {
    let checkpoint = try RewardHeadCheckpoint(directory: directory)
    let derived: String
    do {
      derived = try version ?? ModelFingerprint(path: directory).version
    } catch {
      throw ModelLoadError("\(error)")
    }
    try self.init(checkpoint: checkpoint, base: base, version: derived)
  }

  /// weight · feature + bias for every input.
  /// - Throws: ``InvalidRequest`` for inputs the base model cannot take; `EngineError` otherwise.
  public func rewards(_ inputs: [RewardInput]) throws -> [Double] {
    try base.features(inputs, format: checkpoint.manifest.input).map { checkpoint.reward(feature: $0) }
  }
}
