import Synchronization

/// The tokens a sampling step may choose: a bit per vocabulary id.
public struct TokenMask: Sendable, Equatable {
  /// (ceil(vocab / 64)) bit i of word i/64 set: token i allowed.
  public private(set) var words: [UInt64]
  public let count: Int

  /// A mask allowing nothing.
  public init(count: Int) {
    self.count = count
    words = Array(repeating: 0, count: (count + 63) / 64)
  }

  @inline(__always)
  public func allows(_ token: Int) -> Bool {
    token >= 0 && token < count && words[token >> 6] & (1 << UInt64(token & 63)) != 0
  }

  @inline(__always)
  public mutating func insert(_ token: Int) {
    guard token >= 0 && token < count else { return }
    words[token >> 6] |= 1 << UInt64(token & 63)
  }

  /// Tokens allowed.
  public var allowedCount: Int { words.reduce(0) { $0 + $1.nonzeroBitCount } }
}

/// Tokens arranged by their bytes, so a walk checks a shared prefix once: nodes in flat arrays.
struct ByteTrie: Sendable {
  /// (nodes + 1) children of node n are `childBytes/childNodes[childStart[n]..<childStart[n + 1]]`.
  let childStart: [Int32]
  let childBytes: [UInt8]
  let childNodes: [Int32]
  /// (nodes + 1) tokens ending at node n are `tokens[tokenStart[n]..<tokenStart[n + 1]]`.
  let tokenStart: [Int32]
  let tokens: [Int32]
  var nodeCount: Int { childStart.count - 1 }

  init(entries: [(bytes: [UInt8], token: Int32)]) {
    var children: [[(UInt8, Int32)]] = [[]]
    var ending: [[Int32]] = [[]]
    // Sorted by bytes, an entry shares its prefix path with the previous one.
    let sorted = entries.sorted { a, b in a.bytes.lexicographicallyPrecedes(b.bytes) }
    var path: [Int32] = [0]  // node of each prefix length of the previous entry
    var previous: [UInt8] = []
    for (bytes, token) in sorted {
      var shared = 0
      while shared < min(bytes.count, previous.count) && bytes[shared] == previous[shared] { shared += 1 }
      path.removeLast(path.count - shared - 1)
      for i in shared..<bytes.count {
        let node = Int32(children.count)
        children.append([])
        ending.append([])
        children[Int(path[i])].append((bytes[i], node))
        path.append(node)
      }
      ending[Int(path[bytes.count])].append(token)
      previous = bytes
    }
    var childStart: [Int32] = [0]
    var childBytes: [UInt8] = []
    var childNodes: [Int32] = []
    var tokenStart: [Int32] = [0]
    var tokens: [Int32] = []
    for n in children.indices {
      for (byte, child) in children[n] {
        childBytes.append(byte)
        childNodes.append(child)
      }
      childStart.append(Int32(childBytes.count))
      tokens.append(contentsOf: ending[n])
      tokenStart.append(Int32(tokens.count))
    }
    self.childStart = childStart
    self.childBytes = childBytes
    self.childNodes = childNodes
    self.tokenStart = tokenStart
    self.tokens = tokens
  }
}

/// The vocabulary prepared for constrained decoding, once per tokenizer: a byte trie of every
/// token, and — because most steps of a JSON document are inside a string, where nearly every
/// token is allowed — the tokens that are plain string content (no quote, backslash or control
/// character, whole UTF-8 characters) grouped by their length in characters, plus a trie of the
/// other tokens. Inside a string a mask is then "plain tokens that fit the length bound" plus a
/// walk of the small trie. Special tokens (and tokens without bytes) are left out: a constraint
/// never lets them through, except the end tokens it adds explicitly.
public final class VocabularyTrie: Sendable {
  let all: ByteTrie
  /// Tokens that are not plain string content.
  let nonPlain: ByteTrie
  /// plainUpTo[k]: plain string tokens of at most k characters (the last entry: all of them).
  let plainUpTo: [TokenMask]
  /// Vocabulary size (mask width).
  public let vocabularySize: Int
  public var nodeCount: Int { all.nodeCount }

  /// Builds the trie of `tokenizer`'s vocabulary without `excluded` (the end tokens, which a
  /// constraint allows only where the document may end).
  public convenience init(tokenizer: Tokenizer, excluding excluded: Set<Int32> = []) {
    var entries: [(bytes: [UInt8], token: Int32)] = []
    for id in 0..<tokenizer.vocabularySize where !tokenizer.isSpecialToken(Int32(id)) && !excluded.contains(Int32(id)) {
      let bytes = tokenizer.bytes(of: Int32(id))
      if !bytes.isEmpty { entries.append((bytes, Int32(id))) }
    }
    self.init(entries: entries, vocabularySize: tokenizer.vocabularySize)
  }

  /// Builds a trie of the given tokens (for tests and custom vocabularies).
  public init(entries: [(bytes: [UInt8], token: Int32)], vocabularySize: Int) {
    self.vocabularySize = vocabularySize
    all = ByteTrie(entries: entries)
    var others: [(bytes: [UInt8], token: Int32)] = []
    var byLength: [[Int32]] = []
    for entry in entries {
      if let length = Self.plainLength(entry.bytes) {
        while byLength.count <= length { byLength.append([]) }
        byLength[length].append(entry.token)
      } else {
        others.append(entry)
      }
    }
    nonPlain = ByteTrie(entries: others)
    var masks: [TokenMask] = []
    var mask = TokenMask(count: vocabularySize)
    for tokens in byLength {
      for token in tokens { mask.insert(Int(token)) }
      masks.append(mask)
    }
    plainUpTo = masks.isEmpty ? [mask] : masks
  }

