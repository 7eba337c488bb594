import AlignAPI
import AlignEngine
import AlignServing
import ArgumentParser
import Foundation
import GRPCCore

/// `alignctl train-reward`: a Bradley–Terry reward head on frozen base-model features, from the
/// preference feedback stored on a server or from a TRL JSONL file.
struct TrainReward: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "train-reward",
    abstract: "Train a reward head on preference feedback (server export or TRL JSONL) and write a reward-head checkpoint.",
    discussion: """
      The head reads the base model's final hidden state at the last token; the base is the
      policy GGUF the server serves (the checkpoint records its sha256, and the server refuses the
      head on any other base). Upload the output folder with
      `alignctl checkpoint upload DIR --role reward`, then activate it.
      """)

  @OptionGroup var remote: RemoteOptions
  @Option(help: "Base model GGUF (the policy the head will run on).") var base: String
  @Option(help: "Read pairs from this TRL JSONL file ({prompt, chosen, rejected}) instead of the server.") var input: String?
  @Option(help: "Output folder for the checkpoint (must not exist or be empty).") var output: String
  @Option(help: "Fraction of pairs held out for the accuracy in the manifest.") var heldout: Double = 0.2
  @Option(help: "L2 regularisation.") var l2: Double = 0.01
  @Option(help: "Seed of the held-out split.") var seed: UInt64 = 0
  @Option(help: "Only feedback on this policy version (server export).") var policyVersion: String?

  func run() async throws {
    let pairs: [PreferencePair]
    if let input {
      pairs = try Self.readTRL(input)
    } else {
      pairs = try await Self.export(remote, policyVersion: policyVersion)
    }
    guard !pairs.isEmpty else { throw ValidationError("no preference pairs to train on") }
    FileHandle.standardError.write(Data("training on \(pairs.count) preference pairs\n".utf8))
    let progress = Progress(total: UInt64(2 * pairs.count), label: "features")
    let result: RewardHeadTrainingResult
    do {
      let baseModel = try RewardBaseModel(ggufPath: base)
      var options = RewardHeadTrainingOptions()
      options.heldoutFraction = heldout
      options.l2 = l2
      options.seed = seed
      result = try RewardHeadTrainer(base: baseModel).train(pairs, options: options, writeTo: output) { done, _ in
        progress.update(UInt64(done))
      }
    } catch let error as InvalidRequest {
      progress.finish()
      throw ValidationError(error.description)
    }
    progress.finish()
    if remote.json {
      var object: [String: Any] = [
        "output": output, "pairs": pairs.count, "train_accuracy": result.trainAccuracy,
        "iterations": result.iterations, "loss": result.loss,
      ]
      if let heldout = result.heldoutAccuracy { object["heldout_accuracy"] = heldout }
      try printJSON(object)
    } else {
      print(result.summary)
      print("wrote \(output)")
    }
  }

  /// TRL preference rows from a JSONL file.
  static func readTRL(_ path: String) throws -> [PreferencePair] {
    guard let data = FileManager.default.contents(atPath: path) else { throw ValidationError("cannot read \(path)") }
    var pairs: [PreferencePair] = []
    for (number, line) in String(decoding: data, as: UTF8.self).split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
      let trimmed = line.trimmingCharacters(in: .whitespaces)
      if trimmed.isEmpty { continue }
      guard let object = try? JSONSerialization.jsonObject(with: Data(trimmed.utf8)) as? [String: Any],
        let prompt = object["prompt"] as? String, let chosen = object["chosen"] as? String,
        let rejected = object["rejected"] as? String
      else {
        throw ValidationError("\(path):\(number + 1): not a {prompt, chosen, rejected} row")
      }
      pairs.append(PreferencePair(prompt: prompt, chosen: chosen, rejected: rejected))
    }
    return pairs
  }

  /// Every stored preference record on the server.
  static func export(_ remote: RemoteOptions, policyVersion: String?) async throws -> [PreferencePair] {
    try await withServer(remote) { client, metadata in
      try await Alignd_V1_Admin.Client(wrapping: client).exportFeedback(
        .with {
          $0.kinds = [.preference]
          if let policyVersion { $0.policyVersion = policyVersion }
        }, metadata: metadata
      ) { response in
        var pairs: [PreferencePair] = []
        for try await stored in response.messages {
          if case .preference(let p) = stored.record.kind {
            pairs.append(PreferencePair(prompt: p.prompt, chosen: p.chosen, rejected: p.rejected))
          }
        }
        return pairs
      }
    }
  }
}
