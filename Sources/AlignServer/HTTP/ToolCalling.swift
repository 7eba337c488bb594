import AlignEngine
import AlignServing
import AlignShared
import Foundation

/// OpenAI tool calling on chat completions (`tools`, `tool_choice`), for any chat template.
///
/// The tools are described to the model in the system message (their JSON schemas inside
/// `<tools></tools>`, and how to answer: a JSON object `{"name", "arguments"}` inside
/// `<tool_call></tool_call>`), the way llama.cpp's generic format does for templates that know no
/// tools. `tool_choice: "required"` or a named function makes the whole completion a call:
/// constrained decoding holds it to the JSON schema `{"name": const, "arguments": <the function's
/// parameters>}` (any of the tools for `required`), so even a small model calls correctly. With
/// `auto` the model decides and the completion's `<tool_call>` spans (or a completion that is one
/// such object) become `tool_calls`. Earlier calls and tool results in `messages` are rendered
/// back the same way (an assistant turn holding its `<tool_call>` spans, a `tool` turn holding the
/// result).
public struct ToolCalling: Sendable {
  public struct Tool: Sendable {
    public var name: String
    public var description: String
    /// The function's parameters as a JSON schema (`{"type": "object"}` when none is given).
    public var parameters: JSONValue
  }

  public enum Choice: Sendable, Equatable {
    case auto
    case required
    case named(String)
  }

  /// One call the model made.
  public struct Call: Sendable, Equatable {
    public var id: String
    public var name: String
    /// The arguments as JSON text (OpenAI sends them as a string).
    public var arguments: String
  }

  public var tools: [Tool]
  public var choice: Choice

  /// `tools` and `tool_choice` of a chat body; nil when it has no tools or `tool_choice` is `none`.
  static func parse(_ body: JSONObject) throws(GatewayError) -> ToolCalling? {
    var tools: [Tool] = []
    switch body["tools"] {
    case nil, .null?: break
    case .array(let list)?:
      for (i, entry) in list.enumerated() {
        guard let object = JSONObject(entry), try object.string("type") ?? "function" == "function",
          let function = try object.object("function"), let name = try function.string("name")
        else {
          throw .invalid("tools[\(i)] must be {\"type\": \"function\", \"function\": {\"name\": ...}}", param: "tools")
        }
        guard !name.isEmpty, name.count <= 64,
          name.unicodeScalars.allSatisfy({ CharacterSet.alphanumerics.contains($0) || $0 == "_" || $0 == "-" })
        else {
          throw .invalid("tools[\(i)].function.name must be 1-64 letters, digits, _ or -", param: "tools")
        }
        guard !tools.contains(where: { $0.name == name }) else {
          throw .invalid("tools[\(i)]: two tools are named \(name)", param: "tools")
        }
        let parameters = function["parameters"] ?? .object([("type", .string("object"))])
        guard case .object = parameters else {
          throw .invalid("tools[\(i)].function.parameters must be a JSON schema object", param: "tools")
        }
        tools.append(Tool(name: name, description: try function.string("description") ?? "", parameters: parameters))
      }
    default: throw .invalid("tools must be a list of functions", param: "tools")
    }
    let badChoice = GatewayError.invalid(
      "tool_choice must be none, auto, required or {\"type\": \"function\", \"function\": {\"name\": ...}}",
      param: "tool_choice")
    let choice: Choice?
    switch body["tool_choice"] {
    case nil, .null?: choice = tools.isEmpty ? nil : .auto
    case .string("none")?: choice = nil
    case .string("auto")?: choice = .auto
    case .string("required")?: choice = .required
    case .object(let fields)?:
      let object = JSONObject(Dictionary(fields, uniquingKeysWith: { a, _ in a }))
      guard let name = try object.object("function")?.string("name") else { throw badChoice }
      guard tools.contains(where: { $0.name == name }) else {
        throw .invalid("tool_choice names \(name), which is not among the tools", param: "tool_choice")
      }
      choice = .named(name)
    default:
      throw badChoice
    }
    guard let choice else { return nil }
    guard !tools.isEmpty else { throw .invalid("tool_choice \(choice) needs tools", param: "tool_choice") }
    return ToolCalling(tools: tools, choice: choice)
  }

