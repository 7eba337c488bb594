import AlignEngine

/// The cheap classifiers the trained judges stack on their embeddings: alt-profanity-check
/// (``LexicalClassifier``), tox-block (``ToxBlockClassifier``) and hatesonar
/// (``HateSonarClassifier``). A judge reads the ones its ``EmbeddingHead`` names as feature blocks.
public struct PortedClassifiers: Sendable {
  public var lexical: LexicalClassifier?
  public var toxBlock: ToxBlockClassifier?
  public var hateSonar: HateSonarClassifier?

  /// One of the three, whatever text it is applied to.
  enum Kind: CaseIterable { case lexical, toxBlock, hateSonar }

  public init(lexical: LexicalClassifier? = nil, toxBlock: ToxBlockClassifier? = nil, hateSonar: HateSonarClassifier? = nil) {
    self.lexical = lexical
    self.toxBlock = toxBlock
    self.hateSonar = hateSonar
  }

  /// The classifier and the text a feature block reads, or nil for an embedding block.
  static func source(of block: EmbeddingHead.FeatureBlock) -> (kind: Kind, text: Side)? {
    switch block {
    case .lexical: (.lexical, .text)
    case .toxBlock: (.toxBlock, .text)
    case .hateSonar: (.hateSonar, .text)
    case .lexicalOfResponse: (.lexical, .response)
    case .toxBlockOfResponse: (.toxBlock, .response)
    case .hateSonarOfResponse: (.hateSonar, .response)
    case .lexicalOfPrompt: (.lexical, .prompt)
    case .toxBlockOfPrompt: (.toxBlock, .prompt)
    case .hateSonarOfPrompt: (.hateSonar, .prompt)
    case .prompt, .response, .product, .absoluteDifference, .cosine, .joint, .text: nil
    }
  }

  /// Which text a classifier block reads.
  enum Side { case text, prompt, response }

  private func has(_ kind: Kind) -> Bool {
    switch kind {
    case .lexical: lexical != nil
    case .toxBlock: toxBlock != nil
    case .hateSonar: hateSonar != nil
    }
  }

  /// Throws when `head` reads a classifier that is not loaded.
  func check(_ head: EmbeddingHead, directory: String) throws {
    let names: [Kind: String] = [.lexical: "the lexical classifier (alt-profanity-check)", .toxBlock: "tox-block", .hateSonar: "hatesonar"]
    for block in head.features {
      if let (kind, _) = Self.source(of: block), !has(kind) {
        throw ModelLoadError("\(directory) reads \(names[kind]!)'s scores, which is not loaded")
      }
    }
  }

  /// Raw scores (tox-block's rescaled values unclamped, as the judges were trained on) of each text.
  func scores(_ kind: Kind, _ texts: [String]) -> [[Float]] {
    switch kind {
    case .lexical: (lexical?.probabilities(texts) ?? []).map { [Float($0)] }
    case .toxBlock: toxBlock?.scores(texts) ?? []
    case .hateSonar: (hateSonar?.probabilities(texts) ?? []).map { $0.map(Float.init) }
    }
  }

  /// The classifier blocks `head` reads, per row: `texts(side)` gives each row's text for a side.
  func blocks(for head: EmbeddingHead, rows: Int, texts: (Side) -> [String]) -> [[EmbeddingHead.FeatureBlock: [Float]]] {
    var out = [[EmbeddingHead.FeatureBlock: [Float]]](repeating: [:], count: rows)
    for block in head.features {
      guard let (kind, side) = Self.source(of: block) else { continue }
      for (i, values) in scores(kind, texts(side)).enumerated() { out[i][block] = values }
    }
    return out
  }
}
