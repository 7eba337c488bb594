import AlignAPI
import AlignEngine
import AlignServing
import ArgumentParser
import Foundation
import GRPCCore

/// Where a command runs: in process on a model file (`--model`), or on a server (`--server`).
struct TargetOptions: ParsableArguments {
  @Option(help: "Run locally on this GGUF model file (no server).")
  var model: String?

  @Option(help: "Run on this server (HOST:PORT) instead of locally.")
  var server: String?

  @Option(help: "API key for --server (default: $ALIGND_API_KEY).")
  var apiKey: String?

  @Flag(help: "Print JSON instead of text.")
  var json = false

  @Flag(help: "Connect to --server with TLS, trusting the system's CAs (implied by --ca-file).")
  var tls = false

  @Option(help: "CA certificate (PEM) the server's certificate must chain to; implies TLS.")
  var caFile: String?

  func validate() throws {
    guard (model == nil) != (server == nil) else {
      throw ArgumentParser.ValidationError("give exactly one of --model PATH (local) or --server HOST:PORT (remote)")
    }
  }

  var remote: RemoteOptions {
    var options = RemoteOptions()
    options.server = server ?? options.server
    options.apiKey = apiKey
    options.json = json
    options.tls = tls
    options.caFile = caFile
    // Every property of an unparsed ParsableArguments value must be set before it is read.
    options.certFile = nil
    options.keyFile = nil
    return options
  }

  /// Loads the local model with an engine loop: the same code path and defaults as `alignd serve`
  /// (batch-invariant prompt chunks on the integer row kernels, a float16 KV cache, prompt lookup),
  /// so a greedy completion here is the server's, and no BLAS library's CPU-specific sgemm rounding
  /// enters it.
  func localLoop(threads: Int = 2) throws -> GenerationLoop {
    guard let model else { throw ArgumentParser.ValidationError("--model is required") }
    let policy = try PolicyModel(
      ggufPath: model, version: URL(fileURLWithPath: model).lastPathComponent,
      settings: EngineSettings(threads: threads, gemmMinTokens: .max))
    return try GenerationLoop(
      model: policy,
      configuration: .init(
        maxRunningSequences: 16, kvCapacityTokens: min(policy.contextLength * 2, 16384), kvCachePrecision: .float16,
        promptLookup: PromptLookup()))
  }
}

/// Prints `object` as one line of JSON with sorted keys.
func printJSON(_ object: Any) throws {
  let data = try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes])
  print(String(decoding: data, as: UTF8.self))
}

func finishName(_ reason: Alignd_V1_FinishReason) -> String {
  switch reason {
  case .stop: return "stop"
  case .length: return "length"
  case .cancelled: return "cancelled"
  case .deadline: return "deadline"
  case .safety: return "safety"
  default: return "unspecified"
  }
}

struct Tokenize: AsyncParsableCommand {
  static let configuration = CommandConfiguration(abstract: "Tokenize text with the policy's tokenizer.")
  @OptionGroup var target: TargetOptions
  @Option(help: "The text.") var text: String
  @Flag(help: "Render the text as a user message with the chat template first.") var chat = false
  @Flag(help: "Add the model's BOS/EOS tokens as generation does.") var addSpecialTokens = false

  func run() async throws {
    let ids: [Int32]
    let pieces: [String]
    if target.server != nil {
      let response = try await withServer(target.remote) { client, metadata in
        try await Alignd_V1_Inference.Client(wrapping: client).tokenize(
          .with {
            if chat {
              $0.chat = .with { $0.messages = [.with { $0.role = "user"; $0.content = text }] }
            } else {
              $0.text = text
            }
            $0.addSpecialTokens = addSpecialTokens
          }, metadata: metadata)
      }
      ids = response.tokenIds
      pieces = response.tokens
    } else {
      let loop = try target.localLoop()
      defer { loop.shutdown() }
      let model = loop.model
      let rendered = chat ? try model.renderChat([ChatMessage(role: "user", content: text)], addGenerationPrompt: true) : text
      ids = model.tokenizer.encode(rendered, addSpecialTokens: addSpecialTokens, parseSpecial: true)
      pieces = ids.map { model.tokenizer.tokenText($0) ?? "" }
    }
    if target.json {
      try printJSON(["token_ids": ids.map(Int.init), "tokens": pieces])
    } else {
      print(ids.map(String.init).joined(separator: " "))
    }
  }
}

