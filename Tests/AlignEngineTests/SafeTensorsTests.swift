import AlignEngine
import Foundation
import Testing

@Suite("safetensors and Hugging Face folders")
struct SafeTensorsTests {
  @Test("Header, dtypes and shapes of a transformers checkpoint")
  func header() throws {
    let f = try SafeTensorsFile(path: EngineFixtures.tiny("llama-bf16/model.safetensors"))
    let q = try #require(f.tensors["model.layers.0.self_attn.q_proj.weight"])
    #expect(q.dtype == "BF16" && q.shape == [64, 64] && q.byteCount == 64 * 64 * 2)
    let k = try #require(f.tensors["model.layers.1.self_attn.k_proj.weight"])
    #expect(k.shape == [32, 64])
    #expect(f.tensors["lm_head.weight"]?.shape == [256, 64])
  }

  @Test("config.json fields become hyperparameters")
  func config() throws {
    let llama = try TransformerModel(path: EngineFixtures.tiny("llama-f32")).hyperparameters
    #expect(llama.architecture == .llama && llama.kvHeadCount == 2 && llama.headDim == 16 && !llama.tiedEmbeddings)
    #expect(llama.ropeScaling == .llama3(factor: 4, lowFreqFactor: 1, highFreqFactor: 4, originalContextLength: 16))
    #expect(llama.ropeStyle == .halves)
    let qwen2 = try TransformerModel(path: EngineFixtures.tiny("qwen2-f32"))
    #expect(qwen2.hyperparameters.attentionBias && qwen2.hyperparameters.tiedEmbeddings)
    #expect(qwen2.hyperparameters.ropeTheta == 1_000_000)
    #expect(qwen2.metadata.eosTokenIDs == [2] && qwen2.metadata.bosTokenID == 1)
    let qwen3 = try TransformerModel(path: EngineFixtures.tiny("qwen3-bf16")).hyperparameters
    #expect(qwen3.qkNorm && qwen3.headDim == 32 && qwen3.qDim == 128)
  }

  @Test("Sharded checkpoints load through model.safetensors.index.json")
  func sharded() throws {
    // Split the single-file llama into two shards plus an index, as save_pretrained does for big models.
    let src = try SafeTensorsFile(path: EngineFixtures.tiny("llama-f32/model.safetensors"))
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("shards-\(UUID())")
    try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: dir) }
    let all = try Data(contentsOf: URL(fileURLWithPath: src.path))
    let names = src.tensors.keys.sorted()
    var weightMap: [String: String] = [:]
    for (si, part) in [Array(names.prefix(names.count / 2)), Array(names.dropFirst(names.count / 2))].enumerated() {
      let shard = "model-0000\(si + 1)-of-00002.safetensors"
      var header: [String: Any] = [:]
      var body = Data()
      for n in part {
        let t = src.tensors[n]!
        header[n] = ["dtype": t.dtype, "shape": t.shape, "data_offsets": [body.count, body.count + t.byteCount]]
        body.append(all[t.fileOffset..<(t.fileOffset + t.byteCount)])
        weightMap[n] = shard
      }
      let h = try JSONSerialization.data(withJSONObject: header)
      var file = withUnsafeBytes(of: UInt64(h.count).littleEndian) { Data($0) }
      file.append(h)
      file.append(body)
      try file.write(to: dir.appendingPathComponent(shard))
    }
    try JSONSerialization.data(withJSONObject: ["metadata": [:], "weight_map": weightMap])
      .write(to: dir.appendingPathComponent("model.safetensors.index.json"))
    try FileManager.default.copyItem(
      at: URL(fileURLWithPath: EngineFixtures.tiny("llama-f32/config.json")), to: dir.appendingPathComponent("config.json"))
    let model = try TransformerModel(path: dir.path)
    #expect(model.safetensors?.files.count == 2)
    let exp = try EngineFixtures.expected(EngineFixtures.tiny("llama-f32/expected.json"))
    let got = try Engine(model: model).logits(tokens: exp.sequences[0])
    #expect(engineRelativeError(got, exp.logits[0]) < 1e-4)
  }
}
