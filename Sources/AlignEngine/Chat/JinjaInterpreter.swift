import Foundation

/// Why a block stopped early.
private enum Flow { case normal, breakLoop, continueLoop }

/// Renders a parsed template. One instance per render; not shared between tasks.
final class JinjaInterpreter {
  /// Innermost scope last.
  private var scopes: [[String: JinjaValue]]
  private var output = ""
  /// Nesting of macro calls, bounded so a recursive template fails cleanly instead of overflowing the stack.
  private var depth = 0
  private static let maxDepth = 100
  /// Largest string (bytes) or list (elements) a template may build, e.g. with `str * n`, `~`, `+`,
  /// `join` or `replace`; templates never need more, and it keeps a hostile template's memory bounded.
  static let maxRepeat = 1 << 22
  /// Largest rendered text (bytes), including text captured by `set` blocks and macro calls.
  static let maxOutputBytes = 1 << 23
  /// Work budget of one render: statements run, loop iterations, calls, and elements (or 64-byte
  /// chunks of strings) visited by filters, `in` and method calls. A real chat template uses about
  /// 20-50 units per message; a template that loops far longer fails with a runtime error instead of
  /// hanging the request.
  static let maxWork = 200_000
  /// Deepest nesting of lists and dicts a template may build (printing, comparing and `tojson` recurse).
  static let maxNesting = 256
  private var workLeft = JinjaInterpreter.maxWork

  init(globals: [String: JinjaValue]) {
    scopes = [globals]
    installBuiltins()
  }

  func render(_ nodes: [JinjaNode]) throws(ChatTemplateError) -> String {
    _ = try run(nodes)
    return output
  }

  // MARK: Limits

  /// Takes `units` from the work budget.
  private func charge(_ units: Int, _ line: Int) throws(ChatTemplateError) {
    workLeft -= min(units, JinjaInterpreter.maxWork + 1)
    if workLeft < 0 { throw .runtime(line: line, message: "template does too much work (over \(Self.maxWork) steps)") }
  }

  /// Elements a filter, method or `in` has to look at (64-byte chunks of a string).
  private static func width(_ v: JinjaValue) -> Int {
    switch v {
    case .string(let s): return s.utf8.count / 64
    case .array(let a): return a.count
    case .object(let d): return d.keys.count
    default: return 1
    }
  }

  /// Whether printing `v` would take more than `limit` bytes (looks at no more than that much).
  static func exceedsSize(_ v: JinjaValue, _ limit: Int) -> Bool {
    var left = limit
    func over(_ v: JinjaValue) -> Bool {
      switch v {
      case .string(let s): left -= s.utf8.count + 2
      case .array(let a):
        left -= 2
        for x in a where left >= 0 {
          left -= 2
          if over(x) { return true }
        }
      case .object(let d):
        left -= 2
        for k in d.keys where left >= 0 {
          left -= k.utf8.count + 4
          if over(d[k]!) { return true }
        }
      default: left -= 24
      }
      return left < 0
    }
    return over(v)
  }

  /// Fails when `v` is too large to print or nested too deeply; the elements visited are charged.
  private func checkValue(_ v: JinjaValue, _ line: Int) throws(ChatTemplateError) {
    var visited = 0
    func tooDeep(_ v: JinjaValue, _ level: Int) -> Bool {
      switch v {
      case .array(let a):
        if level >= Self.maxNesting { return true }
        for x in a {
          visited += 1
          if tooDeep(x, level + 1) { return true }
        }
      case .object(let d):
        if level >= Self.maxNesting { return true }
        for k in d.keys {
          visited += 1
          if tooDeep(d[k]!, level + 1) { return true }
        }
      default: break
      }
      return false
    }
    let deep = tooDeep(v, 0)
    try charge(visited, line)
    if deep { throw .runtime(line: line, message: "value nested more than \(Self.maxNesting) levels deep") }
  }

  /// Appends to the output within `maxOutputBytes`.
  private func emit(_ v: JinjaValue, _ line: Int) throws(ChatTemplateError) {
    let room = Self.maxOutputBytes - output.utf8.count
    guard !Self.exceedsSize(v, room) else {
      throw .runtime(line: line, message: "rendered text exceeds \(Self.maxOutputBytes) bytes")
    }
    output += v.pythonString
  }

