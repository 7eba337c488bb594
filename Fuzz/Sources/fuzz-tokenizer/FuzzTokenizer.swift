// libFuzzer target: tokenizer encode/decode and the streaming detokenizer.
//
// Tokenizers (loaded once): SmolLM2's from its GGUF (models/SmolLM2-135M-Instruct.Q4_1.gguf, or
// $ALIGND_FUZZ_SMOLLM2; skipped with a note when absent) and the committed tokenizer.json fixtures
// under Tests/Fixtures/tokenizers/. Input byte 0 picks the tokenizer (bits 1...) and the mode (bit 0):
//   text mode: the rest is text. Valid UTF-8 is encoded without special-token parsing and must decode
//     back to itself exactly on byte-level tokenizers without normalization (SmolLM2, Llama 3 style),
//     both with `decode` and through `StreamingDetokenizer`; invalid UTF-8 is repaired and encoded.
//     Encoding with special tokens parsed must not crash either.
//   id mode: byte 1 holds flags (skip special tokens, strip a leading space), the rest is token ids
//     (2 bytes each, folded onto -16 ..< vocabulary + 16, so negative and out-of-range ids occur).
//     The streaming detokenizer's pieces must concatenate to exactly what a whole decode gives.
import AlignEngine
import Foundation
import FuzzSupport

struct Loaded: Sendable {
  let name: String
  let tokenizer: Tokenizer
  /// Whether decode(encode(s)) == s must hold for valid UTF-8 made of `representable` bytes.
  let exactRoundTrip: Bool
  /// (256) Bytes whose GPT-2 byte-level symbol is in the vocabulary. A byte without one cannot be
  /// encoded at all and is dropped, as Hugging Face and llama.cpp do (SmolLM2 lacks e.g. 0x04).
  let representable: [Bool]
}

/// GPT-2's byte → printable character map (`bytes_to_unicode`).
let byteLevelSymbols: [String] = {
  let printable = Set(Array(33...126) + Array(161...172) + Array(174...255))
  var out = [String](repeating: "", count: 256)
  var next = 256
  for b in 0..<256 {
    if printable.contains(b) {
      out[b] = String(Character(Unicode.Scalar(UInt32(b))!))
    } else {
      out[b] = String(Character(Unicode.Scalar(UInt32(next))!))
      next += 1
    }
  }
  return out
}()

let tokenizers: [Loaded] = {
  var out: [Loaded] = []
  func add(_ name: String, _ description: TokenizerDescription) {
    do {
      let t = try Tokenizer(description)
      let exact = description.model == .byteLevelBPE && !description.normalizeNFC
        && !description.stripLeadingSpaceOnDecode
        && !description.addedTokens.contains { !$0.special && ($0.lstrip || $0.rstrip) }
      let representable = byteLevelSymbols.map { t.tokenID($0) != nil }
      out.append(Loaded(name: name, tokenizer: t, exactRoundTrip: exact, representable: representable))
    } catch {
      fatalError("fuzz-tokenizer: cannot build tokenizer \(name): \(error)")
    }
  }
  let env = ProcessInfo.processInfo.environment["ALIGND_FUZZ_SMOLLM2"]
  let smol = env ?? Repository.path("models/SmolLM2-135M-Instruct.Q4_1.gguf")
  if Repository.exists(smol) {
    do {
      add("smollm2", try TokenizerDescription(gguf: try GGUFFile(path: smol)))
    } catch {
      fatalError("fuzz-tokenizer: cannot read the SmolLM2 tokenizer from \(smol): \(error)")
    }
  } else {
    FileHandle.standardError.write(Data("fuzz-tokenizer: \(smol) not found (scripts/fetch-models.sh); fuzzing the fixture tokenizers only\n".utf8))
  }
  for folder in ["llama3-style", "qwen2-style", "llama2-style", "llama2-metaspace"] {
    let url = URL(fileURLWithPath: Repository.path("Tests/Fixtures/tokenizers/\(folder)"))
    do {
      add(folder, try TokenizerDescription(huggingFaceFolder: url))
    } catch {
      fatalError("fuzz-tokenizer: cannot read \(url.path): \(error)")
    }
  }
  return out
}()

