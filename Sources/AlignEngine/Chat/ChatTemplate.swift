/// One message of a conversation.
public struct ChatMessage: Sendable, Codable, Equatable {
  /// `system`, `user`, `assistant` (or `tool`, ...).
  public var role: String
  /// The message text.
  public var content: String

  /// Creates a message.
  public init(role: String, content: String) {
    self.role = role
    self.content = content
  }
}

/// Why a chat template could not be parsed or rendered.
public enum ChatTemplateError: Error, Equatable, Sendable, CustomStringConvertible {
  /// The template is not valid Jinja (line of the tag).
  case syntax(line: Int, message: String)
  /// The template uses Jinja this interpreter does not implement.
  case unsupported(line: Int, feature: String)
  /// The template called `raise_exception(message)` (e.g. roles do not alternate).
  case raised(String)
  /// An error while rendering (type error, undefined variable read, ...).
  case runtime(line: Int, message: String)

  public var description: String {
    switch self {
    case .syntax(let line, let message): return "chat template syntax error (line \(line)): \(message)"
    case .unsupported(let line, let feature): return "chat template uses unsupported Jinja (line \(line)): \(feature)"
    case .raised(let message): return "chat template raised: \(message)"
    case .runtime(let line, let message): return "chat template error (line \(line)): \(message)"
    }
  }
}

/// A Jinja chat template as shipped in tokenizer_config.json or GGUF `tokenizer.chat_template`,
/// rendered the way transformers' `apply_chat_template(tokenize=False)` does: `trim_blocks` and
/// `lstrip_blocks` on, `raise_exception`, `namespace`, `tojson`, loop controls, `tools` and `documents`
/// defined as none unless given.
public struct ChatTemplate: Sendable {
  /// The template source.
  public let source: String
  private let nodes: [JinjaNode]

  /// Parses a template.
  /// - Throws: `ChatTemplateError.syntax` or `.unsupported`.
  public init(source: String) throws(ChatTemplateError) {
    self.source = source
    var lexer = JinjaLexer(source)
    var parser = JinjaParser(try lexer.lex())
    nodes = try parser.parseTemplate()
  }

  /// Renders a conversation.
  /// - Parameters:
  ///   - messages: the conversation.
  ///   - addGenerationPrompt: append the header of the assistant's next turn.
  ///   - bosToken: the text of the BOS token (templates such as Llama 3's print it).
  ///   - eosToken: the text of the EOS token.
  ///   - variables: extra template variables (e.g. `tools`, `date_string`), overriding the defaults.
  /// - Throws: `ChatTemplateError.raised` when the template rejects the conversation, `.runtime` on errors.
  public func render(
    messages: [ChatMessage], addGenerationPrompt: Bool, bosToken: String = "", eosToken: String = "",
    variables: [String: TemplateValue] = [:]
  ) throws(ChatTemplateError) -> String {
    let list = TemplateValue.array(messages.map { .object([("role", .string($0.role)), ("content", .string($0.content))]) })
    return try render(messages: list, addGenerationPrompt: addGenerationPrompt, bosToken: bosToken, eosToken: eosToken, variables: variables)
  }

  /// Renders a conversation given as JSON-like values (messages with tool calls, multi-part content, ...).
  /// - Throws: `ChatTemplateError`.
  public func render(
    messages: TemplateValue, addGenerationPrompt: Bool, bosToken: String = "", eosToken: String = "",
    variables: [String: TemplateValue] = [:]
  ) throws(ChatTemplateError) -> String {
    var globals: [String: JinjaValue] = [
      "messages": JinjaValue(messages),
      "add_generation_prompt": .bool(addGenerationPrompt),
      "bos_token": .string(bosToken),
      "eos_token": .string(eosToken),
      "tools": .none,
      "documents": .none,
    ]
    for (k, v) in variables { globals[k] = JinjaValue(v) }
    return try JinjaInterpreter(globals: globals).render(nodes)
  }
}