struct Generate: AsyncParsableCommand {
  static let configuration = CommandConfiguration(abstract: "Generate a completion with the policy.")
  @OptionGroup var target: TargetOptions
  @Option(help: "The prompt.") var prompt: String
  @Flag(help: "Send the prompt as a user message through the chat template.") var chat = false
  @Option(help: "Most tokens to generate.") var maxTokens: UInt32 = 128
  @Option(help: "0 = greedy.") var temperature: Float = 0.7
  @Option(help: "Seed; the same seed reproduces a completion.") var seed: UInt64?
  @Option(help: "Top-k (0 = off).") var topK: UInt32 = 0
  @Option(help: "Top-p (1 = off).") var topP: Float = 1
  @Option(help: "Min-p (0 = off).") var minP: Float = 0
  @Option(help: "Stop string (repeatable).") var stop: [String] = []
  @Option(help: "Number of completions.") var n: UInt32 = 1
  @Flag(help: "Print tokens as they arrive.") var stream = false

  var request: Alignd_V1_GenerateRequest {
    .with {
      if chat {
        $0.chat = .with { $0.messages = [.with { $0.role = "user"; $0.content = prompt }] }
      } else {
        $0.prompt = prompt
      }
      $0.sampling = .with {
        $0.maxTokens = maxTokens
        $0.temperature = temperature
        if let seed { $0.seed = seed }
        $0.topK = topK
        $0.topP = topP
        $0.minP = minP
        $0.stop = stop
        $0.n = n
      }
      $0.returnTokenIds = true
    }
  }

  func run() async throws {
    var texts = Array(repeating: "", count: Int(n))
    var ids = Array(repeating: [Int32](), count: Int(n))
    var finishes = Array(repeating: "unspecified", count: Int(n))
    var promptTokens = 0
    var version = ""
    let printLive = stream && !target.json && n == 1

    if target.server != nil {
      if stream {
        struct Streamed: Sendable {
          var texts: [String]
          var ids: [[Int32]]
          var finishes: [String]
          var promptTokens = 0
          var version = ""
        }
        let initial = Streamed(texts: texts, ids: ids, finishes: finishes)
        let result = try await withServer(target.remote) { client, metadata in
          try await Alignd_V1_Inference.Client(wrapping: client).generateStream(request, metadata: metadata) { response in
            var result = initial
            for try await message in response.messages {
              switch message.event {
              case .chunk(let chunk):
                result.texts[Int(chunk.index)] += chunk.text
                result.ids[Int(chunk.index)] += chunk.tokenIds
                if printLive { FileHandle.standardOutput.write(Data(chunk.text.utf8)) }
              case .end(let end):
                for completion in end.completions {
                  result.finishes[Int(completion.index)] = finishName(completion.finishReason)
                }
                result.promptTokens = Int(end.usage.promptTokens)
                result.version = end.versions.policy
              case nil: break
              }
            }
            return result
          }
        }
        (texts, ids, finishes, promptTokens, version) = (
          result.texts, result.ids, result.finishes, result.promptTokens, result.version
        )
      } else {
        let response = try await withServer(target.remote) { client, metadata in
          try await Alignd_V1_Inference.Client(wrapping: client).generate(request, metadata: metadata)
        }
        for completion in response.completions {
          texts[Int(completion.index)] = completion.text
          ids[Int(completion.index)] = completion.tokenIds
          finishes[Int(completion.index)] = finishName(completion.finishReason)
        }
        promptTokens = Int(response.usage.promptTokens)
        version = response.versions.policy
      }
    } else {
      let loop = try target.localLoop()
      defer { loop.shutdown() }
      let model = loop.model
      let text = chat ? try model.renderChat([ChatMessage(role: "user", content: prompt)], addGenerationPrompt: true) : prompt
      var sampling = SamplingParameters(
        temperature: temperature, topK: Int(topK), topP: topP, minP: minP, seed: seed ?? UInt64.random(in: 0...UInt64.max))
      sampling.topLogprobs = 0
      try sampling.validate()
      let tokens = chat ? model.encodeRendered(text) : model.encodePrompt(text)
      promptTokens = tokens.count
      version = model.version
      let spec = GenerationSpec(
        promptTokens: tokens, maxTokens: min(Int(maxTokens), model.contextLength - tokens.count), samples: Int(n),
        sampling: sampling, stopStrings: stop)
      let events: AsyncStream<GenerationEvent>
      do {
        events = try loop.submit(spec).events
      } catch {
        throw ArgumentParser.ValidationError("cannot run this request: \(error)")
      }
      for await event in events {
        switch event {
        case .token(let sample, let piece, let sampled):
          texts[sample] += piece
          ids[sample] += sampled.map(\.token)
          if printLive { FileHandle.standardOutput.write(Data(piece.utf8)) }
        case .finished(let sample, let reason, _):
          finishes[sample] = reason.rawValue
        case .failed(let message):
          throw ArgumentParser.ValidationError("generation failed: \(message)")
        }
      }
    }

    if target.json {
      try printJSON([
        "completions": (0..<Int(n)).map { i in
          ["text": texts[i], "token_ids": ids[i].map(Int.init), "finish_reason": finishes[i]] as [String: Any]
        },
        "prompt_tokens": promptTokens,
        "policy_version": version,
      ])
    } else if printLive {
      print("")
    } else {
      for i in 0..<Int(n) {
        if n > 1 { print("--- completion \(i) (\(finishes[i]))") }
        print(texts[i])
      }
    }
  }
}

