import AlignEngine
import AlignShared
import Foundation
import Synchronization

/// What a completion must look like (OpenAI's `response_format`).
public enum ResponseFormat: Sendable {
  /// Free text (no constraint).
  case text
  /// Any JSON object.
  case jsonObject
  /// A JSON value valid against this schema.
  case jsonSchema(JSONValue)
}

/// Reads the JSON schemas that constrained decoding supports into a ``JSONShape``.
///
/// Supported: `type` (one name or a list), `properties`, `required`, `additionalProperties`
/// (false, or true / a schema on an object without `properties`), `items`, `minItems`,
/// `maxItems`, `minLength`, `maxLength`, `enum`, `const`, `anyOf`, `allOf` with one schema, and
/// local `$ref`s into `$defs` / `definitions` (not recursive). Annotations (`title`,
/// `description`, `default`, `examples`, ...) are ignored. Anything else — `pattern`, `format`,
/// `minimum`, `oneOf`, `not`, `prefixItems`, ... — is refused with its name rather than silently
/// ignored, because the output would not be guaranteed to satisfy it.
///
/// An object schema with `properties` and no `additionalProperties` is closed, as OpenAI's strict
/// mode requires: only the listed keys, each at most once, in any order.
public struct JSONSchemaReader {
  static let annotations: Set<String> = [
    "title", "description", "default", "examples", "$schema", "$id", "$comment", "deprecated", "readOnly",
    "writeOnly", "strict",
  ]
  static let supported: Set<String> = [
    "type", "properties", "required", "additionalProperties", "items", "minItems", "maxItems", "minLength",
    "maxLength", "enum", "const", "anyOf", "allOf", "$ref", "$defs", "definitions",
  ]
  /// Nested `$ref` expansions (a schema deeper than this is refused).
  static let refDepthLimit = 32

  let root: JSONValue
  private var expanding: [String] = []

  /// Reads `schema` (the document root, which `$ref`s point into).
  /// - Throws: ``InvalidRequest`` naming the unsupported keyword or the malformed part and its path.
  public static func shape(of schema: JSONValue) throws(InvalidRequest) -> JSONShape {
    var reader = JSONSchemaReader(root: schema)
    return try reader.read(schema, path: "#")
  }

  private func fail(_ path: String, _ message: String) -> InvalidRequest {
    InvalidRequest("response_format: schema \(path): \(message)")
  }

  private mutating func read(_ schema: JSONValue, path: String) throws(InvalidRequest) -> JSONShape {
    if case .bool(true) = schema { return .anyValue }
    guard case .object(let pairs) = schema else { throw fail(path, "a schema must be an object, got \(schema.typeName)") }
    let fields = Dictionary(pairs, uniquingKeysWith: { _, last in last })
    for (key, _) in pairs where !Self.supported.contains(key) && !Self.annotations.contains(key) {
      throw fail(path, "the keyword \"\(key)\" is not supported by constrained decoding")
    }

    if let reference = fields["$ref"] {
      guard fields.keys.allSatisfy({ $0 == "$ref" || Self.annotations.contains($0) || $0 == "$defs" || $0 == "definitions" })
      else { throw fail(path, "$ref next to other constraints is not supported") }
      guard case .string(let target) = reference else { throw fail(path, "$ref must be a string") }
      guard !expanding.contains(target) else { throw fail(path, "recursive $ref \(target) is not supported") }
      guard expanding.count < Self.refDepthLimit else { throw fail(path, "$refs nest too deeply") }
      let resolved = try resolve(target, path: path)
      expanding.append(target)
      defer { expanding.removeLast() }
      return try read(resolved, path: target)
    }
    if let all = fields["allOf"] {
      guard case .array(let schemas) = all, schemas.count == 1, fields.count == 1 + annotationCount(fields) else {
        throw fail(path, "allOf is supported only with a single schema and nothing else beside it")
      }
      return try read(schemas[0], path: path + "/allOf/0")
    }
    if let values = fields["enum"] {
      guard case .array(let options) = values, !options.isEmpty else { throw fail(path, "enum must be a non-empty list") }
      return .literals(options.map(\.text))
    }
    if let value = fields["const"] { return .literals([value.text]) }
    if let any = fields["anyOf"] {
      guard case .array(let schemas) = any, !schemas.isEmpty else { throw fail(path, "anyOf must be a non-empty list") }
      var shapes: [JSONShape] = []
      for (i, schema) in schemas.enumerated() { shapes.append(try read(schema, path: path + "/anyOf/\(i)")) }
      return shapes.count == 1 ? shapes[0] : .anyOf(shapes)
    }

    let types: [String]
    switch fields["type"] {
    case nil:
      // No type: an object when it has properties, else any value.
      types = fields["properties"] != nil ? ["object"] : []
    case .string(let name)?: types = [name]
    case .array(let names)?:
      types = try names.map { name throws(InvalidRequest) in
        guard case .string(let text) = name else { throw fail(path, "type must be a name or a list of names") }
        return text
      }
    default: throw fail(path, "type must be a name or a list of names")
    }
    if types.isEmpty { return .anyValue }
    var shapes: [JSONShape] = []
    for type in types { shapes.append(try read(type: type, fields, path: path)) }
    return shapes.count == 1 ? shapes[0] : .anyOf(shapes)
  }