  // MARK: Scopes

  private func lookup(_ name: String) -> JinjaValue {
    for scope in scopes.reversed() {
      if let v = scope[name] { return v }
    }
    return .undefined(name)
  }

  private func assign(_ name: String, _ value: JinjaValue) {
    scopes[scopes.count - 1][name] = value
  }

  private func installBuiltins() {
    var g = scopes[0]
    g["raise_exception"] = .callable(
      JinjaCallable("raise_exception") { args, _ throws(ChatTemplateError) in
        throw .raised(args.first?.pythonString ?? "")
      })
    g["namespace"] = .callable(
      JinjaCallable("namespace") { args, kwargs throws(ChatTemplateError) in
        let ns = JinjaNamespace()
        if case .object(let d)? = args.first { for k in d.keys { ns.attributes[k] = d[k] } }
        for (k, v) in kwargs { ns.attributes[k] = v }
        return .namespace(ns)
      })
    g["dict"] = .callable(
      JinjaCallable("dict") { args, kwargs throws(ChatTemplateError) in
        var d = JinjaDict()
        if case .object(let base)? = args.first { for k in base.keys { d[k] = base[k] } }
        for (k, v) in kwargs { d[k] = v }
        return .object(d)
      })
    g["range"] = .callable(
      JinjaCallable("range") { args, _ throws(ChatTemplateError) in
        let ints = try args.map { v throws(ChatTemplateError) -> Int in
          guard case .int(let i) = v else { throw .runtime(line: 0, message: "range() needs integers") }
          return i
        }
        var (start, stop, step) = (0, 0, 1)
        switch ints.count {
        case 1: stop = ints[0]
        case 2: (start, stop) = (ints[0], ints[1])
        case 3: (start, stop, step) = (ints[0], ints[1], ints[2])
        default: throw .runtime(line: 0, message: "range() takes 1 to 3 arguments")
        }
        guard step != 0 else { throw .runtime(line: 0, message: "range() step must not be zero") }
        let (span, o1) = stop.subtractingReportingOverflow(start)
        let (count, o2) = span.dividedReportingOverflow(by: step)
        guard !o1, !o2, count.magnitude <= 100_000 else { throw .runtime(line: 0, message: "range() too large") }
        return .array(stride(from: start, to: stop, by: step).map { .int($0) })
      })
    g["strftime_now"] = .callable(
      JinjaCallable("strftime_now") { args, _ throws(ChatTemplateError) in
        guard case .string(let format)? = args.first else { throw .runtime(line: 0, message: "strftime_now needs a format string") }
        return .string(JinjaBuiltins.strftime(format, Date()))
      })
    scopes[0] = g
  }

  // MARK: Statements

  private func run(_ nodes: [JinjaNode]) throws(ChatTemplateError) -> Flow {
    for node in nodes {
      let flow = try run(node)
      if flow != .normal { return flow }
    }
    return .normal
  }

  private func run(_ node: JinjaNode) throws(ChatTemplateError) -> Flow {
    try charge(1, 0)
    switch node {
    case .text(let t):
      try emit(.string(t), 0)
    case .output(let e, let line):
      try emit(try eval(e, line), line)
    case .ifBlock(let branches, let otherwise, let line):
      for (condition, body) in branches where try eval(condition, line).truthy {
        return try run(body)
      }
      return try run(otherwise)
    case .forLoop(let targets, let iterable, let condition, let body, let otherwise, let line):
      return try runFor(targets, iterable, condition, body, otherwise, line)
    case .set(let targets, let attribute, let e, let line):
      let value = try eval(e, line)
      if let attribute {
        guard case .namespace(let ns) = lookup(targets[0]) else {
          throw .runtime(line: line, message: "cannot set attribute \(attribute) of \(targets[0]): not a namespace")
        }
        ns.attributes[attribute] = value
      } else if targets.count == 1 {
        assign(targets[0], value)
      } else {
        let items = try iterate(value, line)
        guard items.count == targets.count else { throw .runtime(line: line, message: "cannot unpack \(items.count) values into \(targets.count)") }
        for (t, v) in zip(targets, items) { assign(t, v) }
      }
    case .setBlock(let name, let body):
      let saved = output
      output = ""
      _ = try run(body)
      let captured = output
      output = saved
      assign(name, .string(captured))
    case .macro(let name, let parameters, let body):
      assign(name, .callable(makeMacro(name, parameters, body)))
    case .breakLoop:
      return .breakLoop
    case .continueLoop:
      return .continueLoop
    case .generation(let body):
      return try run(body)
    }
    return .normal
  }

