import AlignKernelTypes
import CBLAS
import Foundation

/// Runtime settings: how to run a model (not what the model is).
public struct EngineSettings: Sendable, Equatable {
  /// Worker threads for matrix products and attention.
  public var threads: Int = 2
  /// Most tokens processed in one internal forward step; longer batches are split into steps.
  public var maxBatchTokens: Int = 256
  /// Longest sequence (prompt plus generated tokens) the engine accepts; nil means
  /// min(model context length, 8192).
  public var maxContextLength: Int?
  /// An item's chunk with at least this many tokens (a prompt) goes through sgemm in float; shorter
  /// chunks (decode steps) use integer dot products on Q8-quantized activations for Q4_0/Q4_1/Q8_0
  /// weights. The choice is made per item, never per batch, so a decoding sequence's logits are
  /// bitwise the same whichever sequences share its batch.
  public var gemmMinTokens: Int = 4
  /// Quantize activations to 8 bits for Q4_0/Q4_1/Q8_0 weights in decode steps (llama.cpp's scheme;
  /// ~1e-3 relative error, much faster). False sends every row through float sgemm.
  public var quantizedActivations: Bool = true
  /// True (default): the integer-or-sgemm choice is made per item, so decode rows are bitwise
  /// identical whatever else is in the batch (a seed reproduces a completion under any load).
  /// False: the choice is made per step, so a step with many decoding sequences runs them all through
  /// sgemm — about 1.6–2× the aggregate throughput at 32 sequences, but results then depend slightly
  /// on the batch.
  public var batchInvariant: Bool = true
  /// The kernels to run on; nil picks the process's preferred set (`KernelSet.preferred()`: the
  /// fastest this CPU supports, or `ALIGND_KERNELS`). Every set gives the same bits.
  public var kernels: KernelSet?

  /// Creates a value from its fields.
  public init(
    threads: Int = 2, maxBatchTokens: Int = 256, maxContextLength: Int? = nil, gemmMinTokens: Int = 4,
    quantizedActivations: Bool = true, batchInvariant: Bool = true, kernels: KernelSet? = nil
  ) {
    self.kernels = kernels
    self.threads = threads
    self.maxBatchTokens = maxBatchTokens
    self.maxContextLength = maxContextLength
    self.gemmMinTokens = gemmMinTokens
    self.quantizedActivations = quantizedActivations
    self.batchInvariant = batchInvariant
  }
}

/// Which rows of output a batch item wants back.
public enum LogitsRequest: Sendable, Equatable {
  /// No output (e.g. a prompt chunk whose logits nobody reads).
  case none
  /// The output row of the item's last token (the next-token distribution).
  case last
  /// One output row per token of the item (prompt log-probabilities), computed with sgemm.
  case all
  /// One output row per token, each computed on the decode path (integer row products, whatever the
  /// item's length), so row i is bitwise the row that decoding the item's tokens one at a time
  /// would give after token i when the weights are packed (`TransformerModel.decodesRowwise`; float
  /// weights go through sgemm either way). What verifying drafted tokens needs (speculative decoding).
  case each
}

/// One sequence's share of a batched forward call.
public struct BatchItem: Sendable, Equatable {
  /// The sequence; it must exist in the cache. Its new tokens are appended after its cached length.
  public var sequence: SequenceID
  /// New tokens to run (a prompt chunk for a new sequence, one token for a running one).
  public var tokens: [Int32]
  /// Which output rows to return.
  public var logits: LogitsRequest
  /// Also return the final (normed) hidden state at the last token (the feature a reward head reads).
  public var wantHidden: Bool

  /// Creates a value from its fields.
  public init(sequence: SequenceID, tokens: [Int32], logits: LogitsRequest = .last, wantHidden: Bool = false) {
    self.sequence = sequence
    self.tokens = tokens
    self.logits = logits
    self.wantHidden = wantHidden
  }

  /// Convenience matching the batching layer's vocabulary: all positions or only the last.
  public init(sequence: SequenceID, tokens: [Int32], wantAllLogits: Bool) {
    self.init(sequence: sequence, tokens: tokens, logits: wantAllLogits ? .all : .last)
  }
}

