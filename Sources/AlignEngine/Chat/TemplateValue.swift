import Foundation

/// JSON-like data passed to a chat template (messages, tools, extra variables).
public enum TemplateValue: Sendable, Equatable, ExpressibleByStringLiteral, ExpressibleByBooleanLiteral,
  ExpressibleByIntegerLiteral, ExpressibleByArrayLiteral, ExpressibleByDictionaryLiteral, ExpressibleByNilLiteral
{
  /// JSON null (Python `None`).
  case null
  /// A boolean.
  case bool(Bool)
  /// An integer.
  case int(Int)
  /// A floating-point number.
  case double(Double)
  /// A string.
  case string(String)
  /// A list.
  case array([TemplateValue])
  /// An object. Keys keep their order, as Python dicts do (it shows in `tojson` and iteration).
  case object([(String, TemplateValue)])

  public init(stringLiteral value: String) { self = .string(value) }
  public init(booleanLiteral value: Bool) { self = .bool(value) }
  public init(integerLiteral value: Int) { self = .int(value) }
  public init(arrayLiteral elements: TemplateValue...) { self = .array(elements) }
  public init(dictionaryLiteral elements: (String, TemplateValue)...) { self = .object(elements) }
  public init(nilLiteral: ()) { self = .null }

  /// The value of `key` when this is an object that has it.
  public subscript(key: String) -> TemplateValue? {
    guard case .object(let pairs) = self else { return nil }
    return pairs.first { $0.0 == key }?.1
  }

  /// The elements when this is an array.
  public var arrayValue: [TemplateValue]? {
    if case .array(let a) = self { return a }
    return nil
  }

  /// The string when this is a string.
  public var stringValue: String? {
    if case .string(let s) = self { return s }
    return nil
  }

  public static func == (a: TemplateValue, b: TemplateValue) -> Bool {
    switch (a, b) {
    case (.null, .null): return true
    case (.bool(let x), .bool(let y)): return x == y
    case (.int(let x), .int(let y)): return x == y
    case (.double(let x), .double(let y)): return x == y
    case (.string(let x), .string(let y)): return x == y
    case (.array(let x), .array(let y)): return x == y
    case (.object(let x), .object(let y)): return x.count == y.count && zip(x, y).allSatisfy { $0.0 == $1.0 && $0.1 == $1.1 }
    default: return false
    }
  }
}

/// A runtime value of the Jinja interpreter.
enum JinjaValue {
  case undefined(String)
  case none
  case bool(Bool)
  case int(Int)
  case double(Double)
  case string(String)
  case array([JinjaValue])
  case object(JinjaDict)
  case namespace(JinjaNamespace)
  case callable(JinjaCallable)

  init(_ v: TemplateValue) {
    switch v {
    case .null: self = .none
    case .bool(let b): self = .bool(b)
    case .int(let i): self = .int(i)
    case .double(let d): self = .double(d)
    case .string(let s): self = .string(s)
    case .array(let a): self = .array(a.map(JinjaValue.init))
    case .object(let pairs):
      var d = JinjaDict()
      for (k, v) in pairs { d[k] = JinjaValue(v) }
      self = .object(d)
    }
  }

  init(_ l: JinjaLiteral) {
    switch l {
    case .none: self = .none
    case .bool(let b): self = .bool(b)
    case .int(let i): self = .int(i)
    case .double(let d): self = .double(d)
    case .string(let s): self = .string(s)
    }
  }

  var isDefined: Bool {
    if case .undefined = self { return false }
    return true
  }

  /// Python truthiness.
  var truthy: Bool {
    switch self {
    case .undefined, .none: return false
    case .bool(let b): return b
    case .int(let i): return i != 0
    case .double(let d): return d != 0
    case .string(let s): return !s.isEmpty
    case .array(let a): return !a.isEmpty
    case .object(let d): return !d.keys.isEmpty
    case .namespace, .callable: return true
    }
  }

  var typeName: String {
    switch self {
    case .undefined: return "Undefined"
    case .none: return "NoneType"
    case .bool: return "bool"
    case .int: return "int"
    case .double: return "float"
    case .string: return "str"
    case .array: return "list"
    case .object: return "dict"
    case .namespace: return "Namespace"
    case .callable: return "function"
    }
  }

  /// `str(x)` as Python prints it (what `{{ x }}` outputs).
  var pythonString: String {
    switch self {
    case .undefined: return ""
    case .string(let s): return s
    default: return pythonRepr
    }
  }