  /// Characters of `bytes` when they are plain JSON string content, else nil.
  static func plainLength(_ bytes: [UInt8]) -> Int? {
    var count = 0
    var i = 0
    while i < bytes.count {
      let b = bytes[i]
      let extra: Int
      var low: UInt8 = 0x80
      var high: UInt8 = 0xBF
      switch b {
      case 0x22, 0x5C, 0x00..<0x20: return nil
      case 0x20..<0x80: extra = 0
      case 0xC2...0xDF: extra = 1
      case 0xE0: (extra, low) = (2, 0xA0)
      case 0xED: (extra, high) = (2, 0x9F)
      case 0xE1...0xEF: extra = 2
      case 0xF0: (extra, low) = (3, 0x90)
      case 0xF4: (extra, high) = (3, 0x8F)
      case 0xF1...0xF3: extra = 3
      default: return nil
      }
      guard i + extra < bytes.count else { return nil }
      for k in 0..<extra {
        let c = bytes[i + 1 + k]
        let (lo, hi) = k == 0 ? (low, high) : (UInt8(0x80), UInt8(0xBF))
        guard c >= lo && c <= hi else { return nil }
      }
      i += 1 + extra
      count += 1
    }
    return count
  }
}

/// A JSON grammar applied to one vocabulary: the mask of tokens that keep a completion inside the
/// grammar, for any state, computed by walking the vocabulary trie and cached per state (the
/// states of a document repeat: every step inside a free string is the same state). Shared by all
/// requests with the same schema on the same tokenizer; safe to use from any thread.
public final class JSONTokenConstraint: Sendable {
  public let grammar: JSONGrammar
  public let trie: VocabularyTrie
  /// Tokens allowed when the document may end (the model's end tokens).
  public let endTokens: [Int32]
  private let cache: Mutex<[JSONGrammar.State: TokenMask]>
  private let walks = Atomic<Int>(0)
  /// States whose masks are kept; past this the cache starts over (a mask is vocab/8 bytes).
  public static let cachedStates = 512

  public init(grammar: JSONGrammar, trie: VocabularyTrie, endTokens: some Sequence<Int32>) {
    self.grammar = grammar
    self.trie = trie
    self.endTokens = endTokens.sorted()
    cache = Mutex([:])
  }

  /// Trie walks run so far (cache misses), for tests and measurements.
  public var walkCount: Int { walks.load(ordering: .relaxed) }

  /// The tokens allowed after `state`: those whose bytes the grammar accepts from it, and the end
  /// tokens when the document is complete (only them once nothing more may follow).
  public func mask(for state: JSONGrammar.State) -> TokenMask {
    if let cached = cache.withLock({ $0[state] }) { return cached }
    var mask = TokenMask(count: trie.vocabularySize)
    if !grammar.isComplete(state) { walk(state, into: &mask) }
    if grammar.isAccepting(state) { for token in endTokens { mask.insert(Int(token)) } }
    walks.add(1, ordering: .relaxed)
    cache.withLock { cache in
      if cache.count >= Self.cachedStates { cache.removeAll(keepingCapacity: true) }
      cache[state] = mask
    }
    return mask
  }

  /// The tokens allowed after `state`, without the cache.
  private func walk(_ state: JSONGrammar.State, into mask: inout TokenMask) {
    if let remaining = grammar.plainStringRoom(state) {
      // Inside a string at a character boundary: plain tokens that fit, plus a walk of the rest.
      let masks = trie.plainUpTo
      mask = masks[min(remaining, masks.count - 1)]
      walk(trie.nonPlain, state, into: &mask)
    } else {
      walk(trie.all, state, into: &mask)
    }
  }

  /// Depth-first over the trie, stepping the parses by each child's byte: a subtree is skipped as
  /// soon as no parse survives its prefix.
  private func walk(_ trie: ByteTrie, _ state: JSONGrammar.State, into mask: inout TokenMask) {
    // The parses of each prefix on the current path, level after level in one buffer.
    var pool: [JSONGrammar.Stack] = state.stacks
    pool.reserveCapacity(256)
    func visit(_ node: Int32, _ start: Int, _ end: Int) {
      let first = Int(trie.childStart[Int(node)])
      let last = Int(trie.childStart[Int(node) + 1])
      for c in first..<last {
        let byte = trie.childBytes[c]
        let child = trie.childNodes[c]
        let childStart = pool.count
        for i in start..<end {
          let stack = pool[i]
          grammar.step(stack, byte, into: &pool)
        }
        let childEnd = pool.count
        if childEnd > childStart {
          for t in Int(trie.tokenStart[Int(child)])..<Int(trie.tokenStart[Int(child) + 1]) {
            mask.insert(Int(trie.tokens[t]))
          }
          visit(child, childStart, childEnd)
        }
        pool.removeLast(pool.count - childStart)
      }
    }
    visit(0, 0, pool.count)
  }
}