/// What a forward call returns for one batch item.
public struct ForwardOutput: Sendable {
  /// The sequence this output belongs to.
  public let sequence: SequenceID
  /// Width of one output row: vocabulary size for a causal LM, label count for a classifier.
  public let width: Int
  /// Number of rows in `logits` (0, 1, or the item's token count).
  public let rows: Int
  /// (rows, width) row-major.
  public var logits: [Float]
  /// (hidden) final normed hidden state at the item's last token, when asked.
  public var hidden: [Float]?

  /// Output row `i`.
  public func row(_ i: Int) -> ArraySlice<Float> { logits[(i * width)..<((i + 1) * width)] }
}

/// Runs a `TransformerModel`: owns the activation buffers (sized once) and the thread fan-out.
///
/// `forward` is serialized by an internal lock; one engine runs one forward pass at a time. Run
/// several engines on one model to overlap work.
public final class Engine: @unchecked Sendable {
  // Safety: all mutable state (the buffers) is used only while `lock` is held.
  /// The model this engine runs.
  public let model: TransformerModel
  /// Runtime settings fixed at creation.
  public let settings: EngineSettings
  /// Longest sequence accepted.
  public let maxContextLength: Int
  /// The kernels this engine's products run on (`settings.kernels`, or the process's preferred set).
  public let kernels: KernelSet
  private let lock = NSLock()
  private let scratch: MatmulScratch
  private let policy: MatmulPolicy
  private let outChunk: Int

  // Activation buffers; T = settings.maxBatchTokens.
  private let x: AlignedBuffer  // (T, hidden) residual stream
  private let xn: AlignedBuffer  // (T, hidden) normed
  private let q: AlignedBuffer  // (T, qDim)
  private let k: AlignedBuffer  // (T, kvDim)
  private let v: AlignedBuffer  // (T, kvDim)
  private let att: AlignedBuffer  // (T, qDim) attention output
  private let gate: AlignedBuffer  // (T, ffn)
  private let up: AlignedBuffer  // (T, ffn)
  private let cosTable: AlignedBuffer  // (T, rot/2)
  private let sinTable: AlignedBuffer  // (T, rot/2)
  private let scores: AlignedBuffer  // (threads, group × maxContext + 2 × group), group = query heads per KV head
  private let converted: AlignedBuffer  // (threads, halfSpan, headDim) a float16 cache's keys or values as floats
  /// Positions of a float16 cache converted at a time in attention (64 × 64 floats: 16 KB, in L1).
  private static let halfSpan = 64
  private let outHidden: AlignedBuffer  // (outChunk, hidden)
  private let outRows: AlignedBuffer  // (outChunk, outputWidth)
  private var positions: [Int]  // (T)
  private var tokenPiece: [Int]  // (T) index of the piece each token belongs to

  /// Creates an engine for `model`.
  /// - Throws: `EngineError.invalidArgument` for non-positive settings.
  public init(model: TransformerModel, settings: EngineSettings = EngineSettings()) throws {
    guard settings.threads > 0, settings.maxBatchTokens > 0, settings.gemmMinTokens > 0 else {
      throw EngineError.invalidArgument("engine settings must be positive: \(settings)")
    }
    self.model = model
    self.settings = settings
    let hp = model.hyperparameters
    let ctx = settings.maxContextLength ?? min(hp.contextLength, 8192)
    guard ctx > 0 else { throw EngineError.invalidArgument("maxContextLength \(ctx)") }
    maxContextLength = ctx
    let t = settings.maxBatchTokens
    let maxCols = max(hp.hiddenSize, hp.qDim, hp.intermediateSize)
    kernels = try settings.kernels.map { try $0.checkSupported(); return $0 } ?? KernelSet.preferred()
    scratch = MatmulScratch(threads: settings.threads, maxCols: maxCols, maxTokens: t, kernels: kernels)
    policy = MatmulPolicy(quantizedActivations: settings.quantizedActivations)
    outChunk = min(t, 32)
    x = AlignedBuffer(floats: t * hp.hiddenSize)
    xn = AlignedBuffer(floats: t * hp.hiddenSize)
    q = AlignedBuffer(floats: t * hp.qDim)
    k = AlignedBuffer(floats: t * hp.kvDim)
    v = AlignedBuffer(floats: t * hp.kvDim)
    att = AlignedBuffer(floats: t * hp.qDim)
    gate = AlignedBuffer(floats: t * hp.intermediateSize)
    up = AlignedBuffer(floats: t * hp.intermediateSize)
    cosTable = AlignedBuffer(floats: t * hp.ropeDimension / 2)
    sinTable = AlignedBuffer(floats: t * hp.ropeDimension / 2)
    let group = hp.headCount / max(hp.kvHeadCount, 1)
    scores = AlignedBuffer(floats: settings.threads * (group * ctx + 2 * group))
    converted = AlignedBuffer(floats: settings.threads * Self.halfSpan * hp.headDim)
    outHidden = AlignedBuffer(floats: outChunk * hp.hiddenSize)
    outRows = AlignedBuffer(floats: outChunk * hp.outputWidth)
    positions = [Int](repeating: 0, count: t)
    tokenPiece = [Int](repeating: 0, count: t)
    // Our own threads split the work; OpenBLAS runs single-threaded inside each of them.
    openblas_set_num_threads(1)
  }

