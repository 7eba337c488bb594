/// The shape of a JSON value a constrained completion must take: what a JSON schema compiles to
/// (the serving layer reads schemas; the engine only knows shapes).
public indirect enum JSONShape: Sendable, Hashable {
  /// Any JSON value.
  case anyValue
  /// An object with named properties (any order, each at most once; `required` ones before `}`)
  /// and, when `additional` is set and there are no named properties, any other keys.
  case object(properties: [JSONProperty], required: Set<String>, additional: JSONShape?)
  case array(items: JSONShape, minItems: Int, maxItems: Int?)
  /// A string of `minLength...maxLength` characters (Unicode scalars).
  case string(minLength: Int, maxLength: Int?)
  case number(integer: Bool)
  case boolean
  case null
  /// One of these values, given as compact JSON text (enum / const).
  case literals([String])
  case anyOf([JSONShape])
}

/// A named property of an object shape.
public struct JSONProperty: Sendable, Hashable {
  public var name: String
  public var shape: JSONShape
  public init(_ name: String, _ shape: JSONShape) {
    self.name = name
    self.shape = shape
  }
}

/// Why a shape cannot be compiled.
public struct JSONGrammarError: Error, CustomStringConvertible, Equatable {
  public var description: String
  public init(_ description: String) { self.description = description }
}

/// A JSON shape compiled to a byte-level pushdown automaton: a stack of frames per alternative,
/// advanced one byte at a time. Written for the token-mask walk (see ``JSONTokenConstraint``),
/// which steps a state through every byte of a vocabulary trie: a step within one frame copies a
/// small value and allocates nothing; only opening a nested value allocates a stack cell.
///
/// Bounds that keep a model from looping inside the grammar: at most ``whitespaceLimit`` bytes of
/// whitespace between tokens of the JSON text, ``digitLimit`` digits per part of a number, and
/// ``depthLimit`` nested values. Property names are matched exactly; keys never repeat.
public final class JSONGrammar: Sendable {
  public static let whitespaceLimit: UInt8 = 8
  public static let digitLimit: UInt8 = 16
  public static let depthLimit: Int = 32
  /// Named properties per object and values per enum (bit sets of one word).
  public static let memberLimit = 64

  enum Node: Sendable, Equatable {
    /// Named properties (exact key bytes, value node), required bit set, or a free object whose
    /// values are `additional`.
    case object(keys: [[UInt8]], values: [Int32], required: UInt64, additional: Int32?)
    case array(items: Int32, minItems: Int, maxItems: Int?)
    case string(minLength: Int, maxLength: Int?)
    case number(integer: Bool)
    case literals([[UInt8]])
    case anyOf([Int32])
  }

  let nodes: [Node]
  let root: Int32

  /// Compiles a shape.
  /// - Throws: ``JSONGrammarError`` for limits the automaton does not support (too many
  ///   properties or enum values, property names with quotes, backslashes or control characters).
  public init(_ shape: JSONShape) throws(JSONGrammarError) {
    var builder = Builder()
    root = try builder.add(shape)
    nodes = builder.nodes
  }

  private struct Builder {
    var nodes: [Node] = []
    var anyIndex: Int32? = nil

    mutating func reserve() -> Int32 {
      nodes.append(.literals([]))
      return Int32(nodes.count - 1)
    }

