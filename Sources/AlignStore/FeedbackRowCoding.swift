import Foundation

// The row format both stores share: plain columns for what filters need, the payload and the
// metadata as JSON text. Keeping one encoder and one decoder means a record exported from SQLite
// and one exported from PostgreSQL are byte-for-byte the same JSON.

/// An item ready for a writer: validated, its JSON columns encoded.
struct PreparedItem: Sendable {
  var key: String
  var kind: FeedbackKind
  var responseID: String
  var policyVersion: String
  var rewardVersion: String
  var safetyVersion: String
  var annotatorID: String
  var createdAt: Int64
  var metadataJSON: String
  var payloadJSON: String

  /// Encodes `item`. Throws `FeedbackStoreError.encoding`.
  init(_ item: FeedbackItem) throws {
    key = item.idempotencyKey
    kind = item.kind
    responseID = item.responseID
    policyVersion = item.policyVersion
    rewardVersion = item.rewardVersion
    safetyVersion = item.safetyVersion
    annotatorID = item.annotatorID
    createdAt = item.createdAtUnixMs
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
    // Payload JSON uses admin.proto's field names (scale_min, ...), so it reads like the proto.
    encoder.keyEncodingStrategy = .convertToSnakeCase
    do {
      let payloadData: Data
      switch item.payload {
      case .rating(let r): payloadData = try encoder.encode(r)
      case .preference(let p): payloadData = try encoder.encode(p)
      case .ranking(let r): payloadData = try encoder.encode(r)
      case .safetyLabel(let s): payloadData = try encoder.encode(s)
      case .comment(let c): payloadData = try encoder.encode(c)
      }
      payloadJSON = String(decoding: payloadData, as: UTF8.self)
      // Metadata keys are the client's: no key strategy may touch them.
      let plain = JSONEncoder()
      plain.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
      metadataJSON = String(decoding: try plain.encode(item.metadata), as: UTF8.self)
    } catch {
      throw FeedbackStoreError.encoding(idempotencyKey: item.idempotencyKey, detail: "\(error)")
    }
  }
}

/// The columns of one stored row, as read from either database.
struct FeedbackRowColumns {
  var id: Int64
  var idempotencyKey: String
  var kind: String
  var responseID: String
  var policyVersion: String
  var rewardVersion: String
  var safetyVersion: String
  var annotatorID: String
  var createdAt: Int64
  var receivedAt: Int64
  var metadataJSON: String
  var payloadJSON: String

  /// Decodes the row into a stored item.
  /// - Parameter path: the store's location, for the error.
  /// - Throws: `FeedbackStoreError.decoding` naming the row.
  func decode(path: String) throws -> StoredFeedbackItem {
    guard let kind = FeedbackKind(rawValue: kind) else {
      throw FeedbackStoreError.decoding(path: path, id: id, detail: "unknown kind \(self.kind)")
    }
    do {
      let decoder = JSONDecoder()
      decoder.keyDecodingStrategy = .convertFromSnakeCase
      let payloadData = Data(payloadJSON.utf8)
      let payload: FeedbackPayload
      switch kind {
      case .rating: payload = .rating(try decoder.decode(FeedbackRating.self, from: payloadData))
      case .preference:
        payload = .preference(try decoder.decode(FeedbackPreference.self, from: payloadData))
      case .ranking: payload = .ranking(try decoder.decode(FeedbackRanking.self, from: payloadData))
      case .safetyLabel:
        payload = .safetyLabel(try decoder.decode(FeedbackSafetyLabel.self, from: payloadData))
      case .comment: payload = .comment(try decoder.decode(FeedbackComment.self, from: payloadData))
      }
      // Metadata keys are the client's: no key strategy may touch them.
      let metadata = try JSONDecoder().decode([String: String].self, from: Data(metadataJSON.utf8))
      let item = FeedbackItem(
        idempotencyKey: idempotencyKey,
        responseID: responseID,
        policyVersion: policyVersion,
        rewardVersion: rewardVersion,
        safetyVersion: safetyVersion,
        annotatorID: annotatorID,
        metadata: metadata,
        createdAtUnixMs: createdAt,
        payload: payload)
      return StoredFeedbackItem(id: id, item: item, receivedAtUnixMs: receivedAt)
    } catch {
      throw FeedbackStoreError.decoding(path: path, id: id, detail: "\(error)")
    }
  }
}
