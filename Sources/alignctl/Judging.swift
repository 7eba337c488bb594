import AlignAPI
import ArgumentParser
import Foundation
import GRPCCore

/// `alignctl score`: rewards of one or more responses to a prompt.
struct Score: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Score responses to a prompt with the server's reward model.",
    discussion: "With two responses, also prints P(first ≻ second) = σ(r1 − r2).")
  @OptionGroup var remote: RemoteOptions
  @Option(help: "The prompt (the user's turn).") var prompt: String
  @Option(help: "A response to score (repeat for several).") var response: [String]
  @Flag(help: "Send the prompt as a chat message (rendered with the reward model's template) rather than raw text.")
  var chat = false

  func validate() throws {
    guard !response.isEmpty else { throw ValidationError("give at least one --response") }
  }

  func run() async throws {
    let items: [Alignd_V1_ScoreItem] = response.map { text in
      .with {
        if chat { $0.messages = [.with { $0.role = "user"; $0.content = prompt }] } else { $0.prompt = prompt }
        $0.response = text
      }
    }
    let answer = try await withServer(remote) { client, metadata in
      try await Alignd_V1_Inference.Client(wrapping: client).score(.with { $0.items = items }, metadata: metadata)
    }
    let preference = answer.rewards.count == 2
      ? 1 / (1 + exp(-(answer.rewards[0] - answer.rewards[1]))) : nil
    if remote.json {
      var object: [String: Any] = ["rewards": answer.rewards, "reward_version": answer.versions.reward, "response_id": answer.responseID]
      if let preference { object["p_first_preferred"] = preference }
      try printJSON(object)
    } else {
      for (text, reward) in zip(response, answer.rewards) { print(String(format: "%+.4f  ", reward) + text) }
      if let preference { print(String(format: "P(first ≻ second) = %.4f", preference)) }
      print("reward model: \(answer.versions.reward)")
    }
  }
}

/// `alignctl check`: the safety verdict of a text (or of a response to a prompt).
struct Check: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Check a text with the server's safety classifiers and policy.",
    discussion: "With --prompt, the text is judged as the assistant's response to it. Exit code 2 when the action is block.")
  @OptionGroup var remote: RemoteOptions
  @Option(help: "The text to check.") var text: String
  @Option(help: "The prompt the text answers (role-aware check).") var prompt: String?
  @Option(help: "Policy profile (default: the policy's default profile).") var profile: String?

  func run() async throws {
    let request = Alignd_V1_CheckSafetyRequest.with {
      if let prompt {
        $0.prompt = prompt
        $0.response = text
      } else {
        $0.texts = [text]
      }
      if let profile { $0.profile = profile }
    }
    let answer: Alignd_V1_CheckSafetyResponse
    answer = try await withServer(remote) { client, metadata in
      try await Alignd_V1_Inference.Client(wrapping: client).checkSafety(request, metadata: metadata)
    }
    // The text's verdict is the last result (the prompt's comes first when one was given).
    guard let result = answer.results.last else { throw ExitCode.failure }
    if remote.json {
      print(try answer.jsonString())
    } else {
      print("action: \(Self.name(result.action))")
      if !result.flaggedCategories.isEmpty { print("flagged: \(result.flaggedCategories.joined(separator: ", "))") }
      for category in result.categories where category.score > 0 {
        print(String(format: "  %-28@ %.4f  %@", category.category as NSString, category.score, category.source as NSString))
      }
      print("safety: \(answer.versions.safety)")
    }
    if result.action == .block { throw ExitCode(2) }
  }

  static func name(_ action: Alignd_V1_SafetyAction) -> String {
    switch action {
    case .allow: return "allow"
    case .flag: return "flag"
    case .block: return "block"
    default: return "unspecified"
    }
  }
}