    mutating func add(_ shape: JSONShape) throws(JSONGrammarError) -> Int32 {
      switch shape {
      case .anyValue:
        if let anyIndex { return anyIndex }
        // Recursive: objects and arrays of any values.
        let index = reserve()
        anyIndex = index
        let object = reserve()
        nodes[Int(object)] = .object(keys: [], values: [], required: 0, additional: index)
        let array = reserve()
        nodes[Int(array)] = .array(items: index, minItems: 0, maxItems: nil)
        let string = try add(.string(minLength: 0, maxLength: nil))
        let number = try add(.number(integer: false))
        let constants = try add(.literals(["true", "false", "null"]))
        nodes[Int(index)] = .anyOf([object, array, string, number, constants])
        return index
      case .object(let properties, let required, let additional):
        guard properties.count <= JSONGrammar.memberLimit else {
          throw JSONGrammarError("an object has \(properties.count) properties; at most \(JSONGrammar.memberLimit) are supported")
        }
        if !properties.isEmpty && additional != nil {
          throw JSONGrammarError("additionalProperties must be false when properties are given")
        }
        var keys: [[UInt8]] = []
        var values: [Int32] = []
        var mask: UInt64 = 0
        for (i, property) in properties.enumerated() {
          let bytes = Array(property.name.utf8)
          guard !bytes.contains(where: { $0 < 0x20 || $0 == UInt8(ascii: "\"") || $0 == UInt8(ascii: "\\") }) else {
            throw JSONGrammarError("property name \(property.name.debugDescription) needs escaping, which is not supported")
          }
          guard !keys.contains(bytes) else { throw JSONGrammarError("property \(property.name) is given twice") }
          keys.append(bytes)
          values.append(try add(property.shape))
          if required.contains(property.name) { mask |= 1 << UInt64(i) }
        }
        for name in required where !properties.contains(where: { $0.name == name }) {
          throw JSONGrammarError("required property \(name) is not among the properties")
        }
        let additionalIndex = try additional.map { shape throws(JSONGrammarError) in try add(shape) }
        // An object with neither properties nor additional values can only be {}.
        return append(.object(keys: keys, values: values, required: mask, additional: additionalIndex))
      case .array(let items, let minItems, let maxItems):
        guard minItems >= 0, (maxItems ?? minItems) >= minItems else {
          throw JSONGrammarError("array bounds \(minItems)...\(maxItems ?? 0) are empty")
        }
        return append(.array(items: try add(items), minItems: minItems, maxItems: maxItems))
      case .string(let minLength, let maxLength):
        guard minLength >= 0, (maxLength ?? minLength) >= minLength else {
          throw JSONGrammarError("string length bounds \(minLength)...\(maxLength ?? 0) are empty")
        }
        return append(.string(minLength: minLength, maxLength: maxLength))
      case .number(let integer):
        return append(.number(integer: integer))
      case .boolean:
        return try add(.literals(["true", "false"]))
      case .null:
        return try add(.literals(["null"]))
      case .literals(let texts):
        guard !texts.isEmpty else { throw JSONGrammarError("an enum has no values") }
        guard texts.count <= JSONGrammar.memberLimit else {
          throw JSONGrammarError("an enum has \(texts.count) values; at most \(JSONGrammar.memberLimit) are supported")
        }
        return append(.literals(texts.map { Array($0.utf8) }))
      case .anyOf(let shapes):
        guard !shapes.isEmpty else { throw JSONGrammarError("anyOf has no alternatives") }
        var alternatives: [Int32] = []
        for shape in shapes { alternatives.append(try add(shape)) }
        return append(.anyOf(alternatives))
      }
    }

    mutating func append(_ node: Node) -> Int32 {
      nodes.append(node)
      return Int32(nodes.count - 1)
    }
  }

  // MARK: States

  /// Progress inside a string: escapes, UTF-8 continuation bytes and the length so far.
  struct StringProgress: Hashable {
    /// 0 plain, 1 after a backslash, 2...5 expecting the 1st...4th hex digit of \u.
    var escape: UInt8 = 0
    /// UTF-8 continuation bytes still expected, and the range of the next one.
    var pending: UInt8 = 0
    var low: UInt8 = 0x80
    var high: UInt8 = 0xBF
    /// Characters so far, counted up to the bound that matters (the node's max, else its min).
    var length: UInt16 = 0
  }

