import Foundation

/// A JSON value, for the HTTP gateway and alignctl's JSONL readers: decoded strictly (a number is
/// never taken for a boolean; integers stay integers) and written with object keys in the order
/// given, so responses read like OpenAI's and `null` fields are written out rather than dropped.
public enum JSONValue: Sendable {
  case null
  case bool(Bool)
  case int(Int64)
  case double(Double)
  case string(String)
  case array([JSONValue])
  case object([(String, JSONValue)])

  /// A number, or null when it is not finite (JSON has no NaN or infinity).
  static func number(_ value: Double) -> JSONValue { value.isFinite ? .double(value) : .null }

  /// A Float written with its shortest decimal form (0.1, not 0.10000000149011612).
  static func number(_ value: Float) -> JSONValue {
    value.isFinite ? .double(Double("\(value)") ?? Double(value)) : .null
  }

  static func optional(_ value: String?) -> JSONValue { value.map(JSONValue.string) ?? .null }

  /// A short name of the value's type, for error messages ("expected a string, got a list").
  public var typeName: String {
    switch self {
    case .null: "null"
    case .bool: "a boolean"
    case .int, .double: "a number"
    case .string: "a string"
    case .array: "a list"
    case .object: "an object"
    }
  }

  /// An object's fields by key (the last of repeated keys wins); nil for any other value.
  public var objectFields: [String: JSONValue]? {
    guard case .object(let pairs) = self else { return nil }
    return Dictionary(pairs, uniquingKeysWith: { _, last in last })
  }

  /// The serialized bytes (UTF-8, no insignificant whitespace, `/` not escaped).
  var serialized: [UInt8] {
    var out: [UInt8] = []
    out.reserveCapacity(256)
    write(into: &out)
    return out
  }

  var text: String { String(decoding: serialized, as: UTF8.self) }

  func write(into out: inout [UInt8]) {
    switch self {
    case .null: out += Array("null".utf8)
    case .bool(let value): out += Array((value ? "true" : "false").utf8)
    case .int(let value): out += Array(String(value).utf8)
    case .double(let value):
      if !value.isFinite {
        out += Array("null".utf8)
      } else if value == value.rounded(), abs(value) < 1e15 {
        // Integral values keep a decimal point so clients read them as floats.
        out += Array(String(format: "%.1f", value).utf8)
      } else {
        out += Array("\(value)".utf8)
      }
    case .string(let value): Self.writeString(value, into: &out)
    case .array(let values):
      out.append(UInt8(ascii: "["))
      for (i, value) in values.enumerated() {
        if i > 0 { out.append(UInt8(ascii: ",")) }
        value.write(into: &out)
      }
      out.append(UInt8(ascii: "]"))
    case .object(let fields):
      out.append(UInt8(ascii: "{"))
      for (i, (key, value)) in fields.enumerated() {
        if i > 0 { out.append(UInt8(ascii: ",")) }
        Self.writeString(key, into: &out)
        out.append(UInt8(ascii: ":"))
        value.write(into: &out)
      }
      out.append(UInt8(ascii: "}"))
    }
  }

  private static func writeString(_ value: String, into out: inout [UInt8]) {
    out.append(UInt8(ascii: "\""))
    for byte in value.utf8 {
      switch byte {
      case UInt8(ascii: "\""): out += [UInt8(ascii: "\\"), UInt8(ascii: "\"")]
      case UInt8(ascii: "\\"): out += [UInt8(ascii: "\\"), UInt8(ascii: "\\")]
      case 0x0A: out += [UInt8(ascii: "\\"), UInt8(ascii: "n")]
      case 0x0D: out += [UInt8(ascii: "\\"), UInt8(ascii: "r")]
      case 0x09: out += [UInt8(ascii: "\\"), UInt8(ascii: "t")]
      case 0..<0x20: out += Array(String(format: "\\u%04x", byte).utf8)
      default: out.append(byte)
      }
    }
    out.append(UInt8(ascii: "\""))
  }
}

extension JSONValue: Decodable {
  private struct Key: CodingKey {
    var stringValue: String
    var intValue: Int? { nil }
    init(stringValue: String) { self.stringValue = stringValue }
    init?(intValue: Int) { nil }
  }

