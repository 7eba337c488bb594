import AlignEngine
import Foundation
import Testing

@Suite("Dequantization vs gguf-py")
struct QuantTests {
  struct Entry: Decodable {
    let random_bytes: [UInt8]
    let random_expected: [Float]
    let quantized_bytes: [UInt8]?
    let quantized_expected: [Float]?
  }

  static let fixtures: [String: Entry] = {
    let url = URL(fileURLWithPath: EngineFixtures.root + "/quant/dequant.json")
    return (try? JSONDecoder().decode([String: Entry].self, from: Data(contentsOf: url))) ?? [:]
  }()

  static let types: [(String, GGMLType)] = [
    ("Q4_0", .q4_0), ("Q4_1", .q4_1), ("Q8_0", .q8_0), ("Q4_K", .q4_K), ("Q6_K", .q6_K), ("F16", .f16), ("BF16", .bf16),
  ]

  @Test("Blocks decode exactly as gguf-py decodes them", arguments: types.map(\.0))
  func golden(name: String) throws {
    let type = Self.types.first { $0.0 == name }!.1
    let e = try #require(Self.fixtures[name])
    let got = try dequantize(type, bytes: e.random_bytes)
    #expect(got.count == e.random_expected.count)
    #expect(zip(got, e.random_expected).allSatisfy { abs($0 - $1) <= 1e-6 * max(1, abs($1)) })
    if let qb = e.quantized_bytes, let qe = e.quantized_expected {
      #expect(try dequantize(type, bytes: qb) == qe)
    }
  }

  @Test("Partial blocks are rejected")
  func partial() {
    #expect(throws: EngineError.self) { try dequantize(.q4_1, bytes: [UInt8](repeating: 0, count: 19)) }
    #expect(throws: EngineError.self) { try dequantize(.q5_0, bytes: [UInt8](repeating: 0, count: 22)) }
  }
}
