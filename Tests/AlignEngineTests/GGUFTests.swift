import AlignEngine
import Foundation
import Testing

@Suite("GGUF reader")
struct GGUFReaderTests {
  static let path = EngineFixtures.tiny("gguf/all-types.gguf")

  func dump() throws -> [String: Any] {
    let data = try Data(contentsOf: URL(fileURLWithPath: EngineFixtures.tiny("gguf/all-types.json")))
    return try JSONSerialization.jsonObject(with: data) as! [String: Any]
  }

  @Test("Metadata of every type equals gguf-py's reading")
  func metadata() throws {
    let g = try GGUFFile(path: Self.path)
    let meta = try dump()["metadata"] as! [String: [String: Any]]
    #expect(g.version == 3)
    #expect(Set(g.metadata.keys) == Set(meta.keys))
    for (key, entry) in meta {
      let types = entry["types"] as! [Int]
      let value = entry["value"]
      let v = try #require(g.metadata[key], "\(key)")
      switch types[0] {
      case 0, 1, 2, 3, 4, 5, 10, 11:
        if let n = value as? Int { #expect(v.intValue == n, "\(key)") }
        if types[0] == 10 { #expect(v == .uint64(18_000_000_000_000_000_000)) }
      case 6, 12: #expect(v.doubleValue == (value as! Double), "\(key)")
      case 7: #expect(v.boolValue == (value as! Bool), "\(key)")
      case 8: #expect(v.stringValue == (value as! String), "\(key)")
      case 9:
        switch types[1] {
        case 8: #expect(g.strings(key) == (value as! [String]))
        case 5: #expect(g.int32s(key) == (value as! [Int]).map { Int32($0) })
        case 6: #expect(g.floats(key) == (value as! [Double]).map { Float($0) })
        case 7: #expect(v.arrayValue?.map(\.boolValue) == (value as! [Bool]).map { Optional($0) })
        case 9: #expect(v == .array([.array([.int32(1), .int32(2)]), .array([.int32(3)])]))
        default: Issue.record("untested array type \(types)")
        }
      default: Issue.record("unknown type \(types) for \(key)")
      }
    }
    #expect(g.alignment == 64)
    #expect(g.architecture == "llama")
    #expect(g.string("missing.key") == nil)
  }

  @Test("Tensor infos, offsets and data equal gguf-py's reading")
  func tensors() throws {
    let g = try GGUFFile(path: Self.path)
    let tensors = try dump()["tensors"] as! [[String: Any]]
    #expect(g.tensors.count == tensors.count)
    for t in tensors {
      let name = t["name"] as! String
      let info = try #require(g.tensor(named: name))
      // gguf-py lists shapes in ggml order (innermost first), like ours.
      #expect(info.shape == (t["shape"] as! [Int]), "\(name)")
      #expect(Int(info.typeID) == (t["type"] as! Int))
      #expect(info.fileOffset == (t["offset"] as! Int))
      #expect(info.byteCount == (t["bytes"] as! Int))
      #expect(info.fileOffset % 64 == 0)
      let bytes = try engineReadBytes(Self.path, offset: info.fileOffset, count: info.byteCount!)
      let values = try dequantize(info.type!, bytes: bytes)
      #expect(values == (t["values"] as! [Double]).map { Float($0) }, "\(name)")
    }
  }

  @Test("A missing or non-GGUF file gives a typed error naming it")
  func badFiles() throws {
    #expect(throws: EngineError.self) { try GGUFFile(path: "/nonexistent/file.gguf") }
    let url = FileManager.default.temporaryDirectory.appendingPathComponent("not-gguf-\(UUID()).gguf")
    try Data("hello world, not a gguf file".utf8).write(to: url)
    defer { try? FileManager.default.removeItem(at: url) }
    do {
      _ = try GGUFFile(path: url.path)
      Issue.record("expected an error")
    } catch let e as EngineError {
      #expect(e.description.contains(url.path))
    }
  }
}

func engineReadBytes(_ path: String, offset: Int, count: Int) throws -> [UInt8] {
  let data = try Data(contentsOf: URL(fileURLWithPath: path))
  return Array(data[offset..<(offset + count)])
}

@Suite("Malformed files throw, never crash")
struct FuzzTests {
  static func mutate(_ source: String, ext: String, _ body: (Data) -> Data) throws -> String {
    let data = try Data(contentsOf: URL(fileURLWithPath: source))
    let url = FileManager.default.temporaryDirectory.appendingPathComponent("fuzz-\(UUID()).\(ext)")
    try body(data).write(to: url)
    return url.path
  }

  @Test("Truncated GGUF files throw malformedFile", arguments: ["all-types.gguf", "llama-q4_1.gguf"])
  func truncatedGGUF(name: String) throws {
    let src = EngineFixtures.tiny("gguf/" + name)
    let size = try Data(contentsOf: URL(fileURLWithPath: src)).count
    let header = try GGUFFile(path: src).dataOffset
    var lengths = Array(0..<min(header + 1, 600))
    lengths += stride(from: header, to: size, by: max(1, (size - header) / 40)).map { $0 }
    lengths.append(size - 1)
    for n in lengths {
      let p = try Self.mutate(src, ext: "gguf") { $0.prefix(n) }
      defer { try? FileManager.default.removeItem(atPath: p) }
      #expect(throws: EngineError.self, "truncated to \(n) of \(size)") { try TransformerModel(path: p) }
      if n < header {
        #expect(throws: EngineError.self, "truncated to \(n)") { try GGUFFile(path: p) }
      }
    }
  }

  @Test("Bit-flipped GGUF headers either parse or throw", arguments: ["all-types.gguf", "llama-q4_1.gguf"])
  func bitFlippedGGUF(name: String) throws {
    let src = EngineFixtures.tiny("gguf/" + name)
    let header = try GGUFFile(path: src).dataOffset
    var rng = Xoshiro256(seed: 42)
    var threw = 0
    for _ in 0..<300 {
      let flips = 1 + Int(rng.next() % 3)
      let p = try Self.mutate(src, ext: "gguf") { d in
        var d = d
        for _ in 0..<flips {
          let i = Int(rng.next() % UInt64(header))
          d[i] ^= UInt8(1 << (rng.next() % 8))
        }
        return d
      }
      defer { try? FileManager.default.removeItem(atPath: p) }
      do {
        let m = try TransformerModel(path: p)
        // If a flip left the file loadable, running it must still not crash.
        let e = try Engine(model: m, settings: EngineSettings(maxBatchTokens: 8, maxContextLength: 16))
        _ = try? e.logits(tokens: [1, 2])
      } catch is EngineError {
        threw += 1
      }
    }
    #expect(threw > 0)
  }

  @Test("Truncated and corrupted safetensors headers throw")
  func safetensors() throws {
    let src = EngineFixtures.tiny("qwen2-f32/model.safetensors")
    let data = try Data(contentsOf: URL(fileURLWithPath: src))
    let headerLen = Int(data.prefix(8).withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) })
    for n in Array(0..<12) + stride(from: 12, to: headerLen + 8, by: 37).map({ $0 }) + [data.count - 1] {
      let p = try Self.mutate(src, ext: "safetensors") { $0.prefix(n) }
      defer { try? FileManager.default.removeItem(atPath: p) }
      #expect(throws: EngineError.self, "truncated to \(n)") { try SafeTensorsFile(path: p) }
    }
    var rng = Xoshiro256(seed: 7)
    var threw = 0
    for _ in 0..<300 {
      let p = try Self.mutate(src, ext: "safetensors") { d in
        var d = d
        let i = Int(rng.next() % UInt64(headerLen + 8))
        d[i] ^= UInt8(1 << (rng.next() % 8))
        return d
      }
      defer { try? FileManager.default.removeItem(atPath: p) }
      do { _ = try SafeTensorsFile(path: p) } catch is EngineError { threw += 1 }
    }
    #expect(threw > 0)
    // A lying header length.
    let p = try Self.mutate(src, ext: "safetensors") { d in
      var d = d
      d.replaceSubrange(0..<8, with: withUnsafeBytes(of: UInt64(1 << 40).littleEndian) { Data($0) })
      return d
    }
    defer { try? FileManager.default.removeItem(atPath: p) }
    #expect(throws: EngineError.self) { try SafeTensorsFile(path: p) }
  }
}