  private func runFor(
    _ targets: [String], _ iterable: JinjaExpr, _ condition: JinjaExpr?, _ body: [JinjaNode], _ otherwise: [JinjaNode], _ line: Int
  ) throws(ChatTemplateError) -> Flow {
    var items = try iterate(try eval(iterable, line), line)
    func bind(_ item: JinjaValue) throws(ChatTemplateError) {
      if targets.count == 1 {
        assign(targets[0], item)
      } else {
        let parts = try iterate(item, line)
        guard parts.count == targets.count else { throw .runtime(line: line, message: "cannot unpack \(parts.count) values into \(targets.count)") }
        for (t, v) in zip(targets, parts) { assign(t, v) }
      }
    }
    if let condition {
      // `for x in xs if cond`: filtered before loop.* is computed.
      var kept: [JinjaValue] = []
      for item in items {
        try charge(1, line)
        scopes.append([:])
        defer { scopes.removeLast() }
        try bind(item)
        if try eval(condition, line).truthy { kept.append(item) }
      }
      items = kept
    }
    if items.isEmpty { return try run(otherwise) }
    let n = items.count
    for (index, item) in items.enumerated() {
      try charge(1, line)
      // Each iteration has its own scope: `set` inside the body does not outlive the iteration.
      scopes.append([:])
      defer { scopes.removeLast() }
      var loop = JinjaDict()
      loop["index"] = .int(index + 1)
      loop["index0"] = .int(index)
      loop["revindex"] = .int(n - index)
      loop["revindex0"] = .int(n - index - 1)
      loop["first"] = .bool(index == 0)
      loop["last"] = .bool(index == n - 1)
      loop["length"] = .int(n)
      loop["previtem"] = index > 0 ? items[index - 1] : .undefined("previtem")
      loop["nextitem"] = index + 1 < n ? items[index + 1] : .undefined("nextitem")
      loop["cycle"] = .callable(
        JinjaCallable("cycle") { args, _ throws(ChatTemplateError) in
          args.isEmpty ? .undefined("cycle") : args[index % args.count]
        })
      assign("loop", .object(loop))
      try bind(item)
      if try run(body) == .breakLoop { break }
    }
    return .normal
  }

  private func makeMacro(_ name: String, _ parameters: [(String, JinjaExpr?)], _ body: [JinjaNode]) -> JinjaCallable {
    JinjaCallable(name) { [unowned self] args, kwargs throws(ChatTemplateError) in
      var scope: [String: JinjaValue] = [:]
      for (i, (param, defaultValue)) in parameters.enumerated() {
        if i < args.count {
          scope[param] = args[i]
        } else if let kw = kwargs.first(where: { $0.0 == param }) {
          scope[param] = kw.1
        } else if let defaultValue {
          scope[param] = try self.eval(defaultValue, 0)
        } else {
          scope[param] = .undefined(param)
        }
      }
      guard self.depth < Self.maxDepth else { throw .runtime(line: 0, message: "macro \(name) nested too deeply") }
      self.depth += 1
      defer { self.depth -= 1 }
      let saved = self.output
      self.output = ""
      self.scopes.append(scope)
      defer { self.scopes.removeLast() }
      _ = try self.run(body)
      let result = self.output
      self.output = saved
      return .string(result)
    }
  }

  // MARK: Expressions