  /// Creates a KV cache sized for this engine's model.
  public func makeCache(
    capacityTokens: Int, blockSize: Int = 16, precision: KVCachePrecision = .float32
  ) throws -> KVCache {
    try KVCache(model: model, capacityTokens: capacityTokens, blockSize: blockSize, precision: precision)
  }

  struct Piece {
    var item: Int
    var sequence: SequenceID
    var start: Int  // offset of the first token in the item
    var count: Int
    var position: Int  // cache position of the first token
    var tokenOffset: Int  // row of the first token in the step's buffers
    var outputAll: Bool
    var outputLast: Bool
    /// Every row on the decode path (`LogitsRequest.each`).
    var outputEach: Bool
    var hidden: Bool
  }

  /// Advances every item's sequence by its tokens in one batched pass and returns the requested outputs.
  ///
  /// Each item's tokens are appended after its sequence's cached length (each sequence at its own
  /// position). Batches larger than `settings.maxBatchTokens` are split into steps internally.
  /// - Parameters:
  ///   - items: at most one item per sequence; every sequence must already exist in `cache`.
  ///   - cache: the KV cache holding the sequences.
  /// - Returns: one output per item, in item order.
  /// - Throws: `EngineError.invalidArgument` (unknown or repeated sequence, token id out of range,
  ///   context too long), `EngineError.cacheFull` (nothing is changed in that case).
  public func forward(_ items: [BatchItem], cache: KVCache) throws -> [ForwardOutput] {
    lock.lock()
    defer { lock.unlock() }
    let hp = model.hyperparameters
    guard cache.layerCount == hp.layerCount, cache.kvDim == hp.kvDim else {
      throw EngineError.invalidArgument("KV cache was made for another model shape")
    }
    var seen = Set<SequenceID>()
    var totalBlocks = 0
    for item in items {
      guard seen.insert(item.sequence).inserted else {
        throw EngineError.invalidArgument("sequence \(item.sequence) appears twice in one batch")
      }
      guard let len = cache.length(of: item.sequence) else {
        throw EngineError.invalidArgument("unknown sequence \(item.sequence)")
      }
      guard !item.tokens.isEmpty else { throw EngineError.invalidArgument("empty token list for \(item.sequence)") }
      guard len + item.tokens.count <= maxContextLength else {
        throw EngineError.invalidArgument(
          "sequence \(item.sequence) would reach \(len + item.tokens.count) tokens, limit \(maxContextLength)")
      }
      for t in item.tokens where t < 0 || Int(t) >= hp.vocabSize {
        throw EngineError.invalidArgument("token id \(t) outside vocabulary of \(hp.vocabSize)")
      }
      totalBlocks += cache.blocksNeeded(item.sequence, adding: item.tokens.count)
    }
    guard totalBlocks * cache.blockSize <= cache.freeTokens else {
      throw EngineError.cacheFull(
        requestedTokens: items.reduce(0) { $0 + $1.tokens.count }, freeTokens: cache.freeTokens)
    }
    for item in items { try cache.reserve(item.sequence, adding: item.tokens.count) }

    var outputs = items.map { item -> ForwardOutput in
      let rows: Int
      switch item.logits {
      case .none: rows = 0
      case .last: rows = 1
      case .all, .each: rows = item.tokens.count
      }
      var o = ForwardOutput(
        sequence: item.sequence, width: hp.outputWidth, rows: rows, logits: [], hidden: nil)
      o.logits.reserveCapacity(rows * hp.outputWidth)
      return o
    }
    var done = [Int](repeating: 0, count: items.count)
    while true {
      var pieces: [Piece] = []
      var budget = settings.maxBatchTokens
      for (i, item) in items.enumerated() where done[i] < item.tokens.count && budget > 0 {
        let n = min(item.tokens.count - done[i], budget)
        let isEnd = done[i] + n == item.tokens.count
        pieces.append(Piece(
          item: i, sequence: item.sequence, start: done[i], count: n,
          position: cache.length(of: item.sequence)!, tokenOffset: 0,
          outputAll: item.logits == .all, outputLast: isEnd && item.logits == .last, outputEach: item.logits == .each,
          hidden: isEnd && item.wantHidden))
        budget -= n
      }
      if pieces.isEmpty { break }
      // Decode-path pieces first (`.each` ones whatever their length, then decode-sized ones): their
      // rows take the row-wise integer path, the rest sgemm.
      let each = pieces.filter(\.outputEach)
      let small = pieces.filter { !$0.outputEach && $0.count < settings.gemmMinTokens }
      pieces = each + small + pieces.filter { !$0.outputEach && $0.count >= settings.gemmMinTokens }
      var offset = 0
      for k in pieces.indices {
        pieces[k].tokenOffset = offset
        offset += pieces[k].count
      }
      try step(pieces, items: items, cache: cache, outputs: &outputs)
      for p in pieces {
        done[p.item] += p.count
        cache.commit(p.sequence, length: p.position + p.count)
      }
    }
    return outputs
  }

