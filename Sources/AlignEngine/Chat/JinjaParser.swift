// Parsing the lexed template into statements and expressions, with Jinja's operator precedence:
// conditional < or < and < not < comparisons/in < + - < ~ < * / // % < ** < unary - < postfix
// (attribute, subscript, call) and filters/tests.

/// A constant in the template source.
enum JinjaLiteral: Sendable {
  case none, bool(Bool), int(Int), double(Double), string(String)
}

indirect enum JinjaExpr: Sendable {
  case literal(JinjaLiteral)
  case name(String)
  case list([JinjaExpr])
  case dict([(JinjaExpr, JinjaExpr)])
  case attribute(JinjaExpr, String)
  case item(JinjaExpr, JinjaExpr)
  case slice(JinjaExpr, JinjaExpr?, JinjaExpr?, JinjaExpr?)
  case call(JinjaExpr, [JinjaExpr], [(String, JinjaExpr)])
  case filter(JinjaExpr, String, [JinjaExpr], [(String, JinjaExpr)])
  case test(JinjaExpr, String, [JinjaExpr], negated: Bool)
  case not(JinjaExpr)
  case negate(JinjaExpr)
  case and(JinjaExpr, JinjaExpr)
  case or(JinjaExpr, JinjaExpr)
  case binary(String, JinjaExpr, JinjaExpr)
  case conditional(JinjaExpr, then: JinjaExpr, else: JinjaExpr?)
}

indirect enum JinjaNode: Sendable {
  case text(String)
  case output(JinjaExpr, line: Int)
  case ifBlock([(JinjaExpr, [JinjaNode])], otherwise: [JinjaNode], line: Int)
  case forLoop(targets: [String], iterable: JinjaExpr, condition: JinjaExpr?, body: [JinjaNode], otherwise: [JinjaNode], line: Int)
  case set(targets: [String], attribute: String?, JinjaExpr, line: Int)
  case setBlock(name: String, body: [JinjaNode])
  case macro(name: String, parameters: [(String, JinjaExpr?)], body: [JinjaNode])
  case breakLoop
  case continueLoop
  case generation([JinjaNode])
}

struct JinjaParser {
  private let pieces: [JinjaPiece]
  private var p = 0

  init(_ pieces: [JinjaPiece]) { self.pieces = pieces }

  mutating func parseTemplate() throws(ChatTemplateError) -> [JinjaNode] {
    let (nodes, end) = try parseBlock(until: [])
    if let end { throw .syntax(line: end.line, message: "unexpected {% \(end.keyword) %}") }
    return nodes
  }

  /// Parses nodes until a statement whose keyword is in `terminators`; returns it (tokens after the keyword).
  private mutating func parseBlock(until terminators: Set<String>) throws(ChatTemplateError) -> ([JinjaNode], (keyword: String, rest: [JinjaToken], line: Int)?) {
    var nodes: [JinjaNode] = []
    while p < pieces.count {
      let piece = pieces[p]
      p += 1
      switch piece {
      case .text(let t): nodes.append(.text(t))
      case .output(let tokens, let line):
        var e = ExprParser(tokens: tokens, line: line)
        let expr = try e.parseExpression()
        try e.expectEnd()
        nodes.append(.output(expr, line: line))
      case .statement(let tokens, let line):
        guard case .name(let keyword) = tokens.first else { throw .syntax(line: line, message: "empty or bad statement") }
        let rest = Array(tokens.dropFirst())
        if terminators.contains(keyword) { return (nodes, (keyword, rest, line)) }
        nodes.append(try parseStatement(keyword, rest, line: line))
      }
    }
    if !terminators.isEmpty {
      throw .syntax(line: 0, message: "missing {% \(terminators.sorted().joined(separator: " or ")) %} at end of template")
    }
    return (nodes, nil)
  }

