import Foundation

/// Python semantics the templates lean on: equality, ordering, `in`, str methods, Jinja filters and
/// transformers' `tojson` (Python's `json.dumps(ensure_ascii=False)`).
enum JinjaBuiltins {
  static func equal(_ a: JinjaValue, _ b: JinjaValue) -> Bool {
    switch (a, b) {
    case (.undefined, .undefined), (.none, .none): return true
    case (.string(let x), .string(let y)): return x == y
    case (.array(let x), .array(let y)): return x.count == y.count && zip(x, y).allSatisfy { equal($0, $1) }
    case (.object(let x), .object(let y)):
      return Set(x.keys) == Set(y.keys) && x.keys.allSatisfy { equal(x[$0]!, y[$0]!) }
    case (.namespace(let x), .namespace(let y)): return x === y
    case (.callable(let x), .callable(let y)): return x === y
    default:
      if let x = number(a), let y = number(b) { return x == y }
      return false
    }
  }

  /// A number for numeric comparison; bools count as 0/1 like Python.
  static func number(_ v: JinjaValue) -> Double? {
    switch v {
    case .int(let i): return Double(i)
    case .double(let d): return d
    case .bool(let b): return b ? 1 : 0
    default: return nil
    }
  }

  static func compare(_ a: JinjaValue, _ b: JinjaValue, _ line: Int) throws(ChatTemplateError) -> Int {
    if let x = number(a), let y = number(b) { return x < y ? -1 : (x > y ? 1 : 0) }
    if case .string(let x) = a, case .string(let y) = b {
      // Python compares code points.
      let xs = Array(x.unicodeScalars.map(\.value))
      let ys = Array(y.unicodeScalars.map(\.value))
      return xs.lexicographicallyPrecedes(ys) ? -1 : (xs == ys ? 0 : 1)
    }
    throw .runtime(line: line, message: "cannot compare \(a.typeName) with \(b.typeName)")
  }

  static func contains(_ container: JinjaValue, _ item: JinjaValue, _ line: Int) throws(ChatTemplateError) -> Bool {
    switch container {
    case .string(let s):
      guard case .string(let sub) = item else { throw .runtime(line: line, message: "'in <string>' requires a string") }
      return sub.isEmpty || s.contains(sub)
    case .array(let a): return a.contains { equal($0, item) }
    case .object(let d):
      guard case .string(let k) = item else { return false }
      return d[k] != nil
    case .namespace(let ns):
      guard case .string(let k) = item else { return false }
      return ns.attributes[k] != nil
    case .undefined: return false
    default: throw .runtime(line: line, message: "argument of type \(container.typeName) is not iterable")
    }
  }

  // MARK: Python str helpers

  /// Python's `str.isspace` per character.
  static func isPythonSpace(_ u: Unicode.Scalar) -> Bool {
    u.properties.isWhitespace || (0x1C...0x1F).contains(u.value)
  }

  static func strip(_ s: String, _ chars: String?, leading: Bool, trailing: Bool) -> String {
    let set = chars.map { Set($0.unicodeScalars) }
    func drop(_ u: Unicode.Scalar) -> Bool { set.map { $0.contains(u) } ?? isPythonSpace(u) }
    var scalars = Substring(s).unicodeScalars[...]
    if leading { while let f = scalars.first, drop(f) { scalars.removeFirst() } }
    if trailing { while let l = scalars.last, drop(l) { scalars.removeLast() } }
    return String(String.UnicodeScalarView(scalars))
  }

  static func capitalize(_ s: String) -> String {
    guard let first = s.unicodeScalars.first else { return s }
    return String(first).uppercased() + String(String.UnicodeScalarView(s.unicodeScalars.dropFirst())).lowercased()
  }

  /// Python's `str.title`: upper-cases the first letter of every run of letters.
  static func title(_ s: String) -> String {
    var out = ""
    var previousCased = false
    for u in s.unicodeScalars {
      let letter = u.properties.isAlphabetic
      out += letter ? (previousCased ? String(u).lowercased() : String(u).uppercased()) : String(u)
      previousCased = letter
    }
    return out
  }

