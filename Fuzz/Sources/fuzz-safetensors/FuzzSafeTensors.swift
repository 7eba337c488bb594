// libFuzzer target: the safetensors reader and the Hugging Face checkpoint files read beside it.
// The first input byte picks what the rest is:
//   0: a whole `.safetensors` file,
//   1: `config.json` (hyperparameters; read with `generation_config.json` when the rest holds a NUL:
//      config before it, generation config after),
//   2: `model.safetensors.index.json` of a sharded checkpoint (a valid shard `model.safetensors` is
//      beside it).
@testable import AlignEngine
import FuzzSupport

let fileScratch = ScratchFile("safetensors")
let configFolder = ScratchFile.directory(named: "hf-config")
let indexFolder: String = {
  let dir = ScratchFile.directory(named: "hf-index")
  // A minimal valid shard: header {"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}} and 8 bytes.
  let header = Array(#"{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#.utf8)
  var bytes: [UInt8] = []
  var n = UInt64(header.count)
  for _ in 0..<8 { bytes.append(UInt8(n & 0xFF)); n >>= 8 }
  bytes += header + [UInt8](repeating: 0, count: 8)
  bytes.withUnsafeBufferPointer { ScratchFile.write(path: dir + "/model.safetensors", $0.baseAddress, $0.count) }
  return dir
}()

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzSafeTensors(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
  guard let data, size >= 1 else { return 0 }
  let mode = data[0] % 3
  let rest = data + 1
  let count = size - 1
  switch mode {
  case 0:
    let path = fileScratch.write(rest, count)
    guard let file = try? SafeTensorsFile(path: path) else { return 0 }
    var sum: UInt8 = 0
    for info in file.tensors.values {
      guard info.byteCount > 0 else { continue }
      guard let p = try? file.data(of: info) else { fuzzFailure("accepted tensor \(info.name) has no data") }
      sum &+= p.load(as: UInt8.self) &+ p.load(fromByteOffset: info.byteCount - 1, as: UInt8.self)
      _ = info.elementType
    }
    return sum == 0xFF ? 0 : 0
  case 1:
    let buffer = UnsafeBufferPointer(start: rest, count: count)
    let split = buffer.firstIndex(of: 0)
    ScratchFile.write(path: configFolder + "/config.json", rest, split ?? count)
    let generation = configFolder + "/generation_config.json"
    if let split {
      ScratchFile.write(path: generation, rest + split + 1, count - split - 1)
    } else {
      ScratchFile.remove(path: generation)
    }
    if let (hp, _) = try? HyperparameterReader.fromHF(directory: configFolder) {
      // What the loader derives from accepted hyperparameters must not trap either.
      _ = (hp.qDim, hp.kvDim, hp.outputWidth, hp.inverseFrequencies(freqFactors: nil))
    }
  default:
    ScratchFile.write(path: indexFolder + "/model.safetensors.index.json", rest, count)
    if let checkpoint = try? SafeTensorsCheckpoint(directory: indexFolder) {
      for name in checkpoint.tensorNames where checkpoint.tensor(named: name) == nil {
        fuzzFailure("checkpoint lists \(name) but cannot find it")
      }
    }
  }
  return 0
}

/// Entry point under SwiftPM's renamed `main` (see `runLibFuzzer`).
@_cdecl("fuzz_safetensors_main")
public func fuzzSafeTensorsMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
  runLibFuzzer(argc, argv, { fuzzSafeTensors($0, $1) })
}
