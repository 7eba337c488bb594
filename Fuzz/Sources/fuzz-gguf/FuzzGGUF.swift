// libFuzzer target: the GGUF reader and what the engine derives from GGUF metadata (model
// hyperparameters, tokenizer description, tokenizer, chat template). Input: a whole GGUF file.
@testable import AlignEngine
import FuzzSupport

let scratch = ScratchFile("gguf")

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzGGUF(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
  let path = scratch.write(data, size)
  guard let gguf = try? GGUFFile(path: path) else { return 0 }
  // Every tensor the reader accepted must lie inside the file: touch its first and last byte.
  var sum: UInt8 = 0
  for info in gguf.tensors {
    guard let n = info.byteCount, n > 0 else { continue }
    guard let p = try? gguf.data(of: info) else { fuzzFailure("accepted tensor \(info.name) has no data") }
    sum &+= p.load(as: UInt8.self) &+ p.load(fromByteOffset: n - 1, as: UInt8.self)
    if gguf.tensor(named: info.name) == nil { fuzzFailure("tensor \(info.name) not found by name") }
  }
  for key in gguf.metadataKeys where gguf.metadata[key] == nil { fuzzFailure("metadata key \(key) has no value") }
  if let (hp, _) = try? HyperparameterReader.fromGGUF(gguf) {
    _ = (hp.qDim, hp.kvDim, hp.outputWidth, hp.inverseFrequencies(freqFactors: nil))
  }
  if let description = try? TokenizerDescription(gguf: gguf), let tokenizer = try? Tokenizer(description) {
    let ids = tokenizer.encode("Hello, world! <|im_start|>user\n héllo 😀 12345")
    _ = tokenizer.decode(ids + [0, 1, -1, Int32.max])
    if let template = try? tokenizer.chatTemplate() {
      _ = try? template.render(messages: [ChatMessage(role: "user", content: "Hi")], addGenerationPrompt: true)
    }
  }
  return sum == 0xFF ? 0 : 0
}

/// Entry point under SwiftPM's renamed `main` (see `runLibFuzzer`).
@_cdecl("fuzz_gguf_main")
public func fuzzGGUFMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
  runLibFuzzer(argc, argv, { fuzzGGUF($0, $1) })
}