struct Logprobs: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Per-token log-probabilities of text under the policy (teacher forcing).")
  @OptionGroup var target: TargetOptions
  @Option(help: "The text to score.") var text: String
  @Option(help: "Context the text continues (not scored).") var context: String = ""
  @Option(help: "Most likely alternatives per position (1...20).") var top: UInt32 = 1

  func run() async throws {
    var rows: [(id: Int32, token: String, logprob: Float, top1: Int32?)] = []
    var total = 0.0
    if target.server != nil {
      let response = try await withServer(target.remote) { client, metadata in
        try await Alignd_V1_Inference.Client(wrapping: client).logprobs(
          .with {
            $0.items = [.with { $0.context = context; $0.continuation = text }]
            $0.topLogprobs = top
          }, metadata: metadata)
      }
      let item = response.items.first ?? .init()
      rows = item.tokens.map { ($0.tokenID, $0.token, $0.logprob, $0.top.first?.tokenID) }
      total = item.totalLogprob
    } else {
      let loop = try target.localLoop()
      defer { loop.shutdown() }
      let model = loop.model
      let input = model.teacherForcingInput(context: context, continuation: text)
      let scored = try await loop.teacherForce([input.tokens], topLogprobs: Int(max(top, 1)))[0]
      for token in PolicyModel.continuationScores(scored, contextLength: input.contextLength) {
        rows.append((token.token, model.tokenizer.decode([token.token]), token.logprob, token.top.first?.token))
        total += Double(token.logprob)
      }
    }
    if target.json {
      try printJSON([
        "token_ids": rows.map { Int($0.id) },
        "logprobs": rows.map { Double($0.logprob) },
        "top1_ids": rows.map { $0.top1.map(Int.init) ?? -1 },
        "total_logprob": total,
      ])
    } else {
      for row in rows {
        print(String(format: "%6d  %9.4f  top1 %6d  %@", row.id, row.logprob, row.top1 ?? -1, row.token.debugDescription))
      }
      print(String(format: "total %.4f", total))
    }
  }
}