  enum Frame: Hashable {
    /// Before a value of `node`, after `ws` bytes of whitespace.
    case value(node: Int32, ws: UInt8)
    /// After `{` or `,` (`first` tells which): a key next, or `}` after `{`.
    case keyStart(node: Int32, seen: UInt64, first: Bool, ws: UInt8)
    /// Inside a named key: properties still matching and bytes matched so far.
    case key(node: Int32, seen: UInt64, candidates: UInt64, position: UInt16)
    /// Inside a key of a free object.
    case freeKey(node: Int32, progress: StringProgress)
    /// After a key: `:` next; `property` is -1 in a free object.
    case colon(node: Int32, seen: UInt64, property: Int16, ws: UInt8)
    /// After a property value: `,` or `}` next.
    case objectNext(node: Int32, seen: UInt64, ws: UInt8)
    /// After `[`: a value or `]`.
    case arrayStart(node: Int32, ws: UInt8)
    /// After an item (`count` items so far, counted up to the bound that matters): `,` or `]`.
    case arrayNext(node: Int32, count: UInt16, ws: UInt8)
    /// After `,` in an array: the next item (whitespace first).
    case arrayItem(node: Int32, count: UInt16, ws: UInt8)
    case string(node: Int32, progress: StringProgress)
    /// Inside an enum value: the values still matching and bytes matched so far.
    case literal(node: Int32, candidates: UInt64, position: UInt16)
    /// phase: 0 after `-`, 1 after a leading 0, 2 in integer digits, 3 after `.`, 4 in fraction
    /// digits, 5 after e/E, 6 after the exponent sign, 7 in exponent digits.
    case number(integer: Bool, phase: UInt8, digits: UInt8)
    /// The document is complete.
    case done
  }

  /// An immutable cell of the rest of a stack (below the top frame).
  final class Cell: Sendable, Hashable {
    let frame: Frame
    let next: Cell?
    let depth: Int
    init(_ frame: Frame, _ next: Cell?) {
      self.frame = frame
      self.next = next
      self.depth = (next?.depth ?? 0) + 1
    }
    static func == (a: Cell, b: Cell) -> Bool {
      var x: Cell? = a
      var y: Cell? = b
      while let l = x, let r = y {
        if l === r { return true }
        guard l.frame == r.frame else { return false }
        x = l.next
        y = r.next
      }
      return x == nil && y == nil
    }
    func hash(into hasher: inout Hasher) {
      var x: Cell? = self
      while let cell = x {
        hasher.combine(cell.frame)
        x = cell.next
      }
    }
  }

  /// One parse: the top frame inline, the rest shared.
  struct Stack: Hashable {
    var top: Frame
    var rest: Cell?
    var depth: Int { (rest?.depth ?? 0) + 1 }

    /// The parent's frame after the top value completes.
    func popped() -> Stack? {
      guard let rest else { return nil }
      return Stack(top: rest.frame, rest: rest.next)
    }

    /// `parent` becomes the frame below; `child` the new top.
    static func push(_ child: Frame, over parent: Frame, rest: Cell?) -> Stack {
      Stack(top: child, rest: Cell(parent, rest))
    }
  }

  /// The parses still possible after the bytes so far (more than one only under `anyOf`).
  public struct State: Hashable, Sendable {
    var stacks: [Stack]

    /// Whether no parse is left.
    public var isDead: Bool { stacks.isEmpty }
  }

  /// The state before any byte.
  public var initialState: State {
    State(stacks: [Stack(top: .value(node: root, ws: 0), rest: Cell(.done, nil))])
  }

  /// Whether the bytes so far form a complete document (the completion may end here).
  public func isAccepting(_ state: State) -> Bool {
    state.stacks.contains { canEnd($0) }
  }

  /// Whether the document is complete and nothing may follow (the completion must end here).
  public func isComplete(_ state: State) -> Bool {
    !state.stacks.isEmpty && state.stacks.allSatisfy { $0.top == .done }
  }

  private func canEnd(_ stack: Stack) -> Bool {
    if stack.top == .done { return true }
    guard isFinished(stack.top), let parent = stack.popped() else { return false }
    return parent.top == .done
  }

  /// The state after `bytes`; dead when they leave the grammar.
  public func advance(_ state: State, by bytes: some Sequence<UInt8>) -> State {
    var current = state
    for byte in bytes {
      current = advance(current, byte)
      if current.isDead { break }
    }
    return current
  }