  func eval(_ e: JinjaExpr, _ line: Int) throws(ChatTemplateError) -> JinjaValue {
    switch e {
    case .literal(let l): return JinjaValue(l)
    case .name(let n): return lookup(n)
    case .list(let items):
      var out: [JinjaValue] = []
      for item in items { out.append(try eval(item, line)) }
      try checkValue(.array(out), line)
      return .array(out)
    case .dict(let pairs):
      var d = JinjaDict()
      for (k, v) in pairs {
        guard case .string(let key) = try eval(k, line) else { throw .runtime(line: line, message: "dict keys must be strings") }
        d[key] = try eval(v, line)
      }
      try checkValue(.object(d), line)
      return .object(d)
    case .attribute(let base, let name):
      return try attribute(try eval(base, line), name, line)
    case .item(let base, let index):
      return try item(try eval(base, line), try eval(index, line), line)
    case .slice(let base, let a, let b, let c):
      func opt(_ x: JinjaExpr?) throws(ChatTemplateError) -> Int? {
        guard let x else { return nil }
        switch try eval(x, line) {
        case .int(let i): return i
        case .none: return nil
        default: throw .runtime(line: line, message: "slice indices must be integers")
        }
      }
      return try slice(try eval(base, line), try opt(a), try opt(b), try opt(c), line)
    case .call(let f, let argExprs, let kwargExprs):
      let callee = try eval(f, line)
      var args: [JinjaValue] = []
      for a in argExprs { args.append(try eval(a, line)) }
      var kwargs: [(String, JinjaValue)] = []
      for (k, v) in kwargExprs { kwargs.append((k, try eval(v, line))) }
      guard case .callable(let c) = callee else {
        if case .undefined(let n) = callee { throw .runtime(line: line, message: "'\(n)' is undefined") }
        throw .runtime(line: line, message: "\(callee.typeName) object is not callable")
      }
      try charge(1, line)
      let result = try c.call(args, kwargs)
      try checkValue(result, line)
      return result
    case .filter(let base, let name, let argExprs, let kwargExprs):
      let value = try eval(base, line)
      var args: [JinjaValue] = []
      for a in argExprs { args.append(try eval(a, line)) }
      var kwargs: [(String, JinjaValue)] = []
      for (k, v) in kwargExprs { kwargs.append((k, try eval(v, line))) }
      return try applyFilter(name, value, args, kwargs, line)
    case .test(let base, let name, let argExprs, let negated):
      let value = try eval(base, line)
      var args: [JinjaValue] = []
      for a in argExprs { args.append(try eval(a, line)) }
      let result = try applyTest(name, value, args, line)
      return .bool(negated ? !result : result)
    case .not(let x): return .bool(!(try eval(x, line).truthy))
    case .negate(let x):
      switch try eval(x, line) {
      case .int(let i):
        guard i != .min else { throw .runtime(line: line, message: "integer overflow") }
        return .int(-i)
      case .double(let d): return .double(-d)
      case let v: throw .runtime(line: line, message: "bad operand type for unary -: \(v.typeName)")
      }
    case .and(let a, let b):
      let l = try eval(a, line)
      return l.truthy ? try eval(b, line) : l
    case .or(let a, let b):
      let l = try eval(a, line)
      return l.truthy ? l : try eval(b, line)
    case .conditional(let condition, let then, let otherwise):
      if try eval(condition, line).truthy { return try eval(then, line) }
      if let otherwise { return try eval(otherwise, line) }
      return .undefined("conditional")
    case .binary(let op, let a, let b):
      return try binary(op, try eval(a, line), try eval(b, line), line)
    }
  }

  private func attribute(_ v: JinjaValue, _ name: String, _ line: Int) throws(ChatTemplateError) -> JinjaValue {
    switch v {
    case .undefined(let n): throw .runtime(line: line, message: "'\(n)' is undefined (reading .\(name))")
    case .object(let d):
      if let x = d[name] { return x }
      try charge(1 + Self.width(v), line)
      return JinjaBuiltins.method(of: v, name) ?? .undefined(name)
    case .namespace(let ns): return ns.attributes[name] ?? .undefined(name)
    default:
      try charge(1 + Self.width(v), line)
      return JinjaBuiltins.method(of: v, name) ?? .undefined(name)
    }
  }