  static func split(_ s: String, _ separator: String?, maxSplit: Int) -> [String] {
    var parts: [String] = []
    if let sep = separator, !sep.isEmpty {
      var rest = Substring(s)
      while maxSplit < 0 || parts.count < maxSplit, let r = rest.range(of: sep, options: .literal) {
        parts.append(String(rest[..<r.lowerBound]))
        rest = rest[r.upperBound...]
      }
      parts.append(String(rest))
      return parts
    }
    // Whitespace split drops empty strings.
    var current = String.UnicodeScalarView()
    var scalars = Substring(s).unicodeScalars[...]
    while let u = scalars.first {
      if isPythonSpace(u) {
        if !current.isEmpty {
          parts.append(String(current))
          current = String.UnicodeScalarView()
          if maxSplit >= 0 && parts.count == maxSplit {
            while let f = scalars.first, isPythonSpace(f) { scalars.removeFirst() }
            if !scalars.isEmpty { parts.append(String(String.UnicodeScalarView(scalars))) }
            return parts
          }
        }
      } else {
        current.append(u)
      }
      scalars.removeFirst()
    }
    if !current.isEmpty { parts.append(String(current)) }
    return parts
  }

  /// Bound methods of strings and dicts (`x.strip()`, `d.items()`), or nil.
  static func method(of v: JinjaValue, _ name: String) -> JinjaValue? {
    func string(_ v: JinjaValue?) -> String? {
      if case .string(let s)? = v { return s }
      return nil
    }
    switch v {
    case .string(let s):
      let fn: (([JinjaValue], [(String, JinjaValue)]) throws(ChatTemplateError) -> JinjaValue)?
      switch name {
      case "strip": fn = { a, _ in .string(strip(s, string(a.first), leading: true, trailing: true)) }
      case "lstrip": fn = { a, _ in .string(strip(s, string(a.first), leading: true, trailing: false)) }
      case "rstrip": fn = { a, _ in .string(strip(s, string(a.first), leading: false, trailing: true)) }
      case "upper": fn = { _, _ in .string(s.uppercased()) }
      case "lower": fn = { _, _ in .string(s.lowercased()) }
      case "title": fn = { _, _ in .string(title(s)) }
      case "capitalize": fn = { _, _ in .string(capitalize(s)) }
      case "startswith", "endswith":
        fn = { a, _ throws(ChatTemplateError) in
          var candidates: [String] = []
          switch a.first {
          case .string(let p)?: candidates = [p]
          case .array(let items)?: candidates = items.compactMap { string($0) }
          default: throw .runtime(line: 0, message: "\(name) needs a string")
          }
          let u = Array(s.unicodeScalars)
          return .bool(candidates.contains { p in
            let pu = Array(p.unicodeScalars)
            return name == "startswith" ? u.starts(with: pu) : u.reversed().starts(with: pu.reversed())
          })
        }
      case "split":
        fn = { a, kw in
          let sep = string(a.first) ?? string(kw.first { $0.0 == "sep" }?.1)
          var maxSplit = -1
          if a.count > 1, case .int(let m) = a[1] { maxSplit = m }
          return .array(split(s, sep, maxSplit: maxSplit).map { .string($0) })
        }
      case "replace":
        fn = { a, _ throws(ChatTemplateError) in
          guard let old = string(a.first), let new = string(a.count > 1 ? a[1] : nil) else {
            throw .runtime(line: 0, message: "replace needs two strings")
          }
          try checkReplace(s, old, new)
          return .string(s.replacingOccurrences(of: old, with: new, options: .literal))
        }
      case "find":
        fn = { a, _ in
          guard let sub = string(a.first), let r = s.range(of: sub, options: .literal) else { return .int(-1) }
          return .int(s.unicodeScalars.distance(from: s.startIndex, to: r.lowerBound))
        }
      case "count":
        fn = { a, _ in
          guard let sub = string(a.first), !sub.isEmpty else { return .int(0) }
          return .int(s.components(separatedBy: sub).count - 1)
        }
      case "join":
        fn = { a, _ throws(ChatTemplateError) in
          guard case .array(let xs)? = a.first else { return .string("") }
          try checkJoin(xs, separator: s)
          return .string(xs.map(\.pythonString).joined(separator: s))
        }
      default: fn = nil
      }
      return fn.map { .callable(JinjaCallable(name, $0)) }
    case .object(let d):
      switch name {
      case "items": return .callable(JinjaCallable(name) { _, _ in .array(d.keys.map { .array([.string($0), d[$0]!]) }) })
      case "keys": return .callable(JinjaCallable(name) { _, _ in .array(d.keys.map { .string($0) }) })
      case "values": return .callable(JinjaCallable(name) { _, _ in .array(d.keys.map { d[$0]! }) })
      case "get":
        return .callable(
          JinjaCallable(name) { a, _ in
            guard case .string(let k)? = a.first else { return .none }
            return d[k] ?? (a.count > 1 ? a[1] : .none)
          })
      default: return nil
      }
    default:
      return nil
    }
  }

