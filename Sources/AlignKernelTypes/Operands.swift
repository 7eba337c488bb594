// Operand types of the engine's kernels, in a module of their own compiled for the baseline CPU:
// AlignEngine builds them on every path, and AlignKernelsAVX2 (compiled for Haswell) reads them, so
// neither their initializers nor their metadata may come from the AVX2 module. FloatKernels.swift,
// compiled into both AlignEngine and AlignKernelsAVX2, takes `AttentionOperand`.

/// One token's query heads that share a key/value head, and where that head's cached keys and
/// values are: what `attendUnit` reads and writes.
public struct AttentionOperand {
  /// The first query head of the group (the others follow, `headDim` apart).
  public var query: UnsafePointer<Float>
  /// Where the first head's output goes (the others follow, `headDim` apart).
  public var out: UnsafeMutablePointer<Float>
  /// Query heads in the group.
  public var group: Int
  public var headDim: Int
  /// Cached positions to attend over (0..<positions).
  public var positions: Int
  /// 1/√headDim.
  public var scale: Float
  /// The cache's keys and values (floats, or IEEE halves when `halves`).
  public var keys: UnsafeRawPointer
  public var values: UnsafeRawPointer
  public var halves: Bool
  /// The sequence's cache blocks, `blockSize` positions each.
  public var blockList: UnsafePointer<Int32>
  public var blockSize: Int
  /// Elements from one block to the next, and from a block's start to this layer's and head's slice.
  public var blockStride: Int
  public var headOffset: Int
  /// Elements from one position to the next within a block.
  public var kvDim: Int
  /// Scratch for scores: `group` rows of `scoreStride` floats, then 2 × `group` floats.
  public var scores: UnsafeMutablePointer<Float>
  public var scoreStride: Int
  /// Scratch for `span` converted positions of `headDim` floats (used when `halves`).
  public var rows: UnsafeMutablePointer<Float>
  public var span: Int

  public init(
    query: UnsafePointer<Float>, out: UnsafeMutablePointer<Float>, group: Int, headDim: Int, positions: Int,
    scale: Float, keys: UnsafeRawPointer, values: UnsafeRawPointer, halves: Bool, blockList: UnsafePointer<Int32>,
    blockSize: Int, blockStride: Int, headOffset: Int, kvDim: Int, scores: UnsafeMutablePointer<Float>,
    scoreStride: Int, rows: UnsafeMutablePointer<Float>, span: Int
  ) {
    self.query = query
    self.out = out
    self.group = group
    self.headDim = headDim
    self.positions = positions
    self.scale = scale
    self.keys = keys
    self.values = values
    self.halves = halves
    self.blockList = blockList
    self.blockSize = blockSize
    self.blockStride = blockStride
    self.headOffset = headOffset
    self.kvDim = kvDim
    self.scores = scores
    self.scoreStride = scoreStride
    self.rows = rows
    self.span = span
  }
}

/// A Q4_0 / Q4_1 / Q8_0 matrix in the engine's packed layout (AlignEngine's `PackedBlocks`): groups of
/// 8 rows, one chunk per (group, block) holding the 8 rows' quants, their 8 scales as halves and
/// (Q4_1) their 8 minimums as halves; row-major float copies of the scales and minimums.
public struct AVX2PackedRows {
  /// 0: Q8_0 (signed 8-bit quants), 1: Q4_0, 2: Q4_1.
  public var kind: Int
  public var rows: Int
  public var blocks: Int
  public var quantBytes: Int
  public var chunkBytes: Int
  public var chunks: UnsafeRawPointer
  public var scales: UnsafePointer<Float>
  /// Q4_1's m, Q4_0's −8·d; nil for Q8_0.
  public var mins: UnsafePointer<Float>?

  public init(
    kind: Int, rows: Int, blocks: Int, quantBytes: Int, chunkBytes: Int, chunks: UnsafeRawPointer,
    scales: UnsafePointer<Float>, mins: UnsafePointer<Float>?
  ) {
    self.kind = kind
    self.rows = rows
    self.blocks = blocks
    self.quantBytes = quantBytes
    self.chunkBytes = chunkBytes
    self.chunks = chunks
    self.scales = scales
    self.mins = mins
  }
}

/// Activations quantized to Q8 blocks of 32 (AlignEngine's `QuantizedActivations`).
public struct AVX2Activations {
  /// (tokens, cols) quantized values.
  public var bytes: UnsafePointer<Int8>
  /// (tokens, cols / 32) block scales, and scale × sum of the block's values.
  public var scale: UnsafePointer<Float>
  public var scaledSum: UnsafePointer<Float>
  /// The same two, each group of 8 tokens side by side: (tokens / 8, cols / 32, 8).
  public var scaleT: UnsafePointer<Float>
  public var sumT: UnsafePointer<Float>

  public init(
    bytes: UnsafePointer<Int8>, scale: UnsafePointer<Float>, scaledSum: UnsafePointer<Float>,
    scaleT: UnsafePointer<Float>, sumT: UnsafePointer<Float>
  ) {
    self.bytes = bytes
    self.scale = scale
    self.scaledSum = scaledSum
    self.scaleT = scaleT
    self.sumT = sumT
  }
}