  private func annotationCount(_ fields: [String: JSONValue]) -> Int {
    fields.keys.filter { Self.annotations.contains($0) || $0 == "$defs" || $0 == "definitions" }.count
  }

  private mutating func read(type: String, _ fields: [String: JSONValue], path: String) throws(InvalidRequest) -> JSONShape {
    switch type {
    case "object":
      var properties: [JSONProperty] = []
      if let value = fields["properties"] {
        guard case .object(let pairs) = value else { throw fail(path, "properties must be an object") }
        for (name, schema) in pairs {
          properties.append(JSONProperty(name, try read(schema, path: path + "/properties/\(name)")))
        }
      }
      var required: Set<String> = []
      if let value = fields["required"] {
        guard case .array(let names) = value else { throw fail(path, "required must be a list of names") }
        for name in names {
          guard case .string(let text) = name else { throw fail(path, "required must be a list of names") }
          guard properties.contains(where: { $0.name == text }) else {
            throw fail(path, "required property \(text) is not among the properties")
          }
          required.insert(text)
        }
      }
      var additional: JSONShape? = nil
      switch fields["additionalProperties"] {
      case nil: additional = properties.isEmpty ? .anyValue : nil
      case .bool(false)?: additional = nil
      case .bool(true)?, .object?:
        guard properties.isEmpty else {
          throw fail(path, "additionalProperties must be false when properties are given")
        }
        additional = try read(fields["additionalProperties"]!, path: path + "/additionalProperties")
      default: throw fail(path, "additionalProperties must be a boolean or a schema")
      }
      return .object(properties: properties, required: required, additional: additional)
    case "array":
      let items = try fields["items"].map { schema throws(InvalidRequest) in try read(schema, path: path + "/items") }
      return .array(
        items: items ?? .anyValue, minItems: try count("minItems", fields, path) ?? 0,
        maxItems: try count("maxItems", fields, path))
    case "string":
      return .string(minLength: try count("minLength", fields, path) ?? 0, maxLength: try count("maxLength", fields, path))
    case "number": return .number(integer: false)
    case "integer": return .number(integer: true)
    case "boolean": return .boolean
    case "null": return .null
    default: throw fail(path, "unknown type \(type)")
    }
  }

  private func count(_ key: String, _ fields: [String: JSONValue], _ path: String) throws(InvalidRequest) -> Int? {
    switch fields[key] {
    case nil: return nil
    case .int(let value)? where value >= 0 && value <= 100_000: return Int(value)
    default: throw fail(path, "\(key) must be an integer in 0...100000")
    }
  }

