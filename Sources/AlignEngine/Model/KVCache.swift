/// Identifies one sequence in a `KVCache`.
public struct SequenceID: Hashable, Sendable, Comparable, CustomStringConvertible, ExpressibleByIntegerLiteral {
  /// The numeric id.
  public let rawValue: Int
  /// Wraps a numeric id.
  public init(_ rawValue: Int) { self.rawValue = rawValue }
  /// Wraps a numeric id given as a literal.
  public init(integerLiteral value: Int) { rawValue = value }
  /// Orders by numeric id.
  public static func < (a: SequenceID, b: SequenceID) -> Bool { a.rawValue < b.rawValue }
  /// A human-readable description.
  public var description: String { "seq\(rawValue)" }
}

/// How a `KVCache` stores keys and values.
public enum KVCachePrecision: String, Sendable, CaseIterable {
  /// 4 bytes per number: exactly the keys and values the forward pass computed.
  case float32
  /// IEEE half, 2 bytes per number (llama.cpp's default): half the memory and half the bytes
  /// attention reads per cached token; each key and value is rounded to nearest on writing (about
  /// 3 significant digits), and attention computes in float from the stored halves.
  case float16

  /// Bytes of one stored number.
  public var byteWidth: Int { self == .float32 ? 4 : 2 }
}

/// Keys and values of past tokens, addressed by sequence, stored in fixed-size blocks.
///
/// Capacity is fixed at creation. Sequences own lists of blocks; `fork` shares a parent's blocks (a
/// shared block is copied only when one of its sharers writes into it), so n samples of one prompt
/// pay for one prefill and one copy of the prompt's keys and values.
///
/// Not thread-safe: one thread at a time (the one driving `Engine.forward`) may use a cache.
public final class KVCache: @unchecked Sendable {
  // Safety: documented as externally synchronized; the engine touches it only inside forward.
  /// Number of layers of the model this cache was made for.
  public let layerCount: Int
  /// Width of one token's keys (or values) in one layer.
  public let kvDim: Int
  /// Tokens per block.
  public let blockSize: Int
  /// Number of blocks.
  public let blockCount: Int
  /// How keys and values are stored.
  public let precision: KVCachePrecision

  /// (block, layer, blockSize, kvDim)
  let keys: AlignedBuffer
  /// (block, layer, blockSize, kvDim)
  let values: AlignedBuffer
  private var refCounts: [Int32]  // (block)
  private var freeBlocks: [Int32]
  struct SequenceState {
    var blocks: [Int32]
    var length: Int
  }
  private(set) var sequences: [SequenceID: SequenceState] = [:]

  /// Creates a cache for `model` holding up to `capacityTokens` tokens over all sequences.
  /// - Throws: `EngineError.invalidArgument` for a non-positive capacity or block size.
  public convenience init(
    model: TransformerModel, capacityTokens: Int, blockSize: Int = 16, precision: KVCachePrecision = .float32
  ) throws {
    try self.init(
      layerCount: model.hyperparameters.layerCount, kvDim: model.hyperparameters.kvDim,
      capacityTokens: capacityTokens, blockSize: blockSize, precision: precision)
  }

  /// Creates a cache for a model with `layerCount` layers and key/value width `kvDim`.
  public init(
    layerCount: Int, kvDim: Int, capacityTokens: Int, blockSize: Int = 16, precision: KVCachePrecision = .float32
  ) throws {
    guard capacityTokens > 0, blockSize > 0, layerCount > 0, kvDim > 0 else {
      throw EngineError.invalidArgument("KV cache capacity \(capacityTokens) / block size \(blockSize) must be positive")
    }
    self.layerCount = layerCount
    self.kvDim = kvDim
    self.blockSize = blockSize
    self.precision = precision
    blockCount = (capacityTokens + blockSize - 1) / blockSize
    let bytes = blockCount * layerCount * blockSize * kvDim * precision.byteWidth
    keys = AlignedBuffer(byteCount: bytes)
    values = AlignedBuffer(byteCount: bytes)
    refCounts = [Int32](repeating: 0, count: blockCount)
    freeBlocks = (0..<Int32(blockCount)).reversed()
  }

  /// Total capacity in tokens.
  public var capacityTokens: Int { blockCount * blockSize }
  /// Tokens that can still be added to new blocks.
  public var freeTokens: Int { freeBlocks.count * blockSize }
  /// Sequences in the cache.
  public var sequenceIDs: [SequenceID] { sequences.keys.sorted() }

  /// Number of tokens cached for `id`, or nil if the sequence does not exist.
  public func length(of id: SequenceID) -> Int? { sequences[id]?.length }

  /// Whether `id` exists.
  public func contains(_ id: SequenceID) -> Bool { sequences[id] != nil }

  /// Adds an empty sequence.
  /// - Throws: `EngineError.invalidArgument` if it already exists.
  public func addSequence(_ id: SequenceID) throws {
    guard sequences[id] == nil else { throw EngineError.invalidArgument("sequence \(id) already exists") }
    sequences[id] = SequenceState(blocks: [], length: 0)
  }