  /// The state after one byte.
  public func advance(_ state: State, _ byte: UInt8) -> State {
    var out: [Stack] = []
    for stack in state.stacks { step(stack, byte, into: &out) }
    if out.count > 1 {
      var unique: [Stack] = []
      for stack in out where !unique.contains(stack) { unique.append(stack) }
      out = unique
    }
    return State(stacks: out)
  }

  /// When every parse is inside a string at a character boundary (no escape or UTF-8 sequence
  /// under way), the most characters any of them may still add; nil otherwise. Plain string
  /// content of at most that many characters keeps such a state inside the grammar.
  func plainStringRoom(_ state: State) -> Int? {
    var room: Int? = nil
    for stack in state.stacks {
      let progress: StringProgress
      var maxLength: Int? = nil
      switch stack.top {
      case .freeKey(_, let p): progress = p
      case .string(let node, let p):
        progress = p
        guard case .string(_, let bound) = nodes[Int(node)] else { return nil }
        maxLength = bound
      default: return nil
      }
      guard progress.escape == 0 && progress.pending == 0 else { return nil }
      let left = maxLength.map { max(0, $0 - Int(progress.length)) } ?? Int.max
      room = max(room ?? 0, left)
    }
    return room
  }

  // MARK: The step function

  @inline(__always)
  static func isWhitespace(_ b: UInt8) -> Bool { b == 0x20 || b == 0x0A || b == 0x09 || b == 0x0D }

  /// Whether a frame holds a complete value that ends at the first byte it cannot take.
  private func isFinished(_ frame: Frame) -> Bool {
    switch frame {
    case .number(_, let phase, _): return phase == 1 || phase == 2 || phase == 4 || phase == 7
    case .literal(let node, let candidates, let position):
      guard case .literals(let texts) = nodes[Int(node)] else { return false }
      return completedLiteral(texts, candidates, Int(position))
    default: return false
    }
  }

  private func completedLiteral(_ texts: [[UInt8]], _ candidates: UInt64, _ position: Int) -> Bool {
    Self.complete(candidates, texts, position) != nil
  }

  /// The candidates (a bit set over `texts`) whose byte at `position` is `b`.
  private static func narrow(_ candidates: UInt64, _ texts: [[UInt8]], _ position: Int, _ b: UInt8) -> UInt64 {
    var next: UInt64 = 0
    var bits = candidates
    while bits != 0 {
      let i = bits.trailingZeroBitCount
      bits &= bits - 1
      if texts[i].count > position && texts[i][position] == b { next |= 1 << UInt64(i) }
    }
    return next
  }

  /// The first candidate that is exactly `position` bytes long.
  private static func complete(_ candidates: UInt64, _ texts: [[UInt8]], _ position: Int) -> Int? {
    var bits = candidates
    while bits != 0 {
      let i = bits.trailingZeroBitCount
      bits &= bits - 1
      if texts[i].count == position { return i }
    }
    return nil
  }