  public init(from decoder: any Decoder) throws {
    if var array = try? decoder.unkeyedContainer() {
      var values: [JSONValue] = []
      while !array.isAtEnd { values.append(try array.decode(JSONValue.self)) }
      self = .array(values)
      return
    }
    if let object = try? decoder.container(keyedBy: Key.self) {
      self = .object(try object.allKeys.map { ($0.stringValue, try object.decode(JSONValue.self, forKey: $0)) })
      return
    }
    let single = try decoder.singleValueContainer()
    if single.decodeNil() {
      self = .null
    } else if let value = try? single.decode(Bool.self) {
      self = .bool(value)
    } else if let value = try? single.decode(Int64.self) {
      self = .int(value)
    } else if let value = try? single.decode(Double.self) {
      self = .double(value)
    } else {
      self = .string(try single.decode(String.self))
    }
  }
}

/// A request body's top-level JSON object, with typed accessors that answer a 400 naming the
/// offending parameter (OpenAI's `param`) when a field has the wrong type or range.
struct JSONObject: Sendable {
  let fields: [String: JSONValue]

  init(_ fields: [String: JSONValue]) { self.fields = fields }

  /// An object value's fields; nil for any other value.
  init?(_ value: JSONValue) {
    guard let fields = value.objectFields else { return nil }
    self.init(fields)
  }

  /// Parses a request body; anything but a JSON object is a 400.
  init(body: [UInt8]) throws(GatewayError) {
    guard !body.isEmpty else { throw .invalid("the request body is empty; send a JSON object") }
    let value: JSONValue
    do {
      value = try JSONDecoder().decode(JSONValue.self, from: Data(body))
    } catch {
      throw .invalid("the request body is not valid JSON")
    }
    guard let object = JSONObject(value) else { throw .invalid("the request body must be a JSON object") }
    self = object
  }

  /// The field, with JSON null read as absent.
  subscript(key: String) -> JSONValue? {
    if case .null = fields[key] { return nil }
    return fields[key]
  }

  func string(_ key: String) throws(GatewayError) -> String? {
    guard let value = self[key] else { return nil }
    guard case .string(let text) = value else { throw .invalid("\(key) must be a string", param: key) }
    return text
  }

  func bool(_ key: String) throws(GatewayError) -> Bool? {
    guard let value = self[key] else { return nil }
    guard case .bool(let flag) = value else { throw .invalid("\(key) must be a boolean", param: key) }
    return flag
  }

  func int(_ key: String) throws(GatewayError) -> Int64? {
    guard let value = self[key] else { return nil }
    switch value {
    case .int(let number): return number
    case .double(let number) where number == number.rounded() && abs(number) < 9e18: return Int64(number)
    default: throw .invalid("\(key) must be an integer", param: key)
    }
  }

  /// An integer that must be in `range`.
  func int(_ key: String, in range: ClosedRange<Int64>) throws(GatewayError) -> Int64? {
    guard let number = try int(key) else { return nil }
    guard range.contains(number) else {
      throw .invalid("\(key) must be between \(range.lowerBound) and \(range.upperBound); got \(number)", param: key)
    }
    return number
  }

  func double(_ key: String) throws(GatewayError) -> Double? {
    guard let value = self[key] else { return nil }
    switch value {
    case .int(let number): return Double(number)
    case .double(let number): return number
    default: throw .invalid("\(key) must be a number", param: key)
    }
  }

  func object(_ key: String) throws(GatewayError) -> JSONObject? {
    guard let value = self[key] else { return nil }
    guard let object = JSONObject(value) else { throw .invalid("\(key) must be an object", param: key) }
    return object
  }

  func array(_ key: String) throws(GatewayError) -> [JSONValue]? {
    guard let value = self[key] else { return nil }
    guard case .array(let values) = value else { throw .invalid("\(key) must be an array", param: key) }
    return values
  }

  /// A string or a list of strings (OpenAI's `stop`, `input`, `prompt`).
  func strings(_ key: String) throws(GatewayError) -> [String]? {
    guard let value = self[key] else { return nil }
    switch value {
    case .string(let text): return [text]
    case .array(let values):
      var texts: [String] = []
      for value in values {
        guard case .string(let text) = value else {
          throw .invalid("\(key) must be a string or a list of strings", param: key)
        }
        texts.append(text)
      }
      return texts
    default: throw .invalid("\(key) must be a string or a list of strings", param: key)
    }
  }

  /// A list of objects (e.g. chat `messages`).
  func objects(_ key: String) throws(GatewayError) -> [JSONObject]? {
    guard let values = try array(key) else { return nil }
    var objects: [JSONObject] = []
    for (i, value) in values.enumerated() {
      guard let object = JSONObject(value) else { throw .invalid("\(key)[\(i)] must be an object", param: key) }
      objects.append(object)
    }
    return objects
  }
}
