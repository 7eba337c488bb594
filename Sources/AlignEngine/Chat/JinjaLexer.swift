// Lexing a Jinja template the way transformers configures Jinja for chat templates:
// `trim_blocks=True` (the first newline after a block or comment tag is removed) and
// `lstrip_blocks=True` (spaces and tabs from the start of a line to a block or comment tag are removed),
// plus the explicit whitespace control `{%-`, `-%}`, `{{-`, `-}}`, `{#-`, `-#}` and `{%+`.

/// A token inside `{{ }}` or `{% %}`.
enum JinjaToken: Equatable, Sendable {
  case name(String)
  case string(String)
  case int(Int)
  case float(Double)
  case op(String)
}

/// The template cut into text and tags.
enum JinjaPiece: Sendable {
  case text(String)
  /// `{{ ... }}`
  case output([JinjaToken], line: Int)
  /// `{% ... %}`
  case statement([JinjaToken], line: Int)
}

struct JinjaLexer {
  private let s: [Unicode.Scalar]
  private var i = 0
  private var line = 1

  init(_ source: String) { s = Array(source.unicodeScalars) }

  private static let operators = ["//", "**", "==", "!=", "<=", ">=", "+", "-", "*", "/", "%", "~", "<", ">", "=", "(", ")", "[", "]", "{", "}", ",", ".", ":", "|"]

  mutating func lex() throws(ChatTemplateError) -> [JinjaPiece] {
    var pieces: [JinjaPiece] = []
    var text: [Unicode.Scalar] = []
    var stripNextText = false  // a `-` closed the previous tag
    var lineStarting = true  // the text so far begins at the start of a line (for lstrip_blocks)

    func flush(_ text: inout [Unicode.Scalar]) {
      if !text.isEmpty { pieces.append(.text(String(String.UnicodeScalarView(text)))) }
      text.removeAll()
    }

    while i < s.count {
      let c = s[i]
      guard c == "{", i + 1 < s.count, s[i + 1] == "{" || s[i + 1] == "%" || s[i + 1] == "#" else {
        if c == "\n" { line += 1 }
        if stripNextText && Self.isSpace(c) {
          i += 1
          continue
        }
        stripNextText = false
        text.append(c)
        i += 1
        continue
      }
      stripNextText = false
      let kind = s[i + 1]
      let tagLine = line
      i += 2
      // Left whitespace control.
      var modifier: Unicode.Scalar?
      if i < s.count && (s[i] == "-" || s[i] == "+") {
        modifier = s[i]
        i += 1
      }
      if modifier == "-" {
        while let last = text.last, Self.isSpace(last) { text.removeLast() }
      } else if kind != "{" && modifier != "+" {
        // lstrip_blocks: strip spaces/tabs between the start of the line and the tag.
        let lineStart = (text.lastIndex(of: "\n").map { $0 + 1 }) ?? 0
        if lineStart > 0 || lineStarting {
          if text[lineStart...].allSatisfy({ $0 == " " || $0 == "\t" }) { text.removeSubrange(lineStart...) }
        }
      }
      flush(&text)

      if kind == "#" {
        // Comment: up to `#}`.
        var stripRight = false
        while true {
          guard i + 1 < s.count else { throw .syntax(line: tagLine, message: "unclosed comment") }
          if s[i] == "#" && s[i + 1] == "}" {
            stripRight = i > 0 && s[i - 1] == "-"
            i += 2
            break
          }
          if s[i] == "\n" { line += 1 }
          i += 1
        }
        lineStarting = finishTag(stripRight: stripRight, trim: true, stripNext: &stripNextText)
        continue
      }

      let close: Unicode.Scalar = kind == "{" ? "}" : "%"
      var tokens: [JinjaToken] = []
      var stripRight = false
      while true {
        skipSpaces()
        guard i < s.count else { throw .syntax(line: tagLine, message: kind == "{" ? "unclosed {{" : "unclosed {%") }
        if s[i] == "-" && i + 2 < s.count && s[i + 1] == close && s[i + 2] == "}" {
          stripRight = true
          i += 3
          break
        }
        if s[i] == close && i + 1 < s.count && s[i + 1] == "}" {
          i += 2
          break
        }
        tokens.append(try token())
      }
      if kind == "{" {
        pieces.append(.output(tokens, line: tagLine))
        lineStarting = false
        if stripRight { stripNextText = true }
      } else {
        if case .name("raw") = tokens.first {
          throw .unsupported(line: tagLine, feature: "{% raw %}")
        }
        pieces.append(.statement(tokens, line: tagLine))
        lineStarting = finishTag(stripRight: stripRight, trim: true, stripNext: &stripNextText)
      }
    }
    flush(&text)
    return pieces
  }

