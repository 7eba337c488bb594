import AlignEngine
import ArgumentParser
import Foundation

struct BenchLookup: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "bench-lookup",
    abstract: "Measure prompt-lookup speculative decoding against plain decoding on a prompt set.",
    discussion: """
      Each prompt (a JSONL file of {"id", "messages"} rows, rendered with the model's chat template) is \
      decoded greedily with and without prompt lookup, alternating which goes first, on the same engine \
      and threads. The two token sequences must be equal (exit 1 otherwise). Decode tokens/s counts the \
      tokens after the first over the time after the first; the figure per run is the total over the \
      set, and the median of the runs is reported.
      """)
  @Option(help: "GGUF model file.") var model: String
  @Option(help: "Prompt set (JSONL with id and messages).") var prompts: String
  @Option(help: "Engine threads.") var threads: Int = 2
  @Option(help: "Most tokens generated per prompt.") var maxTokens: Int = 256
  @Option(help: "Most tokens drafted per pass (k).") var draftTokens: Int = 4
  @Option(help: "Longest n-gram matched.") var maxNgram: Int = 4
  @Option(help: "Shortest n-gram matched.") var minNgram: Int = 3
  @Option(help: "Runs over the whole set (the median is reported).") var runs: Int = 3
  @Option(help: "KV cache precision: float32 or float16 (alignd serve's default).")
  var kvCache: String = "float16"
  @Flag(help: "Print JSON.") var json = false

  struct Prompt: Decodable {
    let id: String
    let messages: [[String: String]]
  }

  func run() throws {
    guard let precision = KVCachePrecision(rawValue: kvCache) else {
      throw ValidationError("--kv-cache must be float32 or float16")
    }
    guard runs >= 1, maxTokens >= 2, draftTokens >= 1 else {
      throw ValidationError("--runs ≥ 1, --max-tokens ≥ 2 and --draft-tokens ≥ 1 are required")
    }
    let lines = try String(contentsOfFile: prompts, encoding: .utf8).split(separator: "\n").filter { !$0.isEmpty }
    let set = try lines.enumerated().map { index, line -> Prompt in
      do { return try JSONDecoder().decode(Prompt.self, from: Data(line.utf8)) } catch {
        throw ValidationError("\(prompts) line \(index + 1) is not an {id, messages} object: \(error)")
      }
    }
    guard !set.isEmpty else { throw ValidationError("\(prompts) holds no prompts") }
    let transformer = try TransformerModel(ggufPath: model)
    let tokenizer = try Tokenizer(TokenizerDescription(gguf: try GGUFFile(path: model)))
    let engine = try Engine(model: transformer, settings: EngineSettings(threads: threads))
    let encoded = try set.map { prompt -> [Int32] in
      let messages = prompt.messages.map { ChatMessage(role: $0["role"] ?? "user", content: $0["content"] ?? "") }
      guard let tokens = try tokenizer.encodeChat(messages) else {
        throw ValidationError("the model has no chat template")
      }
      return tokens
    }
    let lookup = PromptLookup(maxDraftTokens: draftTokens, maxNgram: maxNgram, minNgram: minNgram)

    struct Side { var tokens = 0, decodeTokens = 0, passes = 0, drafted = 0, accepted = 0, decodeSeconds = 0.0, seconds = 0.0 }
    var plainRates: [Double] = [], lookupRates: [Double] = [], ratios: [Double] = [], endToEnd: [Double] = []
    var perPrompt: [[String: Any]] = []
    var last = (plain: Side(), lookup: Side())
    for run in 0..<runs {
      var plain = Side(), fast = Side()
      for (index, prompt) in encoded.enumerated() {
        // Alternate which side runs first, so neither always meets a warmer cache.
        var a: DecodeResult!, b: DecodeResult!
        for lookupFirst in (run + index) % 2 == 0 ? [false, true] : [true, false] {
          let r = try engine.decode(
            prompt: prompt, maxTokens: maxTokens, lookup: lookupFirst ? lookup : nil, kvCachePrecision: precision)
          if lookupFirst { b = r } else { a = r }
        }
        guard a.tokens == b.tokens else {
          throw ValidationError("\(set[index].id): prompt lookup changed the output — this is a bug")
        }
        for (side, r) in [(0, a!), (1, b!)] {
          var s = side == 0 ? plain : fast
          s.tokens += r.tokens.count
          s.decodeTokens += r.tokens.count - 1
          s.passes += r.decodePasses
          s.drafted += r.draftedTokens
          s.accepted += r.acceptedTokens
          s.decodeSeconds += r.decodeSeconds
          s.seconds += r.prefillSeconds + r.decodeSeconds
          if side == 0 { plain = s } else { fast = s }
        }
        if run == runs - 1 {
          perPrompt.append([
            "id": set[index].id, "prompt_tokens": prompt.count, "tokens": a.tokens.count,
            "plain_decode_tok_s": Double(a.tokens.count - 1) / max(a.decodeSeconds, 1e-9),
            "lookup_decode_tok_s": Double(b.tokens.count - 1) / max(b.decodeSeconds, 1e-9),
            "passes": b.decodePasses, "drafted": b.draftedTokens, "accepted": b.acceptedTokens,
          ])
        }
      }
      let p = Double(plain.decodeTokens) / plain.decodeSeconds, l = Double(fast.decodeTokens) / fast.decodeSeconds
      plainRates.append(p)
      lookupRates.append(l)
      ratios.append(l / p)
      endToEnd.append(plain.seconds / fast.seconds)
      last = (plain, fast)
    }
    func median(_ xs: [Double]) -> Double { xs.sorted()[xs.count / 2] }
    // What a verifying pass costs here: one forward of 1 + k rows against one of 1 row, after the
    // first prompt, alternated 15 times (the cache is cut back after each).
    let cache = try engine.makeCache(capacityTokens: encoded[0].count + draftTokens + 2, precision: precision)
    try cache.addSequence(0)
    _ = try engine.forward([BatchItem(sequence: 0, tokens: encoded[0])], cache: cache)
    let clock = ContinuousClock()
    var one: [Double] = [], many: [Double] = []
    for _ in 0..<15 {
      for rows in [1, 1 + draftTokens] {
        let start = clock.now
        _ = try engine.forward(
          [BatchItem(sequence: 0, tokens: Array(encoded[0].prefix(rows)), logits: rows == 1 ? .last : .each)], cache: cache)
        let d = clock.now - start
        let seconds = Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18
        if rows == 1 { one.append(seconds) } else { many.append(seconds) }
        try cache.truncate(0, to: encoded[0].count)
      }
    }
    let passCost = median(many) / median(one)
    let fields: [String: Any] = [
      "one_row_pass_ms": 1000 * median(one), "verify_pass_ms": 1000 * median(many), "verify_pass_cost": passCost,
      "prompts": set.count, "runs": runs, "threads": threads, "max_tokens": maxTokens, "kv_cache": precision.rawValue,
      "kernels": engine.kernels.rawValue, "draft_tokens": draftTokens, "max_ngram": maxNgram, "min_ngram": minNgram,
      "plain_decode_tok_s": median(plainRates), "lookup_decode_tok_s": median(lookupRates),
      "decode_ratio": median(ratios), "end_to_end_ratio": median(endToEnd),
      "runs_plain_decode_tok_s": plainRates, "runs_lookup_decode_tok_s": lookupRates, "runs_decode_ratio": ratios,
      "generated_tokens": last.plain.tokens, "plain_passes": last.plain.passes, "lookup_passes": last.lookup.passes,
      "drafted": last.lookup.drafted, "accepted": last.lookup.accepted, "per_prompt": perPrompt,
    ]
    if json {
      try printJSON(fields)
    } else {
      print(String(
        format: "%d prompts, %d tokens: plain %.1f tok/s, prompt lookup %.1f tok/s (%.2fx decode, %.2fx end to end); passes %d vs %d; accepted %d of %d drafted; a pass of %d rows costs %.2fx one of 1 row",
        set.count, last.plain.tokens, median(plainRates), median(lookupRates), median(ratios), median(endToEnd),
        last.plain.passes, last.lookup.passes, last.lookup.accepted, last.lookup.drafted, 1 + draftTokens, passCost))
    }
  }
}