  private func item(_ v: JinjaValue, _ index: JinjaValue, _ line: Int) throws(ChatTemplateError) -> JinjaValue {
    switch (v, index) {
    case (.undefined(let n), _): throw .runtime(line: line, message: "'\(n)' is undefined (subscripted)")
    case (.array(let a), .int(let i)):
      let j = i < 0 ? a.count + i : i
      return j >= 0 && j < a.count ? a[j] : .undefined("[\(i)]")
    case (.string(let s), .int(let i)):
      let chars = Array(s.unicodeScalars)
      let j = i < 0 ? chars.count + i : i
      return j >= 0 && j < chars.count ? .string(String(chars[j])) : .undefined("[\(i)]")
    case (.object(let d), .string(let k)):
      return d[k] ?? JinjaBuiltins.method(of: v, k) ?? .undefined(k)
    case (.namespace(let ns), .string(let k)):
      return ns.attributes[k] ?? .undefined(k)
    case (_, .string(let k)):
      return JinjaBuiltins.method(of: v, k) ?? .undefined(k)
    default:
      return .undefined("item")
    }
  }

  private func slice(_ v: JinjaValue, _ a: Int?, _ b: Int?, _ c: Int?, _ line: Int) throws(ChatTemplateError) -> JinjaValue {
    func indices(_ count: Int) throws(ChatTemplateError) -> [Int] {
      let step = c ?? 1
      guard step != 0 else { throw .runtime(line: line, message: "slice step cannot be zero") }
      func clamp(_ x: Int?, _ defaultValue: Int) -> Int {
        guard var x else { return defaultValue }
        if x < 0 { x += count }
        return step > 0 ? min(max(x, 0), count) : min(max(x, -1), count - 1)
      }
      let start = clamp(a, step > 0 ? 0 : count - 1)
      let stop = clamp(b, step > 0 ? count : -1)
      return Array(stride(from: start, to: stop, by: step))
    }
    switch v {
    case .array(let items): return .array(try indices(items.count).map { items[$0] })
    case .string(let s):
      let chars = Array(s.unicodeScalars)
      return .string(String(String.UnicodeScalarView(try indices(chars.count).map { chars[$0] })))
    case .undefined(let n): throw .runtime(line: line, message: "'\(n)' is undefined (sliced)")
    default: throw .runtime(line: line, message: "\(v.typeName) cannot be sliced")
    }
  }

  func iterate(_ v: JinjaValue, _ line: Int) throws(ChatTemplateError) -> [JinjaValue] {
    switch v {
    case .undefined: return []
    case .array(let a): return a
    case .object(let d): return d.keys.map { .string($0) }
    case .string(let s): return s.unicodeScalars.map { .string(String($0)) }
    default: throw .runtime(line: line, message: "\(v.typeName) object is not iterable")
    }
  }