  /// What a forced call must look like (required, or a named function); nil for auto.
  public var forcedSchema: JSONValue? {
    func call(_ tool: Tool) -> JSONValue {
      .object([
        ("type", .string("object")),
        ("properties", .object([("name", .object([("const", .string(tool.name))])), ("arguments", tool.parameters)])),
        ("required", .array([.string("name"), .string("arguments")])),
        ("additionalProperties", .bool(false)),
      ])
    }
    switch choice {
    case .auto: return nil
    case .named(let name): return tools.first { $0.name == name }.map(call)
    case .required: return tools.count == 1 ? call(tools[0]) : .object([("anyOf", .array(tools.map(call)))])
    }
  }

  /// The system message's addition describing the tools.
  var instructions: String {
    let list = JSONValue.array(
      tools.map { tool in
        .object([
          ("type", .string("function")),
          (
            "function",
            .object([("name", .string(tool.name)), ("description", .string(tool.description)), ("parameters", tool.parameters)])
          ),
        ])
      })
    return """
      You can call these tools (functions):
      <tools>
      \(list.text)
      </tools>
      To call a tool, answer with a JSON object {"name": <the tool's name>, "arguments": <its arguments>} \
      inside <tool_call></tool_call> tags, one per call. A tool's result comes back in a message from the tool.
      """
  }

  /// The conversation with the tools described in its system message (added first when none).
  func messages(_ messages: [ChatMessage]) -> [ChatMessage] {
    var messages = messages
    if let first = messages.first, first.role == "system" {
      messages[0] = ChatMessage(role: "system", content: first.content + "\n\n" + instructions)
    } else {
      messages.insert(ChatMessage(role: "system", content: instructions), at: 0)
    }
    return messages
  }

  /// An assistant turn's earlier calls as the model writes them.
  static func render(_ calls: [(name: String, arguments: String)]) -> String {
    calls.map { call in
      let arguments = (try? JSONDecoder().decode(JSONValue.self, from: Data(call.arguments.utf8))) ?? .string(call.arguments)
      return "<tool_call>\n" + JSONValue.object([("name", .string(call.name)), ("arguments", arguments)]).text + "\n</tool_call>"
    }.joined(separator: "\n")
  }

  /// The calls in a completion, and the text around them (nil when nothing else was said). A
  /// call names one of the tools and carries an arguments object; anything else stays text.
  func calls(in text: String) -> (content: String?, calls: [Call]) {
    var calls: [Call] = []
    var rest = ""
    var remaining = Substring(text)
    while let open = remaining.range(of: "<tool_call>") {
      rest += remaining[..<open.lowerBound]
      let after = remaining[open.upperBound...]
      guard let close = after.range(of: "</tool_call>") else {
        remaining = remaining[open.lowerBound...]
        break
      }
      if let call = self.call(String(after[..<close.lowerBound])) {
        calls.append(call)
      } else {
        rest += remaining[open.lowerBound..<close.upperBound]
      }
      remaining = after[close.upperBound...]
    }
    rest += remaining
    guard !calls.isEmpty else {
      // A completion that is one call without the tags (every forced completion is).
      if let call = self.call(text) { return (nil, [call]) }
      return (text, [])
    }
    let content = rest.trimmingCharacters(in: .whitespacesAndNewlines)
    return (content.isEmpty ? nil : content, calls)
  }

  private func call(_ json: String) -> Call? {
    guard let value = try? JSONDecoder().decode(JSONValue.self, from: Data(json.trimmingCharacters(in: .whitespacesAndNewlines).utf8)),
      case .object(let fields) = value,
      case .string(let name)? = fields.first(where: { $0.0 == "name" })?.1, tools.contains(where: { $0.name == name })
    else { return nil }
    let arguments = fields.first { $0.0 == "arguments" || $0.0 == "parameters" }?.1 ?? .object([])
    guard case .object = arguments else { return nil }
    return Call(id: "call_" + UUID().uuidString.replacingOccurrences(of: "-", with: "").prefix(24).lowercased(), name: name, arguments: arguments.text)
  }
}
