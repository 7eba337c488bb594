import AlignAPI
import AlignShared
import Crypto
import Foundation

/// Why a row cannot be uploaded.
public struct RowError: Error, Equatable {
  public var reason: String
  public init(reason: String) { self.reason = reason }
}

/// A row turned into a record (sequence not yet set), and the fields it ignored.
public struct ParsedRow: Sendable {
  public var record: Alignd_V1_FeedbackRecord
  public var ignoredFields: [String]
}

/// Turns one JSONL row into a feedback record; see `alignctl feedback upload --help` for the
/// accepted shapes. Checks structure and types only: the server validates content (empty
/// texts, values outside their scale, sizes) and its reasons are reported per line.
public struct FeedbackRowParser: Sendable {
  /// The scale given to rating rows that name none.
  public var defaultScale: (min: Double, max: Double)

  public init(defaultScale: (min: Double, max: Double) = (1, 5)) { self.defaultScale = defaultScale }

  /// Fields that describe the record rather than its payload; `stored_id` and
  /// `received_at_unix_ms` come from exports and are assigned anew by the receiving store.
  static let commonFields: Set<String> = [
    "id", "kind", "response_id", "annotator_id", "policy_version", "reward_version", "safety_version", "metadata",
    "created_at_unix_ms", "stored_id", "received_at_unix_ms",
  ]

  public static func kind(_ name: String) throws(ClientError) -> Alignd_V1_FeedbackKind {
    switch name {
    case "rating": return .rating
    case "preference": return .preference
    case "ranking": return .ranking
    case "safety_label", "safety-label": return .safetyLabel
    case "comment": return .comment
    default:
      throw ClientError("unknown feedback kind '\(name)' (rating, preference, ranking, safety_label, comment)")
    }
  }

  public func record(_ line: Data) -> Result<ParsedRow, RowError> {
    let value: JSONValue
    do {
      value = try JSONDecoder().decode(JSONValue.self, from: line)
    } catch {
      return .failure(RowError(reason: "not valid JSON"))
    }
    guard let fields = value.objectFields else {
      return .failure(RowError(reason: "expected a JSON object, got \(value.typeName)"))
    }
    do {
      return .success(try parse(fields))
    } catch {
      return .failure(error)
    }
  }

  private func parse(_ fields: [String: JSONValue]) throws(RowError) -> ParsedRow {
    var row = Fields(fields)
    var record = Alignd_V1_FeedbackRecord()
    let kind: Alignd_V1_FeedbackKind
    if let name = try row.string("kind") {
      do {
        kind = try Self.kind(name)
      } catch {
        throw RowError(reason: "kind: \(error.description)")
      }
    } else if fields["chosen"] != nil || fields["rejected"] != nil {
      kind = .preference
    } else if fields["rating"] != nil {
      kind = .rating
    } else {
      throw RowError(
        reason: "cannot tell the kind: expected a TRL preference (prompt, chosen, rejected), "
          + "a rating (prompt, completion, rating) or a \"kind\" field")
    }
    switch kind {
    case .preference:
      let prompt = try row.requiredString("prompt")
      let chosen = try row.requiredString("chosen")
      let rejected = try row.requiredString("rejected")
      record.preference = .with {
        $0.prompt = prompt
        $0.chosen = chosen
        $0.rejected = rejected
      }
    case .rating:
      let prompt = try row.string("prompt") ?? ""
      let completion = try row.requiredString("completion")
      guard let value = try row.number("rating") else { throw RowError(reason: "missing field \"rating\"") }
      let scaleMin = try row.number("scale_min")
      let scaleMax = try row.number("scale_max")
      guard (scaleMin == nil) == (scaleMax == nil) else {
        throw RowError(reason: "give both scale_min and scale_max, or neither (default \(defaultScale.min)..\(defaultScale.max))")
      }
      let scale = (scaleMin ?? defaultScale.min, scaleMax ?? defaultScale.max)
      record.rating = .with {
        $0.prompt = prompt
        $0.completion = completion
        $0.value = value
        $0.scaleMin = scale.0
        $0.scaleMax = scale.1
      }
    case .ranking:
      let prompt = try row.requiredString("prompt")
      guard let completions = try row.strings("completions") else {
        throw RowError(reason: "missing field \"completions\"")
      }
      record.ranking = .with {
        $0.prompt = prompt
        $0.completions = completions
      }
    case .safetyLabel:
      let text = try row.requiredString("text")
      let categories = try row.strings("categories") ?? []
      record.safetyLabel = .with {
        $0.text = text
        $0.categories = categories
      }
    default:
      let text = try row.requiredString("text")
      record.comment = .with { $0.text = text }
    }
    record.responseID = try row.string("response_id") ?? ""
    record.annotatorID = try row.string("annotator_id") ?? ""
    record.versions.policy = try row.string("policy_version") ?? ""
    record.versions.reward = try row.string("reward_version") ?? ""
    record.versions.safety = try row.string("safety_version") ?? ""
    record.metadata = try row.stringMap("metadata") ?? [:]
    if let created = try row.integer("created_at_unix_ms") {
      guard created >= 0 else { throw RowError(reason: "created_at_unix_ms must not be negative") }
      record.createdAtUnixMs = created
    }
    for field in ["stored_id", "received_at_unix_ms"] { row.used.insert(field) }
    if let id = fields["id"] {
      row.used.insert("id")
      switch id {
      case .string(let key): record.idempotencyKey = key
      case .int(let number): record.idempotencyKey = String(number)
      default: throw RowError(reason: "id must be a string or an integer, got \(id.typeName)")
      }
      if record.idempotencyKey.isEmpty { throw RowError(reason: "id is empty") }
    } else {
      record.idempotencyKey = Self.contentKey(record)
    }
    let ignored = fields.keys.filter { !row.used.contains($0) }.sorted()
    return ParsedRow(record: record, ignoredFields: ignored)
  }