  private mutating func parseStatement(_ keyword: String, _ rest: [JinjaToken], line: Int) throws(ChatTemplateError) -> JinjaNode {
    switch keyword {
    case "if":
      var branches: [(JinjaExpr, [JinjaNode])] = []
      var condition = try Self.expression(rest, line: line)
      while true {
        let (body, end) = try parseBlock(until: ["elif", "else", "endif"])
        branches.append((condition, body))
        guard let end else { throw .syntax(line: line, message: "missing endif") }
        switch end.keyword {
        case "elif":
          condition = try Self.expression(end.rest, line: end.line)
        case "else":
          let (otherwise, close) = try parseBlock(until: ["endif"])
          guard close != nil else { throw .syntax(line: line, message: "missing endif") }
          return .ifBlock(branches, otherwise: otherwise, line: line)
        default:
          return .ifBlock(branches, otherwise: [], line: line)
        }
      }
    case "for":
      var e = ExprParser(tokens: rest, line: line)
      var targets: [String] = []
      repeat {
        guard case .name(let n) = e.next() else { throw .syntax(line: line, message: "bad for-loop target") }
        targets.append(n)
      } while e.accept(.op(","))
      guard e.accept(.name("in")) else { throw .syntax(line: line, message: "expected 'in' in for loop") }
      let iterable = try e.parseOr(allowConditional: false)
      var condition: JinjaExpr?
      if e.accept(.name("if")) { condition = try e.parseOr(allowConditional: false) }
      if e.accept(.name("recursive")) { throw .unsupported(line: line, feature: "recursive for loops") }
      try e.expectEnd()
      let (body, end) = try parseBlock(until: ["else", "endfor"])
      guard let end else { throw .syntax(line: line, message: "missing endfor") }
      var otherwise: [JinjaNode] = []
      if end.keyword == "else" {
        let (o, close) = try parseBlock(until: ["endfor"])
        guard close != nil else { throw .syntax(line: line, message: "missing endfor") }
        otherwise = o
      }
      return .forLoop(targets: targets, iterable: iterable, condition: condition, body: body, otherwise: otherwise, line: line)
    case "set":
      var e = ExprParser(tokens: rest, line: line)
      guard case .name(let first) = e.next() else { throw .syntax(line: line, message: "bad set target") }
      if e.atEnd {
        let (body, close) = try parseBlock(until: ["endset"])
        guard close != nil else { throw .syntax(line: line, message: "missing endset") }
        return .setBlock(name: first, body: body)
      }
      var targets = [first]
      var attribute: String?
      if e.accept(.op(".")) {
        guard case .name(let a) = e.next() else { throw .syntax(line: line, message: "bad set target") }
        attribute = a
      } else {
        while e.accept(.op(",")) {
          guard case .name(let n) = e.next() else { throw .syntax(line: line, message: "bad set target") }
          targets.append(n)
        }
      }
      guard e.accept(.op("=")) else { throw .syntax(line: line, message: "expected = in set") }
      let value = try e.parseTupleOrExpression()
      try e.expectEnd()
      return .set(targets: targets, attribute: attribute, value, line: line)
    case "macro":
      var e = ExprParser(tokens: rest, line: line)
      guard case .name(let name) = e.next(), e.accept(.op("(")) else { throw .syntax(line: line, message: "bad macro") }
      var parameters: [(String, JinjaExpr?)] = []
      while !e.accept(.op(")")) {
        guard case .name(let param) = e.next() else { throw .syntax(line: line, message: "bad macro parameter") }
        var defaultValue: JinjaExpr?
        if e.accept(.op("=")) { defaultValue = try e.parseExpression() }
        parameters.append((param, defaultValue))
        if !e.accept(.op(",")) {
          guard e.accept(.op(")")) else { throw .syntax(line: line, message: "bad macro parameters") }
          break
        }
      }
      try e.expectEnd()
      let (body, close) = try parseBlock(until: ["endmacro"])
      guard close != nil else { throw .syntax(line: line, message: "missing endmacro") }
      return .macro(name: name, parameters: parameters, body: body)
    case "break":
      return .breakLoop
    case "continue":
      return .continueLoop
    case "generation":
      // transformers' AssistantTracker extension: marks assistant text; renders its body.
      let (body, close) = try parseBlock(until: ["endgeneration"])
      guard close != nil else { throw .syntax(line: line, message: "missing endgeneration") }
      return .generation(body)
    case "include", "extends", "block", "import", "from", "call", "filter", "with", "autoescape", "do":
      throw .unsupported(line: line, feature: "{% \(keyword) %}")
    default:
      throw .syntax(line: line, message: "unknown statement {% \(keyword) %}")
    }
  }

  private static func expression(_ tokens: [JinjaToken], line: Int) throws(ChatTemplateError) -> JinjaExpr {
    var e = ExprParser(tokens: tokens, line: line)
    let expr = try e.parseExpression()
    try e.expectEnd()
    return expr
  }
}

/// Recursive-descent parser of one tag's expression tokens.
struct ExprParser {
  private let tokens: [JinjaToken]
  private var k = 0
  let line: Int
  /// Current nesting of sub-expressions (each parenthesis, bracket, `not`, unary sign or conditional
  /// adds up to 3), bounded so a hostile template fails to parse instead of overflowing the stack here
  /// or in the interpreter.
  private var depth = 0
  static let maxDepth = 300
  /// Most tokens in one tag: a long operator chain (`1 + 1 + ...`) parses flat but evaluates recursively.
  static let maxTokens = 1_024

  private mutating func enter() throws(ChatTemplateError) {
    if depth == 0 && tokens.count > Self.maxTokens {
      throw .syntax(line: line, message: "expression of \(tokens.count) tokens (at most \(Self.maxTokens))")
    }
    depth += 1
    if depth > Self.maxDepth { throw .syntax(line: line, message: "expression nested too deeply") }
  }