  private func binary(_ op: String, _ a: JinjaValue, _ b: JinjaValue, _ line: Int) throws(ChatTemplateError) -> JinjaValue {
    switch op {
    case "==": return .bool(JinjaBuiltins.equal(a, b))
    case "!=": return .bool(!JinjaBuiltins.equal(a, b))
    case "<", ">", "<=", ">=":
      let c = try JinjaBuiltins.compare(a, b, line)
      switch op {
      case "<": return .bool(c < 0)
      case ">": return .bool(c > 0)
      case "<=": return .bool(c <= 0)
      default: return .bool(c >= 0)
      }
    case "in":
      try charge(1 + Self.width(b), line)
      return .bool(try JinjaBuiltins.contains(b, a, line))
    case "~":
      guard !Self.exceedsSize(a, Self.maxRepeat), !Self.exceedsSize(b, Self.maxRepeat) else {
        throw .runtime(line: line, message: "string concatenation too large")
      }
      let (x, y) = (a.pythonString, b.pythonString)
      guard x.utf8.count + y.utf8.count <= Self.maxRepeat else { throw .runtime(line: line, message: "string concatenation too large") }
      return .string(x + y)
    case "+":
      switch (a, b) {
      case (.string(let x), .string(let y)):
        guard x.utf8.count + y.utf8.count <= Self.maxRepeat else { throw .runtime(line: line, message: "string concatenation too large") }
        return .string(x + y)
      case (.array(let x), .array(let y)):
        guard x.count + y.count <= Self.maxRepeat else { throw .runtime(line: line, message: "list concatenation too large") }
        try charge(x.count + y.count, line)
        return .array(x + y)
      default: break
      }
    case "*":
      switch (a, b) {
      case (.string(let s), .int(let n)), (.int(let n), .string(let s)):
        guard n <= 0 || s.utf8.count.multipliedReportingOverflow(by: n).partialValue <= Self.maxRepeat, n < Self.maxRepeat else {
          throw .runtime(line: line, message: "string repetition too large")
        }
        return .string(String(repeating: s, count: max(n, 0)))
      case (.array(let x), .int(let n)):
        guard n <= 0 || (x.count.multipliedReportingOverflow(by: n).partialValue <= Self.maxRepeat && n < Self.maxRepeat) else {
          throw .runtime(line: line, message: "list repetition too large")
        }
        try charge(x.count * max(n, 0), line)
        return .array(Array([[JinjaValue]](repeating: x, count: max(n, 0)).joined()))
      default: break
      }
    default: break
    }
    // Numbers (bool counts as int, as in Python).
    func number(_ v: JinjaValue) -> Double? {
      switch v {
      case .int(let i): return Double(i)
      case .double(let d): return d
      case .bool(let b): return b ? 1 : 0
      default: return nil
      }
    }
    func integer(_ v: JinjaValue) -> Int? {
      switch v {
      case .int(let i): return i
      case .bool(let b): return b ? 1 : 0
      default: return nil
      }
    }
    if let x = integer(a), let y = integer(b) {
      switch op {
      case "+": return .int(x &+ y)
      case "-": return .int(x &- y)
      case "*": return .int(x &* y)
      case "/":
        guard y != 0 else { throw .runtime(line: line, message: "division by zero") }
        return .double(Double(x) / Double(y))
      case "//":
        guard y != 0 else { throw .runtime(line: line, message: "division by zero") }
        guard !(x == .min && y == -1) else { throw .runtime(line: line, message: "integer overflow") }
        let q = x / y
        return .int((x % y != 0 && ((x < 0) != (y < 0))) ? q - 1 : q)
      case "%":
        guard y != 0 else { throw .runtime(line: line, message: "modulo by zero") }
        guard y != -1 else { return .int(0) }  // x % -1 is 0; Int.min % -1 would trap
        let r = x % y
        return .int(r != 0 && ((r < 0) != (y < 0)) ? r + y : r)
      case "**":
        if y >= 0 {
          var r = 1
          for _ in 0..<min(y, 64) { r = r &* x }
          return .int(r)
        }
        return .double(pow(Double(x), Double(y)))
      default: break
      }
    }
    if let x = number(a), let y = number(b) {
      switch op {
      case "+": return .double(x + y)
      case "-": return .double(x - y)
      case "*": return .double(x * y)
      case "/":
        guard y != 0 else { throw .runtime(line: line, message: "division by zero") }
        return .double(x / y)
      case "//":
        guard y != 0 else { throw .runtime(line: line, message: "division by zero") }
        return .double((x / y).rounded(.down))
      case "%":
        guard y != 0 else { throw .runtime(line: line, message: "modulo by zero") }
        let r = x.truncatingRemainder(dividingBy: y)
        return .double(r != 0 && ((r < 0) != (y < 0)) ? r + y : r)
      case "**": return .double(pow(x, y))
      default: break
      }
    }
    throw .runtime(line: line, message: "unsupported operand types for \(op): \(a.typeName) and \(b.typeName)")
  }

  // MARK: Filters and tests