  /// Python's `datetime.now().strftime(format)` for the common directives, in the local time zone.
  static func strftime(_ format: String, _ date: Date) -> String {
    var calendar = Calendar(identifier: .gregorian)
    calendar.timeZone = TimeZone.current
    let c = calendar.dateComponents([.year, .month, .day, .hour, .minute, .second, .weekday], from: date)
    let months = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October", "November", "December"]
    let days = ["Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"]
    func two(_ v: Int?) -> String { String(format: "%02d", v ?? 0) }
    var out = ""
    var chars = format.makeIterator()
    while let ch = chars.next() {
      guard ch == "%", let d = chars.next() else {
        out.append(ch)
        continue
      }
      switch d {
      case "d": out += two(c.day)
      case "m": out += two(c.month)
      case "Y": out += String(c.year ?? 0)
      case "y": out += two((c.year ?? 0) % 100)
      case "H": out += two(c.hour)
      case "I": out += two(((c.hour ?? 0) + 11) % 12 + 1)
      case "p": out += (c.hour ?? 0) < 12 ? "AM" : "PM"
      case "M": out += two(c.minute)
      case "S": out += two(c.second)
      case "B": out += months[((c.month ?? 1) - 1) % 12]
      case "b": out += String(months[((c.month ?? 1) - 1) % 12].prefix(3))
      case "A": out += days[((c.weekday ?? 1) - 1) % 7]
      case "a": out += String(days[((c.weekday ?? 1) - 1) % 7].prefix(3))
      case "%": out += "%"
      default: out += "%" + String(d)
      }
    }
    return out
  }

  // MARK: Limits

  /// Longest list the (pairwise comparing) `unique` filter accepts.
  static let maxUniqueItems = 5_000

  /// `int(d)` as Python's `int` filter: truncated; NaN gives 0 (Jinja's fallback), out of range fails.
  static func integer(_ d: Double, _ line: Int) throws(ChatTemplateError) -> Int {
    if d.isNaN { return 0 }
    guard let i = Int(exactly: d.rounded(.towardZero)) else {
      throw .runtime(line: line, message: "int() of \(d) is out of range")
    }
    return i
  }

  /// Fails when `s.replace(old, new)` could grow past `JinjaInterpreter.maxRepeat` bytes.
  static func checkReplace(_ s: String, _ old: String, _ new: String) throws(ChatTemplateError) {
    let n = s.utf8.count
    let growth = new.utf8.count - old.utf8.count
    guard growth > 0 else { return }
    // At most n / len(old) occurrences (n + 1 for an empty `old`).
    let occurrences = old.isEmpty ? n + 1 : n / old.utf8.count
    let (extra, o) = occurrences.multipliedReportingOverflow(by: growth)
    guard !o, n + extra <= JinjaInterpreter.maxRepeat else {
      throw .runtime(line: 0, message: "replace result too large")
    }
  }

