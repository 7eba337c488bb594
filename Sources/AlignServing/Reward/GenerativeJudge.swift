import AlignEngine
import Foundation

/// The rating prompt a ``GenerativeJudge`` asks the policy.
public struct JudgePrompt: Sendable, Equatable {
  /// Optional system message (nil leaves the chat template's default).
  public var system: String?
  /// The user message; `{question}` and `{response}` are replaced by the input's last user turn (or
  /// prompt) and the response.
  public var instruction: String
  /// Text written after the assistant generation prompt, just before the rating digit.
  public var answerPrefix: String
  /// The rating scale: single-digit ratings, each one token.
  public var scale: ClosedRange<Int>

  /// Creates a value from its fields.
  public init(system: String?, instruction: String, answerPrefix: String, scale: ClosedRange<Int>) {
    self.system = system
    self.instruction = instruction
    self.answerPrefix = answerPrefix
    self.scale = scale
  }

  /// The prompt chosen for SmolLM2-135M-Instruct (Docs/REWARD.md has the comparison).
  public static let standard = JudgePrompt(
    system: nil,
    instruction: """
      Rate the answer to the question on a scale of 1 to 5, where 1 is a bad answer (wrong, rude, \
      off-topic or unhelpful) and 5 is an excellent answer (correct, polite and helpful).

      Question: {question}

      Answer: {response}

      Reply with a single digit from 1 to 5.
      """,
    answerPrefix: "Rating: ",
    scale: 1...5)

  /// The user message for one input.
  func userMessage(question: String, response: String) -> String {
    // One pass over the template, so a question containing "{response}" is not expanded again.
    var out = ""
    var rest = instruction[...]
    while let open = rest.firstIndex(of: "{") {
      out += rest[..<open]
      let tail = rest[open...]
      if tail.hasPrefix("{question}") {
        out += question
        rest = tail.dropFirst("{question}".count)
      } else if tail.hasPrefix("{response}") {
        out += response
        rest = tail.dropFirst("{response}".count)
      } else {
        out += "{"
        rest = tail.dropFirst()
      }
    }
    return out + rest
  }
}

/// The default reward model: the policy asked to rate a response. reward = the expected rating
/// under the next-token distribution restricted to the rating digits (so 1...5 for the standard
/// prompt). A 135M judge is weak; Docs/REWARD.md reports what it gets right.
public final class GenerativeJudge: RewardBackend {
  /// "judge:<policy version>".
  public let version: String
  /// Always ``RewardBackendKind/generativeJudge``.
  public var kind: RewardBackendKind { .generativeJudge }
  /// The rating prompt.
  public let prompt: JudgePrompt
  private let policy: PolicyModel
  private let ratingTokens: [Int32]  // (scale.count) token id of each rating, in scale order
  private let runner: LastTokenRunner

  /// Builds a judge on a loaded policy, with an engine of its own over the policy's weights.
  /// - Parameters:
  ///   - policy: the policy to ask.
  ///   - policyVersion: the policy's version (the judge is stamped "judge:<policyVersion>").
  ///   - prompt: the rating prompt.
  ///   - settings: engine settings; nil reuses the policy engine's.
  /// - Throws: ``ModelLoadError`` when the policy has no chat template or a rating is not one token.
  public init(
    policy: PolicyModel, policyVersion: String, prompt: JudgePrompt = .standard, settings: EngineSettings? = nil
  ) throws {
    guard policy.chatTemplate != nil else {
      throw ModelLoadError("the generative judge needs a policy with a chat template")
    }
    guard prompt.scale.lowerBound >= 0, prompt.scale.upperBound <= 9, prompt.scale.count >= 2 else {
      throw ModelLoadError("the judge's rating scale must be single digits with at least two values, not \(prompt.scale)")
    }
    var ids: [Int32] = []
    for rating in prompt.scale {
      let t = policy.tokenizer.encode(String(rating), addSpecialTokens: false, parseSpecial: false)
      guard t.count == 1 else { throw ModelLoadError("the rating \(rating) is not a single token for this tokenizer") }
      ids.append(t[0])
    }
    self.policy = policy
    self.prompt = prompt
    self.ratingTokens = ids
    self.version = "judge:\(policyVersion)"
    // Every rating prompt starts with the same tokens (chat header, system prompt, instructions up to
    // the question): the tokens two different inputs share. The runner computes them once and keeps
    // their keys and values; an input whose tokens do not start with them simply runs in full.
    let head: [Int32]?
    if let a = try? Self.render(policy, prompt, question: "A", response: "A"),
      let b = try? Self.render(policy, prompt, question: "B", response: "B")
    {
      let ta = policy.encodeRendered(a), tb = policy.encodeRendered(b)
      head = Array(zip(ta, tb).prefix { $0 == $1 }.map(\.0))
    } else {
      head = nil
    }
    self.runner = LastTokenRunner(
      engine: try Engine(model: policy.engine.model, settings: settings ?? policy.engine.settings), sharedHead: head)
  }

  /// The rendered rating prompt for `input` (ends with the answer prefix).
  /// - Throws: ``InvalidRequest`` when the chat template rejects the conversation.
  public func ratingPrompt(for input: RewardInput) throws -> String {
    try Self.render(policy, prompt, question: input.question, response: input.response)
  }

  private static func render(_ policy: PolicyModel, _ prompt: JudgePrompt, question: String, response: String) throws -> String {
    var messages: [ChatMessage] = []
    if let system = prompt.system { messages.append(ChatMessage(role: "system", content: system)) }
    messages.append(ChatMessage(role: "user", content: prompt.userMessage(question: question, response: response)))
    return try policy.renderChat(messages, addGenerationPrompt: true) + prompt.answerPrefix
  }

  /// The probability of each rating (restricted to the rating tokens and renormalized), per input.
  /// - Throws: ``InvalidRequest`` for inputs the policy cannot take; `EngineError` otherwise.
  public func ratingDistributions(_ inputs: [RewardInput]) throws -> [[Double]] {
    if inputs.isEmpty { return [] }
    let sequences = try inputs.map { policy.encodeRendered(try ratingPrompt(for: $0)) }
    return try runner.run(sequences, logits: .last, wantHidden: false).map { output in
      let logits = ratingTokens.map { Double(output.logits[Int($0)]) }
      let top = logits.max() ?? 0
      let weights = logits.map { exp($0 - top) }
      let sum = weights.reduce(0, +)
      return weights.map { $0 / sum }
    }
  }

  /// The expected rating of every input.
  /// - Throws: ``InvalidRequest`` for inputs the policy cannot take; `EngineError` otherwise.
  public func rewards(_ inputs: [RewardInput]) throws -> [Double] {
    let ratings = prompt.scale.map(Double.init)
    return try ratingDistributions(inputs).map { p in zip(p, ratings).reduce(0) { $0 + $1.0 * $1.1 } }
  }
}