  private func step(_ pieces: [Piece], items: [BatchItem], cache: KVCache, outputs: inout [ForwardOutput]) throws {
    let hp = model.hyperparameters
    let d = hp.hiddenSize
    let qDim = hp.qDim
    let kvDim = hp.kvDim
    let ffn = hp.intermediateSize
    let headDim = hp.headDim
    let half = hp.ropeDimension / 2
    let total = pieces.reduce(0) { $0 + $1.count }
    let decodePath = pieces.reduce(0) { $0 + ($1.outputEach || $1.count < settings.gemmMinTokens ? $1.count : 0) }
    let rowwise =
      settings.batchInvariant
      ? decodePath
      : (total < settings.gemmMinTokens ? total : pieces.reduce(0) { $0 + ($1.outputEach ? $1.count : 0) })
    let xp = x.floats, xnp = xn.floats, qp = q.floats, kp = k.floats, vp = v.floats
    let attp = att.floats, gatep = gate.floats, upp = up.floats
    let cosp = cosTable.floats, sinp = sinTable.floats

    // Embeddings, positions and RoPE angles.
    for (pi, p) in pieces.enumerated() {
      let toks = items[p.item].tokens
      for j in 0..<p.count {
        let t = p.tokenOffset + j
        positions[t] = p.position + j
        tokenPiece[t] = pi
        model.tokenEmbedding.dequantize(row: Int(toks[p.start + j]), into: xp + t * d)
        let pos = Float(p.position + j)
        for i in 0..<half {
          let angle = pos * model.inverseFrequencies[i]
          cosp[t * half + i] = cos(angle)
          sinp[t * half + i] = sin(angle)
        }
      }
    }
    let blockLists = pieces.map { cache.blocks(of: $0.sequence) }

    for (li, layer) in model.layers.enumerated() {
      kernels.rmsNorm(xp, layer.attnNorm, xnp, rows: total, dim: d, eps: hp.rmsNormEps)
      matmul(
        sharing: xnp, [(layer.wq, qp), (layer.wk, kp), (layer.wv, vp)], tokens: total, scratch: scratch,
        policy: policy, rowwiseTokens: rowwise)
      if let bq = layer.bq, let bk = layer.bk, let bv = layer.bv {
        for t in 0..<total {
          for i in 0..<qDim { qp[t * qDim + i] += bq[i] }
          for i in 0..<kvDim {
            kp[t * kvDim + i] += bk[i]
            vp[t * kvDim + i] += bv[i]
          }
        }
      }
      if let qn = layer.qNorm, let kn = layer.kNorm {
        kernels.rmsNorm(qp, qn, qp, rows: total * hp.headCount, dim: headDim, eps: hp.rmsNormEps)
        kernels.rmsNorm(kp, kn, kp, rows: total * hp.kvHeadCount, dim: headDim, eps: hp.rmsNormEps)
      }
      applyRope(qp, tokens: total, heads: hp.headCount, headDim: headDim, half: half, style: hp.ropeStyle)
      applyRope(kp, tokens: total, heads: hp.kvHeadCount, headDim: headDim, half: half, style: hp.ropeStyle)

      // Write this step's keys and values into the cache.
      for (pi, p) in pieces.enumerated() {
        blockLists[pi].withUnsafeBufferPointer { bl in
          for j in 0..<p.count {
            let t = p.tokenOffset + j
            let o = cache.offset(blocks: bl, layer: li, position: p.position + j)
            cache.store(kp + t * kvDim, into: cache.keys, at: o, count: kvDim, kernels: kernels)
            cache.store(vp + t * kvDim, into: cache.values, at: o, count: kvDim, kernels: kernels)
          }
        }
      }
      attention(layer: li, pieces: pieces, blockLists: blockLists, total: total, cache: cache)
      matmul(layer.wo, attp, tokens: total, xp, accumulate: true, scratch: scratch, policy: policy, rowwiseTokens: rowwise)

      kernels.rmsNorm(xp, layer.ffnNorm, xnp, rows: total, dim: d, eps: hp.rmsNormEps)
      matmul(
        sharing: xnp, [(layer.wGate, gatep), (layer.wUp, upp)], tokens: total, scratch: scratch, policy: policy,
        rowwiseTokens: rowwise)
      kernels.swiGLU(gatep, upp, count: total * ffn)
      matmul(layer.wDown, gatep, tokens: total, xp, accumulate: true, scratch: scratch, policy: policy, rowwiseTokens: rowwise)
    }

    // Output rows: gather the wanted tokens, norm, project, copy out in chunks. Last-token and `.each`
    // rows (what sampling reads) use the batch-invariant row-wise products; all-position rows (prompt
    // log-probabilities) use sgemm.
    var wantedLast: [(piece: Int, token: Int)] = []
    var wantedAll: [(piece: Int, token: Int)] = []
    var wantedEach: [(piece: Int, token: Int)] = []
    for (pi, p) in pieces.enumerated() {
      if p.outputAll {
        for j in 0..<p.count { wantedAll.append((pi, p.tokenOffset + j)) }
      } else if p.outputEach {
        for j in 0..<p.count { wantedEach.append((pi, p.tokenOffset + j)) }
      } else if p.outputLast {
        wantedLast.append((pi, p.tokenOffset + p.count - 1))
      }
      if p.hidden {
        let t = p.tokenOffset + p.count - 1
        var h = [Float](repeating: 0, count: d)
        h.withUnsafeMutableBufferPointer { hb in
          kernels.rmsNorm(xp + t * d, model.outputNorm, hb.baseAddress!, rows: 1, dim: d, eps: hp.rmsNormEps)
        }
        outputs[p.item].hidden = h
      }
    }
    let width = hp.outputWidth
    // Whether a chunk of n rows takes the row-wise products.
    let invariant = settings.batchInvariant, gemmMin = settings.gemmMinTokens
    let groups: [([(piece: Int, token: Int)], (Int) -> Bool)] = [
      (wantedLast, { n in invariant || n < gemmMin }), (wantedEach, { _ in true }), (wantedAll, { _ in false }),
    ]
    for (wanted, rowwiseOutput) in groups {
      var c = 0
      while c < wanted.count {
        let n = min(outChunk, wanted.count - c)
        for r in 0..<n {
          kernels.rmsNorm(
            xp + wanted[c + r].token * d, model.outputNorm, outHidden.floats + r * d, rows: 1, dim: d,
            eps: hp.rmsNormEps)
        }
        matmul(
          model.output, outHidden.floats, tokens: n, outRows.floats, scratch: scratch, policy: policy,
          rowwiseTokens: rowwiseOutput(n) ? n : 0)
        for r in 0..<n {
          let item = pieces[wanted[c + r].piece].item
          outputs[item].logits.append(contentsOf: UnsafeBufferPointer(start: outRows.floats + r * width, count: width))
        }
        c += n
      }
    }
  }