  /// Appends the stacks `stack` becomes after `byte` (none when it cannot take it).
  func step(_ stack: Stack, _ b: UInt8, into out: inout [Stack]) {
    let rest = stack.rest
    switch stack.top {
    case .done:
      return

    case .value(let node, let ws):
      if Self.isWhitespace(b) {
        if ws < Self.whitespaceLimit { out.append(Stack(top: .value(node: node, ws: ws + 1), rest: rest)) }
        return
      }
      startValue(node, b, rest: rest, into: &out)

    case .keyStart(let node, let seen, let first, let ws):
      guard case .object(let keys, _, let required, let additional) = nodes[Int(node)] else { return }
      if Self.isWhitespace(b) {
        if ws < Self.whitespaceLimit {
          out.append(Stack(top: .keyStart(node: node, seen: seen, first: first, ws: ws + 1), rest: rest))
        }
        return
      }
      if b == UInt8(ascii: "}") {
        if first && required & ~seen == 0, let parent = stack.popped() { out.append(parent) }
        return
      }
      guard b == UInt8(ascii: "\"") else { return }
      if additional != nil {
        out.append(Stack(top: .freeKey(node: node, progress: StringProgress()), rest: rest))
      } else {
        let unseen = Self.allBits(keys.count) & ~seen
        if unseen != 0 {
          out.append(Stack(top: .key(node: node, seen: seen, candidates: unseen, position: 0), rest: rest))
        }
      }

    case .key(let node, let seen, let candidates, let position):
      guard case .object(let keys, _, _, _) = nodes[Int(node)] else { return }
      let p = Int(position)
      if b == UInt8(ascii: "\"") {
        if let i = Self.complete(candidates, keys, p) {
          out.append(Stack(top: .colon(node: node, seen: seen, property: Int16(i), ws: 0), rest: rest))
        }
        return
      }
      let next = Self.narrow(candidates, keys, p, b)
      if next != 0 {
        out.append(Stack(top: .key(node: node, seen: seen, candidates: next, position: position + 1), rest: rest))
      }

    case .freeKey(let node, let progress):
      switch stringStep(progress, b, minLength: 0, maxLength: nil) {
      case .continued(let p): out.append(Stack(top: .freeKey(node: node, progress: p), rest: rest))
      case .closed: out.append(Stack(top: .colon(node: node, seen: 0, property: -1, ws: 0), rest: rest))
      case .rejected: return
      }

    case .colon(let node, let seen, let property, let ws):
      if Self.isWhitespace(b) {
        if ws < Self.whitespaceLimit {
          out.append(Stack(top: .colon(node: node, seen: seen, property: property, ws: ws + 1), rest: rest))
        }
        return
      }
      guard b == UInt8(ascii: ":"), case .object(_, let values, _, let additional) = nodes[Int(node)] else { return }
      let valueNode: Int32
      let nowSeen: UInt64
      if property >= 0 {
        valueNode = values[Int(property)]
        nowSeen = seen | (1 << UInt64(property))
      } else {
        guard let additional else { return }
        valueNode = additional
        nowSeen = seen
      }
      guard stack.depth < Self.depthLimit else { return }
      out.append(
        .push(.value(node: valueNode, ws: 0), over: .objectNext(node: node, seen: nowSeen, ws: 0), rest: rest))

    case .objectNext(let node, let seen, let ws):
      guard case .object(let keys, _, let required, let additional) = nodes[Int(node)] else { return }
      if Self.isWhitespace(b) {
        if ws < Self.whitespaceLimit {
          out.append(Stack(top: .objectNext(node: node, seen: seen, ws: ws + 1), rest: rest))
        }
        return
      }
      if b == UInt8(ascii: "}") {
        if required & ~seen == 0, let parent = stack.popped() { out.append(parent) }
      } else if b == UInt8(ascii: ",") {
        if additional != nil || Self.allBits(keys.count) & ~seen != 0 {
          out.append(Stack(top: .keyStart(node: node, seen: seen, first: false, ws: 0), rest: rest))
        }
      }

    case .arrayStart(let node, let ws):
      guard case .array(let items, let minItems, let maxItems) = nodes[Int(node)] else { return }
      if Self.isWhitespace(b) {
        if ws < Self.whitespaceLimit { out.append(Stack(top: .arrayStart(node: node, ws: ws + 1), rest: rest)) }
        return
      }
      if b == UInt8(ascii: "]") {
        if minItems == 0, let parent = stack.popped() { out.append(parent) }
        return
      }
      guard maxItems != 0, stack.depth < Self.depthLimit else { return }
      let parent = Frame.arrayNext(node: node, count: arrayCount(0, minItems, maxItems), ws: 0)
      startValue(items, b, rest: Cell(parent, rest), into: &out)

    case .arrayNext(let node, let count, let ws):
      guard case .array(_, let minItems, let maxItems) = nodes[Int(node)] else { return }
      if Self.isWhitespace(b) {
        if ws < Self.whitespaceLimit {
          out.append(Stack(top: .arrayNext(node: node, count: count, ws: ws + 1), rest: rest))
        }
        return
      }
      if b == UInt8(ascii: "]") {
        if Int(count) >= minItems, let parent = stack.popped() { out.append(parent) }
      } else if b == UInt8(ascii: ",") {
        if maxItems.map({ Int(count) < $0 }) ?? true {
          out.append(Stack(top: .arrayItem(node: node, count: count, ws: 0), rest: rest))
        }
      }

    case .arrayItem(let node, let count, let ws):
      guard case .array(let items, let minItems, let maxItems) = nodes[Int(node)] else { return }
      if Self.isWhitespace(b) {
        if ws < Self.whitespaceLimit {
          out.append(Stack(top: .arrayItem(node: node, count: count, ws: ws + 1), rest: rest))
        }
        return
      }
      guard stack.depth < Self.depthLimit else { return }
      let parent = Frame.arrayNext(node: node, count: arrayCount(Int(count), minItems, maxItems), ws: 0)
      startValue(items, b, rest: Cell(parent, rest), into: &out)

    case .string(let node, let progress):
      guard case .string(let minLength, let maxLength) = nodes[Int(node)] else { return }
      switch stringStep(progress, b, minLength: minLength, maxLength: maxLength) {
      case .continued(let p): out.append(Stack(top: .string(node: node, progress: p), rest: rest))
      case .closed: if let parent = stack.popped() { out.append(parent) }
      case .rejected: return
      }

    case .literal(let node, let candidates, let position):
      guard case .literals(let texts) = nodes[Int(node)] else { return }
      let p = Int(position)
      let next = Self.narrow(candidates, texts, p, b)
      if next != 0 {
        out.append(Stack(top: .literal(node: node, candidates: next, position: position + 1), rest: rest))
      } else if completedLiteral(texts, candidates, p), let parent = stack.popped() {
        // The value ended; the byte belongs to what follows it (a complete JSON value is never
        // the prefix of another one followed by `,`, `}`, `]` or whitespace, so this is unambiguous).
        step(parent, b, into: &out)
      }

    case .number(let integer, let phase, let digits):
      if let next = numberStep(integer: integer, phase: phase, digits: digits, b) {
        out.append(Stack(top: next, rest: rest))
      } else if isFinished(stack.top), let parent = stack.popped() {
        step(parent, b, into: &out)
      }
    }
  }

