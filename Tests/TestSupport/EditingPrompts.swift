import Foundation

/// The committed editing prompt set (Benchmarks/prompts/editing.jsonl: fix, rewrite, summarise a
/// given text) that the prompt-lookup benchmark runs and the speculative-decoding tests decode.
public enum EditingPrompts {
  public struct Entry: Decodable, Sendable {
    public let id: String
    public let messages: [[String: String]]
  }

  /// Every prompt, in file order.
  public static func load() throws -> [Entry] {
    let url = TestModels.repositoryRoot.appendingPathComponent("Benchmarks/prompts/editing.jsonl")
    return try String(contentsOf: url, encoding: .utf8).split(separator: "\n").map {
      try JSONDecoder().decode(Entry.self, from: Data($0.utf8))
    }
  }
}
