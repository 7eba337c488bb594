// Hand-written scanners for the pre-tokenizer regexes of GPT-2, Llama 3, Qwen2 and SmolLM2.
// They reproduce the leftmost-alternative, greedy-with-backtracking semantics of the regexes as
// Oniguruma (Hugging Face tokenizers) runs them, over Unicode scalars:
//   gpt2:   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
//   llama3: (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
//   qwen2:  the same with \p{N} instead of \p{N}{1,3}
// Swift's Regex would do, but is several times slower on these patterns.

/// Character classes the regexes use, as bit flags per scalar.
struct ScalarClass: OptionSet {
  let rawValue: UInt8
  static let letter = ScalarClass(rawValue: 1)  // \p{L}
  static let number = ScalarClass(rawValue: 2)  // \p{N}
  static let space = ScalarClass(rawValue: 4)  // \s (Unicode White_Space)
  static let newline = ScalarClass(rawValue: 8)  // \r or \n

  /// Neither \s, \p{L} nor \p{N}: the `[^\s\p{L}\p{N}]` class.
  var isOther: Bool { rawValue & 7 == 0 }
}

/// Classes of the 128 ASCII scalars, computed once.
private let asciiClasses: [ScalarClass] = (0..<128).map { classify(Unicode.Scalar(UInt8($0))) }

@inline(__always)
func scalarClass(_ s: Unicode.Scalar) -> ScalarClass {
  s.value < 128 ? asciiClasses[Int(s.value)] : classify(s)
}

private func classify(_ s: Unicode.Scalar) -> ScalarClass {
  let props = s.properties
  var c: ScalarClass = []
  switch props.generalCategory {
  case .uppercaseLetter, .lowercaseLetter, .titlecaseLetter, .modifierLetter, .otherLetter: c.insert(.letter)
  case .decimalNumber, .letterNumber, .otherNumber: c.insert(.number)
  default: break
  }
  if props.isWhitespace { c.insert(.space) }
  if s == "\r" || s == "\n" { c.insert(.newline) }
  return c
}

/// A text segment decoded into scalars, with classes and UTF-8 offsets, that scanners cut into pieces.
struct ScalarText {
  /// (count) the scalars.
  var scalars: [Unicode.Scalar] = []
  /// (count) their classes.
  var classes: [ScalarClass] = []
  /// (count + 1) UTF-8 offset of each scalar in the segment; the last is the byte length.
  var utf8Offsets: [Int] = []

  init(_ text: Substring.UnicodeScalarView) {
    scalars.reserveCapacity(text.count)
    classes.reserveCapacity(text.count)
    utf8Offsets.reserveCapacity(text.count + 1)
    var offset = 0
    for s in text {
      scalars.append(s)
      classes.append(scalarClass(s))
      utf8Offsets.append(offset)
      offset += UTF8.width(s)
    }
    utf8Offsets.append(offset)
  }

  var count: Int { scalars.count }
}

/// Cuts `text[range]` into pieces (scalar ranges) with the given pre-tokenizer.
func preTokenize(_ text: ScalarText, kind: PreTokenizerKind, into pieces: inout [Range<Int>]) {
  switch kind {
  case .gpt2: scanGPT2(text, 0..<text.count, into: &pieces)
  case .llama3: scanLlama3(text, 0..<text.count, maxDigits: 3, into: &pieces)
  case .qwen2: scanLlama3(text, 0..<text.count, maxDigits: 1, into: &pieces)
  case .smollm:
    // Digits(individual_digits: true) first: each numeric scalar is its own piece, and GPT-2's
    // regex runs on the stretches between them (so `\s+(?!\S)` sees the stretch's end).
    var start = 0
    for i in 0..<text.count where text.classes[i].contains(.number) {
      if start < i { scanGPT2(text, start..<i, into: &pieces) }
      pieces.append(i..<(i + 1))
      start = i + 1
    }
    if start < text.count { scanGPT2(text, start..<text.count, into: &pieces) }
  }
}

/// Length of a case-sensitive (GPT-2) or case-insensitive (Llama 3) contraction at `i`, or 0.
@inline(__always)
private func contractionLength(_ t: ScalarText, _ i: Int, _ end: Int, caseInsensitive: Bool) -> Int {
  guard t.scalars[i] == "'", i + 1 < end else { return 0 }
  func fold(_ s: Unicode.Scalar) -> UInt32 {
    guard caseInsensitive else { return s.value }
    if s.value >= 65 && s.value <= 90 { return s.value + 32 }
    if s.value == 0x17F { return 115 }  // ſ case-folds to s under Oniguruma's (?i)
    return s.value
  }
  let a = fold(t.scalars[i + 1])
  switch a {
  case 115, 116, 109, 100: return 2  // s t m d
  case 114, 118, 108:  // r v l -> re ve ll
    guard i + 2 < end else { return 0 }
    let b = fold(t.scalars[i + 2])
    if (a == 114 || a == 118) && b == 101 { return 3 }
    if a == 108 && b == 108 { return 3 }
    return 0
  default: return 0
  }
}