  /// Fails when joining `items` with `separator` would exceed `JinjaInterpreter.maxRepeat` bytes.
  static func checkJoin(_ items: [JinjaValue], separator: String) throws(ChatTemplateError) {
    let (separators, o) = max(items.count - 1, 0).multipliedReportingOverflow(by: separator.utf8.count)
    guard !o, separators <= JinjaInterpreter.maxRepeat,
      !JinjaInterpreter.exceedsSize(.array(items), JinjaInterpreter.maxRepeat - separators)
    else { throw .runtime(line: 0, message: "join result too large") }
  }

  // MARK: Filters

  static func filter(
    _ name: String, _ v: JinjaValue, _ arg: (Int, String) -> JinjaValue?, _ line: Int,
    iterate: (JinjaValue) throws(ChatTemplateError) -> [JinjaValue]
  ) throws(ChatTemplateError) -> JinjaValue {
    switch name {
    case "trim":
      var chars: String?
      if case .string(let c)? = arg(0, "chars") { chars = c }
      return .string(strip(v.pythonString, chars, leading: true, trailing: true))
    case "length", "count":
      switch v {
      case .string(let s): return .int(s.unicodeScalars.count)
      case .array(let a): return .int(a.count)
      case .object(let d): return .int(d.keys.count)
      case .undefined: return .int(0)
      default: throw .runtime(line: line, message: "object of type \(v.typeName) has no len()")
      }
    case "upper": return .string(v.pythonString.uppercased())
    case "lower": return .string(v.pythonString.lowercased())
    case "capitalize": return .string(capitalize(v.pythonString))
    case "title": return .string(title(v.pythonString))
    case "string": return .string(v.pythonString)
    case "safe": return v
    case "default", "d":
      let fallback = arg(0, "default_value") ?? .string("")
      let boolean = arg(1, "boolean")?.truthy ?? false
      if !v.isDefined || (boolean && !v.truthy) { return fallback }
      return v
    case "first":
      let items = try iterate(v)
      return items.first ?? .undefined("first")
    case "last":
      let items = try iterate(v)
      return items.last ?? .undefined("last")
    case "list": return .array(try iterate(v))
    case "reverse":
      if case .string(let s) = v { return .string(String(s.reversed())) }
      return .array(try iterate(v).reversed())
    case "join":
      var separator = ""
      if case .string(let s)? = arg(0, "d") { separator = s }
      var items = try iterate(v)
      if case .string(let attr)? = arg(1, "attribute") {
        items = items.map { item in
          if case .object(let d) = item { return d[attr] ?? .undefined(attr) }
          return .undefined(attr)
        }
      }
      try checkJoin(items, separator: separator)
      return .string(items.map(\.pythonString).joined(separator: separator))
    case "int":
      switch v {
      case .int: return v
      case .double(let d): return .int(try integer(d, line))
      case .bool(let b): return .int(b ? 1 : 0)
      case .string(let s):
        if let i = Int(s.trimmingCharacters(in: .whitespaces)) { return .int(i) }
        return .int(try Double(s).map { d throws(ChatTemplateError) in try integer(d, line) } ?? 0)
      default: return .int(0)
      }
    case "float":
      switch v {
      case .int(let i): return .double(Double(i))
      case .double: return v
      case .string(let s): return .double(Double(s.trimmingCharacters(in: .whitespaces)) ?? 0)
      default: return .double(0)
      }
    case "abs":
      switch v {
      case .int(let i):
        guard i != .min else { throw .runtime(line: line, message: "integer overflow in abs") }
        return .int(abs(i))
      case .double(let d): return .double(abs(d))
      default: throw .runtime(line: line, message: "abs needs a number")
      }
    case "round":
      guard let d = number(v) else { throw .runtime(line: line, message: "round needs a number") }
      var precision = 0
      if case .int(let p)? = arg(0, "precision") { precision = p }
      let m = pow(10.0, Double(precision))
      return .double((d * m).rounded(.toNearestOrEven) / m)
    case "replace":
      guard case .string(let old)? = arg(0, "old"), case .string(let new)? = arg(1, "new") else {
        throw .runtime(line: line, message: "replace needs two strings")
      }
      try checkReplace(v.pythonString, old, new)
      return .string(v.pythonString.replacingOccurrences(of: old, with: new, options: .literal))
    case "items":
      guard case .object(let d) = v else {
        if !v.isDefined { return .array([]) }
        throw .runtime(line: line, message: "items needs a mapping")
      }
      return .array(d.keys.map { .array([.string($0), d[$0]!]) })
    case "dictsort":
      guard case .object(let d) = v else { throw .runtime(line: line, message: "dictsort needs a mapping") }
      let keys = d.keys.sorted { $0.lowercased() < $1.lowercased() }
      return .array(keys.map { .array([.string($0), d[$0]!]) })
    case "unique":
      var out: [JinjaValue] = []
      let items = try iterate(v)
      // Pairwise comparison: bounded so a long list cannot stall the render.
      guard items.count <= maxUniqueItems else { throw .runtime(line: line, message: "unique over more than \(maxUniqueItems) items") }
      for item in items where !out.contains(where: { equal($0, item) }) { out.append(item) }
      return .array(out)
    case "tojson":
      var indent: Int?
      if case .int(let i)? = arg(0, "indent") { indent = i }
      var out = ""
      try json(v, indent: indent, level: 0, into: &out, line)
      return .string(out)
    default:
      throw .unsupported(line: line, feature: "filter '\(name)'")
    }
  }