  /// "sha256:" + the SHA-256 of everything the record says (not its sequence or key), so the
  /// same row always gets the same key and a TRL row exported and uploaded again is a duplicate.
  public static func contentKey(_ record: Alignd_V1_FeedbackRecord) -> String {
    var canonical = "alignctl-feedback-1\n"
    func add(_ name: String, _ value: String) {
      canonical += "\(name) \(value.utf8.count):\(value)\n"
    }
    switch record.kind {
    case .preference(let p):
      add("kind", "preference")
      add("prompt", p.prompt)
      add("chosen", p.chosen)
      add("rejected", p.rejected)
    case .rating(let r):
      add("kind", "rating")
      add("prompt", r.prompt)
      add("completion", r.completion)
      add("value", "\(r.value)")
      add("scale_min", "\(r.scaleMin)")
      add("scale_max", "\(r.scaleMax)")
    case .ranking(let r):
      add("kind", "ranking")
      add("prompt", r.prompt)
      for completion in r.completions { add("completion", completion) }
    case .safetyLabel(let s):
      add("kind", "safety_label")
      add("text", s.text)
      for category in s.categories { add("category", category) }
    case .comment(let c):
      add("kind", "comment")
      add("text", c.text)
    case nil:
      add("kind", "")
    }
    add("response_id", record.responseID)
    add("annotator_id", record.annotatorID)
    add("policy_version", record.versions.policy)
    add("reward_version", record.versions.reward)
    add("safety_version", record.versions.safety)
    for (key, value) in record.metadata.sorted(by: { $0.key < $1.key }) { add("metadata " + key, value) }
    add("created_at_unix_ms", "\(record.createdAtUnixMs)")
    return "sha256:" + SHA256.hash(data: Data(canonical.utf8)).map { String(format: "%02x", $0) }.joined()
  }

  /// Typed access to a row's fields, remembering which were read.
  private struct Fields {
    let values: [String: JSONValue]
    var used: Set<String> = []

    init(_ values: [String: JSONValue]) { self.values = values }

    mutating func field(_ name: String) -> JSONValue? {
      used.insert(name)
      guard let value = values[name] else { return nil }
      if case .null = value { return nil }
      return value
    }

