import Foundation

/// A JSON value, for the HTTP gateway and alignctl's JSONL readers (the one JSON value both
/// sides use): decoded strictly (a number is
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
  public static func number(_ value: Double) -> JSONValue { value.isFinite ? .double(value) : .null }

  /// A Float written with its shortest decimal form (0.1, not 0.10000000149011612).
  public static func number(_ value: Float) -> JSONValue {
    value.isFinite ? .double(Double("\(value)") ?? Double(value)) : .null
  }

  public static func optional(_ value: String?) -> JSONValue { value.map(JSONValue.string) ?? .null }

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
  public var serialized: [UInt8] {
    var out: [UInt8] = []
    out.reserveCapacity(256)
    write(into: &out)
    return out
  }

  public var text: String { String(decoding: serialized, as: UTF8.self) }

  public func write(into out: inout [UInt8]) {
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