  /// Removes a sequence and frees the blocks only it used. Removing an unknown sequence does nothing.
  public func removeSequence(_ id: SequenceID) {
    guard let s = sequences.removeValue(forKey: id) else { return }
    for b in s.blocks { release(b) }
  }

  /// Removes every sequence.
  public func removeAll() {
    for id in Array(sequences.keys) { removeSequence(id) }
  }

  /// Keeps only the first `length` tokens of `id`.
  /// - Throws: `EngineError.invalidArgument` for an unknown sequence or a length beyond the current one.
  public func truncate(_ id: SequenceID, to length: Int) throws {
    guard var s = sequences[id] else { throw EngineError.invalidArgument("unknown sequence \(id)") }
    guard length >= 0, length <= s.length else {
      throw EngineError.invalidArgument("cannot truncate \(id) of length \(s.length) to \(length)")
    }
    let keep = (length + blockSize - 1) / blockSize
    while s.blocks.count > keep { release(s.blocks.removeLast()) }
    s.length = length
    sequences[id] = s
  }

  /// Makes `target` a new sequence that shares all of `source`'s cached tokens.
  /// - Throws: `EngineError.invalidArgument` if `source` is unknown or `target` exists.
  public func fork(_ source: SequenceID, into target: SequenceID) throws {
    guard let s = sequences[source] else { throw EngineError.invalidArgument("unknown sequence \(source)") }
    guard sequences[target] == nil else { throw EngineError.invalidArgument("sequence \(target) already exists") }
    for b in s.blocks { refCounts[Int(b)] += 1 }
    sequences[target] = s
  }

  private func release(_ b: Int32) {
    refCounts[Int(b)] -= 1
    if refCounts[Int(b)] == 0 { freeBlocks.append(b) }
  }

  /// Blocks that appending `n` tokens to `id` would take from the free list (new blocks plus a
  /// copy of a shared partially filled last block).
  func blocksNeeded(_ id: SequenceID, adding n: Int) -> Int {
    guard let s = sequences[id], n > 0 else { return 0 }
    let have = s.blocks.count
    let need = (s.length + n + blockSize - 1) / blockSize
    var extra = max(0, need - have)
    if s.length % blockSize != 0, let last = s.blocks.last, refCounts[Int(last)] > 1 { extra += 1 }
    return extra
  }

  /// Makes room to write `n` tokens after the current end of `id`: allocates blocks and copies a
  /// shared last block (copy on write). Callers check `blocksNeeded` against `freeBlocks` first.
  func reserve(_ id: SequenceID, adding n: Int) throws {
    guard var s = sequences[id] else { throw EngineError.invalidArgument("unknown sequence \(id)") }
    guard n > 0 else { return }
    if s.length % blockSize != 0, let last = s.blocks.last, refCounts[Int(last)] > 1 {
      guard let fresh = freeBlocks.popLast() else {
        throw EngineError.cacheFull(requestedTokens: n, freeTokens: freeTokens)
      }
      refCounts[Int(fresh)] = 1
      let stride = layerCount * blockSize * kvDim * precision.byteWidth
      for buffer in [keys, values] {
        (buffer.raw + Int(fresh) * stride).copyMemory(from: buffer.raw + Int(last) * stride, byteCount: stride)
      }
      release(last)
      s.blocks[s.blocks.count - 1] = fresh
    }
    let need = (s.length + n + blockSize - 1) / blockSize
    while s.blocks.count < need {
      guard let fresh = freeBlocks.popLast() else {
        sequences[id] = s
        throw EngineError.cacheFull(requestedTokens: n, freeTokens: freeTokens)
      }
      refCounts[Int(fresh)] = 1
      s.blocks.append(fresh)
    }
    sequences[id] = s
  }

  /// Sets the length of `id` after a forward pass wrote its new tokens.
  func commit(_ id: SequenceID, length: Int) {
    sequences[id]?.length = length
  }

  /// Blocks of `id` that no other sequence shares (what removing it would free).
  public func exclusiveBlocks(of id: SequenceID) -> Int {
    sequences[id]?.blocks.reduce(0) { $0 + (refCounts[Int($1)] == 1 ? 1 : 0) } ?? 0
  }

  /// The block list of `id` (for attention).
  func blocks(of id: SequenceID) -> [Int32] { sequences[id]?.blocks ?? [] }

  /// Stores `count` numbers at element `offset` of `buffer` (keys or values), in this cache's precision.
  @inline(__always)
  func store(
    _ source: UnsafePointer<Float>, into buffer: AlignedBuffer, at offset: Int, count: Int, kernels: KernelSet
  ) {
    switch precision {
    case .float32: (buffer.floats + offset).update(from: source, count: count)
    case .float16:
      kernels.floatsToHalves(source, buffer.raw.assumingMemoryBound(to: Float16.self) + offset, count: count)
    }
  }

  /// Element offset of (layer, position) for a sequence whose block list is `blocks`.
  @inline(__always)
  func offset(blocks: UnsafeBufferPointer<Int32>, layer: Int, position: Int) -> Int {
    let b = Int(blocks[position / blockSize])
    return ((b * layerCount + layer) * blockSize + position % blockSize) * kvDim
  }
}
