import AlignEngine
import Foundation
import Testing

@Suite("Sampler")
struct SamplerTests {
  static let logits: [Float] = [2.0, 1.5, 0.8, -0.3, 0.1, -2.0, 1.0, 0.0]

  func draws(_ p: SamplingParameters, _ n: Int, logits: [Float] = logits) throws -> [Int32] {
    var s = try Sampler(parameters: p)
    return try (0..<n).map { _ in try s.sample(logits).token }
  }

  func softmax(_ x: [Float]) -> [Double] {
    let m = x.max()!
    let e = x.map { exp(Double($0 - m)) }
    let s = e.reduce(0, +)
    return e.map { $0 / s }
  }

  @Test("A seed reproduces the draws; different seeds differ")
  func seeded() throws {
    let a = try draws(SamplingParameters(seed: 11), 200)
    #expect(a == (try draws(SamplingParameters(seed: 11), 200)))
    #expect(a != (try draws(SamplingParameters(seed: 12), 200)))
  }

  @Test("Batch invariance: interleaving samplers does not change their draws")
  func interleaved() throws {
    var s1 = try Sampler(parameters: SamplingParameters(temperature: 0.8, topP: 0.9, seed: 1))
    var s2 = try Sampler(parameters: SamplingParameters(temperature: 1.3, topK: 4, seed: 2))
    var mixed1: [Int32] = []
    for i in 0..<100 {
      mixed1.append(try s1.sample(Self.logits).token)
      if i % 3 == 0 { _ = try s2.sample(Self.logits) }
    }
    #expect(mixed1 == (try draws(SamplingParameters(temperature: 0.8, topP: 0.9, seed: 1), 100)))
  }

  @Test("Greedy and top-k 1 pick the argmax")
  func greedy() throws {
    #expect(Set(try draws(SamplingParameters(temperature: 0), 20)) == [0])
    #expect(Set(try draws(SamplingParameters(topK: 1, seed: 3), 20)) == [0])
  }

  @Test("Plain sampling follows the softmax distribution")
  func frequencies() throws {
    let n = 20_000
    let got = try draws(SamplingParameters(seed: 5), n)
    let p = softmax(Self.logits)
    for t in 0..<Self.logits.count {
      let f = Double(got.filter { $0 == t }.count) / Double(n)
      #expect(abs(f - p[t]) < 0.015, "token \(t): \(f) vs \(p[t])")
    }
  }

  @Test("Top-k, top-p and min-p keep exactly the expected tokens")
  func truncation() throws {
    // Probabilities of these logits, sorted: 0 > 1 > 6 > 2 > 4 > 7 > 3 > 5.
    let p = softmax(Self.logits)
    #expect(Set(try draws(SamplingParameters(topK: 3, seed: 1), 2000)) == [0, 1, 6])
    // Nucleus: smallest prefix reaching top_p.
    let order = (0..<p.count).sorted { p[$0] > p[$1] }
    var acc = 0.0
    var nucleus: Set<Int32> = []
    for i in order {
      acc += p[i]
      nucleus.insert(Int32(i))
      if acc >= 0.7 { break }
    }
    #expect(Set(try draws(SamplingParameters(topP: 0.7, seed: 2), 3000)) == nucleus)
    let floor = p.max()! * 0.3
    let minSet = Set((0..<p.count).filter { p[$0] >= floor }.map { Int32($0) })
    #expect(Set(try draws(SamplingParameters(minP: 0.3, seed: 3), 3000)) == minSet)
  }

  @Test("Penalties follow the Hugging Face / OpenAI rules")
  func penalties() throws {
    // Repetition: token 0 (logit 2.0) seen in the prompt → 2.0 / 4 = 0.5, below token 1's 1.5.
    var s = try Sampler(parameters: SamplingParameters(temperature: 0, repetitionPenalty: 4), promptTokens: [0])
    #expect(try s.sample(Self.logits).token == 1)
    // Frequency: each generated copy of a token lowers it, so greedy alternates as counts grow.
    var f = try Sampler(parameters: SamplingParameters(temperature: 0, frequencyPenalty: 0.6))
    let seq = try (0..<4).map { _ in try f.sample(Self.logits).token }
    // 2.0 → pick 0 (now 1.4); 1.5 → pick 1 (now 0.9); 1.4 → pick 0 (now 0.8); 1.0 (token 6) → pick 6.
    #expect(seq == [0, 1, 0, 6])
    var pr = try Sampler(parameters: SamplingParameters(temperature: 0, presencePenalty: 0.6))
    #expect(try (0..<3).map { _ in try pr.sample(Self.logits).token } == [0, 1, 0])
  }

  @Test("Log-probabilities: sampled token and top-n come from the raw distribution")
  func logprobs() throws {
    var s = try Sampler(parameters: SamplingParameters(temperature: 0.5, seed: 9, topLogprobs: 3))
    let r = try s.sample(Self.logits)
    let ls = logSoftmax(Self.logits)
    #expect(abs(r.logprob - ls[Int(r.token)]) < 1e-6)
    #expect(r.topLogprobs.map(\.token) == [0, 1, 6])
    #expect(abs(r.topLogprobs[0].logprob - ls[0]) < 1e-6)
    #expect(abs(ls.map { exp(Double($0)) }.reduce(0, +) - 1) < 1e-6)
    #expect(abs(logprob(of: 3, in: Self.logits) - ls[3]) < 1e-6)
    #expect(topLogprobs(Self.logits, n: 2).map(\.token) == [0, 1])
  }

  @Test("Bad parameters are rejected")
  func validation() {
    #expect(throws: EngineError.self) { try Sampler(parameters: SamplingParameters(temperature: -1)) }
    #expect(throws: EngineError.self) { try Sampler(parameters: SamplingParameters(topP: 0)) }
    #expect(throws: EngineError.self) { try Sampler(parameters: SamplingParameters(minP: 2)) }
    var s = try? Sampler(parameters: SamplingParameters())
    #expect(throws: EngineError.self) { try s?.sample([Float.nan, 1]) }
  }
}