/// Length of `\s+(?!\S)|\s+` at `i` (a whitespace scalar).
@inline(__always)
private func whitespaceRunLength(_ t: ScalarText, _ i: Int, _ end: Int) -> Int {
  var j = i + 1
  while j < end && t.classes[j].contains(.space) { j += 1 }
  // \s+(?!\S): the whole run at the end of the range, else all but the last scalar before a non-space.
  if j == end { return j - i }
  if j - i >= 2 { return j - i - 1 }
  return 1  // \s+ on a single scalar
}

private func scanGPT2(_ t: ScalarText, _ range: Range<Int>, into pieces: inout [Range<Int>]) {
  let end = range.upperBound
  var i = range.lowerBound
  let classes = t.classes
  while i < end {
    let c = classes[i]
    var j: Int
    let n = contractionLength(t, i, end, caseInsensitive: false)
    if n > 0 {
      j = i + n
    } else {
      // ` ?X+` for X in \p{L}, \p{N}, [^\s\p{L}\p{N}]: an optional U+0020 then a run of one class.
      var k = i
      if t.scalars[i] == " " && i + 1 < end { k = i + 1 }
      let ck = classes[k]
      if ck.contains(.letter) {
        j = k + 1
        while j < end && classes[j].contains(.letter) { j += 1 }
      } else if ck.contains(.number) {
        j = k + 1
        while j < end && classes[j].contains(.number) { j += 1 }
      } else if ck.isOther {
        j = k + 1
        while j < end && classes[j].isOther { j += 1 }
      } else if c.contains(.space) {
        j = i + whitespaceRunLength(t, i, end)
      } else {
        j = i + 1  // unreachable: every scalar is in one of the classes
      }
    }
    pieces.append(i..<j)
    i = j
  }
}

private func scanLlama3(_ t: ScalarText, _ range: Range<Int>, maxDigits: Int, into pieces: inout [Range<Int>]) {
  let end = range.upperBound
  var i = range.lowerBound
  let classes = t.classes
  while i < end {
    let c = classes[i]
    var j = i
    let n = contractionLength(t, i, end, caseInsensitive: true)
    if n > 0 {
      j = i + n
    } else if c.contains(.letter) {
      // [^\r\n\p{L}\p{N}]?\p{L}+ without the optional prefix.
      j = i + 1
      while j < end && classes[j].contains(.letter) { j += 1 }
    } else if !c.contains(.newline) && !c.contains(.number) && i + 1 < end && classes[i + 1].contains(.letter) {
      // [^\r\n\p{L}\p{N}]?\p{L}+ with its one-scalar prefix (space, tab, punctuation, ...).
      j = i + 2
      while j < end && classes[j].contains(.letter) { j += 1 }
    } else if c.contains(.number) {
      j = i + 1
      while j < end && j - i < maxDigits && classes[j].contains(.number) { j += 1 }
    } else if c.isOther || (t.scalars[i] == " " && i + 1 < end && classes[i + 1].isOther) {
      // ` ?[^\s\p{L}\p{N}]+[\r\n]*`
      j = c.isOther ? i + 1 : i + 2
      while j < end && classes[j].isOther { j += 1 }
      while j < end && classes[j].contains(.newline) { j += 1 }
    } else {
      // c is whitespace. `\s*[\r\n]+`: up to the last newline of the whitespace run, if it has one.
      var runEnd = i + 1
      while runEnd < end && classes[runEnd].contains(.space) { runEnd += 1 }
      var lastNewline = -1
      var k = runEnd - 1
      while k >= i {
        if classes[k].contains(.newline) {
          lastNewline = k
          break
        }
        k -= 1
      }
      if lastNewline >= 0 {
        j = lastNewline + 1
      } else {
        j = i + whitespaceRunLength(t, i, end)
      }
    }
    pieces.append(i..<j)
    i = j
  }
}

extension PreTokenizerKind {
  /// Cuts text into the pieces BPE merges within (no normalization, no added-token handling).
  /// Mainly for tests and debugging; `Tokenizer.encode` does this internally.
  public func pieces(of text: String) -> [String] {
    let scalars = ScalarText(Substring(text).unicodeScalars)
    var ranges: [Range<Int>] = []
    preTokenize(scalars, kind: self, into: &ranges)
    return ranges.map { String(String.UnicodeScalarView(scalars.scalars[$0])) }
  }
}