  /// The first byte of a value of `node`, whose parent frames are `rest`.
  private func startValue(_ node: Int32, _ b: UInt8, rest: Cell?, into out: inout [Stack]) {
    switch nodes[Int(node)] {
    case .object:
      if b == UInt8(ascii: "{") { out.append(Stack(top: .keyStart(node: node, seen: 0, first: true, ws: 0), rest: rest)) }
    case .array:
      if b == UInt8(ascii: "[") { out.append(Stack(top: .arrayStart(node: node, ws: 0), rest: rest)) }
    case .string:
      if b == UInt8(ascii: "\"") { out.append(Stack(top: .string(node: node, progress: StringProgress()), rest: rest)) }
    case .number(let integer):
      if let frame = numberStep(integer: integer, phase: 255, digits: 0, b) {
        out.append(Stack(top: frame, rest: rest))
      }
    case .literals(let texts):
      var next: UInt64 = 0
      for (i, text) in texts.enumerated() where text.first == b { next |= 1 << UInt64(i) }
      if next != 0 { out.append(Stack(top: .literal(node: node, candidates: next, position: 1), rest: rest)) }
    case .anyOf(let alternatives):
      // Alternatives that share a first byte all stay open (`advance` drops duplicate parses).
      for alternative in alternatives { startValue(alternative, b, rest: rest, into: &out) }
    }
  }

  /// The stored item count: counting stops at the largest bound, so unbounded arrays keep one state.
  private func arrayCount(_ count: Int, _ minItems: Int, _ maxItems: Int?) -> UInt16 {
    UInt16(min(count + 1, max(minItems, maxItems ?? 0), Int(UInt16.max)))
  }

