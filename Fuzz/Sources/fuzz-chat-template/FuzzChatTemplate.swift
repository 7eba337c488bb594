// libFuzzer target: the Jinja chat-template renderer (lexer, parser, interpreter) and the JSON reader
// for structured messages. Input byte 0: bit 7 = add_generation_prompt (and the `tools` and
// `date_string` variables), the low 7 bits modulo 3 pick the mode:
//   0: the rest is a template source, rendered with a fixed conversation,
//   1: byte 1 picks one of the templates shipped in Tests/Fixtures/chat-templates, the rest is the
//      messages as JSON (`TemplateValue(json:)`),
//   2: the rest is a template source, a NUL, and the messages as JSON.
// Parsing or rendering may fail with a `ChatTemplateError`; it must never trap, hang or blow up memory.
import AlignEngine
import FuzzSupport

let shippedTemplates: [ChatTemplate] = {
  let names = [
    "smollm2", "llama2-chat", "llama3-instruct", "llama3.2-instruct", "qwen2-instruct", "features",
  ]
  return names.map { name in
    let path = Repository.path("Tests/Fixtures/chat-templates/\(name).jinja")
    guard let bytes = Repository.read(path) else { fatalError("fuzz-chat-template: cannot read \(path)") }
    do {
      return try ChatTemplate(source: String(decoding: bytes, as: UTF8.self))
    } catch {
      fatalError("fuzz-chat-template: \(path) does not parse: \(error)")
    }
  }
}()

let conversation = [
  ChatMessage(role: "system", content: "You are a helpful assistant"),
  ChatMessage(role: "user", content: "Hello"),
  ChatMessage(role: "assistant", content: "Hi there"),
  ChatMessage(role: "user", content: "Who are you?"),
]

let variables: [String: TemplateValue] = [
  "tools": [["type": "function", "function": ["name": "get_weather", "parameters": ["type": "object"]]]],
  "date_string": "29 Nov 2026",
]

func render(_ template: ChatTemplate, _ messages: TemplateValue, generationPrompt: Bool) {
  _ = try? template.render(
    messages: messages, addGenerationPrompt: generationPrompt, bosToken: "<s>", eosToken: "</s>",
    variables: generationPrompt ? variables : [:])
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzChatTemplate(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
  guard let data, size >= 1 else { return 0 }
  let mode = (data[0] & 0x7F) % 3
  let generationPrompt = data[0] & 0x80 != 0
  let rest = UnsafeBufferPointer(start: data + 1, count: size - 1)
  switch mode {
  case 0:
    guard let template = try? ChatTemplate(source: String(decoding: rest, as: UTF8.self)) else { return 0 }
    _ = try? template.render(
      messages: conversation, addGenerationPrompt: generationPrompt, bosToken: "<s>", eosToken: "</s>",
      variables: generationPrompt ? variables : [:])
  case 1:
    guard let pick = rest.first else { return 0 }
    let template = shippedTemplates[Int(pick) % shippedTemplates.count]
    guard let messages = try? TemplateValue(json: String(decoding: rest.dropFirst(), as: UTF8.self)) else { return 0 }
    render(template, messages, generationPrompt: generationPrompt)
  default:
    let split = rest.firstIndex(of: 0) ?? rest.endIndex
    guard let template = try? ChatTemplate(source: String(decoding: rest[..<split], as: UTF8.self)) else { return 0 }
    let json = split < rest.endIndex ? String(decoding: rest[(split + 1)...], as: UTF8.self) : "[]"
    guard let messages = try? TemplateValue(json: json) else { return 0 }
    render(template, messages, generationPrompt: generationPrompt)
  }
  return 0
}

/// Entry point under SwiftPM's renamed `main` (see `runLibFuzzer`).
@_cdecl("fuzz_chat_template_main")
public func fuzzChatTemplateMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
  runLibFuzzer(argc, argv, { fuzzChatTemplate($0, $1) })
}
