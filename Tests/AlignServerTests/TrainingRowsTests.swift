import AlignAPI
import AlignServer
import Foundation
import Testing

/// The rows of the server's training exports (Admin.ExportTrainingData), from stored records.
@Suite("Training export rows")
struct TrainingRowsTests {
  static func stored(_ id: UInt64, _ build: (inout Alignd_V1_FeedbackRecord) -> Void) -> Alignd_V1_StoredFeedback {
    .with {
      $0.id = id
      var record = Alignd_V1_FeedbackRecord()
      build(&record)
      $0.record = record
    }
  }

  static let appPreference = stored(4) {
    $0.versions = .with { $0.policy = "smol@1"; $0.reward = "rm@2" }
    $0.metadata = [
      "chosen_completion_id": "cmpl-a", "rejected_completion_id": "cmpl-b", "chosen_policy_version": "smol@1",
      "rejected_policy_version": "smol@0", "feedback_type": "preference", "source": "app", "campaign": "x",
    ]
    $0.preference = .with { $0.prompt = "<rendered>"; $0.chosen = "Blue."; $0.rejected = "No." }
  }

  @Test("preference rows: standard strings, or the logged conversation with assistant messages, and the versions served")
  func preference() throws {
    let conversation = [["role": "system", "content": "Be brief."], ["role": "user", "content": "A colour?"]]
    #expect(TrainingRows.loggedCompletionID(Self.appPreference.record) == "cmpl-a")
    let chat = TrainingRows.preference(Self.appPreference, chat: true, logged: conversation)
    let row = try #require(chat.first)
    #expect(chat.count == 1)
    #expect(row["prompt"] as? [[String: String]] == conversation)
    #expect(row["chosen"] as? [[String: String]] == [["role": "assistant", "content": "Blue."]])
    #expect(row["rejected"] as? [[String: String]] == [["role": "assistant", "content": "No."]])
    #expect(row["policy_version"] as? String == "smol@1" && row["rejected_policy_version"] as? String == "smol@0")
    #expect(row["chosen_completion_id"] as? String == "cmpl-a" && row["campaign"] == nil)
    #expect(row["feedback_id"] as? Int == 4 && row["source"] as? String == "app")
    // Without a logged conversation the stored prompt is one user message.
    let plain = TrainingRows.preference(Self.appPreference, chat: true, logged: nil)
    #expect(plain.first?["prompt"] as? [[String: String]] == [["role": "user", "content": "<rendered>"]])
    let standard = try #require(TrainingRows.preference(Self.appPreference, chat: false, logged: nil).first)
    #expect(standard["prompt"] as? String == "<rendered>" && standard["chosen"] as? String == "Blue.")
    // A ranking gives every ordered pair; other kinds give none.
    let ranking = Self.stored(5) { $0.ranking = .with { $0.prompt = "p"; $0.completions = ["a", "b", "c"] } }
    let pairs = TrainingRows.preference(ranking, chat: false, logged: nil)
    #expect(pairs.map { "\($0["chosen"]!)>\($0["rejected"]!)" } == ["a>b", "a>c", "b>c"])
    #expect(TrainingRows.source(ranking.record) == "admin" && TrainingRows.feedbackType(ranking.record) == "ranking")
    #expect(TrainingRows.preference(Self.stored(6) { $0.comment = .with { $0.text = "hi" } }, chat: false, logged: nil).isEmpty)
  }

  @Test("KTO rows: true above the scale's midpoint, false below, none at it; thumbs are a 0...1 scale")
  func kto() throws {
    func rating(_ value: Double, _ low: Double, _ high: Double, type: String = "rating") -> Alignd_V1_StoredFeedback {
      Self.stored(7) {
        $0.metadata = ["feedback_type": type]
        $0.rating = .with { $0.prompt = "p"; $0.completion = "c"; $0.value = value; $0.scaleMin = low; $0.scaleMax = high }
      }
    }
    #expect(TrainingRows.kto(rating(4, 1, 5), chat: false, logged: nil).first?["label"] as? Bool == true)
    #expect(TrainingRows.kto(rating(2, 1, 5), chat: false, logged: nil).first?["label"] as? Bool == false)
    #expect(TrainingRows.kto(rating(3, 1, 5), chat: false, logged: nil).isEmpty)
    let down = try #require(TrainingRows.kto(rating(0, 0, 1, type: "thumbs"), chat: true, logged: nil).first)
    #expect(down["label"] as? Bool == false && down["feedback_type"] as? String == "thumbs")
    #expect(down["completion"] as? [[String: String]] == [["role": "assistant", "content": "c"]])
    #expect(TrainingRows.kto(Self.appPreference, chat: false, logged: nil).isEmpty)
  }

  @Test("SFT rows come from corrections only: the corrected text as the completion")
  func sft() throws {
    let correction = Self.stored(8) {
      $0.metadata = ["feedback_type": "correction", "completion_id": "cmpl-c", "source": "app"]
      $0.preference = .with { $0.prompt = "p"; $0.chosen = "fixed"; $0.rejected = "wrong" }
    }
    let row = try #require(TrainingRows.sft(correction, chat: false, logged: nil).first)
    #expect(row["prompt"] as? String == "p" && row["completion"] as? String == "fixed")
    #expect(row["rejected_completion"] as? String == "wrong" && row["completion_id"] as? String == "cmpl-c")
    let chat = try #require(TrainingRows.sft(correction, chat: true, logged: [["role": "user", "content": "q"]]).first)
    #expect(chat["messages"] as? [[String: String]] == [["role": "user", "content": "q"], ["role": "assistant", "content": "fixed"]])
    #expect(TrainingRows.sft(Self.appPreference, chat: false, logged: nil).isEmpty)
  }

  @Test("a rollout row carries the sampled token ids, their logprobs, the reward or null, and the versions")
  func rollout() throws {
    let logged = Alignd_V1_LoggedCompletion.with {
      $0.id = 3
      $0.completionID = "cmpl-r"
      $0.prompt = "<rendered>"
      $0.messages = [.with { $0.role = "user"; $0.content = "hi" }]
      $0.text = "Hello"
      $0.tokenIds = [11, 12]
      $0.tokenLogprobs = [-0.5, -1.25]
      $0.finishReason = "stop"
      $0.versions = .with { $0.policy = "smol@1" }
    }
    let line = try TrainingRows.json(TrainingRows.rollout(logged))
    let row = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
    #expect(row["completion_token_ids"] as? [Int] == [11, 12])
    #expect(row["completion_logprobs"] as? [Double] == [-0.5, -1.25])
    #expect(row["reward"] is NSNull && row["policy_version"] as? String == "smol@1")
    #expect(row["messages"] as? [[String: String]] == [["role": "user", "content": "hi"]])
    var rewarded = logged
    rewarded.reward = 0.75
    rewarded.messages = []
    let second = TrainingRows.rollout(rewarded)
    #expect(second["reward"] as? Double == 0.75 && second["messages"] is NSNull)
  }
}