  /// `repr(x)` as Python prints it.
  var pythonRepr: String {
    switch self {
    case .undefined: return ""
    case .none: return "None"
    case .bool(let b): return b ? "True" : "False"
    case .int(let i): return String(i)
    case .double(let d): return Self.pythonFloat(d)
    case .string(let s): return Self.pythonQuote(s)
    case .array(let a): return "[" + a.map(\.pythonRepr).joined(separator: ", ") + "]"
    case .object(let d): return "{" + d.keys.map { Self.pythonQuote($0) + ": " + d[$0]!.pythonRepr }.joined(separator: ", ") + "}"
    case .namespace: return "<Namespace>"
    case .callable(let c): return "<function \(c.name)>"
    }
  }

  static func pythonFloat(_ d: Double) -> String {
    if d.isNaN { return "nan" }
    if d.isInfinite { return d > 0 ? "inf" : "-inf" }
    if d == d.rounded() && abs(d) < 1e16 { return String(format: "%.1f", d) }
    return "\(d)"
  }

  static func pythonQuote(_ s: String) -> String {
    let quote: Character = s.contains("'") && !s.contains("\"") ? "\"" : "'"
    var out = String(quote)
    for u in s.unicodeScalars {
      switch u {
      case "\\": out += "\\\\"
      case "\n": out += "\\n"
      case "\r": out += "\\r"
      case "\t": out += "\\t"
      default:
        if Character(u) == quote {
          out += "\\" + String(quote)
        } else if u.value < 0x20 || u.value == 0x7F {
          out += String(format: "\\x%02x", u.value)
        } else {
          out.unicodeScalars.append(u)
        }
      }
    }
    out.append(quote)
    return out
  }
}

/// An insertion-ordered string-keyed dictionary (Python dict).
struct JinjaDict {
  private(set) var keys: [String] = []
  private var storage: [String: JinjaValue] = [:]

  subscript(key: String) -> JinjaValue? {
    get { storage[key] }
    set {
      if storage[key] == nil, newValue != nil { keys.append(key) }
      if newValue == nil { keys.removeAll { $0 == key } }
      storage[key] = newValue
    }
  }
}

/// `namespace(...)`: the one mutable object templates have (`{% set ns.x = ... %}`).
final class JinjaNamespace {
  var attributes = JinjaDict()
}

/// A built-in function, bound method or macro.
final class JinjaCallable {
  let name: String
  let call: ([JinjaValue], [(String, JinjaValue)]) throws(ChatTemplateError) -> JinjaValue

  init(_ name: String, _ call: @escaping ([JinjaValue], [(String, JinjaValue)]) throws(ChatTemplateError) -> JinjaValue) {
    self.name = name
    self.call = call
  }
}

/// A JSON document that could not be read as a `TemplateValue`.
public struct TemplateValueJSONError: Error, Equatable, Sendable, CustomStringConvertible {
  /// What is wrong, with the byte offset.
  public var message: String
  public var description: String { "invalid JSON: \(message)" }
}

extension TemplateValue {
  /// Parses JSON keeping the order of object keys (it shows in `tojson`, e.g. of tool schemas).
  /// - Throws: `TemplateValueJSONError`.
  public init(json: String) throws(TemplateValueJSONError) {
    var parser = OrderedJSONParser(Array(json.utf8))
    self = try parser.parseDocument()
  }
}

/// A small recursive-descent JSON parser (RFC 8259) that keeps object key order.
private struct OrderedJSONParser {
  private let b: [UInt8]
  private var i = 0
  private var depth = 0

  init(_ bytes: [UInt8]) { b = bytes }

  private func fail(_ m: String) -> TemplateValueJSONError { TemplateValueJSONError(message: "\(m) at byte \(i)") }

  mutating func parseDocument() throws(TemplateValueJSONError) -> TemplateValue {
    let v = try value()
    skip()
    guard i == b.count else { throw fail("trailing characters") }
    return v
  }

  private mutating func skip() {
    while i < b.count, b[i] == 0x20 || b[i] == 0x0A || b[i] == 0x0D || b[i] == 0x09 { i += 1 }
  }

  private mutating func literal(_ word: String, _ v: TemplateValue) throws(TemplateValueJSONError) -> TemplateValue {
    let w = Array(word.utf8)
    guard i + w.count <= b.count, Array(b[i..<(i + w.count)]) == w else { throw fail("unexpected token") }
    i += w.count
    return v
  }

