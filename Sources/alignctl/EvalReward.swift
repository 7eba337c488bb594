import AlignAPI
import AlignEngine
import AlignServing
import ArgumentParser
import Foundation
import GRPCCore

/// `alignctl eval-reward`: how well a reward model ranks a preference file — pairwise accuracy,
/// mean margin and calibration (ECE of P(chosen ≻ rejected)), overall and per source. The same
/// evaluation gates reward checkpoints before they serve.
struct EvalReward: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "eval-reward",
    abstract: "Evaluate a reward model on a preference file (TRL JSONL): accuracy, mean margin and ECE, overall and per source.",
    discussion: """
      Without --model, the pairs are scored by the server's reward model (Score RPCs to --server);
      with --model, in process by a trained judge folder (alignd.embedding-head, which reads the
      encoder and ported classifiers of --models-dir) or a Hugging Face sequence-classification
      folder. Rows are {prompt, chosen, rejected} strings or conversational message lists, with an
      optional source field (--by names another string field, e.g. kind). Exit code 65 for a file
      that does not parse.
      """)

  @OptionGroup var remote: RemoteOptions
  @Argument(help: "Preference file (TRL JSONL).") var file: String
  @Option(help: "Score in process with this reward model folder instead of the server.") var model: String?
  @Option(help: "Folder of the encoder and classifiers an embedding-head model reads (with --model).")
  var modelsDir: String = "models"
  @Option(help: "Row field the figures are grouped by.") var by: String = "source"
  @Option(help: "Evaluate at most this many pairs, spread evenly over the file (0 = all).") var limit: Int = 0
  @Option(help: "Pairs per Score RPC (with the server, at most 32).") var batch: Int = 16
  @Option(help: "Threads of the in-process model.") var threads: Int = 2

  func validate() throws {
    guard limit >= 0 else { throw ValidationError("--limit must not be negative") }
    guard (1...32).contains(batch) else { throw ValidationError("--batch must be 1...32") }
    guard threads >= 1 else { throw ValidationError("--threads must be at least 1") }
  }

  func run() async throws {
    var examples: [PreferenceExample]
    do {
      examples = try PreferenceFile.read(path: file, sourceField: by)
    } catch {
      FileHandle.standardError.write(Data("alignctl: \(error.description)\n".utf8))
      throw ExitCode(65)
    }
    guard !examples.isEmpty else {
      FileHandle.standardError.write(Data("alignctl: \(file) has no preference pairs\n".utf8))
      throw ExitCode(65)
    }
    if limit > 0 { examples = PreferenceFile.evenlySpaced(examples, limit: limit) }
    let evaluation: RewardEvaluation
    let version: String
    if let model {
      (evaluation, version) = try local(model, examples)
    } else {
      (evaluation, version) = try await server(examples)
    }
    if remote.json {
      let figures = try JSONSerialization.jsonObject(with: Data(evaluation.json.utf8))
      try printJSON(["file": file, "reward_version": version, "grouped_by": by, "evaluation": figures])
    } else {
      print(Self.table(evaluation, groupedBy: by))
      print("reward model: \(version)")
    }
  }

  /// Scores in process.
  func local(_ path: String, _ examples: [PreferenceExample]) throws -> (RewardEvaluation, String) {
    let backend: any RewardBackend
    do {
      if JudgeModels.isEmbeddingHead(path) {
        let judges = try JudgeModels.load(modelsDirectory: modelsDir, encoderPath: "all-MiniLM-L6-v2", threads: threads)
        backend = try judges.rewardModel(headDirectory: path)
      } else {
        var settings = EngineSettings()
        settings.threads = threads
        backend = try SequenceClassificationRewardModel(directory: path, settings: settings)
      }
    } catch let error as ModelLoadError {
      throw ValidationError(error.description)
    }
    return (try RewardEvaluation.evaluate(examples, with: backend, batchSize: 32), backend.version)
  }

  /// Scores through the server's Score RPC, `batch` pairs per call.
  func server(_ examples: [PreferenceExample]) async throws -> (RewardEvaluation, String) {
    try await withServer(remote) { client, metadata in
      let inference = Alignd_V1_Inference.Client(wrapping: client)
      var chosen: [Double] = []
      var rejected: [Double] = []
      var version = ""
      for start in stride(from: 0, to: examples.count, by: batch) {
        let pairs: [Alignd_V1_ScorePair] = examples[start..<min(examples.count, start + batch)].map { example in
          .with {
            switch example.context {
            case .prompt(let prompt): $0.prompt = prompt
            case .messages(let messages):
              $0.messages = messages.map { m in .with { $0.role = m.role; $0.content = m.content } }
            }
            $0.chosen = example.chosen
            $0.rejected = example.rejected
          }
        }
        let answer = try await inference.score(.with { $0.pairs = pairs }, metadata: metadata)
        chosen += answer.pairScores.map(\.chosenReward)
        rejected += answer.pairScores.map(\.rejectedReward)
        version = answer.versions.reward
      }
      return (RewardEvaluation(examples: examples, chosen: chosen, rejected: rejected), version)
    }
  }

  /// The figures as a text table: overall first, then one row per group.
  static func table(_ evaluation: RewardEvaluation, groupedBy field: String) -> String {
    let width = max(12, evaluation.bySource.keys.map(\.count).max() ?? 0, field.count) + 2
    func pad(_ text: String) -> String { text.padding(toLength: width, withPad: " ", startingAt: 0) }
    func row(_ name: String, _ f: RewardEvaluation.Figures) -> String {
      pad(name) + String(format: "%6d  %8.4f  %+11.4f  %7.4f", f.pairs, f.accuracy, f.meanMargin, f.calibrationError)
    }
    var lines = [pad(field) + " pairs  accuracy  mean margin      ECE"]
    lines.append(row("overall", evaluation.overall))
    for (name, figures) in evaluation.bySource.sorted(by: { $0.key < $1.key }) { lines.append(row(name, figures)) }
    return lines.joined(separator: "\n")
  }
}
