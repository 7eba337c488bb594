import AlignEngine
import AlignTestSupport
import Foundation
import Testing

/// The committed conversations and transformers' renderings of them.
enum ChatFixtures {
  static let folder = TokenizerFixtures.root.appendingPathComponent("Tests/Fixtures/chat-templates")

  struct Conversation: Decodable {
    var name: String
    var messages: [ChatMessage]
  }

  struct Case: Decodable, CustomTestStringConvertible {
    var template: String
    var conversation: String
    var addGenerationPrompt: Bool
    var bosToken: String
    var eosToken: String
    var output: String?
    var error: String?
    /// The conversation is in tool-conversations.json (messages with tool calls, plus tool schemas).
    var toolConversation: Bool?
    /// Passed as the `date_string` variable.
    var dateString: String?
    var testDescription: String { "\(template) / \(conversation) / generation prompt \(addGenerationPrompt)" }
  }

  static func load<T: Decodable>(_ file: String, as type: T.Type) -> T? {
    guard let data = try? Data(contentsOf: folder.appendingPathComponent(file)) else { return nil }
    return try? JSONDecoder().decode(T.self, from: data)
  }

  static let cases: [Case] = load("expected.json", as: [Case].self) ?? []
  static let conversations: [String: [ChatMessage]] = Dictionary(
    uniqueKeysWithValues: (load("conversations.json", as: [Conversation].self) ?? []).map { ($0.name, $0.messages) })

  /// tool-conversations.json, read with key order kept (it shows in `tojson`).
  static func toolConversation(_ name: String) throws -> TemplateValue? {
    let text = try String(contentsOf: folder.appendingPathComponent("tool-conversations.json"), encoding: .utf8)
    return try TemplateValue(json: text).arrayValue?.first { $0["name"]?.stringValue == name }
  }

  static func template(_ name: String) throws -> ChatTemplate {
    try ChatTemplate(source: String(contentsOf: folder.appendingPathComponent("\(name).jinja"), encoding: .utf8))
  }
}

@Suite("Chat templates render as transformers' apply_chat_template")
struct ChatTemplateTests {
  @Test func fixturesArePresent() {
    #expect(ChatFixtures.cases.count >= 100)
    #expect(ChatFixtures.conversations.count >= 8)
    #expect(
      Set(ChatFixtures.cases.map(\.template)).isSuperset(of: [
        "smollm2", "qwen2-instruct", "llama3-instruct", "llama2-chat", "llama3.2-instruct", "features",
      ]))
  }

  @Test(arguments: ChatFixtures.cases)
  func rendersLikeTransformers(_ c: ChatFixtures.Case) throws {
    let template = try ChatFixtures.template(c.template)
    var variables: [String: TemplateValue] = [:]
    if let date = c.dateString { variables["date_string"] = .string(date) }
    let messages: TemplateValue
    if c.toolConversation == true {
      let conversation = try #require(try ChatFixtures.toolConversation(c.conversation))
      messages = try #require(conversation["messages"])
      variables["tools"] = conversation["tools"] ?? .null
      if case .object(let extra)? = conversation["variables"] { for (k, v) in extra { variables[k] = v } }
    } else {
      let plain = try #require(ChatFixtures.conversations[c.conversation])
      messages = .array(plain.map { .object([("role", .string($0.role)), ("content", .string($0.content))]) })
    }
    let render = {
      try template.render(
        messages: messages, addGenerationPrompt: c.addGenerationPrompt, bosToken: c.bosToken, eosToken: c.eosToken,
        variables: variables)
    }
    if let expected = c.output {
      #expect(try render() == expected)
    } else {
      let message = try #require(c.error)
      #expect(throws: ChatTemplateError.raised(message)) { try render() }
    }
  }

  /// The `[ChatMessage]` entry point renders like the JSON one.
  @Test func chatMessagesRenderLikeJSONMessages() throws {
    let template = try ChatFixtures.template("llama2-chat")
    let messages = try #require(ChatFixtures.conversations["system-multi-turn"])
    let expected = try #require(
      ChatFixtures.cases.first { $0.template == "llama2-chat" && $0.conversation == "system-multi-turn" }?.output)
    #expect(try template.render(messages: messages, addGenerationPrompt: false, bosToken: "<s>", eosToken: "</s>") == expected)
  }

  @Test func jsonKeepsKeyOrder() throws {
    let value = try TemplateValue(json: #"{"b": 1, "a": [true, null, 2.5, "\u00e9\ud83d\ude00"], "c": {}}"#)
    #expect(value == .object([("b", 1), ("a", [true, nil, .double(2.5), "é😀"]), ("c", .object([]))]))
    #expect(throws: TemplateValueJSONError.self) { try TemplateValue(json: #"{"a": }"#) }
  }

  @Test(.enabled(if: TestModels.defaultPolicyPresent, Comment(rawValue: TestModels.defaultPolicyMissing)))
  func smolLM2TemplateComesFromTheGGUF() throws {
    let tokenizer = try Tokenizer(TokenizerDescription(gguf: try GGUFFile(path: TokenizerFixtures.smolLM2.path)))
    let committed = try String(contentsOf: ChatFixtures.folder.appendingPathComponent("smollm2.jinja"), encoding: .utf8)
    #expect(tokenizer.definition.chatTemplate == committed)
    // The tokenizer-level helpers pass the model's BOS/EOS texts and parse the specials of the rendering.
    let messages = try #require(ChatFixtures.conversations["no-system"])
    let expected = try #require(
      ChatFixtures.cases.first { $0.template == "smollm2" && $0.conversation == "no-system" && $0.addGenerationPrompt }?.output)
    #expect(try tokenizer.renderChat(messages) == expected)
    let ids = try #require(try tokenizer.encodeChat(messages))
    #expect(ids.first == 1)  // <|im_start|>
    #expect(tokenizer.decode(ids) == expected)
  }

  @Test func unsupportedSyntaxIsATypedError() throws {
    #expect(throws: ChatTemplateError.unsupported(line: 1, feature: "{% include %}")) {
      try ChatTemplate(source: "{% include 'x.jinja' %}")
    }
    #expect(throws: ChatTemplateError.unsupported(line: 2, feature: "filter 'wordwrap'")) {
      try ChatTemplate(source: "a\n{{ 'x' | wordwrap }}").render(messages: [ChatMessage](), addGenerationPrompt: false)
    }
    #expect(throws: ChatTemplateError.self) { try ChatTemplate(source: "{% for m in messages %}") }
    #expect(throws: ChatTemplateError.self) { try ChatTemplate(source: "{{ 'unterminated }}") }
    #expect(throws: ChatTemplateError.self) {
      try ChatTemplate(source: "{{ missing.attribute }}").render(messages: [ChatMessage](), addGenerationPrompt: false)
    }
    #expect(throws: ChatTemplateError.self) {
      try ChatTemplate(source: "{% macro m() %}{{ m() }}{% endmacro %}{{ m() }}").render(messages: [ChatMessage](), addGenerationPrompt: false)
    }
  }
}
