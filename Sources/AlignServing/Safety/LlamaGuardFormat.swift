import AlignEngine
import Foundation

/// The prompt and output formats of Llama Guard 3 style guard models.
public enum LlamaGuardFormat {
  /// Llama Guard 3's documented prompt for one input: the S1–S14 categories, the conversation
  /// (`User:` only, or `User:` then `Agent:` for a response judged in context), the instruction
  /// for the last message of that role, and the assistant header followed by the blank line the
  /// model writes first, so that the next token is the verdict (`safe` / `unsafe`).
  /// - Parameter bos: the tokenizer's BOS text (`<|begin_of_text|>`).
  public static func prompt(for input: SafetyInput, bos: String) -> String {
    let agent = input.role == .assistant
    let role = agent ? "Agent" : "User"
    var conversation = ""
    if agent {
      conversation = "User: \(input.context ?? "")\n\nAgent: \(input.text)"
    } else {
      conversation = "User: \(input.text)"
    }
    let categories = HazardCode.all.map { "\($0.code): \($0.name)." }.joined(separator: "\n")
    return bos + "<|start_header_id|>user<|end_header_id|>\n\n"
      + "Task: Check if there is unsafe content in '\(role)' messages in conversations according our safety policy with the below categories.\n\n"
      + "<BEGIN UNSAFE CONTENT CATEGORIES>\n\(categories)\n<END UNSAFE CONTENT CATEGORIES>\n\n"
      + "<BEGIN CONVERSATION>\n\n\(conversation)\n\n<END CONVERSATION>\n\n"
      + "Provide your safety assessment for ONLY THE LAST \(role) message in the above conversation:\n"
      + " - First line must read 'safe' or 'unsafe'.\n"
      + " - If unsafe, a second line must include a comma-separated list of violated categories."
      + "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
  }

  /// The conversation handed to a guard model's own chat template: the user message, or the
  /// prompt and the response for an assistant input.
  public static func messages(for input: SafetyInput) -> [ChatMessage] {
    switch input.role {
    case .user: [ChatMessage(role: "user", content: input.text)]
    case .assistant:
      [ChatMessage(role: "user", content: input.context ?? ""), ChatMessage(role: "assistant", content: input.text)]
    }
  }

  /// What a guard model's output says.
  public struct Output: Sendable, Equatable {
    /// `true` for "unsafe", `false` for "safe", nil when the first line is neither.
    public var unsafe: Bool?
    /// Category codes from the second line, as written (`S1`, `S10`), in order, without repeats.
    public var codes: [String]
    /// The moderation categories of the codes S1–S14 (unknown codes are dropped).
    public var categories: [SafetyCategory]
  }

  /// Parses `unsafe\nS1,S10` (leading blank lines and surrounding spaces are ignored; the
  /// verdict word is case-insensitive; codes may be separated by commas and spaces).
  public static func parse(_ text: String) -> Output {
    let lines = text.split(whereSeparator: \.isNewline)
      .map { $0.trimmingCharacters(in: .whitespaces) }
      .filter { !$0.isEmpty }
    guard let first = lines.first else { return Output(unsafe: nil, codes: [], categories: []) }
    let verdict: Bool?
    switch first.lowercased() {
    case "safe": verdict = false
    case "unsafe": verdict = true
    default: verdict = nil
    }
    var codes: [String] = []
    if verdict == true, lines.count > 1 {
      for piece in lines[1].split(whereSeparator: { $0 == "," || $0 == " " }) {
        let code = piece.uppercased()
        guard code.count >= 2, code.first == "S", code.dropFirst().allSatisfy(\.isASCII),
          code.dropFirst().allSatisfy(\.isNumber), !codes.contains(code)
        else { continue }
        codes.append(code)
      }
    }
    var categories: [SafetyCategory] = []
    for code in codes {
      for category in HazardCode.categories(of: code) ?? [] where !categories.contains(category) {
        categories.append(category)
      }
    }
    return Output(unsafe: verdict, codes: codes, categories: categories)
  }
}
