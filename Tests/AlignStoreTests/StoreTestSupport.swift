import AlignStore
import Foundation
import Synchronization

/// A fresh folder under the temporary directory, removed by `remove()`.
struct TemporaryFolder {
  let url: URL

  init() throws {
    url = FileManager.default.temporaryDirectory
      .appendingPathComponent("alignstore-tests-\(UUID().uuidString)", isDirectory: true)
    try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
  }

  func remove() {
    try? FileManager.default.removeItem(at: url)
  }
}

/// A settable clock for received-at stamps.
final class ManualClock: Sendable {
  private let value: Mutex<Int64>

  init(_ start: Int64) { value = Mutex(start) }

  func set(_ ms: Int64) { value.withLock { $0 = ms } }

  var now: Int64 { value.withLock { $0 } }

  var configuration: SQLiteFeedbackStoreConfiguration {
    var configuration = SQLiteFeedbackStoreConfiguration()
    configuration.now = { [self] in now }
    return configuration
  }

  var postgresConfiguration: PostgresFeedbackStoreConfiguration {
    var configuration = PostgresTestDatabase.configuration
    configuration.now = { [self] in now }
    return configuration
  }
}

enum Make {
  static func rating(
    _ key: String, value: Double = 4, policy: String = "p1", reward: String = "r1",
    createdAt: Int64 = 1_700_000_000_000
  ) -> FeedbackItem {
    FeedbackItem(
      idempotencyKey: key, responseID: "resp-\(key)", policyVersion: policy, rewardVersion: reward,
      safetyVersion: "policy=default@1", annotatorID: "ann-1", metadata: ["source": "test"],
      createdAtUnixMs: createdAt,
      payload: .rating(
        FeedbackRating(
          prompt: "Q \(key)", completion: "A \(key)", value: value, scaleMin: 1, scaleMax: 5)))
  }

  static func preference(_ key: String, policy: String = "p1", reward: String = "r1")
    -> FeedbackItem
  {
    FeedbackItem(
      idempotencyKey: key, policyVersion: policy, rewardVersion: reward, createdAtUnixMs: 5,
      payload: .preference(
        FeedbackPreference(prompt: "P \(key)", chosen: "good \(key)", rejected: "bad \(key)")))
  }

  static func ranking(_ key: String, policy: String = "p1") -> FeedbackItem {
    FeedbackItem(
      idempotencyKey: key, policyVersion: policy, createdAtUnixMs: 6,
      payload: .ranking(
        FeedbackRanking(prompt: "R \(key)", completions: ["first", "second", "third"])))
  }

  static func safety(_ key: String) -> FeedbackItem {
    FeedbackItem(
      idempotencyKey: key, createdAtUnixMs: 7,
      payload: .safetyLabel(FeedbackSafetyLabel(text: "T \(key)", categories: ["pii", "violence"])))
  }

  static func comment(_ key: String, text: String? = nil) -> FeedbackItem {
    FeedbackItem(
      idempotencyKey: key, createdAtUnixMs: 8,
      payload: .comment(FeedbackComment(text: text ?? "C \(key)")))
  }

  static func oneOfEach(prefix: String) -> [FeedbackItem] {
    [
      rating("\(prefix)-r"), preference("\(prefix)-p"), ranking("\(prefix)-k"),
      safety("\(prefix)-s"), comment("\(prefix)-c"),
    ]
  }
}

extension Array where Element == AppendOutcome {
  /// The ids of `.stored` outcomes, in order.
  var storedIDs: [Int64] {
    compactMap { if case .stored(let id) = $0 { id } else { nil } }
  }
}