    mutating func string(_ name: String) throws(RowError) -> String? {
      guard let value = field(name) else { return nil }
      guard case .string(let text) = value else {
        if case .array = value, ["prompt", "chosen", "rejected"].contains(name) {
          throw RowError(
            reason: "\(name) is a list (TRL conversational format); only the standard format with strings is supported")
        }
        throw RowError(reason: "\(name) must be a string, got \(value.typeName)")
      }
      return text
    }

    mutating func requiredString(_ name: String) throws(RowError) -> String {
      guard let text = try string(name) else { throw RowError(reason: "missing field \"\(name)\"") }
      return text
    }

    mutating func number(_ name: String) throws(RowError) -> Double? {
      switch field(name) {
      case nil: return nil
      case .int(let n): return Double(n)
      case .double(let d): return d
      case let other?: throw RowError(reason: "\(name) must be a number, got \(other.typeName)")
      }
    }

    mutating func integer(_ name: String) throws(RowError) -> Int64? {
      switch field(name) {
      case nil: return nil
      case .int(let n): return n
      case let other?: throw RowError(reason: "\(name) must be an integer, got \(other.typeName)")
      }
    }

    mutating func strings(_ name: String) throws(RowError) -> [String]? {
      guard let value = field(name) else { return nil }
      guard case .array(let items) = value else { throw RowError(reason: "\(name) must be a list of strings") }
      var out: [String] = []
      for (i, item) in items.enumerated() {
        guard case .string(let text) = item else {
          throw RowError(reason: "\(name)[\(i)] must be a string, got \(item.typeName)")
        }
        out.append(text)
      }
      return out
    }

    mutating func stringMap(_ name: String) throws(RowError) -> [String: String]? {
      guard let value = field(name) else { return nil }
      guard case .object(let entries) = value else {
        throw RowError(reason: "\(name) must be an object of strings, got \(value.typeName)")
      }
      var out: [String: String] = [:]
      for (key, item) in entries {
        guard case .string(let text) = item else {
          throw RowError(reason: "\(name).\(key) must be a string, got \(item.typeName)")
        }
        out[key] = text
      }
      return out
    }
  }
}

/// Reads a file line by line (1-based numbers, blank lines skipped, a trailing CR dropped).
public struct JSONLines {
  private let handle: FileHandle
  private var buffer = Data()
  private var atEnd = false
  private var number = 0

  public init(path: String) throws {
    guard let handle = FileHandle(forReadingAtPath: path) else { throw ClientError("cannot read \(path)") }
    self.handle = handle
  }

  /// The next non-blank line and its number, or nil at the end.
  public mutating func next() throws -> (Int, Data)? {
    while true {
      if let newline = buffer.firstIndex(of: 0x0A) {
        var line = buffer[buffer.startIndex..<newline]
        buffer = buffer[(newline + 1)...]
        number += 1
        if line.last == 0x0D { line = line.dropLast() }
        if line.allSatisfy({ $0 == 0x20 || $0 == 0x09 }) { continue }
        return (number, Data(line))
      }
      if atEnd {
        guard !buffer.isEmpty else {
          try? handle.close()
          return nil
        }
        buffer.append(0x0A)  // the last line has no newline
        continue
      }
      if let chunk = try handle.read(upToCount: 1 << 16), !chunk.isEmpty {
        buffer.append(chunk)
      } else {
        atEnd = true
      }
    }
  }

  /// SHA-256 (hex) and line count of a file: the identity a saved progress belongs to, and the
  /// progress bar's total.
  public static func scan(_ path: String) throws -> (sha256: String, lines: Int) {
    guard let handle = FileHandle(forReadingAtPath: path) else { throw ClientError("cannot read \(path)") }
    defer { try? handle.close() }
    var hasher = SHA256()
    var lines = 0
    var last: UInt8 = 0x0A
    while let data = try handle.read(upToCount: 1 << 20), !data.isEmpty {
      hasher.update(data: data)
      lines += data.reduce(0) { $1 == 0x0A ? $0 + 1 : $0 }
      last = data.last ?? last
    }
    if last != 0x0A { lines += 1 }
    return (hasher.finalize().map { String(format: "%02x", $0) }.joined(), lines)
  }
}
