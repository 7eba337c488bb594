import AlignAPI
import AlignClient
import ArgumentParser
import Foundation
import GRPCCore
import SwiftProtobuf

/// `alignctl log …`: read the server's generation log (admin key).
struct Log: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "List, show and export the generation log (admin key).",
    subcommands: [List.self, Show.self, Export.self])

  /// Filter flags shared by list and export.
  struct FilterOptions: ParsableArguments {
    @Option(help: "Only completions logged at or after this time (ISO 8601 or Unix ms).") var since: String?
    @Option(help: "Only completions logged before this time (ISO 8601 or Unix ms).") var until: String?
    @Option(help: "Only completions of this policy version.") var policyVersion: String?
    @Option(name: .customLong("api-key-id"), help: "Only completions asked for with this API key (its name in the keys file).")
    var apiKeyID: String?

    func filter() throws -> Alignd_V1_GenerationFilter {
      let since = try since.map { text in try usage { try FeedbackExport.unixMs(text, option: "--since") } }
      let until = try until.map { text in try usage { try FeedbackExport.unixMs(text, option: "--until") } }
      return .with {
        $0.sinceUnixMs = since ?? 0
        $0.untilUnixMs = until ?? 0
        $0.policyVersion = policyVersion ?? ""
        $0.apiKeyID = apiKeyID ?? ""
      }
    }
  }

  /// One logged completion as a line of proto JSON (proto field names).
  static func json(_ entry: Alignd_V1_LoggedCompletion) throws -> String {
    var options = JSONEncodingOptions()
    options.preserveProtoFieldNames = true
    return try entry.jsonString(options: options)
  }

  struct List: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
      abstract: "List logged completions, newest first.",
      discussion: "With --json, one object: {\"completions\": [...], \"next_page_token\": ...}.")
    @OptionGroup var remote: RemoteOptions
    @OptionGroup var filter: FilterOptions
    @Option(help: "Most completions (1...1000).") var limit: Int = 20
    @Option(help: "The next_page_token a previous list printed.") var pageToken: String = ""

    func run() async throws {
      guard (1...1000).contains(limit) else { throw ValidationError("--limit must be in 1...1000") }
      let selected = try filter.filter()
      let request = Alignd_V1_ListGenerationsRequest.with {
        $0.filter = selected
        $0.limit = UInt32(limit)
        $0.pageToken = pageToken
      }
      let page = try await withServer(remote) { client, metadata in
        try await Alignd_V1_Admin.Client(wrapping: client).listGenerations(request, metadata: metadata)
      }
      if remote.json {
        var options = JSONEncodingOptions()
        options.preserveProtoFieldNames = true
        print(try page.jsonString(options: options))
        return
      }
      for entry in page.completions {
        let created = Date(timeIntervalSince1970: Double(entry.createdAtUnixMs) / 1000)
        let text = entry.text.replacingOccurrences(of: "\n", with: " ")
        print(
          "\(entry.completionID)  \(ISO8601DateFormatter().string(from: created))  key=\(entry.apiKeyID.isEmpty ? "-" : entry.apiKeyID)"
            + "  \(entry.versions.policy)  \(entry.finishReason)  \(text.prefix(60))")
      }
      if !page.nextPageToken.isEmpty { print("next page: --page-token \(page.nextPageToken)") }
    }
  }

  struct Show: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Show one logged completion by its completion id.")
    @OptionGroup var remote: RemoteOptions
    @Argument(help: "The completion id (cmpl-…).") var completionID: String

    func run() async throws {
      let entry = try await withServer(remote) { client, metadata in
        try await Alignd_V1_Admin.Client(wrapping: client).getGeneration(
          .with { $0.completionID = completionID }, metadata: metadata)
      }
      if remote.json {
        print(try Log.json(entry))
        return
      }
      print("completion: \(entry.completionID) (index \(entry.index) of response \(entry.responseID))")
      print("asked by:   \(entry.apiKeyID.isEmpty ? "-" : entry.apiKeyID) via \(entry.endpoint)")
      print("versions:   policy=\(entry.versions.policy) reward=\(entry.versions.reward) safety=\(entry.versions.safety)")
      print("sampling:   \(entry.samplingJson)")
      print(String(format: "timing:     ttft %.1f ms, total %.1f ms", entry.ttftMs, entry.durationMs))
      print("finish:     \(entry.finishReason)\(entry.flaggedCategories.isEmpty ? "" : " flagged=\(entry.flaggedCategories.joined(separator: ","))")")
      if entry.hasReward { print("reward:     \(entry.reward)") }
      print("tokens:     \(entry.promptTokens) prompt, \(entry.completionTokens) completion\(entry.redacted ? " (PII redacted)" : "")")
      print("--- prompt\n\(entry.prompt)\n--- completion\n\(entry.text)")
    }
  }

  struct Export: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
      abstract: "Write logged completions as JSONL (proto JSON, or on-policy rollouts), oldest first.",
      discussion: """
        --format log writes each logged completion as proto JSON; resume an interrupted
        export with --after-id set to the last id written.
        --format rollouts writes the rows PPO/GRPO trainers read, built by the server
        (prompt, messages, completion, completion_id, completion_token_ids,
        completion_logprobs, reward, finish_reason, versions; Docs/EXPORTS.md),
        retrying and resuming on its own.
        The count goes to stderr.
        """)
    @OptionGroup var remote: RemoteOptions
    @OptionGroup var filter: FilterOptions
    @Option(help: "log or rollouts.") var format: String = "log"
    @Option(name: .customLong("after-id"), help: "Only log ids above this one.") var afterID: UInt64 = 0
    @Option(help: "Most completions (0 = all).") var limit: UInt32 = 0
    @Option(help: "Write to this file (default: stdout).") var output: String?

    func run() async throws {
      let selected = try filter.filter()
      switch format {
      case "log": break
      case "rollouts":
        var export = try usage { try FeedbackExport(format: .rollouts, generations: selected) }
        export.training.limit = limit
        let sink = try usage { try JSONLSink(path: output) }
        let counter = ExportCounter()
        do {
          try await export.run(on: try remote.connection(), into: sink, counter: counter) { error, attempt, delay in
            FileHandle.standardError.write(Data("alignctl: \(error.code): \(error.message); retry \(attempt) in \(delay)\n".utf8))
          }
        } catch let error as RPCError {
          throw report(error)
        }
        FileHandle.standardError.write(Data("alignctl: exported \(counter.rows) rollouts to \(output ?? "stdout")\n".utf8))
        return
      default:
        throw ValidationError("--format must be log or rollouts")
      }
      guard afterID == 0 || format == "log" else { throw ValidationError("--after-id is for --format log") }
      let request = Alignd_V1_ExportGenerationsRequest.with {
        $0.filter = selected
        $0.afterID = afterID
        $0.limit = limit
      }
      let sink = try usage { try JSONLSink(path: output) }
      let count = try await withServer(remote) { client, metadata in
        try await Alignd_V1_Admin.Client(wrapping: client).exportGenerations(request, metadata: metadata) { response in
          var count = 0
          for try await entry in response.messages {
            let object = try JSONSerialization.jsonObject(with: Data(try Log.json(entry).utf8))
            try sink.write(object as? [String: Any] ?? [:])
            count += 1
          }
          return count
        }
      }
      try sink.commit()
      FileHandle.standardError.write(Data("alignctl: exported \(count) completions to \(output ?? "stdout")\n".utf8))
    }
  }
}