  private mutating func value() throws(TemplateValueJSONError) -> TemplateValue {
    skip()
    guard i < b.count else { throw fail("unexpected end") }
    switch b[i] {
    case UInt8(ascii: "{"):
      depth += 1
      defer { depth -= 1 }
      guard depth < 512 else { throw fail("nesting too deep") }
      i += 1
      var pairs: [(String, TemplateValue)] = []
      skip()
      if i < b.count, b[i] == UInt8(ascii: "}") {
        i += 1
        return .object(pairs)
      }
      while true {
        skip()
        guard i < b.count, b[i] == UInt8(ascii: "\"") else { throw fail("expected a key") }
        let key = try string()
        skip()
        guard i < b.count, b[i] == UInt8(ascii: ":") else { throw fail("expected :") }
        i += 1
        pairs.append((key, try value()))
        skip()
        guard i < b.count else { throw fail("unexpected end") }
        if b[i] == UInt8(ascii: ",") {
          i += 1
          continue
        }
        guard b[i] == UInt8(ascii: "}") else { throw fail("expected , or }") }
        i += 1
        return .object(pairs)
      }
    case UInt8(ascii: "["):
      depth += 1
      defer { depth -= 1 }
      guard depth < 512 else { throw fail("nesting too deep") }
      i += 1
      var items: [TemplateValue] = []
      skip()
      if i < b.count, b[i] == UInt8(ascii: "]") {
        i += 1
        return .array(items)
      }
      while true {
        items.append(try value())
        skip()
        guard i < b.count else { throw fail("unexpected end") }
        if b[i] == UInt8(ascii: ",") {
          i += 1
          continue
        }
        guard b[i] == UInt8(ascii: "]") else { throw fail("expected , or ]") }
        i += 1
        return .array(items)
      }
    case UInt8(ascii: "\""): return .string(try string())
    case UInt8(ascii: "t"): return try literal("true", .bool(true))
    case UInt8(ascii: "f"): return try literal("false", .bool(false))
    case UInt8(ascii: "n"): return try literal("null", .null)
    default: return try number()
    }
  }

  private mutating func number() throws(TemplateValueJSONError) -> TemplateValue {
    let start = i
    var isInteger = true
    if i < b.count, b[i] == UInt8(ascii: "-") { i += 1 }
    while i < b.count {
      let c = b[i]
      if c >= 0x30 && c <= 0x39 {
        i += 1
      } else if c == UInt8(ascii: ".") || c == UInt8(ascii: "e") || c == UInt8(ascii: "E") || c == UInt8(ascii: "+") || c == UInt8(ascii: "-") {
        isInteger = false
        i += 1
      } else {
        break
      }
    }
    let text = String(decoding: b[start..<i], as: UTF8.self)
    if isInteger, let n = Int(text) { return .int(n) }
    guard !text.isEmpty, let d = Double(text) else { throw fail("bad number") }
    return .double(d)
  }

  private mutating func hex4() throws(TemplateValueJSONError) -> UInt32 {
    guard i + 4 <= b.count, let v = UInt32(String(decoding: b[i..<(i + 4)], as: UTF8.self), radix: 16) else { throw fail("bad \\u escape") }
    i += 4
    return v
  }

  private mutating func string() throws(TemplateValueJSONError) -> String {
    i += 1  // opening quote
    var out: [UInt8] = []
    while true {
      guard i < b.count else { throw fail("unterminated string") }
      let c = b[i]
      i += 1
      if c == UInt8(ascii: "\"") { break }
      guard c == UInt8(ascii: "\\") else {
        out.append(c)
        continue
      }
      guard i < b.count else { throw fail("unterminated escape") }
      let e = b[i]
      i += 1
      switch e {
      case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"): out.append(e)
      case UInt8(ascii: "n"): out.append(0x0A)
      case UInt8(ascii: "t"): out.append(0x09)
      case UInt8(ascii: "r"): out.append(0x0D)
      case UInt8(ascii: "b"): out.append(0x08)
      case UInt8(ascii: "f"): out.append(0x0C)
      case UInt8(ascii: "u"):
        var v = try hex4()
        if (0xD800..<0xDC00).contains(v), i + 1 < b.count, b[i] == UInt8(ascii: "\\"), b[i + 1] == UInt8(ascii: "u") {
          i += 2
          let low = try hex4()
          guard (0xDC00..<0xE000).contains(low) else { throw fail("bad surrogate pair") }
          v = 0x10000 + ((v - 0xD800) << 10) + (low - 0xDC00)
        }
        out.append(contentsOf: String(Unicode.Scalar(v).map(Character.init) ?? "\u{FFFD}").utf8)
      default: throw fail("bad escape")
      }
    }
    return String(decoding: out, as: UTF8.self)
  }
}
