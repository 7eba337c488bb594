extension Tokenizer {
  /// The model's chat template (from tokenizer_config.json or GGUF), parsed; nil when the model has none.
  /// - Throws: `ChatTemplateError` when the template does not parse.
  public func chatTemplate() throws(ChatTemplateError) -> ChatTemplate? {
    guard let source = definition.chatTemplate else { return nil }
    return try ChatTemplate(source: source)
  }

  /// Renders a conversation with the model's chat template, passing the model's BOS/EOS texts.
  /// - Returns: nil when the model has no chat template.
  /// - Throws: `ChatTemplateError`.
  public func renderChat(_ messages: [ChatMessage], addGenerationPrompt: Bool = true, variables: [String: TemplateValue] = [:]) throws(ChatTemplateError) -> String? {
    guard let template = try chatTemplate() else { return nil }
    return try template.render(
      messages: messages, addGenerationPrompt: addGenerationPrompt,
      bosToken: definition.bosTokenID.flatMap { tokenText($0) } ?? "",
      eosToken: definition.eosTokenID.flatMap { tokenText($0) } ?? "", variables: variables)
  }

  /// Renders a conversation with the model's chat template and encodes it as transformers'
  /// `apply_chat_template(tokenize=True)` does: special tokens in the rendered text are parsed, and no
  /// BOS/EOS is added beyond what the template writes.
  /// - Returns: nil when the model has no chat template.
  /// - Throws: `ChatTemplateError`.
  public func encodeChat(_ messages: [ChatMessage], addGenerationPrompt: Bool = true, variables: [String: TemplateValue] = [:]) throws(ChatTemplateError) -> [TokenID]? {
    guard let text = try renderChat(messages, addGenerationPrompt: addGenerationPrompt, variables: variables) else { return nil }
    return encode(text, addSpecialTokens: false, parseSpecial: true)
  }
}