  /// Number phases (see ``Frame/number``); 255 is "before the value".
  private func numberStep(integer: Bool, phase: UInt8, digits: UInt8, _ b: UInt8) -> Frame? {
    let isDigit = b >= UInt8(ascii: "0") && b <= UInt8(ascii: "9")
    func next(_ phase: UInt8, _ digits: UInt8) -> Frame { .number(integer: integer, phase: phase, digits: digits) }
    switch phase {
    case 255, 0:
      if phase == 255 && b == UInt8(ascii: "-") { return next(0, 0) }
      if b == UInt8(ascii: "0") { return next(1, 1) }
      if isDigit { return next(2, 1) }
      return nil
    case 1, 2:
      if phase == 2 && isDigit { return digits < Self.digitLimit ? next(2, digits + 1) : nil }
      if integer { return nil }
      if b == UInt8(ascii: ".") { return next(3, 0) }
      if b == UInt8(ascii: "e") || b == UInt8(ascii: "E") { return next(5, 0) }
      return nil
    case 3, 4:
      if isDigit { return digits < Self.digitLimit ? next(4, digits + 1) : nil }
      if phase == 4 && (b == UInt8(ascii: "e") || b == UInt8(ascii: "E")) { return next(5, 0) }
      return nil
    case 5:
      if b == UInt8(ascii: "+") || b == UInt8(ascii: "-") { return next(6, 0) }
      return isDigit ? next(7, 1) : nil
    case 6, 7:
      if isDigit { return digits < 3 ? next(7, digits + 1) : nil }
      return nil
    default:
      return nil
    }
  }

  enum StringStepResult {
    case continued(StringProgress)
    case closed
    case rejected
  }

  /// One byte inside a string: JSON escapes, well-formed UTF-8 (no overlong forms or surrogates),
  /// no raw control characters, and the length bounds.
  private func stringStep(_ progress: StringProgress, _ b: UInt8, minLength: Int, maxLength: Int?) -> StringStepResult {
    var p = progress
    let cap = UInt16(min(max(minLength, maxLength ?? 0), Int(UInt16.max)))
    func counted() -> StringProgress? {
      if let maxLength, Int(p.length) >= maxLength { return nil }
      var q = p
      if q.length < cap { q.length += 1 }
      return q
    }
    if p.pending > 0 {
      guard b >= p.low && b <= p.high else { return .rejected }
      p.pending -= 1
      p.low = 0x80
      p.high = 0xBF
      return .continued(p)
    }
    switch p.escape {
    case 0:
      break
    case 1:
      switch b {
      case 0x22, 0x5C, 0x2F, 0x62, 0x66, 0x6E, 0x72, 0x74:  // " \ / b f n r t
        p.escape = 0
        return .continued(p)
      case UInt8(ascii: "u"):
        p.escape = 2
        return .continued(p)
      default:
        return .rejected
      }
    default:
      let isHex = (b >= 0x30 && b <= 0x39) || (b >= 0x41 && b <= 0x46) || (b >= 0x61 && b <= 0x66)
      guard isHex else { return .rejected }
      p.escape = p.escape == 5 ? 0 : p.escape + 1
      return .continued(p)
    }
    switch b {
    case UInt8(ascii: "\""):
      return Int(p.length) >= minLength ? .closed : .rejected
    case UInt8(ascii: "\\"):
      guard var q = counted() else { return .rejected }
      q.escape = 1
      return .continued(q)
    case 0x00..<0x20:
      return .rejected
    case 0x20..<0x80:
      return counted().map { .continued($0) } ?? .rejected
    case 0xC2...0xDF, 0xE0...0xEF, 0xF0...0xF4:
      guard var q = counted() else { return .rejected }
      switch b {
      case 0xC2...0xDF: q.pending = 1
      case 0xE0: (q.pending, q.low) = (2, 0xA0)
      case 0xED: (q.pending, q.high) = (2, 0x9F)
      case 0xE1...0xEF: q.pending = 2
      case 0xF0: (q.pending, q.low) = (3, 0x90)
      case 0xF4: (q.pending, q.high) = (3, 0x8F)
      default: q.pending = 3
      }
      return .continued(q)
    default:
      return .rejected
    }
  }

  static func allBits(_ count: Int) -> UInt64 {
    count >= 64 ? ~0 : (1 << UInt64(count)) - 1
  }
}