  /// After a block or comment tag: `-` strips all following whitespace, else trim_blocks drops one
  /// newline. Returns whether the following text starts a line.
  private mutating func finishTag(stripRight: Bool, trim: Bool, stripNext: inout Bool) -> Bool {
    if stripRight {
      stripNext = true
      return false
    }
    if trim && i < s.count && s[i] == "\n" {
      i += 1
      line += 1
      return true
    }
    return false
  }

  static func isSpace(_ c: Unicode.Scalar) -> Bool { c.properties.isWhitespace }

  private mutating func skipSpaces() {
    while i < s.count && Self.isSpace(s[i]) {
      if s[i] == "\n" { line += 1 }
      i += 1
    }
  }

  private mutating func token() throws(ChatTemplateError) -> JinjaToken {
    let c = s[i]
    if c == "'" || c == "\"" { return .string(try stringLiteral(quote: c)) }
    if c.properties.numericType != nil && c.value < 128 {
      var j = i
      while j < s.count && (s[j].value >= 48 && s[j].value <= 57 || s[j] == "_") { j += 1 }
      var isFloat = false
      if j + 1 < s.count && s[j] == "." && s[j + 1].value >= 48 && s[j + 1].value <= 57 {
        isFloat = true
        j += 1
        while j < s.count && s[j].value >= 48 && s[j].value <= 57 { j += 1 }
      }
      if j < s.count && (s[j] == "e" || s[j] == "E") {
        var k = j + 1
        if k < s.count && (s[k] == "+" || s[k] == "-") { k += 1 }
        if k < s.count && s[k].value >= 48 && s[k].value <= 57 {
          isFloat = true
          j = k
          while j < s.count && s[j].value >= 48 && s[j].value <= 57 { j += 1 }
        }
      }
      let text = String(String.UnicodeScalarView(s[i..<j])).replacingOccurrences(of: "_", with: "")
      i = j
      if isFloat {
        guard let d = Double(text) else { throw .syntax(line: line, message: "bad number \(text)") }
        return .float(d)
      }
      guard let n = Int(text) else { throw .syntax(line: line, message: "bad number \(text)") }
      return .int(n)
    }
    if c == "_" || c.properties.isAlphabetic {
      var j = i
      while j < s.count && (s[j] == "_" || s[j].properties.isAlphabetic || (s[j].value >= 48 && s[j].value <= 57)) { j += 1 }
      let name = String(String.UnicodeScalarView(s[i..<j]))
      i = j
      return .name(name)
    }
    for op in Self.operators {
      let u = Array(op.unicodeScalars)
      if i + u.count <= s.count && Array(s[i..<(i + u.count)]) == u {
        i += u.count
        return .op(op)
      }
    }
    throw .syntax(line: line, message: "unexpected character \(String(c))")
  }

  private mutating func stringLiteral(quote: Unicode.Scalar) throws(ChatTemplateError) -> String {
    var out = String.UnicodeScalarView()
    i += 1
    while true {
      guard i < s.count else { throw .syntax(line: line, message: "unterminated string") }
      let c = s[i]
      if c == quote {
        i += 1
        return String(out)
      }
      if c == "\n" { line += 1 }
      if c == "\\" && i + 1 < s.count {
        let e = s[i + 1]
        i += 2
        switch e {
        case "n": out.append("\n")
        case "t": out.append("\t")
        case "r": out.append("\r")
        case "\\": out.append("\\")
        case "'": out.append("'")
        case "\"": out.append("\"")
        case "0": out.append("\0")
        case "u", "x", "U":
          let count = e == "x" ? 2 : (e == "u" ? 4 : 8)
          guard i + count <= s.count, let v = UInt32(String(String.UnicodeScalarView(s[i..<(i + count)])), radix: 16),
            let scalar = Unicode.Scalar(v)
          else { throw .syntax(line: line, message: "bad \\\(e) escape") }
          out.append(scalar)
          i += count
        case "\n":
          line += 1  // line continuation
        default:
          // Python keeps unknown escapes as written.
          out.append("\\")
          out.append(e)
        }
        continue
      }
      out.append(c)
      i += 1
    }
  }
}