  init(tokens: [JinjaToken], line: Int) {
    self.tokens = tokens
    self.line = line
  }

  var atEnd: Bool { k >= tokens.count }
  private var peek: JinjaToken? { k < tokens.count ? tokens[k] : nil }

  mutating func next() -> JinjaToken? {
    defer { k += 1 }
    return peek
  }

  mutating func accept(_ t: JinjaToken) -> Bool {
    if peek == t {
      k += 1
      return true
    }
    return false
  }

  private mutating func expect(_ t: JinjaToken) throws(ChatTemplateError) {
    guard accept(t) else { throw .syntax(line: line, message: "expected \(Self.show(t)), found \(peek.map(Self.show) ?? "end of tag")") }
  }

  func expectEnd() throws(ChatTemplateError) {
    if let t = peek { throw .syntax(line: line, message: "unexpected \(Self.show(t))") }
  }

  static func show(_ t: JinjaToken) -> String {
    switch t {
    case .name(let n): return n
    case .string(let s): return "'\(s)'"
    case .int(let i): return String(i)
    case .float(let d): return String(d)
    case .op(let o): return o
    }
  }

  /// `a, b` without brackets is a tuple (in `set` and parenthesized expressions).
  mutating func parseTupleOrExpression() throws(ChatTemplateError) -> JinjaExpr {
    let first = try parseExpression()
    guard peek == .op(",") else { return first }
    var items = [first]
    while accept(.op(",")) {
      if atEnd || peek == .op(")") { break }
      items.append(try parseExpression())
    }
    return .list(items)
  }

  mutating func parseExpression() throws(ChatTemplateError) -> JinjaExpr {
    try parseOr(allowConditional: true)
  }

  mutating func parseOr(allowConditional: Bool) throws(ChatTemplateError) -> JinjaExpr {
    try enter()
    defer { depth -= 1 }
    var left = try parseAnd()
    while accept(.name("or")) { left = .or(left, try parseAnd()) }
    if allowConditional && accept(.name("if")) {
      let condition = try parseOr(allowConditional: false)
      var otherwise: JinjaExpr?
      if accept(.name("else")) { otherwise = try parseOr(allowConditional: true) }
      return .conditional(condition, then: left, else: otherwise)
    }
    return left
  }

  private mutating func parseAnd() throws(ChatTemplateError) -> JinjaExpr {
    var left = try parseNot()
    while accept(.name("and")) { left = .and(left, try parseNot()) }
    return left
  }

  private mutating func parseNot() throws(ChatTemplateError) -> JinjaExpr {
    try enter()
    defer { depth -= 1 }
    if accept(.name("not")) { return .not(try parseNot()) }
    return try parseCompare()
  }

  private mutating func parseCompare() throws(ChatTemplateError) -> JinjaExpr {
    var left = try parseMath1()
    while true {
      if case .op(let o) = peek, ["==", "!=", "<", ">", "<=", ">="].contains(o) {
        k += 1
        left = .binary(o, left, try parseMath1())
      } else if accept(.name("in")) {
        left = .binary("in", left, try parseMath1())
      } else if peek == .name("not"), k + 1 < tokens.count, tokens[k + 1] == .name("in") {
        k += 2
        left = .not(.binary("in", left, try parseMath1()))
      } else {
        return left
      }
    }
  }

  private mutating func parseMath1() throws(ChatTemplateError) -> JinjaExpr {
    var left = try parseConcat()
    while case .op(let o) = peek, o == "+" || o == "-" {
      k += 1
      left = .binary(o, left, try parseConcat())
    }
    return left
  }

  private mutating func parseConcat() throws(ChatTemplateError) -> JinjaExpr {
    var left = try parseMath2()
    while accept(.op("~")) { left = .binary("~", left, try parseMath2()) }
    return left
  }

  private mutating func parseMath2() throws(ChatTemplateError) -> JinjaExpr {
    var left = try parsePow()
    while case .op(let o) = peek, ["*", "/", "//", "%"].contains(o) {
      k += 1
      left = .binary(o, left, try parsePow())
    }
    return left
  }

  private mutating func parsePow() throws(ChatTemplateError) -> JinjaExpr {
    var left = try parseUnary()
    while accept(.op("**")) { left = .binary("**", left, try parseUnary()) }
    return left
  }

  private mutating func parseUnary() throws(ChatTemplateError) -> JinjaExpr {
    try enter()
    defer { depth -= 1 }
    if accept(.op("-")) { return try parseFilters(.negate(try parseUnary())) }
    if accept(.op("+")) { return try parseFilters(try parseUnary()) }
    return try parseFilters(try parsePostfix(try parsePrimary()))
  }