  /// `#/$defs/Name` or `#/definitions/Name` (JSON pointer escapes ~0 and ~1 included).
  private func resolve(_ target: String, path: String) throws(InvalidRequest) -> JSONValue {
    guard target.hasPrefix("#/") else { throw fail(path, "only local $refs (#/$defs/...) are supported, not \(target)") }
    var value = root
    for part in target.dropFirst(2).split(separator: "/", omittingEmptySubsequences: false) {
      let key = part.replacingOccurrences(of: "~1", with: "/").replacingOccurrences(of: "~0", with: "~")
      guard let next = value.objectFields?[key] else { throw fail(path, "$ref \(target) points nowhere") }
      value = next
    }
    return value
  }
}

/// Compiled output constraints of one policy: its vocabulary trie (built on first use) and the
/// constraints of recent schemas, keyed by their canonical JSON, so a schema is compiled and its
/// masks computed once however many requests use it.
public final class OutputConstraintCache: Sendable {
  /// Schemas kept; the least recently used goes first.
  public static let capacity = 32

  private let tokenizer: Tokenizer
  private let endTokens: Set<Int32>
  private struct State {
    var trie: VocabularyTrie?
    var constraints: [String: JSONTokenConstraint] = [:]
    var order: [String] = []
  }
  private let state = Mutex(State())

  public init(tokenizer: Tokenizer, endTokens: Set<Int32>) {
    self.tokenizer = tokenizer
    self.endTokens = endTokens
  }

  /// The constraint of a response format; nil for text.
  /// - Throws: ``InvalidRequest`` for a schema that is malformed or uses unsupported features.
  public func constraint(for format: ResponseFormat) throws(InvalidRequest) -> JSONTokenConstraint? {
    let key: String
    switch format {
    case .text: return nil
    case .jsonObject: key = "object"
    case .jsonSchema(let schema): key = "schema:" + Self.canonical(schema)
    }
    if let hit = touch(key) { return hit }
    let shape: JSONShape
    switch format {
    case .text: return nil
    case .jsonObject: shape = .object(properties: [], required: [], additional: .anyValue)
    case .jsonSchema(let schema): shape = try JSONSchemaReader.shape(of: schema)
    }
    let grammar: JSONGrammar
    do {
      grammar = try JSONGrammar(shape)
    } catch {
      throw InvalidRequest("response_format: \(error.description)")
    }
    let trie = vocabularyTrie()
    let constraint = JSONTokenConstraint(grammar: grammar, trie: trie, endTokens: endTokens)
    state.withLock { state in
      if state.constraints[key] == nil {
        state.order.append(key)
        if state.order.count > Self.capacity { state.constraints[state.order.removeFirst()] = nil }
      }
      state.constraints[key] = constraint
    }
    return constraint
  }

  private func touch(_ key: String) -> JSONTokenConstraint? {
    state.withLock { state in
      guard let hit = state.constraints[key] else { return nil }
      if let i = state.order.firstIndex(of: key) { state.order.append(state.order.remove(at: i)) }
      return hit
    }
  }

  private func vocabularyTrie() -> VocabularyTrie {
    if let trie = state.withLock({ $0.trie }) { return trie }
    // Built outside the lock (tens of milliseconds); a concurrent first use builds one too and
    // the first stored wins.
    let built = VocabularyTrie(tokenizer: tokenizer, excluding: endTokens)
    return state.withLock { state in
      if let trie = state.trie { return trie }
      state.trie = built
      return built
    }
  }

  /// The schema written with sorted keys and no whitespace: one key per meaning.
  static func canonical(_ value: JSONValue) -> String {
    switch value {
    case .object(let pairs):
      let fields = Dictionary(pairs, uniquingKeysWith: { _, last in last })
      let body = fields.keys.sorted().map { JSONValue.string($0).text + ":" + canonical(fields[$0]!) }
      return "{" + body.joined(separator: ",") + "}"
    case .array(let values):
      return "[" + values.map(canonical).joined(separator: ",") + "]"
    default:
      return value.text
    }
  }
}