  private func applyRope(
    _ buf: UnsafeMutablePointer<Float>, tokens: Int, heads: Int, headDim: Int, half: Int, style: RopeStyle
  ) {
    let cosp = cosTable.floats, sinp = sinTable.floats
    for t in 0..<tokens {
      let cs = cosp + t * half
      let sn = sinp + t * half
      for h in 0..<heads {
        let p = buf + (t * heads + h) * headDim
        switch style {
        case .halves:
          for i in 0..<half {
            let x0 = p[i], x1 = p[i + half]
            p[i] = x0 * cs[i] - x1 * sn[i]
            p[i + half] = x0 * sn[i] + x1 * cs[i]
          }
        case .interleaved:
          for i in 0..<half {
            let x0 = p[2 * i], x1 = p[2 * i + 1]
            p[2 * i] = x0 * cs[i] - x1 * sn[i]
            p[2 * i + 1] = x0 * sn[i] + x1 * cs[i]
          }
        }
      }
    }
  }

  /// Causal attention of every new token over its own sequence's cached keys and values. The
  /// arithmetic is in float whatever the cache stores: a float16 cache's keys and values of one
  /// key/value head are converted (exactly) to float once per token and shared by the query heads
  /// that read them, so both precisions run the same float code.
  private func attention(layer li: Int, pieces: [Piece], blockLists: [[Int32]], total: Int, cache: KVCache) {
    let hp = model.hyperparameters
    let kvHeads = hp.kvHeadCount
    let headDim = hp.headDim
    let group = hp.headCount / hp.kvHeadCount
    let qDim = hp.qDim
    let kvDim = hp.kvDim
    let scale = 1 / Float(headDim).squareRoot()
    let qp = q.floats, attp = att.floats
    let halves = cache.precision == .float16
    let kernels = scratch.kernels
    let kc = UnsafeRawPointer(cache.keys.raw), vc = UnsafeRawPointer(cache.values.raw)
    let bs = cache.blockSize
    let layerStride = bs * kvDim
    let blockStride = hp.layerCount * layerStride
    let ctx = maxContextLength
    let scoreBase = scores.floats
    let convertedBase = converted.floats
    let halfSpan = Self.halfSpan
    positions.withUnsafeBufferPointer { posb in
      tokenPiece.withUnsafeBufferPointer { tpb in
        parallelFor(total * kvHeads, grain: 1, pool: scratch.pool) { tid, range in
          // Each head's scores, then the heads' 1/Σ, then their running maxima.
          let scoreRows = scoreBase + tid * (group * ctx + 2 * group)
          let rows = convertedBase + tid * halfSpan * headDim
          // One unit = one token's query heads that share a key/value head, so one thread reads
          // that head's keys and values from memory once and from cache for the others. Each head
          // is computed exactly as on its own.
          for unit in range {
            let t = unit / kvHeads
            let kvh = unit % kvHeads
            let n = posb[t] + 1
            blockLists[tpb[t]].withUnsafeBufferPointer { bl in
              kernels.attend(AttentionOperand(
                query: qp + t * qDim + kvh * group * headDim, out: attp + t * qDim + kvh * group * headDim,
                group: group, headDim: headDim, positions: n, scale: scale, keys: kc, values: vc, halves: halves,
                blockList: bl.baseAddress!, blockSize: bs, blockStride: blockStride,
                headOffset: li * layerStride + kvh * headDim, kvDim: kvDim, scores: scoreRows, scoreStride: ctx,
                rows: rows, span: halfSpan))
            }
          }
        }
      }
    }
  }
}