  /// Python's `json.dumps(v, ensure_ascii=False, indent=indent)`.
  static func json(_ v: JinjaValue, indent: Int?, level: Int, into out: inout String, _ line: Int) throws(ChatTemplateError) {
    func newline(_ depth: Int) {
      guard let indent else { return }
      out += "\n" + String(repeating: " ", count: indent * depth)
    }
    let itemSeparator = indent == nil ? ", " : ","
    switch v {
    case .none, .undefined: out += "null"
    case .bool(let b): out += b ? "true" : "false"
    case .int(let i): out += String(i)
    case .double(let d):
      if d.isNaN { out += "NaN" } else if d.isInfinite { out += d > 0 ? "Infinity" : "-Infinity" } else { out += JinjaValue.pythonFloat(d) }
    case .string(let s): out += jsonString(s)
    case .array(let a):
      if a.isEmpty {
        out += "[]"
        return
      }
      out += "["
      for (i, x) in a.enumerated() {
        if i > 0 { out += itemSeparator }
        newline(level + 1)
        try json(x, indent: indent, level: level + 1, into: &out, line)
      }
      newline(level)
      out += "]"
    case .object(let d):
      if d.keys.isEmpty {
        out += "{}"
        return
      }
      out += "{"
      for (i, k) in d.keys.enumerated() {
        if i > 0 { out += itemSeparator }
        newline(level + 1)
        out += jsonString(k) + ": "
        try json(d[k]!, indent: indent, level: level + 1, into: &out, line)
      }
      newline(level)
      out += "}"
    case .namespace, .callable:
      throw .runtime(line: line, message: "Object of type \(v.typeName) is not JSON serializable")
    }
  }

  static func jsonString(_ s: String) -> String {
    var out = "\""
    for u in s.unicodeScalars {
      switch u {
      case "\"": out += "\\\""
      case "\\": out += "\\\\"
      case "\n": out += "\\n"
      case "\r": out += "\\r"
      case "\t": out += "\\t"
      case "\u{08}": out += "\\b"
      case "\u{0C}": out += "\\f"
      default:
        if u.value < 0x20 {
          out += String(format: "\\u%04x", u.value)
        } else {
          out.unicodeScalars.append(u)
        }
      }
    }
    return out + "\""
  }
}