/// Runs ids through a streaming detokenizer and returns the concatenated pieces.
func stream(_ ids: [TokenID], _ tokenizer: Tokenizer, skipSpecial: Bool, stripLeadingSpace: Bool) -> String {
  var detokenizer = StreamingDetokenizer(tokenizer: tokenizer, skipSpecialTokens: skipSpecial, stripLeadingSpace: stripLeadingSpace)
  var text = ""
  for id in ids { text += detokenizer.append(id) }
  text += detokenizer.finish()
  if detokenizer.hasPendingBytes { fuzzFailure("detokenizer holds bytes after finish()") }
  return text
}

func describe(_ s: String) -> String { s.unicodeScalars.map { String($0.value, radix: 16) }.joined(separator: " ") }

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzTokenizer(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
  guard let data, size >= 1 else { return 0 }
  let loaded = tokenizers[Int(data[0] >> 1) % tokenizers.count]
  let tokenizer = loaded.tokenizer
  let rest = UnsafeBufferPointer(start: data + 1, count: size - 1)
  if data[0] & 1 == 0 {
    if let text = String(validating: rest, as: UTF8.self) {
      let ids = tokenizer.encode(text, addSpecialTokens: false, parseSpecial: false)
      for id in ids where id < 0 || Int(id) >= tokenizer.vocabularySize {
        fuzzFailure("\(loaded.name): encode produced id \(id) outside the vocabulary")
      }
      let decoded = tokenizer.decode(ids)
      let streamed = stream(ids, tokenizer, skipSpecial: false, stripLeadingSpace: tokenizer.definition.stripLeadingSpaceOnDecode)
      if streamed != decoded {
        fuzzFailure("\(loaded.name): streamed [\(describe(streamed))] != decoded [\(describe(decoded))]")
      }
      if loaded.exactRoundTrip && decoded != text && text.utf8.allSatisfy({ loaded.representable[Int($0)] }) {
        fuzzFailure("\(loaded.name): round trip of [\(describe(text))] gave [\(describe(decoded))] via \(ids)")
      }
      let withSpecial = tokenizer.encode(text, addSpecialTokens: true, parseSpecial: true)
      _ = tokenizer.decode(withSpecial, skipSpecialTokens: true)
    } else {
      let repaired = String(decoding: rest, as: UTF8.self)
      _ = tokenizer.decode(tokenizer.encode(repaired, addSpecialTokens: true, parseSpecial: true))
    }
  } else {
    guard rest.count >= 1 else { return 0 }
    let flags = rest[0]
    var ids: [TokenID] = []
    var i = 1
    let span = Int32(tokenizer.vocabularySize + 32)
    while i + 2 <= rest.count {
      // 2 bytes each, folded onto -16 ..< vocabulary + 16: mostly real ids, a few invalid ones.
      let raw = Int32(rest[i]) | Int32(rest[i + 1]) << 8
      ids.append(raw % span - 16)
      i += 2
    }
    let skip = flags & 1 != 0
    let strip = flags & 2 != 0
    let streamed = stream(ids, tokenizer, skipSpecial: skip, stripLeadingSpace: strip)
    var bytes = tokenizer.decodeBytes(ids, skipSpecialTokens: skip)
    if strip, bytes.first == 32 { bytes.removeFirst() }
    let whole = String(decoding: bytes, as: UTF8.self)
    if streamed != whole {
      fuzzFailure("\(loaded.name): streamed [\(describe(streamed))] != whole decode [\(describe(whole))] for \(ids)")
    }
  }
  return 0
}

/// Entry point under SwiftPM's renamed `main` (see `runLibFuzzer`).
@_cdecl("fuzz_tokenizer_main")
public func fuzzTokenizerMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
  runLibFuzzer(argc, argv, { fuzzTokenizer($0, $1) })
}
