import AlignShared
import Foundation

/// A request body's top-level JSON object, with typed accessors that answer a 400 naming the
/// offending parameter (OpenAI's `param`) when a field has the wrong type or range.
public struct JSONObject: Sendable {
  public let fields: [String: JSONValue]

  public init(_ fields: [String: JSONValue]) { self.fields = fields }

  /// An object value's fields; nil for any other value.
  public init?(_ value: JSONValue) {
    guard let fields = value.objectFields else { return nil }
    self.init(fields)
  }

  /// Parses a request body; anything but a JSON object is a 400.
  public init(body: [UInt8]) throws(GatewayError) {
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
  public subscript(key: String) -> JSONValue? {
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