struct Bench: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Measure the engine: prefill, batch-1 decode and batched decode tokens/s (medians).",
    discussion: """
      With --roofs, also measures this machine's read bandwidth and compute peaks in the same run and \
      states each figure as a share of its roof: decode against bandwidth ÷ weight bytes per token, \
      prefill and batched decode against the faster multiply-add peak (int8 or f32) ÷ matrix weights.
      """)
  @Option(help: "GGUF model file.") var model: String
  @Option(help: "Engine threads.") var threads: Int = 2
  @Option(help: "Prompt length for prefill.") var promptTokens: Int = 128
  @Option(help: "Tokens decoded at batch 1.") var genTokens: Int = 64
  @Option(help: "Sequences decoded together.") var batch: Int = 32
  @Option(help: "Prompt length of each sequence in the batched measurement (llama-batched-bench's npp).")
  var batchPromptTokens: Int = 128
  @Option(help: "Runs per figure (the median is reported).") var runs: Int = 3
  @Option(help: "KV cache precision: float32 or float16 (alignd serve's default).")
  var kvCache: String = "float32"
  @Option(help: "Kernel set: avx2, sse2 or portable (default: the fastest this CPU supports, or $ALIGND_KERNELS).")
  var kernels: String?
  @Flag(help: "Also measure the machine's roofs (read bandwidth, compute peaks).") var roofs = false
  @Flag(help: "Print JSON.") var json = false

  func run() throws {
    guard let precision = KVCachePrecision(rawValue: kvCache) else {
      throw ValidationError("--kv-cache must be float32 or float16")
    }
    var set: KernelSet? = nil
    if let kernels {
      guard let named = KernelSet(rawValue: kernels) else {
        throw ValidationError("--kernels must be one of \(KernelSet.allCases.map(\.rawValue).joined(separator: ", "))")
      }
      set = named
    }
    let transformer = try TransformerModel(ggufPath: model)
    let engine = try Engine(model: transformer, settings: EngineSettings(threads: threads, kernels: set))
    let result = try engine.benchmark(
      promptTokens: promptTokens, decodeTokens: genTokens, batchSequences: batch, batchPromptTokens: batchPromptTokens,
      batchSteps: genTokens, repetitions: runs, kvCachePrecision: precision)
    let measured = roofs ? MachineRoofs.measure(threads: threads) : nil
    let weightBytes = transformer.weightBytes, parameters = transformer.matrixParameters
    var fields: [String: Any] = [
      "prefill_tok_s": result.prefillTokensPerSecond,
      "decode_tok_s": result.decodeTokensPerSecond,
      "batched_decode_tok_s": result.batchedDecodeTokensPerSecond,
      "batch": result.batchSequences,
      "batch_prompt_tokens": result.batchPromptTokens,
      "threads": result.threads,
      "kv_cache": precision.rawValue,
      "kernels": engine.kernels.rawValue,
      "weight_bytes_per_token": weightBytes,
      "matrix_parameters": parameters,
    ]
    var lines = [result.description + " | kernels \(engine.kernels.rawValue)"]
    if let r = measured {
      let decodeRoof = r.decodeRoof(weightBytes: weightBytes)
      fields["read_gb_s_1_thread"] = r.readBytesPerSecondOneThread / 1e9
      fields["read_gb_s"] = r.readBytesPerSecond / 1e9
      fields["decode_roof_tok_s"] = decodeRoof
      fields["decode_share_of_roof"] = result.decodeTokensPerSecond / decodeRoof
      lines.append(String(
        format: "roofs | read %.1f GB/s (1 thread %.1f) → decode roof %.0f tok/s for %.1f MB per token: decode at %.0f%%",
        r.readBytesPerSecond / 1e9, r.readBytesPerSecondOneThread / 1e9, decodeRoof, Double(weightBytes) / 1e6,
        100 * result.decodeTokensPerSecond / decodeRoof))
      if let f32 = r.f32MultiplyAddsPerSecond { fields["f32_gmacs"] = f32 / 1e9 }
      if let int8 = r.int8MultiplyAddsPerSecond, let roof = r.computeRoof(matrixParameters: parameters) {
        fields["int8_gmacs"] = int8 / 1e9
        fields["compute_roof_tok_s"] = roof
        fields["prefill_share_of_roof"] = result.prefillTokensPerSecond / roof
        fields["batched_decode_share_of_roof"] = result.batchedDecodeTokensPerSecond / roof
        lines.append(String(
          format: "roofs | int8 %.1f GMAC/s, f32 %.1f GMAC/s → compute roof %.0f tok/s for %.1f M weights: prefill at %.0f%%, batched at %.0f%%",
          int8 / 1e9, (r.f32MultiplyAddsPerSecond ?? 0) / 1e9, roof, Double(parameters) / 1e6,
          100 * result.prefillTokensPerSecond / roof, 100 * result.batchedDecodeTokensPerSecond / roof))
      }
    }
    if json {
      try printJSON(fields)
    } else {
      print(lines.joined(separator: "\n"))
    }
  }
}