  private mutating func parsePrimary() throws(ChatTemplateError) -> JinjaExpr {
    guard let t = next() else { throw .syntax(line: line, message: "expected an expression") }
    switch t {
    case .string(var s):
      while case .string(let more) = peek {  // adjacent literals concatenate
        s += more
        k += 1
      }
      return .literal(.string(s))
    case .int(let i): return .literal(.int(i))
    case .float(let d): return .literal(.double(d))
    case .name(let n):
      switch n {
      case "true", "True": return .literal(.bool(true))
      case "false", "False": return .literal(.bool(false))
      case "none", "None": return .literal(.none)
      default: return .name(n)
      }
    case .op("("):
      if accept(.op(")")) { return .list([]) }
      let e = try parseTupleOrExpression()
      try expect(.op(")"))
      return e
    case .op("["):
      var items: [JinjaExpr] = []
      while !accept(.op("]")) {
        items.append(try parseExpression())
        if !accept(.op(",")) {
          try expect(.op("]"))
          break
        }
      }
      return .list(items)
    case .op("{"):
      var pairs: [(JinjaExpr, JinjaExpr)] = []
      while !accept(.op("}")) {
        let key = try parseExpression()
        try expect(.op(":"))
        pairs.append((key, try parseExpression()))
        if !accept(.op(",")) {
          try expect(.op("}"))
          break
        }
      }
      return .dict(pairs)
    default:
      throw .syntax(line: line, message: "unexpected \(Self.show(t))")
    }
  }

  private mutating func parsePostfix(_ base: JinjaExpr) throws(ChatTemplateError) -> JinjaExpr {
    var e = base
    while true {
      if accept(.op(".")) {
        switch next() {
        case .name(let n): e = .attribute(e, n)
        case .int(let i): e = .item(e, .literal(.int(i)))
        default: throw .syntax(line: line, message: "expected an attribute name after .")
        }
      } else if accept(.op("[")) {
        var parts: [JinjaExpr?] = [nil]
        var isSlice = false
        while !accept(.op("]")) {
          if accept(.op(":")) {
            isSlice = true
            parts.append(nil)
          } else {
            guard parts[parts.count - 1] == nil else { throw .syntax(line: line, message: "bad subscript") }
            parts[parts.count - 1] = try parseExpression()
          }
        }
        if isSlice {
          guard parts.count <= 3 else { throw .syntax(line: line, message: "bad slice") }
          while parts.count < 3 { parts.append(nil) }
          e = .slice(e, parts[0], parts[1], parts[2])
        } else {
          guard let index = parts[0] else { throw .syntax(line: line, message: "empty subscript") }
          e = .item(e, index)
        }
      } else if peek == .op("(") {
        k += 1
        let (args, kwargs) = try parseArguments()
        e = .call(e, args, kwargs)
      } else {
        return e
      }
    }
  }

  /// Arguments after `(` up to and including `)`.
  private mutating func parseArguments() throws(ChatTemplateError) -> ([JinjaExpr], [(String, JinjaExpr)]) {
    var args: [JinjaExpr] = []
    var kwargs: [(String, JinjaExpr)] = []
    while !accept(.op(")")) {
      if case .name(let n) = peek, k + 1 < tokens.count, tokens[k + 1] == .op("=") {
        k += 2
        kwargs.append((n, try parseExpression()))
      } else {
        args.append(try parseExpression())
      }
      if !accept(.op(",")) {
        try expect(.op(")"))
        break
      }
    }
    return (args, kwargs)
  }

  private mutating func parseFilters(_ base: JinjaExpr) throws(ChatTemplateError) -> JinjaExpr {
    var e = base
    while true {
      if accept(.op("|")) {
        guard case .name(let name) = next() else { throw .syntax(line: line, message: "expected a filter name") }
        var args: [JinjaExpr] = []
        var kwargs: [(String, JinjaExpr)] = []
        if accept(.op("(")) { (args, kwargs) = try parseArguments() }
        e = .filter(e, name, args, kwargs)
      } else if accept(.name("is")) {
        let negated = accept(.name("not"))
        guard case .name(let name) = next() else { throw .syntax(line: line, message: "expected a test name") }
        var args: [JinjaExpr] = []
        if accept(.op("(")) {
          (args, _) = try parseArguments()
        } else if let t = peek, Self.startsTestArgument(t) {
          args = [try parsePostfix(try parsePrimary())]
        }
        e = .test(e, name, args, negated: negated)
      } else {
        return e
      }
    }
  }

  /// Jinja allows one argument without parentheses: `x is sameas false`, `x is divisibleby 3`.
  private static func startsTestArgument(_ t: JinjaToken) -> Bool {
    switch t {
    case .string, .int, .float: return true
    case .name(let n): return !["and", "or", "not", "in", "is", "if", "else", "recursive"].contains(n)
    case .op(let o): return o == "[" || o == "{"
    }
  }
}