  private func applyFilter(_ name: String, _ v: JinjaValue, _ args: [JinjaValue], _ kwargs: [(String, JinjaValue)], _ line: Int) throws(ChatTemplateError) -> JinjaValue {
    func arg(_ i: Int, _ key: String) -> JinjaValue? {
      if i < args.count { return args[i] }
      return kwargs.first { $0.0 == key }?.1
    }
    try charge(1 + Self.width(v), line)
    guard !Self.exceedsSize(v, Self.maxRepeat) else { throw .runtime(line: line, message: "value too large for filter \(name)") }
    switch name {
    case "selectattr", "rejectattr", "select", "reject":
      let keep = name == "selectattr" || name == "select"
      let byAttribute = name.hasSuffix("attr")
      var out: [JinjaValue] = []
      for item in try iterate(v, line) {
        var subject = item
        var rest = args
        if byAttribute {
          guard case .string(let attr)? = args.first else { throw .runtime(line: line, message: "\(name) needs an attribute name") }
          subject = try attribute(item, attr, line)
          rest = Array(args.dropFirst())
        }
        let passed: Bool
        if case .string(let test)? = rest.first {
          passed = try applyTest(test, subject, Array(rest.dropFirst()), line)
        } else {
          passed = subject.truthy
        }
        if passed == keep { out.append(item) }
      }
      return .array(out)
    case "map":
      var out: [JinjaValue] = []
      if let attr = kwargs.first(where: { $0.0 == "attribute" })?.1 {
        guard case .string(let a) = attr else { throw .runtime(line: line, message: "map attribute must be a string") }
        let defaultValue = kwargs.first { $0.0 == "default" }?.1
        for item in try iterate(v, line) {
          let x = try attribute(item, a, line)
          out.append(x.isDefined ? x : (defaultValue ?? x))
        }
      } else if case .string(let filter)? = args.first {
        for item in try iterate(v, line) { out.append(try applyFilter(filter, item, Array(args.dropFirst()), [], line)) }
      } else {
        throw .runtime(line: line, message: "map needs a filter name or attribute=")
      }
      return .array(out)
    default:
      return try JinjaBuiltins.filter(name, v, arg, line, iterate: { x throws(ChatTemplateError) in try self.iterate(x, line) })
    }
  }

  private func applyTest(_ name: String, _ v: JinjaValue, _ args: [JinjaValue], _ line: Int) throws(ChatTemplateError) -> Bool {
    switch name {
    case "defined": return v.isDefined
    case "undefined": return !v.isDefined
    case "none": if case .none = v { return true } else { return false }
    case "boolean": if case .bool = v { return true } else { return false }
    case "true": if case .bool(true) = v { return true } else { return false }
    case "false": if case .bool(false) = v { return true } else { return false }
    case "string": if case .string = v { return true } else { return false }
    case "number":
      switch v {
      case .int, .double: return true
      default: return false
      }
    case "integer": if case .int = v { return true } else { return false }
    case "float": if case .double = v { return true } else { return false }
    case "mapping": if case .object = v { return true } else { return false }
    case "sequence", "iterable":
      switch v {
      case .array, .string, .object: return true
      default: return false
      }
    case "callable": if case .callable = v { return true } else { return false }
    case "odd", "even":
      guard case .int(let i) = v else { throw .runtime(line: line, message: "\(name) test needs an integer") }
      return (i % 2 != 0) == (name == "odd")
    case "divisibleby":
      guard case .int(let i) = v, case .int(let d)? = args.first, d != 0 else { throw .runtime(line: line, message: "divisibleby needs integers") }
      return i % d == 0
    case "eq", "equalto", "==": return JinjaBuiltins.equal(v, args.first ?? .undefined(""))
    case "ne", "!=": return !JinjaBuiltins.equal(v, args.first ?? .undefined(""))
    case "sameas":
      switch (v, args.first) {
      case (.none, .none?): return true
      case (.bool(let a), .bool(let b)?): return a == b
      default: return false
      }
    case "lt", "<": return try JinjaBuiltins.compare(v, args.first ?? .none, line) < 0
    case "le", "<=": return try JinjaBuiltins.compare(v, args.first ?? .none, line) <= 0
    case "gt", ">": return try JinjaBuiltins.compare(v, args.first ?? .none, line) > 0
    case "ge", ">=": return try JinjaBuiltins.compare(v, args.first ?? .none, line) >= 0
    case "in": return try JinjaBuiltins.contains(args.first ?? .none, v, line)
    case "lower": if case .string(let s) = v { return s == s.lowercased() } else { return false }
    case "upper": if case .string(let s) = v { return s == s.uppercased() } else { return false }
    default: throw .unsupported(line: line, feature: "test '\(name)'")
    }
  }
}
